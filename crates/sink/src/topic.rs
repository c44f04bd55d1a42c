//! The topic's partition count, read from the brokers' metadata once per rebalance interval (the
//! topic is created when missing and allowed) and handed to the coordinator through a watch
//! channel. It runs in a task of its own so that a slow Kafka request never holds up the
//! leases.

use std::sync::Arc;

use monitor_core::settings::SinkSettings;
use rskafka::client::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::SinkError;

/// How long the brokers get to create the topic, in milliseconds.
const CREATE_TOPIC_TIMEOUT_MS: i32 = 5_000;

/// Keeps the topic's partition count in `partitions`, read every rebalance interval, until
/// `stop`.
pub async fn watch_partitions(
    client: Arc<Client>,
    settings: SinkSettings,
    partitions: watch::Sender<i32>,
    stop: CancellationToken,
) {
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = topic_partitions(&client, &settings) => read,
        };
        match read {
            Ok(n) if n > 0 => {
                partitions.send_if_modified(|p| std::mem::replace(p, n) != n);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the topic's metadata; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.sink.rebalance_interval) => {}
        }
    }
}

/// The topic's partition count, creating the topic when missing (and allowed).
async fn topic_partitions(client: &Client, settings: &SinkSettings) -> Result<i32, SinkError> {
    let topics = client.list_topics().await?;
    if let Some(t) = topics.iter().find(|t| t.name == settings.kafka.topic) {
        return Ok(i32::try_from(t.partitions.len()).unwrap_or(i32::MAX));
    }
    if settings.kafka.create_topic {
        info!(topic = %settings.kafka.topic, partitions = settings.kafka.partitions, "creating the topic");
        match client
            .controller_client()?
            .create_topic(
                &settings.kafka.topic,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                CREATE_TOPIC_TIMEOUT_MS,
            )
            .await
        {
            Ok(()) => return Ok(settings.kafka.partitions),
            Err(e) => {
                warn!(error = %e, "creating the topic failed (another service may have created it)")
            }
        }
    } else {
        warn!(topic = %settings.kafka.topic, "the topic does not exist and create_topic is off: waiting for it");
    }
    Ok(0)
}
