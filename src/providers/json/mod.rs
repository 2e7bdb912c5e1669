//! JSON without a tree: a body is checked the way `serde_json::Value` would parse it, then read
//! as slices of its text: batch arrays cut into borrowed raw elements, counted while
//! deserializing ([`Elements`]), and a single event's fields looked up by pointer ([`Doc`]).
//!
//! A `Value` of a 1 MiB body of small elements takes many times the body's size (every number,
//! string and container is a 32-byte `Value` plus its own allocation), so no body is parsed
//! whole: [`validate`] walks the body once building nothing; [`Elements`] keeps each element as a
//! `&RawValue` (a slice of the body), stopping at the first element past the limit, and each
//! element is then read on its own by the provider; [`Doc`] reads only the path to each field.
//!
//! `RawValue` alone is not enough: serde_json skips a raw value's content without its recursion
//! limit (128 levels) or its number-range check, so a body `Value` refuses (`[[[…]]]` 100,000
//! deep, `1e999999`) would pass as raw elements and reach consumers. [`validate`] goes through
//! `deserialize_any` like `Value` does, so it accepts exactly what `Value` accepts.
//!
//! Both go to [`scan`] first: a single event's body ([`Doc::parse`]) is checked and its top level
//! cut in one pass where serde_json takes three (check, whole, entries), and a batch body
//! ([`validate`]) is checked by the same scanner keeping nothing. The scanner accepts only what
//! it is sure `Value` accepts and leaves everything else — every error included — to serde_json,
//! so verdicts and error messages stay serde_json's.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, Deserialize, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::ParseError;

pub mod scan;

/// The key serde_json's `Value` reads as "the string value is JSON text" when it is an object's
/// first key (its `raw_value` feature); [`validate`] follows it so that it agrees with `Value`.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `body` as text, if `serde_json::from_slice::<Value>(body)` would succeed — same recursion
/// limit, number range, UTF-8 and escape checks — without building anything (the recursion is
/// on the stack, at most 128 levels).
pub fn validate(body: &[u8]) -> Result<&str, ParseError> {
    // The one-pass scanner decides nearly every body; what it leaves, serde_json decides.
    if let Ok(text) = std::str::from_utf8(body)
        && scan::check(text)
    {
        return Ok(text);
    }
    checked_by_serde_json(body)
}

/// [`validate`]'s answer from serde_json alone: what the scanner leaves.
fn checked_by_serde_json(body: &[u8]) -> Result<&str, ParseError> {
    serde_json::from_slice::<Checked>(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    // Valid JSON is UTF-8 (from_slice checks every string); this cannot fail after the above.
    std::str::from_utf8(body).map_err(|e| ParseError::NotJson(e.to_string()))
}

/// The whole (validated) text as one raw value, for a body published as it came.
pub fn boxed(text: &str) -> Result<Box<RawValue>, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))
}

/// Checked JSON, kept as nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        Checked::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut first = true;
        while let Some(key) = map.next_key::<Key>()? {
            if first && key.0 {
                // `Value` parses this entry's string as JSON and returns it instead of a map.
                let text: std::borrow::Cow<'de, str> = map.next_value()?;
                let inner: Result<Checked, _> = serde_json::from_str(&text);
                inner.map_err(de::Error::custom)?;
                // Like `Value`, the rest is left to the caller, which expects the closing `}`.
                return Ok(Checked);
            }
            first = false;
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A map key, checked; whether it is [`RAW_VALUE_TOKEN`].
struct Key(bool);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key(s == RAW_VALUE_TOKEN))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Why [`Elements`] stopped short.
#[derive(Debug, PartialEq, Eq)]
pub enum ArrayError {
    /// Not an array (nor `null`, where allowed): the caller publishes the body as unrecognized.
    Shape,
    /// More elements than the limit, counted with those already taken: refuse the request.
    TooMany(usize),
}

/// Elements of JSON arrays taken from one body, counted together against `limit`: an array that
/// would pass it stops at the first element over, before anything of that element is kept.
pub struct Elements<'a> {
    pub items: Vec<&'a RawValue>,
    limit: usize,
    over: Cell<bool>,
}

impl<'a> Elements<'a> {
    pub fn new(limit: usize) -> Self {
        Self {
            items: Vec::new(),
            limit,
            over: Cell::new(false),
        }
    }

    /// Append the elements of the array `text` (already [`validate`]d JSON).
    pub fn take(&mut self, text: &'a str) -> Result<(), ArrayError> {
        let mut de = serde_json::Deserializer::from_str(text);
        self.seed().deserialize(&mut de).map_err(|_| self.error())
    }

