//! The one-pass JSON scanner (`webhook_bridge::providers::json::scan`) against serde_json, on the
//! body after the input's first line (the seeds' selector line, as for the parse targets).
//!
//! Invariants: a text the scanner accepts is one `serde_json::Value` accepts, its whole is the raw
//! value serde_json cuts, and its top-level entries are serde_json's, keys unescaped, in order,
//! duplicates kept (none kept past the limit); `check` decides exactly the texts `scan` does; and
//! `Doc::parse` and `validate`, which take the scanner's answer or serde_json's, accept exactly
//! what `Value` accepts.

use std::fmt;

use serde::Deserializer;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use webhook_bridge::providers::json::{Doc, MAX_KEPT_KEYS, scan, validate};

/// An object's entries as serde_json cuts them: unescaped key, raw value text.
fn entries(text: &str) -> Vec<(String, String)> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: &RawValue = map.next_value()?;
                out.push((key, value.get().to_owned()));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Entries)
        .expect("an object serde_json accepted cuts into entries")
}

pub fn run(data: &[u8]) {
    let body = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[i + 1..],
        None => data,
    };
    let value_accepts = serde_json::from_slice::<Value>(body).is_ok();
    assert_eq!(
        Doc::parse(body).is_ok(),
        value_accepts,
        "Doc::parse and Value disagree"
    );
    assert_eq!(
        validate(body).is_ok(),
        value_accepts,
        "validate and Value disagree"
    );
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let Some(scanned) = scan::scan(text, MAX_KEPT_KEYS) else {
        assert!(!scan::check(text), "check accepted what scan leaves");
        return;
    };
    assert!(scan::check(text), "check left what scan accepts");
    assert!(value_accepts, "the scanner accepted what Value refuses");
    let whole: &RawValue = serde_json::from_str(text).expect("Value accepted it");
    assert_eq!(scanned.whole.get(), whole.get());
    let ours: Option<Vec<(String, String)>> = scanned.entries.map(|e| {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.get().to_owned()))
            .collect()
    });
    if whole.get().starts_with('{') {
        let theirs = entries(whole.get());
        if theirs.len() > MAX_KEPT_KEYS {
            assert_eq!(ours, None, "entries kept past the limit");
        } else {
            assert_eq!(ours, Some(theirs), "the cut differs from serde_json's");
        }
    } else {
        assert_eq!(ours, Some(Vec::new()), "entries of a non-object");
    }
}
