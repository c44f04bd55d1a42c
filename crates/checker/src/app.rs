//! Wiring of the checker's modes: check everything once, or run the schedule forever with the
//! reports going to stdout or to Kafka; reload on request; stop cleanly on shutdown.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use monitor_core::report::{Report, Status};
use monitor_core::settings::{
    CheckerSettings, KafkaSettings, ProducerSettings, Shard, TargetSettings,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backfill::{self, GapFill, Heartbeat};
use crate::metrics::CheckerMetrics;
use crate::publish::{self, PublisherStats, Spool};
use crate::schedule::{self, Probe};
use crate::spool::SpoolStats;

/// How often gauges read from counters elsewhere are refreshed.
const METRICS_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// At shutdown, checks in flight may take `shutdown_timeout / CHECKS_SHARE_DIVISOR`; the last
/// deliveries get the rest, so the whole shutdown stays within `shutdown_timeout`.
const CHECKS_SHARE_DIVISOR: u32 = 2;

/// Where reports go.
pub enum Output {
    /// One JSON line per report on standard output.
    Stdout,
    /// To Kafka, through the spool when it cannot be reached.
    Kafka {
        /// The brokers and topic.
        kafka: Box<KafkaSettings>,
        /// The spool.
        spool: Box<dyn Spool>,
        /// The spool's counters, for metrics.
        spool_stats: Option<Arc<SpoolStats>>,
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

/// The targets this replica checks.
pub fn my_targets(settings: &CheckerSettings, shard: Shard) -> Vec<Arc<TargetSettings>> {
    settings
        .targets
        .iter()
        .filter(|t| shard.owns(&t.id))
        .cloned()
        .map(Arc::new)
        .collect()
}

/// Checks every target once, at most `max_in_flight` at a time, and returns the reports in
/// the targets' order.
pub async fn check_once(
    targets: Vec<Arc<TargetSettings>>,
    probe: Probe,
    max_in_flight: usize,
) -> Vec<Report> {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let now = chrono::Utc::now();
    for (i, target) in targets.into_iter().enumerate() {
        let probe = probe.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, probe(target, now).await)
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

/// Runs the schedule until `shutdown` fires. Each message on `reload` asks for the settings to
/// be loaded again by `load`: valid ones take effect (unchanged targets keep their slots),
/// invalid ones are logged and the running ones kept.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: CheckerSettings,
    shard: Shard,
    load: impl Fn() -> Result<CheckerSettings, monitor_core::settings::ConfigError>,
    probe: Probe,
    output: Output,
    metrics: Arc<CheckerMetrics>,
    mut reload: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let producer: ProducerSettings = settings.checker.producer.clone();
    let (targets_tx, targets_rx) = watch::channel(my_targets(&settings, shard));
    let (reports_tx, mut tapped_rx) = mpsc::channel::<Report>(1024);
    let (out_tx, reports_rx) = mpsc::channel::<Report>(producer.queue_capacity.max(1));
    // Every report passes the metrics on its way out.
    let tap_metrics = metrics.clone();
    // Weak: the queue must close when the tap ends, whatever the metrics task does.
    let queue = out_tx.downgrade();
    let started = chrono::Utc::now();
    let mut output = output;
    let targets_file =
        matches!(output, Output::Kafka { .. }).then(|| settings.checker.producer.spool_dir.clone());
    let mut gap = match &mut output {
        Output::Kafka { spool, .. } => backfill_downtime(
            spool.as_mut(),
            &settings,
            shard,
            &targets_tx.borrow(),
            started,
            &metrics,
        ),
        Output::Stdout => None,
    };
    save_targets(targets_file.as_deref(), &targets_tx.borrow());
    let tap = tokio::spawn(async move {
        while let Some(report) = tapped_rx.recv().await {
            let before = gap.as_mut().map(|g| g.before(&report)).unwrap_or_default();
            for r in before.into_iter().chain(std::iter::once(report)) {
                tap_metrics.observe(&r);
                if out_tx.send(r).await.is_err() {
                    return;
                }
            }
        }
    });
    info!(
        targets = targets_tx.borrow().len(),
        shard = %shard,
        output = ?output,
        "checker starting"
    );

    let publisher_stats = Arc::new(PublisherStats::default());
    let checks_budget = producer.shutdown_timeout / CHECKS_SHARE_DIVISOR;
    let delivery_settings = ProducerSettings {
        shutdown_timeout: producer.shutdown_timeout.saturating_sub(checks_budget),
        ..producer.clone()
    };
    let stop_sync = CancellationToken::new();
    let heartbeat = match &output {
        Output::Kafka { .. } => Some(tokio::spawn(keep_heartbeat(
            Heartbeat {
                checker_id: settings.checker.id.clone(),
                shard: shard.to_string(),
                started_at: started,
                alive_at: started,
            },
            settings.checker.producer.spool_dir.clone(),
            publisher_stats.clone(),
            stop_sync.clone(),
        ))),
        Output::Stdout => None,
    };
    let (delivery, spool_stats) = match output {
        Output::Stdout => (tokio::spawn(print_reports(reports_rx)), None),
        Output::Kafka {
            kafka,
            spool,
            spool_stats,
        } => (
            tokio::spawn(publish::run(
                reports_rx,
                *kafka,
                delivery_settings,
                spool,
                publisher_stats.clone(),
            )),
            spool_stats,
        ),
    };
    let permits = Arc::new(Semaphore::new(settings.checker.max_in_flight.max(1)));
    let max_in_flight = settings.checker.max_in_flight.max(1);
    let sync = {
        let metrics = metrics.clone();
        let permits = permits.clone();
        let stop = stop_sync.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_SYNC_EVERY);
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
                metrics.sync(&publisher_stats, spool_stats.as_deref());
            }
        })
    };
    let stop_schedule = CancellationToken::new();
    let in_flight = permits.clone();
    let mut scheduler = tokio::spawn(schedule::run_with(
        targets_rx,
        probe,
        settings.checker.id.clone(),
        permits,
        reports_tx,
        stop_schedule.clone(),
    ));

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = &mut scheduler => {
                if let Err(e) = r { error!(error = %e, "the scheduler failed"); }
                break;
            }
            Some(()) = reload.recv() => match load() {
                Ok(new) => {
                    if new.kafka != settings.kafka || new.checker != settings.checker {
                        warn!("the [checker] and [kafka] sections take effect at the next restart; the targets change now");
                    }
                    let targets = my_targets(&new, shard);
                    info!(targets = targets.len(), "settings reloaded");
                    save_targets(targets_file.as_deref(), &targets);
                    targets_tx.send_replace(targets);
                }
                Err(e) => error!("settings not reloaded, the running ones are kept: {e}"),
            },
        }
    }

    // Stop scheduling, let the checks in flight end within their share of the shutdown
    // timeout (aborting those that do not), then let delivery flush within the rest.
    stop_schedule.cancel();
    let deadline = tokio::time::Instant::now() + checks_budget;
    if !scheduler.is_finished()
        && tokio::time::timeout_at(deadline, &mut scheduler)
            .await
            .is_err()
    {
        abort_checks(
            scheduler,
            max_in_flight.saturating_sub(in_flight.available_permits()),
        )
        .await;
    }
    let _ = tap.await;
    if let Err(e) = delivery.await {
        error!(error = %e, "delivery failed at shutdown");
    }
    stop_sync.cancel();
    let _ = sync.await;
    if let Some(heartbeat) = heartbeat {
        let _ = heartbeat.await;
    }
    info!("checker stopped");
}

