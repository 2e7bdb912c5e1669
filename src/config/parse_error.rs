//! A TOML parse error told without the file's text. toml's own `Display` quotes the offending
//! line, and that line may hold a secret (a misspelt `secret` key, a secret pasted under the
//! wrong key), so the error keeps only the position, the key it is about (`endpoint[1].secrett`)
//! and toml's message, with the quoted values serde puts in messages (`invalid type: string
//! "…"`) replaced by `"***"`.

use std::collections::HashMap;

/// `line L, column C: `key`: message`.
pub(super) fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = redact_quoted(error.message().trim_end());
    let Some(span) = error.span() else {
        return message;
    };
    let mut at = span.start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let key = key_on_line(&text[line_start..at], &text[at..line_end]).map(|key| {
        let mut path = table_path(&text[..line_start]);
        path.extend(key);
        path.join(".")
    });
    match key {
        Some(key) => format!("line {line}, column {column}: `{key}`: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// Every `"…"` in `message` (escapes honoured) becomes `"***"`, and so does the value serde
/// quotes in backticks after `unknown variant`; other backticks (field names, expected
/// variants, an expected `"`) are kept.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '`' {
            let quoted: String = chars.by_ref().take_while(|&q| q != '`').collect();
            if out.ends_with("unknown variant `") {
                out.push_str("***");
            } else {
                out.push_str(&quoted);
            }
            out.push('`');
            continue;
        }
        if c != '"' {
            continue;
        }
        let mut escaped = false;
        let mut closed = false;
        for inner in chars.by_ref() {
            match inner {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        out.push_str("***");
        if closed {
            out.push('"');
        }
    }
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// The keys leading to the error on its own line: `before` is the line up to the error, `from`
/// the rest of it. Inline tables give their keys (`auth`, `header`); strings are skipped, so no
/// value is ever taken for a key. `None` when the line does not tell (a multi-line array).
fn key_on_line(before: &str, from: &str) -> Option<Vec<String>> {
    // Keys of the inline tables and arrays the error is inside, and the key being assigned.
    let mut open: Vec<Option<String>> = Vec::new();
    let mut token = String::new();
    let mut assigned: Option<String> = None;
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                // Skip a string (a value, or a quoted key, which is not reported).
                let mut escaped = false;
                for inner in chars.by_ref() {
                    match inner {
                        _ if escaped => escaped = false,
                        '\\' if c == '"' => escaped = true,
                        q if q == c => break,
                        _ => {}
                    }
                }
                token.clear();
            }
            '=' => assigned = Some(std::mem::take(&mut token)).filter(|k| !k.is_empty()),
            '{' | '[' => {
                open.push(assigned.take());
                token.clear();
            }
            '}' | ']' => {
                open.pop();
                token.clear();
            }
            ',' => {
                token.clear();
                assigned = None;
            }
            '#' => return None,
            c if is_key_char(c) || c == '.' => token.push(c),
            c if c.is_whitespace() => {
                if chars.peek().is_some_and(|n| is_key_char(*n)) {
                    token.clear();
                }
            }
            _ => token.clear(),
        }
    }
    let mut path: Vec<String> = open.iter().flatten().cloned().collect();
    let at_key: String = from.chars().take_while(|&c| is_key_char(c)).collect();
    let rest = from[at_key.len()..].trim_start();
    if !at_key.is_empty() && rest.starts_with('=') && before.trim_end().ends_with(['{', ',']) {
        // The error is about the key itself (an unknown field inside an inline table).
        path.push(at_key);
    } else if !at_key.is_empty() && rest.starts_with('=') && before.trim().is_empty() {
        // An unknown field on a line of its own.
        path.push(at_key);
    } else if before.trim_end().ends_with('=') {
        path.push(assigned?);
    } else if path.is_empty() {
        return None;
    }
    Some(path)
}

/// The table the line after `before` belongs to, from the last `[table]` or `[[array]]` header,
/// with the index of array tables: `["endpoint[1]", "auth"]`.
fn table_path(before: &str) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut in_multiline: Option<&str> = None;
    for line in before.lines() {
        if let Some(quote) = in_multiline {
            if line.matches(quote).count() % 2 == 1 {
                in_multiline = None;
            }
            continue;
        }
        for quote in ["\"\"\"", "'''"] {
            if line.matches(quote).count() % 2 == 1 {
                in_multiline = Some(quote);
            }
        }
        let line = line.trim_start();
        let (name, array) = if let Some(rest) = line.strip_prefix("[[") {
            (rest.split("]]").next().unwrap_or(""), true)
        } else if let Some(rest) = line.strip_prefix('[') {
            (rest.split(']').next().unwrap_or(""), false)
        } else {
            continue;
        };
        let segments: Vec<&str> = name.split('.').map(str::trim).collect();
        let full = segments.join(".");
        if array {
            *counts.entry(full).or_insert(0) += 1;
        }
        current.clear();
        for i in 1..=segments.len() {
            let prefix = segments[..i].join(".");
            match counts.get(&prefix) {
                Some(n) => current.push(format!("{}[{}]", segments[i - 1], n - 1)),
                None => current.push(segments[i - 1].to_string()),
            }
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        top: Option<u32>,
        #[serde(default)]
        endpoint: Vec<Endpoint>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Endpoint {
        name: String,
        #[serde(default)]
        list: Vec<u32>,
        #[serde(default)]
        auth: Option<Auth>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Auth {
        header: String,
    }

    fn describe_of(text: &str) -> String {
        let e = toml::from_str::<Doc>(text).unwrap_err();
        describe(text, &e)
    }

    #[test]
    fn the_key_and_position_are_named_and_no_value_is_shown() {
        let cases = [
            ("top = \"fake-1\"\n", "line 1, column 7: `top`: "),
            (
                "[[endpoint]]\nname = 'a'\n[[endpoint]]\nname = 'b'\nnmae = 'fake-2'\n",
                "line 5, column 1: `endpoint[1].nmae`: unknown field `nmae`",
            ),
            (
                "[[endpoint]]\nname = 'a'\nauth = { header = 'x', secret = 'fake-3' }\n",
                "line 3, column 24: `endpoint[0].auth.secret`: unknown field `secret`",
            ),
            (
                "[[endpoint]]\nname = 'a'\nauth = { header = 'fake-4' }\n[endpoint.auth]\n",
                "line 4, column ",
            ),
            (
                "[[endpoint]]\nname = 'a'\nlist = [1, \"fake-5\"]\n",
                "line 3, column 12: `endpoint[0].list`: ",
            ),
            ("top = \"fake-6\n", "line 1, column "),
        ];
        for (text, expected) in cases {
            let d = describe_of(text);
            assert!(d.starts_with(expected), "{text:?}: {d}");
            assert!(!d.contains("fake-"), "{text:?}: {d}");
        }
    }

    #[test]
    fn quoted_values_in_messages_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "a \"b\" c", expected u32"#),
            r#"invalid type: string "***", expected u32"#
        );
        assert_eq!(redact_quoted("unknown field `x`"), "unknown field `x`");
        assert_eq!(
            redact_quoted("unknown variant `fake-7`, expected `hex` or `base64`"),
            "unknown variant `***`, expected `hex` or `base64`"
        );
        assert_eq!(
            redact_quoted("invalid basic string, expected `\"`"),
            "invalid basic string, expected `\"`"
        );
        assert_eq!(
            redact_quoted(r#"unterminated "abc"#),
            r#"unterminated "***"#
        );
    }
}
