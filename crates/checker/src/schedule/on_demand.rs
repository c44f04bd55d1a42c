//! "Check now": the sink's API puts requests on the checks topic (`kafka.checks_topic`, key =
//! target id, a JSON value naming the request and the target). Every checker follows the topic
//! from its end at start (a request older than the checker is not for it); one that checks the
//! named target (its own share, with the current definitions) runs one check at once and
//! reports it like any other, marked with the request's id, so the sink stores it apart and
//! never counts it in verdicts or uptime. Requests beyond [`MAX_ON_DEMAND_IN_FLIGHT`] running
//! at once, and requests older than [`MAX_REQUEST_AGE`], are dropped with a log line: "check
//! now" must never crowd out the schedule.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use monitor_core::runtime::broker;
use monitor_core::settings::{KafkaSettings, TargetSettings};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::probe::CheckFn;

/// Most on-demand checks running at once.
pub const MAX_ON_DEMAND_IN_FLIGHT: usize = 16;
/// A request older than this when read is dropped: whoever asked has stopped waiting.
pub const MAX_REQUEST_AGE: Duration = Duration::from_secs(60);
/// How long a fetch of the checks topic waits for a request.
const FETCH_WAIT_MS: i32 = 500;
/// Pause before looking for the topic again, or after a failed fetch.
const RETRY: Duration = Duration::from_millis(500);
/// Most bytes of one fetch.
const FETCH_BYTES: i32 = 1024 * 1024;

/// A request as the sink writes it.
#[derive(Debug, Deserialize)]
struct CheckRequest {
    request_id: Uuid,
    target_id: String,
    requested_at: DateTime<Utc>,
}

/// Connects to Kafka (retrying until it answers) and follows `kafka.checks_topic` until
/// `stop`, as [`follow`] does.
pub async fn connect_and_follow(
    kafka: KafkaSettings,
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    check: CheckFn,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let client = loop {
        match broker::connect(&kafka, "web-monitor-checker-checks", RETRY).await {
            Ok(client) => break Arc::new(client),
            Err(e) => {
                debug!(error = %e, "Kafka not reachable for \"check now\" requests; retrying")
            }
        }
        if sleep_or_stop(&stop).await {
            return;
        }
    };
    follow(client, kafka.checks_topic, targets, check, reports, stop).await;
}

/// Follows `topic` until `stop`, checking the targets of `targets` that requests name.
pub async fn follow(
    client: Arc<Client>,
    topic: String,
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    check: CheckFn,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let Some((partition, mut offset)) = open(&client, &topic, &stop).await else {
        return;
    };
    info!(topic, offset, "following \"check now\" requests");
    // Dropped with this future, which aborts the checks still running.
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let fetched = tokio::select! {
            _ = stop.cancelled() => return,
            fetched = partition.fetch_records(offset, 1..FETCH_BYTES, FETCH_WAIT_MS) => fetched,
        };
        let (records, _) = match fetched {
            Ok(fetched) => fetched,
            Err(e) => {
                warn!(topic, error = %e, "cannot read \"check now\" requests; retrying");
                if sleep_or_stop(&stop).await {
                    return;
                }
                continue;
            }
        };
        for r in records {
            offset = r.offset + 1;
            let Some(request) = r.record.value.and_then(|v| serde_json::from_slice(&v).ok()) else {
                warn!(
                    topic,
                    offset = r.offset,
                    "a \"check now\" request is not readable; skipped"
                );
                continue;
            };
            start(request, &targets, &check, &reports, &mut in_flight);
        }
    }
}

/// The topic's partition and its end, once the topic exists. `None` when stopped first.
async fn open(
    client: &Client,
    topic: &str,
    stop: &CancellationToken,
) -> Option<(PartitionClient, i64)> {
    loop {
        let opened = async {
            // Looked up first: the partition client logs a missing topic as an error.
            if !client.list_topics().await?.iter().any(|t| t.name == topic) {
                return Ok(None);
            }
            let partition = client
                .partition_client(topic.to_string(), 0, UnknownTopicHandling::Error)
                .await?;
            // The end of the topic, from a fetch's high watermark.
            let (_, end) = partition.fetch_records(0, 1..FETCH_BYTES, 0).await?;
            Ok::<_, rskafka::client::error::Error>(Some((partition, end)))
        };
        match opened.await {
            Ok(Some(opened)) => return Some(opened),
            Ok(None) => debug!(topic, "no \"check now\" topic yet; looking again"),
            Err(e) => {
                debug!(topic, error = %e, "cannot open the \"check now\" topic; looking again")
            }
        }
        if sleep_or_stop(stop).await {
            return None;
        }
    }
}

/// Runs the check `request` asks for, if this checker checks its target.
fn start(
    request: CheckRequest,
    targets: &watch::Receiver<Vec<Arc<TargetSettings>>>,
    check: &CheckFn,
    reports: &mpsc::Sender<Report>,
    in_flight: &mut JoinSet<()>,
) {
    let target = targets
        .borrow()
        .iter()
        .find(|t| t.id == request.target_id)
        .cloned();
    let Some(target) = target else {
        return;
    };
    let age = (Utc::now() - request.requested_at)
        .to_std()
        .unwrap_or_default();
    if age > MAX_REQUEST_AGE {
        warn!(target_id = target.id, request = %request.request_id, "a \"check now\" request is too old; dropped");
        return;
    }
    if in_flight.len() >= MAX_ON_DEMAND_IN_FLIGHT {
        warn!(target_id = target.id, request = %request.request_id, "too many \"check now\" requests at once; dropped");
        return;
    }
    let (check, reports) = (check.clone(), reports.clone());
    in_flight.spawn(async move {
        let mut report = check(target, Utc::now()).await;
        report.check_request = Some(request.request_id);
        let _ = reports.send(report).await;
    });
}

/// Waits [`RETRY`]; true when stopped first.
async fn sleep_or_stop(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(RETRY) => false,
    }
}
