//! `sink report`: the uptime summary of the stored results (not to be confused with
//! [`monitor_core::report`], the report contract). Per target, from the verdicts: state,
//! open incident, incidents with MTTR and MTBF, and uptime over the final slots (a slot is up
//! unless a quorum of regions found it down); from the per-region rows: checks, the share of
//! checks up, latency percentiles, failures by class, last failure and certificate expiry.
//!
//! Uptime from verdicts is `(up + degraded) / (up + degraded + down)` over the hours of
//! `verdicts_by_hour` that the window touches; slots of `unknown` verdict (every region missed)
//! are left out, and so are the slots in maintenance windows (counted apart: the summary says
//! how many). MTTR is the mean duration of the `down` incidents opened in the window and
//! closed, incidents of a maintenance window left out; MTBF the mean time from one such
//! incident's close to the next one's opening.
//!
//! Below the table, notifications given up on are listed per channel (count and the newest
//! error), since a channel that silently fails is an outage nobody hears of.

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
    /// Checks up ÷ (up + down), in percent, over every region's checks; `None` without a
    /// completed check.
    pub uptime_percent: Option<f64>,
    /// Slots not down ÷ slots judged, in percent, from the verdicts (quorum of regions);
    /// `None` without a verdict.
    pub verdict_uptime_percent: Option<f64>,
    /// Final slots in maintenance windows: left out of `verdict_uptime_percent`.
    pub maintenance_slots: i64,
    /// The target's state: `up`, `down`, `degraded`, `unknown`; `None` without verdicts.
    pub state: Option<String>,
    /// Since when (the slot the state began at).
    pub state_since: Option<DateTime<Utc>>,
    /// The open incident or degraded period: its kind and when it opened.
    pub open_incident: Option<(String, DateTime<Utc>)>,
    /// `down` incidents opened in the window.
    pub incidents: i64,
    /// Mean time to recovery of those incidents, in seconds.
    pub mttr_s: Option<f64>,
    /// Mean time between failures: from one incident's close to the next one's opening, in
    /// seconds.
    pub mtbf_s: Option<f64>,
    /// Whether the certificate expires within `cert_warning`.
    pub cert_warning: bool,
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
    let mut verdicts = verdicts_of(pool, from, target).await?;
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
            let v = verdicts.remove(&target_id).unwrap_or_default();
            TargetSummary {
                failures: by_target.remove(&target_id).unwrap_or_default(),
                verdict_uptime_percent: v.uptime_percent(),
                maintenance_slots: v.maintenance,
                state: v.state,
                state_since: v.state_since,
                open_incident: v.open_incident,
                incidents: v.incidents,
                mttr_s: v.mttr_s,
                mtbf_s: v.mtbf_s,
                cert_warning: v.cert_warning,
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

/// What the verdicts say of one target in the window.
#[derive(Debug, Default)]
struct VerdictSummary {
    /// Final slots by verdict: up, degraded, down.
    slots: [i64; 3],
    /// Final slots in maintenance windows.
    maintenance: i64,
    state: Option<String>,
    state_since: Option<DateTime<Utc>>,
    cert_warning: bool,
    open_incident: Option<(String, DateTime<Utc>)>,
    incidents: i64,
    mttr_s: Option<f64>,
    mtbf_s: Option<f64>,
}

impl VerdictSummary {
    fn uptime_percent(&self) -> Option<f64> {
        let [up, degraded, down] = self.slots;
        let judged = up + degraded + down;
        (judged > 0).then(|| 100.0 * (up + degraded) as f64 / judged as f64)
    }
}

/// Which targets a query covers: every one, or the one whose URL or id is `$2`.
const TARGET_FILTER: &str = "($2::text IS NULL OR t.url = $2 OR t.target_id = $2)";

/// The verdicts' side of the summaries, by target.
async fn verdicts_of(
    pool: &PgPool,
    from: DateTime<Utc>,
    target: Option<&str>,
) -> Result<BTreeMap<String, VerdictSummary>, SinkError> {
    let mut out: BTreeMap<String, VerdictSummary> = BTreeMap::new();
    let slots = sqlx::query(&format!(
        "SELECT v.target_id, sum(v.up)::int8 AS up, sum(v.degraded)::int8 AS degraded, \
           sum(v.down)::int8 AS down, sum(v.maintenance)::int8 AS maintenance \
         FROM verdicts_by_hour v JOIN targets t USING (target_id) \
         WHERE v.hour >= date_trunc('hour', $1) AND {TARGET_FILTER} GROUP BY v.target_id"
    ))
    .bind(from)
    .bind(target)
    .fetch_all(pool)
    .await?;
    for r in slots {
        let v = out.entry(r.get("target_id")).or_default();
        v.slots = [r.get("up"), r.get("degraded"), r.get("down")];
        v.maintenance = r.get("maintenance");
    }
    let states = sqlx::query(&format!(
        "SELECT s.target_id, s.state, s.since, s.cert_warning, i.kind, i.opened_at \
         FROM target_states s JOIN targets t USING (target_id) \
         LEFT JOIN incidents i ON i.incident_id = s.open_incident WHERE {TARGET_FILTER} AND $1::timestamptz IS NOT NULL"
    ))
    .bind(from)
    .bind(target)
    .fetch_all(pool)
    .await?;
    for r in states {
        let v = out.entry(r.get("target_id")).or_default();
        v.state = r.get("state");
        v.state_since = r.get("since");
        v.cert_warning = r.get("cert_warning");
        let kind: Option<String> = r.get("kind");
        let opened: Option<DateTime<Utc>> = r.get("opened_at");
        v.open_incident = kind.zip(opened);
    }
    let incidents = sqlx::query(&format!(
        "SELECT target_id, count(*)::int8 AS n, \
           avg(EXTRACT(EPOCH FROM duration))::float8 AS mttr, \
           avg(EXTRACT(EPOCH FROM opened_at - previous_close))::float8 AS mtbf \
         FROM (SELECT i.target_id, i.opened_at, i.duration, \
                 lag(i.closed_at) OVER (PARTITION BY i.target_id ORDER BY i.opened_at) AS previous_close \
               FROM incidents i JOIN targets t USING (target_id) \
               WHERE i.kind = 'down' AND NOT i.maintenance AND i.opened_at >= $1 \
                 AND {TARGET_FILTER}) x \
         GROUP BY target_id"
    ))
    .bind(from)
    .bind(target)
    .fetch_all(pool)
    .await?;
    for r in incidents {
        let v = out.entry(r.get("target_id")).or_default();
        v.incidents = r.get("n");
        v.mttr_s = r.get("mttr");
        v.mtbf_s = r.get("mtbf");
    }
    Ok(out)
}

/// A duration in seconds, briefly (`-` for none).
fn brief(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), |s| {
        monitor_core::settings::format_duration(Duration::from_secs_f64(s.max(0.0).round()))
    })
}

