//! The loop that consumes one partition: fetch, batch, store, and resume exactly where the
//! stored offset says.
//!
//! Batches are bounded by count (`sink.batch_size`) and by bytes ([`MAX_BATCH_BYTES`]), so no
//! run of large messages costs unbounded memory or one oversized statement. The messages of a
//! fetch that do not fit in the batch wait for the next one (at most one fetch,
//! [`MAX_FETCH_BYTES`]) rather than being fetched again: a fetch from inside a broker's record
//! batch is answered by some brokers from the next record batch on, which would skip the rest
//! of that one. Each message is decoded (see [`crate::decode`]) as it joins the batch, so the
//! store only ever sees decoded batches. A batch the database refuses for its data is bisected
//! by the store, so no message can stop the partition; the partition's progress is reported to
//! [`SinkMetrics`], which makes a stall visible in `/metrics` and `/readyz`. What all partitions
//! of a replica hold at once is bounded by one [`Budget`] (`sink.max_bytes_in_flight`).

mod budget;

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

use crate::decode::{self, Window};
use crate::error::SinkError;
use crate::metrics::{PartitionLabels, SinkMetrics};
use crate::retry::retry_until_stopped;
use crate::store::{Batch, ReportStore, Stored};

pub use budget::{Budget, Share, MIN_FETCH_BYTES};

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

