//! Delivery of reports to Kafka that loses nothing: batched per round, keyed by target (so a
//! target's reports share a partition and keep their order), and spooled to disk whenever
//! Kafka is unreachable or slow.
//!
//! The publisher is in one of two states:
//! - **direct**: reports gather in memory for at most one linger, then go to Kafka in one
//!   round (one produce request per partition, all partitions at once). A round that fails,
//!   or takes longer than `produce_timeout`, goes to the spool with everything behind it.
//! - **spooling**: every new report is appended to the spool (flushed to disk every second, so
//!   a crash loses at most that second), while the spool is replayed to Kafka oldest first,
//!   with exponential backoff and jitter between failures. Once the spool is empty, back to
//!   direct. A checker that starts with a spool left over starts here.
//!
//! Delivery is at least once: a round that timed out may still have been written by the
//! broker, and is sent again from the spool. Duplicates carry the same `report_id`, and the
//! sink stores each report once.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monitor_core::report::Report;
use monitor_core::settings::{KafkaSettings, ProducerSettings};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use monitor_core::backoff::Backoff;

pub use crate::topic::{Produced, PublishError, ReportTopic};
/// Spooled reports are flushed to disk at least this often.
const SPOOL_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One report as it travels: the Kafka key (the target id) and the JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The target id.
    pub key: Vec<u8>,
    /// The report as JSON.
    pub value: Vec<u8>,
}

impl Message {
    /// The message of a report.
    pub fn of(report: &Report) -> Message {
        Message {
            key: report.target_id.as_bytes().to_vec(),
            value: report.to_json(),
        }
    }
}

/// Where reports wait while Kafka cannot take them: a durable FIFO.
pub trait Spool: Send {
    /// Appends messages at the end.
    fn append(&mut self, messages: &[Message]) -> io::Result<()>;
    /// Makes what was appended durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Up to `max` of the oldest messages, without removing them.
    fn peek(&mut self, max: usize) -> io::Result<Vec<Message>>;
    /// Removes the `n` oldest messages (delivered).
    fn commit(&mut self, n: usize) -> io::Result<()>;
    /// Whether nothing waits.
    fn is_empty(&self) -> bool;
}

/// Counters of the publisher, for metrics.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Reports acknowledged by Kafka.
    pub produced: AtomicU64,
    /// Reports written to the spool.
    pub spooled: AtomicU64,
    /// Failed or timed-out produce rounds.
    pub produce_errors: AtomicU64,
    /// Duration of the last successful produce round, in microseconds.
    pub last_round_micros: AtomicU64,
    /// Reports the brokers refused as too large even alone: dropped, never deliverable.
    pub too_large: AtomicU64,
}

