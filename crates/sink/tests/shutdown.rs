//! The `sink` binary at SIGTERM with a transaction that cannot finish (its offset row locked by
//! another session): it exits within `sink.shutdown_timeout`, well before a pod's kill, and
//! after a restart every message is stored exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use monitor_core::testing::{
    create_topic, kafka_brokers, kafka_client, sample_report, TestDatabase,
};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The bound the test gives the sink.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// What the process may take beyond it: exiting, and the test's own polling.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

fn spawn_sink(topic: &str, db: &TestDatabase, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .env_remove("WEBMON_CONFIG")
        .env("WEBMON__KAFKA__BROKERS", kafka_brokers().join(","))
        .env("WEBMON__KAFKA__TOPIC", topic)
        .env("WEBMON__DATABASE__URL", &db.url)
        .env("WEBMON__SINK__BATCH_LINGER", "50ms")
        .env("WEBMON__SINK__FETCH_MAX_WAIT", "50ms")
        .env("WEBMON__SINK__REBALANCE_INTERVAL", "200ms")
        .env("WEBMON__SINK__ADMIN_LISTEN", "127.0.0.1:0")
        .env(
            "WEBMON__SINK__SHUTDOWN_TIMEOUT",
            format!("{}s", SHUTDOWN_TIMEOUT.as_secs()),
        )
        .env("RUST_LOG", "warn")
        .arg("--log-file")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sink starts")
}

/// Produces reports `from..to` of target `t0` to partition 0.
async fn produce(client: &Client, topic: &str, from: i64, to: i64) {
    let pc = client
        .partition_client(topic.to_string(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let records = (from..to)
        .map(|n| Record {
            key: Some(b"t0".to_vec()),
            value: Some(sample_report("t0", n).to_json()),
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        })
        .collect();
    pc.produce(records, Compression::NoCompression)
        .await
        .expect("produce");
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

/// Polls `sql` until it returns `expected`.
async fn wait_for(pool: &PgPool, sql: &str, expected: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(pool, sql).await;
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n}, not {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then the exit code and how long the exit took, at most the bound and the margin.
async fn terminate(child: &mut Child) -> (Option<i32>, Duration) {
    let pid = child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -TERM {pid}");
    let sent = Instant::now();
    let status = tokio::time::timeout(SHUTDOWN_TIMEOUT + EXIT_MARGIN, child.wait()).await;
    let took = sent.elapsed();
    let Ok(status) = status else {
        let _ = child.kill().await;
        panic!(
            "still running {took:?} after SIGTERM with sink.shutdown_timeout \
             {SHUTDOWN_TIMEOUT:?}: a pod's kill would come first, mid-transaction if one is open"
        );
    };
    (status.expect("exit status").code(), took)
}

/// Polls until some session of this database waits on a lock.
async fn wait_for_a_lock_wait(pool: &PgPool) {
    let sql = "SELECT count(*)::int8 FROM pg_stat_activity \
               WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(pool, sql).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the sink's batch never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stores 100 reports, then takes a lock with `lock` (in a transaction of its own, `$1` being
/// the topic), produces 150 more and stops the sink while their batch waits on the lock: the
/// sink must exit within its bound, and a restart must store every report exactly once.
async fn stuck_batch_then_sigterm(lock: &str) {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("sink.log");
    let offsets = format!(
        "SELECT COALESCE(sum(next_offset), 0)::int8 FROM kafka_offsets WHERE kafka_topic = '{topic}'"
    );
    produce(&client, &topic, 0, 100).await;
    let mut sink = spawn_sink(&topic, &db, &log);
    let pool = PgPool::connect(&db.url).await.expect("connect");
    wait_for(&pool, &offsets, 100, "stored offsets").await;

    let mut holder = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    let query = sqlx::query(lock);
    let query = if lock.contains("$1") {
        query.bind(&topic)
    } else {
        query
    };
    query.execute(&mut holder).await.expect("take the lock");
    produce(&client, &topic, 100, 250).await;
    wait_for_a_lock_wait(&pool).await;

    let (code, took) = terminate(&mut sink).await;
    assert_eq!(code, Some(0), "a SIGTERM is a clean exit");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("abandoned uncommitted"),
        "the log says the batch was abandoned: {text}"
    );
    eprintln!("exited {took:?} after SIGTERM, bound {SHUTDOWN_TIMEOUT:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the lock");
    holder.close().await.expect("close");

    // The abandoned batch never committed; a restart stores it, once.
    let mut again = spawn_sink(&topic, &db, &log);
    wait_for(&pool, &offsets, 250, "stored offsets after the restart").await;
    let (code, _) = terminate(&mut again).await;
    assert_eq!(code, Some(0));
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 250);
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT report_id) FROM results").await,
        250,
        "no report is stored twice"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 0);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sigterm_with_the_offset_row_locked_exits_in_time_and_a_restart_stores_once() {
    stuck_batch_then_sigterm(
        "SELECT next_offset FROM kafka_offsets WHERE kafka_topic = $1 FOR UPDATE",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sigterm_with_the_results_table_locked_exits_in_time_and_a_restart_stores_once() {
    stuck_batch_then_sigterm("LOCK TABLE results IN ACCESS EXCLUSIVE MODE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sigterm_while_partition_upkeep_waits_on_a_lock_exits_in_time() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("sink.log");
    let pool = PgPool::connect(&db.url).await.expect("connect");
    sink::db::migrate(&pool).await.expect("migrations apply");
    produce(&client, &topic, 0, 50).await;

    // Creating the day partitions at start waits on this lock, before any consumer runs.
    let mut holder = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE results IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("take the lock");
    let mut sink = spawn_sink(&topic, &db, &log);
    wait_for_a_lock_wait(&pool).await;
    let (code, took) = terminate(&mut sink).await;
    assert_eq!(code, Some(0), "a SIGTERM is a clean exit");
    eprintln!("exited {took:?} after SIGTERM, bound {SHUTDOWN_TIMEOUT:?}");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the lock");
    holder.close().await.expect("close");

    let offsets = format!(
        "SELECT COALESCE(sum(next_offset), 0)::int8 FROM kafka_offsets WHERE kafka_topic = '{topic}'"
    );
    let mut again = spawn_sink(&topic, &db, &log);
    wait_for(&pool, &offsets, 50, "stored offsets after the restart").await;
    let (code, _) = terminate(&mut again).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT report_id) FROM results").await,
        50
    );
    pool.close().await;
    db.drop_database().await;
}
