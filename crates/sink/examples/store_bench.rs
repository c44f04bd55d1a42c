//! Sink throughput and storage: a topic backlog of reports into PostgreSQL, side by side in one
//! run: the sink storing rows alone, storing them and folding them into verdicts, state and
//! incidents, and two `COPY` ceilings of the same rows: into the very tables the sink writes,
//! and into a plain, unpartitioned table holding the same information (the `results` columns)
//! with the indexes the queries need (the report id, and "this target, last N hours"). Also
//! the bytes a stored report takes, (heap + indexes + toast) / rows from
//! `pg_total_relation_size`, in the sink's tables and in the plain table.
//!
//! The backlog is a number of targets (default 100,000) checked from three regions at a 60 s
//! period, a number of slots (default 3) of each: the issue's scale, 5,000 reports/s in
//! production. Target ids are the checker's (16 hex digits of the SHA-256 of the request),
//! each on the partition the checker's partitioner gives its id, so every partition of the
//! topic holds thousands of targets, interleaved. The sink runs with its default settings
//! (batches of 5,000). The verdict run keeps the state of every target, writing it with each
//! batch (and reading it from the table the first time it meets the target); a third argument
//! `rows` leaves it out.
//!
//! ```sh
//! KAFKA_BROKERS=127.0.0.1:9092 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release -p sink --example store_bench -- 100000 3
//! ```
//!
//! `WEBMON__SINK__*` variables in the benchmark's environment set the sink's settings, as they
//! do for the binary: the test broker holds every fetch for up to `fetch_max_wait` even when
//! it has data, so `WEBMON__SINK__FETCH_MAX_WAIT=10ms` shows what a broker that answers at
//! once would give.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use monitor_core::report::{report_id, Report};
use monitor_core::settings::{SettingsSource, SinkSettings};
use monitor_core::testing::{
    create_topic, kafka_brokers, kafka_client, sample_report as report, TestDatabase,
};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;
/// The regions checking every target.
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// The plain table: the columns of `results`, one table, no partitions, no foreign key, the
/// indexes the queries need.
const PLAIN_TABLE: &str = "CREATE TABLE plain_results (
    report_id uuid PRIMARY KEY, target_id text NOT NULL, url text NOT NULL,
    checker_id text NOT NULL, scheduled_at timestamptz NOT NULL, started_at timestamptz NOT NULL,
    status check_status NOT NULL, failure_class failure_class, error text, http_status integer,
    response_time_ms double precision, dns_ms double precision, connect_ms double precision,
    tls_ms double precision, ttfb_ms double precision, transfer_ms double precision,
    body_bytes bigint, body_truncated boolean, regexp text, regexp_matched boolean,
    tls_cert_not_after timestamptz, timeout_s double precision NOT NULL,
    period_s double precision NOT NULL, kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now())";

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

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> BenchResult<()> {
    let mut args = std::env::args().skip(1);
    let targets: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let slots: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let verdicts = args.next().as_deref() != Some("rows");
    let total = targets * slots * REGIONS.len() as i64;
    println!(
        "sink benchmark: {targets} targets × {} regions × {slots} slots = {total} reports over {PARTITIONS} partitions",
        REGIONS.len()
    );

    let client = kafka_client().await;
    let topic = create_topic(&client, PARTITIONS).await;
    produce_backlog(&client, &topic, targets, slots).await?;

    let (rows_only, db, pool) = run_sink(&topic, total, false).await?;
    if verdicts {
        let (with_verdicts, verdicts_db, verdicts_pool) = run_sink(&topic, total, true).await?;
        verdicts_pool.close().await;
        verdicts_db.drop_database().await;
        println!(
            "verdicts / rows alone: {:.0} % of the throughput ({:.0} % slower)",
            100.0 * with_verdicts / rows_only,
            100.0 * (1.0 - with_verdicts / rows_only)
        );
    }
    let sink_bytes = bytes_per_report(&pool, total).await?;
    let (same, plain, plain_bytes) = copy_ceilings(&pool, total).await?;
    println!("side by side ({total} reports):");
    println!("  sink, rows alone:                 {rows_only:>9.0} reports/s");
    println!(
        "  COPY into the sink's tables:      {same:>9.0} rows/s    sink / this: {:.0} %",
        100.0 * rows_only / same
    );
    println!(
        "  COPY into a plain table:          {plain:>9.0} rows/s    sink / this: {:.0} %",
        100.0 * rows_only / plain
    );
    println!(
        "  bytes per stored report: sink's tables {:.0} B (rows {:.0} B + series and targets {:.0} B), plain table {plain_bytes:.0} B",
        sink_bytes.0 + sink_bytes.1,
        sink_bytes.0,
        sink_bytes.1
    );
    pool.close().await;
    db.drop_database().await;
    Ok(())
}

