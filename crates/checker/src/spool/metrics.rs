//! The spool's Prometheus metrics, counted where they happen; registered by
//! [`crate::metrics::CheckerMetrics`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// The spool's metrics: handles, cheap to clone, shared with the registry.
#[derive(Debug, Clone, Default)]
pub struct SpoolMetrics {
    /// Reports dropped because the spool reached its bound (or were too large for it).
    pub dropped: Counter,
    /// Damaged records skipped while reading.
    pub corrupt: Counter,
    /// Current size on disk, in bytes.
    pub bytes: Gauge,
}
