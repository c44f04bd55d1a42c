//! The task that follows the targets topic: it reads partition 0 from the earliest offset (a
//! compacted topic holds every live definition from its start) and then keeps fetching, so a
//! change made through the API reaches the schedule within a fetch's wait.
//!
//! Definitions are applied after each fetch, not only once the high watermark is reached, and
//! published on a [`watch`] channel only when they changed. The fetch's wait is bounded by
//! [`FETCH_MAX_WAIT`]: a broker answers a fetch at once when records are ready, but some (the
//! test broker, tansu) hold every fetch for its whole wait, which then adds to every change's
//! delay.
//!
//! When the last run checked API targets, the start waits (bounded) for the first read, so
//! that they start with the file's and their downtime is backfilled: [`Follower::first_read`]
//! is notified once the topic was read up to its high watermark, or found missing, or could
//! not be read.
//!
//! The topic is created by the sink with the first API-made target; until then the task looks
//! for it every [`TOPIC_LOOK_EVERY`] and the checker has no API targets. When Kafka cannot be
//! reached the last definitions known stay in force; the task retries with backoff and logs
//! the outage once, and its end once.

use std::sync::Arc;
use std::time::Duration;

use monitor_core::runtime::backoff::Backoff;
use monitor_core::runtime::broker::{self, KafkaConnectError};
use monitor_core::settings::KafkaSettings;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::RecordAndOffset;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{apply, read_record, Definitions, TargetsMetrics};

/// The one partition of the targets topic.
pub const PARTITION: i32 = 0;
/// Longest a fetch waits for new records: bounds how late a change is seen when the broker
/// holds a fetch for its whole wait (well inside the 2 s a change has to reach the schedule).
pub const FETCH_MAX_WAIT: Duration = Duration::from_millis(250);
/// Most bytes asked for in one fetch.
pub const MAX_FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// How often a targets topic that does not exist yet is looked for.
pub const TOPIC_LOOK_EVERY: Duration = Duration::from_millis(500);
/// How long the Kafka client retries one request before the task backs off on its own.
const CLIENT_RETRY_FOR: Duration = Duration::from_secs(5);

/// Why the topic could not be read this time.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    /// The brokers could not be reached.
    #[error(transparent)]
    Connect(#[from] KafkaConnectError),
    /// The topic does not exist (yet).
    #[error("the targets topic {0} does not exist yet")]
    NoTopic(String),
    /// A request failed.
    #[error("targets topic {topic}: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// Why.
        source: KafkaError,
    },
}

/// What the task needs.
#[derive(Debug)]
pub struct Follower {
    /// The brokers, and the topic (`targets_topic`).
    pub kafka: KafkaSettings,
    /// The Kafka client id.
    pub client_id: String,
    /// Where the definitions go, whenever they change.
    pub definitions: watch::Sender<Definitions>,
    /// Refused definitions are counted here.
    pub metrics: Arc<TargetsMetrics>,
    /// Notified when the topic was first read to its end, or found missing, or failed.
    pub first_read: Arc<Notify>,
}

/// Whether Kafka is out, so that an outage is logged once at its start and once at its end.
#[derive(Debug, Default)]
struct Outage {
    since_logged: bool,
}

impl Outage {
    fn failed(&mut self, error: &FollowError, known: usize) {
        if !self.since_logged {
            self.since_logged = true;
            warn!(error = %error, known, "cannot read the targets topic: keeping the API targets known, retrying");
        }
    }

    fn over(&mut self) {
        if std::mem::take(&mut self.since_logged) {
            info!("the targets topic is readable again");
        }
    }
}

