//! The loop that consumes one partition: fetch, batch, store, and resume exactly where the
//! stored offset says.
//!
//! Batches are bounded by count (`sink.batch_size`) and by bytes ([`MAX_BATCH_BYTES`]), so no
//! run of large messages costs unbounded memory or one oversized statement. The messages of a
//! fetch that do not fit in the batch wait for the next one (at most one fetch,
//! [`MAX_FETCH_BYTES`]) rather than being fetched again: a fetch from inside a broker's record
//! batch is answered by some brokers from the next record batch on, which would skip the rest
//! of that one. A batch the
//! database refuses for its data is bisected by the store, so no message can stop the
//! partition; the partition's progress is reported to [`SinkMetrics`], which makes a stall
//! visible in `/metrics` and `/readyz`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use monitor_core::runtime::backoff::Backoff;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::RecordAndOffset;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::decode::Window;
use crate::metrics::{PartitionLabels, SinkMetrics};
use crate::store::{Batch, ReportStore, Stored};
use crate::SinkError;

/// Most bytes asked for in one fetch.
pub const MAX_FETCH_BYTES: i32 = 8 * 1024 * 1024;

/// Most bytes of keys and values in one batch: a batch is stored once it holds this much (one
/// message larger than this is a batch of its own). With reports of at most 64 KiB this keeps
/// one statement's arrays well inside PostgreSQL's 1 GiB value limit and the sink's memory.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How often a partition's `partition_stalled_seconds` is brought up to date.
const STALL_REFRESH: Duration = Duration::from_secs(1);

/// How a partition is consumed.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Most messages per transaction.
    pub batch_size: usize,
    /// Longest wait to fill a batch once it holds a message.
    pub batch_linger: Duration,
    /// Longest time the broker may hold a fetch.
    pub fetch_max_wait: Duration,
    /// Most bytes of keys and values per transaction ([`MAX_BATCH_BYTES`] by default).
    pub batch_bytes: usize,
    /// The span of `scheduled_at` a stored report may have (outside: dead letter).
    pub window: Window,
}

/// Keeps the partition's stall gauge current while the consumer runs, even while it is stuck
/// in a statement; stops with the consumer.
struct StallWatch {
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<SinkMetrics>,
    partition: i32,
    consumer: u64,
}

impl StallWatch {
    fn start(metrics: Arc<SinkMetrics>, partition: i32) -> StallWatch {
        let consumer = metrics.partition_started(partition);
        let watched = metrics.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STALL_REFRESH);
            loop {
                tick.tick().await;
                watched.refresh(partition);
            }
        });
        StallWatch {
            task,
            metrics,
            partition,
            consumer,
        }
    }
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics
            .partition_stopped(self.partition, self.consumer);
    }
}

/// Consumes `partition` until `stop` fires (then stores what it holds and returns `Ok`), or
/// until another replica is found to own it (`Err(SinkError::OffsetMoved)`).
#[instrument(skip_all, fields(topic = %topic, partition))]
pub async fn consume(
    client: Arc<Client>,
    store: Arc<ReportStore>,
    topic: String,
    partition: i32,
    config: ConsumerConfig,
    metrics: Arc<SinkMetrics>,
    stop: CancellationToken,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::default();
    let partition_client = loop {
        match client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
        {
            Ok(pc) => break pc,
            Err(e) => {
                warn!(error = %e, "cannot reach the partition's leader; retrying");
                if !backoff.sleep(stop.cancelled()).await {
                    return Ok(());
                }
            }
        }
    };
    backoff.reset();
    let mut expected = loop {
        match store.next_offset(&topic, partition).await {
            Ok(o) => break o,
            Err(e) => {
                warn!(error = %e, "cannot read the stored offset; retrying");
                if !backoff.sleep(stop.cancelled()).await {
                    return Ok(());
                }
            }
        }
    };
    let mut position = match expected {
        Some(o) => o,
        None => match earliest(&partition_client, &stop).await {
            Some(o) => o,
            None => return Ok(()),
        },
    };
    info!(offset = position, stored = expected.is_some(), "consuming");
    let _watch = StallWatch::start(metrics.clone(), partition);
    let mut high_watermark: Option<i64> = None;
    // Nothing stored yet: consumption starts at the earliest offset.
    let start = position;
    // Fetched messages that did not fit in the last batch; `position` is past them.
    let mut pending: VecDeque<RecordAndOffset> = VecDeque::new();

    loop {
        let resume = pending.front().map_or(position, |r| r.offset);
        let mut batch = Batch::new(&topic, partition, expected, resume).with_window(config.window);
        let mut deadline: Option<Instant> = None;
        backoff.reset();
        fill(&mut batch, &mut pending, &config);
        if !batch.is_empty() {
            deadline = Some(Instant::now() + config.batch_linger);
        }
        while !stop.is_cancelled() && !full(&batch, &config) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let max_wait = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(config.fetch_max_wait),
                None => config.fetch_max_wait,
            };
            let max_wait_ms = i32::try_from(max_wait.as_millis())
                .unwrap_or(i32::MAX)
                .max(1);
            let fetched = tokio::select! {
                _ = stop.cancelled() => break,
                r = partition_client.fetch_records(position, 1..MAX_FETCH_BYTES, max_wait_ms) => r,
            };
            match fetched {
                Ok((records, watermark)) => {
                    backoff.reset();
                    for record in records {
                        if record.offset >= position {
                            position = record.offset + 1;
                            pending.push_back(record);
                        }
                    }
                    fill(&mut batch, &mut pending, &config);
                    high_watermark = Some(watermark);
                    metrics.partition_waiting(partition, waiting(watermark, expected, start));
                    metrics
                        .lag
                        .get_or_create(&PartitionLabels { partition })
                        .set(watermark - position);
                    debug!(lag = watermark - position, "fetched");
                    if !batch.is_empty() && deadline.is_none() {
                        deadline = Some(Instant::now() + config.batch_linger);
                    }
                }
                Err(KafkaError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let Some(first) = earliest(&partition_client, &stop).await else {
                        break;
                    };
                    if first > position {
                        warn!(
                            skipped = first - position,
                            from = position,
                            to = first,
                            "offset out of range: the broker no longer holds these messages (retention); continuing from the earliest"
                        );
                    } else {
                        warn!(
                            stored = position,
                            earliest = first,
                            "offset out of range beyond the end of the partition (was the topic re-created?); continuing from the earliest"
                        );
                    }
                    position = first;
                    batch.next_offset = first;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "fetch failed; retrying");
                    if !backoff.sleep(stop.cancelled()).await {
                        break;
                    }
                }
            }
        }

        if !batch.is_empty() || Some(batch.next_offset) != expected {
            let stored = store_batch(&store, &mut batch, &metrics, &stop).await;
            if batch.expected_offset != expected {
                expected = batch.expected_offset;
                metrics.partition_advanced(partition);
                if let Some(watermark) = high_watermark {
                    metrics.partition_waiting(partition, waiting(watermark, expected, start));
                }
            }
            match stored {
                Ok(true) => {}
                // Shutting down: what is not stored is read again by the next owner.
                Ok(false) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if stop.is_cancelled() {
            return Ok(());
        }
    }
}