/// What the consumers of a topic's partitions share: one is cloned for each partition taken.
#[derive(Clone)]
pub struct Consumer {
    /// The Kafka client.
    pub client: Arc<Client>,
    /// Where batches are stored.
    pub store: Arc<ReportStore>,
    /// The topic.
    pub topic: String,
    /// How partitions are consumed.
    pub config: ConsumerConfig,
    /// Where progress is recorded.
    pub metrics: Arc<SinkMetrics>,
    /// The message bytes the replica's partitions may hold at once.
    pub budget: Arc<Budget>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Consumes `partition` until `stop` fires (then stores what it holds and returns `Ok`), or
    /// until another replica is found to own it (`Err(SinkError::OffsetMoved)`).
    #[instrument(skip_all, fields(topic = %self.topic, partition))]
    pub async fn consume(self, partition: i32, stop: CancellationToken) -> Result<(), SinkError> {
        let Some(mut position) = self.open(partition, &stop).await else {
            return Ok(());
        };
        info!(
            offset = position.position,
            stored = position.expected.is_some(),
            "consuming"
        );
        let _watch = StallWatch::start(self.metrics.clone(), partition);
        let mut share = self.budget.join();
        loop {
            let mut batch = position.next_batch(&self.topic);
            position
                .fill_batch(&mut batch, &mut share, &self.metrics, &stop)
                .await;
            if !batch.is_empty() || Some(batch.next_offset) != position.expected {
                let stored = store_batch(&self.store, &mut batch, &self.metrics, &stop).await;
                position.stored(&batch, &self.metrics);
                if !stored? {
                    // Shutting down: what is not stored is read again by the next owner.
                    return Ok(());
                }
            }
            share.hold(position.pending_bytes);
            if stop.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Where consumption of `partition` starts: the stored offset, or the earliest one when
    /// none is stored. `None` when stopped first.
    async fn open(&self, partition: i32, stop: &CancellationToken) -> Option<Position> {
        let client = retry_until_stopped(
            stop,
            || {
                let topic = self.topic.clone();
                self.client
                    .partition_client(topic, partition, UnknownTopicHandling::Retry)
            },
            |e| warn!(error = %e, "cannot reach the partition's leader; retrying"),
        )
        .await?;
        let expected = retry_until_stopped(
            stop,
            || self.store.next_offset(&self.topic, partition),
            |e| warn!(error = %e, "cannot read the stored offset; retrying"),
        )
        .await?;
        let position = match expected {
            Some(o) => o,
            None => earliest(&client, stop).await?,
        };
        Some(Position {
            client,
            partition,
            config: self.config,
            expected,
            position,
            // Nothing stored yet: consumption starts at the earliest offset.
            start: position,
            pending: VecDeque::new(),
            pending_bytes: 0,
            high_watermark: None,
        })
    }
}

/// Where the consumer of one partition stands.
struct Position {
    client: PartitionClient,
    partition: i32,
    config: ConsumerConfig,
    /// The stored next offset (`None`: nothing stored yet).
    expected: Option<i64>,
    /// The next offset to fetch.
    position: i64,
    /// Where consumption started.
    start: i64,
    /// Fetched messages that did not fit in the last batch; `position` is past them.
    pending: VecDeque<RecordAndOffset>,
    /// Bytes of keys and values in `pending`.
    pending_bytes: usize,
    /// The partition's high watermark, once fetched.
    high_watermark: Option<i64>,
}

impl Position {
    /// An empty batch continuing from the stored offset.
    fn next_batch(&self, topic: &str) -> Batch {
        let resume = self.pending.front().map_or(self.position, |r| r.offset);
        Batch::new(topic, self.partition, self.expected, resume)
    }

    /// Fills `batch` from what is pending and from fetches until it is full, its linger is
    /// over, the budget is spent while it holds messages, or `stop` fires, or the partition
    /// must start again from its earliest offset.
    async fn fill_batch(
        &mut self,
        batch: &mut Batch,
        share: &mut Share,
        metrics: &SinkMetrics,
        stop: &CancellationToken,
    ) {
        let mut backoff = Backoff::default();
        self.fill(batch);
        let mut deadline = self.linger_from(batch, None);
        while !stop.is_cancelled() && !full(batch, &self.config) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let Some(fetch_bytes) = reserve_fetch(share, batch, stop).await else {
                break;
            };
            let max_wait_ms = max_wait_ms(deadline, self.config.fetch_max_wait);
            let max_bytes = i32::try_from(fetch_bytes).unwrap_or(MAX_FETCH_BYTES);
            let fetched = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.client.fetch_records(self.position, 1..max_bytes, max_wait_ms) => r,
            };
            match fetched {
                Ok((records, watermark)) => {
                    backoff.reset();
                    self.take(records, watermark, batch, metrics);
                    share.hold(batch.bytes() + self.pending_bytes);
                    deadline = self.linger_from(batch, deadline);
                }
                Err(KafkaError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    if let Some(first) = self.restart_from_earliest(stop).await {
                        batch.next_offset = first;
                    }
                    break;
                }
                Err(e) => {
                    share.hold(batch.bytes() + self.pending_bytes);
                    warn!(error = %e, "fetch failed; retrying");
                    if !backoff.sleep(stop.cancelled()).await {
                        break;
                    }
                }
            }
        }
    }

    /// The batch's deadline: `deadline` once set, else one linger from now if the batch holds
    /// a message.
    fn linger_from(&self, batch: &Batch, deadline: Option<Instant>) -> Option<Instant> {
        match deadline {
            Some(d) => Some(d),
            None if !batch.is_empty() => Some(Instant::now() + self.config.batch_linger),
            None => None,
        }
    }

    /// Queues fetched `records`, moves what fits into `batch`, and records the lag.
    fn take(
        &mut self,
        records: Vec<RecordAndOffset>,
        watermark: i64,
        batch: &mut Batch,
        metrics: &SinkMetrics,
    ) {
        for record in records {
            if record.offset >= self.position {
                self.position = record.offset + 1;
                self.pending_bytes += record_bytes(&record);
                self.pending.push_back(record);
            }
        }
        self.fill(batch);
        self.high_watermark = Some(watermark);
        let partition = self.partition;
        metrics.partition_waiting(partition, self.waiting(watermark));
        metrics
            .lag
            .get_or_create(&PartitionLabels { partition })
            .set(watermark - self.position);
        debug!(lag = watermark - self.position, "fetched");
    }

