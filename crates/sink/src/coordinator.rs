//! The coordinator: takes a fair share of the topic's partitions through leases, runs one
//! consumer per owned partition, gives partitions back when more replicas join, and stops the
//! consumers on shutdown.
//!
//! The coordinator keeps the leases alive (it pings the lock connection once per rebalance
//! interval, and the server ends a silent lock session after [`crate::leases::lease_timeout`]),
//! so nothing slow runs on its path: housekeeping ([`crate::housekeeping`]) and the topic's
//! metadata ([`crate::topic`]) each run in a task of their own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monitor_core::settings::SinkSettings;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::consumer::{Consumer, ConsumerConfig, MAX_BATCH_BYTES};
use crate::db;
use crate::decode::Window;
use crate::error::SinkError;
use crate::leases::Leases;
use crate::metrics::SinkMetrics;

/// How long consumers get to store their last batch when the lease connection is lost.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The part of `sink.shutdown_timeout` kept for releasing the partitions after the consumers
/// stopped; they get the rest.
pub const RELEASE_RESERVE: Duration = Duration::from_secs(1);
/// How long a consumer giving its partition back gets to store its last batch; it is then
/// aborted (its transaction never commits, its messages are read again by the next owner) and
/// the lease released, so no consumer outlives its lease.
pub const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

/// A running consumer.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), SinkError>>,
}

/// Keeps the leases alive and this replica's share of partitions consumed.
pub struct Coordinator {
    /// What each consumer is cloned from.
    consumer: Consumer,
    /// Where the lease connection connects.
    options: PgConnectOptions,
    topic: String,
    rebalance_interval: Duration,
    shutdown_timeout: Duration,
    metrics: Arc<SinkMetrics>,
    running: HashMap<i32, Running>,
    leases: Option<Leases>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("topic", &self.topic)
            .field("owned", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator of `settings`' topic, running consumers cloned from `consumer`.
    pub fn new(
        settings: &SinkSettings,
        consumer: Consumer,
        metrics: Arc<SinkMetrics>,
    ) -> Result<Coordinator, SinkError> {
        Ok(Coordinator {
            options: db::connect_options(&settings.database)?,
            topic: consumer.topic.clone(),
            consumer,
            rebalance_interval: settings.sink.rebalance_interval,
            shutdown_timeout: settings.sink.shutdown_timeout,
            metrics,
            running: HashMap::new(),
            leases: None,
        })
    }

    /// How a partition is consumed, as `settings` say.
    pub fn consumer_config(settings: &SinkSettings) -> ConsumerConfig {
        ConsumerConfig {
            batch_size: settings.sink.batch_size,
            batch_linger: settings.sink.batch_linger,
            fetch_max_wait: settings.sink.fetch_max_wait,
            batch_bytes: MAX_BATCH_BYTES,
            window: Window::from_retention(settings.sink.retention),
        }
    }

    /// Runs until `shutdown`, following the partition count in `partitions`; then stores what
    /// the consumers fetched and releases the partitions.
    pub async fn run(
        mut self,
        mut partitions: watch::Receiver<i32>,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        let mut tick = tokio::time::interval(self.rebalance_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                Ok(()) = partitions.changed() => {}
            }
            self.round(&mut partitions).await;
        }
        self.metrics.ready.store(false, Ordering::Relaxed);
        info!("shutting down: storing what is fetched, then releasing the partitions");
        let grace = self.shutdown_timeout.saturating_sub(RELEASE_RESERVE);
        stop_all_within(&mut self.running, grace).await;
        if let Some(l) = self.leases.take() {
            l.leave().await;
        }
        Ok(())
    }

    /// One round: reap ended consumers, keep the leases, and rebalance.
    async fn round(&mut self, partitions: &mut watch::Receiver<i32>) {
        // Marked seen before anything can fail: a round that cannot join waits for the next
        // tick instead of being woken again at once by the same change.
        let count = *partitions.borrow_and_update();
        reap_ended(&mut self.running, &mut self.leases).await;
        if !self.hold_leases().await {
            return;
        }
        let Some(leases) = self.leases.as_mut() else {
            return;
        };
        if count == 0 {
            return;
        }
        match rebalance(leases, &mut self.running, count, &self.consumer).await {
            Ok(()) => self.metrics.ready.store(true, Ordering::Relaxed),
            Err(e @ SinkError::LeaseUnresponsive(_)) => {
                warn!(error = %e, "the lease connection stopped answering: stopping every consumer");
                self.lose_leases().await;
            }
            Err(e) => {
                self.metrics.ready.store(false, Ordering::Relaxed);
                self.metrics.db_errors.inc();
                warn!(error = %e, "rebalancing failed; retrying");
            }
        }
        let owned = self.leases.as_ref().map_or(0, |l| l.owned().len());
        self.metrics
            .owned_partitions
            .set(i64::try_from(owned).unwrap_or(0));
    }

