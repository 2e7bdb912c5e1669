//! Bodies for every isendu endpoint variant of the fuzz config: the first byte picks the variant,
//! the next line is an `x-event` header, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_bridge_fuzz::{check, endpoints, split_headers};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let eps = endpoints("isendu");
    let ep = eps[pick as usize % eps.len()];
    let (headers, body) = split_headers(rest, &["x-event"]);
    check(ep, &headers, body);
});
