//! The report contract: one JSON object per check, produced by the checker to Kafka and
//! consumed by the sink (and by anyone else reading the topic).
//!
//! The contract is versioned by [`SCHEMA_VERSION`] and described for other languages by
//! `schemas/report.v1.schema.json` at the repository root; a test keeps the two in agreement.
//! Rules for readers: every key listed in the schema's `required` array is present (possibly
//! `null`); keys a reader does not know are ignored, so new optional keys can be added without
//! a version bump. A change that removes or retypes a key bumps the version.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The version of the report contract this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest `error` text a report carries, in characters; longer texts are cut with an ellipsis.
pub const MAX_ERROR_CHARS: usize = 1024;

/// Longest `target_id` and `checker_id`, in characters. Both are keys of database indexes, whose
/// rows PostgreSQL caps at about 2.7 kB: 200 characters (at most 800 bytes of UTF-8) fit with
/// room to spare. The settings refuse longer ids, so a checker never writes one.
pub const MAX_ID_CHARS: usize = 200;

/// Longest `url`, in characters (what browsers and CDNs accept in practice).
pub const MAX_URL_CHARS: usize = 8192;

/// Longest `regexp`, in characters.
pub const MAX_PATTERN_CHARS: usize = 4096;

/// Largest encoded report a reader accepts, in bytes. Real reports are well under 4 KiB; the
/// bound keeps a hostile or corrupted message from costing a reader unbounded memory.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The target answered as expected.
    Up,
    /// The target failed; `failure_class` says why.
    Down,
    /// The checker could not start the check within its slot (one period).
    Missed,
}

impl Status {
    /// The contract's spelling of this status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Missed => "missed",
        }
    }
}

/// Why a check failed. Each class names the stage that failed, so a dashboard can tell a DNS
/// outage from a certificate problem from an application error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Name resolution failed (NXDOMAIN, no address, resolver error).
    Dns,
    /// The TCP connection was actively refused (RST to the SYN).
    ConnectRefused,
    /// The TCP connection was not established within the timeout.
    ConnectTimeout,
    /// The TLS handshake failed: untrusted, expired or wrong-host certificate, protocol error.
    Tls,
    /// The deadline passed after the connection was established.
    Timeout,
    /// The final response's status code is not in the expected set.
    HttpStatus,
    /// The body did not match `regexp`, or matched the negative pattern.
    BodyMismatch,
    /// The body exceeded the read cap where the check needed the whole body.
    BodyTooLarge,
    /// A redirect loop, too many redirects, or an unusable `Location`.
    Redirect,
    /// The peer did not speak HTTP (garbage, malformed response).
    Protocol,
    /// The connection failed mid-exchange (reset, unexpected close).
    Io,
}

impl FailureClass {
    /// Every class, in the contract's order.
    pub const ALL: [FailureClass; 11] = [
        FailureClass::Dns,
        FailureClass::ConnectRefused,
        FailureClass::ConnectTimeout,
        FailureClass::Tls,
        FailureClass::Timeout,
        FailureClass::HttpStatus,
        FailureClass::BodyMismatch,
        FailureClass::BodyTooLarge,
        FailureClass::Redirect,
        FailureClass::Protocol,
        FailureClass::Io,
    ];

    /// The contract's spelling of this class.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Dns => "dns",
            FailureClass::ConnectRefused => "connect_refused",
            FailureClass::ConnectTimeout => "connect_timeout",
            FailureClass::Tls => "tls",
            FailureClass::Timeout => "timeout",
            FailureClass::HttpStatus => "http_status",
            FailureClass::BodyMismatch => "body_mismatch",
            FailureClass::BodyTooLarge => "body_too_large",
            FailureClass::Redirect => "redirect",
            FailureClass::Protocol => "protocol",
            FailureClass::Io => "io",
        }
    }
}

/// Durations of each phase of a check, in milliseconds; `None` for a phase that did not happen
/// (no TLS over plain HTTP, no transfer after a refused connection). With redirects, each phase
/// is the sum over the hops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Name resolution.
    #[serde(deserialize_with = "required")]
    pub dns: Option<f64>,
    /// TCP connect.
    #[serde(deserialize_with = "required")]
    pub connect: Option<f64>,
    /// TLS handshake.
    #[serde(deserialize_with = "required")]
    pub tls: Option<f64>,
    /// From the request written to the first byte of the response.
    #[serde(deserialize_with = "required")]
    pub ttfb: Option<f64>,
    /// Reading the body.
    #[serde(deserialize_with = "required")]
    pub transfer: Option<f64>,
}

