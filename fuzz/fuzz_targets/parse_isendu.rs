//! The `parse_isendu` target: see `src/targets/parse_isendu.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::parse_isendu::run(data));
