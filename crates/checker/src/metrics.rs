//! The checker's Prometheus metrics, all under the `webmon_checker_` prefix: the checks' own,
//! counted as each report passes on its way out, and those of the publisher and the spool,
//! which count where things happen ([`PublishMetrics`], [`SpoolMetrics`]) and are registered
//! here so that every name is in one place.
//!
//! One family has a label per target: the expiry of each HTTPS target's certificate
//! ([`CertificateExpiry`]). Its series are those of the targets this checker runs now, so
//! their number is bounded by the targets, and a target removed by a reload leaves no series.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use monitor_core::report::Report;
use monitor_core::settings::TargetSettings;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::publish::PublishMetrics;
use crate::spool::SpoolMetrics;
use crate::targets::TargetsMetrics;

/// Labels of a finished check.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// up, down or missed.
    pub status: String,
    /// The failure class, or `none`.
    pub failure_class: String,
}

/// Labels of the targets' count: where they come from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `file` (the settings file) or `api` (the targets topic).
    pub source: String,
}

/// Labels of a target's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The target's id.
    pub target: String,
}

/// When each HTTPS target's certificate expires: its notAfter as a Unix timestamp, in seconds,
/// as blackbox_exporter's `probe_ssl_earliest_cert_expiry`. Set from every report that carries
/// `tls_cert_not_after` (a handshake refused for the certificate still carries it); a check
/// that learned nothing of the certificate (the connection failed first) leaves the last value.
#[derive(Debug, Default)]
pub struct CertificateExpiry {
    family: Family<TargetLabels, Gauge>,
    /// Ids of the targets the checker runs now whose URL is https: only they get a series.
    https_targets: Mutex<HashSet<String>>,
}

impl CertificateExpiry {
    /// Sets the series of the report's target, if it carries a certificate expiry and the
    /// target is still one of those the checker runs.
    fn observe(&self, report: &Report) {
        let Some(not_after) = report.tls_cert_not_after else {
            return;
        };
        let targets = self.https_targets.lock().unwrap_or_else(|p| p.into_inner());
        if targets.contains(&report.target_id) {
            self.family
                .get_or_create(&TargetLabels {
                    target: report.target_id.clone(),
                })
                .set(not_after.timestamp());
        }
    }

    /// The checker runs `targets` from now on: the series of any other target are removed, and
    /// a late report of a removed target (a check in flight at the reload) adds none back.
    pub fn keep_only(&self, targets: &[Arc<TargetSettings>]) {
        let mut kept = self.https_targets.lock().unwrap_or_else(|p| p.into_inner());
        let now: HashSet<String> = targets
            .iter()
            .filter(|t| t.url.scheme() == "https")
            .map(|t| t.id.clone())
            .collect();
        for gone in kept.difference(&now) {
            self.family.remove(&TargetLabels {
                target: gone.clone(),
            });
        }
        *kept = now;
    }
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
    /// Each HTTPS target's certificate expiry.
    pub certificate_expiry: CertificateExpiry,
    /// The targets this checker runs, by source (`file`, `api`).
    pub targets: Family<SourceLabels, Gauge>,
    /// The targets topic's: definitions refused.
    pub targets_topic: Arc<TargetsMetrics>,
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
            certificate_expiry: CertificateExpiry::default(),
            targets: Family::default(),
            targets_topic: Arc::default(),
            publish: PublishMetrics::default(),
            spool: SpoolMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("webmon_checker");
        m.register_checks(r);
        m.register_targets(r);
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
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When the certificate of an HTTPS target expires (notAfter), as a Unix timestamp",
            self.certificate_expiry.family.clone(),
        );
    }

    fn register_targets(&self, r: &mut Registry) {
        r.register(
            "targets",
            "Targets this checker runs, by source: the settings file or the API (targets topic)",
            self.targets.clone(),
        );
        r.register(
            "refused_definitions",
            "Target definitions on the targets topic refused: no key, not JSON or invalid",
            self.targets_topic.refused.clone(),
        );
    }

    /// Sets the count of targets from each source.
    pub fn set_targets(&self, from_file: usize, from_api: usize) {
        for (source, n) in [("file", from_file), ("api", from_api)] {
            self.targets
                .get_or_create(&SourceLabels {
                    source: source.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
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
        self.certificate_expiry.observe(report);
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
