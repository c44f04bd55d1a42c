//! The statements of a batch's transaction besides its report rows: move the partition's
//! offset (only from where the batch started), insert the answers to "check now" requests and
//! the dead letters. Rows go in as one array per column through `UNNEST`, so a batch of any
//! size is one statement per table. (The report rows: [`super::rows`].)

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::batch::Batch;
use super::text::{reason, storable_text};
use crate::error::SinkError;

/// The stored next offset of a partition.
pub(super) async fn stored_offset<'e>(
    executor: impl PgExecutor<'e>,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT next_offset FROM kafka_offsets WHERE kafka_topic = $1 AND kafka_partition = $2",
    )
    .bind(topic)
    .bind(partition)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Moves the partition's offset to the batch's next offset, if it is still where the batch
/// started; otherwise another replica owns the partition.
pub(super) async fn advance_offset(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<(), SinkError> {
    let updated = match batch.expected_offset {
        Some(expected) => sqlx::query(
            "UPDATE kafka_offsets SET next_offset = $3, updated_at = now() \
             WHERE kafka_topic = $1 AND kafka_partition = $2 AND next_offset = $4",
        )
        .bind(&batch.topic)
        .bind(batch.partition)
        .bind(batch.next_offset)
        .bind(expected)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
        None => sqlx::query(
            "INSERT INTO kafka_offsets (kafka_topic, kafka_partition, next_offset) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&batch.topic)
        .bind(batch.partition)
        .bind(batch.next_offset)
        .execute(&mut **tx)
        .await?
        .rows_affected(),
    };
    if updated == 1 {
        return Ok(());
    }
    let found = stored_offset(&mut **tx, &batch.topic, batch.partition).await?;
    Err(SinkError::OffsetMoved {
        topic: batch.topic.clone(),
        partition: batch.partition,
        expected: batch.expected_offset,
        found,
    })
}

/// Inserts the batch's answers to "check now" requests into `check_results`, apart from the
/// scheduled results (skipping stored `report_id`s). Returns the rows inserted.
pub(super) async fn insert_checks(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<u64, SinkError> {
    let checks: Vec<&Report> = batch
        .reports
        .iter()
        .filter(|(_, r)| r.check_request.is_some())
        .map(|(_, r)| r)
        .collect();
    if checks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = checks.iter().map(|r| r.report_id).collect();
    let requests: Vec<Option<Uuid>> = checks.iter().map(|r| r.check_request).collect();
    let targets: Vec<String> = checks
        .iter()
        .map(|r| storable_text(&r.target_id).into_owned())
        .collect();
    let regions: Vec<String> = checks
        .iter()
        .map(|r| storable_text(&r.checker_id).into_owned())
        .collect();
    let started: Vec<DateTime<Utc>> = checks.iter().map(|r| r.started_at).collect();
    // jsonb holds no NUL character, not even escaped.
    let reports: Vec<String> = checks
        .iter()
        .map(|r| String::from_utf8_lossy(&r.to_json()).replace("\\u0000", "\\ufffd"))
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO check_results (report_id, request_id, target_id, checker_id, started_at, report) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], \
           $6::text[]::jsonb[]) ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&requests)
    .bind(&targets)
    .bind(&regions)
    .bind(&started)
    .bind(&reports)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected())
}

/// Inserts the batch's dead letters. Returns the rows inserted.
pub(super) async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<u64, SinkError> {
    if batch.dead_letters.is_empty() {
        return Ok(0);
    }
    let offsets: Vec<i64> = batch.dead_letters.iter().map(|d| d.offset).collect();
    let keys: Vec<Option<&[u8]>> = batch
        .dead_letters
        .iter()
        .map(|d| d.key.as_deref())
        .collect();
    let payloads: Vec<Option<&[u8]>> = batch
        .dead_letters
        .iter()
        .map(|d| d.payload.as_deref())
        .collect();
    let errors: Vec<String> = batch
        .dead_letters
        .iter()
        .map(|d| reason(&d.error))
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, key, payload, error) \
         SELECT $1, $2, u.o, u.k, u.p, u.e FROM UNNEST($3::int8[], $4::bytea[], $5::bytea[], $6::text[]) \
           AS u(o, k, p, e) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&batch.topic)
    .bind(batch.partition)
    .bind(&offsets)
    .bind(&keys)
    .bind(&payloads)
    .bind(&errors)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected())
}
