//! A Kafka message becomes a report or a dead letter of the store's [`Batch`]. Everything a
//! producer can get wrong ends here as a reason, never as an error that stops the sink.
//!
//! Whatever its bytes, a message must end up stored: so text bound for the database is made
//! storable here (PostgreSQL `text` cannot hold NUL, see [`crate::store::text`]), a dead
//! letter's reason is bounded and cleaned the same way (it may quote the message), and a
//! report whose dates would need an absurd table partition is refused with the field named.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use monitor_core::report::Report;

use crate::store::text::{reason, storable_text};
use crate::store::Batch;

/// How far ahead of the sink's clock `scheduled_at` may be: a checker's clock a little ahead
/// is tolerated, a report from next month is a broken clock (and would need a partition of its
/// own).
pub const MAX_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// How old `scheduled_at` may be when `sink.retention` is not set. With a retention, the
/// retention is the bound. Either way the bound is taken back to the start of its day: the
/// retention drops whole days, and a report of a day it still keeps is stored (with a short
/// retention, "1h" say, the reports of the hours before are not refused while their day is
/// kept). So the number of day partitions reports can create is bounded, and no report is
/// refused that its day partition would keep.
pub const MAX_AGE_WITHOUT_RETENTION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Years `started_at` may fall in: outside, the clock of the checker that wrote it is broken.
const STARTED_YEARS: std::ops::RangeInclusive<i32> = 2000..=2200;

/// Years a certificate's expiry may fall in: what X.509 can express (RFC 5280 uses
/// 9999-12-31T23:59:59Z for "no expiry"), all within what PostgreSQL stores.
const CERT_YEARS: std::ops::RangeInclusive<i32> = 0..=9999;

/// The span of `scheduled_at` a stored report may have, relative to the time it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Oldest accepted age.
    pub max_age: Duration,
    /// Furthest accepted lead over the sink's clock.
    pub max_ahead: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window::from_retention(None)
    }
}

impl Window {
    /// The window for a sink with this `sink.retention`.
    pub fn from_retention(retention: Option<Duration>) -> Window {
        Window {
            max_age: retention.unwrap_or(MAX_AGE_WITHOUT_RETENTION),
            max_ahead: MAX_AHEAD,
        }
    }

    fn check(&self, scheduled_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
        let age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        let ahead = chrono::Duration::from_std(self.max_ahead).unwrap_or(chrono::Duration::MAX);
        let oldest = now
            .checked_sub_signed(age)
            .and_then(|t| t.date_naive().and_hms_opt(0, 0, 0))
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc());
        let latest = now
            .checked_add_signed(ahead)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if scheduled_at < oldest {
            return Err(format!(
                "scheduled_at {scheduled_at} is before {oldest}, the start of the oldest day kept ({} s back: sink.retention, or {} s without one): the checker's clock is wrong or the report is too old to keep",
                self.max_age.as_secs(),
                MAX_AGE_WITHOUT_RETENTION.as_secs()
            ));
        }
        if scheduled_at > latest {
            return Err(format!(
                "scheduled_at {scheduled_at} is more than {} s ahead of the sink's clock: the checker's clock is wrong",
                self.max_ahead.as_secs()
            ));
        }
        Ok(())
    }
}

/// Decodes the message at `offset` into `batch`: a report, or a dead letter saying why not.
pub fn push(
    batch: &mut Batch,
    window: &Window,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
) {
    match decode(value.as_deref(), window, Utc::now()) {
        Ok(report) => batch.push_report(offset, key, value, report),
        Err(error) => batch.push_dead_letter(offset, key, value, error),
    }
}

/// A message's payload as a storable report, or why not. The reason is already fit to store
/// (see [`reason`]).
pub fn decode(value: Option<&[u8]>, window: &Window, now: DateTime<Utc>) -> Result<Report, String> {
    let bytes = value.ok_or_else(|| "message has no value".to_string())?;
    let mut report = Report::from_json(bytes).map_err(|e| reason(&e.to_string()))?;
    storable(&report, window, now).map_err(|e| reason(&e))?;
    clean_report(&mut report);
    Ok(report)
}