/// One check's result: the JSON object that travels through Kafka.
///
/// Field order is the wire order. Optional values are always written (as `null`) and required
/// when read, so a reader can tell a missing key (a broken producer) from an absent value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA_VERSION`] for reports this crate writes.
    pub schema_version: u32,
    /// Unique per check, derived by [`report_id`] from the checker, the target and the
    /// scheduled time.
    pub report_id: Uuid,
    /// Stable id of the target.
    pub target_id: String,
    /// The URL checked (the first one, before redirects).
    pub url: String,
    /// Which checker instance or region produced the report.
    pub checker_id: String,
    /// When the check was due.
    #[serde(with = "rfc3339_micros")]
    pub scheduled_at: DateTime<Utc>,
    /// When the check really started.
    #[serde(with = "rfc3339_micros")]
    pub started_at: DateTime<Utc>,
    /// The verdict.
    pub status: Status,
    /// Why the target is down; `None` when up or missed.
    #[serde(deserialize_with = "required")]
    pub failure_class: Option<FailureClass>,
    /// Human detail, at most [`MAX_ERROR_CHARS`] characters.
    #[serde(deserialize_with = "required")]
    pub error: Option<String>,
    /// Status code of the final response.
    #[serde(deserialize_with = "required")]
    pub http_status: Option<u16>,
    /// Total duration of the check, in milliseconds.
    #[serde(deserialize_with = "required")]
    pub response_time_ms: Option<f64>,
    /// Per-phase durations, in milliseconds.
    pub timings_ms: Timings,
    /// Bytes of body read (at most the target's body cap).
    #[serde(deserialize_with = "required")]
    pub body_bytes: Option<u64>,
    /// The configured body pattern.
    #[serde(deserialize_with = "required")]
    pub regexp: Option<String>,
    /// Whether the pattern matched; `None` when there is no pattern or no body was read.
    #[serde(deserialize_with = "required")]
    pub regexp_matched: Option<bool>,
    /// Expiry of the server's leaf certificate, for HTTPS.
    #[serde(
        deserialize_with = "required_rfc3339",
        serialize_with = "rfc3339_micros_opt"
    )]
    pub tls_cert_not_after: Option<DateTime<Utc>>,
    /// The target's timeout, in seconds.
    pub timeout_s: f64,
    /// The target's period, in seconds.
    pub period_s: f64,
    /// Whether the body read stopped at the cap before the end of the body (optional key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_truncated: Option<bool>,
    /// The "check now" request this report answers (optional key): such a report is stored
    /// apart and never counted in verdicts or uptime. Absent for scheduled checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_request: Option<Uuid>,
}

/// Why bytes read from the topic are not a usable report. The sink stores the message as a dead
/// letter with this text.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The message is larger than [`MAX_REPORT_BYTES`].
    #[error("report is {size} bytes, larger than the {max}-byte limit")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("not a JSON object (found {0})")]
    NotObject(&'static str),
    /// `schema_version` is missing or not a non-negative integer.
    #[error("schema_version is missing or not an integer")]
    NoVersion,
    /// A version this reader does not understand.
    #[error("unsupported schema_version {found} (this reader understands {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// A required key is missing or has the wrong type.
    #[error("invalid report: {0}")]
    Invalid(String),
    /// Well-typed, but the values contradict each other.
    #[error("inconsistent report: {0}")]
    Inconsistent(String),
}

impl Report {
    /// Decodes and checks one message. Unknown keys are ignored; everything else that is wrong
    /// comes back as a [`ReportError`] that says what.
    pub fn from_json(bytes: &[u8]) -> Result<Report, ReportError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge {
                size: bytes.len(),
                max: MAX_REPORT_BYTES,
            });
        }
        // Fast path: a well-formed report parses straight into the type.
        if let Ok(report) = serde_json::from_slice::<Report>(bytes) {
            if report.schema_version != SCHEMA_VERSION {
                return Err(ReportError::UnsupportedVersion {
                    found: u64::from(report.schema_version),
                });
            }
            report.check_consistency()?;
            return Ok(report);
        }
        // Slow path: find out what is wrong, most basic problem first.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ReportError::NotJson(e.to_string()))?;
        let object = match &value {
            serde_json::Value::Object(map) => map,
            other => return Err(ReportError::NotObject(json_kind(other))),
        };
        let version = object
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or(ReportError::NoVersion)?;
        if version != u64::from(SCHEMA_VERSION) {
            return Err(ReportError::UnsupportedVersion { found: version });
        }
        let report: Report =
            serde_json::from_value(value).map_err(|e| ReportError::Invalid(e.to_string()))?;
        report.check_consistency()?;
        Ok(report)
    }

    /// Encodes the report as one line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing this type cannot fail: every field is a plain value and map keys are
        // strings. An empty vector would only appear if serde_json broke that promise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The rules the types alone cannot express.
    pub fn check_consistency(&self) -> Result<(), ReportError> {
        let bad = |why: String| Err(ReportError::Inconsistent(why));
        match (self.status, self.failure_class) {
            (Status::Up, Some(class)) => {
                return bad(format!(
                    "status is \"up\" but failure_class is \"{}\"",
                    class.as_str()
                ))
            }
            (Status::Down, None) => {
                return bad("status is \"down\" but failure_class is null".into())
            }
            _ => {}
        }
        if self.target_id.is_empty() {
            return bad("target_id is empty".into());
        }
        for (name, text, max) in [
            ("target_id", Some(self.target_id.as_str()), MAX_ID_CHARS),
            ("checker_id", Some(self.checker_id.as_str()), MAX_ID_CHARS),
            ("url", Some(self.url.as_str()), MAX_URL_CHARS),
            ("regexp", self.regexp.as_deref(), MAX_PATTERN_CHARS),
        ] {
            let chars = text.map_or(0, |t| t.chars().count());
            if chars > max {
                return bad(format!("{name} is {chars} characters, more than {max}"));
            }
        }
        if let Some(error) = &self.error {
            let chars = error.chars().count();
            if chars > MAX_ERROR_CHARS {
                return bad(format!(
                    "error is {chars} characters, more than {MAX_ERROR_CHARS}"
                ));
            }
        }
        if !(self.timeout_s.is_finite() && self.period_s.is_finite()) {
            return bad("timeout_s and period_s must be finite numbers".into());
        }
        Ok(())
    }

    /// Sets `error`, cut to [`MAX_ERROR_CHARS`] characters.
    pub fn set_error(&mut self, text: impl Into<String>) {
        self.error = Some(bound_error(text.into()));
    }
}

