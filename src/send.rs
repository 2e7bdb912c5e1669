//! `webhook-bridge send`: sign a body (a bundled sample or a file) exactly the way the endpoint's
//! provider would and POST it, like `stripe trigger`. Signing goes through [`auth::sign`], the
//! inverse of the verifiers, so what `send` produces is what the bridge accepts.
//!
//! Plain HTTP only: `send` talks to a bridge directly (locally, or through
//! `kubectl port-forward`), never to a TLS ingress.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth;
use crate::config::{Config, EndpointConfig};
use crate::providers::samples;

/// Why nothing could be sent. An answer that is not 2xx is not an error here: it is reported.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no endpoint named {name:?}; configured: {known}")]
    UnknownEndpoint { name: String, known: String },
    #[error("provider {provider} has no sample {name:?}; available: {available}")]
    UnknownSample {
        provider: String,
        name: String,
        available: String,
    },
    #[error("provider {0} has no bundled sample; pass --body FILE")]
    NoSample(String),
    #[error("cannot read {path}: {source}")]
    ReadBody {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --url {0:?}: expected http://host:port[/path]")]
    BadUrl(String),
    #[error("invalid --header {0:?}: expected 'Name: value'")]
    BadHeader(String),
    #[error("request failed: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What to send, from the command line.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    pub endpoint: String,
    /// A bundled sample of the endpoint's provider; the provider's first sample by default.
    pub sample: Option<String>,
    /// A file sent as is instead of a sample.
    pub body: Option<PathBuf>,
    /// Where to send: `http://host:port` (the endpoint's path is appended) or a full URL with a
    /// path (used as is; a path token is still appended). Default: the config's `listen`.
    pub url: Option<String>,
    /// Extra headers, `Name: value` (e.g. the event header of a generic endpoint).
    pub headers: Vec<String>,
}