    /// A seed deserializing one array (or, with [`ElementsSeed::nullable`], `null`) into these
    /// elements, for use inside a visitor of the enclosing object.
    pub fn seed(&mut self) -> ElementsSeed<'_, 'a> {
        ElementsSeed {
            elements: self,
            nullable: false,
        }
    }

    /// What a failed deserialization with [`Elements::seed`] meant.
    pub fn error(&self) -> ArrayError {
        if self.over.get() {
            ArrayError::TooMany(self.items.len() + 1)
        } else {
            ArrayError::Shape
        }
    }
}

/// See [`Elements::seed`].
pub struct ElementsSeed<'e, 'a> {
    elements: &'e mut Elements<'a>,
    nullable: bool,
}

impl ElementsSeed<'_, '_> {
    /// Accept `null` as no elements.
    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
}

impl<'de, 'e> DeserializeSeed<'de> for ElementsSeed<'e, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.nullable {
            deserializer.deserialize_option(self)
        } else {
            deserializer.deserialize_seq(self)
        }
    }
}

impl<'de, 'e> Visitor<'de> for ElementsSeed<'e, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(ElementsSeed {
            elements: self.elements,
            nullable: false,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let elements = self.elements;
        loop {
            if elements.items.len() == elements.limit {
                // One more would pass the limit: look whether there is one, without keeping it.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    elements.over.set(true);
                    return Err(de::Error::custom("too many elements"));
                }
                return Ok(());
            }
            match seq.next_element::<&'de RawValue>()? {
                Some(element) => elements.items.push(element),
                None => return Ok(()),
            }
        }
    }
}

/// A body of one event: checked once as `Value` would parse it (by [`scan`] in one pass, or by
/// [`validate`] when the scanner leaves it to serde_json), then read lazily. Its text is
/// the payload; fields are looked up by JSON pointer without building a tree. The top-level
/// entries are cut once into borrowed slices (a key and a `&RawValue` each, 40 bytes per key, up
/// to [`MAX_KEPT_KEYS`]; an object with more is searched again at each lookup instead); deeper
/// levels are read from the slice on the path only, and a scalar is read alone.
///
/// A `Value` of the body would take 13 to 30 times its size and an allocation per string and
/// container; a `Doc` takes the payload's copy of the body and one small vector.
///
/// Fields are found where `Value::pointer` finds them, with one exception: an object whose only
/// key is serde_json's private raw-value token ([`validate`] follows `Value` in checking its
/// string as JSON) is read as the object it is, not as the JSON inside the string — as
/// [`raw_at`] reads batch elements; the payload is the same either way.
pub struct Doc<'a> {
    /// The body's JSON value (without the whitespace around it).
    whole: &'a RawValue,
    /// The top-level entries, in order, when the body is an object (duplicates kept: lookups
    /// take the last, as `Value` does); `None` when it has more than [`MAX_KEPT_KEYS`].
    entries: Option<scan::Entries<'a>>,
}

/// Most top-level entries a [`Doc`] keeps (5 KiB): webhook bodies have a few dozen keys, and a
/// body of a hundred thousand tiny keys must not cost several times its size.
pub const MAX_KEPT_KEYS: usize = 128;

