//! The test harness itself, against the real services `scripts/test.sh` provides: a report
//! goes through a Kafka-protocol broker and a row through PostgreSQL.

use std::collections::BTreeMap;

use chrono::Utc;
use monitor_core::report::{report_id, to_micros, Report, Status, Timings, SCHEMA_VERSION};
use monitor_core::testing::{create_topic, kafka_client, TestDatabase};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use sqlx::{Connection, PgConnection, Row};

fn sample_report() -> Report {
    let now = to_micros(Utc::now());
    Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id("test", "harness", now),
        target_id: "harness".into(),
        url: "http://127.0.0.1/".into(),
        checker_id: "test".into(),
        scheduled_at: now,
        started_at: now,
        status: Status::Up,
        failure_class: None,
        error: None,
        http_status: Some(200),
        response_time_ms: Some(1.5),
        timings_ms: Timings::default(),
        body_bytes: Some(2),
        regexp: None,
        regexp_matched: None,
        tls_cert_not_after: None,
        timeout_s: 1.0,
        period_s: 5.0,
        body_truncated: None,
        check_request: None,
    }
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_report_produced_to_a_new_topic_is_fetched_back_intact() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 3).await;
    let partition = client
        .partition_client(topic.clone(), 1, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let report = sample_report();
    let record = Record {
        key: Some(report.target_id.clone().into_bytes()),
        value: Some(report.to_json()),
        headers: BTreeMap::from([("schema_version".to_string(), b"1".to_vec())]),
        timestamp: Utc::now(),
    };
    let offsets = partition
        .produce(vec![record], Compression::NoCompression)
        .await
        .expect("produce");
    assert_eq!(offsets.len(), 1);

    let (records, high_watermark) = partition
        .fetch_records(offsets[0], 1..1_000_000, 100)
        .await
        .expect("fetch");
    assert_eq!(high_watermark, offsets[0] + 1);
    assert_eq!(records.len(), 1);
    let fetched = &records[0].record;
    assert_eq!(fetched.key.as_deref(), Some(&b"harness"[..]));
    assert_eq!(
        fetched.headers.get("schema_version").map(Vec::as_slice),
        Some(&b"1"[..])
    );
    let back = Report::from_json(fetched.value.as_deref().expect("value")).expect("decodes");
    assert_eq!(back, report);
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_row_round_trips_through_a_database_of_its_own() {
    let db = TestDatabase::create().await;
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query(
        "CREATE TABLE probe (id uuid PRIMARY KEY, body jsonb NOT NULL, at timestamptz NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .expect("create table");
    let report = sample_report();
    let body: serde_json::Value = serde_json::from_slice(&report.to_json()).expect("json");
    sqlx::query("INSERT INTO probe (id, body, at) VALUES ($1, $2, $3)")
        .bind(report.report_id)
        .bind(&body)
        .bind(report.scheduled_at)
        .execute(&mut conn)
        .await
        .expect("insert");
    let row = sqlx::query("SELECT id, body, at FROM probe")
        .fetch_one(&mut conn)
        .await
        .expect("select");
    assert_eq!(row.get::<uuid::Uuid, _>("id"), report.report_id);
    assert_eq!(
        row.get::<chrono::DateTime<Utc>, _>("at"),
        report.scheduled_at
    );
    let stored: serde_json::Value = row.get("body");
    let back = Report::from_json(&serde_json::to_vec(&stored).expect("encodes")).expect("decodes");
    assert_eq!(back, report);
    conn.close().await.expect("close");
    db.drop_database().await;
}
