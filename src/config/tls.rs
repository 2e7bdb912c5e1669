//! `[amqp]`'s TLS files: the CA bundle that verifies the broker and the client certificate and
//! key (mTLS, and the `EXTERNAL` login). They are read and checked at start-up and read again
//! on every (re)connect, so a certificate renewed in place (cert-manager) is used on the next
//! connection without a restart. Errors name the key and the path, never the files' contents.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The SASL mechanism the bridge logs in with (`[amqp] auth_mechanism`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMechanism {
    /// User name and password from the URL.
    #[default]
    Plain,
    /// The client certificate is the login (RabbitMQ's `rabbitmq_auth_mechanism_ssl`); the
    /// URL's user name and password are not sent.
    External,
}

/// Paths of the TLS files, as configured (`tls_ca_file`, `tls_cert_file`, `tls_key_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates that may sign the broker's certificate, in addition to the public
    /// (webpki) roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain, leaf first), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key_file: Option<PathBuf>,
}

/// What the TLS files hold, read just now: the PEM text to hand to the TLS connector.
pub struct TlsMaterial {
    /// The CA bundle's PEM text, when `ca_file` is set.
    pub ca_pem: Option<String>,
    /// The client certificate's PEM and its key's PEM, when both are set.
    pub identity: Option<(Vec<u8>, KeyPem)>,
}

/// A private key's PEM text; `Debug` prints `***`.
pub struct KeyPem(pub Vec<u8>);

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// A TLS file that cannot be used: the path and what is wrong, never the contents; [`Self::key`]
/// names the `[amqp]` key.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM: {reason}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    #[error("{} holds no PEM {what}", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{} holds no valid X.509 certificate ({ignored} could not be parsed)", path.display())]
    NoValidCa {
        key: &'static str,
        path: PathBuf,
        ignored: usize,
    },
    #[error(
        "{} does not belong to the certificate in {}: {reason}",
        key_path.display(),
        cert_path.display()
    )]
    Mismatch {
        key_path: PathBuf,
        cert_path: PathBuf,
        reason: String,
    },
}

impl TlsFileError {
    /// The `[amqp]` key whose file is at fault.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. }
            | Self::Pem { key, .. }
            | Self::Empty { key, .. }
            | Self::NoValidCa { key, .. } => key,
            Self::Mismatch { .. } => "tls_key_file",
        }
    }
}