/// Makes every text field storable.
fn clean_report(report: &mut Report) {
    for text in [
        &mut report.target_id,
        &mut report.url,
        &mut report.checker_id,
    ] {
        if let Cow::Owned(clean) = storable_text(text) {
            *text = clean;
        }
    }
    for text in [report.error.as_mut(), report.regexp.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Cow::Owned(clean) = storable_text(text) {
            *text = clean;
        }
    }
}

/// What PostgreSQL would refuse, or what would need an absurd table partition, found before it
/// can fail a whole batch.
fn storable(report: &Report, window: &Window, now: DateTime<Utc>) -> Result<(), String> {
    window.check(report.scheduled_at, now)?;
    check_year("started_at", report.started_at, &STARTED_YEARS)?;
    if let Some(at) = report.tls_cert_not_after {
        check_year("tls_cert_not_after", at, &CERT_YEARS)?;
    }
    Ok(())
}

fn check_year(
    name: &str,
    at: DateTime<Utc>,
    years: &std::ops::RangeInclusive<i32>,
) -> Result<(), String> {
    if years.contains(&at.year()) {
        Ok(())
    } else {
        Err(format!(
            "{name} {at} is outside the years {}-{}",
            years.start(),
            years.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> String {
        let now = Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        format!(
            r#"{{"schema_version":1,"report_id":"019ab7f2-6b40-7c1e-9a51-1f0c8e2d4b77",
            "target_id":"a\u0000b","url":"http://x","checker_id":"c",
            "scheduled_at":"{now}","started_at":"{now}",
            "status":"up","failure_class":null,"error":null,"http_status":200,
            "response_time_ms":1.0,"timings_ms":{{"dns":null,"connect":null,"tls":null,"ttfb":null,"transfer":null}},
            "body_bytes":0,"regexp":null,"regexp_matched":null,"tls_cert_not_after":"9999-12-31T23:59:59Z",
            "timeout_s":1.0,"period_s":2.0}}"#
        )
    }

    fn run(json: &str) -> Result<Report, String> {
        decode(Some(json.as_bytes()), &Window::default(), Utc::now())
    }

    #[test]
    fn an_empty_message_is_a_dead_letter() {
        let err = decode(None, &Window::default(), Utc::now()).err();
        assert_eq!(err.as_deref(), Some("message has no value"));
    }

    #[test]
    fn nul_is_stored_as_a_replacement_character_and_no_expiry_certificates_are_kept() {
        let report = run(&json()).expect("decodes");
        assert_eq!(report.target_id, "a\u{FFFD}b");
        assert!(report.tls_cert_not_after.is_some());
    }

    #[test]
    fn scheduled_times_outside_the_window_are_refused_with_the_field_named() {
        let ok = json();
        let year = Utc::now().year();
        let ancient = ok.replacen(
            &format!("\"scheduled_at\":\"{year}"),
            "\"scheduled_at\":\"1970",
            1,
        );
        let err = run(&ancient).err().unwrap_or_default();
        assert!(err.starts_with("scheduled_at 1970"), "{err}");
        let future = ok.replacen(
            &format!("\"scheduled_at\":\"{year}"),
            "\"scheduled_at\":\"2999",
            1,
        );
        let err = run(&future).err().unwrap_or_default();
        assert!(err.contains("ahead of the sink's clock"), "{err}");
    }

    #[test]
    fn a_short_retention_keeps_the_reports_of_every_day_it_keeps() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).expect("date").to_utc();
        let now = at("2026-11-28T12:00:00Z");
        let window = Window::from_retention(Some(Duration::from_secs(3600)));
        let report = |scheduled: &str| {
            json().replacen(
                "\"scheduled_at\":\"",
                &format!("\"scheduled_at\":\"{scheduled}\",\"x\":\""),
                1,
            )
        };
        let decode_at = |scheduled: &str| decode(Some(report(scheduled).as_bytes()), &window, now);
        // Two hours old, but its day is kept until an hour after it ends.
        assert!(decode_at("2026-11-28T10:00:00Z").is_ok());
        assert!(decode_at("2026-11-28T00:00:00Z").is_ok());
        // Yesterday ended more than an hour ago: dropped, so refused.
        let err = decode_at("2026-11-27T23:59:59Z").err().unwrap_or_default();
        assert!(
            err.starts_with(
                "scheduled_at 2026-11-27 23:59:59 UTC is before 2026-11-28 00:00:00 UTC"
            ),
            "{err}"
        );
    }
}
