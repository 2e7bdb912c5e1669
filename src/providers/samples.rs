//! The sample payloads of each provider's documentation (`samples/<provider>/` in the
//! repository), compiled in so `webhook-bridge send` and the tests can replay them exactly as the
//! provider would. Each provider module lists its own in [`super::Provider::samples`].

use super::ALL as PROVIDERS;

/// A named sample payload.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub name: &'static str,
    pub body: &'static [u8],
}

/// The bytes of `samples/<path>`, compiled in.
macro_rules! sample_file {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/", $path))
    };
}
pub(crate) use sample_file;

/// Every bundled sample, with its provider's name.
pub fn all() -> impl Iterator<Item = (&'static str, &'static Sample)> {
    PROVIDERS
        .iter()
        .flat_map(|p| p.samples.iter().map(move |s| (p.name, s)))
}

/// Samples of one provider.
pub fn of(provider: &str) -> impl Iterator<Item = &'static Sample> + '_ {
    all().filter(move |(p, _)| *p == provider).map(|(_, s)| s)
}

/// Look a sample up by provider and name.
pub fn find(provider: &str, name: &str) -> Option<&'static Sample> {
    of(provider).find(|s| s.name == name)
}