/// A PEM error in words that cannot carry the file's text (some `pem::Error` variants hold a
/// line of it).
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        _ => "unreadable",
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file (at least one).
fn certificates(
    key: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::Pem {
            key,
            path: path.to_path_buf(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::Empty {
            key,
            path: path.to_path_buf(),
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

impl TlsFiles {
    /// Whether any TLS file is configured.
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// Read and check the files now: the CA bundle holds at least one valid certificate; the
    /// client certificate parses and the key is its key.
    pub fn read(&self) -> Result<TlsMaterial, TlsFileError> {
        let ca_pem = match &self.ca_file {
            Some(path) => {
                let bytes = read("tls_ca_file", path)?;
                let certs = certificates("tls_ca_file", path, &bytes)?;
                let (valid, ignored) =
                    rustls::RootCertStore::empty().add_parsable_certificates(certs);
                if valid == 0 {
                    return Err(TlsFileError::NoValidCa {
                        key: "tls_ca_file",
                        path: path.clone(),
                        ignored,
                    });
                }
                // Lossy: only text outside the PEM sections can be other than ASCII.
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            None => None,
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read("tls_cert_file", cert_path)?;
                let certs = certificates("tls_cert_file", cert_path, &cert_pem)?;
                let key_pem = KeyPem(read("tls_key_file", key_path)?);
                let key = PrivateKeyDer::from_pem_slice(&key_pem.0).map_err(|e| match e {
                    pem::Error::NoItemsFound => TlsFileError::Empty {
                        key: "tls_key_file",
                        path: key_path.clone(),
                        what: "private key (PKCS#8, PKCS#1 or SEC1, unencrypted)",
                    },
                    e => TlsFileError::Pem {
                        key: "tls_key_file",
                        path: key_path.clone(),
                        reason: pem_reason(&e),
                    },
                })?;
                check_pair(certs, key).map_err(|reason| TlsFileError::Mismatch {
                    key_path: key_path.clone(),
                    cert_path: cert_path.clone(),
                    reason,
                })?;
                Some((cert_pem, key_pem))
            }
            _ => None,
        };
        Ok(TlsMaterial { ca_pem, identity })
    }
}

/// The key is a key rustls can sign with and the public key of the chain's first certificate
/// (the check the TLS connector makes too, made here so that start-up names the file).
fn check_pair(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// A config whose `[amqp]` has `amqp` and one endpoint; the error text, if any.
    fn load(amqp: &str) -> Result<Config, String> {
        let text = format!(
            "[amqp]\n{amqp}\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='env:HOME'\n"
        );
        Config::from_toml(&text).map_err(|e| e.to_string())
    }

    const TLS_URL: &str = "urls = ['amqps://guest:guest@127.0.0.1:5671/%2f']";

    #[test]
    fn unreadable_or_non_pem_files_name_the_key_never_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load(&format!("{TLS_URL}\ntls_ca_file = {:?}", missing)).unwrap_err();
        assert!(
            e.contains("`amqp.tls_ca_file`") && e.contains("missing.pem"),
            "{e}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hunter2-not-a-certificate").unwrap();
        let e = load(&format!("{TLS_URL}\ntls_ca_file = {junk:?}")).unwrap_err();
        assert!(
            e.contains("`amqp.tls_ca_file`") && e.contains("no PEM certificate"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");

        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nhunter2!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load(&format!("{TLS_URL}\ntls_ca_file = {bad:?}")).unwrap_err();
        assert!(e.contains("is not PEM") && !e.contains("hunter2"), "{e}");

        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = load(&format!(
            "{TLS_URL}\ntls_cert_file = {junk:?}\ntls_key_file = {key:?}"
        ))
        .unwrap_err();
        assert!(e.contains("`amqp.tls_cert_file`"), "{e}");
        assert!(!e.contains("c2VjcmV0") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn certificate_and_key_go_together_and_external_needs_them() {
        let e = load(&format!("{TLS_URL}\ntls_cert_file = '/x.pem'")).unwrap_err();
        assert!(e.contains("`amqp.tls_key_file`"), "{e}");
        let e = load(&format!("{TLS_URL}\ntls_key_file = '/x.pem'")).unwrap_err();
        assert!(e.contains("`amqp.tls_cert_file`"), "{e}");
        let e = load(&format!("{TLS_URL}\nauth_mechanism = 'external'")).unwrap_err();
        assert!(e.contains("`amqp.auth_mechanism`"), "{e}");
        let e = load(&format!("{TLS_URL}\nauth_mechanism = 'kerberos'")).unwrap_err();
        assert!(e.contains("auth_mechanism"), "{e}");
    }

    #[test]
    fn tls_settings_need_amqps_urls() {
        let e = load(
            "urls = ['amqps://h:5671/%2f', 'amqp://h:5672/%2f']\ntls_ca_file = '/etc/ssl/ca.pem'",
        )
        .unwrap_err();
        assert!(
            e.contains("`amqp.urls[1]`") && e.contains("amqps://"),
            "{e}"
        );
        let cfg = load(TLS_URL).unwrap();
        assert_eq!(cfg.amqp.tls, super::TlsFiles::default());
        assert_eq!(cfg.amqp.auth_mechanism, super::AuthMechanism::Plain);
    }

    #[test]
    fn key_material_is_not_in_debug_output() {
        let m = super::TlsMaterial {
            ca_pem: None,
            identity: Some((b"cert".to_vec(), super::KeyPem(b"hunter2".to_vec()))),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(format!("{:?}", super::KeyPem(b"hunter2".to_vec())), "***");
    }
}
