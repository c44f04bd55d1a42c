//! The API's statements. A change is one transaction: the definition (locked, its version
//! checked against `If-Match`), the audit row, and the outbox row the publisher puts on the
//! targets topic, so the topic never misses a change the API answered for and never carries
//! one it did not.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::definition::redacted;
use super::ApiError;

/// A definition made through the API, as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The target's id.
    pub id: String,
    /// The definition, secrets included.
    pub definition: Value,
    /// Raised by every change.
    pub version: i64,
    /// When it was made, and by whom.
    pub created: (DateTime<Utc>, String),
    /// When it was last changed, and by whom.
    pub updated: (DateTime<Utc>, String),
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    target_id: String,
    definition: Json<Value>,
    version: i64,
    created_at: DateTime<Utc>,
    created_by: String,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    stored: StoredRow,
    state: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    change_id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    before: Option<Json<Value>>,
    after: Option<Json<Value>>,
}

const STORED_COLUMNS: &str =
    "target_id, definition, version, created_at, created_by, updated_at, updated_by";

impl From<StoredRow> for Stored {
    fn from(r: StoredRow) -> Stored {
        Stored {
            id: r.target_id,
            definition: r.definition.0,
            version: r.version,
            created: (r.created_at, r.created_by),
            updated: (r.updated_at, r.updated_by),
        }
    }
}

/// What a list asks for.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Labels the definition must carry, as a JSON object.
    pub labels: Option<Value>,
    /// A case-insensitive piece of the id, name or URL.
    pub text: Option<String>,
    /// The state the target must be in (`unknown` includes targets with no state yet).
    pub state: Option<String>,
    /// Ids after this one, in id order.
    pub after: Option<String>,
    /// Most rows.
    pub limit: i64,
}

/// The target's definition, if made through the API.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Stored>, ApiError> {
    let row: Option<StoredRow> = sqlx::query_as(&format!(
        "SELECT {STORED_COLUMNS} FROM api_targets WHERE target_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Stored::from))
}

/// API-made targets matching `filter`, in id order, with their states.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
) -> Result<Vec<(Stored, Option<String>)>, ApiError> {
    let pattern = filter
        .text
        .as_ref()
        .map(|t| format!("%{}%", like_escaped(t)));
    let rows: Vec<ListedRow> = sqlx::query_as(
        "SELECT a.target_id, a.definition, a.version, a.created_at, a.created_by, \
               a.updated_at, a.updated_by, s.state \
             FROM api_targets a LEFT JOIN target_states s USING (target_id) \
             WHERE ($1::text IS NULL OR a.target_id > $1) \
               AND ($2::jsonb IS NULL OR a.definition -> 'labels' @> $2) \
               AND ($3::text IS NULL OR a.target_id ILIKE $3 OR a.definition ->> 'name' ILIKE $3 \
                    OR a.definition ->> 'url' ILIKE $3) \
               AND ($4::text IS NULL OR coalesce(s.state, 'unknown') = $4) \
             ORDER BY a.target_id LIMIT $5",
    )
    .bind(&filter.after)
    .bind(filter.labels.clone().map(Json))
    .bind(pattern)
    .bind(&filter.state)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (Stored::from(r.stored), r.state))
        .collect())
}

/// `%`, `_` and `\` taken literally in an `ILIKE` pattern.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The states of `ids`, with when each began.
pub async fn states(
    pool: &PgPool,
    ids: &[String],
) -> Result<HashMap<String, (String, Option<DateTime<Utc>>)>, ApiError> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT target_id, state, since FROM target_states WHERE target_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, s, since)| (id, (s, since)))
        .collect())
}