    /// After an out-of-range fetch: continues from the partition's earliest offset, which it
    /// returns. `None` when stopped first.
    async fn restart_from_earliest(&mut self, stop: &CancellationToken) -> Option<i64> {
        let first = earliest(&self.client, stop).await?;
        let position = self.position;
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
        self.position = first;
        Some(first)
    }

    /// Moves pending messages into `batch`, decoding each, until it is full or none is left.
    fn fill(&mut self, batch: &mut Batch) {
        while !full(batch, &self.config) {
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= record_bytes(&record);
            let window = &self.config.window;
            let (key, value) = (record.record.key, record.record.value);
            decode::push(batch, window, record.offset, key, value);
        }
    }

    /// After storing `batch` (wholly or in part): its stored offset is the partition's.
    fn stored(&mut self, batch: &Batch, metrics: &SinkMetrics) {
        if batch.expected_offset == self.expected {
            return;
        }
        self.expected = batch.expected_offset;
        metrics.partition_advanced(self.partition);
        if let Some(watermark) = self.high_watermark {
            metrics.partition_waiting(self.partition, self.waiting(watermark));
        }
    }

    /// Whether the broker holds messages past the stored offset (`start` when none is stored).
    fn waiting(&self, high_watermark: i64) -> bool {
        high_watermark > self.expected.unwrap_or(self.start)
    }
}

/// How long the broker may hold the next fetch: until the batch's deadline, at most
/// `fetch_max_wait`, at least a millisecond.
fn max_wait_ms(deadline: Option<Instant>, fetch_max_wait: Duration) -> i32 {
    let max_wait = match deadline {
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .min(fetch_max_wait),
        None => fetch_max_wait,
    };
    i32::try_from(max_wait.as_millis())
        .unwrap_or(i32::MAX)
        .max(1)
}

/// Reserves the next fetch's bytes and returns them; `None` when the batch should be stored
/// first (the budget is spent and the batch holds messages) or `stop` fired while waiting.
async fn reserve_fetch(
    share: &mut Share,
    batch: &Batch,
    stop: &CancellationToken,
) -> Option<usize> {
    let bytes = share.fetch_bytes(MAX_FETCH_BYTES as usize);
    if share.try_reserve(bytes) {
        return Some(bytes);
    }
    if !batch.is_empty() {
        debug!("the replica's bytes in flight are spent: storing the batch first");
        return None;
    }
    tokio::select! {
        _ = stop.cancelled() => None,
        _ = share.reserve(bytes) => Some(bytes),
    }
}

/// Bytes of a record's key and value, as counted in batches.
fn record_bytes(record: &RecordAndOffset) -> usize {
    record.record.key.as_ref().map_or(0, Vec::len)
        + record.record.value.as_ref().map_or(0, Vec::len)
}

/// Whether the batch is as large as a batch may be.
fn full(batch: &Batch, config: &ConsumerConfig) -> bool {
    batch.len() >= config.batch_size || (!batch.is_empty() && batch.bytes() >= config.batch_bytes)
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
    // Not `retry_until_stopped`: each attempt resumes the batch where the last one left it.
    let mut backoff = Backoff::default();
    let started = Instant::now();
    loop {
        let mut done = Stored::default();
        let result = store.store_bisecting(batch, &mut done).await;
        count(metrics, done, started);
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
    metrics.late_reports.inc_by(stored.folded.late);
    metrics.incidents_opened.inc_by(stored.folded.opened);
    debug!(
        rows = stored.rows,
        duplicates = stored.duplicates,
        dead_letters = stored.dead_letters,
        late = stored.folded.late,
        verdicts = stored.folded.verdicts,
        "stored"
    );
}

/// The partition's earliest offset, retried until known or `stop`.
async fn earliest(partition_client: &PartitionClient, stop: &CancellationToken) -> Option<i64> {
    retry_until_stopped(
        stop,
        || partition_client.get_offset(OffsetAt::Earliest),
        |e| warn!(error = %e, "cannot read the earliest offset; retrying"),
    )
    .await
}
