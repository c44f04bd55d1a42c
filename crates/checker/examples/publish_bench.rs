//! Producer benchmark: realistic (~600-byte) reports from one process to the broker through
//! the publisher, and the spool's write and replay rates.
//!
//! ```sh
//! KAFKA_BROKERS=127.0.0.1:9092 cargo run --release -p checker --example publish_bench -- 1000000
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use checker::publish::{self, Message, PublisherStats, Spool};
use checker::spool::FileSpool;
use monitor_core::settings::{CheckerSettings, SettingsSource};
use monitor_core::testing::{create_topic, kafka_brokers, kafka_client, sample_report};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() {
    let total: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let client = kafka_client().await;
    let topic = create_topic(&client, 6).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        format!(
            "monitored_urls = [\"http://127.0.0.1:9/\"]\n\
             [kafka]\nbrokers = [{}]\ntopic = \"{topic}\"\ncompression = \"none\"\n\
             [checker]\nlinger = \"20ms\"\nbatch_max_reports = 20000\nproduce_timeout = \"10s\"\n",
            kafka_brokers()
                .iter()
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .expect("write");
    let settings = CheckerSettings::load(
        &SettingsSource {
            file: Some(file),
            env: Some(Default::default()),
            base_dir: Some(dir.path().to_path_buf()),
        },
        true,
    )
    .expect("settings");
    let kafka = settings.kafka.expect("kafka");
    let reports: Vec<_> = (0..total)
        .map(|n| sample_report(&format!("target-{}", n % 5000), n / 5000))
        .collect();
    let bytes: usize = reports.iter().map(|r| r.to_json().len()).sum();
    println!(
        "{total} reports, {} bytes each on average",
        bytes / reports.len().max(1)
    );

    // Through the publisher to the broker.
    let spool = FileSpool::open(&dir.path().join("spool"), u64::MAX).expect("spool");
    let stats = Arc::new(PublisherStats::default());
    let (tx, rx) = mpsc::channel(100_000);
    let started = Instant::now();
    let publisher = tokio::spawn(publish::run(
        rx,
        kafka,
        settings.checker.producer.clone(),
        Box::new(spool),
        stats.clone(),
    ));
    for r in &reports {
        if tx.send(r.clone()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = publisher.await;
    let secs = started.elapsed().as_secs_f64();
    let produced = stats.produced.load(Ordering::Relaxed);
    println!(
        "publisher → broker: {produced} reports in {secs:.2} s = {:.0} reports/s (spooled {})",
        produced as f64 / secs,
        stats.spooled.load(Ordering::Relaxed)
    );

    // The spool alone.
    let messages: Vec<Message> = reports.iter().map(Message::of).collect();
    let mut spool = FileSpool::open(&dir.path().join("spool-bench"), u64::MAX).expect("spool");
    let started = Instant::now();
    for chunk in messages.chunks(1000) {
        spool.append(chunk).expect("append");
    }
    spool.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "spool write: {total} reports in {secs:.2} s = {:.0} reports/s",
        total as f64 / secs
    );
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
