//! `serve`: wires config, metrics, spool, publisher, delivery and the listeners together, and
//! orders the shutdown. The only module that knows every other one.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::delivery;
use crate::delivery::Delivery;
use crate::http;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::shutdown;
use crate::spool;
use crate::spool::Spool;

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
    #[error("spool {dir}: {source}")]
    Spool {
        dir: std::path::PathBuf,
        source: spool::SpoolError,
    },
}

/// How long the drainer and the broker connection get to wind down after the listeners stop.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Let the drainer empty the spool for at most `budget` (the broker may be back, or come back,
/// in that time); whatever is left stays for the next start.
async fn drain_before_exit(spool: &Spool, budget: Duration) {
    let pending = spool.pending_events();
    if pending == 0 || budget.is_zero() {
        return;
    }
    info!(
        events = pending,
        budget_ms = budget.as_millis() as u64,
        "draining the spool before exit"
    );
    let drained = tokio::time::timeout(budget, async {
        while spool.pending_events() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    match drained {
        Ok(()) => info!(events = pending, "spool drained"),
        Err(_) => warn!(
            events = spool.pending_events(),
            "spool not drained in time; the events stay in it for the next start"
        ),
    }
}

/// Run the service until SIGTERM/SIGINT, then drain and return.
///
/// Shutdown order: stop accepting and let in-flight requests finish (each ends confirmed,
/// spooled or 503 before its deadline) → give the drainer up to `[spool] shutdown_drain` to
/// empty the spool → stop it (what it had not seen confirmed stays in the spool for the next
/// start) → close the broker connection.
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

    let spool = if config.spool.enabled {
        let spool =
            Spool::open(&config.spool, metrics.clone()).map_err(|source| StartError::Spool {
                dir: config.spool.dir.clone(),
                source,
            })?;
        Some(spool)
    } else {
        None
    };
    let dedup = config.dedup.enabled.then(|| Dedup::new(&config.dedup));
    // The broker side stops only after the listeners, so in-flight requests can still publish.
    let (amqp_stop_tx, amqp_stop_rx) = shutdown::channel();
    let publisher = Publisher::start(config.amqp.clone(), metrics.clone(), amqp_stop_rx.clone());
    let spool_at_exit = spool.clone();
    let strays = tokio::spawn(delivery::strays::keep(
        Arc::clone(&publisher),
        spool.clone(),
        amqp_stop_rx.clone(),
    ));
    let drainer = spool
        .as_ref()
        .map(|s| delivery::drainer::start(Arc::clone(s), Arc::clone(&publisher), amqp_stop_rx));
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&publisher),
        spool,
        dedup,
        config.ack_deadline,
        metrics.clone(),
    ));
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
    if let Some(spool) = &spool_at_exit {
        drain_before_exit(spool, config.spool.shutdown_drain).await;
    }
    let _ = amqp_stop_tx.send(true);
    if let Some(drainer) = drainer
        && tokio::time::timeout(CLOSE_TIMEOUT, drainer).await.is_err()
    {
        warn!("spool drainer did not stop in time");
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, strays).await.is_err() {
        warn!("spooling of returned messages did not stop in time");
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, publisher.closed())
        .await
        .is_err()
    {
        warn!("broker connection did not close in time");
    }
    let _ = admin.await;
    info!("webhook-bridge stopped");
    Ok(())
}
