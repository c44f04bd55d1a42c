//! Sink throughput: a topic backlog of reports into PostgreSQL, side by side in one run:
//! storing rows alone, storing them and folding them into verdicts, state and incidents, and
//! the raw `COPY` rate of the same rows into the same table as the ceiling.
//!
//! The backlog is a number of targets (default 100,000) checked from three regions at a 60 s
//! period, a number of slots (default 3) of each: the issue's scale, 5,000 reports/s in
//! production. The verdict run keeps the state of every target, writing it with each batch
//! (and reading it from the table the first time it meets the target).
//!
//! ```sh
//! KAFKA_BROKERS=127.0.0.1:9092 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p sink --example store_bench -- 100000 3
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use monitor_core::report::{report_id, Report};
use monitor_core::settings::{SettingsSource, SinkSettings};
use monitor_core::testing::{
    create_topic, kafka_brokers, kafka_client, sample_report as report, TestDatabase,
};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;
/// The regions checking every target.
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

async fn offsets(pool: &PgPool, topic: &str) -> i64 {
    sqlx::query(
        "SELECT COALESCE(sum(next_offset), 0)::int8 FROM kafka_offsets WHERE kafka_topic = $1",
    )
    .bind(topic)
    .fetch_one(pool)
    .await
    .map(|r| r.get(0))
    .unwrap_or(0)
}

fn csv_opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "\\N".into())
}

/// The rows in COPY's text format.
fn copy_text(reports: &[Placed], topic: &str) -> Vec<u8> {
    let mut out = String::new();
    for (partition, offset, r) in reports {
        let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339();
        let fields = [
            r.report_id.to_string(),
            r.target_id.clone(),
            r.url.clone(),
            r.checker_id.clone(),
            ts(r.scheduled_at),
            ts(r.started_at),
            r.status.as_str().to_string(),
            csv_opt(r.failure_class.map(|c| c.as_str())),
            csv_opt(r.error.clone()),
            csv_opt(r.http_status),
            csv_opt(r.response_time_ms),
            csv_opt(r.timings_ms.dns),
            csv_opt(r.timings_ms.connect),
            csv_opt(r.timings_ms.tls),
            csv_opt(r.timings_ms.ttfb),
            csv_opt(r.timings_ms.transfer),
            csv_opt(r.body_bytes),
            csv_opt(r.body_truncated),
            csv_opt(r.regexp.clone()),
            csv_opt(r.regexp_matched),
            csv_opt(r.tls_cert_not_after.map(ts)),
            r.timeout_s.to_string(),
            r.period_s.to_string(),
            topic.to_string(),
            partition.to_string(),
            offset.to_string(),
        ];
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    out.into_bytes()
}

/// A report of the benchmark and its place in the topic.
type Placed = (i32, i64, Report);

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let mut args = std::env::args().skip(1);
    let targets: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let slots: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let total = targets * slots * REGIONS.len() as i64;
    println!(
        "sink benchmark: {targets} targets × {} regions × {slots} slots = {total} reports over {PARTITIONS} partitions",
        REGIONS.len()
    );

    let client = kafka_client().await;
    let topic = create_topic(&client, PARTITIONS).await;
    let all = produce_backlog(&client, &topic, targets, slots).await?;

    let (rows_only, db, pool) = run_sink(&topic, total, false).await?;
    let (with_verdicts, verdicts_db, verdicts_pool) = run_sink(&topic, total, true).await?;
    verdicts_pool.close().await;
    verdicts_db.drop_database().await;
    println!(
        "verdicts / rows alone: {:.0} % of the throughput ({:.0} % slower)",
        100.0 * with_verdicts / rows_only,
        100.0 * (1.0 - with_verdicts / rows_only)
    );
    let copy_rate = copy_ceiling(&pool, &all, &topic).await?;
    println!(
        "sink (rows alone) / ceiling: {:.0} %",
        100.0 * rows_only / copy_rate
    );
    pool.close().await;
    db.drop_database().await;
    Ok(())
}

/// The report of `target` by `region` at slot `n` (mostly up; every 97th target down).
fn regional_report(target: &str, target_index: i64, region: &str, n: i64) -> Report {
    let mut r = report(target, n + 1);
    r.checker_id = region.to_string();
    r.report_id = report_id(region, target, r.scheduled_at);
    let down = target_index % 97 == 0;
    r.status = if down {
        monitor_core::Status::Down
    } else {
        monitor_core::Status::Up
    };
    r.failure_class = down.then_some(monitor_core::FailureClass::HttpStatus);
    r.error = down.then(|| "status 503, expected 200-299".to_string());
    r.http_status = Some(if down { 503 } else { 200 });
    r
}

