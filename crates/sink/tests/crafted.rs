//! Crafted and unusual messages through a real broker into a real PostgreSQL: whatever its
//! bytes, every message ends up stored or dead-lettered and the partition keeps moving; a
//! partition that cannot move shows in the metrics and in readiness; two regions checking the
//! same target in the same slot both keep their result.

mod support;

use std::time::Duration;

use chrono::Utc;
use monitor_core::report::{report_id, Report};
use monitor_core::testing::{create_topic, http_get, kafka_client, sample_report, TestDatabase};
use rskafka::client::Client;
use sink::decode::{self, Window};
use sink::Application;
use sqlx::{PgPool, Row};

use support::{
    count, migrated_store, offsets_sql, produce_messages, sample, settings, wait_for, Message,
    RunningSink,
};

/// A crafted message and what its dead letter's reason must say.
type Crafted = (Option<Vec<u8>>, Option<Vec<u8>>, &'static str);

/// A stored dead letter: key, payload, reason.
type Kept = (Option<Vec<u8>>, Option<Vec<u8>>, String);

/// Produces `messages` (key, value) to partition 0, in order.
async fn produce(client: &Client, topic: &str, messages: Vec<Message>) {
    produce_messages(client, topic, 0, messages).await;
}

fn valued(values: Vec<Vec<u8>>) -> Vec<Message> {
    values
        .into_iter()
        .map(|v| (Some(b"k".to_vec()), Some(v)))
        .collect()
}

/// Waits until the stored offset of partition 0 reaches `messages`.
async fn wait_for_offset(pool: &PgPool, topic: &str, messages: i64, within: Duration) {
    let what = "the stored offset (the partition is stuck?)";
    wait_for(pool, &offsets_sql(topic), messages, within, what).await;
}

/// A report of now (inside the sink's window), as JSON to edit.
fn fresh(target: &str, n: i64) -> serde_json::Value {
    let mut r = sample_report(target, n);
    r.scheduled_at = monitor_core::report::to_micros(Utc::now()) - chrono::Duration::seconds(n);
    r.started_at = r.scheduled_at;
    r.report_id = report_id(&r.checker_id, target, r.scheduled_at);
    serde_json::to_value(&r).expect("json")
}

fn bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// A string that does not compress (an index row of it is as long as the string).
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn crafted_messages_are_stored_or_dead_lettered_and_never_stall_the_partition() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;

    // Stored: a NUL in every text field, a certificate that "never expires" (RFC 5280), one
    // from the UTCTime era, and a NUL in an unknown key.
    let mut nul_everywhere = fresh("nul\u{0}target", 1);
    nul_everywhere["url"] = "https://x.example/\u{0}".into();
    nul_everywhere["checker_id"] = "eu\u{0}1".into();
    nul_everywhere["error"] = "bad\u{0}byte".into();
    nul_everywhere["regexp"] = "a\u{0}b".into();
    let mut no_expiry = fresh("no-expiry", 2);
    no_expiry["tls_cert_not_after"] = "9999-12-31T23:59:59Z".into();
    let mut old_cert = fresh("old-cert", 3);
    old_cert["tls_cert_not_after"] = "1950-01-01T00:00:00Z".into();
    let mut nul_key = fresh("nul-key", 4);
    nul_key["future\u{0}key"] = "x\u{0}".into();
    let stored = [nul_everywhere, no_expiry, old_cert, nul_key];

    // Dead letters, each with the reason it must name.
    let mut status_nul = fresh("status-nul", 5);
    status_nul["status"] = format!("\u{0}{}", "z".repeat(60_000)).into();
    let mut long_id = fresh("x", 6);
    long_id["target_id"] = incompressible(10_000).into();
    let mut long_checker = fresh("long-checker", 7);
    long_checker["checker_id"] = incompressible(10_000).into();
    let mut far_future = fresh("future", 8);
    far_future["scheduled_at"] = "2150-01-01T00:00:00Z".into();
    let mut far_past = fresh("past", 9);
    far_past["scheduled_at"] = "1971-01-01T00:00:00Z".into();
    let mut invalid_utf8 = bytes(&fresh("utf8", 10));
    let at = invalid_utf8
        .windows(4)
        .position(|w| w == b"utf8")
        .expect("the target id is in the JSON");
    invalid_utf8[at..at + 2].copy_from_slice(&[0xC3, 0x28]);
    let dead: Vec<Crafted> = vec![
        (
            Some(b"k".to_vec()),
            Some(bytes(&status_nul)),
            "unknown variant",
        ),
        (
            Some(b"k".to_vec()),
            Some(bytes(&long_id)),
            "target_id is 10000 characters",
        ),
        (
            Some(b"k".to_vec()),
            Some(bytes(&long_checker)),
            "checker_id is 10000 characters",
        ),
        (
            Some(b"k".to_vec()),
            Some(bytes(&far_future)),
            "scheduled_at 2150",
        ),
        (
            Some(b"k".to_vec()),
            Some(bytes(&far_past)),
            "scheduled_at 1971",
        ),
        (Some(b"k".to_vec()), Some(invalid_utf8), "not JSON"),
        (Some(vec![0, 0xFF, 0]), None, "message has no value"),
        (
            None,
            Some(vec![0xFF; 70_000]),
            "larger than the 65536-byte limit",
        ),
    ];

    let mut messages = Vec::new();
    // Valid reports around the crafted ones, so a stall would also hold back good data.
    messages.extend(valued(
        (0..50).map(|n| bytes(&fresh("before", n))).collect(),
    ));
    for (i, r) in stored.iter().enumerate() {
        messages.push((Some(b"k".to_vec()), Some(bytes(r))));
        let (key, value, _) = &dead[i];
        messages.push((key.clone(), value.clone()));
    }
    for (key, value, _) in &dead[stored.len()..] {
        messages.push((key.clone(), value.clone()));
    }
    messages.extend(valued((0..50).map(|n| bytes(&fresh("after", n))).collect()));
    let total = messages.len() as i64;
    produce(&client, &topic, messages).await;

    let sink = RunningSink::start(settings(&topic, &db)).await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    wait_for_offset(&pool, &topic, total, Duration::from_secs(60)).await;

    let rows = count(&pool, "SELECT count(*) FROM results").await;
    let dead_letters = count(&pool, "SELECT count(*) FROM dead_letters").await;
    assert_eq!(
        rows,
        100 + stored.len() as i64,
        "every valid report is stored"
    );
    assert_eq!(
        dead_letters,
        dead.len() as i64,
        "every other message is a dead letter"
    );
    assert_eq!(rows + dead_letters, total, "every message is stored once");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM results WHERE target_id = 'nul\u{FFFD}target' \
             AND url = 'https://x.example/\u{FFFD}' AND checker_id = 'eu\u{FFFD}1' \
             AND error = 'bad\u{FFFD}byte' AND regexp = 'a\u{FFFD}b'"
        )
        .await,
        1,
        "a NUL is stored as U+FFFD in every text column"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM results WHERE target_id = 'no-expiry' \
             AND tls_cert_not_after = '9999-12-31T23:59:59Z'"
        )
        .await,
        1,
        "a certificate without expiry is stored with its date"
    );
    let reasons: Vec<Kept> =
        sqlx::query("SELECT key, payload, error FROM dead_letters ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .expect("dead letters")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    for ((key, payload, error), (sent_key, sent_value, expected)) in reasons.iter().zip(&dead) {
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
        assert!(
            error.chars().count() <= sink::store::text::MAX_REASON_CHARS,
            "a reason is bounded: {} characters",
            error.chars().count()
        );
        assert!(!error.contains('\0'), "{error:?}");
        assert_eq!((key, payload), (sent_key, sent_value), "kept as received");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'reports'::regclass \
             AND inhrelid::regclass::text ~ '^reports_p(2150|1971)'"
        )
        .await,
        0,
        "no partition is made for an absurd date"
    );
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn batches_of_large_messages_are_stored_in_bounded_transactions() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    // 400 reports of about 60 kB (an unknown key pads them): 24 MB, more than one batch's
    // byte bound, fewer than one batch's count.
    let pad = "p".repeat(60_000);
    let values: Vec<Vec<u8>> = (0..400)
        .map(|n| {
            let mut r = fresh("large", n);
            r["pad"] = pad.clone().into();
            bytes(&r)
        })
        .collect();
    produce(&client, &topic, valued(values)).await;
    let mut settings = settings(&topic, &db);
    // A linger far longer than fetching every message takes, and a count bound above 400:
    // without the byte bound all 400 would be one transaction.
    settings.sink.batch_linger = Duration::from_secs(10);
    assert!(settings.sink.batch_size >= 400);
    let sink = RunningSink::start(settings).await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    wait_for_offset(&pool, &topic, 400, Duration::from_secs(120)).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 400);
    let (_, text) = http_get(sink.admin.port(), "/metrics").await;
    let batches = sample(&text, "webmon_sink_batch_seconds_count").unwrap_or_default();
    let bound = sink::consumer::MAX_BATCH_BYTES as f64;
    assert!(
        batches >= (400.0 * 60_000.0 / bound).ceil(),
        "{batches} transactions for 24 MB with a {bound}-byte bound"
    );
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_report_the_database_refuses_becomes_a_dead_letter_and_the_rest_are_stored() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    let mut batch = sink::store::Batch::new("refused", 0, None, 0);
    for n in 0..40 {
        decode::push(
            &mut batch,
            &Window::default(),
            n,
            None,
            Some(bytes(&fresh("ok", n))),
        );
    }
    // Reports that reach the store without the decoder's checks (any writer of the batch):
    // an id too long for the index, and one beyond the schema's bound.
    let mut too_long_for_the_index: Report =
        serde_json::from_value(fresh("x", 41)).expect("report");
    too_long_for_the_index.target_id = incompressible(10_000);
    let mut beyond_the_bound: Report = serde_json::from_value(fresh("y", 42)).expect("report");
    beyond_the_bound.checker_id = "c".repeat(300);
    batch.reports.insert(7, (40, too_long_for_the_index));
    batch.reports.insert(30, (41, beyond_the_bound));
    batch.next_offset = 42;
    let mut stored = sink::store::Stored::default();
    store
        .store_bisecting(&mut batch, &mut stored)
        .await
        .expect("stored");
    assert_eq!((stored.rows, stored.dead_letters), (40, 2), "{stored:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 40);
    let errors: Vec<String> = sqlx::query("SELECT error FROM dead_letters ORDER BY kafka_offset")
        .fetch_all(&pool)
        .await
        .expect("dead letters")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[0].contains("the database refused the report"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("results_checker_id_length"),
        "{errors:?}"
    );
    assert_eq!(
        count(&pool, "SELECT next_offset FROM kafka_offsets").await,
        42,
        "the partition moved past both"
    );
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_partition_that_cannot_advance_shows_in_the_metrics_and_readiness() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    produce(
        &client,
        &topic,
        valued((0..20).map(|n| bytes(&fresh("s", n))).collect()),
    )
    .await;
    let app = Application::build_with_stall_bound(settings(&topic, &db), Duration::from_secs(2))
        .await
        .expect("the sink binds");
    let sink = RunningSink::run(app);
    let admin = sink.admin.port();
    let ready = async || http_get(admin, "/readyz").await.0.contains("200");
    let pool = PgPool::connect(&db.url).await.expect("connect");
    wait_for_offset(&pool, &topic, 20, Duration::from_secs(60)).await;
    wait_until(ready, "ready once caught up").await;

    // A long lock on the offsets (a stuck migration, an operator's transaction) holds every
    // batch back while messages wait.
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE kafka_offsets IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    produce(
        &client,
        &topic,
        valued((20..40).map(|n| bytes(&fresh("s", n))).collect()),
    )
    .await;
    wait_until(
        async || !ready().await,
        "not ready while the partition is stalled",
    )
    .await;
    let stalled = "webmon_sink_partition_stalled_seconds{partition=\"0\"}";
    wait_until(
        async || gauge(admin, stalled).await >= 2.0,
        "the stall in the gauge",
    )
    .await;

    blocker.rollback().await.expect("unlock");
    wait_for_offset(&pool, &topic, 40, Duration::from_secs(60)).await;
    wait_until(ready, "ready again once it moves").await;
    assert_eq!(gauge(admin, stalled).await, 0.0);
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

async fn wait_until(mut condition: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gauge `name` as the admin endpoint on `port` serves it.
async fn gauge(port: u16, name: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics").await;
    sample(&text, name).unwrap_or_else(|| panic!("{name} missing from {text}"))
}
