//! The statements of a batch's transaction: move the partition's offset (only from where the
//! batch started), insert the targets and result rows (skipping stored `report_id`s), and the
//! dead letters. Rows go in as one array per column through `UNNEST`, so a batch of any size
//! is one statement per table. When the verdicts are folded, the insert returns the ids of the
//! rows it inserted, so that only those reports are folded.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use sqlx::{PgExecutor, Postgres, Row, Transaction};
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

/// What inserting a batch's reports did.
#[derive(Debug, Default)]
pub(super) struct Inserted {
    /// Rows inserted.
    pub rows: u64,
    /// Their `report_id`s, when asked for.
    pub ids: HashSet<Uuid>,
}

impl Inserted {
    /// The reports of `batch` that were inserted, in offset order (a report twice in the
    /// batch counts once, as it was inserted once).
    pub fn reports(mut self, batch: &Batch) -> Vec<&Report> {
        batch
            .reports
            .iter()
            .filter(|(_, r)| self.ids.remove(&r.report_id))
            .map(|(_, r)| r)
            .collect()
    }
}

/// Inserts the batch's targets, then its reports (skipping stored `report_id`s); with
/// `returning`, also says which were inserted.
pub(super) async fn insert_reports(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
    returning: bool,
) -> Result<Inserted, SinkError> {
    if batch.reports.is_empty() {
        return Ok(Inserted::default());
    }
    insert_targets(tx, batch).await?;
    insert_results(tx, batch, returning).await
}

