//! A Kafka message becomes a report or a dead letter. Everything a producer can get wrong ends
//! here as a reason, never as an error that stops the sink.

use chrono::{DateTime, Datelike, Utc};
use monitor_core::report::Report;

/// Earliest and latest year a stored report may be scheduled in: outside, the clock of the
/// checker that wrote it is broken, and the report would need an absurd table partition.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=2200;

/// A message's payload as a storable report, or why not.
pub fn decode(value: Option<&[u8]>) -> Result<Report, String> {
    let bytes = value.ok_or_else(|| "message has no value".to_string())?;
    let report = Report::from_json(bytes).map_err(|e| e.to_string())?;
    storable(&report)?;
    Ok(report)
}

/// What PostgreSQL would refuse, found before it can fail a whole batch.
fn storable(report: &Report) -> Result<(), String> {
    for (name, text) in [
        ("target_id", Some(report.target_id.as_str())),
        ("url", Some(report.url.as_str())),
        ("checker_id", Some(report.checker_id.as_str())),
        ("error", report.error.as_deref()),
        ("regexp", report.regexp.as_deref()),
    ] {
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(format!(
                "{name} contains a NUL character, which PostgreSQL text cannot hold"
            ));
        }
    }
    for (name, at) in [
        ("scheduled_at", Some(report.scheduled_at)),
        ("started_at", Some(report.started_at)),
        ("tls_cert_not_after", report.tls_cert_not_after),
    ] {
        if let Some(at) = at {
            check_year(name, at)?;
        }
    }
    Ok(())
}

fn check_year(name: &str, at: DateTime<Utc>) -> Result<(), String> {
    if YEARS.contains(&at.year()) {
        Ok(())
    } else {
        Err(format!(
            "{name} {at} is outside the years {}-{}",
            YEARS.start(),
            YEARS.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_message_is_a_dead_letter() {
        assert_eq!(decode(None).err().as_deref(), Some("message has no value"));
    }

    #[test]
    fn text_postgres_cannot_hold_is_refused_before_it_reaches_the_database() {
        let json = r#"{"schema_version":1,"report_id":"019ab7f2-6b40-7c1e-9a51-1f0c8e2d4b77",
            "target_id":"a\u0000b","url":"http://x","checker_id":"c",
            "scheduled_at":"2026-11-24T21:03:00.000000Z","started_at":"2026-11-24T21:03:00.000000Z",
            "status":"up","failure_class":null,"error":null,"http_status":200,
            "response_time_ms":1.0,"timings_ms":{"dns":null,"connect":null,"tls":null,"ttfb":null,"transfer":null},
            "body_bytes":0,"regexp":null,"regexp_matched":null,"tls_cert_not_after":null,
            "timeout_s":1.0,"period_s":2.0}"#;
        let err = decode(Some(json.as_bytes())).err().unwrap_or_default();
        assert!(err.contains("target_id contains a NUL"), "{err}");
        let fixed = json.replace("a\\u0000b", "ab");
        assert!(decode(Some(fixed.as_bytes())).is_ok());
        let ancient = fixed.replace("\"scheduled_at\":\"2026", "\"scheduled_at\":\"1970");
        let err = decode(Some(ancient.as_bytes())).err().unwrap_or_default();
        assert!(err.contains("scheduled_at 1970"), "{err}");
    }
}
