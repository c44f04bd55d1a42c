//! The compact rows read back through the `results` view as the reports were sent: every
//! field, the report id derived by the database as the checker derives it (or kept when a
//! report carries another), start times far from the schedule, HTTP codes above 32767; and a
//! batch delivered again is skipped whole.

mod support;

use chrono::{DateTime, Utc};
use monitor_core::report::{report_id, to_micros, Report};
use monitor_core::testing::{sample_report, TestDatabase};
use monitor_core::{FailureClass, Status};
use sink::store::Batch;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use support::{count, migrated_store};

/// A report of a recent slot, so it falls inside the sink's window.
fn recent(target: &str, n: i64) -> Report {
    let mut r = sample_report(target, n);
    r.scheduled_at = to_micros(Utc::now()) - chrono::Duration::minutes(n);
    r.started_at = r.scheduled_at + chrono::Duration::microseconds(1_234);
    r.tls_cert_not_after = Some(r.scheduled_at + chrono::Duration::days(40));
    r.report_id = report_id(&r.checker_id, target, r.scheduled_at);
    r
}

fn batch_of(reports: &[Report], expected: Option<i64>) -> Batch {
    let first = expected.unwrap_or(0);
    let mut batch = Batch::new("compact", 0, expected, first);
    for (offset, r) in (first..).zip(reports) {
        batch.push_report(offset, None, None, r.clone());
    }
    batch
}