/// The backlog: every target's reports from every region, slot by slot, target `i` on
/// partition `i mod PARTITIONS`. Returns them with their places.
async fn produce_backlog(
    client: &Client,
    topic: &str,
    targets: i64,
    slots: i64,
) -> BenchResult<Vec<Placed>> {
    let mut by_partition: Vec<Vec<Report>> = vec![Vec::new(); PARTITIONS as usize];
    for n in 0..slots {
        for t in 0..targets {
            let target = format!("target-{t}");
            for region in REGIONS {
                let p = (t % i64::from(PARTITIONS)) as usize;
                by_partition[p].push(regional_report(&target, t, region, n));
            }
        }
    }
    let mut all = Vec::new();
    let started = Instant::now();
    let mut bytes = 0usize;
    for (p, reports) in (0..PARTITIONS).zip(by_partition) {
        let pc = client
            .partition_client(topic.to_string(), p, UnknownTopicHandling::Retry)
            .await?;
        for chunk in reports.chunks(5000) {
            let records: Vec<Record> = chunk
                .iter()
                .map(|r| {
                    let value = r.to_json();
                    bytes += value.len();
                    Record {
                        key: Some(r.target_id.clone().into_bytes()),
                        value: Some(value),
                        headers: BTreeMap::new(),
                        timestamp: Utc::now(),
                    }
                })
                .collect();
            pc.produce(records, Compression::NoCompression).await?;
        }
        all.extend((0..).zip(reports).map(|(offset, r)| (p, offset, r)));
    }
    println!(
        "backlog produced in {:.1} s ({} bytes per report on average)",
        started.elapsed().as_secs_f64(),
        bytes / all.len().max(1)
    );
    Ok(all)
}

/// The sink through the backlog into a database of its own, with or without the verdicts;
/// returns its rate in reports per second, and the database.
async fn run_sink(
    topic: &str,
    total: i64,
    verdicts: bool,
) -> BenchResult<(f64, TestDatabase, PgPool)> {
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await?;
    sink::db::migrate(&pool).await?;
    let env: HashMap<String, String> = HashMap::from([
        ("WEBMON__KAFKA__BROKERS".into(), kafka_brokers().join(",")),
        ("WEBMON__KAFKA__TOPIC".into(), topic.to_string()),
        ("WEBMON__DATABASE__URL".into(), db.url.clone()),
        ("WEBMON__SINK__BATCH_SIZE".into(), "5000".into()),
        ("WEBMON__SINK__BATCH_LINGER".into(), "100ms".into()),
        ("WEBMON__SINK__FETCH_MAX_WAIT".into(), "100ms".into()),
        ("WEBMON__SINK__REBALANCE_INTERVAL".into(), "200ms".into()),
        ("WEBMON__SINK__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("WEBMON__SINK__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
    ]);
    let settings = SinkSettings::load(&SettingsSource {
        file: None,
        env: Some(env),
        base_dir: None,
    })?;
    let mut app = sink::Application::build(settings).await?;
    if !verdicts {
        app = app.without_verdicts();
    }
    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    while offsets(&pool, topic).await < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    let rows: i64 = sqlx::query("SELECT count(*) FROM results")
        .fetch_one(&pool)
        .await?
        .get(0);
    assert_eq!(rows, total, "every report stored once");
    let states: i64 = sqlx::query("SELECT count(*) FROM target_states")
        .fetch_one(&pool)
        .await?
        .get(0);
    let sink_rate = total as f64 / sink_secs;
    let what = if verdicts {
        "rows + verdicts"
    } else {
        "rows alone"
    };
    println!(
        "sink, {what}: {total} reports in {sink_secs:.1} s = {sink_rate:.0} reports/s \
         (from Kafka, batches of 5000; {states} target states)"
    );
    Ok((sink_rate, db, pool))
}

/// The ceiling: `COPY` of the same rows into the same (emptied) table; returns its rate in
/// rows per second.
async fn copy_ceiling(pool: &PgPool, all: &[Placed], topic: &str) -> BenchResult<f64> {
    sqlx::query("TRUNCATE results").execute(pool).await?;
    let text = copy_text(all, topic);
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw(
            "COPY results (report_id, target_id, url, checker_id, scheduled_at, started_at, status, \
             failure_class, error, http_status, response_time_ms, dns_ms, connect_ms, tls_ms, ttfb_ms, \
             transfer_ms, body_bytes, body_truncated, regexp, regexp_matched, tls_cert_not_after, \
             timeout_s, period_s, kafka_topic, kafka_partition, kafka_offset) FROM STDIN",
        )
        .await?;
    for chunk in text.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    let copy_secs = started.elapsed().as_secs_f64();
    let total = all.len();
    let copy_rate = total as f64 / copy_secs;
    println!("COPY ceiling: {total} rows in {copy_secs:.1} s = {copy_rate:.0} rows/s");
    Ok(copy_rate)
}
