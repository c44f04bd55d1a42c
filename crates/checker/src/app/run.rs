//! One run of the checker, from the first slot to the last delivery: the scheduler's reports
//! pass a tap (metrics, and the `missed` reports that fill the downtime's gap) on their way to
//! stdout or the publisher; reloads of the settings file and, with Kafka, the targets topic
//! change the targets; at shutdown the checks in flight get their share of `shutdown_timeout`
//! and delivery the rest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use monitor_core::settings::{
    CheckerSettings, ConfigError, KafkaSettings, ProducerSettings, Shard, TargetSettings,
};
use tokio::sync::mpsc::{self, WeakSender};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::downtime::{backfill_downtime, keep_heartbeat, save_targets};
use crate::metrics::CheckerMetrics;
use crate::probe::CheckFn;
use crate::publish::{self, Drained};
use crate::report;
use crate::schedule::backfill::{self, GapFill, Heartbeat};
use crate::schedule::{self, catalog::Catalog, on_demand};
use crate::spool::Spool;
use crate::targets::{follow::Follower, Definitions};

/// How often the sampled gauges (checks in flight, queue depth) are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// At shutdown, checks in flight may take `shutdown_timeout / CHECKS_SHARE_DIVISOR`; the last
/// deliveries get the rest, so the whole shutdown stays within `shutdown_timeout`.
const CHECKS_SHARE_DIVISOR: u32 = 2;

/// The Kafka client id of the targets topic's reader.
const TARGETS_CLIENT_ID: &str = "web-monitor-checker-targets";

/// Longest the start waits for the targets topic's first read when the last run checked API
/// targets, so that they start with the file's and get the downtime's backfill: a slower
/// read, or Kafka out, only makes them start later (without the backfill).
const FIRST_READ_LIMIT: Duration = Duration::from_secs(3);

/// Reports between the scheduler and the tap.
const TAP_CAPACITY: usize = 1024;

/// Where reports go, ready.
pub(super) enum Output {
    /// One JSON line per report on standard output.
    Stdout,
    /// To Kafka, through the spool when it cannot be reached.
    Kafka {
        /// The brokers and topic.
        kafka: Box<KafkaSettings>,
        /// The spool.
        spool: Box<dyn Spool>,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Stdout => f.write_str("Stdout"),
            Output::Kafka { kafka, .. } => write!(f, "Kafka({:?})", kafka.brokers),
        }
    }
}

/// Loads the settings again, for a reload.
pub(super) type Load = Box<dyn Fn() -> Result<CheckerSettings, ConfigError> + Send + Sync>;

/// What a run needs besides where reports go.
pub(super) struct Run {
    pub settings: CheckerSettings,
    pub shard: Shard,
    pub load: Load,
    pub check: CheckFn,
    pub metrics: Arc<CheckerMetrics>,
}

/// The tasks behind the scheduler, ended in order at shutdown.
struct Behind {
    tap: JoinHandle<()>,
    delivery: JoinHandle<()>,
    heartbeat: Option<JoinHandle<()>>,
    sampler: JoinHandle<()>,
    /// Stops the sampler and the heartbeat once delivery is over.
    stop: CancellationToken,
}