/// The report stored for `target`, as `results` shows it.
async fn read_back(pool: &PgPool, target: &str) -> Report {
    let row = sqlx::query(
        "SELECT *, status::text AS s, failure_class::text AS f FROM results WHERE target_id = $1",
    )
    .bind(target)
    .fetch_one(pool)
    .await
    .expect("row");
    let status = match row.get::<String, _>("s").as_str() {
        "up" => Status::Up,
        "down" => Status::Down,
        _ => Status::Missed,
    };
    let class: Option<String> = row.get("f");
    let failure_class = class.and_then(|c| FailureClass::ALL.into_iter().find(|k| k.as_str() == c));
    let mut r = sample_report(target, 0);
    r.report_id = row.get("report_id");
    r.url = row.get("url");
    r.checker_id = row.get("checker_id");
    r.scheduled_at = row.get("scheduled_at");
    r.started_at = row.get("started_at");
    r.status = status;
    r.failure_class = failure_class;
    r.error = row.get("error");
    r.http_status = row
        .get::<Option<i32>, _>("http_status")
        .map(|s| u16::try_from(s).expect("a 16-bit code"));
    r.response_time_ms = row.get("response_time_ms");
    r.timings_ms.dns = row.get("dns_ms");
    r.timings_ms.connect = row.get("connect_ms");
    r.timings_ms.tls = row.get("tls_ms");
    r.timings_ms.ttfb = row.get("ttfb_ms");
    r.timings_ms.transfer = row.get("transfer_ms");
    r.body_bytes = row
        .get::<Option<i64>, _>("body_bytes")
        .map(|b| u64::try_from(b).expect("bytes"));
    r.body_truncated = row.get("body_truncated");
    r.regexp = row.get("regexp");
    r.regexp_matched = row.get("regexp_matched");
    r.tls_cert_not_after = row.get("tls_cert_not_after");
    r.timeout_s = row.get("timeout_s");
    r.period_s = row.get("period_s");
    r
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn reports_read_back_through_results_as_they_were_sent() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    let plain = recent("plain", 1);
    let mut late = recent("late", 2);
    // Started a day after its slot: beyond the microseconds an int4 holds.
    late.started_at = late.scheduled_at + chrono::Duration::days(1);
    late.http_status = Some(40_000);
    late.status = Status::Down;
    late.failure_class = Some(FailureClass::HttpStatus);
    late.error = Some("status 40000".into());
    late.regexp = None;
    late.regexp_matched = None;
    late.tls_cert_not_after = None;
    let mut foreign_id = recent("foreign-id", 3);
    foreign_id.report_id = Uuid::from_u128(42);
    let mut missed = recent("missed", 4);
    missed.status = Status::Missed;
    missed.http_status = None;
    missed.response_time_ms = None;
    missed.body_bytes = None;
    missed.body_truncated = None;
    let sent = [plain, late, foreign_id, missed];
    let stored = store.store(&batch_of(&sent, None)).await.expect("stored");
    assert_eq!(stored.rows, 4);
    for report in &sent {
        let back = read_back(&pool, &report.target_id).await;
        assert_eq!(&back, report, "{} reads back as sent", report.target_id);
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM reports WHERE report_id IS NOT NULL"
        )
        .await,
        1,
        "only the id the database cannot derive is stored"
    );
    let stored_at: DateTime<Utc> = sqlx::query_scalar("SELECT min(stored_at) FROM results")
        .fetch_one(&pool)
        .await
        .expect("stored_at");
    assert!(
        (Utc::now() - stored_at).num_seconds().abs() < 60,
        "{stored_at}"
    );
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_batch_delivered_again_is_skipped_whole_and_new_reports_beside_it_are_stored() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    let first: Vec<Report> = (1..=10).map(|n| recent(&format!("t{n}"), n)).collect();
    let stored = store.store(&batch_of(&first, None)).await.expect("stored");
    assert_eq!((stored.rows, stored.duplicates), (10, 0));
    // The same reports again (a redelivery), with two new ones, and one twice.
    let mut again = first.clone();
    let new = recent("new", 1);
    again.push(new.clone());
    again.push(new);
    again.push(recent("other", 2));
    let mut batch = batch_of(&again, Some(10));
    batch.next_offset = 10 + again.len() as i64;
    let stored = store.store(&batch).await.expect("stored again");
    assert_eq!((stored.rows, stored.duplicates), (2, 11), "{stored:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 12);
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT report_id) FROM results").await,
        12
    );
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn the_sinks_series_keys_are_the_databases_and_a_series_stored_before_is_found_by_its_key() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    // A series stored before the sink computed keys: its key is the database's `series_key()`.
    let mut old = recent("stored-before", 1);
    old.regexp = None;
    sqlx::query("INSERT INTO targets (target_id, url) VALUES ($1, $2)")
        .bind(&old.target_id)
        .bind(&old.url)
        .execute(&pool)
        .await
        .expect("target");
    let old_id: i32 = sqlx::query_scalar(
        "INSERT INTO series (target_id, url, checker_id, kafka_topic, regexp, timeout_s, \
         period_s, tls_cert_not_after, key) \
         VALUES ($1, $2, $3, 'compact', NULL, $4, $5, $6, \
           series_key($1, $2, $3, 'compact', NULL, $4, $5, $6)) RETURNING series_id",
    )
    .bind(&old.target_id)
    .bind(&old.url)
    .bind(&old.checker_id)
    .bind(old.timeout_s)
    .bind(old.period_s)
    .bind(old.tls_cert_not_after)
    .fetch_one(&pool)
    .await
    .expect("series stored before");
    // Series whose fields take every branch of the key: texts beyond ASCII, an empty pattern
    // and none, an expiry before 2000 and after, with nanoseconds the database does not keep.
    let mut sent = vec![old];
    let expiry = |s: &str| Some(s.parse::<DateTime<Utc>>().expect("time"));
    for (i, (regexp, cert)) in [
        (Some("ok|fine"), expiry("2031-05-06T07:08:09.123456789Z")),
        (Some(""), expiry("1999-12-31T23:59:59.999999999Z")),
        (None, expiry("1970-01-01T00:00:00.000000500Z")),
        (Some("ünïcödé ✓"), None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = recent(&format!("série-{i}"), 2 + i as i64);
        r.url = format!("https://exämple.test/päth/{i}?q=✓");
        r.checker_id = format!("région-{i}");
        r.regexp = regexp.map(String::from);
        r.tls_cert_not_after = cert;
        r.timeout_s = 0.1 * (i as f64 + 1.0);
        r.period_s = 7.5;
        sent.push(r);
    }
    store.store(&batch_of(&sent, None)).await.expect("stored");
    assert_eq!(count(&pool, "SELECT count(*) FROM series").await, 5);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM series WHERE key = series_key(target_id, url, checker_id, \
             kafka_topic, regexp, timeout_s, period_s, tls_cert_not_after)"
        )
        .await,
        5,
        "every key the sink stored is the one series_key() computes"
    );
    let used: i32 = sqlx::query_scalar(
        "SELECT series_id FROM reports JOIN series USING (series_id) WHERE target_id = $1",
    )
    .bind("stored-before")
    .fetch_one(&pool)
    .await
    .expect("report of the series stored before");
    assert_eq!(used, old_id, "the series stored before is found by its key");
    pool.close().await;
    db.drop_database().await;
}