/// The checker's id of the target checked at `url` (GET, no headers): the first 8 bytes of the
/// SHA-256 of the request, in hex.
fn checker_target_id(url: &str) -> String {
    let digest = Sha256::digest(format!("GET\n{url}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The report of target `index` by `region` at slot `n` (mostly up; every 97th target down).
fn regional_report(index: i64, region: &str, n: i64) -> Report {
    let url = format!("https://target-{index}.example/");
    let target = checker_target_id(&url);
    let mut r = report(&target, n + 1);
    r.url = url;
    r.checker_id = region.to_string();
    r.report_id = report_id(region, &target, r.scheduled_at);
    let down = index % 97 == 0;
    r.status = if down {
        monitor_core::Status::Down
    } else {
        monitor_core::Status::Up
    };
    r.failure_class = down.then_some(monitor_core::FailureClass::HttpStatus);
    r.error = down.then(|| "status 503, expected 200-299".to_string());
    r.http_status = Some(if down { 503 } else { 200 });
    // A server's certificate, the same in every check until it is renewed.
    let expiry = 1_800_000_000 + (index % 90) * 86_400;
    r.tls_cert_not_after = chrono::DateTime::from_timestamp(expiry, 0);
    r
}

/// The backlog: every target's reports from every region, slot by slot, each target on the
/// partition the checker's partitioner gives its id.
async fn produce_backlog(
    client: &Client,
    topic: &str,
    targets: i64,
    slots: i64,
) -> BenchResult<()> {
    let mut by_partition: Vec<Vec<Report>> = vec![Vec::new(); PARTITIONS as usize];
    for n in 0..slots {
        for t in 0..targets {
            for region in REGIONS {
                let r = regional_report(t, region, n);
                let p = checker::publish::partitioner::partition_for(
                    r.target_id.as_bytes(),
                    PARTITIONS,
                );
                by_partition[p as usize].push(r);
            }
        }
    }
    let started = Instant::now();
    let (mut bytes, mut count) = (0usize, 0usize);
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
        count += reports.len();
    }
    println!(
        "backlog produced in {:.1} s ({} bytes per report on average)",
        started.elapsed().as_secs_f64(),
        bytes / count.max(1)
    );
    Ok(())
}

/// The sink through the backlog into a database of its own, with or without the verdicts, with
/// its default settings; returns its rate in reports per second, and the database.
async fn run_sink(
    topic: &str,
    total: i64,
    verdicts: bool,
) -> BenchResult<(f64, TestDatabase, PgPool)> {
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await?;
    sink::db::migrate(&pool).await?;
    let mut env: HashMap<String, String> = HashMap::from([
        ("WEBMON__KAFKA__BROKERS".into(), kafka_brokers().join(",")),
        ("WEBMON__KAFKA__TOPIC".into(), topic.to_string()),
        ("WEBMON__DATABASE__URL".into(), db.url.clone()),
        ("WEBMON__SINK__REBALANCE_INTERVAL".into(), "200ms".into()),
        ("WEBMON__SINK__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("WEBMON__SINK__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
    ]);
    // The sink's settings given to the benchmark (`WEBMON__SINK__FETCH_MAX_WAIT=10ms`, say)
    // apply to the sink it runs; it prints them, so a run says what was not the default.
    for (key, value) in std::env::vars().filter(|(k, _)| k.starts_with("WEBMON__SINK__")) {
        println!("  {key}={value}");
        env.insert(key, value);
    }
    let settings = SinkSettings::load(&SettingsSource {
        file: None,
        env: Some(env),
        base_dir: None,
    })?;
    let batch_size = settings.sink.batch_size;
    let mut app = sink::Application::build(settings).await?;
    if !verdicts {
        app = app.without_verdicts();
    }
    let stop = CancellationToken::new();
    let cpu0 = cpu_by_process();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    while offsets(&pool, topic).await < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink_secs = started.elapsed().as_secs_f64();
    let cpu = cpu_by_process().since(&cpu0);
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
         (from Kafka, batches of {batch_size}; {states} target states)"
    );
    cpu.print(total, sink_secs);
    Ok((sink_rate, db, pool))
}

/// CPU seconds (user + system) of the processes on the machine that take part, from `/proc`:
/// this one (the sink), the broker, PostgreSQL's (all its backends), and all others.
#[derive(Debug, Default, Clone, Copy)]
struct CpuSplit {
    sink: f64,
    broker: f64,
    postgres: f64,
    other: f64,
}

impl CpuSplit {
    fn since(&self, before: &CpuSplit) -> CpuSplit {
        CpuSplit {
            sink: self.sink - before.sink,
            broker: self.broker - before.broker,
            postgres: self.postgres - before.postgres,
            other: self.other - before.other,
        }
    }

    fn print(&self, reports: i64, seconds: f64) {
        let per = |s: f64| 1e6 * s / reports.max(1) as f64;
        println!(
            "  cpu per report: sink {:.1} µs, broker {:.1} µs, PostgreSQL {:.1} µs, other processes {:.1} µs \
             ({:.2} of the machine's cores busy on average)",
            per(self.sink),
            per(self.broker),
            per(self.postgres),
            per(self.other),
            (self.sink + self.broker + self.postgres + self.other) / seconds
        );
    }
}

/// Every process's CPU time so far, by who it is. Processes that ended in between are missed,
/// which is why PostgreSQL's connections are held in a pool for the whole run.
fn cpu_by_process() -> CpuSplit {
    let mut split = CpuSplit::default();
    let own = std::process::id().to_string();
    let tick = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return split;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        let seconds = ticks / tick;
        if name == own {
            split.sink += seconds;
        } else if comm == "tansu" {
            split.broker += seconds;
        } else if comm.starts_with("postgres") {
            split.postgres += seconds;
        } else {
            split.other += seconds;
        }
    }
    split
}

/// The partitioned table of the rows: `reports` (the compact schema) or `results` (the schema
/// before it, which the sink wrote through the partitioned table).
async fn row_parent(pool: &PgPool) -> BenchResult<String> {
    let parent: Option<String> =
        sqlx::query_scalar("SELECT COALESCE(to_regclass('reports'), to_regclass('results'))::text")
            .fetch_one(pool)
            .await?;
    Ok(parent.ok_or("no table of reports")?)
}

/// The day partitions holding the rows.
async fn row_tables(pool: &PgPool) -> BenchResult<Vec<String>> {
    let parent = row_parent(pool).await?;
    Ok(sqlx::query_scalar(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = $1::regclass ORDER BY 1",
    )
    .bind(parent)
    .fetch_all(pool)
    .await?)
}

/// Bytes per stored report: (heap + indexes + toast) of the row tables, and of the series and
/// targets (the compact schema's dimension tables; targets alone before it), over `rows`.
async fn bytes_per_report(pool: &PgPool, rows: i64) -> BenchResult<(f64, f64)> {
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    let mut row_bytes = 0i64;
    for table in row_tables(pool).await? {
        row_bytes += table_bytes(pool, &table).await?;
    }
    let mut dimension_bytes = table_bytes(pool, "targets").await?;
    let has_series: bool = sqlx::query_scalar("SELECT to_regclass('series') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if has_series {
        dimension_bytes += table_bytes(pool, "series").await?;
    }
    Ok((
        row_bytes as f64 / rows as f64,
        dimension_bytes as f64 / rows as f64,
    ))
}

async fn table_bytes(pool: &PgPool, table: &str) -> BenchResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
            .bind(table)
            .fetch_one(pool)
            .await?,
    )
}

