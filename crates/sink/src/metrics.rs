//! The sink's Prometheus metrics, and its readiness.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    /// Whether the database answers and this replica holds its share of partitions.
    pub ready: AtomicBool,
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
            ready: AtomicBool::new(false),
        }
    }
}

impl SinkMetrics {
    /// The metrics, registered in `registry` under the `webmon_sink_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<SinkMetrics> {
        let m = SinkMetrics::default();
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
        Arc::new(m)
    }
}
