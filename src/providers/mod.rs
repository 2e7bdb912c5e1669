//! Provider registry. A provider is one module here, exporting a [`Provider`]: its name, default
//! authentication, the routing keys it can produce, its bundled samples, its parser and the check
//! of its endpoint options. Adding one is a new file and one name in `registry!` below.
//!
//! **Architecture invariant:** provider modules do no I/O, touch no metrics and know nothing of
//! HTTP responses, configuration files or the broker: `(options, headers, body) → events`. That
//! keeps them unit-testable and fuzzable.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use crate::auth::AuthConfig;
use crate::secret::Secret;

mod event;
pub mod json;
pub mod samples;

pub use self::event::{
    Batch, Event, Inbound, MAX_EVENTS_PER_REQUEST, Options, OptionsDeserializer, OptionsError,
    ParseError, Parsed, ProviderOptions, Status, UNRECOGNIZED, hash_hex, options_of, str_at,
};
pub use self::samples::Sample;

/// The `events_total` type of sender-chosen events an endpoint did not declare.
pub const OTHER: &str = "other";

/// Declares the provider modules and [`ALL`], in one list.
macro_rules! registry {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// Every provider, in the order `check-config` and the docs list them.
        pub static ALL: &[&Provider] = &[$(&$name::PROVIDER),+];
    };
}

registry!(modexpress, wegocod, peddler, isendu, mailship, generic);

/// A problem with an endpoint's provider options: the key (relative to the endpoint, e.g.
/// `generic.source`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    pub key: &'static str,
    pub message: String,
}

/// A header name and value a sender adds.
pub type Header = (&'static str, String);

/// What a provider says of an endpoint's options: refused, or accepted with warnings.
pub type Checked = Result<Vec<OptionProblem>, OptionProblem>;

/// A status mapping table of docs/contract.md §5.2: the heading above it, and the function that
/// maps a provider status as its rows say.
pub type StatusTable = (&'static str, fn(&str) -> Status);

/// One provider: everything the rest of the bridge needs to know of it.
pub struct Provider {
    /// `provider = "…"` in the config; the routing-key prefix and metric label (see
    /// [`Provider::prefix`] for the generic provider).
    pub name: &'static str,
    /// The scheme used when the endpoint has no `auth` table; `None`: it must have one.
    pub default_auth: fn() -> Option<AuthConfig>,
    /// `entity.action` routing-key suffixes an endpoint can produce, besides `unrecognized`.
    pub kinds: fn(&Options) -> Vec<&'static str>,
    /// The documented sample payloads, for `send --sample` and the tests.
    pub samples: &'static [Sample],
    /// The request's events, a protocol reply, or why the body is refused.
    pub parse: fn(&Inbound<'_>) -> Result<Parsed, ParseError>,
    /// The keys of an `[[endpoint]]` table that are this provider's own (`key_id`, or `generic`
    /// for the `[endpoint.generic]` table). The config accepts the keys of every provider and
    /// hands each endpoint's provider its own ones.
    pub option_keys: &'static [&'static str],
    /// An endpoint's [`Options`] from its [`Provider::option_keys`] (those present), e.g.
    /// [`options_of`]`::<MyOptions>`.
    pub options: fn(OptionsDeserializer<'_>) -> Result<Options, OptionsError>,
    /// Check an endpoint's options at start-up.
    pub check: fn(&Options) -> Checked,
    /// Whether one request may carry any number of events; otherwise a body is exactly one
    /// event (checked by the fuzz targets).
    pub batches: fn(&Options) -> bool,
    /// For providers with a handshake the bridge answers itself ([`Parsed::Reply`], refused
    /// with [`ParseError::HandshakeRefused`]): the secret the answer carries, when configured.
    /// `None`: the provider never replies nor refuses a handshake.
    pub handshake_secret: Option<fn(&Options) -> Option<&Secret>>,
    /// Its status mapping tables in docs/contract.md §5.2: the heading above each table and the
    /// function the rows are checked against (`tests/contract.rs`).
    pub status_tables: &'static [StatusTable],
    /// A routing-key prefix chosen per endpoint (the generic provider's `source`); the endpoint
    /// name when it gives none. `None`: the prefix is [`Provider::name`].
    pub custom_prefix: Option<fn(&Options) -> Option<&str>>,
    /// Headers the provider sends next to its signature, derived from the body (for `send`).
    pub sender_headers: fn(&[u8], SystemTime) -> Vec<Header>,
    /// The header an endpoint takes the event name from, if it routes on one (for `send`'s
    /// hint when it is missing).
    pub event_header: fn(&Options) -> Option<&str>,
    /// For providers whose senders choose the event names (the generic provider): whether a
    /// kind is one the endpoint declared, so metrics can name it. `None`: every kind is fixed.
    pub declared_kind: Option<fn(&Options, &str) -> bool>,
    /// A bundled sample as this endpoint's sender would send it (for `send --sample`).
    pub prepare_sample: fn(&Options, &Sample) -> Vec<u8>,
}

impl Provider {
    /// What a provider has when it says nothing else: `..Provider::BASE` fills the rest.
    pub const BASE: Provider = Provider {
        name: "",
        default_auth: || None,
        kinds: |_| Vec::new(),
        samples: &[],
        parse: |_| Ok(Parsed::Events(Vec::new())),
        option_keys: &[],
        options: |_| Ok(Options::default()),
        check: no_options,
        batches: |_| false,
        handshake_secret: None,
        status_tables: &[],
        custom_prefix: None,
        sender_headers: |_, _| Vec::new(),
        event_header: |_| None,
        declared_kind: None,
        prepare_sample: |_, sample| sample.body.to_vec(),
    };

    /// The routing-key prefix, `source` and `data.provider` of an endpoint named `endpoint`.
    pub fn prefix<'a>(&'static self, options: &'a Options, endpoint: &'a str) -> &'a str {
        match self.custom_prefix {
            Some(custom) => custom(options).unwrap_or(endpoint),
            None => self.name,
        }
    }

    /// The `type` label of `events_total` for an event published with `routing_key` by an
    /// endpoint whose prefix is `prefix`: the routing key, unless the sender chose the event name
    /// and the endpoint did not declare it — then `{prefix}.other`, so no sender can create
    /// series at will.
    pub fn metric_type<'k>(
        &self,
        options: &Options,
        prefix: &str,
        routing_key: &'k str,
    ) -> Cow<'k, str> {
        let Some(declared) = self.declared_kind else {
            return Cow::Borrowed(routing_key);
        };
        let kind = routing_key
            .strip_prefix(prefix)
            .and_then(|k| k.strip_prefix('.'))
            .unwrap_or(routing_key);
        if kind == UNRECOGNIZED || declared(options, kind) {
            Cow::Borrowed(routing_key)
        } else {
            Cow::Owned(format!("{prefix}.{OTHER}"))
        }
    }

    /// Parse a request, refusing batches over [`MAX_EVENTS_PER_REQUEST`].
    pub fn parse(&self, inbound: &Inbound<'_>) -> Result<Parsed, ParseError> {
        let parsed = (self.parse)(inbound)?;
        if let Parsed::Events(events) = &parsed
            && events.len() > MAX_EVENTS_PER_REQUEST
        {
            return Err(ParseError::TooManyEvents(events.len()));
        }
        Ok(parsed)
    }

    /// The routing keys an endpoint can produce, for `check-config` and the docs.
    pub fn routing_keys(&'static self, options: &Options, endpoint: &str) -> Vec<String> {
        let prefix = self.prefix(options, endpoint);
        (self.kinds)(options)
            .into_iter()
            .chain(std::iter::once(UNRECOGNIZED))
            .map(|k| format!("{prefix}.{k}"))
            .collect()
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Provider {}

/// The provider called `name`.
pub fn find(name: &str) -> Option<&'static Provider> {
    ALL.iter().copied().find(|p| p.name == name)
}