impl<'a> Doc<'a> {
    /// Check `body` (refused as `ParseError::NotJson` exactly when `Value` would refuse it, with
    /// serde_json's message) and cut its top level.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        // One pass when the scanner can decide (nearly every webhook body); serde_json's three
        // otherwise, whose verdict and message are then the answer.
        if let Ok(text) = std::str::from_utf8(body)
            && let Some(scanned) = scan::scan(text, MAX_KEPT_KEYS)
        {
            return Ok(Self {
                whole: scanned.whole,
                entries: scanned.entries,
            });
        }
        let text = checked_by_serde_json(body)?;
        let whole: &'a RawValue =
            serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
        Ok(Self::of(whole))
    }

    /// A part of a body already checked as a whole (a batch element, a nested object); cut by
    /// [`scan`], or by serde_json where the scanner leaves it.
    pub fn of(whole: &'a RawValue) -> Self {
        let entries = if whole.get().starts_with('{') {
            if let Some(scanned) = scan::scan(whole.get(), MAX_KEPT_KEYS) {
                return Self {
                    whole,
                    entries: scanned.entries,
                };
            }
            // Fails past `MAX_KEPT_KEYS` (the text is checked: for no other reason).
            serde_json::from_str::<RawEntries<'a>>(whole.get())
                .map(|e| e.0)
                .ok()
        } else {
            Some(Vec::new())
        };
        Self { whole, entries }
    }

    /// The body's text, for the event's payload (a copy, not parsed again).
    pub fn payload(&self) -> Box<RawValue> {
        self.whole.to_owned()
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        self.whole.get().starts_with('{')
    }

    /// The raw value of the top-level key `key` (the last of duplicates, as in `Value`), `null`
    /// included; `None` when absent or when the body is not an object.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        match &self.entries {
            Some(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.as_ref() == key)
                .map(|(_, v)| *v),
            None => member(self.whole.get(), key),
        }
    }

    /// The value at the top-level pointer token `key` (unescaped) as a document of its own, its
    /// entries cut once: for several lookups inside one nested object, each of which would
    /// otherwise scan it again. A lookup in it finds what the same pointer under `/key` finds in
    /// `self`.
    pub fn nested(&self, key: &str) -> Option<Doc<'a>> {
        self.child(key).map(Doc::of)
    }

    /// One pointer step from the top: a member through the entries cut once, or an element.
    fn child(&self, token: &str) -> Option<&'a RawValue> {
        if self.is_object() {
            self.get(token)
        } else {
            step(self.whole, token)
        }
    }

    /// The raw text at `pointer` (RFC 6901), as `Value::pointer` would find it.
    pub fn raw_at(&self, pointer: &str) -> Option<&'a RawValue> {
        if pointer.is_empty() {
            return Some(self.whole);
        }
        let mut tokens = pointer.strip_prefix('/')?.split('/');
        let mut current = self.child(&unescape(tokens.next()?))?;
        for token in tokens {
            current = step(current, &unescape(token))?;
        }
        Some(current)
    }

    /// The string or number at `pointer`, as text (numbers are ids often enough): a string is
    /// itself, escapes resolved; a number its `Value` text; anything else `None`.
    pub fn str_at(&self, pointer: &str) -> Option<String> {
        scalar(self.raw_at(pointer)?)
    }

    /// The value at `pointer` parsed on its own, for a small part an event keeps as JSON (a
    /// location, a map of changes).
    pub fn value_at(&self, pointer: &str) -> Option<Value> {
        serde_json::from_str(self.raw_at(pointer)?.get()).ok()
    }
}

/// A pointer token with `~1` and `~0` resolved (in that order, as RFC 6901 says).
fn unescape(token: &str) -> Cow<'_, str> {
    if token.contains('~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// One pointer step into the raw value `current`: an object's member `token` (the last of
/// duplicates), or an array's element at index `token`.
fn step<'a>(current: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    let text: &'a str = current.get();
    match text.as_bytes().first() {
        Some(b'{') => member(text, token),
        Some(b'[') => {
            // `Value::pointer`'s index rules: no sign, no leading zero.
            if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
                return None;
            }
            nth_element(text, token.parse().ok()?)
        }
        _ => None,
    }
}

/// The raw text at `pointer` (RFC 6901) inside the JSON text `text`, borrowed from it. Each
/// level is read for the one member or element on the path; nothing is copied.
pub fn raw_at<'a>(text: &'a str, pointer: &str) -> Option<&'a RawValue> {
    let whole: &'a RawValue = serde_json::from_str(text).ok()?;
    if pointer.is_empty() {
        return Some(whole);
    }
    let mut current = whole;
    for token in pointer.strip_prefix('/')?.split('/') {
        current = step(current, &unescape(token))?;
    }
    Some(current)
}

/// The string or number at `pointer` in the JSON text `text` (like [`Doc::str_at`]), without
/// parsing anything but the path to it and the scalar itself.
pub fn scalar_at(text: &str, pointer: &str) -> Option<String> {
    scalar(raw_at(text, pointer)?)
}

/// The text of a raw JSON string, escapes resolved; `None` for anything else.
pub fn string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str(text).ok()
    } else {
        // A checked string without escapes is its own text (most fields of most bodies).
        Some(inner.to_owned())
    }
}

/// A raw string or number as text (see [`Doc::str_at`]).
fn scalar(raw: &RawValue) -> Option<String> {
    match raw.get().as_bytes().first()? {
        b'"' => string(raw),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(raw.get())
            .ok()
            .map(|n| n.to_string()),
        _ => None,
    }
}

/// An object's entries in order, values kept raw; an error past [`MAX_KEPT_KEYS`].
struct RawEntries<'a>(scan::Entries<'a>);

