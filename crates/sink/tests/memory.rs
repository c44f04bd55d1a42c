//! The sink's memory is bounded by the bytes it holds in flight (`sink.max_bytes_in_flight`),
//! not by the backlog it works through nor by the partitions it owns (each of which could
//! otherwise hold a fetch, [`MAX_FETCH_BYTES`], and a batch, [`MAX_BATCH_BYTES`]). The `sink`
//! binary works through a backlog of the largest valid reports (URL, pattern and error near
//! their bounds, ~14 KiB each) several times larger than the bound, and its peak resident
//! memory is compared with the same binary's after a small backlog of ordinary reports.

mod support;

use std::time::Duration;

use monitor_core::report::{report_id, MAX_ERROR_CHARS, MAX_PATTERN_CHARS, MAX_URL_CHARS};
use monitor_core::testing::{create_topic, kafka_client, peak_rss, sample_report, TestDatabase};
use monitor_core::Status;
use rskafka::client::Client;
use sink::consumer::{MAX_BATCH_BYTES, MAX_FETCH_BYTES};

use support::{pool, produce, wait_for_offsets, SinkProcess};

/// Partitions of the topic; the sink owns them all.
const PARTITIONS: i32 = 4;

/// Reports of the large backlog, per partition (~14 KiB each: ~340 MiB in all).
const LARGE_PER_PARTITION: i64 = 6_000;

/// The sink's `max_bytes_in_flight` in this test, well under what the partitions could hold
/// without it (4 × (8 + 16) MiB).
const BYTES_IN_FLIGHT: usize = 8 << 20;

/// Reports of the small backlog, per partition (~600 bytes each).
const SMALL_PER_PARTITION: i64 = 2_000;

/// Targets the reports of one partition are spread over.
const TARGETS_PER_PARTITION: i64 = 100;

/// What one byte held in flight may cost in resident memory at the peak: the fetch's response
/// and the message taken from it, the decoded report, the statement's parameters and their
/// encoding, plus what the allocator keeps of them (measured: about 5).
const BYTES_PER_BYTE_IN_FLIGHT: usize = 8;

/// What large reports cost beyond the bytes in flight, whatever the budget: statements and
/// buffers sized for large reports rather than ordinary ones (measured: about 30 MiB).
const FIXED_GROWTH: usize = 48 << 20;

/// How long the sink may take to store a backlog.
const STORED_WITHIN: Duration = Duration::from_secs(300);

/// A report of `n`, with URL, pattern and error near their bounds.
fn large_report(partition: i32, n: i64) -> Vec<u8> {
    let target = format!("t{partition}-{}", n % TARGETS_PER_PARTITION);
    let mut r = sample_report(&target, n);
    r.checker_id = "eu-1".into();
    r.report_id = report_id(&r.checker_id, &target, r.scheduled_at);
    let path: String = (0..MAX_URL_CHARS - 64)
        .map(|i| char::from(b'a' + ((i as i64 * 7 + n) % 26) as u8))
        .collect();
    r.url = format!("https://{target}.example/{path}");
    r.regexp = Some("(ok|fine)".repeat((MAX_PATTERN_CHARS - 16) / 9));
    r.status = Status::Down;
    r.failure_class = Some(monitor_core::FailureClass::BodyMismatch);
    r.regexp_matched = Some(false);
    r.error = Some("é".repeat(MAX_ERROR_CHARS - 1));
    r.to_json()
}

/// A report of `n` as the checker writes them most of the time.
fn small_report(partition: i32, n: i64) -> Vec<u8> {
    sample_report(&format!("t{partition}-{}", n % TARGETS_PER_PARTITION), n).to_json()
}

/// Produces `per_partition` reports built by `report` to each partition.
async fn produce_backlog(
    client: &Client,
    topic: &str,
    per_partition: i64,
    report: fn(i32, i64) -> Vec<u8>,
) -> usize {
    let mut bytes = 0;
    for p in 0..PARTITIONS {
        let values: Vec<Vec<u8>> = (0..per_partition).map(|n| report(p, n)).collect();
        bytes += values.iter().map(Vec::len).sum::<usize>();
        produce(client, topic, p, &format!("p{p}"), values).await;
    }
    bytes
}

/// Stores a backlog of `per_partition` reports built by `report` with a `sink` process and
/// returns the backlog's bytes and the process's peak resident memory.
async fn peak_while_storing(per_partition: i64, report: fn(i32, i64) -> Vec<u8>) -> (usize, usize) {
    let client = kafka_client().await;
    let topic = create_topic(&client, PARTITIONS).await;
    let db = TestDatabase::create().await;
    let backlog = produce_backlog(&client, &topic, per_partition, report).await;
    let mut env = support::env(&topic, &db.url);
    // The default batch size, so that batches are bounded by bytes, as in production.
    env.remove("WEBMON__SINK__BATCH_SIZE");
    env.insert(
        "WEBMON__SINK__MAX_BYTES_IN_FLIGHT".into(),
        BYTES_IN_FLIGHT.to_string(),
    );
    let sink = SinkProcess::start(env);
    let pool = pool(&db).await;
    wait_for_offsets(
        &pool,
        &topic,
        per_partition * i64::from(PARTITIONS),
        STORED_WITHIN,
    )
    .await;
    let peak = usize::try_from(peak_rss(sink.0.id())).expect("a peak that fits in memory");
    drop(sink);
    pool.close().await;
    db.drop_database().await;
    (backlog, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_backlog_of_large_reports_costs_memory_in_flight_not_the_backlog() {
    let (small_backlog, small_peak) = peak_while_storing(SMALL_PER_PARTITION, small_report).await;
    let (large_backlog, large_peak) = peak_while_storing(LARGE_PER_PARTITION, large_report).await;
    let unbounded = PARTITIONS as usize * (MAX_FETCH_BYTES as usize + MAX_BATCH_BYTES);
    let bound = FIXED_GROWTH + BYTES_IN_FLIGHT * BYTES_PER_BYTE_IN_FLIGHT;
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "small backlog {:.0} MiB: peak {:.0} MiB; large backlog {:.0} MiB: peak {:.0} MiB \
         (+{:.0} MiB; in flight at most {:.0} MiB, {:.0} MiB without the budget; bound +{:.0} MiB)",
        mib(small_backlog),
        mib(small_peak),
        mib(large_backlog),
        mib(large_peak),
        mib(large_peak.saturating_sub(small_peak)),
        mib(BYTES_IN_FLIGHT),
        mib(unbounded),
        mib(bound),
    );
    assert!(
        large_backlog > 2 * bound && unbounded * BYTES_PER_BYTE_IN_FLIGHT > 2 * bound,
        "the large backlog must dwarf the bound for the test to mean anything"
    );
    assert!(
        large_peak.saturating_sub(small_peak) <= bound,
        "storing {:.0} MiB of large reports took the sink from {:.0} to {:.0} MiB, more than \
         {:.0} MiB more than {BYTES_PER_BYTE_IN_FLIGHT}x the {:.0} MiB its partitions may hold in flight",
        mib(large_backlog),
        mib(small_peak),
        mib(large_peak),
        mib(FIXED_GROWTH),
        mib(BYTES_IN_FLIGHT),
    );
}
