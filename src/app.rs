//! `serve`: wires config, metrics, spool, publisher, delivery and the listeners together,
//! supervises the background tasks, and orders the shutdown. The only module that knows every
//! other one.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::delivery;
use crate::delivery::{Delivery, TaskHealth};
use crate::http;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::metrics::labels::Task;
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
    // Not a `source`: the message carries it already, and `{:#}` would print it twice.
    #[error("spool {dir}: {error}")]
    Spool {
        dir: std::path::PathBuf,
        error: spool::SpoolError,
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

/// Longest wait before a task that panicked is started again.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A run that lasted this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Test hook, read in debug builds only: `task:count[,task:count…]` (tasks as in
/// `task_restarts_total`) makes the first `count` runs of each named task panic after
/// [`INJECTED_PANIC_AFTER`], so the integration tests can watch the supervisor at work.
pub const TEST_PANIC_ENV: &str = "WEBHOOK_BRIDGE_TEST_PANIC";
const INJECTED_PANIC_AFTER: Duration = Duration::from_millis(300);

/// Runs of `task` that [`TEST_PANIC_ENV`] asks to panic; always 0 in release builds.
fn injected_panics(task: Task) -> u32 {
    if !cfg!(debug_assertions) {
        return 0;
    }
    let Ok(spec) = std::env::var(TEST_PANIC_ENV) else {
        return 0;
    };
    spec.split(',')
        .filter_map(|item| item.trim().split_once(':'))
        .find(|(name, _)| *name == task.label())
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Run the task `make` builds until it returns; should it panic, log it, count it in
/// `task_restarts_total{task}`, mark it down in `health` (so `/readyz` is false) and start it
/// again after a backoff (1 s, doubling up to 30 s; reset by a minute without panic). Once `stop`
/// is true, a task that panics is not started again.
fn supervise<F, Fut>(
    task: Task,
    health: Arc<TaskHealth>,
    metrics: Metrics,
    stop: watch::Receiver<bool>,
    mut make: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut inject = injected_panics(task);
        let mut failures: u32 = 0;
        loop {
            let run = make();
            let panic_now = inject > 0;
            inject = inject.saturating_sub(1);
            let started = Instant::now();
            let ended = tokio::spawn(async move {
                if panic_now {
                    tokio::select! {
                        () = run => {},
                        () = tokio::time::sleep(INJECTED_PANIC_AFTER) => {
                            panic!("panic injected by {TEST_PANIC_ENV}")
                        }
                    }
                } else {
                    run.await;
                }
            })
            .await;
            match ended {
                Err(e) if e.is_panic() => {
                    health.set_down(task, true);
                    metrics
                        .task_restarts_total
                        .with_label_values(&[task.label()])
                        .inc();
                    if started.elapsed() >= HEALTHY_RUN {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                    let delay = Duration::from_secs(1)
                        .saturating_mul(1 << (failures - 1).min(5))
                        .min(RESTART_BACKOFF_MAX);
                    if *stop.borrow() {
                        error!(
                            task = task.label(),
                            "background task panicked while stopping; not restarted"
                        );
                        return;
                    }
                    error!(
                        task = task.label(),
                        restart_in_ms = delay.as_millis() as u64,
                        "background task panicked; restarting it (readiness is false meanwhile)"
                    );
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {},
                        _ = stop.wait_for(|s| *s) => {},
                    }
                    health.set_down(task, false);
                    info!(task = task.label(), "background task restarted");
                }
                // Returned (on shutdown), or cancelled with the runtime.
                _ => return,
            }
        }
    })
}

/// Run the service until SIGTERM/SIGINT, then drain and return.
///
/// Shutdown order: stop accepting and let in-flight requests finish (each ends confirmed,
/// spooled or 503 before its deadline) → give the drainer up to `[spool] shutdown_drain` to
/// empty the spool → stop it (what it had not seen confirmed stays in the spool for the next
/// start; an empty spool's directory is emptied, so any release starts on it) → close the
/// broker connection.
/// The background tasks `serve` starts, each supervised, and what they need at exit.
struct Background {
    link: JoinHandle<()>,
    strays: JoinHandle<()>,
    drainer: Option<JoinHandle<()>>,
    /// Returned messages of answered requests not yet in the spool.
    held: Arc<delivery::strays::Held>,
    spool: Option<Arc<Spool>>,
    stop: watch::Sender<bool>,
}

