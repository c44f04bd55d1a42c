//! The handlers of `/api/v1/targets`. Reading takes a `read` token, changing an `admin` one.
//! Targets of the settings file are listed and read beside the API's (`"source": "file"`) but
//! never changed here: the file wins, so a change through the API would be overridden.
//! Every change answers with the target's version as an `ETag`; `If-Match` with that value
//! makes a change fail (412) if someone changed the target meanwhile.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use monitor_core::settings::{format_duration, Role, TargetSettings};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};

use super::auth::Caller;
use super::definition::{accept, merge_patch, redacted};
use super::sql::{self, ListFilter, Stored};
use super::{ApiError, ApiState};

/// Default page of a list.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
/// Largest page of a list.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// The query of a list: `label=team=web,env=prod`, `state=down`, `q=text`, `after=id`,
/// `limit=100`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    label: Option<String>,
    state: Option<String>,
    q: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/targets`: the settings file's targets and the API's, in id order, a page at a
/// time (`next` is the `after` of the next page).
pub async fn list(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Read)?;
    let filter = list_filter(&query)?;
    let mut page: Vec<(String, Value)> = Vec::new();
    let file = file_targets(&api, &filter);
    let ids: Vec<String> = file.iter().map(|t| t.id.clone()).collect();
    let states = sql::states(&api.http.pool, &ids).await?;
    for t in file {
        let state = states.get(&t.id).cloned();
        let shown = state.as_ref().map_or("unknown", |s| s.0.as_str());
        if filter.state.as_deref().is_none_or(|wanted| wanted == shown) {
            page.push((t.id.clone(), file_json(t, state)));
        }
    }
    for (stored, state) in sql::list(&api.http.pool, &filter).await? {
        if !api.http.settings.targets.iter().any(|t| t.id == stored.id) {
            page.push((
                stored.id.clone(),
                api_json(&stored, state.map(|s| (s, None))),
            ));
        }
    }
    page.sort_by(|a, b| a.0.cmp(&b.0));
    let more = page.len() as i64 > filter.limit;
    page.truncate(filter.limit as usize);
    let next = more.then(|| page.last().map(|p| p.0.clone())).flatten();
    let targets: Vec<Value> = page.into_iter().map(|p| p.1).collect();
    Ok(Json(json!({"targets": targets, "next": next})).into_response())
}

/// The filter of a list query; 400 naming the parameter when one is malformed.
fn list_filter(query: &ListQuery) -> Result<ListFilter, ApiError> {
    let limit = page_limit(query.limit)?;
    let labels = match &query.label {
        None => None,
        Some(text) => Some(parse_labels(text)?),
    };
    if let Some(state) = &query.state {
        if !["up", "down", "degraded", "unknown"].contains(&state.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "state: {state:?} is not a state: use up, down, degraded or unknown"
            )));
        }
    }
    Ok(ListFilter {
        labels,
        text: query.q.clone().filter(|q| !q.is_empty()),
        state: query.state.clone(),
        after: query.after.clone(),
        limit,
    })
}

/// `team=web,env=prod` as a JSON object.
fn parse_labels(text: &str) -> Result<Value, ApiError> {
    let mut labels = serde_json::Map::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ApiError::BadRequest(format!(
                "label: {pair:?} is not name=value: write label=team=web,env=prod"
            )));
        };
        labels.insert(name.trim().into(), Value::String(value.trim().into()));
    }
    Ok(Value::Object(labels))
}

/// The settings file's targets matching `filter` (all but the state, which needs the
/// database).
fn file_targets<'a>(api: &'a ApiState, filter: &ListFilter) -> Vec<&'a TargetSettings> {
    let text = filter.text.as_deref().map(str::to_lowercase);
    api.http
        .settings
        .targets
        .iter()
        .filter(|t| {
            filter
                .after
                .as_deref()
                .is_none_or(|after| t.id.as_str() > after)
        })
        .filter(|t| match &filter.labels {
            None => true,
            Some(Value::Object(wanted)) => wanted
                .iter()
                .all(|(k, v)| t.labels.get(k).map(String::as_str) == v.as_str()),
            Some(_) => false,
        })
        .filter(|t| {
            text.as_deref().is_none_or(|q| {
                t.id.to_lowercase().contains(q)
                    || t.url.as_str().to_lowercase().contains(q)
                    || t.name
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase().contains(q))
            })
        })
        .collect()
}

/// `GET /api/v1/targets/{id}`.
pub async fn read(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Read)?;
    let states = sql::states(&api.http.pool, std::slice::from_ref(&id)).await?;
    let state = states.get(&id).cloned();
    if let Some(t) = api.http.settings.targets.iter().find(|t| t.id == id) {
        return Ok(Json(file_json(t, state)).into_response());
    }
    match sql::get(&api.http.pool, &id).await? {
        Some(stored) => Ok(with_etag(StatusCode::OK, &stored, api_json(&stored, state))),
        None => Err(not_found(&id)),
    }
}

/// `POST /api/v1/targets`: 201 with the target, its `Location` and `ETag`.
pub async fn create(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let accepted = accept(parse_body(&body)?, None, None)?;
    refuse_file_target(&api, &accepted.target.id)?;
    let stored = sql::create(
        &api.http.pool,
        &accepted.target.id,
        &accepted.json,
        &caller.name,
    )
    .await?;
    api.http.target_changed();
    let mut response = with_etag(StatusCode::CREATED, &stored, api_json(&stored, None));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/targets/{}", stored.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PUT /api/v1/targets/{id}`: the whole definition, created when absent (201).
