//! The `parse_any` target: see `src/targets/parse_any.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::parse_any::run(data));
