//! Bodies for every isendu endpoint variant of the fuzz config: the first byte picks the variant,
//! the next line is an `x-event` header, the rest is the body.

use crate::{check, endpoints, split_headers};

/// One input.
pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let eps = endpoints("isendu");
    let ep = eps[pick as usize % eps.len()];
    let (headers, body) = split_headers(rest, &["x-event"]);
    check(ep, &headers, body);
}
