//! The outbox onto the targets topic: every change the API made, in the order it was made,
//! as a record keyed by the target id (the definition as JSON, or no value for a deletion),
//! so a checker reading the topic from the start ends with the current definitions.
//!
//! One replica publishes at a time: a round runs in a transaction holding a transaction-level
//! advisory lock ([`PUBLISH_LOCK`]); it reads the oldest rows, produces them, and deletes them
//! in the same transaction. A replica that dies after producing and before committing leaves
//! the rows to be produced again: a checker applies a definition twice as once. Rounds run
//! when the API wakes the publisher and every [`POLL_INTERVAL`] (for changes made through other
//! replicas).
//!
//! The topic is created with one partition when missing (so every change is in one order),
//! and so is the checks topic of "check now" requests.
//! Kafka keeps it whole if the topic is compacted (`cleanup.policy=compact`, which the
//! deployment's topic creation sets; the client library cannot set a topic's configuration);
//! every [`REPUBLISH_EVERY`] the current definitions are queued again, so even a topic whose
//! records expire after the usual retention keeps every definition.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::SinkError;
use crate::http::HttpState;
use monitor_core::runtime::backoff::Backoff;

/// The advisory lock publishers take, one at a time.
pub const PUBLISH_LOCK: i64 = 0x7765_626d_6f6e_7431;
/// Most outbox rows produced in one round.
pub const MAX_ROUND_ROWS: i64 = 500;
/// How often the outbox is read without a wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often every definition is queued again.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Longest a produce may take before the round is given up (and its rows produced again).
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the brokers get to create the topic, in milliseconds.
const CREATE_TOPIC_TIMEOUT_MS: i32 = 5_000;

/// Publishes the outbox until `stop`.
pub async fn run(client: Arc<Client>, state: Arc<HttpState>, stop: CancellationToken) {
    let topic = state.settings.kafka.targets_topic.clone();
    let mut backoff = Backoff::default();
    let partition = loop {
        match partition_client(&client, &state).await {
            Ok(p) => break p,
            Err(e) => {
                warn!(topic, error = %e, "cannot reach the targets topic; retrying");
                if !backoff.sleep(stop.cancelled()).await {
                    return;
                }
            }
        }
    };
    let mut republish = tokio::time::interval(REPUBLISH_EVERY);
    republish.tick().await;
    loop {
        match publish_pending(&state, &partition).await {
            Ok(true) => continue,
            Ok(false) => backoff.reset(),
            Err(e) => {
                warn!(topic, error = %e, "cannot publish target changes; retrying");
                if !backoff.sleep(stop.cancelled()).await {
                    return;
                }
                continue;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.targets_changed.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = republish.tick() => queue_all(&state).await,
        }
    }
}

/// The client of the targets topic's partition, creating it and the checks topic (one
/// partition each) when missing.
async fn partition_client(
    client: &Client,
    state: &HttpState,
) -> Result<PartitionClient, SinkError> {
    let kafka = &state.settings.kafka;
    let topics = client.list_topics().await?;
    for name in [&kafka.targets_topic, &kafka.checks_topic] {
        if topics.iter().any(|t| &t.name == name) || !kafka.create_topic {
            continue;
        }
        info!(topic = %name, "creating the topic (one partition)");
        let created = client
            .controller_client()?
            .create_topic(name, 1, kafka.replication_factor, CREATE_TOPIC_TIMEOUT_MS)
            .await;
        if let Err(e) = created {
            // Another replica may have created it meanwhile: the partition client tells.
            warn!(topic = %name, error = %e, "creating the topic failed");
        }
    }
    Ok(client
        .partition_client(kafka.targets_topic.clone(), 0, UnknownTopicHandling::Retry)
        .await?)
}

/// One round: produces the oldest outbox rows and deletes them. True when the round was
/// full (more may wait).
async fn publish_pending(
    state: &HttpState,
    partition: &PartitionClient,
) -> Result<bool, SinkError> {
    let mut tx = state.pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(PUBLISH_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(false);
    }
    let rows: Vec<(i64, String, Option<Json<serde_json::Value>>)> = sqlx::query_as(
        "SELECT seq, target_id, definition FROM target_outbox ORDER BY seq LIMIT $1",
    )
    .bind(MAX_ROUND_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = rows.last().map(|r| r.0) else {
        return Ok(false);
    };
    let full = rows.len() as i64 == MAX_ROUND_ROWS;
    let records = rows
        .into_iter()
        .map(|(_, id, definition)| record(id, definition))
        .collect();
    tokio::time::timeout(
        PRODUCE_TIMEOUT,
        partition.produce(records, Compression::NoCompression),
    )
    .await
    .map_err(|_| SinkError::Timeout("producing target changes"))??;
    sqlx::query("DELETE FROM target_outbox WHERE seq <= $1")
        .bind(last)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(full)
}

fn record(id: String, definition: Option<Json<serde_json::Value>>) -> Record {
    Record {
        key: Some(id.into_bytes()),
        value: definition.map(|d| d.0.to_string().into_bytes()),
        headers: Default::default(),
        timestamp: Utc::now(),
    }
}

/// Queues every current definition again.
async fn queue_all(state: &HttpState) {
    let queued = sqlx::query(
        "INSERT INTO target_outbox (target_id, definition) \
         SELECT target_id, definition FROM api_targets ORDER BY target_id",
    )
    .execute(&state.pool)
    .await;
    match queued {
        Ok(done) => info!(
            targets = done.rows_affected(),
            "target definitions queued again for the targets topic"
        ),
        Err(e) => warn!(error = %e, "cannot queue the target definitions again; next time"),
    }
}