/// Inserts the targets the batch's reports name. They go first (the rows reference them), in
/// a fixed order so that two replicas inserting the same new targets cannot deadlock.
async fn insert_targets(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<(), SinkError> {
    let targets: BTreeMap<&str, &str> = batch
        .reports
        .iter()
        .map(|(_, r)| (r.target_id.as_str(), r.url.as_str()))
        .collect();
    let (ids, urls): (Vec<&str>, Vec<&str>) = targets.into_iter().unzip();
    sqlx::query(
        "INSERT INTO targets (target_id, url) SELECT * FROM UNNEST($1::text[], $2::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&urls)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The insert of a batch's rows; `{returning}` is where `RETURNING` goes.
const INSERT_RESULTS: &str =
    "INSERT INTO results (report_id, target_id, url, checker_id, scheduled_at, started_at, \
           status, failure_class, error, http_status, response_time_ms, dns_ms, connect_ms, \
           tls_ms, ttfb_ms, transfer_ms, body_bytes, body_truncated, regexp, regexp_matched, \
           tls_cert_not_after, timeout_s, period_s, kafka_topic, kafka_partition, kafka_offset) \
         SELECT u.report_id, u.target_id, u.url, u.checker_id, u.scheduled_at, u.started_at, \
           u.status::check_status, u.failure_class::failure_class, u.error, u.http_status, \
           u.response_time_ms, u.dns_ms, u.connect_ms, u.tls_ms, u.ttfb_ms, u.transfer_ms, \
           u.body_bytes, u.body_truncated, u.regexp, u.regexp_matched, u.tls_cert_not_after, \
           u.timeout_s, u.period_s, $24, $25, u.kafka_offset \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
           $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::float8[], \
           $12::float8[], $13::float8[], $14::float8[], $15::float8[], $16::float8[], \
           $17::int8[], $18::bool[], $19::text[], $20::bool[], $21::timestamptz[], \
           $22::float8[], $23::float8[], $26::int8[]) \
           AS u(report_id, target_id, url, checker_id, scheduled_at, started_at, status, \
                failure_class, error, http_status, response_time_ms, dns_ms, connect_ms, tls_ms, \
                ttfb_ms, transfer_ms, body_bytes, body_truncated, regexp, regexp_matched, \
                tls_cert_not_after, timeout_s, period_s, kafka_offset) \
         ON CONFLICT DO NOTHING";

/// Inserts the batch's reports as result rows, skipping stored `report_id`s; with
/// `returning`, also returns the ids of the rows inserted.
async fn insert_results(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
    returning: bool,
) -> Result<Inserted, SinkError> {
    let mut c = Columns::default();
    for (offset, r) in batch
        .reports
        .iter()
        .filter(|(_, r)| r.check_request.is_none())
    {
        c.push(*offset, r);
    }
    if c.report_id.is_empty() {
        return Ok(Inserted::default());
    }
    let statement = if returning {
        format!("{INSERT_RESULTS} RETURNING report_id")
    } else {
        INSERT_RESULTS.to_string()
    };
    let query = sqlx::query(&statement)
        .bind(&c.report_id)
        .bind(&c.target_id)
        .bind(&c.url)
        .bind(&c.checker_id)
        .bind(&c.scheduled_at)
        .bind(&c.started_at)
        .bind(&c.status)
        .bind(&c.failure_class)
        .bind(&c.error)
        .bind(&c.http_status)
        .bind(&c.response_time_ms)
        .bind(&c.dns_ms)
        .bind(&c.connect_ms)
        .bind(&c.tls_ms)
        .bind(&c.ttfb_ms)
        .bind(&c.transfer_ms)
        .bind(&c.body_bytes)
        .bind(&c.body_truncated)
        .bind(&c.regexp)
        .bind(&c.regexp_matched)
        .bind(&c.tls_cert_not_after)
        .bind(&c.timeout_s)
        .bind(&c.period_s)
        .bind(&batch.topic)
        .bind(batch.partition)
        .bind(&c.kafka_offset);
    if !returning {
        let rows = query.execute(&mut **tx).await?.rows_affected();
        return Ok(Inserted {
            rows,
            ids: HashSet::new(),
        });
    }
    let ids: HashSet<Uuid> = query
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get::<Uuid, _>(0))
        .collect::<Result<_, _>>()?;
    Ok(Inserted {
        rows: ids.len() as u64,
        ids,
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

/// A batch of reports as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns {
    report_id: Vec<Uuid>,
    target_id: Vec<String>,
    url: Vec<String>,
    checker_id: Vec<String>,
    scheduled_at: Vec<DateTime<Utc>>,
    started_at: Vec<DateTime<Utc>>,
    status: Vec<&'static str>,
    failure_class: Vec<Option<&'static str>>,
    error: Vec<Option<String>>,
    http_status: Vec<Option<i32>>,
    response_time_ms: Vec<Option<f64>>,
    dns_ms: Vec<Option<f64>>,
    connect_ms: Vec<Option<f64>>,
    tls_ms: Vec<Option<f64>>,
    ttfb_ms: Vec<Option<f64>>,
    transfer_ms: Vec<Option<f64>>,
    body_bytes: Vec<Option<i64>>,
    body_truncated: Vec<Option<bool>>,
    regexp: Vec<Option<String>>,
    regexp_matched: Vec<Option<bool>>,
    tls_cert_not_after: Vec<Option<DateTime<Utc>>>,
    timeout_s: Vec<f64>,
    period_s: Vec<f64>,
    kafka_offset: Vec<i64>,
}

impl Columns {
    fn push(&mut self, offset: i64, r: &Report) {
        self.report_id.push(r.report_id);
        self.target_id
            .push(storable_text(&r.target_id).into_owned());
        self.url.push(storable_text(&r.url).into_owned());
        self.checker_id
            .push(storable_text(&r.checker_id).into_owned());
        self.scheduled_at.push(r.scheduled_at);
        self.started_at.push(r.started_at);
        self.status.push(r.status.as_str());
        self.failure_class.push(r.failure_class.map(|c| c.as_str()));
        self.error
            .push(r.error.as_deref().map(|t| storable_text(t).into_owned()));
        self.http_status.push(r.http_status.map(i32::from));
        self.response_time_ms.push(r.response_time_ms);
        self.dns_ms.push(r.timings_ms.dns);
        self.connect_ms.push(r.timings_ms.connect);
        self.tls_ms.push(r.timings_ms.tls);
        self.ttfb_ms.push(r.timings_ms.ttfb);
        self.transfer_ms.push(r.timings_ms.transfer);
        self.body_bytes
            .push(r.body_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)));
        self.body_truncated.push(r.body_truncated);
        self.regexp
            .push(r.regexp.as_deref().map(|t| storable_text(t).into_owned()));
        self.regexp_matched.push(r.regexp_matched);
        self.tls_cert_not_after.push(r.tls_cert_not_after);
        self.timeout_s.push(r.timeout_s);
        self.period_s.push(r.period_s);
        self.kafka_offset.push(offset);
    }
}
