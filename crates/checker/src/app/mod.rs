//! The checker as a service: [`Application::build`] takes the settings, opens the spool and
//! binds the admin listener (port 0 works; [`Application::admin_addr`] tells the port), and
//! [`Application::run_until_stopped`] runs the schedule with the reports going to stdout or to
//! Kafka, reloads on request, and stops cleanly when its shutdown token fires. Also the
//! one-shot mode ([`check_once`]).
//!
//! - `run`: one run, from the first slot to the last delivery.
//! - `downtime`: the start-up backfill and the heartbeat, wired to the spool's directory.

mod downtime;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use monitor_core::report::{Report, Status};
use monitor_core::runtime::admin::{self, AdminState};
use monitor_core::settings::{CheckerSettings, SettingsSource, Shard, TargetSettings};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::CheckerMetrics;
use crate::probe::{CheckFn, Checker};
use crate::spool::FileSpool;
use run::Output;

/// Where reports go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// One JSON line per report on standard output.
    Stdout,
    /// To Kafka, through the spool when it cannot be reached.
    Kafka,
}

/// How to run, besides the settings: what the command line says.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where reports go.
    pub destination: Destination,
    /// This replica's share of the targets; `checker.shard` when `None`.
    pub shard: Option<Shard>,
    /// The admin endpoint's address; `checker.admin_listen` when `None`.
    pub admin_listen: Option<String>,
    /// Where the settings came from: a reload reads them again from there, and its file is
    /// watched for changes (every `checker.watch_config`).
    pub source: SettingsSource,
}

/// Why the checker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reports go to Kafka but the settings have no `[kafka]` section.
    #[error("no kafka section")]
    NoKafka,
    /// The spool directory cannot be opened.
    #[error("cannot open the spool in {dir}: {source}")]
    Spool {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin endpoint's address cannot be bound.
    #[error("cannot serve the admin endpoint on {addr} (use --admin-listen): {source}")]
    Admin {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The checker, built and bound, not running yet.
pub struct Application {
    settings: CheckerSettings,
    options: Options,
    shard: Shard,
    output: Output,
    metrics: Arc<CheckerMetrics>,
    registry: Registry,
    admin: TcpListener,
    reload_tx: mpsc::Sender<()>,
    reload_rx: mpsc::Receiver<()>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("shard", &self.shard)
            .field("output", &self.output)
            .field("admin", &self.admin.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the spool (for Kafka) and binds the admin endpoint.
    pub async fn build(settings: CheckerSettings, options: Options) -> Result<Application, Error> {
        let shard = options.shard.unwrap_or(settings.checker.shard);
        let mut registry = Registry::default();
        let metrics = CheckerMetrics::register(&mut registry);
        let output = match options.destination {
            Destination::Stdout => Output::Stdout,
            Destination::Kafka => {
                let kafka = settings.kafka.clone().ok_or(Error::NoKafka)?;
                let producer = &settings.checker.producer;
                let spool = FileSpool::open(
                    &producer.spool_dir,
                    producer.spool_max_bytes,
                    metrics.spool.clone(),
                )
                .map_err(|source| Error::Spool {
                    dir: producer.spool_dir.clone(),
                    source,
                })?;
                Output::Kafka {
                    kafka: Box::new(kafka),
                    spool: Box::new(spool),
                }
            }
        };
        let addr = options
            .admin_listen
            .clone()
            .unwrap_or_else(|| settings.checker.admin_listen.clone());
        let admin = admin::bind(&addr)
            .await
            .map_err(|source| Error::Admin { addr, source })?;
        let (reload_tx, reload_rx) = mpsc::channel(1);
        Ok(Application {
            settings,
            options,
            shard,
            output,
            metrics,
            registry,
            admin,
            reload_tx,
            reload_rx,
        })
    }

    /// The address the admin endpoint is bound to.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Where to ask for a reload of the settings (a signal handler's, say).
    pub fn reloader(&self) -> mpsc::Sender<()> {
        self.reload_tx.clone()
    }

    /// Runs until `shutdown` fires, then stops scheduling, lets the checks in flight end and
    /// delivers or spools every report, all within `checker.shutdown_timeout`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let state = Arc::new(AdminState {
            registry: Mutex::new(self.registry),
            // Settings are loaded and reports are produced or spooled from the start.
            ready: Box::new(|| true),
        });
        let admin_task = tokio::spawn(admin::serve(self.admin, state, shutdown.clone()));
        if let (Some(path), Some(every)) = (
            self.options.source.file.clone(),
            self.settings.checker.watch_config,
        ) {
            tokio::spawn(crate::settings::watch(
                path,
                every,
                self.reload_tx.clone(),
                shutdown.clone(),
            ));
        }
        let source = self.options.source;
        let needs_kafka = self.options.destination == Destination::Kafka;
        let run = run::Run {
            check: checker_of(&self.settings).into_check_fn(),
            settings: self.settings,
            shard: self.shard,
            load: Box::new(move || CheckerSettings::load(&source, needs_kafka)),
            metrics: self.metrics,
        };
        run.until_stopped(self.output, self.reload_rx, shutdown)
            .await;
        let _ = admin_task.await;
    }
}

/// The checker of the settings' id and body memory budget.
pub fn checker_of(settings: &CheckerSettings) -> Arc<Checker> {
    Arc::new(
        Checker::new(settings.checker.id.clone())
            .with_body_memory(settings.checker.max_body_memory),
    )
}

/// Checks every target once, at most `max_in_flight` at a time, and returns the reports in
/// the targets' order.
pub async fn check_once(
    targets: Vec<Arc<TargetSettings>>,
    check: CheckFn,
    max_in_flight: usize,
) -> Vec<Report> {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let now = chrono::Utc::now();
    for (i, target) in targets.into_iter().enumerate() {
        let check = check.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, check(target, now).await)
        });
    }
    let mut reports = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => reports.push(r),
            Err(e) => error!(error = %e, "a check task failed"),
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Whether every report says up.
pub fn all_up(reports: &[Report]) -> bool {
    reports.iter().all(|r| r.status == Status::Up)
}
