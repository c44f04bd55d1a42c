//! The checker's Prometheus metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use monitor_core::report::Report;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::publish::PublisherStats;
use crate::spool::SpoolStats;

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
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
    /// Reports acknowledged by Kafka.
    pub produced: Counter,
    /// Reports written to the spool.
    pub spooled: Counter,
    /// Failed or timed-out produce rounds.
    pub produce_errors: Counter,
    /// Duration of the last successful produce round, in seconds.
    pub produce_round_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Reports dropped because the spool was full.
    pub dropped: Counter,
    /// Damaged spool records skipped.
    pub spool_corrupt: Counter,
    /// Reports the brokers refused as too large even alone, dropped.
    pub too_large: Counter,
    /// Reports the spool could not take (a full disk, an I/O error).
    pub unspooled: Counter,
    /// Reports lost: neither the spool nor the bounded memory could hold them.
    pub lost: Counter,
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
            spool_bytes: Gauge::default(),
            produced: Counter::default(),
            spooled: Counter::default(),
            produce_errors: Counter::default(),
            produce_round_seconds: Gauge::default(),
            dropped: Counter::default(),
            spool_corrupt: Counter::default(),
            too_large: Counter::default(),
            unspooled: Counter::default(),
            lost: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("webmon_checker");
        r.register(
            "checks",
            "Checks by status and failure class",
            m.checks.clone(),
        );
        r.register(
            "check_duration_seconds",
            "Duration of a check",
            m.duration.clone(),
        );
        r.register(
            "schedule_lateness_seconds",
            "Start of a check after its slot",
            m.lateness.clone(),
        );
        r.register(
            "checks_in_flight",
            "Checks running now",
            m.in_flight.clone(),
        );
        r.register(
            "queue_depth",
            "Reports waiting in memory for the producer",
            m.queue_depth.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in the on-disk spool",
            m.spool_bytes.clone(),
        );
        r.register(
            "produced_reports",
            "Reports acknowledged by Kafka",
            m.produced.clone(),
        );
        r.register(
            "spooled_reports",
            "Reports written to the spool",
            m.spooled.clone(),
        );
        r.register(
            "produce_errors",
            "Failed or timed-out produce rounds",
            m.produce_errors.clone(),
        );
        r.register(
            "dropped_reports",
            "Reports dropped because the spool was full",
            m.dropped.clone(),
        );
        r.register(
            "spool_corrupt_records",
            "Damaged spool records skipped",
            m.spool_corrupt.clone(),
        );
        r.register(
            "too_large_reports",
            "Reports the brokers refused as too large even alone, dropped",
            m.too_large.clone(),
        );
        r.register(
            "unspooled_reports",
            "Reports the spool could not take (full disk, I/O error): held in memory for Kafka or lost",
            m.unspooled.clone(),
        );
        r.register(
            "lost_reports",
            "Reports lost: neither the spool nor the bounded memory could hold them",
            m.lost.clone(),
        );
        Arc::new(m)
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

    /// Copies the publisher's and the spool's counters (kept as atomics where they are
    /// counted) into the metrics.
    pub fn sync(&self, publisher: &PublisherStats, spool: Option<&SpoolStats>) {
        fn catch_up(counter: &Counter, total: u64) {
            let now = counter.get();
            if total > now {
                counter.inc_by(total - now);
            }
        }
        catch_up(&self.produced, publisher.produced.load(Ordering::Relaxed));
        catch_up(&self.spooled, publisher.spooled.load(Ordering::Relaxed));
        catch_up(
            &self.produce_errors,
            publisher.produce_errors.load(Ordering::Relaxed),
        );
        catch_up(&self.too_large, publisher.too_large.load(Ordering::Relaxed));
        catch_up(&self.unspooled, publisher.unspooled.load(Ordering::Relaxed));
        catch_up(&self.lost, publisher.lost.load(Ordering::Relaxed));
        if let Some(spool) = spool {
            catch_up(&self.dropped, spool.dropped.load(Ordering::Relaxed));
            catch_up(&self.spool_corrupt, spool.corrupt.load(Ordering::Relaxed));
            self.spool_bytes
                .set(i64::try_from(spool.bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
    }
}