impl Background {
    /// Start the link manager, the stray keeper and (with a spool) the drainer.
    fn start(
        publisher: &Arc<Publisher>,
        spool: Option<Arc<Spool>>,
        health: &Arc<TaskHealth>,
        metrics: &Metrics,
    ) -> Background {
        let (stop, stop_rx) = shutdown::channel();
        let link = {
            let (publisher, stop) = (Arc::clone(publisher), stop_rx.clone());
            supervise(
                Task::Link,
                Arc::clone(health),
                metrics.clone(),
                stop_rx.clone(),
                move || Arc::clone(&publisher).manage(stop.clone()),
            )
        };
        let held = Arc::new(delivery::strays::Held::default());
        let strays = {
            let (publisher, spool, held, stop) = (
                Arc::clone(publisher),
                spool.clone(),
                Arc::clone(&held),
                stop_rx.clone(),
            );
            supervise(
                Task::Strays,
                Arc::clone(health),
                metrics.clone(),
                stop_rx.clone(),
                move || {
                    delivery::strays::keep(
                        Arc::clone(&publisher),
                        spool.clone(),
                        Arc::clone(&held),
                        stop.clone(),
                    )
                },
            )
        };
        let drainer = spool.clone().map(|spool| {
            let (publisher, stop) = (Arc::clone(publisher), stop_rx.clone());
            supervise(
                Task::Drainer,
                Arc::clone(health),
                metrics.clone(),
                stop_rx,
                move || {
                    delivery::drainer::run(Arc::clone(&spool), Arc::clone(&publisher), stop.clone())
                },
            )
        });
        Background {
            link,
            strays,
            drainer,
            held,
            spool,
            stop,
        }
    }

    /// After the listeners stopped: drain the spool for at most `drain_budget`, stop the tasks,
    /// say what could not be kept, and leave a drained spool directory empty.
    async fn stop(self, drain_budget: Duration) {
        if let Some(spool) = &self.spool {
            drain_before_exit(spool, drain_budget).await;
        }
        let _ = self.stop.send(true);
        let mut stopped = true;
        if let Some(drainer) = self.drainer
            && tokio::time::timeout(CLOSE_TIMEOUT, drainer).await.is_err()
        {
            warn!("spool drainer did not stop in time");
            stopped = false;
        }
        if tokio::time::timeout(CLOSE_TIMEOUT, self.strays)
            .await
            .is_err()
        {
            warn!("spooling of returned messages did not stop in time");
            stopped = false;
        }
        if !self.held.is_empty() {
            error!(
                events = self.held.len(),
                "unroutable messages of answered requests could not be spooled before exit: they are lost"
            );
        } else if stopped && let Some(spool) = &self.spool {
            // Drained: leave a directory any release can start on (docs/deploy.md, rollbacks).
            match spool.release_if_drained() {
                Ok(true) => info!("spool drained: its directory is left empty"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not empty the drained spool directory"),
            }
        }
        if tokio::time::timeout(CLOSE_TIMEOUT, self.link)
            .await
            .is_err()
        {
            warn!("broker connection did not close in time");
        }
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

pub async fn serve(config: Config) -> Result<(), StartError> {
    for w in &config.warnings {
        warn!("{w}");
    }
    let config = Arc::new(config);
    let metrics = Metrics::new()?;
    let (stop_tx, stop_rx) = shutdown::channel();
    let providers_listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;

    let spool = if config.spool.enabled {
        let spool =
            Spool::open(&config.spool, metrics.clone()).map_err(|error| StartError::Spool {
                dir: config.spool.dir.clone(),
                error,
            })?;
        Some(spool)
    } else {
        None
    };
    let dedup = config.dedup.enabled.then(|| Dedup::new(&config.dedup));
    // The broker side stops only after the listeners, so in-flight requests can still publish.
    let publisher = Publisher::new(config.amqp.clone(), metrics.clone());
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&publisher),
        spool.clone(),
        dedup,
        config.ack_deadline,
        metrics.clone(),
    ));
    let background = Background::start(&publisher, spool, delivery.tasks(), &metrics);
    let state = Arc::new(AppState::new(Arc::clone(&config), delivery, metrics));

    info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        endpoints = config.endpoints.len(),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        thread_scheduling = config.thread_scheduling.as_str(),
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
    background.stop(config.spool.shutdown_drain).await;
    let _ = admin.await;
    info!("webhook-bridge stopped");
    Ok(())
}
