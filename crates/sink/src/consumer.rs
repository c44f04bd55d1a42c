//! The loop that consumes one partition: fetch, batch, store, and resume exactly where the
//! stored offset says.

use std::sync::Arc;
use std::time::Duration;

use monitor_core::backoff::Backoff;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::metrics::{PartitionLabels, SinkMetrics};
use crate::store::{Batch, ReportStore};
use crate::SinkError;

/// Most bytes asked for in one fetch.
pub const MAX_FETCH_BYTES: i32 = 8 * 1024 * 1024;

/// How a partition is consumed.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Most messages per transaction.
    pub batch_size: usize,
    /// Longest wait to fill a batch once it holds a message.
    pub batch_linger: Duration,
    /// Longest time the broker may hold a fetch.
    pub fetch_max_wait: Duration,
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

    loop {
        let mut batch = Batch::new(&topic, partition, expected, position);
        let mut deadline: Option<Instant> = None;
        backoff.reset();
        while !stop.is_cancelled() && batch.len() < config.batch_size {
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
                Ok((records, high_watermark)) => {
                    backoff.reset();
                    for record in records {
                        if record.offset < position {
                            continue;
                        }
                        position = record.offset + 1;
                        batch.push(record.offset, record.record.key, record.record.value);
                    }
                    metrics
                        .lag
                        .get_or_create(&PartitionLabels { partition })
                        .set(high_watermark - position);
                    debug!(lag = high_watermark - position, "fetched");
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
            backoff.reset();
            loop {
                let started = Instant::now();
                match store.store(&batch).await {
                    Ok(stored) => {
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
                            next_offset = batch.next_offset,
                            "stored"
                        );
                        expected = Some(batch.next_offset);
                        break;
                    }
                    Err(e @ SinkError::OffsetMoved { .. }) => return Err(e),
                    Err(e) => {
                        metrics.db_errors.inc();
                        warn!(error = %e, messages = batch.len(), "storing the batch failed; nothing was stored, retrying");
                        if !backoff.sleep(stop.cancelled()).await {
                            // Shutting down: nothing of this batch is stored and the offset did
                            // not move, so the next owner reads it again.
                            return Ok(());
                        }
                    }
                }
            }
        }
        if stop.is_cancelled() {
            return Ok(());
        }
    }
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