/// A signed request, ready to go.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub url: String,
    /// The URL with a path token replaced by `***`, for printing.
    pub display_url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// Hints for the operator (e.g. a generic endpoint's event header was not given).
    pub notes: Vec<String>,
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub latency: Duration,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as it is printed. The isendu URL check is answered `{"response": "<API secret
    /// key>"}`: a JSON object's `response` field is printed as `"***"`. Anything else is
    /// printed as it came.
    pub fn printable_body(&self) -> String {
        if let Ok(serde_json::Value::Object(mut answer)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
            && let Some(response) = answer.get_mut("response")
        {
            *response = serde_json::Value::String("***".into());
            return serde_json::Value::Object(answer).to_string();
        }
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long `send` waits for the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(30);

fn find_endpoint<'c>(cfg: &'c Config, name: &str) -> Result<&'c EndpointConfig, SendError> {
    cfg.endpoints
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| SendError::UnknownEndpoint {
            name: name.to_string(),
            known: cfg
                .endpoints
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn body_of(ep: &EndpointConfig, opts: &SendOptions) -> Result<Vec<u8>, SendError> {
    if let Some(path) = &opts.body {
        return std::fs::read(path).map_err(|source| SendError::ReadBody {
            path: path.clone(),
            source,
        });
    }
    let provider = ep.provider.name;
    let sample = match &opts.sample {
        Some(name) => samples::find(provider, name).ok_or_else(|| SendError::UnknownSample {
            provider: provider.to_string(),
            name: name.clone(),
            available: samples::of(provider)
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?,
        // For isendu the first sample would be the handshake; a batch is the better default.
        None => samples::of(provider)
            .find(|s| s.name != "handshake")
            .ok_or_else(|| SendError::NoSample(provider.to_string()))?,
    };
    Ok((ep.provider.prepare_sample)(&ep.options, sample))
}

/// The base URL: `--url`, else the config's provider listener (a wildcard address becomes
/// loopback).
fn target(cfg: &Config, ep: &EndpointConfig, url: Option<&str>) -> Result<String, SendError> {
    let (authority, path) = match url {
        Some(u) => {
            let uri: Uri = u.parse().map_err(|_| SendError::BadUrl(u.to_string()))?;
            if uri.scheme_str() != Some("http") {
                return Err(SendError::BadUrl(u.to_string()));
            }
            let authority = uri
                .authority()
                .ok_or_else(|| SendError::BadUrl(u.to_string()))?
                .to_string();
            let path = match uri.path() {
                "" | "/" => ep.path.clone(),
                p => p.trim_end_matches('/').to_string(),
            };
            (authority, path)
        }
        None => {
            let mut addr = cfg.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            (addr.to_string(), ep.path.clone())
        }
    };
    Ok(format!("http://{authority}{path}"))
}

/// Build the signed request without sending it.
pub fn prepare(cfg: &Config, opts: &SendOptions, now: SystemTime) -> Result<Prepared, SendError> {
    let ep = find_endpoint(cfg, &opts.endpoint)?;
    let body = body_of(ep, opts)?;
    let base = target(cfg, ep, opts.url.as_deref())?;
    let secret = ep
        .secrets
        .first()
        .ok_or_else(|| SendError::Http("endpoint has no secret".into()))?;
    let webhook_id = format!("msg_{:016x}", fastrand::u64(..));
    let signed = auth::sign(&ep.auth, secret, &body, now, &webhook_id);
    let (url, display_url) = match &signed.path_suffix {
        Some(token) => (format!("{base}/{token}"), format!("{base}/***")),
        None => (base.clone(), base),
    };
    let mut headers = signed.headers;
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    if let Ok(v) = HeaderValue::from_str(concat!("webhook-bridge-send/", env!("CARGO_PKG_VERSION")))
    {
        headers.push((header::USER_AGENT, v));
    }
    for (name, value) in (ep.provider.sender_headers)(&body, now) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.push((name, value));
        }
    }
    for h in &opts.headers {
        let bad = || SendError::BadHeader(h.clone());
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }
    let mut notes = Vec::new();
    if let Some(name) = (ep.provider.event_header)(&ep.options)
        && !headers
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
    {
        notes.push(format!(
            "endpoint {} routes on header {name}; add -H '{name}: <event>' or the event may be unrecognized",
            ep.name
        ));
    }
    Ok(Prepared {
        url,
        display_url,
        headers,
        body,
        notes,
    })
}

/// POST a prepared request and wait for the whole answer.
pub async fn post(prepared: &Prepared) -> Result<Answer, SendError> {
    let uri: Uri = prepared
        .url
        .parse()
        .map_err(|_| SendError::BadUrl(prepared.display_url.clone()))?;
    let mut builder = Request::post(uri);
    for (name, value) in &prepared.headers {
        builder = builder.header(name, value);
    }
    let req = builder
        .body(Full::new(Bytes::from(prepared.body.clone())))
        .map_err(|e| SendError::Http(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| SendError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Http(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok::<_, SendError>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| SendError::Timeout(TIMEOUT))??;
    Ok(Answer {
        status,
        body,
        latency: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
listen = "0.0.0.0:8181"
[amqp]
urls = ["amqp://guest:guest@127.0.0.1:5672/%2f"]
[[endpoint]]
name = "w"
provider = "wegocod"
path = "/webhooks/wegocod"
secret = "test-secret"
[[endpoint]]
name = "i"
provider = "isendu"
path = "/webhooks/isendu"
secret = "tok-123"
"#;

    fn opts(endpoint: &str) -> SendOptions {
        SendOptions {
            endpoint: endpoint.into(),
            ..SendOptions::default()
        }
    }

    #[test]
    fn wegocod_is_signed_with_event_and_timestamp_headers() {
        let cfg = Config::from_toml(CFG).unwrap();
        let p = prepare(&cfg, &opts("w"), SystemTime::now()).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:8181/webhooks/wegocod");
        assert_eq!(p.body, crate::providers::wegocod::DELIVERED);
        let get = |n: &str| {
            p.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            get("x-webhook-event").as_deref(),
            Some("order.status_updated")
        );
        assert_eq!(
            get("x-webhook-timestamp").as_deref(),
            Some("2026-05-09T12:00:00+02:00")
        );
        assert_eq!(get("x-webhook-signature").unwrap().len(), 64);
    }

    #[test]
    fn isendu_token_goes_in_the_path_and_is_not_printed() {
        let cfg = Config::from_toml(CFG).unwrap();
        let mut o = opts("i");
        o.url = Some("http://10.0.0.5:9000".into());
        let p = prepare(&cfg, &o, SystemTime::now()).unwrap();
        assert_eq!(p.url, "http://10.0.0.5:9000/webhooks/isendu/tok-123");
        assert_eq!(p.display_url, "http://10.0.0.5:9000/webhooks/isendu/***");
        assert_eq!(
            p.body,
            crate::providers::isendu::BATCH,
            "batch is the default sample"
        );
        o.url = Some("http://gw:80/prefix/isendu/".into());
        o.sample = Some("handshake".into());
        let p = prepare(&cfg, &o, SystemTime::now()).unwrap();
        assert_eq!(p.url, "http://gw:80/prefix/isendu/tok-123");
        assert_eq!(p.body, crate::providers::isendu::HANDSHAKE);
    }

    fn answer(body: &[u8]) -> Answer {
        Answer {
            status: 200,
            body: body.to_vec(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_handshake_answer_is_printed_without_the_api_secret() {
        let printed = answer(br#"{"response":"fake-isendu-api-secret"}"#).printable_body();
        assert!(!printed.contains("fake-isendu-api-secret"), "{printed}");
        assert_eq!(printed, r#"{"response":"***"}"#);
        // Other answers are printed as they came.
        for body in [
            &br#"{"accepted":2}"#[..],
            br#"{"error":"unauthorized"}"#,
            b"not json",
        ] {
            assert_eq!(answer(body).printable_body().as_bytes(), body);
        }
    }

    #[test]
    fn bad_inputs_are_reported() {
        let cfg = Config::from_toml(CFG).unwrap();
        let e = prepare(&cfg, &opts("nope"), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("w, i"), "{e}");
        let mut o = opts("w");
        o.sample = Some("missing".into());
        let e = prepare(&cfg, &o, SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("delivered"), "{e}");
        let mut o = opts("w");
        o.url = Some("https://x".into());
        assert!(matches!(
            prepare(&cfg, &o, SystemTime::now()),
            Err(SendError::BadUrl(_))
        ));
        let mut o = opts("w");
        o.headers = vec!["no-colon".into()];
        assert!(matches!(
            prepare(&cfg, &o, SystemTime::now()),
            Err(SendError::BadHeader(_))
        ));
    }
}
