//! How a provider request is answered: [`Answer`] (what became of it) and [`Refusal`] (why it
//! was not taken), mapped to a status code, headers and body here and nowhere else
//! (docs/contract.md §6.1). Bodies are fixed texts: nothing a client sent is echoed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::delivery::Outcome;
use crate::metrics::labels::RequestOutcome;

pub type Resp = Response<Full<Bytes>>;

/// What overloaded clients are told to wait before retrying.
pub const RETRY_AFTER_OVERLOAD: Duration = Duration::from_secs(1);

/// What became of a provider request.
#[derive(Debug)]
pub enum Answer {
    /// Every new event confirmed by the broker (`published` may be 0 when all were repeats).
    Accepted {
        published: usize,
        duplicates: usize,
    },
    /// Every new event fsync'd to the spool.
    Spooled {
        spooled: usize,
        duplicates: usize,
    },
    /// A protocol reply that publishes nothing (isendu's URL check).
    Handshake(Vec<u8>),
    Refused(Refusal),
}

/// Why a request was not taken. The variant goes to metrics and the log line; the client gets
/// only the generic text of its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no endpoint at this path")]
    NotFound,
    #[error("method is not POST")]
    MethodNotAllowed,
    #[error("source address not allowed")]
    Forbidden,
    #[error("credentials missing or wrong")]
    Unauthorized,
    #[error("body over max_body")]
    TooLarge,
    #[error("body could not be read")]
    BodyUnreadable,
    #[error("body not complete within the read timeout")]
    BodyTimeout,
    #[error("body is not JSON")]
    NotJson,
    #[error("too many events in one request")]
    TooManyEvents,
    #[error("an event could not be encoded")]
    Unencodable,
    #[error("too many requests in flight")]
    Overloaded,
    #[error("too many open connections")]
    TooManyConnections,
    #[error("too many body bytes in flight")]
    BodyBudget,
    #[error("neither the broker nor the spool made the events durable")]
    Unavailable { retry_after: Duration },
    #[error("still running at the answer deadline")]
    Overran,
    #[error("the request handler panicked")]
    Panicked,
}

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<Outcome> for Answer {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Accepted {
                published,
                duplicates,
            } => Self::Accepted {
                published,
                duplicates,
            },
            Outcome::Spooled {
                spooled,
                duplicates,
            } => Self::Spooled {
                spooled,
                duplicates,
            },
            Outcome::Duplicate(n) => Self::Accepted {
                published: 0,
                duplicates: n,
            },
            Outcome::Unavailable { retry_after } => {
                Self::Refused(Refusal::Unavailable { retry_after })
            }
        }
    }
}

impl Answer {
    /// The `requests_total{outcome}` label.
    pub fn outcome(&self) -> RequestOutcome {
        match self {
            Self::Accepted { .. } => RequestOutcome::Accepted,
            Self::Spooled { .. } => RequestOutcome::Spooled,
            Self::Handshake(_) => RequestOutcome::Handshake,
            Self::Refused(r) => r.outcome(),
        }
    }

    pub fn into_response(self) -> Resp {
        match self {
            Self::Accepted {
                published,
                duplicates,
            } => json(StatusCode::OK, counts("accepted", published, duplicates)),
            Self::Spooled {
                spooled,
                duplicates,
            } => json(StatusCode::OK, counts("spooled", spooled, duplicates)),
            Self::Handshake(reply) => json(StatusCode::OK, reply),
            Self::Refused(r) => r.response(),
        }
    }
}

impl Refusal {
    pub fn outcome(self) -> RequestOutcome {
        match self {
            Self::NotFound => RequestOutcome::NotFound,
            Self::MethodNotAllowed => RequestOutcome::MethodNotAllowed,
            Self::Forbidden => RequestOutcome::Forbidden,
            Self::Unauthorized => RequestOutcome::Unauthorized,
            Self::TooLarge => RequestOutcome::TooLarge,
            Self::BodyUnreadable | Self::NotJson | Self::TooManyEvents | Self::Unencodable => {
                RequestOutcome::BadRequest
            }
            Self::BodyTimeout | Self::Overran => RequestOutcome::Timeout,
            Self::Overloaded | Self::TooManyConnections | Self::BodyBudget => {
                RequestOutcome::Overloaded
            }
            Self::Unavailable { .. } => RequestOutcome::Unavailable,
            Self::Panicked => RequestOutcome::Internal,
        }
    }

