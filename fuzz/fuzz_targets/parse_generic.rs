//! The `parse_generic` target: see `src/targets/parse_generic.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::parse_generic::run(data));
