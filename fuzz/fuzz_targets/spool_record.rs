//! The `spool_record` target: see `src/targets/spool_record.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::spool_record::run(data));
