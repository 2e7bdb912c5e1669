//! webhook-bridge: authenticated provider webhooks in, confirmed CloudEvents on a RabbitMQ topic
//! exchange out. See ARCHITECTURE.md for the map; the modules are listed here by layer, lowest
//! first: a module imports only from the layers above its own line, never from below.
//!
//! These docs are the maintainers': module docs link to the private modules they are made of, so
//! build them with `cargo doc --no-deps --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

// Foundations: no imports from the crate.
pub mod logging;
pub mod message;
pub mod secret;
pub mod shutdown;
pub mod units;
// Metrics (uses `logging` only).
pub mod metrics;
// Request authentication, then the providers (which name their default schemes).
pub mod auth;
pub mod providers;
// The validated configuration (checks provider options through the registry).
pub mod config;
// Events → messages, and the dedup window.
pub mod dedup;
pub mod envelope;
// Storage and the broker: neither knows the other.
pub mod publisher;
pub mod spool;
// Policy: the acknowledgement rule, the drainer, the stray keeper.
pub mod delivery;
// The edges: HTTP listeners, `send`, and the operator tools (`tail`, `unrouted replay`).
pub mod http;
pub mod send;
pub mod tools;
// Wiring.
pub mod app;

pub use app::{StartError, serve};