/// Whether the batch is as large as a batch may be.
fn full(batch: &Batch, config: &ConsumerConfig) -> bool {
    batch.len() >= config.batch_size || (!batch.is_empty() && batch.bytes() >= config.batch_bytes)
}

/// Moves fetched messages into `batch` until it is full or none is left.
fn fill(batch: &mut Batch, pending: &mut VecDeque<RecordAndOffset>, config: &ConsumerConfig) {
    while !full(batch, config) {
        let Some(record) = pending.pop_front() else {
            break;
        };
        batch.push(record.offset, record.record.key, record.record.value);
    }
}

/// Whether the broker holds messages past the stored offset (`start` when none is stored).
fn waiting(high_watermark: i64, stored: Option<i64>, start: i64) -> bool {
    high_watermark > stored.unwrap_or(start)
}

/// Stores `batch`, retrying what is not about its data until stored (`Ok(true)`) or `stop`
/// (`Ok(false)`). What is stored is removed from `batch` as it goes; its `expected_offset` is
/// the stored offset afterwards. `Err` only when another replica owns the partition.
async fn store_batch(
    store: &ReportStore,
    batch: &mut Batch,
    metrics: &SinkMetrics,
    stop: &CancellationToken,
) -> Result<bool, SinkError> {
    let mut backoff = Backoff::default();
    let started = Instant::now();
    let mut done = Stored::default();
    loop {
        let result = store.store_bisecting(batch, &mut done).await;
        count(metrics, done, started);
        done = Stored::default();
        match result {
            Ok(()) => {
                debug!(next_offset = batch.next_offset, "stored");
                return Ok(true);
            }
            Err(e @ SinkError::OffsetMoved { .. }) => return Err(e),
            Err(e) => {
                metrics.db_errors.inc();
                warn!(error = %e, messages = batch.len(), "storing the batch failed; retrying what is not stored");
                if !backoff.sleep(stop.cancelled()).await {
                    return Ok(false);
                }
            }
        }
    }
}

fn count(metrics: &SinkMetrics, stored: Stored, started: Instant) {
    if stored == Stored::default() {
        return;
    }
    metrics
        .batch_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.rows.inc_by(stored.rows);
    metrics.duplicates.inc_by(stored.duplicates);
    metrics.dead_letters.inc_by(stored.dead_letters);
    debug!(
        rows = stored.rows,
        duplicates = stored.duplicates,
        dead_letters = stored.dead_letters,
        "stored"
    );
}

/// The partition's earliest offset, retried until known or `stop`.
async fn earliest(partition_client: &PartitionClient, stop: &CancellationToken) -> Option<i64> {
    let mut backoff = Backoff::default();
    loop {
        match partition_client.get_offset(OffsetAt::Earliest).await {
            Ok(o) => return Some(o),
            Err(e) => {
                warn!(error = %e, "cannot read the earliest offset; retrying");
                if !backoff.sleep(stop.cancelled()).await {
                    return None;
                }
            }
        }
    }
}
