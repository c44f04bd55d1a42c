//! The reports the checker writes besides a check's own report (which the probe writes), and
//! their way out when no broker is wanted.
//!
//! The report itself is the contract in [`monitor_core::report`]; here: a `missed` report for a
//! slot that could not start (the scheduler's and the start-up backfill's), and the printing
//! of reports as JSON lines on standard output (`--stdout`).

use std::io::Write;

use chrono::{DateTime, Utc};
use monitor_core::report::{report_id, to_micros, Report, Status, Timings, SCHEMA_VERSION};
use monitor_core::settings::TargetSettings;
use tokio::sync::mpsc;

/// A report for a slot the checker could not start within one period.
pub fn missed_report(
    target: &TargetSettings,
    checker_id: &str,
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Report {
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id(checker_id, &target.id, scheduled_at),
        target_id: target.id.clone(),
        url: target.url.to_string(),
        checker_id: checker_id.to_string(),
        scheduled_at: to_micros(scheduled_at),
        started_at: to_micros(now),
        status: Status::Missed,
        failure_class: None,
        error: None,
        http_status: None,
        response_time_ms: None,
        timings_ms: Timings::default(),
        body_bytes: None,
        regexp: target.regexp.as_ref().map(|p| p.as_str().to_string()),
        regexp_matched: None,
        tls_cert_not_after: None,
        timeout_s: target.timeout.as_secs_f64(),
        period_s: target.period.as_secs_f64(),
        body_truncated: None,
        check_request: None,
    };
    let late = (now - scheduled_at).to_std().unwrap_or_default();
    report.set_error(format!(
        "check not started within its period: {:.3} s late (checker overloaded, paused or too few in-flight slots)",
        late.as_secs_f64()
    ));
    report
}

/// Prints every report of `reports` as one JSON line on standard output, until the channel
/// closes or the reader goes away.
pub async fn print_lines(mut reports: mpsc::Receiver<Report>) {
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