impl Run {
    /// Runs the schedule until `shutdown` fires. Each message on `reload` asks for the
    /// settings to be loaded again: valid ones take effect (unchanged targets keep their
    /// slots), invalid ones are logged and the running ones kept.
    pub async fn until_stopped(
        self,
        output: Output,
        reload: mpsc::Receiver<()>,
        shutdown: CancellationToken,
    ) {
        let kafka = match &output {
            Output::Kafka { kafka, .. } => Some((**kafka).clone()),
            Output::Stdout => None,
        };
        let (mut targets, targets_rx) = self.start_targets(kafka, &shutdown).await;
        let (reports_tx, tapped_rx) = mpsc::channel::<Report>(TAP_CAPACITY);
        let max_in_flight = self.settings.checker.max_in_flight.max(1);
        let permits = Arc::new(Semaphore::new(max_in_flight));
        let stop_schedule = CancellationToken::new();
        let on_demand = match &output {
            Output::Kafka { kafka, .. } => Some(tokio::spawn(on_demand::connect_and_follow(
                (**kafka).clone(),
                targets_rx.clone(),
                self.check.clone(),
                reports_tx.clone(),
                stop_schedule.clone(),
            ))),
            Output::Stdout => None,
        };
        let behind = self.start_behind(output, tapped_rx, &targets.tx.borrow(), &permits);
        let mut scheduler = tokio::spawn(schedule::run_with(
            targets_rx,
            self.check.clone(),
            self.settings.checker.id.clone(),
            permits.clone(),
            reports_tx,
            stop_schedule.clone(),
        ));
        self.serve_reloads(&mut scheduler, reload, &shutdown, &mut targets)
            .await;
        if let Some(follower) = targets.follower.take() {
            follower.abort();
        }
        // Stop scheduling, let the checks in flight end within their share of the shutdown
        // timeout (aborting those that do not), then let delivery flush within the rest.
        stop_schedule.cancel();
        let deadline = tokio::time::Instant::now() + self.checks_budget();
        if !scheduler.is_finished()
            && tokio::time::timeout_at(deadline, &mut scheduler)
                .await
                .is_err()
        {
            let in_flight = max_in_flight.saturating_sub(permits.available_permits());
            abort_checks(scheduler, in_flight).await;
        }
        if let Some(on_demand) = on_demand {
            on_demand.abort();
            let _ = on_demand.await;
        }
        behind.finish().await;
        info!("checker stopped");
    }

    /// The targets' two sources at start: the settings file's, and with Kafka the targets
    /// topic's follower, whose first read is waited for (boundedly) when the last run checked
    /// API targets, so that both start together; and the scheduler's end of their merged list.
    async fn start_targets(
        &self,
        kafka: Option<KafkaSettings>,
        shutdown: &CancellationToken,
    ) -> (Targets, watch::Receiver<Vec<Arc<TargetSettings>>>) {
        let file = kafka
            .is_some()
            .then(|| self.settings.checker.producer.spool_dir.clone());
        let (api_tx, mut api) = watch::channel(Definitions::new());
        let first_read = Arc::new(Notify::new());
        let follower = kafka.map(|kafka| {
            let follower = Follower {
                kafka,
                client_id: TARGETS_CLIENT_ID.to_string(),
                definitions: api_tx,
                metrics: self.metrics.targets_topic.clone(),
                first_read: first_read.clone(),
            };
            tokio::spawn(follower.run(shutdown.clone()))
        });
        if follower.is_some() && self.last_run_had_api_targets() {
            wait_first_read(&first_read, shutdown).await;
        }
        let mut catalog = Catalog::new(&self.settings.targets);
        let first = catalog.merge(&api.borrow_and_update(), self.shard);
        self.metrics.set_targets(first.from_file, first.from_api);
        self.metrics.certificate_expiry.keep_only(&first.targets);
        let (tx, rx) = watch::channel(first.targets);
        let targets = Targets {
            tx,
            file,
            catalog,
            api,
            follower,
        };
        (targets, rx)
    }

    /// Whether the last run (as saved beside the spool) checked targets the settings file does
    /// not hold: API targets, whose downtime is backfilled only if they are known at start.
    fn last_run_had_api_targets(&self) -> bool {
        let dir = &self.settings.checker.producer.spool_dir;
        backfill::saved_ids(dir).is_some_and(|ids| {
            ids.iter()
                .any(|id| !self.settings.targets.iter().any(|t| &t.id == id))
        })
    }

    /// The share of `shutdown_timeout` the checks in flight get.
    fn checks_budget(&self) -> Duration {
        self.settings.checker.producer.shutdown_timeout / CHECKS_SHARE_DIVISOR
    }

