//! Opening a broker connection with `[amqp]`'s TLS files and login mechanism, for the
//! publisher's link and the operator tools alike. The files are read on every call, so a
//! certificate renewed in place is used by the next connection.

use std::path::PathBuf;
use std::sync::Arc;

use lapin::auth::AuthProvider;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connect, Connection, ConnectionProperties, ConnectionState, ErrorKind};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::link::with_defaults;
use crate::config::{AmqpConfig, AuthMechanism, TlsFileError, TlsMaterial};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file cannot be read or parsed (it may be in the middle of a renewal).
    #[error("amqp.{key}: {source}", key = source.key())]
    Files {
        #[from]
        source: TlsFileError,
    },
    /// The broker's certificate did not verify: not signed by a CA of `tls_ca_file` (or, without
    /// it, of the public roots), expired, or not issued for the URL's host.
    #[error(
        "TLS certificate verification failed: the broker's certificate is not trusted by {}: {source}",
        match ca_file {
            Some(path) => format!("amqp.tls_ca_file ({})", path.display()),
            None => "the public CA roots (set amqp.tls_ca_file to the broker's CA)".into(),
        }
    )]
    Untrusted {
        ca_file: Option<PathBuf>,
        source: lapin::Error,
    },
    /// The broker ended the TLS handshake with an alert, e.g. it did not accept the client
    /// certificate (`tls_cert_file`) or wants one and none is configured.
    #[error(
        "TLS handshake refused by the broker (client certificate not accepted or missing?): {0}"
    )]
    Refused(lapin::Error),
    /// The broker reset or closed an `amqps://` connection before the AMQP handshake finished.
    /// Under TLS 1.3 the client finishes its side of the TLS handshake before the broker has
    /// checked the client certificate, so a broker that refuses it often shows as this reset
    /// rather than as an alert, depending on which reaches the client first.
    #[error(
        "TLS handshake refused by the broker (the connection was closed during set-up; client \
         certificate not accepted or missing? see amqp.tls_cert_file): {0}"
    )]
    ClosedDuringSetup(lapin::Error),
    #[error("{0}")]
    Amqp(#[from] lapin::Error),
    /// The publish path's own connection (publisher/wire/) could not be opened.
    #[error("publishing connection: {0}")]
    Wire(#[from] super::wire::WireError),
}

impl ConnectError {
    /// The error was the broker's certificate failing verification.
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Self::Untrusted { .. })
    }
}

/// `EXTERNAL`: the client certificate is the login, nothing else is sent.
struct External;

impl AuthProvider for External {}

/// The rustls error inside a lapin I/O error, if any.
fn rustls_error(e: &lapin::Error) -> Option<&rustls::Error> {
    match e.kind() {
        ErrorKind::IOError(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// The connection was reset or closed under the client (not a timeout, not a refusal to connect).
fn closed_under_us(e: &lapin::Error) -> bool {
    use std::io::ErrorKind as Io;
    match e.kind() {
        ErrorKind::IOError(io) => matches!(
            io.kind(),
            Io::ConnectionReset | Io::ConnectionAborted | Io::UnexpectedEof | Io::BrokenPipe
        ),
        ErrorKind::InvalidConnectionState(state) => {
            matches!(state, ConnectionState::Closed | ConnectionState::Error)
        }
        _ => false,
    }
}

/// Connect to `url` (heartbeat added when it sets none) with the TLS files as they are now and
/// the configured login. `name` is the connection name the broker shows.
pub async fn open(cfg: &AmqpConfig, url: &str, name: &str) -> Result<Connection, ConnectError> {
    open_with(cfg, &cfg.tls.read()?, url, name).await
}

/// [`open`] with the TLS files already read (the link reads them once per connect, for both of
/// its connections).
pub(super) async fn open_with(
    cfg: &AmqpConfig,
    material: &TlsMaterial,
    url: &str,
    name: &str,
) -> Result<Connection, ConnectError> {
    let tls = OwnedTLSConfig {
        identity: material
            .identity
            .as_ref()
            .map(|(pem, key)| OwnedIdentity::PKCS8 {
                pem: pem.clone(),
                key: key.0.clone(),
            }),
        cert_chain: material.ca_pem.clone(),
    };
    let mut props = ConnectionProperties::default().with_connection_name(name.into());
    if cfg.auth_mechanism == AuthMechanism::External {
        props = props.with_auth_provider(External);
    }
    let amqps = url.starts_with("amqps://");
    let runtime = lapin::runtime::default_runtime()?;
    with_defaults(url)
        .as_str()
        .connect_with_config(props, tls, runtime)
        .await
        .map_err(|e| match rustls_error(&e) {
            Some(rustls::Error::InvalidCertificate(_)) => ConnectError::Untrusted {
                ca_file: cfg.tls.ca_file.clone(),
                source: e,
            },
            Some(rustls::Error::AlertReceived(_)) => ConnectError::Refused(e),
            _ if amqps && closed_under_us(&e) => ConnectError::ClosedDuringSetup(e),
            _ => ConnectError::Amqp(e),
        })
}

/// The TLS settings of the publish path's own connection (publisher/wire/), the same as lapin's
/// connection gets from the same files (`tcp-stream` with `rustls-connector`): the public
/// (webpki) roots and `tls_ca_file`'s certificates, the client certificate and key when both
/// are configured, rustls's safe default protocol versions. The files were checked when read
/// ([`crate::config::TlsFiles::read`]), so an error here is not expected; it is reported, not
/// unwrapped.
pub(super) fn client_config(
    material: &TlsMaterial,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(pem) = &material.ca_pem {
        roots.add_parsable_certificates(
            CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &material.identity {
        Some((cert_pem, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| rustls::Error::General("amqp.tls_cert_file is not PEM".into()))?;
            let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|_| {
                rustls::Error::General("amqp.tls_key_file holds no usable key".into())
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
