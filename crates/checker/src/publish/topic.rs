//! The reports topic as the publisher sees it: connecting to the brokers (creating the topic
//! when allowed, one client per partition) and producing one round of reports, keyed by target
//! so that a target's reports share a partition and keep their order.
//!
//! Connecting is not part of a round. With brokers tens of milliseconds away and a topic of
//! many partitions, connecting (metadata, then per partition a connection with its TLS and
//! SASL handshakes and the leader's own metadata) takes several round trips per partition;
//! inside a round's `produce_timeout` it would never finish. So connecting runs in the
//! background with its own budget ([`CONNECT_BUDGET`]), all partitions at once, and keeps what
//! it has connected: an attempt that fails or runs out of budget is taken up again where it
//! stopped. A round waits for it at most its own timeout, then goes to the spool while the
//! connection goes on. rskafka 0.6 opens one connection per partition client (its broker
//! connector does not share them); they are opened once and kept for the life of the process.
//!
//! A round is bounded by bytes as well as by count: each partition's records are sent in
//! requests of at most `kafka.max_request_bytes`. A request the broker refuses as too large
//! (`MESSAGE_TOO_LARGE`, `RECORD_LIST_TOO_LARGE`: its `message.max.bytes` is lower) halves
//! the bound, for this round and the later ones, and is sent again in pieces of the new bound;
//! a single report that is refused alone can never be delivered and is dead-ended (logged
//! here, counted by the caller), so that it cannot block the reports behind it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use monitor_core::report::SCHEMA_VERSION;
use monitor_core::settings::{Compression, KafkaSettings};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{self, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::partitioner::partition_for;
use crate::spool::Message;

/// How long the Kafka client retries a request inside one round.
const CLIENT_RETRY_FOR: Duration = Duration::from_secs(5);
/// How long one connection attempt (bootstrap, metadata, every partition's client) may take
/// before it is given up; the next round starts another, which keeps what was connected.
pub const CONNECT_BUDGET: Duration = Duration::from_secs(30);
/// Partition clients connecting at once (each opens its own connection to its leader).
const CONNECT_CONCURRENCY: usize = 64;
/// Bytes of a produce request besides its records' keys, values and headers: request header,
/// client id, topic name (at most 249 bytes), record batch header.
const REQUEST_OVERHEAD: usize = 1024;
/// Bytes of one record besides its key, value and headers: length, attributes, timestamp and
/// offset deltas, and the varints of the key, value and header lengths.
const RECORD_OVERHEAD: usize = 40;

/// Why a round did not reach Kafka.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] monitor_core::runtime::broker::KafkaConnectError),
    /// A request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    /// The topic does not exist and may not be created.
    #[error("topic {0} does not exist and kafka.create_topic is off")]
    NoTopic(String),
    /// The connection to the brokers is not complete yet; it goes on in the background.
    #[error(
        "still connecting to the brokers after {0:?} (the connection goes on in the background)"
    )]
    Connecting(Duration),
    /// A round was produced before the topic was connected (see [`ReportTopic::connected`]).
    #[error("the topic is not connected yet")]
    NotConnected,
    /// A connection attempt took longer than [`CONNECT_BUDGET`].
    #[error("connecting to the brokers took longer than {0:?}; the next attempt keeps what was connected")]
    ConnectTimeout(Duration),
    /// The round took longer than `produce_timeout`.
    #[error("produce round took longer than {0:?}")]
    Timeout(Duration),
    /// A produce task failed.
    #[error("produce task: {0}")]
    Task(String),
}

/// What a successful round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Produced {
    /// Indices (in the round) of the reports the brokers refused as too large even alone:
    /// they can never be delivered and were not.
    pub too_large: Vec<usize>,
}

/// What is connected so far: kept across rounds and connection attempts.
#[derive(Debug, Default)]
struct Links {
    client: Option<Arc<Client>>,
    partitions: Vec<Option<Arc<PartitionClient>>>,
}

/// The reports topic: one client per partition, connected in the background.
#[derive(Debug)]
pub struct ReportTopic {
    settings: Arc<KafkaSettings>,
    links: Arc<Mutex<Links>>,
    connector: Option<JoinHandle<Result<(), PublishError>>>,
    ready: Option<Arc<[Arc<PartitionClient>]>>,
    compression: partition::Compression,
    /// Bytes of records per request: `kafka.max_request_bytes` less the request's own,
    /// lowered when the brokers refuse a request as too large.
    request_budget: Arc<AtomicUsize>,
}

