//! The checker's Prometheus metrics, all under the `webmon_checker_` prefix: the checks' own,
//! counted as each report passes on its way out, and those of the publisher and the spool,
//! which count where things happen ([`PublishMetrics`], [`SpoolMetrics`]) and are registered
//! here so that every name is in one place.

use std::sync::Arc;

use monitor_core::report::Report;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::publish::PublishMetrics;
use crate::spool::SpoolMetrics;

/// Labels of a finished check.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// up, down or missed.
    pub status: String,
    /// The failure class, or `none`.
    pub failure_class: String,
}

/// Every metric of the checker.
#[derive(Debug)]
pub struct CheckerMetrics {
    /// Checks by status and failure class.
    pub checks: Family<CheckLabels, Counter>,
    /// Check duration, in seconds.
    pub duration: Histogram,
    /// `started_at − scheduled_at`, in seconds.
    pub lateness: Histogram,
    /// Checks running now.
    pub in_flight: Gauge,
    /// Reports waiting in memory for the producer.
    pub queue_depth: Gauge,
    /// The publisher's: reports produced, spooled, not spooled, lost, too large; failed rounds.
    pub publish: PublishMetrics,
    /// The spool's: its size, reports dropped, damaged records.
    pub spool: SpoolMetrics,
}

impl CheckerMetrics {
    /// The metrics, registered in `registry` under the `webmon_checker_` prefix.
    pub fn register(registry: &mut Registry) -> Arc<CheckerMetrics> {
        let m = CheckerMetrics {
            checks: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            lateness: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            publish: PublishMetrics::default(),
            spool: SpoolMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("webmon_checker");
        m.register_checks(r);
        register_delivery(r, &m.publish, &m.spool);
        Arc::new(m)
    }

    fn register_checks(&self, r: &mut Registry) {
        r.register(
            "checks",
            "Checks by status and failure class",
            self.checks.clone(),
        );
        r.register(
            "check_duration_seconds",
            "Duration of a check",
            self.duration.clone(),
        );
        r.register(
            "schedule_lateness_seconds",
            "Start of a check after its slot",
            self.lateness.clone(),
        );
        r.register(
            "checks_in_flight",
            "Checks running now",
            self.in_flight.clone(),
        );
        r.register(
            "queue_depth",
            "Reports waiting in memory for the producer",
            self.queue_depth.clone(),
        );
    }

    /// Records one finished check.
    pub fn observe(&self, report: &Report) {
        self.checks
            .get_or_create(&CheckLabels {
                status: report.status.as_str().to_string(),
                failure_class: report
                    .failure_class
                    .map_or("none", |c| c.as_str())
                    .to_string(),
            })
            .inc();
        if let Some(ms) = report.response_time_ms {
            self.duration.observe(ms / 1000.0);
        }
        let late = (report.started_at - report.scheduled_at)
            .num_microseconds()
            .unwrap_or(0);
        self.lateness.observe(late.max(0) as f64 / 1e6);
    }
}

/// The publisher's and the spool's metrics, in the order they were always listed. (Each name
/// stands in its own `register` call: the deployment checks read them from this file.)
fn register_delivery(r: &mut Registry, publish: &PublishMetrics, spool: &SpoolMetrics) {
    r.register(
        "spool_bytes",
        "Bytes in the on-disk spool",
        spool.bytes.clone(),
    );
    r.register(
        "produced_reports",
        "Reports acknowledged by Kafka",
        publish.produced.clone(),
    );
    r.register(
        "spooled_reports",
        "Reports written to the spool",
        publish.spooled.clone(),
    );
    r.register(
        "produce_errors",
        "Failed or timed-out produce rounds",
        publish.produce_errors.clone(),
    );
    r.register(
        "dropped_reports",
        "Reports dropped because the spool was full",
        spool.dropped.clone(),
    );
    r.register(
        "spool_corrupt_records",
        "Damaged spool records skipped",
        spool.corrupt.clone(),
    );
    r.register(
        "too_large_reports",
        "Reports the brokers refused as too large even alone, dropped",
        publish.too_large.clone(),
    );
    r.register(
        "unspooled_reports",
        "Reports the spool could not take (full disk, I/O error): held in memory for Kafka or lost",
        publish.unspooled.clone(),
    );
    r.register(
        "lost_reports",
        "Reports lost: neither the spool nor the bounded memory could hold them",
        publish.lost.clone(),
    );
}
