//! The `sink` binary at SIGTERM with a transaction that cannot finish (its offset row locked by
//! another session): it exits within `sink.shutdown_timeout`, well before a pod's kill, and
//! after a restart every message is stored exactly once.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use monitor_core::testing::{create_topic, kafka_client, sample_report, TestDatabase};
use rskafka::client::Client;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use support::{count, offsets_sql};

/// The bound the test gives the sink.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// What the process may take beyond it: exiting, and the test's own polling.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);

fn spawn_sink(topic: &str, db: &TestDatabase, log: &Path) -> Child {
    let mut env = support::env(topic, &db.url);
    // The default batch size.
    env.remove("WEBMON__SINK__BATCH_SIZE");
    env.insert(
        "WEBMON__SINK__SHUTDOWN_TIMEOUT".into(),
        format!("{}s", SHUTDOWN_TIMEOUT.as_secs()),
    );
    Command::new(env!("CARGO_BIN_EXE_sink"))
        .env_remove("WEBMON_CONFIG")
        .envs(env)
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
    let values = (from..to)
        .map(|n| sample_report("t0", n).to_json())
        .collect();
    support::produce(client, topic, 0, "t0", values).await;
}

/// Polls `sql` until it returns `expected`.
async fn wait_for(pool: &PgPool, sql: &str, expected: i64, what: &str) {
    support::wait_for(pool, sql, expected, Duration::from_secs(60), what).await;
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
    let offsets = offsets_sql(&topic);
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

    let offsets = offsets_sql(&topic);
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
