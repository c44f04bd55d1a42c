//! `sink report`: the uptime summary of the stored results (not to be confused with
//! [`monitor_core::report`], the report contract): uptime, latency percentiles, failures by
//! class, last failure and certificate expiry per target.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::SinkError;

/// One target's summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetSummary {
    /// Target id.
    pub target_id: String,
    /// URL.
    pub url: String,
    /// Checks in the window (missed slots included).
    pub checks: i64,
    /// Checks that found the target up.
    pub up: i64,
    /// Slots the checker could not run.
    pub missed: i64,
    /// Up ÷ (up + down), in percent; `None` without a completed check.
    pub uptime_percent: Option<f64>,
    /// Response time percentiles, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Failures by class.
    pub failures: BTreeMap<String, i64>,
    /// When the last failed check was scheduled.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Its error.
    pub last_failure_error: Option<String>,
    /// The latest known certificate expiry.
    pub tls_cert_not_after: Option<DateTime<Utc>>,
}

/// Summaries of every target with results in the last `since`, or of the one whose URL or id
/// is `target`.
pub async fn summarize(
    pool: &PgPool,
    since: Duration,
    target: Option<&str>,
) -> Result<Vec<TargetSummary>, SinkError> {
    let from = Utc::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
    let rows = sqlx::query(
        "SELECT target_id, min(url) AS url, count(*)::int8 AS checks, \
           count(*) FILTER (WHERE status = 'up')::int8 AS up, \
           count(*) FILTER (WHERE status = 'missed')::int8 AS missed, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms) FILTER (WHERE status <> 'missed') AS p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) FILTER (WHERE status <> 'missed') AS p95, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms) FILTER (WHERE status <> 'missed') AS p99, \
           (array_agg(tls_cert_not_after ORDER BY scheduled_at DESC) FILTER (WHERE tls_cert_not_after IS NOT NULL))[1] AS cert, \
           max(scheduled_at) FILTER (WHERE status = 'down') AS last_failure_at, \
           (array_agg(error ORDER BY scheduled_at DESC) FILTER (WHERE status = 'down'))[1] AS last_failure_error \
         FROM results \
         WHERE scheduled_at >= $1 AND ($2::text IS NULL OR url = $2 OR target_id = $2) \
         GROUP BY target_id ORDER BY min(url), target_id",
    )
    .bind(from)
    .bind(target)
    .fetch_all(pool)
    .await?;
    let failures = sqlx::query(
        "SELECT target_id, failure_class::text AS class, count(*)::int8 AS n FROM results \
         WHERE scheduled_at >= $1 AND status = 'down' AND ($2::text IS NULL OR url = $2 OR target_id = $2) \
         GROUP BY target_id, failure_class",
    )
    .bind(from)
    .bind(target)
    .fetch_all(pool)
    .await?;
    let mut by_target: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for f in failures {
        by_target.entry(f.get("target_id")).or_default().insert(
            f.get::<Option<String>, _>("class")
                .unwrap_or_else(|| "unknown".into()),
            f.get("n"),
        );
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let up: i64 = r.get("up");
            let checks: i64 = r.get("checks");
            let missed: i64 = r.get("missed");
            let judged = checks - missed;
            let target_id: String = r.get("target_id");
            TargetSummary {
                failures: by_target.remove(&target_id).unwrap_or_default(),
                target_id,
                url: r.get("url"),
                checks,
                up,
                missed,
                uptime_percent: (judged > 0).then(|| 100.0 * up as f64 / judged as f64),
                p50_ms: r.get("p50"),
                p95_ms: r.get("p95"),
                p99_ms: r.get("p99"),
                last_failure_at: r.get("last_failure_at"),
                last_failure_error: r.get("last_failure_error"),
                tls_cert_not_after: r.get("cert"),
            }
        })
        .collect())
}

/// The summaries as a table for a terminal.
pub fn table(summaries: &[TargetSummary]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut rows = vec![[
        "URL".to_string(),
        "CHECKS".into(),
        "UPTIME".into(),
        "P50 MS".into(),
        "P95 MS".into(),
        "P99 MS".into(),
        "FAILURES".into(),
        "LAST FAILURE".into(),
        "CERT EXPIRES".into(),
    ]];
    for s in summaries {
        let failures = s
            .failures
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        rows.push([
            s.url.clone(),
            s.checks.to_string(),
            s.uptime_percent.map_or("-".into(), |u| format!("{u:.2}%")),
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            if failures.is_empty() {
                "-".into()
            } else {
                failures
            },
            s.last_failure_at
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            s.tls_cert_not_after
                .map_or("-".into(), |t| t.format("%Y-%m-%d").to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
