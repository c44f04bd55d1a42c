//! How a check is judged: what it learned ([`Outcome`]) and how it failed, if it did, held
//! against the target's expectations (status, body patterns) and written as a [`Report`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::{
    report_id, to_micros, FailureClass, Report, Status, Timings, SCHEMA_VERSION,
};
use monitor_core::settings::TargetSettings;

use super::outcome::{Failure, Outcome};

/// When a check ran: its slot, its start and how long it took.
pub(super) struct Times {
    pub scheduled_at: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub total: Duration,
}

/// Whether each of the target's body patterns matched, when the body was read.
struct Matches {
    regexp: Option<bool>,
    negative: Option<bool>,
}

impl Matches {
    fn of(target: &TargetSettings, out: &Outcome) -> Matches {
        let text = out.body_read.then_some(out.body.as_slice());
        let matched = |p: Option<&monitor_core::settings::Pattern>| match (p, text) {
            (Some(p), Some(t)) => Some(p.regex().is_match(t)),
            _ => None,
        };
        Matches {
            regexp: matched(target.regexp.as_ref()),
            negative: matched(target.negative_regexp.as_ref()),
        }
    }
}

/// The report of a check that ended with `failure` (a hop's), or judged on what it learned.
pub(super) fn report(
    checker_id: &str,
    target: &TargetSettings,
    times: Times,
    out: Outcome,
    failure: Option<Failure>,
) -> Report {
    let matches = Matches::of(target, &out);
    let failure = failure.or_else(|| judge(target, &out, &matches));
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id(checker_id, &target.id, times.scheduled_at),
        target_id: target.id.clone(),
        url: target.url.to_string(),
        checker_id: checker_id.to_string(),
        scheduled_at: to_micros(times.scheduled_at),
        started_at: to_micros(times.started_at),
        status: if failure.is_some() {
            Status::Down
        } else {
            Status::Up
        },
        failure_class: failure.as_ref().map(|f| f.0),
        error: None,
        http_status: out.http_status,
        response_time_ms: Some(times.total.as_secs_f64() * 1000.0),
        timings_ms: Timings {
            dns: out.dns,
            connect: out.connect,
            tls: out.tls,
            ttfb: out.ttfb,
            transfer: out.transfer,
        },
        body_bytes: out.body_read.then_some(out.body_len),
        regexp: target.regexp.as_ref().map(|p| p.as_str().to_string()),
        regexp_matched: matches.regexp,
        tls_cert_not_after: out.cert_not_after.map(to_micros),
        timeout_s: target.timeout.as_secs_f64(),
        period_s: target.period.as_secs_f64(),
        body_truncated: out.body_read.then_some(out.truncated),
        check_request: None,
    };
    if let Some((_, text)) = failure {
        report.set_error(text);
    }
    report
}

/// How a check that got a response failed the target's expectations, if it did: its status,
/// then its body patterns.
fn judge(target: &TargetSettings, out: &Outcome, matches: &Matches) -> Option<Failure> {
    let cap = target.body_limit;
    let status = out.http_status?;
    if !target.expected_status.contains(status) {
        return Some((
            FailureClass::HttpStatus,
            format!("status {status}, expected {}", target.expected_status),
        ));
    }
    if matches.regexp == Some(false) {
        let pattern = target
            .regexp
            .as_ref()
            .map(|p| p.as_str())
            .unwrap_or_default();
        return Some(if out.truncated {
            (
                FailureClass::BodyTooLarge,
                format!("regexp {pattern:?} not found in the first {cap} bytes, and the body is larger than the {cap}-byte cap"),
            )
        } else {
            (
                FailureClass::BodyMismatch,
                format!(
                    "regexp {pattern:?} not found in the body ({} bytes)",
                    out.body_len
                ),
            )
        });
    }
    let p = target.negative_regexp.as_ref()?;
    if matches.negative == Some(true) {
        return Some((
            FailureClass::BodyMismatch,
            format!("negative_regexp {:?} found in the body", p.as_str()),
        ));
    }
    out.truncated.then(|| {
        (
            FailureClass::BodyTooLarge,
            format!(
                "the body is larger than the {cap}-byte cap: negative_regexp {:?} cannot be ruled out",
                p.as_str()
            ),
        )
    })
}