impl<'de> Deserialize<'de> for RawEntries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEntries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Room for the keys of most webhook bodies in one allocation.
                let mut entries =
                    Vec::with_capacity(map.size_hint().unwrap_or(16).min(MAX_KEPT_KEYS));
                while let Some(Borrowed(key)) = map.next_key()? {
                    if entries.len() == MAX_KEPT_KEYS {
                        return Err(de::Error::custom("too many keys to keep"));
                    }
                    entries.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawEntries(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A string (a map key) borrowed from the text when it has no escapes: serde's own `Cow<str>`
/// always copies.
pub struct Borrowed<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Whether a map key is the given one, read without keeping it.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(s == self.0)
    }
}

/// The member `key` of the JSON object `text` (the last of duplicates, as in `Value`), the
/// others skipped without keeping anything.
fn member<'a>(text: &'a str, key: &str) -> Option<&'a RawValue> {
    struct Member<'k>(&'k str);
    impl<'de> Visitor<'de> for Member<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(is) = map.next_key_seed(KeyIs(self.0))? {
                if is {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Member(key)).ok().flatten()
}

/// The `index`th element of the JSON array `text`, skipping the ones before it.
fn nth_element(text: &str, index: usize) -> Option<&RawValue> {
    struct Nth(usize);
    impl<'de> Visitor<'de> for Nth {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            for _ in 0..self.0 {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(None);
                }
            }
            let found = seq.next_element::<&'de RawValue>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(Nth(index)).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `validate` accepts exactly what `Value` accepts.
    #[test]
    fn validate_agrees_with_value() {
        let deep = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<Vec<u8>> = vec![
            b"{}".to_vec(),
            b" [1, 2.5, -3, 1e308, \"a\\u00e9\", true, null, {\"a\":{}}] ".to_vec(),
            b"1e999".to_vec(),
            b"-1e400".to_vec(),
            b"18446744073709551616".to_vec(),
            b"[1,]".to_vec(),
            b"{\"a\":1,}".to_vec(),
            b"\"\\ud800\"".to_vec(),
            b"\"\\ud800\\udc00\"".to_vec(),
            b"\"\xff\"".to_vec(),
            b"{} x".to_vec(),
            b"".to_vec(),
            deep(127).into_bytes(),
            deep(128).into_bytes(),
            deep(129).into_bytes(),
            deep(100_000).into_bytes(),
            format!("{}1{}", "{\"a\":".repeat(128), "}".repeat(128)).into_bytes(),
            format!("{}1{}", "{\"a\":".repeat(129), "}".repeat(129)).into_bytes(),
            br#"{"$serde_json::private::RawValue":"[1,2]"}"#.to_vec(),
            br#"{"$serde_json::private::RawValue":"[1,2"}"#.to_vec(),
            br#"{"$serde_json::private::RawValue":"1e999"}"#.to_vec(),
            br#"{"$serde_json::private::RawValue":1}"#.to_vec(),
            br#"{"a":1,"$serde_json::private::RawValue":"[1,2"}"#.to_vec(),
            br#"{"$serde_json::private::RawValue":"1","b":2}"#.to_vec(),
        ];
        for body in cases {
            let value = serde_json::from_slice::<Value>(&body).is_ok();
            assert_eq!(
                validate(&body).is_ok(),
                value,
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }

    /// A raw string's text is serde_json's reading of it, with and without escapes.
    #[test]
    fn string_reads_what_serde_json_reads() {
        for text in [
            r#""plain""#,
            r#""""#,
            r#""é ✓ \u00e9""#,
            r#""a\"b\\c\/d\n""#,
            r#""\ud83d\ude00""#,
            "1",
            "null",
            "[\"a\"]",
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let theirs = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            assert_eq!(string(raw), theirs, "{text}");
        }
    }

    #[test]
    fn elements_are_counted_across_arrays_and_stop_past_the_limit() {
        let mut e = Elements::new(3);
        assert_eq!(e.take("[1, {\"a\" : 2}]"), Ok(()));
        assert_eq!(e.items[1].get(), "{\"a\" : 2}");
        assert_eq!(e.take("[3]"), Ok(()));
        assert_eq!(e.take("[4]"), Err(ArrayError::TooMany(4)));
        assert_eq!(
            e.items.len(),
            3,
            "nothing of the element over the limit is kept"
        );
        let mut e = Elements::new(3);
        assert_eq!(e.take("{}"), Err(ArrayError::Shape));
        assert_eq!(e.take("null"), Err(ArrayError::Shape));
        assert_eq!(e.take("[1,2,3]"), Ok(()));
    }

    #[test]
    fn raw_at_borrows_and_agrees_with_value_pointer() {
        let text = r#"{"a/b":{"c~d":[ 1 , {"x" : true} ]},"k":1,"k":"last","n":-1.5e3}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            raw_at(text, "/a~1b/c~0d/1").unwrap().get(),
            r#"{"x" : true}"#
        );
        assert_eq!(raw_at(text, "/a~1b/c~0d/0").unwrap().get(), "1");
        for pointer in [
            "",
            "/k",
            "/n",
            "/a~1b/c~0d/01",
            "/a~1b/c~0d/+1",
            "/a~1b/c~0d/2",
            "/nope",
            "nope",
        ] {
            assert_eq!(
                scalar_at(text, pointer),
                crate::providers::str_at(&value, pointer),
                "{pointer}"
            );
        }
    }

    /// `Doc` finds what `Value::pointer` finds, at the top level (cut once) and below it.
    #[test]
    fn doc_agrees_with_value_pointer() {
        let bodies = [
            r#" {"a/b":{"c~d":[ 1 , {"x" : true} ]},"k":1,"k":"last","n":-1.5e3,"e":"\u00e9\n",
               "z":null,"o":{"i":{"j":"deep"},"i":{"j":"later"}},"big":18446744073709551615} "#,
            r#"[{"id":7},"two",3]"#,
            r#""just a string""#,
            "-0",
            "1e300",
            r#"{"\u0061":"escaped key","a~b":1,"":{"":"empty"}}"#,
        ];
        let pointers = [
            "",
            "/k",
            "/n",
            "/e",
            "/z",
            "/big",
            "/a~1b",
            "/a~1b/c~0d/1",
            "/a~1b/c~0d/1/x",
            "/a~1b/c~0d/01",
            "/a~1b/c~0d/+1",
            "/a~1b/c~0d/2",
            "/a~1b/c~0d/-1",
            "/o/i/j",
            "/o/i",
            "/nope",
            "nope",
            "/0",
            "/0/id",
            "/1",
            "/2",
            "/3",
            "/00",
            "/a",
            "/a~0b",
            "/",
            "//",
            "/k/0",
        ];
        for body in bodies {
            let value: Value = serde_json::from_str(body).unwrap();
            let doc = Doc::parse(body.as_bytes()).unwrap();
            assert_eq!(doc.payload().get(), body.trim(), "{body}");
            assert_eq!(doc.is_object(), value.is_object(), "{body}");
            for pointer in pointers {
                assert_eq!(
                    doc.str_at(pointer),
                    crate::providers::str_at(&value, pointer),
                    "{body} {pointer}"
                );
                assert_eq!(
                    doc.value_at(pointer).as_ref(),
                    value.pointer(pointer),
                    "{body} {pointer}"
                );
                // The same lookup from the first token's member, cut on its own.
                if let Some((first, rest)) =
                    pointer.strip_prefix('/').and_then(|p| p.split_once('/'))
                {
                    let nested = doc.nested(&unescape(first));
                    assert_eq!(
                        nested
                            .as_ref()
                            .and_then(|n| n.value_at(&format!("/{rest}"))),
                        value.pointer(pointer).cloned(),
                        "{body} {pointer}, nested"
                    );
                }
            }
        }
        // More keys than are kept: each lookup reads the object again, with the same answers.
        let many = format!(
            r#"{{"id":"first",{}"id":"last","z":{{"id":7}}}}"#,
            (0..MAX_KEPT_KEYS)
                .map(|i| format!(r#""k{i}":{i},"#))
                .collect::<String>()
        );
        let value: Value = serde_json::from_str(&many).unwrap();
        let doc = Doc::parse(many.as_bytes()).unwrap();
        assert!(doc.entries.is_none());
        for pointer in ["/id", "/k0", "/k127", "/k128", "/z/id", "/z", ""] {
            assert_eq!(
                doc.str_at(pointer),
                crate::providers::str_at(&value, pointer),
                "{pointer}"
            );
        }
        let doc = Doc::parse(bodies[0].as_bytes()).unwrap();
        assert_eq!(doc.get("k").map(RawValue::get), Some(r#""last""#));
        assert_eq!(doc.get("z").map(RawValue::get), Some("null"));
        assert!(doc.get("nope").is_none());
        assert!(Doc::parse(b"[1]").unwrap().get("0").is_none());
    }

    /// `Doc::parse` refuses exactly what `Value` refuses, as `NotJson`.
    #[test]
    fn doc_refuses_what_value_refuses() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        for body in [
            &b""[..],
            b"{",
            b"{\"a\":1,}",
            b"1e999",
            b"\"\xff\"",
            b"{} x",
            deep.as_bytes(),
        ] {
            assert!(serde_json::from_slice::<Value>(body).is_err());
            assert!(matches!(Doc::parse(body), Err(ParseError::NotJson(_))));
        }
    }
}