/// The `COPY` ceilings, in rows per second: the stored rows dumped (binary) and loaded again
/// into the same (emptied) tables the sink wrote, and the same reports, as `results` shows
/// them, loaded into the plain table. Also the plain table's bytes per report.
async fn copy_ceilings(pool: &PgPool, total: i64) -> BenchResult<(f64, f64, f64)> {
    let mut conn = pool.acquire().await?;
    let plain_rows = dump(&mut conn, "SELECT * FROM results").await?;
    let mut dumps = Vec::new();
    for table in row_tables(pool).await? {
        let rows = dump(&mut conn, &format!("SELECT * FROM {table}")).await?;
        sqlx::query(&format!("TRUNCATE {table}"))
            .execute(&mut *conn)
            .await?;
        dumps.push((table, rows));
    }
    // The compact schema's sink writes straight into the day partitions; the one before it
    // wrote through the partitioned table.
    let parent = row_parent(pool).await?;
    let started = Instant::now();
    for (table, rows) in &dumps {
        let into = if parent == "results" { &parent } else { table };
        load(&mut conn, into, rows).await?;
    }
    let same = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "COPY into the sink's tables ({}): {total} rows in {:.1} s = {same:.0} rows/s",
        dumps.len(),
        started.elapsed().as_secs_f64()
    );
    drop(dumps);
    sqlx::query(PLAIN_TABLE).execute(&mut *conn).await?;
    sqlx::query("CREATE INDEX ON plain_results (target_id, scheduled_at DESC)")
        .execute(&mut *conn)
        .await?;
    let cpu0 = cpu_by_process();
    let started = Instant::now();
    load(&mut conn, "plain_results", &plain_rows).await?;
    let plain = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "COPY into the plain table: {total} rows in {:.1} s = {plain:.0} rows/s",
        started.elapsed().as_secs_f64()
    );
    cpu_by_process()
        .since(&cpu0)
        .print(total, started.elapsed().as_secs_f64());
    sqlx::query("VACUUM ANALYZE plain_results")
        .execute(&mut *conn)
        .await?;
    let plain_bytes = table_bytes(pool, "plain_results").await? as f64 / total as f64;
    Ok((same, plain, plain_bytes))
}

/// The rows of `query` in `COPY`'s binary format.
async fn dump(conn: &mut sqlx::PgConnection, query: &str) -> BenchResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut stream = conn
        .copy_out_raw(&format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
        .await?;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Loads `rows` (binary `COPY` data) into `table`.
async fn load(conn: &mut sqlx::PgConnection, table: &str, rows: &[u8]) -> BenchResult<()> {
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
        .await?;
    for chunk in rows.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(())
}
