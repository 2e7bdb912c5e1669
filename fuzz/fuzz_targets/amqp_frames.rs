//! The `amqp_frames` target: see `src/targets/amqp_frames.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| webhook_bridge_fuzz::targets::amqp_frames::run(data));
