//! The HTTP edge: the provider listener ([`listener`]) with its limits and the request path
//! ([`request`], top to bottom, answered through [`answer`] — the one place that maps outcomes to
//! status codes), the deadline guard ([`guard`]), routing ([`router`]), connection
//! classification ([`connection`]) and the admin listener ([`admin`]).
//!
//! **Architecture invariant:** this module never talks to lapin or the spool; it hands messages
//! to [`Delivery`] and maps what became of them to an answer.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::metrics::Metrics;

mod admin;
pub mod answer;
pub mod connection;
mod guard;
mod listener;
mod request;
mod router;

pub use self::admin::{ADMIN_MAX_CONNECTIONS, serve_admin};
pub use self::guard::{GuardError, guarded};
pub use self::listener::serve_providers;
pub use self::request::{Prepared, handle, offline};
pub use self::router::{Route, Router};

/// Shared by every connection of the provider and admin listeners.
pub struct AppState {
    pub config: Arc<Config>,
    pub router: Router,
    pub delivery: Arc<Delivery>,
    pub metrics: Metrics,
    /// Bounds requests processed at once; beyond it the answer is an immediate 503.
    in_flight: Arc<Semaphore>,
    /// Body bytes being read or held, one permit per byte (`[limits] max_body_bytes_in_flight`).
    body_budget: Arc<Semaphore>,
    /// An eighth more, only for bodies that declare at most [`SMALL_BODY_MAX`] bytes, taken when
    /// `body_budget` is spent: clients trickling large bodies cannot crowd out the small
    /// webhooks providers send.
    small_body_reserve: Arc<Semaphore>,
}

/// The largest declared body that may use [`AppState`]'s reserve for small bodies.
pub const SMALL_BODY_MAX: usize = 64 * 1024;

impl AppState {
    pub fn new(config: Arc<Config>, delivery: Arc<Delivery>, metrics: Metrics) -> Self {
        Self {
            router: Router::new(&config.endpoints),
            in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
            body_budget: Arc::new(Semaphore::new(
                config
                    .limits
                    .max_body_bytes_in_flight
                    .min(Semaphore::MAX_PERMITS),
            )),
            small_body_reserve: Arc::new(Semaphore::new(
                (config.limits.max_body_bytes_in_flight / 8).min(Semaphore::MAX_PERMITS),
            )),
            config,
            delivery,
            metrics,
        }
    }
}
