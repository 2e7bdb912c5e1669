//! The bridge's side of the load: webhooks as the providers send them, signed through the
//! bridge's own `auth::sign` with the endpoints' configured schemes and secrets, so a request the
//! bench sends is one the bridge accepts for the same reasons a provider's would be accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use webhook_bridge::auth::{self, AuthConfig};
use webhook_bridge::config::Config;
use webhook_bridge::providers::{isendu, wegocod};
use webhook_bridge::secret::Secret;

use crate::bridge;
use crate::client;
use crate::load::Op;

/// Sends signed webhooks to the bridge over a pool of keep-alive connections.
pub struct HttpDriver {
    client: Arc<client::Pool>,
    kind: client::Kind,
    wegocod_endpoint: String,
    wegocod_uri: http::Uri,
    wegocod_auth: AuthConfig,
    wegocod_secret: Secret,
    isendu_uri: http::Uri,
    batch: usize,
    run: String,
    seq: Arc<AtomicU64>,
}

impl HttpDriver {
    pub fn new(config: &Config, batch: usize, tag: &str, kind: client::Kind) -> Result<Self> {
        let port = config.listen.port();
        let client = Arc::new(client::Pool::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            kind,
        ));
        let wegocod = bridge::endpoint(config, &wegocod::PROVIDER)?;
        let isendu = bridge::endpoint(config, &isendu::PROVIDER)?;
        // isendu authenticates by a token in the path, which does not depend on the body: sign
        // once.
        let signed = auth::sign(
            &isendu.auth,
            bridge::secret(isendu)?,
            b"",
            SystemTime::now(),
            "",
        );
        let token = signed.path_suffix.unwrap_or_default();
        Ok(Self {
            client,
            kind,
            wegocod_endpoint: wegocod.name.clone(),
            wegocod_uri: format!("http://127.0.0.1:{port}{}", wegocod.path)
                .parse()
                .unwrap_or_default(),
            wegocod_auth: wegocod.auth.clone(),
            wegocod_secret: bridge::secret(wegocod)?.clone(),
            isendu_uri: format!("http://127.0.0.1:{port}{}/{token}", isendu.path)
                .parse()
                .unwrap_or_default(),
            batch,
            run: tag.to_string(),
            seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The WeGoCOD endpoint's name: its `endpoint` label in the bridge's metrics.
    pub fn wegocod_endpoint(&self) -> &str {
        &self.wegocod_endpoint
    }

    /// One signed WeGoCOD webhook per call, each with its own `order.reference`, so the bridge's
    /// dedup never takes one for a retry of another.
    pub fn wegocod_op(&self) -> Op {
        let sample = std::str::from_utf8(wegocod::DELIVERED).unwrap_or_default();
        let (head, tail) = sample.split_once("ORD-000129").unwrap_or((sample, ""));
        let (head, tail) = (Arc::new(head.to_string()), Arc::new(tail.to_string()));
        let client = self.client.clone();
        let uri = self.wegocod_uri.clone();
        let auth_cfg = Arc::new(self.wegocod_auth.clone());
        let secret = Arc::new(self.wegocod_secret.clone());
        let run = Arc::new(self.run.clone());
        let seq = Arc::clone(&self.seq);
        Arc::new(move |_worker: usize, _seq: u64| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let body = format!("{head}{run}-{n}{tail}");
            let now = SystemTime::now();
            let signed = auth::sign(&auth_cfg, &secret, body.as_bytes(), now, "");
            let ts = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-webhook-event", "order.status_updated")
                .header("x-webhook-timestamp", ts.to_string());
            for (name, value) in signed.headers {
                req = req.header(name, value);
            }
            let req = req.body(Full::new(Bytes::from(body)));
            let client = Arc::clone(&client);
            Box::pin(async move { send(&client, req.map_err(|e| e.to_string())?).await })
        })
    }

    /// `GET /healthz` on the admin port: the HTTP path alone (client, kernel, hyper server),
    /// no auth, no parsing, no broker. Its rate is the ceiling the load generator and hyper
    /// put on any webhook rate.
    pub fn healthz_op(&self, admin_port: u16) -> Op {
        let client = Arc::new(client::Pool::new(
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
            self.kind,
        ));
        let uri: http::Uri = format!("http://127.0.0.1:{admin_port}/healthz")
            .parse()
            .unwrap_or_default();
        Arc::new(move |_worker: usize, _seq: u64| {
            let client = Arc::clone(&client);
            let req = http::Request::get(uri.clone()).body(Full::new(Bytes::new()));
            Box::pin(async move {
                let (status, _) = client.send(req.map_err(|e| e.to_string())?).await?;
                if status == http::StatusCode::OK {
                    Ok(0)
                } else {
                    Err(format!("healthz: HTTP {status}"))
                }
            })
        })
    }

    /// One isendu batch `{"order":[],"tracking":[…]}` of `batch` distinct elements per call.
    pub fn isendu_op(&self) -> Op {
        let client = self.client.clone();
        let uri = self.isendu_uri.clone();
        let batch = self.batch;
        let run = Arc::new(self.run.clone());
        let seq = Arc::clone(&self.seq);
        Arc::new(move |_worker: usize, _seq: u64| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let body = isendu_batch(&run, n, batch);
            let req = http::Request::post(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)));
            let client = Arc::clone(&client);
            Box::pin(async move { send(&client, req.map_err(|e| e.to_string())?).await })
        })
    }
}

/// A tracking batch shaped like the isendu sample, every element with its own uuid (the
/// natural key), so none is taken for a duplicate.
pub fn isendu_batch(run: &str, n: u64, batch: usize) -> String {
    let h = run
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let elements: Vec<String> = (0..batch)
        .map(|i| {
            format!(
                r#"{{"uuid":"{h:08x}-{:04x}-4{:03x}-8{:03x}-{n:012x}","status":"IN_TRANSIT","trackingNumber":"1Z999AA1{n:010}","trackingUrl":"https://tracking.example.com/1Z999AA1{n:010}","delivered":false,"steps":[{{"datetime":"2026-05-09 10:15:00","timestamp":"2026-05-09T08:15:00Z","timezone":"Europe/Rome","description":"Parcel departed the sorting centre","location":"Milano","status":"IN_TRANSIT","error":{{"code":"","message":""}}}}]}}"#,
                (n >> 48) & 0xffff,
                i >> 12,
                i & 0xfff
            )
        })
        .collect();
    format!(r#"{{"order":[],"tracking":[{}]}}"#, elements.join(","))
}

/// Send one request; Ok(events acknowledged) for `200 {"accepted": n}`. Anything else is an
/// error, so a spooled or refused webhook is never counted as published.
async fn send(client: &client::Pool, req: http::Request<Full<Bytes>>) -> Result<u64, String> {
    let (status, body) = client.send(req).await?;
    if status != http::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    match v.get("accepted").and_then(|n| n.as_u64()) {
        Some(n) => Ok(n),
        None => Err(format!("200 without accepted: {v}")),
    }
}
