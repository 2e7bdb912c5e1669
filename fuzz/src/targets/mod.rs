//! The fuzz targets' bodies, one module each; `fuzz_targets/<name>.rs` hands libFuzzer's input
//! to `<name>::run`, and the mutation smoke test (`crate::smoke`) runs them without libFuzzer.

pub mod amqp_frames;
pub mod auth_verify;
pub mod json_scan;
pub mod parse_any;
pub mod parse_generic;
pub mod parse_isendu;
pub mod parse_mailship;
pub mod request;
pub mod spool_record;

/// A target's body: one input, no result (a panic is the finding).
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/` binary.
pub const ALL: &[(&str, Target)] = &[
    ("parse_any", parse_any::run),
    ("parse_isendu", parse_isendu::run),
    ("parse_mailship", parse_mailship::run),
    ("parse_generic", parse_generic::run),
    ("json_scan", json_scan::run),
    ("auth_verify", auth_verify::run),
    ("spool_record", spool_record::run),
    ("request", request::run),
    ("amqp_frames", amqp_frames::run),
];

/// Bodies for the fuzz config's endpoints whose name starts with `prefix`: the first byte picks
/// the endpoint, the next line is an `x-event` header, the rest is the body.
fn endpoints_of(prefix: &str, data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let eps = crate::endpoints(prefix);
    let ep = eps[pick as usize % eps.len()];
    let (headers, body) = crate::split_headers(rest, &["x-event"]);
    crate::check(ep, &headers, body);
}
