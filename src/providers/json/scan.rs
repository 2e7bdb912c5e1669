//! One pass over a JSON text that both checks it and cuts an object's top level: the fast path
//! of [`super::Doc`], which otherwise takes three passes through serde_json (the check as `Value`
//! would parse it, the whole as a raw value, its entries as raw values).
//!
//! The scanner only ever *accepts* what it is sure `serde_json::Value` accepts; everything else
//! — every error, and the few valid texts whose verdict depends on serde_json's own arithmetic or
//! conventions — is left undecided ([`scan`] returns `None`) and goes the three-pass way, whose
//! verdict and error message are serde_json's. What it leaves to serde_json:
//! - numbers with an exponent, or longer than [`MAX_NUMBER_LEN`] characters (whether they fit
//!   an `f64` is serde_json's rounding to decide);
//! - `\u` escapes of UTF-16 surrogates (paired or lone, serde_json's rules);
//! - nesting deeper than [`MAX_DEPTH`] containers (serde_json refuses 128);
//! - an object whose first key is, or may be once unescaped, serde_json's private raw-value
//!   token (which `Value` reads as "this string is JSON text").
//!
//! [`check`] is the same scanner keeping nothing, for the check of a whole batch body.
//!
//! Agreement with serde_json is tested here on the boundaries and, over mutated provider
//! samples, by the `json_scan` fuzz target (every text the scanner accepts must parse as
//! `Value`, and its cut must be the three-pass cut).

use std::borrow::Cow;

use serde::de::value::{BorrowedStrDeserializer, MapDeserializer};
use serde::de::{self, Deserialize, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::value::RawValue;

use super::RAW_VALUE_TOKEN;

/// Containers nested deeper than this are left to serde_json (it refuses 128).
pub const MAX_DEPTH: usize = 100;

/// Numbers longer than this are left to serde_json: a shorter one without an exponent is
/// under 10^100 in magnitude, always a finite `f64`.
pub const MAX_NUMBER_LEN: usize = 100;

/// An object's entries in order: keys unescaped, values raw, duplicates kept.
pub type Entries<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A text checked in one pass.
pub struct Scanned<'a> {
    /// The value, without the whitespace around it.
    pub whole: &'a RawValue,
    /// An object's entries in order (keys unescaped, duplicates kept), `None` past `max_keys`;
    /// empty for anything but an object.
    pub entries: Option<Entries<'a>>,
}

/// `text` checked and cut, when it is certainly a JSON value `serde_json::Value` accepts (see
/// the module docs); `None` when that is for serde_json to say. An object's top-level entries
/// are kept up to `max_keys`.
pub fn scan(text: &str, max_keys: usize) -> Option<Scanned<'_>> {
    let mut s = Scanner {
        bytes: text.as_bytes(),
        at: 0,
    };
    s.skip_ws();
    let start = s.at;
    let entries = if s.peek()? == b'{' {
        s.top_object(text, max_keys)?
    } else {
        s.value(0)?;
        Some(Vec::new())
    };
    let end = s.at;
    s.skip_ws();
    if s.at != s.bytes.len() {
        return None;
    }
    Some(Scanned {
        whole: trusted(text.get(start..end)?)?,
        entries,
    })
}

/// Whether `text` is certainly a JSON value `serde_json::Value` accepts (see the module docs);
/// `false` when that is for serde_json to say. Nothing is kept.
pub fn check(text: &str) -> bool {
    let mut s = Scanner {
        bytes: text.as_bytes(),
        at: 0,
    };
    s.skip_ws();
    if s.value(0).is_none() {
        return false;
    }
    s.skip_ws();
    s.at == s.bytes.len()
}

/// A `&RawValue` of text already checked, without checking it again: serde_json builds a raw
/// value from any deserializer that hands it the text as a borrowed string (the way it reads
/// raw values from formats other than its own), and this deserializer does just that.
pub fn trusted(json: &str) -> Option<&RawValue> {
    <&RawValue>::deserialize(Trusted(json)).ok()
}

/// Hands its text to a raw value's visitor (see [`trusted`]); nothing else deserializes from it.
struct Trusted<'a>(&'a str);