impl Follower {
    /// Follows the topic until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage = Outage::default();
        let Some(partition) = self.open(&mut outage, &shutdown).await else {
            return;
        };
        self.follow(&partition, &mut outage, &shutdown).await;
    }

    /// Connects to the topic's partition, waiting for the topic to exist; `None` once stopped.
    async fn open(
        &self,
        outage: &mut Outage,
        shutdown: &CancellationToken,
    ) -> Option<PartitionClient> {
        let mut backoff = Backoff::default();
        let mut client = None;
        let mut missing_said = false;
        loop {
            let delay = match self.try_open(&mut client).await {
                Ok(partition) => {
                    outage.over();
                    return Some(partition);
                }
                Err(e @ FollowError::NoTopic(_)) => {
                    outage.over();
                    self.first_read.notify_one();
                    if !std::mem::replace(&mut missing_said, true) {
                        info!(every = ?TOPIC_LOOK_EVERY, "{e}: no API targets until the sink creates it; looking for it");
                    }
                    TOPIC_LOOK_EVERY
                }
                Err(e) => {
                    outage.failed(&e, 0);
                    self.first_read.notify_one();
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One attempt at the partition's client, keeping the brokers' client across attempts.
    async fn try_open(&self, client: &mut Option<Client>) -> Result<PartitionClient, FollowError> {
        let connected = match client.take() {
            Some(c) => c,
            None => broker::connect(&self.kafka, &self.client_id, CLIENT_RETRY_FOR).await?,
        };
        let topic = self.kafka.targets_topic.clone();
        let opened = connected
            .partition_client(topic.clone(), PARTITION, UnknownTopicHandling::Error)
            .await;
        *client = Some(connected);
        opened.map_err(|source| match source {
            KafkaError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            } => FollowError::NoTopic(topic),
            source => FollowError::Kafka { topic, source },
        })
    }

    /// Fetches from the earliest offset on until `shutdown`, applying each fetch's records.
    async fn follow(
        &self,
        partition: &PartitionClient,
        outage: &mut Outage,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::default();
        let mut offset = 0;
        let mut caught_up = false;
        let wait_ms = i32::try_from(FETCH_MAX_WAIT.as_millis()).unwrap_or(i32::MAX);
        loop {
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = partition.fetch_records(offset, 1..MAX_FETCH_BYTES, wait_ms) => r,
            };
            let failed = match fetched {
                Ok((records, high_watermark)) => {
                    backoff.reset();
                    outage.over();
                    offset = self.take(records, offset);
                    if !caught_up && offset >= high_watermark {
                        caught_up = true;
                        self.first_read.notify_one();
                        info!(
                            targets = self.definitions.borrow().len(),
                            high_watermark, "targets topic read: following it"
                        );
                    }
                    continue;
                }
                Err(KafkaError::ServerError {
                    protocol_error: ProtocolError::OffsetOutOfRange,
                    ..
                }) => match partition.get_offset(OffsetAt::Earliest).await {
                    Ok(earliest) => {
                        offset = restart_at(offset, earliest);
                        continue;
                    }
                    Err(source) => source,
                },
                Err(source) => source,
            };
            let e = FollowError::Kafka {
                topic: self.kafka.targets_topic.clone(),
                source: failed,
            };
            outage.failed(&e, self.definitions.borrow().len());
            self.first_read.notify_one();
            if !backoff.sleep(shutdown.cancelled()).await {
                return;
            }
        }
    }

    /// Applies `records` from `offset` on (a fetch may return records before the offset asked
    /// for, from the same record batch), publishes the definitions if they changed, and returns
    /// the next offset.
    fn take(&self, records: Vec<RecordAndOffset>, mut offset: i64) -> i64 {
        let mut changes = Vec::new();
        for r in records {
            if r.offset < offset {
                continue;
            }
            offset = r.offset + 1;
            match read_record(r.offset, r.record.key.as_deref(), r.record.value.as_deref()) {
                Ok(change) => changes.push(change),
                Err(e) => {
                    self.metrics.refused.inc();
                    error!(
                        offset = r.offset,
                        "definition refused, the previous one of its target (if any) is kept: {e}"
                    );
                }
            }
        }
        if !changes.is_empty() {
            self.definitions.send_if_modified(|definitions| {
                let mut changed = false;
                for change in changes {
                    changed |= apply(definitions, change);
                }
                changed
            });
        }
        offset
    }
}

/// Where to fetch from after `offset` was out of the partition's range: its earliest offset.
/// Past the records the broker still has (compaction or retention removed them: the live
/// definitions are later), or before `offset` (the topic was recreated: read it all again).
fn restart_at(offset: i64, earliest: i64) -> i64 {
    if earliest <= offset {
        warn!(offset, earliest, "the targets topic ends before the offset read: reading it again from its earliest offset");
    }
    earliest
}
