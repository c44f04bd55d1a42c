//! The sink's Prometheus metrics, and its readiness.
//!
//! Readiness is more than "the database answers": a partition whose stored offset has not
//! moved for [`STALL_BOUND`] while the broker holds messages past it is stalled, and a stalled
//! replica is not ready. `partition_stalled_seconds` shows how long each partition has waited.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A partition label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The partition.
    pub partition: i32,
}

/// A target state label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `up`, `down`, `degraded` or `unknown`.
    pub state: String,
}

/// An incident kind label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `down` or `degraded`.
    pub kind: String,
}

/// A region label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    /// The region (a checker id).
    pub region: String,
}

/// A notification's channel and the outcome of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The channel's name.
    pub channel: String,
    /// `delivered`, `retry` or `refused`.
    pub outcome: String,
}

/// How long a partition may hold messages without its stored offset moving before the replica
/// reports itself not ready. A healthy partition stores a batch every `batch_linger` or so; a
/// two-minute wait means PostgreSQL is down or blocked (a lock held, a stuck statement).
pub const STALL_BOUND: Duration = Duration::from_secs(120);

/// Where one partition stands.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The consumer this is the progress of (from [`SinkMetrics::partition_started`]): a
    /// consumer that was replaced must not remove its successor's entry when it stops.
    consumer: u64,
    /// When its stored offset last moved (or consumption started).
    advanced_at: Instant,
    /// Since when the broker has held messages past the stored offset; `None` when caught up.
    waiting_since: Option<Instant>,
}

impl Progress {
    /// How long it has waited with messages pending and no progress.
    fn stalled_for(&self, now: Instant) -> Duration {
        match self.waiting_since {
            Some(since) => now.saturating_duration_since(since.max(self.advanced_at)),
            None => Duration::ZERO,
        }
    }
}

/// Every metric of the sink.
#[derive(Debug)]
pub struct SinkMetrics {
    /// New result rows stored.
    pub rows: Counter,
    /// Reports skipped because their `report_id` was stored already.
    pub duplicates: Counter,
    /// Dead letters stored.
    pub dead_letters: Counter,
    /// Time to store one batch, in seconds.
    pub batch_seconds: Histogram,
    /// Messages behind the high watermark, per partition.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Partitions this replica owns.
    pub owned_partitions: Gauge,
    /// Failed database operations (each retried).
    pub db_errors: Counter,
    /// Seconds a partition has held messages without its stored offset moving.
    pub stalled_seconds: Family<PartitionLabels, Gauge>,
    /// Reports of slots already final (stored, changing nothing).
    pub late_reports: Counter,
    /// Incidents and degraded periods opened by this replica.
    pub incidents_opened: Counter,
    /// Targets by state (the whole database).
    pub targets: Family<StateLabels, Gauge>,
    /// Open incidents by kind (the whole database).
    pub open_incidents: Family<KindLabels, Gauge>,
    /// Per region, the targets it stopped reporting (the whole database).
    pub silent_regions: Family<RegionLabels, Gauge>,
    /// Notifications by channel and attempt outcome (each event of a grouped message counts).
    pub notifications: Family<NotificationLabels, Counter>,
    /// Notifications pending (the whole database).
    pub notifications_pending: Gauge,
    /// Notifications given up on (refused, or not delivered within `give_up_after`).
    pub notifications_failed: Counter,
    /// Whether the database answers and this replica holds its share of partitions (see
    /// [`SinkMetrics::is_ready`] for the whole readiness).
    pub ready: AtomicBool,
    /// The stall past which the replica is not ready ([`STALL_BOUND`] unless set).
    pub stall_bound: Duration,
    progress: Mutex<HashMap<i32, Progress>>,
    next_consumer: AtomicU64,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            rows: Counter::default(),
            duplicates: Counter::default(),
            dead_letters: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            lag: Family::default(),
            owned_partitions: Gauge::default(),
            db_errors: Counter::default(),
            stalled_seconds: Family::default(),
            late_reports: Counter::default(),
            incidents_opened: Counter::default(),
            targets: Family::default(),
            open_incidents: Family::default(),
            silent_regions: Family::default(),
            notifications: Family::default(),
            notifications_pending: Gauge::default(),
            notifications_failed: Counter::default(),
            ready: AtomicBool::new(false),
            stall_bound: STALL_BOUND,
            progress: Mutex::new(HashMap::new()),
            next_consumer: AtomicU64::new(0),
        }
    }
}

