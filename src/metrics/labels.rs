//! The closed label sets of the bridge's metrics. Each is an enum with `ALL` and `label()`; the
//! modules that decide an outcome return one of these. [`super::Metrics::new`] exports every value
//! of the sets that alerts read (`FailureReason`, `ConnectionError`, `Task`) at 0 from the start,
//! so `rate()` and alerts work before the first occurrence; `RequestOutcome` and `EventOutcome`
//! series come with their endpoint's first request.

/// Declares a closed label set: the enum, `ALL` in declaration order, and `label()`.
macro_rules! label_set {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The metric label value.
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }
        }
    };
}

label_set! {
    /// How a provider request ended (`requests_total{outcome}`, and the request's log line).
    pub enum RequestOutcome {
        Accepted => "accepted",
        Spooled => "spooled",
        /// A protocol reply that publishes nothing (isendu's URL check).
        Handshake => "handshake",
        /// Neither the broker nor the spool made the events durable: 503.
        Unavailable => "unavailable",
        /// Over `max_in_flight` or `max_connections`: 503 at once.
        Overloaded => "overloaded",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        NotFound => "not_found",
        MethodNotAllowed => "method_not_allowed",
        TooLarge => "too_large",
        BadRequest => "bad_request",
        Timeout => "timeout",
        /// The handler panicked; answered 500 (the process keeps serving).
        Internal => "internal_error",
    }
}

label_set! {
    /// What became of one event of a request (`events_total{outcome}`).
    pub enum EventOutcome {
        /// Confirmed by the broker.
        Published => "published",
        /// Fsync'd to the spool; published later.
        Spooled => "spooled",
        /// Already made durable within the dedup window; not published again.
        Duplicate => "duplicate",
        /// Not made durable; the request was answered 503.
        Failed => "failed",
    }
}

label_set! {
    /// Why a publish was not confirmed (`publish_failures_total{reason}`): the broker side, for
    /// live and drain publishes, then the spool side when the fallback failed too (those
    /// requests got a 503).
    pub enum FailureReason {
        NotConnected => "not_connected",
        Blocked => "blocked",
        Timeout => "timeout",
        Nack => "nack",
        Returned => "returned",
        AmqpError => "amqp_error",
        SpoolFull => "spool_full",
        /// The spool writer's queue was over `[spool] queue_max_bytes`: refused at once.
        SpoolBusy => "spool_busy",
        SpoolError => "spool_error",
        SpoolTimeout => "spool_timeout",
    }
}

label_set! {
    /// Why a provider connection ended in error before or instead of a request
    /// (`connection_errors_total{reason}`); the HTTP layer classifies hyper's errors into these.
    pub enum ConnectionError {
        /// Request head over `max_header_size` or too many headers; hyper answered 431.
        HeaderTooLarge => "header_too_large",
        /// Request line or headers that do not parse (a TLS handshake on the plain port, say);
        /// hyper answered 400.
        Malformed => "malformed",
        /// Part of a request head arrived, then nothing more before `header_read_timeout`.
        HeaderTimeout => "header_timeout",
        /// Anything else: the client reset or closed mid-request, a write failed.
        Io => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_snake_case() {
        let sets: [&[&str]; 4] = [
            &RequestOutcome::ALL
                .iter()
                .map(|o| o.label())
                .collect::<Vec<_>>(),
            &EventOutcome::ALL
                .iter()
                .map(|o| o.label())
                .collect::<Vec<_>>(),
            &FailureReason::ALL
                .iter()
                .map(|o| o.label())
                .collect::<Vec<_>>(),
            &ConnectionError::ALL
                .iter()
                .map(|o| o.label())
                .collect::<Vec<_>>(),
        ];
        for labels in sets {
            let unique: std::collections::HashSet<_> = labels.iter().collect();
            assert_eq!(unique.len(), labels.len(), "{labels:?}");
            assert!(
                labels
                    .iter()
                    .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
                "{labels:?}"
            );
        }
    }
}

label_set! {
    /// A supervised background task (`task_restarts_total{task}`).
    pub enum Task {
        /// Publishes spooled records (`delivery::drainer`).
        Drainer => "drainer",
        /// Spools returned messages nobody could park (`delivery::strays`).
        Strays => "strays",
        /// The broker connection manager (`publisher::link`).
        Link => "link",
    }
}
