//! Delivery of reports to Kafka that loses nothing: batched per round, keyed by target (so a
//! target's reports share a partition and keep their order), through an on-disk spool that is
//! the write-ahead log of every report.
//!
//! Each report is written to the spool as soon as it arrives (a `write(2)`, so a kill of the
//! process cannot take it; fsynced every [`SPOOL_SYNC_EVERY`] against a power loss), and leaves
//! the spool only once Kafka acknowledged it. Rounds read the spool oldest first:
//! - **Kafka up**: a round starts once the oldest unsent report has waited one linger (or a
//!   round's worth is waiting), one produce request per partition, all partitions at once.
//!   New reports go on being written while a round is in flight.
//! - **Kafka down or slow**: a round that fails, or takes longer than `produce_timeout`, is
//!   retried with exponential backoff and jitter; reports pile up in the spool (bounded by
//!   `spool_max_bytes`) and are replayed in order, round after round, once Kafka answers. A
//!   checker that starts with a spool left over replays it first.
//! - **Disk full or failing**: reports the spool cannot take are counted and held in memory
//!   (bounded by `queue_capacity`) for Kafka; past that bound they are counted as lost.
//!
//! Delivery is at least once: a round that timed out may still have been written by the
//! broker, and is sent again. Duplicates carry the same `report_id`, and the sink stores each
//! report once.

pub mod partitioner;
pub mod topic;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use monitor_core::runtime::backoff::Backoff;
use monitor_core::settings::{KafkaSettings, ProducerSettings};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::spool::{Message, Spool};
pub use topic::{Produced, PublishError, ReportTopic};

/// The spool is fsynced at least this often while reports are written to it: the most a power
/// loss can take. (A kill of the process takes nothing: each append is a `write(2)`.)
pub const SPOOL_SYNC_EVERY: Duration = Duration::from_secs(1);
/// After a round that timed out, the next one may take twice as long, up to this: a broker that
/// answers every round a little slower than `produce_timeout` (a long link, a loaded broker) is
/// still delivered to, instead of the same round timing out and being sent again forever.
pub const MAX_ROUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most reports written to the spool in one append (one `write(2)`).
const APPEND_MAX_REPORTS: usize = 1024;
/// An append stops taking reports once it holds this many bytes.
const APPEND_MAX_BYTES: usize = 1024 * 1024;

/// The publisher's Prometheus metrics, counted where they happen: handles, cheap to clone,
/// shared with the registry ([`crate::metrics::CheckerMetrics`]).
#[derive(Debug, Clone, Default)]
pub struct PublishMetrics {
    /// Reports acknowledged by Kafka.
    pub produced: Counter,
    /// Reports written to the spool (every report: it is the write-ahead log of delivery).
    pub spooled: Counter,
    /// Reports the spool could not take (a full disk, an I/O error): held in memory for
    /// Kafka, or lost.
    pub unspooled: Counter,
    /// Reports lost: neither the spool nor the memory bound could hold them.
    pub lost: Counter,
    /// Failed or timed-out produce rounds.
    pub produce_errors: Counter,
    /// Reports the brokers refused as too large even alone: dropped, never deliverable.
    pub too_large: Counter,
}

/// When the publisher last found its queue empty, every report before written to the spool:
/// the heartbeat saves it, and the next start-up backfill begins from there. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Drained(Arc<AtomicI64>);

impl Drained {
    /// The last time the queue was found empty, if it was.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => DateTime::from_timestamp_micros(micros),
        }
    }

    fn mark_now(&self) {
        self.0
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }
}

