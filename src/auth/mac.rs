//! MACs: decoding the one a sender presents, computing ours, and the Standard Webhooks signing
//! key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

use super::{AuthError, HmacAlgorithm, MacEncoding};
use crate::secret::Secret;

#[cfg(test)]
thread_local! {
    /// MACs computed on this thread, for the tests that bound the cost of refusing.
    pub(super) static MACS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_mac() {
    #[cfg(test)]
    MACS_COMPUTED.with(|c| c.set(c.get() + 1));
}

pub(super) fn decode_mac(value: &str, encoding: MacEncoding) -> Result<Vec<u8>, AuthError> {
    let decoded = match encoding {
        MacEncoding::Hex => {
            // `decode_to_slice` rather than `decode`: a plain loop, not an iterator collect.
            let mut out = vec![0; value.len() / 2];
            hex::decode_to_slice(value, &mut out).map_err(|_| AuthError::Malformed)?;
            out
        }
        MacEncoding::Base64 => B64.decode(value).map_err(|_| AuthError::Malformed)?,
    };
    if decoded.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(decoded)
}

/// HMAC of `parts`: the one place a MAC is computed, to sign or to verify (compare the result
/// with `subtle`, never with `==`). HMAC takes keys of any length, so `None` does not happen in
/// practice; `sign` then sends an empty signature, which never verifies.
pub(super) fn compute_mac(
    algorithm: HmacAlgorithm,
    key: &[u8],
    parts: &[&[u8]],
) -> Option<Vec<u8>> {
    count_mac();
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).ok()?;
        parts.iter().for_each(|p| m.update(p));
        Some(m.finalize().into_bytes().to_vec())
    }
    match algorithm {
        HmacAlgorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

/// Error of a Standard Webhooks key that is not `whsec_<base64>` (or plain base64).
#[derive(Debug, thiserror::Error)]
#[error("a Standard Webhooks secret must be base64, optionally prefixed with whsec_")]
pub struct BadWebhookKey;

/// Decode a Standard Webhooks signing key.
pub fn standard_webhooks_key(secret: &Secret) -> Result<Vec<u8>, BadWebhookKey> {
    let raw = secret.expose();
    let encoded = raw.strip_prefix("whsec_").unwrap_or(raw);
    match B64.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(BadWebhookKey),
    }
}