/// Cuts an error text to [`MAX_ERROR_CHARS`] characters, ending a cut text with `…`.
pub fn bound_error(text: String) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_ERROR_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Truncates a timestamp to the contract's precision (microseconds), so that a report read back
/// equals the report written.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The report id of the check of `target_id` scheduled at `scheduled_at`, made by the checker
/// `checker_id`.
///
/// A UUID in the version 7 layout: the first 48 bits are the scheduled time in Unix
/// milliseconds, the rest a SHA-256 of the checker id, the target id and the scheduled time in
/// microseconds. So it is deterministic (a re-sent report carries the same id, and the sink
/// stores it once), distinct per checker (two regions checking the same target in the same
/// slot both keep their result) and time-ordered (new rows land at the right edge of the
/// database's key index). Each id is hashed with its length in front, so no pair of ids can
/// collide with another by moving characters between them.
pub fn report_id(checker_id: &str, target_id: &str, scheduled_at: DateTime<Utc>) -> Uuid {
    let micros = to_micros(scheduled_at).timestamp_micros();
    let mut hasher = Sha256::new();
    for id in [checker_id, target_id] {
        hasher.update((id.len() as u64).to_be_bytes());
        hasher.update(id.as_bytes());
    }
    hasher.update(micros.to_be_bytes());
    let digest = hasher.finalize();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(micros.div_euclid(1000)).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Makes an `Option` field required: present, possibly `null`. (serde treats a missing
/// `Option` field as `None` unless the field has its own deserializer.)
fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

fn required_rfc3339<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<DateTime<Utc>>::deserialize(deserializer)
}

fn rfc3339_micros_opt<S>(value: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
{
    match value {
        Some(at) => rfc3339_micros::serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// RFC 3339 in UTC with exactly six fractional digits: `2026-11-24T21:03:00.123456Z`.
mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Report {
        let scheduled = Utc
            .with_ymd_and_hms(2026, 11, 24, 21, 3, 0)
            .single()
            .expect("valid date");
        Report {
            schema_version: SCHEMA_VERSION,
            report_id: report_id("eu-1", "t1", scheduled),
            target_id: "t1".into(),
            url: "https://example.com/".into(),
            checker_id: "eu-1".into(),
            scheduled_at: scheduled,
            started_at: scheduled + chrono::Duration::microseconds(1234),
            status: Status::Down,
            failure_class: Some(FailureClass::HttpStatus),
            error: Some("status 503, expected 200-299".into()),
            http_status: Some(503),
            response_time_ms: Some(12.5),
            timings_ms: Timings {
                dns: Some(0.4),
                connect: Some(1.0),
                tls: Some(5.5),
                ttfb: Some(4.0),
                transfer: Some(1.6),
            },
            body_bytes: Some(120),
            regexp: None,
            regexp_matched: None,
            tls_cert_not_after: Some(scheduled + chrono::Duration::days(30)),
            timeout_s: 10.0,
            period_s: 60.0,
            body_truncated: Some(false),
            check_request: None,
        }
    }

    #[test]
    fn a_report_survives_a_round_trip_through_json() {
        let report = sample();
        let back = Report::from_json(&report.to_json()).expect("decodes");
        assert_eq!(back, report);
    }

    #[test]
    fn timestamps_are_written_in_utc_with_microseconds() {
        let json: serde_json::Value =
            serde_json::from_slice(&sample().to_json()).expect("valid json");
        assert_eq!(json["scheduled_at"], "2026-11-24T21:03:00.000000Z");
        assert_eq!(json["started_at"], "2026-11-24T21:03:00.001234Z");
        assert_eq!(json["tls_cert_not_after"], "2026-12-24T21:03:00.000000Z");
    }

    #[test]
    fn report_ids_are_deterministic_distinct_and_time_ordered() {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
        let t1 = t0 + chrono::Duration::seconds(60);
        assert_eq!(report_id("c", "a", t0), report_id("c", "a", t0));
        assert_ne!(report_id("c", "a", t0), report_id("c", "b", t0));
        assert_ne!(report_id("c", "a", t0), report_id("c", "a", t1));
        assert!(report_id("c", "z", t0) < report_id("c", "a", t1));
        assert_eq!(report_id("c", "a", t0).get_version_num(), 7);
    }

    #[test]
    fn two_checkers_get_distinct_ids_for_the_same_slot() {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid");
        assert_ne!(report_id("eu", "a", t0), report_id("us", "a", t0));
        assert_ne!(report_id("ab", "c", t0), report_id("a", "bc", t0));
    }

    #[test]
    fn a_missing_optional_key_is_rejected_but_null_is_accepted() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&sample().to_json()).expect("valid json");
        json["error"] = serde_json::Value::Null;
        json["failure_class"] = serde_json::Value::Null;
        json["status"] = "up".into();
        let bytes = serde_json::to_vec(&json).expect("encodes");
        assert!(Report::from_json(&bytes).is_ok());
        json.as_object_mut().expect("object").remove("error");
        let bytes = serde_json::to_vec(&json).expect("encodes");
        let err = Report::from_json(&bytes).expect_err("missing key");
        assert!(err.to_string().contains("missing field `error`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let mut json: serde_json::Value =
            serde_json::from_slice(&sample().to_json()).expect("valid json");
        json["future_key"] = serde_json::json!({"anything": [1, 2]});
        let bytes = serde_json::to_vec(&json).expect("encodes");
        assert_eq!(Report::from_json(&bytes).expect("decodes"), sample());
    }

    #[test]
    fn bad_messages_are_rejected_with_a_reason() {
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "not JSON"),
            (b"[1,2]", "not a JSON object (found an array)"),
            (b"{}", "schema_version is missing"),
            (b"{\"schema_version\": 2}", "unsupported schema_version 2"),
            (b"{\"schema_version\": 1}", "invalid report: missing field"),
        ];
        for (bytes, expected) in cases {
            let err = Report::from_json(bytes).expect_err("must fail");
            assert!(err.to_string().contains(expected), "{err} vs {expected}");
        }
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(matches!(
            Report::from_json(&huge),
            Err(ReportError::TooLarge { .. })
        ));
    }

    #[test]
    fn contradictory_status_and_failure_class_are_rejected() {
        let mut report = sample();
        report.status = Status::Up;
        let err = Report::from_json(&report.to_json()).expect_err("inconsistent");
        assert!(
            err.to_string().contains("\"up\" but failure_class"),
            "{err}"
        );
        report.status = Status::Down;
        report.failure_class = None;
        assert!(Report::from_json(&report.to_json()).is_err());
    }

    #[test]
    fn long_errors_are_cut_to_the_bound() {
        let mut report = sample();
        report.set_error("é".repeat(5000));
        let error = report.error.clone().expect("set");
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS);
        assert!(error.ends_with('…'));
        assert!(Report::from_json(&report.to_json()).is_ok());
    }

    #[test]
    fn ids_urls_and_patterns_longer_than_their_bounds_are_rejected_with_the_field_named() {
        type Mutation = fn(&mut Report);
        let cases: [(&str, Mutation); 4] = [
            ("target_id is 201", |r| r.target_id = "t".repeat(201)),
            ("checker_id is 201", |r| r.checker_id = "é".repeat(201)),
            ("url is 8193", |r| r.url = "u".repeat(MAX_URL_CHARS + 1)),
            ("regexp is 4097", |r| {
                r.regexp = Some("x".repeat(MAX_PATTERN_CHARS + 1))
            }),
        ];
        for (expected, mutate) in cases {
            let mut report = sample();
            mutate(&mut report);
            let err = Report::from_json(&report.to_json()).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} vs {expected}");
        }
        let mut at_the_bound = sample();
        at_the_bound.target_id = "é".repeat(MAX_ID_CHARS);
        assert!(Report::from_json(&at_the_bound.to_json()).is_ok());
    }

    #[test]
    fn failure_classes_are_spelled_as_the_contract_says() {
        for class in FailureClass::ALL {
            let json = serde_json::to_value(class).expect("encodes");
            assert_eq!(json, class.as_str());
        }
    }
}
