//! The JSON line of `--log-format json`, written field by field straight into the line.
//!
//! `tracing-subscriber`'s own JSON formatter goes through `serde` for every field and formats
//! the timestamp with `core::fmt` on every line: 5.9% of the bridge's CPU at full load, one line
//! per request; this one halves that (docs/BENCHMARKS.md, "The log line's formatter"). It writes
//! the same object — same keys, same order, same values: `timestamp` (RFC 3339, microseconds,
//! UTC), `level`, the event's fields in the order recorded (`message` among them), `target` —
//! escaping strings as `serde_json` does, and formatting the date and time once per second per
//! thread.
//!
//! Events it does not write itself go to `tracing-subscriber`'s formatter, configured the same:
//! an event inside a span (its `spans` list needs the span's stored fields) and a record
//! bridged from the `log` crate (its metadata has to be normalized first). The bridge's own
//! request path has neither.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// See the module docs.
pub struct JsonLine {
    fallback: Format<Json>,
}

impl JsonLine {
    /// Writes what `fmt::layer().json().flatten_event(true).with_current_span(false)` writes.
    pub fn new() -> Self {
        Self {
            fallback: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false),
        }
    }
}

impl Default for JsonLine {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let from_log = meta.fields().field("log.target").is_some();
        if from_log || ctx.event_scope().is_some() {
            return self.fallback.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Each field as `,"name":value`: strings and `Debug`/`Display` values as JSON strings, integers
/// and booleans as they are, floats as numbers (`null` when not finite, as `serde_json`).
struct Fields<'w, W: fmt::Write> {
    out: &'w mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_char(',')?;
        write_json_str(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_json_str(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| {
            if value.is_finite() {
                // `Debug` keeps a fraction or an exponent (`3.0`, `1e-7`): a JSON number.
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }
}

/// `s` as a JSON string literal.
fn write_json_str(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Writes what it is given with JSON string escapes, as `serde_json` escapes: `"`, `\`, the
/// short forms `\b \f \n \r \t`, and other control characters as `\u00XX`.
struct Escaped<'w, W: fmt::Write + ?Sized>(&'w mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let short = match b {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                0x08 => Some("\\b"),
                0x0c => Some("\\f"),
                0..=0x1f => None,
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            match short {
                Some(escape) => self.0.write_str(escape)?,
                None => write!(self.0, "\\u{b:04x}")?,
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

thread_local! {
    /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `now` as `tracing-subscriber` writes it: `2026-12-01T10:52:19.123456Z`.
fn write_timestamp(out: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            let dt = chrono::DateTime::<chrono::Utc>::from(
                UNIX_EPOCH + std::time::Duration::from_secs(secs),
            );
            write!(text, "{}", dt.format("%Y-%m-%dT%H:%M:%S"))?;
            *cached = secs;
        }
        out.write_str(text)
    })?;
    write!(out, ".{:06}Z", since.subsec_micros())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects whatever the layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The events every test logs: the request line's field types, every escape, floats that
    /// are whole, tiny, huge and not finite, and a `Display` value.
    fn log_everything() {
        let rid = "abc-123".to_string();
        tracing::info!(
            request_id = %rid,
            endpoint = "wegocod",
            outcome = "accepted",
            status = 200u16,
            events = 1usize,
            latency_ms = 1.25f64,
            "request"
        );
        tracing::warn!(
            text = "quote \" backslash \\ newline \n tab \t cr \r bell \u{7} nul \0 \u{1f} é ✓",
            negative = -7i64,
            yes = true,
            whole = 3.0f64,
            tiny = 1e-7f64,
            huge = 1e300f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            error = %std::io::Error::other("disk \"full\""),
            "second {} line",
            2
        );
        tracing::error!("no fields");
    }

    fn lines(layer_json: bool) -> Vec<String> {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(out.clone());
        if layer_json {
            let subscriber =
                tracing_subscriber::registry().with(layer.event_format(JsonLine::new()));
            tracing::subscriber::with_default(subscriber, log_everything);
        } else {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, log_everything);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// The line without its timestamp's value, which differs between two runs.
    fn without_time(line: &str) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let time = v["timestamp"].as_str().unwrap().to_string();
        let rest = line.replacen(&time, "", 1);
        (rest, time)
    }

    #[test]
    fn writes_what_tracing_subscribers_json_writes() {
        let ours = lines(true);
        let theirs = lines(false);
        assert_eq!(ours.len(), 3, "{ours:?}");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            let ((a_rest, a_time), (b_rest, b_time)) = (without_time(a), without_time(b));
            // Floats may be spelled differently (`1e300` vs `1e+300`); as values they agree.
            let (va, vb): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(&a_rest).unwrap(),
                serde_json::from_str(&b_rest).unwrap(),
            );
            assert_eq!(va, vb, "\nours:   {a}\ntheirs: {b}");
            let keys = |v: &serde_json::Value| -> Vec<String> {
                v.as_object().unwrap().keys().cloned().collect()
            };
            assert_eq!(keys(&va), keys(&vb), "key order");
            assert_eq!(a_time.len(), b_time.len(), "{a_time} vs {b_time}");
            assert!(
                a_time.ends_with('Z') && a_time.as_bytes()[10] == b'T',
                "{a_time}"
            );
        }
        assert!(ours[0].starts_with("{\"timestamp\":\""), "{}", ours[0]);
        assert!(ours[0].ends_with("\"target\":\"webhook_bridge::logging::json::tests\"}"));
    }

    #[test]
    fn timestamps_match_the_clock_across_seconds() {
        for secs in [0u64, 59, 86_399, 1_764_586_339, 4_102_444_800] {
            for micros in [0u32, 1, 999_999] {
                let t = UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000 + 999);
                let mut ours = String::new();
                write_timestamp(&mut ours, t).unwrap();
                let theirs = chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn an_event_in_a_span_keeps_the_span_list() {
        let out = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(out.clone())
            .event_format(JsonLine::new());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("connect", attempt = 2);
            let _in = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "inside");
        assert_eq!(v["spans"][0]["name"], "connect", "{v}");
    }
}
