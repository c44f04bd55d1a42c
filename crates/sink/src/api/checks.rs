//! `POST /api/v1/targets/{id}/checks`: "check now". The request goes on the checks topic
//! (key = target id), which every checker follows; each checker that checks the target runs
//! one check at once and reports it like any other, marked with the request's id, so the
//! sink stores it apart (`check_results`) and never counts it in verdicts or uptime. The
//! handler waits, bounded, for the answers of the regions that report the target (those the
//! target's state knows and has not seen go silent) and returns them, one per region.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use monitor_core::settings::{Role, TargetSettings};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::auth::Caller;
use super::{ApiError, ApiState};

/// How long answers to "check now" requests are kept.
pub const CHECK_RESULTS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most rows one statement of the pruning deletes.
const PRUNE_BATCH: i64 = 10_000;

/// Longest a request may wait for its answers.
pub const MAX_CHECK_WAIT: Duration = Duration::from_secs(60);
/// How long a request waits past the target's timeout by default: the request's way to the
/// checkers and the report's way back.
pub const CHECK_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// How often the answers are looked for.
const ANSWER_POLL: Duration = Duration::from_millis(100);
/// Longest a produce of a request may take.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

/// The query: `wait=20s`, how long to wait for the answers.
#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    wait: Option<String>,
}

/// What a checker reads from the checks topic.
#[derive(Debug, serde::Serialize)]
struct CheckRequest<'a> {
    request_id: Uuid,
    target_id: &'a str,
    requested_at: chrono::DateTime<Utc>,
    requested_by: &'a str,
}

/// `POST /api/v1/targets/{id}/checks`.
pub async fn check_now(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<CheckQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let target = known_target(&api, &id)?;
    let wait = wait_of(query.wait.as_deref(), &target)?;
    let regions = expected_regions(&api, &id).await?;
    let request_id = Uuid::new_v4();
    send(&api, &id, request_id, &caller.name).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut answers = answers_of(&api, request_id).await?;
    while !complete(&regions, &answers) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(ANSWER_POLL).await;
        answers = answers_of(&api, request_id).await?;
    }
    let complete = complete(&regions, &answers);
    let body = json!({
        "request_id": request_id,
        "target_id": id,
        "complete": complete,
        "expected_regions": regions,
        "results": answers.iter().map(|a| &a.1).collect::<Vec<_>>(),
    });
    let status = if complete {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(body)).into_response())
}

/// The target as the sink knows it (the settings file's or the API's); 404 otherwise.
fn known_target(api: &ApiState, id: &str) -> Result<TargetSettings, ApiError> {
    api.http
        .catalog
        .borrow()
        .targets
        .iter()
        .find(|t| t.id == id)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no target {id:?}: list them with GET /api/v1/targets"
            ))
        })
}

/// How long to wait: `wait`, or the target's timeout and [`CHECK_WAIT_MARGIN`].
fn wait_of(wait: Option<&str>, target: &TargetSettings) -> Result<Duration, ApiError> {
    let Some(text) = wait else {
        return Ok((target.timeout + CHECK_WAIT_MARGIN).min(MAX_CHECK_WAIT));
    };
    match monitor_core::settings::parse_duration(text) {
        Ok(d) if d <= MAX_CHECK_WAIT => Ok(d),
        _ => Err(ApiError::BadRequest(format!(
            "wait: {text:?} is not a duration up to {}s, such as 20s",
            MAX_CHECK_WAIT.as_secs()
        ))),
    }
}

/// The regions that report the target and have not gone silent, by name.
async fn expected_regions(api: &ApiState, id: &str) -> Result<Vec<String>, ApiError> {
    let regions: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT ARRAY(SELECT r FROM jsonb_object_keys(fold::jsonb -> 'rg') r \
           WHERE NOT coalesce(fold::jsonb -> 'sl', '[]'::jsonb) ? r ORDER BY 1) \
         FROM target_states WHERE target_id = $1",
    )
    .bind(id)
    .fetch_optional(&api.http.pool)
    .await?;
    Ok(regions.unwrap_or_default())
}

/// Puts the request on the checks topic.
async fn send(api: &ApiState, id: &str, request_id: Uuid, by: &str) -> Result<(), ApiError> {
    let unavailable = |why: String| {
        ApiError::Unavailable(format!(
            "the check could not be asked for: {why}; try again"
        ))
    };
    // Waited for, bounded: a sink that just started may not have reached Kafka yet.
    let mut kafka = api.http.kafka.subscribe();
    let client = match tokio::time::timeout(PRODUCE_TIMEOUT, kafka.wait_for(Option::is_some)).await
    {
        Ok(Ok(client)) => client
            .clone()
            .ok_or_else(|| unavailable("Kafka is not reachable".into()))?,
        _ => return Err(unavailable("Kafka is not reachable".into())),
    };
    let topic = api.http.settings.kafka.checks_topic.clone();
    let request = CheckRequest {
        request_id,
        target_id: id,
        requested_at: Utc::now(),
        requested_by: by,
    };
    let record = Record {
        key: Some(id.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(&request).unwrap_or_default()),
        headers: Default::default(),
        timestamp: Utc::now(),
    };
    let produce = async {
        // Retried until the topic exists: the sink creates it as it starts.
        let partition = client
            .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
            .await?;
        partition
            .produce(vec![record], Compression::NoCompression)
            .await
    };
    match tokio::time::timeout(PRODUCE_TIMEOUT, produce).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(_) => Err(unavailable(format!(
            "Kafka did not answer in time, or the topic {} does not exist (kafka.checks_topic)",
            api.http.settings.kafka.checks_topic
        ))),
    }
}

/// The answers stored so far, by region.
async fn answers_of(api: &ApiState, request_id: Uuid) -> Result<Vec<(String, Value)>, ApiError> {
    let rows: Vec<(String, SqlJson<Value>)> = sqlx::query_as(
        "SELECT checker_id, report FROM check_results WHERE request_id = $1 ORDER BY checker_id",
    )
    .bind(request_id)
    .fetch_all(&api.http.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(region, report)| (region, report.0))
        .collect())
}

/// Whether every expected region answered (at least one, when none is known).
fn complete(regions: &[String], answers: &[(String, Value)]) -> bool {
    if regions.is_empty() {
        return !answers.is_empty();
    }
    regions.iter().all(|r| answers.iter().any(|a| &a.0 == r))
}

/// Deletes the answers stored before `cutoff`, in batches. Returns the rows deleted.
pub async fn prune_before(
    pool: &sqlx::PgPool,
    cutoff: chrono::DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    const OLD: &str = "DELETE FROM check_results WHERE report_id IN \
        (SELECT report_id FROM check_results WHERE stored_at < $1 LIMIT $2)";
    crate::db::delete_in_batches(pool, OLD, cutoff, PRUNE_BATCH).await
}