pub async fn replace(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = parse_body(&body)?;
    let (tx, before) = begin_change(&api, &caller, &id, &headers).await?;
    let accepted = accept(json, Some(&id), before.as_ref().map(|b| &b.definition))?;
    let stored = sql::write(
        tx,
        before.as_ref(),
        &id,
        &accepted.json,
        &caller.name,
        "replace",
    )
    .await?;
    api.http.target_changed();
    let status = if before.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status, &stored, api_json(&stored, None)))
}

/// `PATCH /api/v1/targets/{id}`: a JSON merge patch (RFC 7396) of the definition.
pub async fn patch(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch = parse_body(&body)?;
    let (tx, before) = begin_change(&api, &caller, &id, &headers).await?;
    let before = before.ok_or_else(|| not_found(&id))?;
    let mut json = redacted(&before.definition);
    merge_patch(&mut json, &patch);
    let accepted = accept(json, Some(&id), Some(&before.definition))?;
    let stored = sql::write(
        tx,
        Some(&before),
        &id,
        &accepted.json,
        &caller.name,
        "patch",
    )
    .await?;
    api.http.target_changed();
    Ok(with_etag(StatusCode::OK, &stored, api_json(&stored, None)))
}

/// `DELETE /api/v1/targets/{id}`: 204; checkers stop checking it, its history stays.
pub async fn delete(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (tx, before) = begin_change(&api, &caller, &id, &headers).await?;
    let before = before.ok_or_else(|| not_found(&id))?;
    sql::remove(tx, &before, &caller.name).await?;
    api.http.target_changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of the changes: `after=N`, `limit=100`.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/targets/{id}/changes`: who changed the target, when, before and after.
pub async fn changes(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ChangesQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Read)?;
    let limit = page_limit(query.limit)?;
    let changes = sql::changes(&api.http.pool, &id, query.after.unwrap_or(0), limit).await?;
    Ok(Json(json!({"changes": changes})).into_response())
}

/// A page's `limit`: [`DEFAULT_LIST_LIMIT`] when not given, 1 to [`MAX_LIST_LIMIT`].
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: {limit} is out of range: give 1 to {MAX_LIST_LIMIT}"
        )));
    }
    Ok(limit)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not JSON ({e}): send a JSON object such as {{\"url\": \"https://example.com\"}}"
        ))
    })
}

/// `If-Match: "N"` as version N; `*` or none as no condition.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "If-Match: {text:?} is not a version: send the ETag of the target as read"
            ))
        })
}

/// The start of a change of target `id`: an admin's, not of a settings file's target, in a
/// transaction holding the stored definition (if any) locked at the version `If-Match` names.
async fn begin_change(
    api: &ApiState,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
) -> Result<(Transaction<'static, Postgres>, Option<Stored>), ApiError> {
    caller.require(Role::Admin)?;
    refuse_file_target(api, id)?;
    let expected = if_match(headers)?;
    let mut tx = api.http.pool.begin().await?;
    let before = sql::lock(&mut tx, id, expected).await?;
    Ok((tx, before))
}

fn refuse_file_target(api: &ApiState, id: &str) -> Result<(), ApiError> {
    if api.http.settings.targets.iter().any(|t| t.id == id) {
        return Err(ApiError::Conflict(format!(
            "target {id:?} is defined in the settings file, which wins over the API: change it there"
        )));
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no target {id:?}: list them with GET /api/v1/targets"
    ))
}

fn with_etag(status: StatusCode, stored: &Stored, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", stored.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

type State_ = Option<(String, Option<DateTime<Utc>>)>;

fn state_json(state: State_) -> Value {
    match state {
        None => json!({"state": "unknown", "since": null}),
        Some((state, since)) => json!({"state": state, "since": since}),
    }
}

/// A target made through the API, as answered.
fn api_json(stored: &Stored, state: State_) -> Value {
    json!({
        "id": stored.id,
        "source": "api",
        "version": stored.version,
        "definition": redacted(&stored.definition),
        "state": state_json(state),
        "created_at": stored.created.0,
        "created_by": stored.created.1,
        "updated_at": stored.updated.0,
        "updated_by": stored.updated.1,
    })
}

/// A target of the settings file, as answered: its main keys (secrets never shown).
fn file_json(t: &TargetSettings, state: State_) -> Value {
    let mut definition = json!({
        "id": t.id,
        "url": t.url.as_str(),
        "method": t.method.as_str(),
        "period": format_duration(t.period),
        "timeout": format_duration(t.timeout),
        "labels": t.labels,
        "public": t.public,
        "notify": t.notify,
    });
    if let (Some(name), Some(object)) = (&t.name, definition.as_object_mut()) {
        object.insert("name".into(), Value::String(name.clone()));
    }
    json!({
        "id": t.id,
        "source": "file",
        "version": null,
        "definition": definition,
        "state": state_json(state),
        "created_at": null,
        "created_by": null,
        "updated_at": null,
        "updated_by": null,
    })
}