/// Delivers the reports of `reports` until the channel closes (all checks done), then goes on
/// delivering what the spool holds for at most `settings.shutdown_timeout`; whatever is left
/// stays in the spool for the next start.
pub async fn run(
    mut reports: mpsc::Receiver<Report>,
    kafka: KafkaSettings,
    settings: ProducerSettings,
    spool: Box<dyn Spool>,
    metrics: PublishMetrics,
    drained: Drained,
) {
    let mut state = Delivery::new(spool, metrics, drained, &settings);
    let mut topic: Option<ReportTopic> = None;
    while !state.closed {
        if state.round_due(&settings) {
            state
                .round(&mut topic, &kafka, &settings, &mut reports, None)
                .await;
            continue;
        }
        tokio::select! {
            r = reports.recv() => state.take(r, &mut reports),
            _ = sleep_until_opt(state.wake(&settings)) => {}
        }
        state.sync_if_due();
    }
    // Shutdown: rounds until the spool is empty or the deadline passes.
    let deadline = Instant::now() + settings.shutdown_timeout;
    while state.has_unsent() && Instant::now() < deadline {
        if let Some(at) = state.retry_at.filter(|at| *at > Instant::now()) {
            tokio::time::sleep_until(at.min(deadline)).await;
            continue;
        }
        if !state
            .round(&mut topic, &kafka, &settings, &mut reports, Some(deadline))
            .await
        {
            break;
        }
    }
    state.sync();
    info!(
        spooled_left = !state.spool.is_empty(),
        held_in_memory = state.overflow.len(),
        "publisher stopped"
    );
}

/// The publisher's state between rounds.
struct Delivery {
    spool: Box<dyn Spool>,
    metrics: PublishMetrics,
    drained: Drained,
    /// Reports the spool could not take (a full disk, an I/O error), waiting for Kafka in
    /// memory; bounded by `queue_capacity`.
    overflow: VecDeque<Message>,
    overflow_max: usize,
    /// When the oldest report not yet in a round was appended.
    oldest_unsent: Option<Instant>,
    /// Reports appended since the last round began.
    unsent: usize,
    /// The spool holds more than one round's worth: rounds follow each other without linger.
    backlog: bool,
    /// After a failed round: no new round before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The bound of the next round: `produce_timeout`, or more after rounds that timed out.
    round_timeout: Duration,
    /// Appended or committed since the last fsync.
    dirty: bool,
    sync_at: Instant,
    closed: bool,
}

impl Delivery {
    fn new(
        spool: Box<dyn Spool>,
        metrics: PublishMetrics,
        drained: Drained,
        settings: &ProducerSettings,
    ) -> Self {
        let backlog = !spool.is_empty();
        if backlog {
            info!("a spool is left from an earlier run: replaying it first");
        }
        drained.mark_now();
        Delivery {
            spool,
            metrics,
            drained,
            overflow: VecDeque::new(),
            overflow_max: settings.queue_capacity.max(1),
            oldest_unsent: None,
            unsent: 0,
            backlog,
            retry_at: None,
            backoff: Backoff::default(),
            round_timeout: settings.produce_timeout,
            dirty: false,
            sync_at: Instant::now() + SPOOL_SYNC_EVERY,
            closed: false,
        }
    }

    fn has_unsent(&self) -> bool {
        !self.spool.is_empty() || !self.overflow.is_empty()
    }

    /// Whether a round should start now.
    fn round_due(&self, settings: &ProducerSettings) -> bool {
        let now = Instant::now();
        self.has_unsent()
            && self.retry_at.is_none_or(|at| now >= at)
            && (self.backlog
                || self.closed
                || self.unsent >= settings.batch_max_reports
                || self
                    .oldest_unsent
                    .is_some_and(|t| now >= t + settings.linger))
    }