impl Drop for ReportTopic {
    fn drop(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.abort();
        }
    }
}

impl ReportTopic {
    /// The topic of `settings`, not connected yet (see [`ReportTopic::connected`]).
    pub fn new(settings: &KafkaSettings) -> ReportTopic {
        let compression = match settings.compression {
            Compression::None => partition::Compression::NoCompression,
            Compression::Gzip => partition::Compression::Gzip,
            Compression::Lz4 => partition::Compression::Lz4,
            Compression::Snappy => partition::Compression::Snappy,
            Compression::Zstd => partition::Compression::Zstd,
        };
        let max_request = usize::try_from(settings.max_request_bytes).unwrap_or(usize::MAX);
        ReportTopic {
            settings: Arc::new(settings.clone()),
            links: Arc::default(),
            connector: None,
            ready: None,
            compression,
            request_budget: Arc::new(AtomicUsize::new(
                max_request.saturating_sub(REQUEST_OVERHEAD).max(1),
            )),
        }
    }

    /// Connects, creates the topic when missing (if allowed), and connects every partition,
    /// within [`CONNECT_BUDGET`].
    pub async fn connect(settings: &KafkaSettings) -> Result<ReportTopic, PublishError> {
        let mut topic = ReportTopic::new(settings);
        topic.connected(CONNECT_BUDGET).await?;
        Ok(topic)
    }

    /// Waits at most `wait` until every partition is connected, starting a connection attempt
    /// in the background if none is running. An attempt still running after `wait` goes on
    /// (the error is [`PublishError::Connecting`]); one that failed returns its error, and the
    /// next call starts another from what is connected.
    pub async fn connected(&mut self, wait: Duration) -> Result<(), PublishError> {
        if self.ready.is_some() {
            return Ok(());
        }
        let settings = Arc::clone(&self.settings);
        let links = Arc::clone(&self.links);
        let connector = self.connector.get_or_insert_with(|| {
            tokio::spawn(async move {
                tokio::time::timeout(CONNECT_BUDGET, connect_missing(&settings, &links))
                    .await
                    .unwrap_or(Err(PublishError::ConnectTimeout(CONNECT_BUDGET)))
            })
        });
        let Ok(joined) = tokio::time::timeout(wait, connector).await else {
            return Err(PublishError::Connecting(wait));
        };
        self.connector = None;
        joined.map_err(|e| PublishError::Task(e.to_string()))??;
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let partitions: Option<Vec<_>> = links.partitions.iter().cloned().collect();
        self.ready = partitions.map(Arc::from);
        match self.ready {
            Some(_) => Ok(()),
            None => Err(PublishError::Task(
                "a connected partition went missing".into(),
            )),
        }
    }

    /// Partitions of the topic, once connected; 0 before.
    pub fn partition_count(&self) -> i32 {
        self.ready
            .as_ref()
            .map_or(0, |p| i32::try_from(p.len()).unwrap_or(i32::MAX))
    }

    /// Produces one round: each partition's messages in requests of at most
    /// `kafka.max_request_bytes`, in order, all partitions at once. Succeeds only if every
    /// partition acknowledged every report except those refused alone as too large.
    pub async fn produce(&self, messages: &[Message]) -> Result<Produced, PublishError> {
        let Some(partitions) = self.ready.clone() else {
            return Err(PublishError::NotConnected);
        };
        let count = self.partition_count();
        let mut by_partition: BTreeMap<i32, Vec<Sized>> = BTreeMap::new();
        let now = Utc::now();
        for (index, m) in messages.iter().enumerate() {
            by_partition
                .entry(partition_for(&m.key, count))
                .or_default()
                .push(Sized::new(index, m, now));
        }
        let mut tasks = JoinSet::new();
        for (p, records) in by_partition {
            let Some(client) = usize::try_from(p)
                .ok()
                .and_then(|i| partitions.get(i))
                .cloned()
            else {
                continue;
            };
            let (compression, budget) = (self.compression, Arc::clone(&self.request_budget));
            tasks.spawn(
                async move { produce_partition(&client, records, compression, &budget).await },
            );
        }
        let mut result = Ok(Produced::default());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(dead)) => {
                    if let Ok(produced) = &mut result {
                        produced.too_large.extend(dead);
                    }
                }
                Ok(Err(e)) => result = Err(PublishError::Kafka(e)),
                Err(e) => result = Err(PublishError::Task(e.to_string())),
            }
        }
        if let Ok(produced) = &mut result {
            produced.too_large.sort_unstable();
            for &i in &produced.too_large {
                if let Some(m) = messages.get(i) {
                    error!(
                        target = %String::from_utf8_lossy(&m.key),
                        bytes = m.value.len(),
                        max_request_bytes = self.settings.max_request_bytes,
                        "the brokers refuse this report as too large even alone: it is dropped \
                         (raise the topic's max.message.bytes to take reports this large)"
                    );
                }
            }
        }
        result
    }
}

