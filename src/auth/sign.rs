//! [`sign`]: how a sender presents a secret for a body, the inverse of the verifiers.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderName, HeaderValue};

use super::mac::{compute_mac, standard_webhooks_key};
use super::{AuthConfig, HmacAlgorithm, MacEncoding, header_name};
use crate::secret::Secret;

/// How a sender would present `secret` for `body`: headers to add and a path suffix.
#[derive(Debug, Default)]
pub struct Signed {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub path_suffix: Option<String>,
}

/// Sign `body` the way a provider using `auth` would. `webhook_id` is used by Standard Webhooks.
pub fn sign(
    auth: &AuthConfig,
    secret: &Secret,
    body: &[u8],
    now: SystemTime,
    webhook_id: &str,
) -> Signed {
    let mut out = Signed::default();
    let mut push = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers.push((name, v));
        }
    };
    match auth {
        AuthConfig::Bearer => push(
            http::header::AUTHORIZATION,
            format!("Bearer {}", secret.expose()),
        ),
        AuthConfig::Basic { username } => {
            let user = username.as_deref().unwrap_or("webhook");
            let creds = B64.encode(format!("{user}:{}", secret.expose()));
            push(http::header::AUTHORIZATION, format!("Basic {creds}"));
        }
        AuthConfig::Header { header } => {
            if let Ok(name) = header_name(header) {
                push(name, secret.expose().to_string());
            }
        }
        AuthConfig::PathToken => out.path_suffix = Some(secret.expose().to_string()),
        AuthConfig::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
        } => {
            let mac =
                compute_mac(*algorithm, secret.expose().as_bytes(), &[body]).unwrap_or_default();
            let encoded = match encoding {
                MacEncoding::Hex => hex::encode(mac),
                MacEncoding::Base64 => B64.encode(mac),
            };
            if let Ok(name) = header_name(header) {
                push(
                    name,
                    format!("{}{encoded}", prefix.as_deref().unwrap_or("")),
                );
            }
        }
        AuthConfig::StandardWebhooks { .. } => {
            let ts = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string();
            let key = standard_webhooks_key(secret).unwrap_or_default();
            let mac = compute_mac(
                HmacAlgorithm::Sha256,
                &key,
                &[webhook_id.as_bytes(), b".", ts.as_bytes(), b".", body],
            )
            .unwrap_or_default();
            push(
                HeaderName::from_static("webhook-id"),
                webhook_id.to_string(),
            );
            push(HeaderName::from_static("webhook-timestamp"), ts);
            push(
                HeaderName::from_static("webhook-signature"),
                format!("v1,{}", B64.encode(mac)),
            );
        }
    }
    out
}