    /// When to look again without a new report: the next round or the next fsync.
    fn wake(&self, settings: &ProducerSettings) -> Option<Instant> {
        let round = if self.has_unsent() {
            match (self.retry_at, self.oldest_unsent) {
                (Some(at), _) => Some(at),
                (None, Some(t)) => Some(t + settings.linger),
                (None, None) => None,
            }
        } else {
            None
        };
        let sync = self.dirty.then_some(self.sync_at);
        match (round, sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes a report from the channel, and every other one waiting there (up to one append's
    /// bound), and writes them to the spool at once.
    fn take(&mut self, first: Option<Report>, reports: &mut mpsc::Receiver<Report>) {
        let Some(first) = first else {
            self.closed = true;
            self.drained.mark_now();
            return;
        };
        let mut batch = vec![Message::of(&first)];
        let mut bytes = batch[0].value.len();
        let mut drained = false;
        while batch.len() < APPEND_MAX_REPORTS && bytes < APPEND_MAX_BYTES {
            match reports.try_recv() {
                Ok(r) => {
                    let m = Message::of(&r);
                    bytes += m.value.len();
                    batch.push(m);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    drained = true;
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    drained = true;
                    break;
                }
            }
        }
        self.append(batch);
        if drained {
            // Every report sent before now is in the spool (or counted as not).
            self.drained.mark_now();
        }
    }

    fn append(&mut self, batch: Vec<Message>) {
        let n = batch.len();
        match self.spool.append(&batch) {
            Ok(()) => {
                self.metrics.spooled.inc_by(n as u64);
                self.dirty = true;
                self.unsent += n;
                self.oldest_unsent.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                self.metrics.unspooled.inc_by(n as u64);
                let room = self.overflow_max.saturating_sub(self.overflow.len());
                let lost = n.saturating_sub(room);
                self.overflow.extend(batch.into_iter().take(room));
                self.metrics.lost.inc_by(lost as u64);
                self.oldest_unsent.get_or_insert_with(Instant::now);
                error!(
                    error = %e,
                    reports = n,
                    held_in_memory = n - lost,
                    lost,
                    "cannot write to the spool: reports wait in memory for Kafka (a kill loses them)"
                );
            }
        }
    }

    fn sync_if_due(&mut self) {
        if self.dirty && Instant::now() >= self.sync_at {
            self.sync();
        }
    }

    /// fsync: what was appended survives a power loss.
    fn sync(&mut self) {
        if let Err(e) = self.spool.flush() {
            error!(error = %e, "cannot fsync the spool");
        }
        self.dirty = false;
        self.sync_at = Instant::now() + SPOOL_SYNC_EVERY;
    }

    /// The next round: the oldest spooled reports, else those held in memory.
    fn next_round(&mut self, max: usize) -> (Vec<Message>, bool) {
        if !self.spool.is_empty() {
            match self.spool.peek(max) {
                Ok(batch) if !batch.is_empty() => return (batch, true),
                Ok(_) => {}
                Err(e) => error!(error = %e, "cannot read the spool"),
            }
        }
        let n = self.overflow.len().min(max);
        (self.overflow.iter().take(n).cloned().collect(), false)
    }

    /// One round to Kafka, while new reports go on being written to the spool; bounded by
    /// `deadline` as well when given. False when there was nothing to send.
    async fn round(
        &mut self,
        topic: &mut Option<ReportTopic>,
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        reports: &mut mpsc::Receiver<Report>,
        deadline: Option<Instant>,
    ) -> bool {
        let (batch, from_spool) = self.next_round(settings.batch_max_reports);
        self.oldest_unsent = None;
        self.unsent = 0;
        if batch.is_empty() {
            // Nothing readable (damage skipped): wait for new reports rather than spin.
            self.backlog = false;
            return false;
        }
        let metrics = self.metrics.clone();
        let result = {
            let send = deliver(topic, kafka, self.round_timeout, &batch, &metrics);
            let send = async {
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, send)
                        .await
                        .unwrap_or(Err(PublishError::Timeout(settings.produce_timeout))),
                    None => send.await,
                }
            };
            tokio::pin!(send);
            loop {
                tokio::select! {
                    r = &mut send => break r,
                    r = reports.recv(), if !self.closed => self.take(r, reports),
                    _ = sleep_until_opt(self.dirty.then_some(self.sync_at)) => self.sync(),
                }
            }
        };
        self.finish_round(result, batch.len(), from_spool, settings);
        true
    }

    fn finish_round(
        &mut self,
        result: Result<Duration, PublishError>,
        n: usize,
        from_spool: bool,
        settings: &ProducerSettings,
    ) {
        self.adapt_round_timeout(&result, settings.produce_timeout);
        match result {
            Ok(_) => {
                if from_spool {
                    if let Err(e) = self.spool.commit(n) {
                        error!(error = %e, "cannot mark spooled reports delivered: they may be sent again");
                    }
                    self.dirty = true;
                } else {
                    self.overflow.drain(..n.min(self.overflow.len()));
                }
                if self.retry_at.take().is_some() {
                    info!("Kafka reachable again: delivering the spooled reports");
                }
                self.backoff = Backoff::default();
                self.backlog = n >= settings.batch_max_reports;
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                warn!(error = %e, reports = n, retry_in_ms = delay.as_millis() as u64, "produce round failed: reports wait in the spool");
                self.retry_at = Some(Instant::now() + delay);
                self.backlog = true;
            }
        }
    }

    /// Doubles the round bound after a round that timed out (up to [`MAX_ROUND_TIMEOUT`]);
    /// after one that succeeded, brings it back towards twice what the round took, never below
    /// `produce_timeout`.
    fn adapt_round_timeout(&mut self, result: &Result<Duration, PublishError>, base: Duration) {
        let next = match result {
            Ok(took) => self.round_timeout.min(took.saturating_mul(2)),
            Err(PublishError::Timeout(_)) => self.round_timeout.saturating_mul(2),
            Err(_) => self.round_timeout,
        };
        let next = next.clamp(base, MAX_ROUND_TIMEOUT.max(base));
        if next > self.round_timeout {
            warn!(
                round_timeout_ms = next.as_millis() as u64,
                "rounds take longer than produce_timeout: the next may take longer"
            );
        }
        self.round_timeout = next;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One round to Kafka. Waits at most `timeout` for the connection (which goes on in the
/// background if that is not enough), then produces within `timeout`. Returns how long the
/// produce took.
async fn deliver(
    topic: &mut Option<ReportTopic>,
    kafka: &KafkaSettings,
    timeout: Duration,
    messages: &[Message],
    metrics: &PublishMetrics,
) -> Result<Duration, PublishError> {
    let topic = topic.get_or_insert_with(|| ReportTopic::new(kafka));
    let result = match topic.connected(timeout).await {
        Ok(()) => {
            let started = Instant::now();
            tokio::time::timeout(timeout, topic.produce(messages))
                .await
                .unwrap_or(Err(PublishError::Timeout(timeout)))
                .map(|produced| (produced, started.elapsed()))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((produced, took)) => {
            let dead = produced.too_large.len();
            metrics.produced.inc_by((messages.len() - dead) as u64);
            metrics.too_large.inc_by(dead as u64);
            debug!(reports = messages.len(), too_large = dead, "produced");
            Ok(took)
        }
        Err(e) => {
            metrics.produce_errors.inc();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::settings::{CheckerSettings, SettingsSource};
    use monitor_core::testing::{free_port, sample_report};
    use std::io;

    /// A spool on a disk that is full.
    struct FullDisk;

    impl Spool for FullDisk {
        fn append(&mut self, _: &[Message]) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn peek(&mut self, _: usize) -> io::Result<Vec<Message>> {
            Ok(Vec::new())
        }
        fn commit(&mut self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn is_empty(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn reports_the_spool_cannot_take_are_counted_held_in_memory_and_lost_past_the_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.toml");
        let broker = free_port(); // nothing listens: Kafka is down as well
        std::fs::write(
            &file,
            format!(
                "monitored_urls = [\"http://127.0.0.1:9/\"]\n\
                 [kafka]\nbrokers = [\"127.0.0.1:{broker}\"]\ntopic = \"t\"\n\
                 [checker]\nqueue_capacity = 10\nproduce_timeout = \"100ms\"\nshutdown_timeout = \"300ms\"\n"
            ),
        )
        .expect("write");
        let settings =
            CheckerSettings::load(&SettingsSource::file_only(file), true).expect("valid");
        let (tx, rx) = mpsc::channel(100);
        for n in 0..25 {
            tx.send(sample_report("a", n)).await.expect("open");
        }
        drop(tx);
        let metrics = PublishMetrics::default();
        run(
            rx,
            settings.kafka.expect("kafka"),
            settings.checker.producer,
            Box::new(FullDisk),
            metrics.clone(),
            Drained::default(),
        )
        .await;
        assert_eq!(metrics.unspooled.get(), 25);
        assert_eq!(metrics.lost.get(), 15, "past queue_capacity");
        assert_eq!(metrics.spooled.get(), 0);
    }
}
