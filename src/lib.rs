//! webhook-bridge: authenticated provider webhooks in, confirmed CloudEvents on a RabbitMQ topic
//! exchange out. See ARCHITECTURE.md for the map.

pub mod auth;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod http;
pub mod metrics;
pub mod providers;
pub mod publisher;
pub mod send;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::delivery::Delivery;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::publisher::Publisher;

/// Errors that stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Run the service until SIGTERM/SIGINT, then drain and return.
pub async fn serve(config: Config) -> Result<(), StartError> {
    for w in &config.warnings {
        warn!("{w}");
    }
    let config = Arc::new(config);
    let metrics = Metrics::new()?;
    let (stop_tx, stop_rx) = shutdown::channel();

    let providers_listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.admin_listen,
            source,
        })?;

    let publisher = Publisher::start(config.amqp.clone(), metrics.clone(), stop_rx.clone());
    let delivery = Arc::new(Delivery::new(publisher, metrics.clone()));
    let state = Arc::new(AppState::new(Arc::clone(&config), delivery, metrics));

    info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        endpoints = config.endpoints.len(),
        version = env!("CARGO_PKG_VERSION"),
        "webhook-bridge started"
    );
    tokio::spawn(shutdown::on_signal(stop_tx));
    let admin = tokio::spawn(http::serve_admin(
        admin_listener,
        Arc::clone(&state),
        stop_rx.clone(),
    ));
    // In-flight requests finish within the ack deadline plus a margin for the last answers.
    let grace = config.ack_deadline + Duration::from_secs(1);
    http::serve_providers(providers_listener, state, stop_rx, grace).await;
    let _ = admin.await;
    info!("webhook-bridge stopped");
    Ok(())
}