impl SinkMetrics {
    /// The metrics, registered in `registry` under the `webmon_sink_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<SinkMetrics> {
        SinkMetrics::register_with_stall_bound(registry, STALL_BOUND)
    }

    /// [`SinkMetrics::register`], with a stall bound other than [`STALL_BOUND`].
    pub fn register_with_stall_bound(
        registry: &mut Registry,
        stall_bound: Duration,
    ) -> Arc<SinkMetrics> {
        let m = SinkMetrics {
            stall_bound,
            ..SinkMetrics::default()
        };
        let r = registry.sub_registry_with_prefix("webmon_sink");
        r.register("rows_stored", "Result rows stored", m.rows.clone());
        r.register(
            "duplicates_skipped",
            "Reports whose report_id was stored already",
            m.duplicates.clone(),
        );
        r.register(
            "dead_letters",
            "Messages stored as dead letters",
            m.dead_letters.clone(),
        );
        r.register(
            "batch_seconds",
            "Time to store one batch",
            m.batch_seconds.clone(),
        );
        r.register(
            "partition_lag",
            "Messages behind the high watermark",
            m.lag.clone(),
        );
        r.register(
            "owned_partitions",
            "Partitions this replica owns",
            m.owned_partitions.clone(),
        );
        r.register(
            "database_errors",
            "Failed database operations (retried)",
            m.db_errors.clone(),
        );
        r.register(
            "partition_stalled_seconds",
            "Seconds a partition has held messages without its stored offset moving",
            m.stalled_seconds.clone(),
        );
        r.register(
            "late_reports",
            "Reports of slots already final: stored, changing no verdict",
            m.late_reports.clone(),
        );
        r.register(
            "incidents_opened",
            "Incidents and degraded periods opened by this replica",
            m.incidents_opened.clone(),
        );
        r.register("targets", "Targets by state", m.targets.clone());
        r.register(
            "open_incidents",
            "Open incidents by kind (down, degraded)",
            m.open_incidents.clone(),
        );
        r.register(
            "silent_regions",
            "Per region, the targets it stopped reporting within the region window",
            m.silent_regions.clone(),
        );
        r.register(
            "notifications",
            "Notification delivery attempts by channel and outcome (delivered, retry, refused)",
            m.notifications.clone(),
        );
        r.register(
            "notifications_pending",
            "Notifications waiting to be delivered",
            m.notifications_pending.clone(),
        );
        r.register(
            "notifications_failed",
            "Notifications given up on: refused, or not delivered within give_up_after",
            m.notifications_failed.clone(),
        );
        Arc::new(m)
    }

    /// Ready: the database answers, this replica holds its share, and no partition has been
    /// stalled longer than the stall bound.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.longest_stall() <= self.stall_bound
    }

    /// The longest stall of any partition this replica consumes.
    pub fn longest_stall(&self) -> Duration {
        let now = Instant::now();
        self.progress()
            .values()
            .map(|p| p.stalled_for(now))
            .max()
            .unwrap_or_default()
    }

    /// A consumer of `partition` started; returns its number, for
    /// [`SinkMetrics::partition_stopped`]. It replaces any earlier consumer of the partition.
    pub fn partition_started(&self, partition: i32) -> u64 {
        let consumer = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        self.progress().insert(
            partition,
            Progress {
                consumer,
                advanced_at: Instant::now(),
                waiting_since: None,
            },
        );
        self.refresh(partition);
        consumer
    }

    /// The consumer `consumer` of `partition` stopped: it no longer counts. A consumer that
    /// was already replaced (it outlived its give-back) leaves its successor's entry alone.
    pub fn partition_stopped(&self, partition: i32, consumer: u64) {
        let mut progress = self.progress();
        let current = progress.get(&partition).map(|p| p.consumer);
        if current == Some(consumer) {
            progress.remove(&partition);
            self.stalled_seconds.remove(&PartitionLabels { partition });
        }
    }

    /// The stored offset of `partition` moved.
    pub fn partition_advanced(&self, partition: i32) {
        if let Some(p) = self.progress().get_mut(&partition) {
            p.advanced_at = Instant::now();
        }
        self.refresh(partition);
    }

    /// Whether the broker holds messages of `partition` past its stored offset.
    pub fn partition_waiting(&self, partition: i32, waiting: bool) {
        if let Some(p) = self.progress().get_mut(&partition) {
            p.waiting_since = match (waiting, p.waiting_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
            };
        }
        self.refresh(partition);
    }

    /// Sets `partition_stalled_seconds` of `partition` from its progress.
    pub fn refresh(&self, partition: i32) {
        let stalled = self
            .progress()
            .get(&partition)
            .map(|p| p.stalled_for(Instant::now()));
        if let Some(stalled) = stalled {
            self.stalled_seconds
                .get_or_create(&PartitionLabels { partition })
                .set(i64::try_from(stalled.as_secs()).unwrap_or(i64::MAX));
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Progress>> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_consumer_that_stops_late_leaves_its_successor_tracked() {
        let metrics = SinkMetrics::default();
        let old = metrics.partition_started(3);
        let new = metrics.partition_started(3);
        metrics.partition_stopped(3, old);
        metrics.partition_waiting(3, true);
        let waiting = metrics
            .progress()
            .get(&3)
            .map(|p| p.waiting_since.is_some());
        assert_eq!(waiting, Some(true), "the new consumer is still watched");
        metrics.partition_stopped(3, new);
        assert!(metrics.progress().is_empty());
    }
}