    /// Starts what takes the scheduler's reports: the backfill of the downtime first, then the
    /// tap, the delivery (with the heartbeat) and the sampler.
    fn start_behind(
        &self,
        mut output: Output,
        tapped: mpsc::Receiver<Report>,
        targets: &[Arc<TargetSettings>],
        permits: &Arc<Semaphore>,
    ) -> Behind {
        let producer = &self.settings.checker.producer;
        let (out_tx, reports_rx) = mpsc::channel::<Report>(producer.queue_capacity.max(1));
        // Weak: the queue must close when the tap ends, whatever the sampler does.
        let queue = out_tx.downgrade();
        let started = Utc::now();
        let (gap, targets_file) = match &mut output {
            Output::Kafka { spool, .. } => (
                backfill_downtime(
                    spool.as_mut(),
                    &self.settings,
                    self.shard,
                    targets,
                    started,
                    &self.metrics,
                ),
                Some(producer.spool_dir.as_path()),
            ),
            Output::Stdout => (None, None),
        };
        save_targets(targets_file, targets);
        let tap = tokio::spawn(tap(tapped, gap, self.metrics.clone(), out_tx));
        info!(
            targets = targets.len(),
            shard = %self.shard,
            output = ?output,
            "checker starting"
        );
        let stop = CancellationToken::new();
        let (delivery, heartbeat) = self.start_delivery(output, reports_rx, started, &stop);
        let sampler = tokio::spawn(sample(
            self.metrics.clone(),
            permits.clone(),
            self.settings.checker.max_in_flight.max(1),
            queue,
            stop.clone(),
        ));
        Behind {
            tap,
            delivery,
            heartbeat,
            sampler,
            stop,
        }
    }

    /// Starts the delivery of `reports`: printed, or published with the heartbeat kept.
    fn start_delivery(
        &self,
        output: Output,
        reports: mpsc::Receiver<Report>,
        started: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> (JoinHandle<()>, Option<JoinHandle<()>>) {
        let (kafka, spool) = match output {
            Output::Stdout => return (tokio::spawn(report::print_lines(reports)), None),
            Output::Kafka { kafka, spool } => (kafka, spool),
        };
        let producer = &self.settings.checker.producer;
        let drained = Drained::default();
        let beat = Heartbeat {
            checker_id: self.settings.checker.id.clone(),
            shard: self.shard.to_string(),
            started_at: started,
            alive_at: started,
        };
        let heartbeat = tokio::spawn(keep_heartbeat(
            beat,
            producer.spool_dir.clone(),
            drained.clone(),
            stop.clone(),
        ));
        let settings = ProducerSettings {
            shutdown_timeout: producer
                .shutdown_timeout
                .saturating_sub(self.checks_budget()),
            ..producer.clone()
        };
        let delivery = tokio::spawn(publish::run(
            reports,
            *kafka,
            settings,
            spool,
            self.metrics.publish.clone(),
            drained,
        ));
        (delivery, Some(heartbeat))
    }

    /// Takes reloads until `shutdown` fires or the scheduler ends.
    async fn serve_reloads(
        &self,
        scheduler: &mut JoinHandle<()>,
        mut reload: mpsc::Receiver<()>,
        shutdown: &CancellationToken,
        targets: &mut Targets,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = &mut *scheduler => {
                    if let Err(e) = r { error!(error = %e, "the scheduler failed"); }
                    return;
                }
                Some(()) = reload.recv() => self.reload(targets),
                Ok(()) = targets.api.changed() => {
                    let (n, from_api) = targets.refresh(self.shard, &self.metrics);
                    info!(targets = n, from_api, "API targets changed");
                }
            }
        }
    }

    /// Loads the settings again: valid ones change the targets now, invalid ones are logged.
    fn reload(&self, targets: &mut Targets) {
        match (self.load)() {
            Ok(new) => {
                if new.kafka != self.settings.kafka || new.checker != self.settings.checker {
                    warn!("the [checker] and [kafka] sections take effect at the next restart; the targets change now");
                }
                targets.catalog.set_file(&new.targets);
                let (n, _) = targets.refresh(self.shard, &self.metrics);
                info!(targets = n, "settings reloaded");
            }
            Err(e) => error!("settings not reloaded, the running ones are kept: {e}"),
        }
    }
}

