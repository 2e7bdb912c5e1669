//! Secrets: where they come from (`env:NAME`, `file:/path`, or a literal in the file), and a type
//! that never prints them. The lowest layer: it imports nothing of the crate.

use std::fmt;
use std::path::PathBuf;

/// A resolved secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret's bytes, for the verifiers and for signing in `send`. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, as written in the file: `env:NAME`, `file:/path`, or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Literal,
}

impl SecretSource {
    fn of(raw: &str) -> Self {
        if let Some(name) = raw.strip_prefix("env:") {
            Self::Env(name.to_string())
        } else if let Some(path) = raw.strip_prefix("file:") {
            Self::File(PathBuf::from(path))
        } else {
            Self::Literal
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Literal => f.write_str("literal"),
        }
    }
}

/// Why a secret reference could not be resolved. The message never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret is empty")]
    Empty,
}

/// Resolve one secret reference. `file:` contents are trimmed of a trailing newline, the way
/// Kubernetes Secret volumes and `echo > file` leave them.
pub fn resolve(raw: &str) -> Result<(Secret, SecretSource), SecretError> {
    let source = SecretSource::of(raw);
    let value = match &source {
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| SecretError::EnvUnset(name.clone()))?
        }
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|source| SecretError::Unreadable {
                path: path.clone(),
                source,
            })?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        SecretSource::Literal => raw.to_string(),
    };
    if value.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok((Secret(value), source))
}

/// Deserialize an optional secret reference (a field with `#[serde(default, deserialize_with =
/// "secret::de_resolved")]`), resolved at once; errors name the variable or file, never a value.
pub fn de_resolved<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let raw = <String as serde::Deserialize>::deserialize(d)?;
    resolve(&raw)
        .map(|(secret, _)| Some(secret))
        .map_err(serde::de::Error::custom)
}

/// URL with the password replaced, for logs and `check-config`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }

    #[test]
    fn url_password_is_redacted() {
        assert_eq!(
            redact_url("amqp://guest:pw@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host"), "amqp://host");
    }

    #[test]
    fn unset_env_names_the_variable() {
        let e = resolve("env:WB_TEST_SURELY_UNSET").unwrap_err().to_string();
        assert!(e.contains("WB_TEST_SURELY_UNSET"), "{e}");
    }
}
