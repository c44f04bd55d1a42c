//! Producer benchmark: realistic (~600-byte) reports from one process to the broker through
//! the publisher (every report written to the spool on its way), and the spool's write rates
//! (one report per append, and 1000 per append) and replay rate.
//!
//! ```sh
//! KAFKA_BROKERS=127.0.0.1:9092 cargo run --release -p checker --example publish_bench -- 1000000
//! ```

/// The allocator the binaries use (see `src/main.rs`), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use checker::publish::{self, Drained, PublishMetrics};
use checker::spool::{FileSpool, Message, Spool, SpoolMetrics};
use monitor_core::settings::{CheckerSettings, SettingsSource};
use monitor_core::testing::{create_topic, kafka_brokers, kafka_client, sample_report};
use tokio::sync::mpsc;

/// Rounds measured for each size of small rounds.
const ROUNDS: usize = 100;

#[tokio::main]
async fn main() {
    let total: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let client = kafka_client().await;
    let topic = create_topic(&client, 6).await;
    let dir = tempfile::tempdir().expect("dir");
    let settings = bench_settings(dir.path(), &topic);
    let reports: Vec<_> = (0..total)
        .map(|n| sample_report(&format!("target-{}", n % 5000), n / 5000))
        .collect();
    let bytes: usize = reports.iter().map(|r| r.to_json().len()).sum();
    println!(
        "{total} reports, {} bytes each on average",
        bytes / reports.len().max(1)
    );
    through_the_publisher(&settings, &reports, dir.path()).await;
    spool_rates(&reports, dir.path());
    // Small rounds: one report, or a handful, at a time, so every produce request is far
    // smaller than a TCP segment. How long from a round entering the publisher to the broker's
    // acknowledgement, linger included.
    for (per_round, gap_ms) in [
        (1, 50),
        (1, 0),
        (20, 0),
        (100, 0),
        (200, 0),
        (500, 0),
        (1000, 0),
        (2000, 0),
    ] {
        let gap = std::time::Duration::from_millis(gap_ms);
        let (p50, p99, max) = small_rounds(&settings, &reports, per_round, gap, dir.path()).await;
        println!(
            "small rounds: {per_round} report(s) per round, {gap:?} apart, linger {:?}: \
             round → acknowledged p50 {p50:?}, p99 {p99:?}, max {max:?}",
            settings.checker.producer.linger
        );
    }
}

/// The benchmark's settings, in `dir`: the test broker's `topic`, with the compression and
/// relay the environment asks for.
fn bench_settings(dir: &std::path::Path, topic: &str) -> CheckerSettings {
    // BENCH_COMPRESSION: none (default, the figures in docs/benchmarks.md), gzip, lz4, ...
    let compression = std::env::var("BENCH_COMPRESSION").unwrap_or_else(|_| "none".into());
    // BENCH_RELAY=false: connect to the broker directly, without the nodelay relay.
    let relay = std::env::var("BENCH_RELAY").unwrap_or_else(|_| "true".into());
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "monitored_urls = [\"http://127.0.0.1:9/\"]\n\
             [kafka]\nbrokers = [{}]\ntopic = \"{topic}\"\ncompression = \"{compression}\"\nnodelay_relay = {relay}\n\
             [checker]\nlinger = \"20ms\"\nbatch_max_reports = 20000\nproduce_timeout = \"10s\"\n",
            kafka_brokers()
                .iter()
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(",")
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

/// Every report through the publisher (and its spool) to the broker.
async fn through_the_publisher(
    settings: &CheckerSettings,
    reports: &[monitor_core::report::Report],
    dir: &std::path::Path,
) {
    let spool =
        FileSpool::open(&dir.join("spool"), u64::MAX, SpoolMetrics::default()).expect("spool");
    let metrics = PublishMetrics::default();
    let (tx, rx) = mpsc::channel(100_000);
    let started = Instant::now();
    let publisher = tokio::spawn(publish::run(
        rx,
        settings.kafka.clone().expect("kafka"),
        settings.checker.producer.clone(),
        Box::new(spool),
        metrics.clone(),
        Drained::default(),
    ));
    for r in reports {
        if tx.send(r.clone()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = publisher.await;
    let secs = started.elapsed().as_secs_f64();
    let produced = metrics.produced.get();
    println!(
        "publisher → broker: {produced} reports in {secs:.2} s = {:.0} reports/s (spooled {})",
        produced as f64 / secs,
        metrics.spooled.get()
    );
}

/// The spool alone: writes of 1000 reports per append and of one, then the replay.
fn spool_rates(reports: &[monitor_core::report::Report], dir: &std::path::Path) {
    let total = reports.len();
    let messages: Vec<Message> = reports.iter().map(Message::of).collect();
    let mut spool = FileSpool::open(&dir.join("spool-bench"), u64::MAX, SpoolMetrics::default())
        .expect("spool");
    let started = Instant::now();
    for chunk in messages.chunks(1000) {
        spool.append(chunk).expect("append");
    }
    spool.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "spool write, 1000 reports per append: {total} reports in {secs:.2} s = {:.0} reports/s",
        total as f64 / secs
    );
    // One report per append, as the publisher writes when reports come one at a time.
    let mut single = FileSpool::open(&dir.join("spool-single"), u64::MAX, SpoolMetrics::default())
        .expect("spool");
    let started = Instant::now();
    for m in &messages {
        single.append(std::slice::from_ref(m)).expect("append");
    }
    single.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "spool write, one report per append: {total} reports in {secs:.2} s = {:.0} reports/s",
        total as f64 / secs
    );
    drop(single);

    let started = Instant::now();
    let mut replayed = 0usize;
    loop {
        let batch = spool.peek(20_000).expect("peek");
        if batch.is_empty() {
            break;
        }
        replayed += batch.len();
        spool.commit(batch.len()).expect("commit");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "spool replay (read + commit): {replayed} reports in {secs:.2} s = {:.0} reports/s",
        replayed as f64 / secs
    );
}

/// Sends `ROUNDS` rounds of `per_round` reports, `gap` apart, each once the previous one is
/// acknowledged; returns p50, p99 and max of round → acknowledged.
async fn small_rounds(
    settings: &CheckerSettings,
    reports: &[monitor_core::report::Report],
    per_round: usize,
    gap: Duration,
    dir: &std::path::Path,
) -> (Duration, Duration, Duration) {
    let spool = FileSpool::open(
        &dir.join(format!("spool-small-{per_round}-{}", gap.as_millis())),
        u64::MAX,
        SpoolMetrics::default(),
    )
    .expect("spool");
    let metrics = PublishMetrics::default();
    let (tx, rx) = mpsc::channel(per_round.max(16));
    let publisher = tokio::spawn(publish::run(
        rx,
        settings.kafka.clone().expect("kafka"),
        settings.checker.producer.clone(),
        Box::new(spool),
        metrics.clone(),
        Drained::default(),
    ));
    let mut latencies = Vec::new();
    let mut sent_total = 0u64;
    for (i, round) in reports.chunks(per_round).take(ROUNDS + 1).enumerate() {
        let sent = Instant::now();
        for r in round {
            if tx.send(r.clone()).await.is_err() {
                break;
            }
        }
        sent_total += round.len() as u64;
        while metrics.produced.get() < sent_total {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // The first round also connects.
        if i > 0 {
            latencies.push(sent.elapsed());
        }
        tokio::time::sleep(gap).await;
    }
    drop(tx);
    let _ = publisher.await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}