/// One summary as the table's cells.
fn cells(s: &TargetSummary) -> Vec<String> {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let percent = |u: Option<f64>| u.map_or("-".into(), |u| format!("{u:.2}%"));
    let failures = s
        .failures
        .iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let open = s.open_incident.as_ref().map_or("-".into(), |(kind, at)| {
        format!("{kind} since {}", at.format("%Y-%m-%d %H:%M:%S"))
    });
    let cert = s.tls_cert_not_after.map_or("-".into(), |t| {
        let day = t.format("%Y-%m-%d").to_string();
        if s.cert_warning {
            format!("{day} (warning)")
        } else {
            day
        }
    });
    vec![
        s.url.clone(),
        s.state.clone().unwrap_or_else(|| "-".into()),
        percent(s.verdict_uptime_percent),
        match s.maintenance_slots {
            0 => "-".into(),
            n => format!("{n} slots left out"),
        },
        open,
        s.incidents.to_string(),
        brief(s.mttr_s),
        brief(s.mtbf_s),
        s.checks.to_string(),
        percent(s.uptime_percent),
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
        cert,
    ]
}

/// The summaries as a table for a terminal.
pub fn table(summaries: &[TargetSummary]) -> String {
    let header = [
        "URL",
        "STATE",
        "UPTIME",
        "MAINTENANCE",
        "OPEN INCIDENT",
        "INCIDENTS",
        "MTTR",
        "MTBF",
        "CHECKS",
        "CHECKS UP",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "FAILURES",
        "LAST FAILURE",
        "CERT EXPIRES",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    rows.extend(summaries.iter().map(cells));
    let widths: Vec<usize> = (0..header.len())
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

/// Notifications given up on, per channel, as lines under the table (empty when none).
pub async fn failed_notifications(pool: &PgPool) -> Result<String, SinkError> {
    let failed = crate::notify::outbox::failed_by_channel(pool).await?;
    let mut out = String::new();
    if failed.is_empty() {
        return Ok(out);
    }
    let _ = writeln!(out, "\nFAILED NOTIFICATIONS");
    for f in failed {
        let error = f.last_error.as_deref().unwrap_or("-");
        let _ = writeln!(out, "{}  {}  last error: {error}", f.channel, f.failed);
    }
    Ok(out)
}
