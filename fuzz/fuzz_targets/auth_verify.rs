//! The `auth_verify` target: see `src/targets/auth_verify.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::auth_verify::run(data));