    /// Pings the lease connection (losing the leases when it is gone), or joins when there is
    /// none. False when there is still none.
    async fn hold_leases(&mut self) -> bool {
        if let Some(l) = self.leases.as_mut() {
            if let Err(e) = l.ping().await {
                warn!(error = %e, "lost the lease connection: stopping every consumer");
                self.lose_leases().await;
            }
        }
        if self.leases.is_some() {
            return true;
        }
        match Leases::join(&self.options, &self.topic, self.rebalance_interval).await {
            Ok(l) => {
                info!(slot = ?l.slot(), "joined");
                self.leases = Some(l);
                true
            }
            Err(e) => {
                self.metrics.ready.store(false, Ordering::Relaxed);
                self.metrics.db_errors.inc();
                warn!(error = %e, "cannot take leases; retrying");
                false
            }
        }
    }

    /// The lease connection is gone or does not answer: stop every consumer and drop it.
    async fn lose_leases(&mut self) {
        self.metrics.ready.store(false, Ordering::Relaxed);
        self.metrics.db_errors.inc();
        self.metrics.owned_partitions.set(0);
        stop_all_within(&mut self.running, SHUTDOWN_GRACE).await;
        if let Some(l) = self.leases.take() {
            l.leave().await;
        }
    }
}

/// Consumers that ended by themselves lost their partition or failed: give it back.
async fn reap_ended(running: &mut HashMap<i32, Running>, leases: &mut Option<Leases>) {
    let ended: Vec<i32> = running
        .iter()
        .filter(|(_, r)| r.task.is_finished())
        .map(|(p, _)| *p)
        .collect();
    for partition in ended {
        if let Some(r) = running.remove(&partition) {
            match r.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(partition, error = %e, "consumer stopped"),
                Err(e) => error!(partition, error = %e, "consumer panicked"),
            }
        }
        if let Some(l) = leases.as_mut() {
            if let Err(e) = l.release(partition).await {
                warn!(error = %e, "releasing a lease failed");
            }
        }
    }
}

/// Takes or gives back partitions so this replica owns its fair share.
async fn rebalance(
    leases: &mut Leases,
    running: &mut HashMap<i32, Running>,
    partitions: i32,
    consumer: &Consumer,
) -> Result<(), SinkError> {
    let members = leases.members().await?;
    let total = usize::try_from(partitions).unwrap_or(0);
    let fair = total.div_ceil(members).max(1);

    let surplus: Vec<i32> = leases
        .owned()
        .iter()
        .rev()
        .take(leases.owned().len().saturating_sub(fair))
        .copied()
        .collect();
    give_back(leases, running, &surplus, members).await?;
    if leases.owned().len() >= fair {
        return Ok(());
    }
    // Start looking at a different place per replica, so they do not all race for the same
    // partitions.
    let start = leases.slot().unwrap_or(0).rem_euclid(partitions);
    for i in 0..partitions {
        if leases.owned().len() >= fair {
            break;
        }
        let partition = (start + i) % partitions;
        if leases.owned().contains(&partition) {
            continue;
        }
        if leases.try_acquire(partition).await? {
            info!(partition, members, "took a partition");
            let stop = CancellationToken::new();
            let task = tokio::spawn(consumer.clone().consume(partition, stop.clone()));
            running.insert(partition, Running { stop, task });
        }
    }
    Ok(())
}

/// Stops the consumers of `surplus` (each may store its last batch, all within
/// [`GIVE_BACK_WAIT`]; one still running then is aborted) and releases their leases.
async fn give_back(
    leases: &mut Leases,
    running: &mut HashMap<i32, Running>,
    surplus: &[i32],
    members: usize,
) -> Result<(), SinkError> {
    let stopping: Vec<(i32, Running)> = surplus
        .iter()
        .filter_map(|p| running.remove(p).map(|r| (*p, r)))
        .collect();
    for (_, r) in &stopping {
        r.stop.cancel();
    }
    let deadline = Instant::now() + GIVE_BACK_WAIT;
    for (partition, mut r) in stopping {
        if tokio::time::timeout_at(deadline, &mut r.task)
            .await
            .is_err()
        {
            abort(r.task).await;
            warn!(
                partition,
                wait_ms = GIVE_BACK_WAIT.as_millis() as u64,
                "consumer did not store its last batch in time: abandoned uncommitted, giving the partition back"
            );
        }
    }
    for &partition in surplus {
        leases.release(partition).await?;
        info!(partition, members, "gave a partition back");
    }
    Ok(())
}

/// Stops every consumer, letting each store what it fetched within `grace`; one still running
/// then (a transaction stuck behind a lock, a database that stopped answering) is aborted:
/// its transaction never commits, its offset does not move, and its messages are read again.
async fn stop_all_within(running: &mut HashMap<i32, Running>, grace: Duration) {
    for r in running.values() {
        r.stop.cancel();
    }
    let deadline = Instant::now() + grace;
    for (partition, mut r) in running.drain() {
        match tokio::time::timeout_at(deadline, &mut r.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(partition, error = %e, "consumer stopped with an error"),
            Ok(Err(e)) => error!(partition, error = %e, "consumer panicked"),
            Err(_) => {
                abort(r.task).await;
                warn!(
                    partition,
                    grace_ms = grace.as_millis() as u64,
                    "consumer did not stop in time: its batch was abandoned uncommitted and will be read again"
                );
            }
        }
    }
}

/// Aborts a consumer; returns once it, and the transaction it held, are dropped (that
/// transaction never commits, so its messages are read again).
async fn abort(task: JoinHandle<Result<(), SinkError>>) {
    task.abort();
    let _ = task.await;
}
