//! Keeps the Rust report type and the committed JSON Schema in agreement: the same keys, the
//! same required set, the same enums, and the same verdict on valid and invalid reports.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use monitor_core::report::{
    report_id, FailureClass, Report, Status, Timings, MAX_ERROR_CHARS, MAX_ID_CHARS,
    MAX_PATTERN_CHARS, MAX_URL_CHARS, SCHEMA_VERSION,
};
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../../../schemas/report.v1.schema.json");

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema file is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema is a valid JSON Schema")
}

fn report(status: Status, class: Option<FailureClass>) -> Report {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
        .single()
        .expect("date");
    Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id("checker-a", "target-1", at),
        target_id: "target-1".into(),
        url: "https://example.com/".into(),
        checker_id: "checker-a".into(),
        scheduled_at: at,
        started_at: at + chrono::Duration::microseconds(250),
        status,
        failure_class: class,
        error: class.map(|c| format!("failed: {}", c.as_str())),
        http_status: Some(200),
        response_time_ms: Some(42.5),
        timings_ms: Timings {
            dns: Some(1.0),
            connect: Some(2.0),
            tls: None,
            ttfb: Some(30.0),
            transfer: Some(9.5),
        },
        body_bytes: Some(1024),
        regexp: Some("ok".into()),
        regexp_matched: Some(true),
        tls_cert_not_after: Some(at + chrono::Duration::days(90)),
        timeout_s: 10.0,
        period_s: 60.0,
        body_truncated: Some(false),
        // Every key written: a report answering a "check now" request.
        check_request: Some(report_id("checker-a", "request", at)),
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[test]
fn the_schema_lists_exactly_the_keys_the_type_writes() {
    let schema = schema();
    let written = serde_json::to_value(report(Status::Up, None)).expect("encodes");
    assert_eq!(keys(&schema["properties"]), keys(&written));
    assert_eq!(
        keys(&schema["properties"]["timings_ms"]["properties"]),
        keys(&written["timings_ms"])
    );
    assert_eq!(
        strings(&schema["properties"]["timings_ms"]["required"]),
        keys(&written["timings_ms"])
    );
}

#[test]
fn the_schemas_required_keys_are_exactly_the_keys_a_reader_requires() {
    let schema = schema();
    let required = strings(&schema["required"]);
    let full = serde_json::to_value(report(Status::Up, None)).expect("encodes");
    for key in keys(&full) {
        let mut partial = full.clone();
        partial.as_object_mut().expect("object").remove(&key);
        let bytes = serde_json::to_vec(&partial).expect("encodes");
        let rust_requires = Report::from_json(&bytes).is_err();
        assert_eq!(
            rust_requires,
            required.contains(&key),
            "key {key:?}: Rust requires it = {rust_requires}, schema requires it = {}",
            required.contains(&key)
        );
    }
}

#[test]
fn the_schemas_enums_are_the_types_enums() {
    let schema = schema();
    let classes: BTreeSet<String> = FailureClass::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(
        strings(&schema["properties"]["failure_class"]["enum"]),
        classes
    );
    let statuses: BTreeSet<String> = [Status::Up, Status::Down, Status::Missed]
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(strings(&schema["properties"]["status"]["enum"]), statuses);
    assert_eq!(
        schema["properties"]["schema_version"]["const"],
        json!(SCHEMA_VERSION)
    );
}

#[test]
fn the_schemas_length_bounds_are_the_types_bounds() {
    let schema = schema();
    for (key, bound) in [
        ("target_id", MAX_ID_CHARS),
        ("checker_id", MAX_ID_CHARS),
        ("url", MAX_URL_CHARS),
        ("regexp", MAX_PATTERN_CHARS),
        ("error", MAX_ERROR_CHARS),
    ] {
        assert_eq!(
            schema["properties"][key]["maxLength"],
            json!(bound),
            "maxLength of {key}"
        );
    }
}

#[test]
fn every_report_the_type_writes_is_valid_under_the_schema() {
    let validator = validator();
    let mut reports = vec![report(Status::Up, None), report(Status::Missed, None)];
    reports.extend(FailureClass::ALL.map(|c| report(Status::Down, Some(c))));
    let mut sparse = report(Status::Down, Some(FailureClass::Dns));
    sparse.http_status = None;
    sparse.response_time_ms = None;
    sparse.timings_ms = Timings::default();
    sparse.body_bytes = None;
    sparse.regexp = None;
    sparse.regexp_matched = None;
    sparse.tls_cert_not_after = None;
    sparse.body_truncated = None;
    reports.push(sparse);
    for r in reports {
        let value = serde_json::to_value(&r).expect("encodes");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
}

/// A change made to a valid report.
type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn the_schema_and_the_type_agree_on_what_is_invalid() {
    let validator = validator();
    let base =
        serde_json::to_value(report(Status::Down, Some(FailureClass::Tls))).expect("encodes");
    let cases: Vec<(&str, Mutation, bool)> = vec![
        ("unchanged", Box::new(|_| {}), true),
        (
            "unknown extra key",
            Box::new(|v| v["shiny_new_key"] = json!(1)),
            true,
        ),
        ("null error", Box::new(|v| v["error"] = Value::Null), true),
        (
            "wrong version",
            Box::new(|v| v["schema_version"] = json!(2)),
            false,
        ),
        (
            "unknown status",
            Box::new(|v| v["status"] = json!("sideways")),
            false,
        ),
        (
            "unknown class",
            Box::new(|v| v["failure_class"] = json!("gremlins")),
            false,
        ),
        (
            "up with a class",
            Box::new(|v| v["status"] = json!("up")),
            false,
        ),
        (
            "down without a class",
            Box::new(|v| v["failure_class"] = Value::Null),
            false,
        ),
        (
            "status code as text",
            Box::new(|v| v["http_status"] = json!("200")),
            false,
        ),
        (
            "report id not a uuid",
            Box::new(|v| v["report_id"] = json!("abc")),
            false,
        ),
        (
            "time not a date",
            Box::new(|v| v["scheduled_at"] = json!("yesterday")),
            false,
        ),
        (
            "timeout as text",
            Box::new(|v| v["timeout_s"] = json!("10")),
            false,
        ),
        (
            "timings without a phase",
            Box::new(|v| {
                v["timings_ms"]
                    .as_object_mut()
                    .expect("object")
                    .remove("tls");
            }),
            false,
        ),
        (
            "error too long",
            Box::new(|v| v["error"] = json!("x".repeat(1025))),
            false,
        ),
        (
            "empty target id",
            Box::new(|v| v["target_id"] = json!("")),
            false,
        ),
        (
            "target id at the bound",
            Box::new(|v| v["target_id"] = json!("é".repeat(MAX_ID_CHARS))),
            true,
        ),
        (
            "target id too long",
            Box::new(|v| v["target_id"] = json!("t".repeat(MAX_ID_CHARS + 1))),
            false,
        ),
        (
            "checker id too long",
            Box::new(|v| v["checker_id"] = json!("c".repeat(MAX_ID_CHARS + 1))),
            false,
        ),
        (
            "url too long",
            Box::new(|v| v["url"] = json!("u".repeat(MAX_URL_CHARS + 1))),
            false,
        ),
        (
            "regexp too long",
            Box::new(|v| v["regexp"] = json!("r".repeat(MAX_PATTERN_CHARS + 1))),
            false,
        ),
    ];
    for (name, mutate, valid) in cases {
        let mut value = base.clone();
        mutate(&mut value);
        let schema_ok = validator.is_valid(&value);
        let rust_ok = Report::from_json(&serde_json::to_vec(&value).expect("encodes")).is_ok();
        assert_eq!(schema_ok, valid, "{name}: schema verdict");
        assert_eq!(rust_ok, valid, "{name}: Rust verdict");
    }
}