/// Aborts the scheduler and with it the checks still in flight: they are not reported (a
/// report must say what the target did, and these never finished), only counted in the log.
async fn abort_checks(scheduler: tokio::task::JoinHandle<()>, in_flight: usize) {
    scheduler.abort();
    // Returns once the scheduler and the checks it holds are dropped.
    let _ = scheduler.await;
    warn!(
        aborted = in_flight,
        "checks in flight did not end within their share of shutdown_timeout: aborted, not reported"
    );
}

/// Saves the ids of the targets checked now beside the spool, for the next start's backfill.
fn save_targets(dir: Option<&std::path::Path>, targets: &[Arc<TargetSettings>]) {
    if let Some(dir) = dir {
        if let Err(e) = backfill::save_targets(dir, targets) {
            warn!(dir = %dir.display(), error = %e, "cannot save the target list for the backfill");
        }
    }
}

/// Writes the `missed` reports of the slots that fell since the last run (see [`backfill`])
/// to the spool, and returns what fills the gap up to this run's first slots.
fn backfill_downtime(
    spool: &mut dyn Spool,
    settings: &CheckerSettings,
    shard: Shard,
    targets: &[Arc<TargetSettings>],
    started: chrono::DateTime<chrono::Utc>,
    metrics: &CheckerMetrics,
) -> Option<GapFill> {
    let dir = &settings.checker.producer.spool_dir;
    let id = &settings.checker.id;
    let last = match Heartbeat::read(dir) {
        Ok(Some(last)) => last,
        Ok(None) => return None,
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "no backfill of the downtime");
            return None;
        }
    };
    if !backfill::is_ours(&last, id, &shard.to_string()) {
        return None;
    }
    let ours = backfill::checked_last_time(dir, targets);
    backfill::backfill(spool, &ours, &last, id, started, |r| metrics.observe(r));
    let now = Heartbeat {
        started_at: started,
        alive_at: started,
        ..last
    };
    if let Err(e) = now.write(dir) {
        warn!(dir = %dir.display(), error = %e, "cannot write the heartbeat");
    }
    Some(GapFill::new(&ours, id, started))
}

/// Rewrites the heartbeat every [`backfill::HEARTBEAT_EVERY`] until `stop`, and once more
/// after: the time up to which every report made was in the spool.
async fn keep_heartbeat(
    mut beat: Heartbeat,
    dir: std::path::PathBuf,
    stats: Arc<PublisherStats>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(backfill::HEARTBEAT_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let drained = stats.drained_at_micros.load(Ordering::Relaxed);
        if let Some(at) = i64::try_from(drained)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
        {
            beat.alive_at = beat.alive_at.max(at);
        }
        if let Err(e) = beat.write(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot write the heartbeat");
        }
        if stopping {
            return;
        }
    }
}

async fn print_reports(mut reports: mpsc::Receiver<Report>) {
    while let Some(report) = reports.recv().await {
        let mut line = report.to_json();
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): nothing more can be printed.
            return;
        }
    }
}