/// For providers whose options hold nothing to check.
pub fn no_options(_: &Options) -> Checked {
    Ok(Vec::new())
}

/// Helpers for provider unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A provider with options, as a test endpoint.
    pub struct TestEndpoint {
        pub provider: &'static Provider,
        pub options: Options,
    }

    pub fn endpoint(provider: &'static Provider) -> TestEndpoint {
        TestEndpoint {
            provider,
            options: Options::default(),
        }
    }

    /// Parse `body` and return its events; panics on a handshake reply or an error.
    pub fn events(ep: &TestEndpoint, headers: &[(&'static str, &str)], body: &[u8]) -> Vec<Event> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, http::HeaderValue::from_str(v).unwrap());
        }
        match ep
            .provider
            .parse(&Inbound {
                options: &ep.options,
                headers: &h,
                body,
            })
            .unwrap()
        {
            Parsed::Events(e) => e,
            Parsed::Reply(r) => panic!("unexpected reply {}", String::from_utf8_lossy(&r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&Status::ReadyForCarrier).unwrap(),
            "\"ready_for_carrier\""
        );
        assert_eq!(Status::OutForDelivery.as_str(), "out_for_delivery");
    }

    #[test]
    fn names_are_unique_and_every_provider_has_a_sample() {
        let names: std::collections::HashSet<_> = ALL.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), ALL.len());
        for p in ALL {
            assert!(!p.samples.is_empty(), "{} has no sample", p.name);
            assert_eq!(find(p.name), Some(*p));
        }
    }

    #[test]
    fn the_batch_histogram_reaches_the_batch_limit() {
        assert_eq!(
            crate::metrics::BATCH_BUCKETS.last().copied(),
            Some(MAX_EVENTS_PER_REQUEST as f64)
        );
    }
}