impl<'de> de::Deserializer<'de> for Trusted<'de> {
    type Error = de::value::Error;

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // A raw value asks for a one-entry map: its own name, then the text.
        let entry = (
            BorrowedStrDeserializer::<Self::Error>::new(name),
            BorrowedStrDeserializer::<Self::Error>::new(self.0),
        );
        visitor.visit_map(MapDeserializer::new(std::iter::once(entry)))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "only a raw value deserializes from checked text",
        ))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consume `b` after optional whitespace.
    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// One value at nesting `depth` (the number of containers around it).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)?`; an exponent or a long number is serde_json's to
    /// decide (the caller falls back).
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || self.at - start > MAX_NUMBER_LEN {
            return None;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// A string; whether it had escapes. The text is UTF-8 already (`&str`), so only control
    /// characters and escapes are checked.
    fn string(&mut self) -> Option<bool> {
        self.at += 1; // the opening quote
        let mut escaped = false;
        loop {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0x00..=0x1f => return None,
                _ => {}
            }
        }
    }

    fn escape(&mut self) -> Option<()> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.bytes.get(self.at..self.at + 4)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                let unit = u16::from_str_radix(hex, 16).ok()?;
                self.at += 4;
                // Surrogates, paired or not, are serde_json's to judge.
                (!(0xD800..=0xDFFF).contains(&unit)).then_some(())
            }
            _ => None,
        }
    }

    /// Past a container's opening byte, at nesting `depth`: whether it closes at once.
    fn open(&mut self, depth: usize, close: u8) -> Option<bool> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.skip_ws();
        let empty = self.peek() == Some(close);
        if empty {
            self.at += 1;
        }
        Some(empty)
    }

    /// After an element or member: `true` at the container's `close`, `false` past a comma.
    fn next_or_close(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let b = self.peek()?;
        if b != b',' && b != close {
            return None;
        }
        self.at += 1;
        Some(b == close)
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if self.open(depth, b']')? {
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            if self.next_or_close(b']')? {
                return Some(());
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.members(depth, |_, _| Some(()))
    }

    /// The top-level object, its entries kept (up to `max_keys`, else `None`).
    fn top_object<'t>(&mut self, text: &'t str, max_keys: usize) -> Option<Option<Entries<'t>>> {
        let mut entries = Vec::with_capacity(16);
        let mut over = false;
        self.members(1, |(k0, k1, escaped), (v0, v1)| {
            if over {
                return Some(());
            }
            if entries.len() == max_keys {
                over = true;
                entries = Vec::new();
                return Some(());
            }
            let key = if escaped {
                Cow::Owned(serde_json::from_str::<String>(text.get(k0..k1)?).ok()?)
            } else {
                Cow::Borrowed(text.get(k0 + 1..k1 - 1)?)
            };
            entries.push((key, trusted(text.get(v0..v1)?)?));
            Some(())
        })?;
        Some((!over).then_some(entries))
    }

    /// An object's members; `each` gets every key's span (quotes included, and whether it has
    /// escapes) and its value's span, and may give up.
    fn members(
        &mut self,
        depth: usize,
        mut each: impl FnMut((usize, usize, bool), (usize, usize)) -> Option<()>,
    ) -> Option<()> {
        if self.open(depth, b'}')? {
            return Some(());
        }
        let mut first = true;
        loop {
            self.skip_ws();
            if self.peek()? != b'"' {
                return None;
            }
            let k0 = self.at;
            let escaped = self.string()?;
            let k1 = self.at;
            if first && (escaped || self.bytes.get(k0 + 1..k1 - 1)? == RAW_VALUE_TOKEN.as_bytes()) {
                // `Value` would read this object as JSON text in a string: serde_json decides.
                return None;
            }
            first = false;
            self.eat(b':')?;
            self.skip_ws();
            let v0 = self.at;
            self.value(depth)?;
            each((k0, k1, escaped), (v0, self.at))?;
            if self.next_or_close(b'}')? {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn value_accepts(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok()
    }

    /// Accepted only what `Value` accepts; the usual texts decided here, the doubtful ones left.
    #[test]
    fn accepts_only_what_value_accepts_and_leaves_the_doubtful_to_serde_json() {
        let nest =
            |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        let decided = [
            r#" {"a":1,"b":[true,false,null],"c":{"d":"e\n\u00e9\"\\\/"},"n":-0.5} "#.to_string(),
            "[]".into(),
            "{}".into(),
            " \t\r\n\"é ✓\" ".into(),
            "-0".into(),
            "18446744073709551616".into(),
            "123456789012345678901234567890.5".into(),
            r#"{"x":1,"$serde_json::private::RawValue":"[1"}"#.into(),
            nest(MAX_DEPTH, "[", "]"),
            nest(MAX_DEPTH, "{\"a\":", "}"),
        ];
        for text in &decided {
            assert!(scan(text, 128).is_some(), "should be decided: {text}");
            assert!(check(text), "should be decided: {text}");
            assert!(value_accepts(text), "{text}");
        }
        let left = [
            // Valid, but serde_json's to judge.
            "1e5".to_string(),
            "1E+2".into(),
            "1e999".into(),
            "[0.5e-3]".into(),
            "1".repeat(MAX_NUMBER_LEN + 1),
            r#""\ud83d\ude00""#.into(),
            r#""\ud800""#.into(),
            r#""\udc00""#.into(),
            r#"{"$serde_json::private::RawValue":"[1,2]"}"#.into(),
            r#"{"a":{"$serde_json::private::RawValue":1}}"#.into(),
            r#"{"\u0024serde_json::private::RawValue":"[1,2]"}"#.into(),
            r#"[{"\u0061":1}]"#.into(),
            nest(MAX_DEPTH + 1, "[", "]"),
            nest(127, "[", "]"),
            nest(128, "[", "]"),
            // Invalid.
            "".into(),
            " ".into(),
            "[1,]".into(),
            "{\"a\":1,}".into(),
            "{\"a\" 1}".into(),
            "{1:1}".into(),
            "[1 2]".into(),
            "01".into(),
            "-".into(),
            "1.".into(),
            ".5".into(),
            "+1".into(),
            "tru".into(),
            "nul".into(),
            "\"a".into(),
            "\"\u{1}\"".into(),
            r#""\x""#.into(),
            r#""\u12g4""#.into(),
            "{} x".into(),
            "[][]".into(),
            "NaN".into(),
        ];
        for text in &left {
            assert!(scan(text, 128).is_none(), "should be left: {text}");
            assert!(!check(text), "should be left: {text}");
        }
    }

    /// The cut is the three-pass cut: the same keys (unescaped) and raw values, in order.
    #[test]
    fn cuts_the_top_level_like_serde_json() {
        let text = r#" { "a" : 1 , "k\"ey":"v", "a":{"b":[1, 2]},"e":"" ,"z" :null } "#;
        let s = scan(text, 128).unwrap();
        assert_eq!(s.whole.get(), text.trim());
        let entries = s.entries.unwrap();
        let got: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("k\"ey", "\"v\""),
                ("a", "{\"b\":[1, 2]}"),
                ("e", "\"\""),
                ("z", "null")
            ]
        );
        assert!(
            scan(text, 4).unwrap().entries.is_none(),
            "past the key limit"
        );
        assert_eq!(scan(" [1] ", 4).unwrap().entries.unwrap().len(), 0);
        assert_eq!(scan(" [1] ", 4).unwrap().whole.get(), "[1]");
    }

    /// A raw value made from checked text is the raw value serde_json makes of it.
    #[test]
    fn trusted_raw_values_are_serde_jsons() {
        for text in ["{\"a\":[1,2]}", "\"x\"", "1", "null"] {
            let ours = trusted(text).unwrap();
            let theirs: &RawValue = serde_json::from_str(text).unwrap();
            assert_eq!(ours.get(), theirs.get());
            assert_eq!(serde_json::to_string(ours).unwrap(), text);
            assert_eq!(ours.to_owned().get(), text);
        }
    }
}