/// The scheduler's target list, the file beside the spool it is saved to (for Kafka), and
/// its two sources: the settings file's targets and the API's definitions.
struct Targets {
    tx: watch::Sender<Vec<Arc<TargetSettings>>>,
    file: Option<PathBuf>,
    catalog: Catalog,
    api: watch::Receiver<Definitions>,
    /// The targets topic's follower (with Kafka), stopped after the schedule's last reload.
    follower: Option<JoinHandle<()>>,
}

impl Targets {
    /// Merges the two sources again and gives the scheduler the list (saved for the backfill,
    /// certificate series kept to it); returns how many targets it holds, and from the API.
    fn refresh(&mut self, shard: Shard, metrics: &CheckerMetrics) -> (usize, usize) {
        let merged = self.catalog.merge(&self.api.borrow_and_update(), shard);
        metrics.set_targets(merged.from_file, merged.from_api);
        save_targets(self.file.as_deref(), &merged.targets);
        metrics.certificate_expiry.keep_only(&merged.targets);
        let counts = (merged.targets.len(), merged.from_api);
        self.tx.send_replace(merged.targets);
        counts
    }
}

impl Behind {
    /// Waits for the tap and the delivery to end, then stops the sampler and the heartbeat
    /// (which writes once more).
    async fn finish(self) {
        let _ = self.tap.await;
        if let Err(e) = self.delivery.await {
            error!(error = %e, "delivery failed at shutdown");
        }
        self.stop.cancel();
        let _ = self.sampler.await;
        if let Some(heartbeat) = self.heartbeat {
            let _ = heartbeat.await;
        }
    }
}

/// Every report passes the metrics on its way out, after the `missed` reports that fill the
/// downtime's gap before it.
async fn tap(
    mut tapped: mpsc::Receiver<Report>,
    mut gap: Option<GapFill>,
    metrics: Arc<CheckerMetrics>,
    out: mpsc::Sender<Report>,
) {
    while let Some(report) = tapped.recv().await {
        let before = gap.as_mut().map(|g| g.before(&report)).unwrap_or_default();
        for r in before.into_iter().chain(std::iter::once(report)) {
            metrics.observe(&r);
            if out.send(r).await.is_err() {
                return;
            }
        }
    }
}

/// Refreshes the sampled gauges every [`SAMPLE_EVERY`] until `stop`.
async fn sample(
    metrics: Arc<CheckerMetrics>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    queue: WeakSender<Report>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let running = max_in_flight.saturating_sub(permits.available_permits());
        metrics
            .in_flight
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        if let Some(queue) = queue.upgrade() {
            let depth = queue.max_capacity() - queue.capacity();
            metrics
                .queue_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
    }
}

/// Aborts the scheduler and with it the checks still in flight: they are not reported (a
/// report must say what the target did, and these never finished), only counted in the log.
async fn abort_checks(scheduler: JoinHandle<()>, in_flight: usize) {
    scheduler.abort();
    // Returns once the scheduler and the checks it holds are dropped.
    let _ = scheduler.await;
    warn!(
        aborted = in_flight,
        "checks in flight did not end within their share of shutdown_timeout: aborted, not reported"
    );
}

/// Waits until the targets topic was first read (or found missing, or failed), at most
/// [`FIRST_READ_LIMIT`] and not past `shutdown`.
async fn wait_first_read(first_read: &Notify, shutdown: &CancellationToken) {
    let read = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(FIRST_READ_LIMIT, first_read.notified()) => r,
    };
    if read.is_err() {
        info!(limit = ?FIRST_READ_LIMIT, "the targets topic is not read yet: starting with the settings file's targets, the API's follow");
    }
}
