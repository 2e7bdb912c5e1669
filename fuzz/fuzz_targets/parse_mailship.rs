//! The `parse_mailship` target: see `src/targets/parse_mailship.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::parse_mailship::run(data));