/// Stores a new target, its audit row and its outbox row; 409 when the id exists.
pub async fn create(
    pool: &PgPool,
    id: &str,
    definition: &Value,
    actor: &str,
) -> Result<Stored, ApiError> {
    let mut tx = pool.begin().await?;
    let row: Option<StoredRow> = sqlx::query_as(&format!(
        "INSERT INTO api_targets (target_id, definition, created_by, updated_by) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (target_id) DO NOTHING RETURNING {STORED_COLUMNS}"
    ))
    .bind(id)
    .bind(Json(definition))
    .bind(actor)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::Conflict(format!(
            "a target with id {id:?} exists: change it with PUT or PATCH /api/v1/targets/{id}, or give another id"
        )));
    };
    record(&mut tx, actor, "create", id, None, Some(definition)).await?;
    tx.commit().await?;
    Ok(Stored::from(row))
}

/// The target locked for a change in `tx`, checked against `if_match`; 404 when absent.
pub async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    id: &str,
    if_match: Option<i64>,
) -> Result<Option<Stored>, ApiError> {
    let row: Option<StoredRow> = sqlx::query_as(&format!(
        "SELECT {STORED_COLUMNS} FROM api_targets WHERE target_id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let stored = row.map(Stored::from);
    if let (Some(stored), Some(expected)) = (&stored, if_match) {
        if stored.version != expected {
            return Err(ApiError::VersionMoved {
                current: stored.version,
            });
        }
    }
    Ok(stored)
}

/// Writes a new definition of a locked target (or a new target, from `PUT`), with its audit
/// and outbox rows, and commits.
pub async fn write(
    mut tx: Transaction<'static, Postgres>,
    before: Option<&Stored>,
    id: &str,
    definition: &Value,
    actor: &str,
    action: &str,
) -> Result<Stored, ApiError> {
    let row: StoredRow = sqlx::query_as(&format!(
        "INSERT INTO api_targets (target_id, definition, created_by, updated_by) \
         VALUES ($1, $2, $3, $3) \
         ON CONFLICT (target_id) DO UPDATE SET definition = EXCLUDED.definition, \
           version = api_targets.version + 1, updated_at = now(), updated_by = EXCLUDED.updated_by \
         RETURNING {STORED_COLUMNS}"
    ))
    .bind(id)
    .bind(Json(definition))
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    let previous = before.map(|b| &b.definition);
    record(&mut tx, actor, action, id, previous, Some(definition)).await?;
    tx.commit().await?;
    Ok(Stored::from(row))
}

/// Deletes a locked target, with its audit row and a tombstone in the outbox, and commits.
pub async fn remove(
    mut tx: Transaction<'static, Postgres>,
    stored: &Stored,
    actor: &str,
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM api_targets WHERE target_id = $1")
        .bind(&stored.id)
        .execute(&mut *tx)
        .await?;
    record(
        &mut tx,
        actor,
        "delete",
        &stored.id,
        Some(&stored.definition),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The audit row of a change (secrets redacted) and its outbox row (secrets kept: the
/// checkers need them).
async fn record(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    id: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO target_changes (actor, action, target_id, before, after) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(id)
    .bind(before.map(|b| Json(redacted(b))))
    .bind(after.map(|a| Json(redacted(a))))
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO target_outbox (target_id, definition) VALUES ($1, $2)")
        .bind(id)
        .bind(after.map(Json))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One recorded change.
#[derive(Debug, serde::Serialize)]
pub struct Change {
    /// Its number, rising with time.
    pub change: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The token's name.
    pub actor: String,
    /// `create`, `replace`, `patch` or `delete`.
    pub action: String,
    /// The definition before (secrets redacted).
    pub before: Option<Value>,
    /// The definition after (secrets redacted).
    pub after: Option<Value>,
}

/// The changes of target `id`, oldest first, after change number `after`.
pub async fn changes(
    pool: &PgPool,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Change>, ApiError> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT change_id, at, actor, action, before, after FROM target_changes \
             WHERE target_id = $1 AND change_id > $2 ORDER BY change_id LIMIT $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Change {
            change: r.change_id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            before: r.before.map(|j| j.0),
            after: r.after.map(|j| j.0),
        })
        .collect())
}
