//! The fuzz targets' bodies, one module each; `fuzz_targets/<name>.rs` hands libFuzzer's input
//! to `<name>::run`, and the mutation smoke test (`crate::smoke`) runs them without libFuzzer.

pub mod auth_verify;
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
    ("auth_verify", auth_verify::run),
    ("spool_record", spool_record::run),
    ("request", request::run),
];
