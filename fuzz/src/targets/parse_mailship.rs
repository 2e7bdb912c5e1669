//! Bodies for every mailship endpoint variant of the fuzz config: the first byte picks the variant,
//! the next line is an `x-event` header, the rest is the body.

/// One input.
pub fn run(data: &[u8]) {
    super::endpoints_of("mailship", data);
}