    /// The status-code table (docs/contract.md §6.1). A refusal that leaves the connection in an
    /// unknown state (body unread or half read, a handler gone) also closes it.
    pub fn response(self) -> Resp {
        match self {
            Self::NotFound => error(StatusCode::NOT_FOUND, "not found"),
            Self::MethodNotAllowed => {
                let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                resp
            }
            Self::Forbidden => error(StatusCode::FORBIDDEN, "forbidden"),
            Self::Unauthorized => error(StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::TooLarge => close(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
            Self::BodyUnreadable => close(error(StatusCode::BAD_REQUEST, "body could not be read")),
            Self::BodyTimeout => close(error(StatusCode::REQUEST_TIMEOUT, "body read timed out")),
            Self::NotJson => error(StatusCode::BAD_REQUEST, "body is not valid JSON"),
            Self::TooManyEvents => error(StatusCode::BAD_REQUEST, "too many events in one request"),
            Self::Unencodable => error(StatusCode::BAD_REQUEST, "event could not be encoded"),
            Self::Overloaded => unavailable(RETRY_AFTER_OVERLOAD),
            // The body is left unread: the connection cannot carry another request.
            Self::TooManyConnections | Self::Overran | Self::BodyBudget => {
                close(unavailable(RETRY_AFTER_OVERLOAD))
            }
            Self::Unavailable { retry_after } => unavailable(retry_after),
            Self::Panicked => close(error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
        }
    }
}

/// `{"accepted":n}`, with `"duplicates":d` when some events were repeats.
fn counts(key: &str, n: usize, duplicates: usize) -> String {
    if duplicates == 0 {
        format!("{{\"{key}\":{n}}}")
    } else {
        format!("{{\"{key}\":{n},\"duplicates\":{duplicates}}}")
    }
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn error(status: StatusCode, message: &'static str) -> Resp {
    json(status, format!("{{\"error\":\"{message}\"}}"))
}

pub fn close(mut resp: Resp) -> Resp {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn unavailable(retry_after: Duration) -> Resp {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable");
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_outcome() {
        let table = [
            (Refusal::NotFound, 404, "not_found"),
            (Refusal::MethodNotAllowed, 405, "method_not_allowed"),
            (Refusal::Forbidden, 403, "forbidden"),
            (Refusal::Unauthorized, 401, "unauthorized"),
            (Refusal::TooLarge, 413, "too_large"),
            (Refusal::BodyUnreadable, 400, "bad_request"),
            (Refusal::BodyTimeout, 408, "timeout"),
            (Refusal::NotJson, 400, "bad_request"),
            (Refusal::TooManyEvents, 400, "bad_request"),
            (Refusal::Unencodable, 400, "bad_request"),
            (Refusal::Overloaded, 503, "overloaded"),
            (Refusal::TooManyConnections, 503, "overloaded"),
            (Refusal::BodyBudget, 503, "overloaded"),
            (
                Refusal::Unavailable {
                    retry_after: Duration::from_secs(5),
                },
                503,
                "unavailable",
            ),
            (Refusal::Overran, 503, "timeout"),
            (Refusal::Panicked, 500, "internal_error"),
        ];
        for (refusal, status, outcome) in table {
            assert_eq!(refusal.response().status().as_u16(), status, "{refusal:?}");
            assert_eq!(refusal.outcome().label(), outcome, "{refusal:?}");
        }
        let retry = Refusal::Unavailable {
            retry_after: Duration::from_secs(5),
        }
        .response();
        assert_eq!(retry.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn counts_mention_duplicates_only_when_there_are_some() {
        assert_eq!(counts("accepted", 3, 0), "{\"accepted\":3}");
        assert_eq!(counts("spooled", 1, 2), "{\"spooled\":1,\"duplicates\":2}");
    }
}
