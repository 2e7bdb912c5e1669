//! Any body to any endpoint: the first byte picks the endpoint, the next line is an `x-event`
//! header, the rest is the body.

use crate::{check, config, split_headers};

/// One input.
pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let eps = &config().endpoints;
    let ep = &eps[pick as usize % eps.len()];
    let (headers, body) = split_headers(rest, &["x-event"]);
    check(ep, &headers, body);
}
