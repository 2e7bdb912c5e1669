//! The `json_scan` target: see `src/targets/json_scan.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::json_scan::run(data));
