//! The reports topic as the publisher sees it: connecting to the brokers (creating the topic
//! when allowed, one client per partition) and producing one round of reports, keyed by target
//! so that a target's reports share a partition and keep their order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use monitor_core::report::SCHEMA_VERSION;
use monitor_core::settings::{Compression, KafkaSettings};
use rskafka::client::partition::{self, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::partitioner::partition_for;
use crate::publish::Message;

/// How long the Kafka client retries a request inside one round.
const CLIENT_RETRY_FOR: Duration = Duration::from_secs(5);

/// Why a round did not reach Kafka.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] monitor_core::kafka::KafkaConnectError),
    /// A request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    /// The topic does not exist and may not be created.
    #[error("topic {0} does not exist and kafka.create_topic is off")]
    NoTopic(String),
    /// The round took longer than `produce_timeout`.
    #[error("produce round took longer than {0:?}")]
    Timeout(Duration),
    /// A produce task failed.
    #[error("produce task: {0}")]
    Task(String),
}

/// The reports topic: one client per partition.
#[derive(Debug)]
pub struct ReportTopic {
    partitions: Vec<Arc<PartitionClient>>,
    compression: partition::Compression,
}

impl ReportTopic {
    /// Connects, creates the topic when missing (if allowed), and learns its partitions.
    pub async fn connect(settings: &KafkaSettings) -> Result<ReportTopic, PublishError> {
        let client: Client =
            monitor_core::kafka::connect(settings, "web-monitor-checker", CLIENT_RETRY_FOR).await?;
        let mut count = client
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == settings.topic)
            .map(|t| t.partitions.len());
        if count.is_none() {
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
            count = client
                .list_topics()
                .await?
                .into_iter()
                .find(|t| t.name == settings.topic)
                .map(|t| t.partitions.len());
        }
        let count = count.ok_or_else(|| PublishError::NoTopic(settings.topic.clone()))?;
        let mut partitions = Vec::with_capacity(count);
        for p in 0..i32::try_from(count).unwrap_or(i32::MAX) {
            partitions.push(Arc::new(
                client
                    .partition_client(settings.topic.clone(), p, UnknownTopicHandling::Retry)
                    .await?,
            ));
        }
        let compression = match settings.compression {
            Compression::None => partition::Compression::NoCompression,
            Compression::Gzip => partition::Compression::Gzip,
            Compression::Lz4 => partition::Compression::Lz4,
            Compression::Snappy => partition::Compression::Snappy,
            Compression::Zstd => partition::Compression::Zstd,
        };
        info!(topic = %settings.topic, partitions = count, "connected to Kafka");
        Ok(ReportTopic {
            partitions,
            compression,
        })
    }

    /// Partitions of the topic.
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }

    /// Produces one round: each partition's messages in one request, in order, all partitions
    /// at once. Succeeds only if every partition acknowledged.
    pub async fn produce(&self, messages: &[Message]) -> Result<(), PublishError> {
        let count = self.partition_count();
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let now = Utc::now();
        for m in messages {
            by_partition
                .entry(partition_for(&m.key, count))
                .or_default()
                .push(Record {
                    key: Some(m.key.clone()),
                    value: Some(m.value.clone()),
                    headers: BTreeMap::from([(
                        "schema_version".to_string(),
                        SCHEMA_VERSION.to_string().into_bytes(),
                    )]),
                    timestamp: now,
                });
        }
        let mut tasks = JoinSet::new();
        for (p, records) in by_partition {
            let Some(client) = usize::try_from(p)
                .ok()
                .and_then(|i| self.partitions.get(i))
                .cloned()
            else {
                continue;
            };
            let compression = self.compression;
            tasks.spawn(async move { client.produce(records, compression).await });
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(_offsets)) => {}
                Ok(Err(e)) => result = Err(PublishError::Kafka(e)),
                Err(e) => result = Err(PublishError::Task(e.to_string())),
            }
        }
        result
    }
}
