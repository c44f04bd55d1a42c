//! End-to-end latency: from a check's start to its row committed in PostgreSQL, with the
//! checker (this process: schedule, probe, publisher) checking nginx in another process (as
//! targets run elsewhere in production; Debian `nginx-light`), producing to the broker, and the
//! `sink` binary storing.
//!
//! ```sh
//! cargo build --release -p sink
//! KAFKA_BROKERS=127.0.0.1:9092 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p checker --example e2e_latency -- 5000 30s
//! ```

#[path = "support/nginx.rs"]
mod nginx;

/// The allocator the binaries use (see `src/main.rs`), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use checker::probe::Checker;
use checker::publish::{self, Drained, PublishMetrics};
use checker::schedule;
use checker::spool::{FileSpool, SpoolMetrics};
use monitor_core::settings::{parse_duration, CheckerSettings, SettingsSource, TargetSettings};
use monitor_core::testing::{create_topic, kafka_brokers, kafka_client, TestDatabase};
use sqlx::Row;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use nginx::Nginx;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let run_for = std::env::args()
        .nth(2)
        .and_then(|a| parse_duration(&a).ok())
        .unwrap_or(Duration::from_secs(30));
    let client = kafka_client().await;
    let topic = create_topic(&client, 6).await;
    let db = TestDatabase::create().await;
    let mut sink = start_sink(&topic, &db);
    let dir = tempfile::tempdir().expect("dir");
    let nginx = Nginx::start(1, false).expect("nginx (apt-get install nginx-light)");
    let settings = bench_settings(dir.path(), n, &topic, &nginx);
    run_checker(&settings, dir.path(), run_for).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = sink.kill();
    let _ = sink.wait();
    print_latency(&db, n, run_for).await;
    db.drop_database().await;
}

/// The `sink` binary (`SINK_BIN`, else target/release/sink) storing `topic` into `db`.
fn start_sink(topic: &str, db: &TestDatabase) -> std::process::Child {
    let sink_bin = std::env::var("SINK_BIN").unwrap_or_else(|_| "target/release/sink".into());
    // 50 ms unless the environment says otherwise (`WEBMON__SINK__FETCH_MAX_WAIT=10ms`, say).
    let or_50ms = |key: &str| std::env::var(key).unwrap_or_else(|_| "50ms".into());
    std::process::Command::new(&sink_bin)
        .env("WEBMON__KAFKA__BROKERS", kafka_brokers().join(","))
        .env("WEBMON__KAFKA__TOPIC", topic)
        .env("WEBMON__DATABASE__URL", &db.url)
        .env(
            "WEBMON__SINK__BATCH_LINGER",
            or_50ms("WEBMON__SINK__BATCH_LINGER"),
        )
        .env(
            "WEBMON__SINK__FETCH_MAX_WAIT",
            or_50ms("WEBMON__SINK__FETCH_MAX_WAIT"),
        )
        .env("WEBMON__SINK__ADMIN_LISTEN", "127.0.0.1:0")
        .env("WEBMON__SINK__HTTP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {sink_bin} (build it with cargo build --release -p sink): {e}")
        })
}

/// Settings in `dir` with `n` targets on `nginx`'s ports, checked every second.
fn bench_settings(dir: &std::path::Path, n: usize, topic: &str, nginx: &Nginx) -> CheckerSettings {
    let targets: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"e2e-{i}\",\"url\":\"{}\",\"period\":1,\"timeout\":0.5}}",
                nginx.url(i, i)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let file = dir.join("c.json");
    std::fs::write(
        &file,
        format!(
            "{{\"kafka\":{{\"brokers\":[\"{}\"],\"topic\":\"{topic}\"}},\"checker\":{{\"linger\":\"20ms\"}},\"monitored_urls\":[{targets}]}}",
            kafka_brokers().join("\",\"")
        ),
    )
    .expect("write");
    CheckerSettings::load(
        &SettingsSource {
            base_dir: Some(dir.to_path_buf()),
            ..SettingsSource::file_only(file)
        },
        true,
    )
    .expect("settings")
}

/// The checker in this process (schedule, probe, publisher) for `run_for`.
async fn run_checker(settings: &CheckerSettings, dir: &std::path::Path, run_for: Duration) {
    let list: Vec<Arc<TargetSettings>> = settings.targets.iter().cloned().map(Arc::new).collect();
    let (_targets_tx, targets_rx) = watch::channel(list);
    let (tx, rx) = mpsc::channel(100_000);
    let stop = CancellationToken::new();
    let spool =
        FileSpool::open(&dir.join("spool"), u64::MAX, SpoolMetrics::default()).expect("spool");
    let publisher = tokio::spawn(publish::run(
        rx,
        settings.kafka.clone().expect("kafka"),
        settings.checker.producer.clone(),
        Box::new(spool),
        PublishMetrics::default(),
        Drained::default(),
    ));
    let scheduler = tokio::spawn(schedule::run(
        targets_rx,
        Arc::new(Checker::new("e2e")).into_check_fn(),
        "e2e".into(),
        4096,
        tx,
        stop.clone(),
    ));
    tokio::time::sleep(run_for).await;
    stop.cancel();
    let _ = scheduler.await;
    let _ = publisher.await;
}

/// The latency from a check's start to its row stored, from the database.
async fn print_latency(db: &TestDatabase, n: usize, run_for: Duration) {
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    // Skip the sink's start-up (migrations, leases, the backlog of checks made meanwhile):
    // steady state is the checks started 5 s after the first row was stored.
    let row = sqlx::query(
        "WITH steady AS (SELECT * FROM results WHERE started_at > (SELECT min(stored_at) FROM results) + interval '5 seconds') \
         SELECT count(*)::int8, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - started_at)) * 1000, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - started_at)) * 1000, \
           (max(extract(epoch FROM stored_at - started_at)) * 1000)::float8, \
           (SELECT count(*) FROM results)::int8, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - started_at) * 1000 - response_time_ms), \
           count(*) FILTER (WHERE status = 'up')::int8 \
         FROM steady",
    )
    .fetch_one(&pool)
    .await
    .expect("query");
    let (count, p50, p99, max, all): (i64, f64, f64, f64, i64) = (
        row.get(0),
        row.try_get::<f64, _>(1).unwrap_or(0.0),
        row.try_get::<f64, _>(2).unwrap_or(0.0),
        row.try_get::<f64, _>(3).unwrap_or(0.0),
        row.get(4),
    );
    println!("{n} targets every 1 s for {run_for:?}: {all} rows stored");
    let (check_p99, delivery_p99) = (
        row.try_get::<f64, _>(5).unwrap_or(0.0),
        row.try_get::<f64, _>(6).unwrap_or(0.0),
    );
    let up: i64 = row.get(7);
    println!("check started → row stored (steady state, {count} rows, {up} of them up): p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms");
    println!("  of which the check itself (response time): p99 {check_p99:.0} ms; check ended → row stored: p99 {delivery_p99:.0} ms");
    if up < count {
        let first: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status::text, failure_class::text, error FROM results WHERE status <> 'up' ORDER BY started_at LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .expect("query");
        println!("  {} checks not up; the first: {first:?}", count - up);
    }
    pool.close().await;
}