/// One record of a round with where it came from and its estimated size in a request.
#[derive(Debug, Clone)]
struct Sized {
    index: usize,
    bytes: usize,
    record: Record,
}

impl Sized {
    fn new(index: usize, m: &Message, timestamp: chrono::DateTime<Utc>) -> Sized {
        let headers = BTreeMap::from([(
            "schema_version".to_string(),
            SCHEMA_VERSION.to_string().into_bytes(),
        )]);
        let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        Sized {
            index,
            bytes: m.key.len() + m.value.len() + header_bytes + RECORD_OVERHEAD,
            record: Record {
                key: Some(m.key.clone()),
                value: Some(m.value.clone()),
                headers,
                timestamp,
            },
        }
    }
}

/// Groups `records`, in order, into requests whose records add up to at most `budget` bytes;
/// a record larger than `budget` gets a request of its own.
fn requests(records: Vec<Sized>, budget: usize) -> VecDeque<Vec<Sized>> {
    let mut out = VecDeque::new();
    let mut current: Vec<Sized> = Vec::new();
    let mut bytes = 0;
    for r in records {
        if !current.is_empty() && bytes + r.bytes > budget {
            out.push_back(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += r.bytes;
        current.push(r);
    }
    if !current.is_empty() {
        out.push_back(current);
    }
    out
}

/// Sends one partition's records of a round, in order, in requests of at most `budget` bytes.
/// A request of several records refused as too large lowers `budget` (shared by every
/// partition and kept for later rounds) to half its size and is sent again in pieces of the
/// new budget; a record refused alone is returned (by its index in the round) instead of sent.
async fn produce_partition(
    client: &PartitionClient,
    records: Vec<Sized>,
    compression: partition::Compression,
    budget: &AtomicUsize,
) -> Result<Vec<usize>, KafkaError> {
    let mut queue = requests(records, budget.load(Ordering::Relaxed));
    let mut too_large = Vec::new();
    while let Some(request) = queue.pop_front() {
        let batch = request.iter().map(|r| r.record.clone()).collect();
        match client.produce(batch, compression).await {
            Ok(_offsets) => {}
            Err(e) if is_too_large(&e) => {
                if let [single] = request.as_slice() {
                    too_large.push(single.index);
                    continue;
                }
                let bytes: usize = request.iter().map(|r| r.bytes).sum();
                let smaller = (bytes / 2).max(1);
                let lowered = budget.fetch_min(smaller, Ordering::Relaxed).min(smaller);
                warn!(
                    partition = client.partition(),
                    reports = request.len(),
                    bytes,
                    request_bytes_now = lowered,
                    "the broker refused a produce request as too large: sending it in smaller \
                     requests from now on (kafka.max_request_bytes is above the brokers' \
                     message.max.bytes)"
                );
                for piece in requests(request, lowered).into_iter().rev() {
                    queue.push_front(piece);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(too_large)
}

fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge,
            ..
        }
    )
}

/// One connection attempt: the client (bootstrap and metadata) if there is none yet, the
/// topic's partitions (creating the topic if allowed), then every partition not connected
/// yet, all at once. What connects is kept, whatever happens to the others.
async fn connect_missing(
    settings: &KafkaSettings,
    links: &Arc<Mutex<Links>>,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let client = client_of(settings, links).await?;
    let missing = missing_partitions(settings, &client, links).await?;
    if missing.is_empty() {
        return Ok(());
    }
    debug!(topic = %settings.topic, partitions = missing.len(), "connecting partitions");
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for p in missing {
        let (client, limit, topic) = (
            Arc::clone(&client),
            Arc::clone(&limit),
            settings.topic.clone(),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (
                p,
                client
                    .partition_client(topic, p, UnknownTopicHandling::Retry)
                    .await,
            )
        });
    }
    let mut failed = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((p, Ok(pc))) => {
                let mut links = links.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slot) = usize::try_from(p)
                    .ok()
                    .and_then(|i| links.partitions.get_mut(i))
                {
                    *slot = Some(Arc::new(pc));
                }
            }
            Ok((p, Err(e))) => {
                warn!(topic = %settings.topic, partition = p, error = %e, "cannot connect to a partition's leader; retrying later");
                failed.get_or_insert(PublishError::Kafka(e));
            }
            Err(e) => {
                failed.get_or_insert(PublishError::Task(e.to_string()));
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    info!(
        topic = %settings.topic,
        partitions = links.lock().unwrap_or_else(|e| e.into_inner()).partitions.len(),
        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "connected to Kafka"
    );
    Ok(())
}

/// The client kept in `links`, or a new one.
async fn client_of(
    settings: &KafkaSettings,
    links: &Mutex<Links>,
) -> Result<Arc<Client>, PublishError> {
    if let Some(client) = &links.lock().unwrap_or_else(|e| e.into_inner()).client {
        return Ok(Arc::clone(client));
    }
    let client = Arc::new(
        monitor_core::runtime::broker::connect(settings, "web-monitor-checker", CLIENT_RETRY_FOR)
            .await?,
    );
    links.lock().unwrap_or_else(|e| e.into_inner()).client = Some(Arc::clone(&client));
    Ok(client)
}

/// The partitions not connected yet, learning the topic's partitions (and creating the topic
/// when allowed) on the first call.
async fn missing_partitions(
    settings: &KafkaSettings,
    client: &Client,
    links: &Mutex<Links>,
) -> Result<Vec<i32>, PublishError> {
    let known = links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .partitions
        .len();
    if known == 0 {
        let count = topic_partitions(settings, client).await?;
        links.lock().unwrap_or_else(|e| e.into_inner()).partitions = vec![None; count];
    }
    let links = links.lock().unwrap_or_else(|e| e.into_inner());
    Ok(links
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_none())
        .filter_map(|(i, _)| i32::try_from(i).ok())
        .collect())
}

/// How many partitions the topic has, creating it first if it is missing and that is allowed.
async fn topic_partitions(
    settings: &KafkaSettings,
    client: &Client,
) -> Result<usize, PublishError> {
    let count_of = |topics: Vec<rskafka::topic::Topic>| {
        topics
            .into_iter()
            .find(|t| t.name == settings.topic)
            .map(|t| t.partitions.len())
            .filter(|n| *n > 0)
    };
    if let Some(count) = count_of(client.list_topics().await?) {
        return Ok(count);
    }
    if !settings.create_topic {
        return Err(PublishError::NoTopic(settings.topic.clone()));
    }
    info!(topic = %settings.topic, partitions = settings.partitions, "creating the topic");
    if let Err(e) = client
        .controller_client()?
        .create_topic(
            &settings.topic,
            settings.partitions,
            settings.replication_factor,
            5_000,
        )
        .await
    {
        warn!(error = %e, "creating the topic failed (another service may have created it)");
    }
    count_of(client.list_topics().await?)
        .ok_or_else(|| PublishError::NoTopic(settings.topic.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(index: usize, bytes: usize) -> Sized {
        Sized {
            index,
            bytes,
            record: Record {
                key: None,
                value: None,
                headers: BTreeMap::new(),
                timestamp: Utc::now(),
            },
        }
    }

    #[test]
    fn requests_keep_the_order_and_stay_within_the_budget_unless_one_record_is_larger() {
        let records = [300, 300, 500, 2_000, 100, 100, 900]
            .iter()
            .enumerate()
            .map(|(i, b)| sized(i, *b))
            .collect();
        let got: Vec<Vec<usize>> = requests(records, 1_000)
            .into_iter()
            .map(|r| r.iter().map(|s| s.index).collect())
            .collect();
        assert_eq!(got, vec![vec![0, 1], vec![2], vec![3], vec![4, 5], vec![6]]);
    }
}
