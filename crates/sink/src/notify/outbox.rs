//! The outbox's SQL: rows written inside the fold's transaction, claimed by the dispatcher in
//! short transactions of their own (`FOR UPDATE SKIP LOCKED`, then a lease: the claimed rows'
//! `next_attempt_at` moves past the attempt), and the outcome of each attempt written back.
//! A replica that dies holding a lease loses nothing: its rows are due again when the lease
//! ends, and go out with the same key.
//!
//! Delivered and failed rows past `sink.verdicts.retention` are deleted by housekeeping with
//! their attempts ([`prune_before`]); pending ones stay, as does the opening of an incident
//! still open (its reminders are sent to the channels it went to).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::message::Event;
use super::routing::OutboxRow;

/// Most notifications one `DELETE` of [`prune_before`] removes (their attempts go with
/// them).
pub const PRUNE_BATCH: i64 = 10_000;

/// One claimed notification.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: Uuid,
    /// Its place in the order of writing.
    pub seq: i64,
    /// Its channel.
    pub channel: String,
    /// Its group key (channel and transition).
    pub group_key: String,
    /// The key of the message that carried it before, if it was tried already.
    pub message_key: Option<String>,
    /// Its event.
    pub event: Event,
    /// Attempts so far.
    pub attempts: i32,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// The outcome of one attempt, for every notification of the message.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it began.
    pub at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
    /// `delivered`, `retry` or `refused`.
    pub outcome: &'static str,
    /// The answer's status.
    pub http_status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Writes `rows` (in the caller's transaction); rows written already are skipped. Returns
/// the rows written.
pub async fn insert(conn: &mut PgConnection, rows: &[OutboxRow]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.event.key.as_str()).collect();
    let channels: Vec<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
    let groups: Vec<&str> = rows.iter().map(|r| r.group_key.as_str()).collect();
    let events: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::to_value(&r.event).unwrap_or_default())
        .collect();
    let done = sqlx::query(
        "INSERT INTO notifications (id, event_key, channel, group_key, event)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&channels)
    .bind(&groups)
    .bind(&events)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` due notifications for `lease`: they are not due again for anyone
/// until it ends. Planning (grouping, the rate) runs on the claimed rows inside the claim's
/// transaction, and `plan` returns the message key of each row to send now (`Some`) or the
/// wait before the row is due again (`None` with a delay).
pub async fn claim<F>(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
    plan: F,
) -> Result<Vec<(String, Vec<Claimed>)>, sqlx::Error>
where
    F: FnOnce(Vec<Claimed>) -> Planned,
{
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, seq, channel, group_key, message_key, event, attempts, created_at
         FROM notifications
         WHERE status = 'pending' AND next_attempt_at <= now()
         ORDER BY next_attempt_at, seq
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let claimed = rows.iter().filter_map(claimed_of).collect::<Vec<_>>();
    if claimed.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let planned = plan(claimed);
    for (key, members) in &planned.send {
        let ids: Vec<Uuid> = members.iter().map(|c| c.id).collect();
        sqlx::query(
            "UPDATE notifications SET message_key = $2, next_attempt_at = now() + $3
             WHERE id = ANY($1)",
        )
        .bind(&ids)
        .bind(key)
        .bind(interval(lease))
        .execute(&mut *tx)
        .await?;
    }
    for (id, wait) in &planned.defer {
        sqlx::query("UPDATE notifications SET next_attempt_at = now() + $2 WHERE id = $1")
            .bind(id)
            .bind(interval(*wait))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(planned.send)
}

/// What to do with claimed rows: messages to send now, rows to put off.
#[derive(Debug, Default)]
pub struct Planned {
    /// Message key and its notifications.
    pub send: Vec<(String, Vec<Claimed>)>,
    /// Rows put off, and for how long.
    pub defer: Vec<(Uuid, Duration)>,
}

fn claimed_of(row: &sqlx::postgres::PgRow) -> Option<Claimed> {
    let event: serde_json::Value = row.try_get("event").ok()?;
    Some(Claimed {
        id: row.try_get("id").ok()?,
        seq: row.try_get("seq").ok()?,
        channel: row.try_get("channel").ok()?,
        group_key: row.try_get("group_key").ok()?,
        message_key: row.try_get("message_key").ok()?,
        event: serde_json::from_value(event).ok()?,
        attempts: row.try_get("attempts").ok()?,
        created_at: row.try_get("created_at").ok()?,
    })
}

/// Records `attempt` for every notification of `ids`, and its result: delivered, due again
/// after `retry_in`, or failed (`retry_in` `None` and not delivered).
pub async fn finish(
    pool: &PgPool,
    ids: &[Uuid],
    attempt: &Attempt,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO notification_attempts
             (notification_id, attempted_at, duration, outcome, http_status, error)
         SELECT id, $2, $3, $4, $5, $6 FROM UNNEST($1::uuid[]) AS id",
    )
    .bind(ids)
    .bind(attempt.at)
    .bind(interval(attempt.duration))
    .bind(attempt.outcome)
    .bind(attempt.http_status.map(i32::from))
    .bind(attempt.error.as_deref())
    .execute(&mut *tx)
    .await?;
    let status = match (attempt.outcome, retry_in) {
        ("delivered", _) => "delivered",
        (_, Some(_)) => "pending",
        (_, None) => "failed",
    };
    sqlx::query(
        "UPDATE notifications SET status = $2, attempts = attempts + 1, last_error = $3,
             delivered_at = CASE WHEN $2 = 'delivered' THEN now() END,
             next_attempt_at = now() + COALESCE($4, interval '0')
         WHERE id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .bind(status)
    .bind(attempt.error.as_deref())
    .bind(retry_in.map(interval))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Gives up on the pending notifications of `ids` without an attempt (their channel is gone):
/// failed, with `error` as the last error. Returns how many it failed.
pub async fn fail(pool: &PgPool, ids: &[Uuid], error: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET status = 'failed', last_error = $2, next_attempt_at = now()
         WHERE id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// `d` to whole microseconds: PostgreSQL's `interval` holds no finer.
fn interval(d: Duration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Notifications pending, in the whole database.
pub async fn pending(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'pending'")
        .fetch_one(pool)
        .await
}

/// Failed notifications per channel: the count and the newest error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedChannel {
    /// The channel.
    pub channel: String,
    /// Notifications given up on.
    pub failed: i64,
    /// The error of the newest of them.
    pub last_error: Option<String>,
}

/// Failed notifications per channel.
pub async fn failed_by_channel(pool: &PgPool) -> Result<Vec<FailedChannel>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT channel, count(*) AS failed,
                (array_agg(last_error ORDER BY next_attempt_at DESC))[1] AS last_error
         FROM notifications WHERE status = 'failed'
         GROUP BY channel ORDER BY channel",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(FailedChannel {
                channel: r.try_get("channel")?,
                failed: r.try_get("failed")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .collect()
}

/// Deletes the delivered and failed notifications written before `cutoff`, and their
/// attempts, in statements of at most [`PRUNE_BATCH`] notifications. Pending ones are kept,
/// and so is the opening of an incident still open. Returns the notifications deleted.
pub async fn prune_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const CLOSED: &str = "DELETE FROM notifications WHERE id = ANY(ARRAY(\
        SELECT n.id FROM notifications n \
        WHERE n.status IN ('delivered', 'failed') AND n.created_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.closed_at IS NULL \
                          AND n.event_key = 'incident/' || i.incident_id || '/opened') \
        LIMIT $2))";
    crate::db::delete_in_batches(pool, CLOSED, cutoff, PRUNE_BATCH).await
}
