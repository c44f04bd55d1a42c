//! Whatever a message's bytes, it is stored or dead-lettered and the partition moves past it:
//! reports whose every text field holds arbitrary characters (NUL, control characters,
//! anything past the contract's bounds), whose numbers and dates are arbitrary, and whose JSON
//! may have arbitrary bytes overwritten, stored as one batch in a real PostgreSQL.

mod support;

use chrono::{DateTime, Utc};
use monitor_core::report::to_micros;
use monitor_core::testing::{sample_report, TestDatabase};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sink::decode::{self, Window};
use sink::store::{Batch, Stored};

/// Messages in the batch.
const MESSAGES: usize = 300;

/// Anything a JSON string can hold, up to `max` characters.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(|c| c.into_iter().collect())
}

/// A date anywhere chrono can write, as RFC 3339.
fn any_date() -> impl Strategy<Value = String> {
    (-100_000_000_000i64..300_000_000_000).prop_map(|secs| {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .unwrap_or_default()
            .to_rfc3339()
    })
}

/// A number as a JSON value: whole, negative, huge or fractional.
fn any_number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ]
}

/// The JSON of report `n` (fresh, so inside the sink's window), with some fields replaced by
/// arbitrary values and, sometimes, a few bytes overwritten. Each change is drawn now and
/// then only, so that both valid reports and dead letters are many.
fn message(n: usize) -> impl Strategy<Value = Vec<u8>> {
    use proptest::option::weighted;
    (
        proptest::collection::vec(weighted(0.3, any_text(260)), 5),
        proptest::collection::vec(weighted(0.2, any_number()), 5),
        weighted(0.5, any_date()),
        proptest::bool::weighted(0.05),
        weighted(
            0.1,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3),
        ),
    )
        .prop_map(move |(texts, numbers, cert, old, flips)| {
            let mut report = sample_report("any", n as i64);
            report.scheduled_at = to_micros(Utc::now());
            report.started_at = report.scheduled_at;
            let mut value = serde_json::to_value(&report).expect("json");
            for (key, text) in ["target_id", "url", "checker_id", "error", "regexp"]
                .iter()
                .zip(texts)
            {
                if let Some(text) = text {
                    value[*key] = text.into();
                }
            }
            for (key, number) in [
                "http_status",
                "response_time_ms",
                "body_bytes",
                "timeout_s",
                "period_s",
            ]
            .iter()
            .zip(numbers)
            {
                if let Some(number) = number {
                    value[*key] = number;
                }
            }
            if let Some(cert) = cert {
                value["tls_cert_not_after"] = cert.into();
            }
            if old {
                value["scheduled_at"] = "1999-12-31T23:59:59Z".into();
            }
            let mut bytes = serde_json::to_vec(&value).expect("json");
            for (at, byte) in flips.unwrap_or_default() {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            bytes
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn any_bytes_in_any_field_end_stored_or_dead_lettered() {
    let db = TestDatabase::create().await;
    let (pool, store) = support::migrated_store(&db).await;

    // A new draw each run; the seed is printed so that a failing one can be run again.
    let seed: u64 = std::env::var("ANY_BYTES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64);
    eprintln!("ANY_BYTES_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut batch = Batch::new("any-bytes", 0, None, 0);
    for n in 0..MESSAGES {
        let value = message(n)
            .new_tree(&mut runner)
            .expect("a message")
            .current();
        let key = Some(b"k".to_vec());
        decode::push(&mut batch, &Window::default(), n as i64, key, Some(value));
    }
    let mut stored = Stored::default();
    store
        .store_bisecting(&mut batch, &mut stored)
        .await
        .expect("every message is stored or dead-lettered");

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM results")
        .fetch_one(&pool)
        .await
        .expect("rows");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .expect("dead letters");
    let next: i64 = sqlx::query_scalar("SELECT next_offset FROM kafka_offsets")
        .fetch_one(&pool)
        .await
        .expect("offset");
    eprintln!("{rows} stored, {dead} dead letters, {stored:?}");
    assert_eq!(
        next, MESSAGES as i64,
        "the partition moved past every message"
    );
    assert_eq!(
        (rows as u64 + stored.duplicates, dead as u64),
        (stored.rows + stored.duplicates, stored.dead_letters)
    );
    assert_eq!(
        stored.rows + stored.duplicates + stored.dead_letters,
        MESSAGES as u64,
        "each message is a row, a duplicate or a dead letter"
    );
    assert!(
        rows > 0 && dead > 0,
        "the messages cover both outcomes: {rows} rows, {dead} dead letters"
    );
    pool.close().await;
    db.drop_database().await;
}