/// Delivers the reports of `reports` until the channel closes (all checks done), then flushes
/// within `settings.shutdown_timeout` and spools whatever remains.
pub async fn run(
    mut reports: mpsc::Receiver<Report>,
    kafka: KafkaSettings,
    settings: ProducerSettings,
    mut spool: Box<dyn Spool>,
    stats: Arc<PublisherStats>,
) {
    let mut topic: Option<ReportTopic> = None;
    let mut pending: Vec<Message> = Vec::new();
    let mut pending_since: Option<Instant> = None;
    let mut spooling = !spool.is_empty();
    if spooling {
        info!("a spool is left from an earlier run: replaying it first");
    }
    let mut backoff = Backoff::default();
    let mut retry_at = Instant::now();
    let mut flush_at = Instant::now() + SPOOL_FLUSH_EVERY;
    let mut closed = false;

    while !closed {
        if spooling {
            // New reports go behind the spooled ones, keeping each target's order.
            let wake = retry_at.min(flush_at);
            tokio::select! {
                r = reports.recv() => match r {
                    Some(report) => {
                        let m = Message::of(&report);
                        if let Err(e) = spool.append(std::slice::from_ref(&m)) {
                            error!(error = %e, "cannot write to the spool: the report is lost");
                        } else {
                            stats.spooled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => closed = true,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= flush_at {
                if let Err(e) = spool.flush() {
                    error!(error = %e, "cannot flush the spool");
                }
                flush_at = Instant::now() + SPOOL_FLUSH_EVERY;
            }
            if Instant::now() >= retry_at {
                match replay_once(&mut topic, &kafka, &settings, spool.as_mut(), &stats).await {
                    Ok(()) => {
                        backoff = Backoff::default();
                        retry_at = Instant::now();
                        if spool.is_empty() {
                            info!("spool replayed: delivering directly again");
                            spooling = false;
                        }
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Kafka unavailable; reports are spooled");
                        retry_at = Instant::now() + delay;
                    }
                }
            }
            continue;
        }

        // Direct: gather for one linger, then one round.
        let deadline = pending_since.map(|t| t + settings.linger);
        tokio::select! {
            r = reports.recv() => match r {
                Some(report) => {
                    pending.push(Message::of(&report));
                    pending_since.get_or_insert_with(Instant::now);
                }
                None => closed = true,
            },
            _ = sleep_until_opt(deadline) => {}
        }
        let due = pending.len() >= settings.batch_max_reports
            || pending_since.is_some_and(|t| t.elapsed() >= settings.linger)
            || (closed && !pending.is_empty());
        if !due {
            continue;
        }
        pending_since = None;
        let round = std::mem::take(&mut pending);
        if let Err(e) = deliver(&mut topic, &kafka, &settings, &round, &stats).await {
            warn!(error = %e, reports = round.len(), "produce round failed: spooling");
            to_spool(spool.as_mut(), &round, &stats);
            spooling = true;
            retry_at = Instant::now() + backoff.next_delay();
        }
    }

    // Shutdown: deliver what is left within the deadline, spool the rest.
    let deadline = Instant::now() + settings.shutdown_timeout;
    if !pending.is_empty() {
        let round = std::mem::take(&mut pending);
        if deliver(&mut topic, &kafka, &settings, &round, &stats)
            .await
            .is_err()
        {
            to_spool(spool.as_mut(), &round, &stats);
        }
    }
    while !spool.is_empty() && Instant::now() < deadline {
        if replay_once(&mut topic, &kafka, &settings, spool.as_mut(), &stats)
            .await
            .is_err()
        {
            break;
        }
    }
    if let Err(e) = spool.flush() {
        error!(error = %e, "cannot flush the spool at shutdown");
    }
    info!(spooled_left = !spool.is_empty(), "publisher stopped");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn to_spool(spool: &mut dyn Spool, messages: &[Message], stats: &PublisherStats) {
    match spool.append(messages).and_then(|()| spool.flush()) {
        Ok(()) => {
            stats
                .spooled
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            error!(error = %e, reports = messages.len(), "cannot write to the spool: reports are lost")
        }
    }
}

/// One round to Kafka. Waits at most `produce_timeout` for the connection (which goes on in the
/// background if that is not enough), then produces within `produce_timeout`.
async fn deliver(
    topic: &mut Option<ReportTopic>,
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    messages: &[Message],
    stats: &PublisherStats,
) -> Result<(), PublishError> {
    let topic = topic.get_or_insert_with(|| ReportTopic::new(kafka));
    let result = match topic.connected(settings.produce_timeout).await {
        Ok(()) => {
            let started = Instant::now();
            tokio::time::timeout(settings.produce_timeout, topic.produce(messages))
                .await
                .unwrap_or(Err(PublishError::Timeout(settings.produce_timeout)))
                .map(|produced| (produced, started.elapsed()))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((produced, took)) => {
            let dead = produced.too_large.len();
            stats
                .produced
                .fetch_add((messages.len() - dead) as u64, Ordering::Relaxed);
            stats.too_large.fetch_add(dead as u64, Ordering::Relaxed);
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            stats.last_round_micros.store(micros, Ordering::Relaxed);
            debug!(reports = messages.len(), too_large = dead, "produced");
            Ok(())
        }
        Err(e) => {
            stats.produce_errors.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Sends the oldest spooled reports in one round and removes them from the spool.
async fn replay_once(
    topic: &mut Option<ReportTopic>,
    kafka: &KafkaSettings,
    settings: &ProducerSettings,
    spool: &mut dyn Spool,
    stats: &PublisherStats,
) -> Result<(), PublishError> {
    // Make the appended tail readable before replaying it.
    if let Err(e) = spool.flush() {
        error!(error = %e, "cannot flush the spool");
    }
    let batch = match spool.peek(settings.batch_max_reports) {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "cannot read the spool");
            return Ok(());
        }
    };
    if batch.is_empty() {
        return Ok(());
    }
    deliver(topic, kafka, settings, &batch, stats).await?;
    if let Err(e) = spool.commit(batch.len()) {
        error!(error = %e, "cannot mark spooled reports delivered: they may be sent again");
    }
    Ok(())
}
