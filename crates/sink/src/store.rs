//! [`ReportStore`]: the only code that writes SQL. One transaction per batch holds the batch's
//! rows, its dead letters and the partition's next offset, so a crash anywhere stores a batch
//! wholly or not at all.
//!
//! A batch the database refuses for a reason tied to its data (a value out of range, a bound
//! of the schema, an index row too large) is bisected by [`ReportStore::store_bisecting`]: the
//! message it cannot hold becomes a dead letter, the rest are stored, and the partition moves
//! on. Refusals that are not about the data (the connection, a lock, a missing day partition)
//! are returned for the caller to retry.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use monitor_core::report::Report;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::warn;
use uuid::Uuid;

use crate::decode::{decode, reason, storable_text, Window};
use crate::partitions::{is_missing_partition, DayPartitions};
use crate::SinkError;

/// A message that is not a valid report, kept as received.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
    /// Why it is not a report.
    pub error: String,
}

/// A message as received, kept with its report until the report is stored, so that a report
/// the database refuses becomes a dead letter of the original bytes.
#[derive(Debug, Clone)]
struct Received {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// The messages of one partition between two stored offsets.
#[derive(Debug)]
pub struct Batch {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The stored next offset this batch continues from (`None`: nothing stored yet).
    pub expected_offset: Option<i64>,
    /// Where consumption resumes after this batch.
    pub next_offset: i64,
    /// Valid reports, with their offsets.
    pub reports: Vec<(i64, Report)>,
    /// Invalid messages.
    pub dead_letters: Vec<DeadLetter>,
    /// The raw messages of `reports`, by offset.
    received: BTreeMap<i64, Received>,
    /// Bytes of the keys and values pushed.
    bytes: usize,
    /// The span of `scheduled_at` accepted.
    window: Window,
}

impl Batch {
    /// An empty batch continuing from `expected_offset`, resuming at `next_offset`, accepting
    /// the default [`Window`].
    pub fn new(
        topic: &str,
        partition: i32,
        expected_offset: Option<i64>,
        next_offset: i64,
    ) -> Batch {
        Batch {
            topic: topic.to_string(),
            partition,
            expected_offset,
            next_offset,
            reports: Vec::new(),
            dead_letters: Vec::new(),
            received: BTreeMap::new(),
            bytes: 0,
            window: Window::default(),
        }
    }

    /// This batch, accepting reports scheduled within `window` only.
    pub fn with_window(mut self, window: Window) -> Batch {
        self.window = window;
        self
    }

    /// Adds one message: a report, or a dead letter saying why not.
    pub fn push(&mut self, offset: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>) {
        self.bytes += key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
        match decode(value.as_deref(), &self.window, Utc::now()) {
            Ok(report) => {
                self.reports.push((offset, report));
                self.received.insert(offset, Received { key, value });
            }
            Err(error) => self.push_dead_letter(offset, key, value, error),
        }
        self.next_offset = self.next_offset.max(offset + 1);
    }

    fn push_dead_letter(
        &mut self,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        error: String,
    ) {
        warn!(topic = %self.topic, partition = self.partition, offset, %error, "dead letter");
        self.dead_letters.push(DeadLetter {
            offset,
            key,
            payload: value,
            error,
        });
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.reports.len() + self.dead_letters.len()
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the keys and values pushed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether storing this batch still has something to do: messages, or an offset to move.
    fn has_work(&self) -> bool {
        !self.is_empty() || self.expected_offset != Some(self.next_offset)
    }

    /// The offset that ends the first `n` messages: the offset of message `n + 1`, or the
    /// batch's next offset when there are no more.
    fn cut_after(&self, n: usize) -> i64 {
        let mut offsets: Vec<i64> = self
            .reports
            .iter()
            .map(|(o, _)| *o)
            .chain(self.dead_letters.iter().map(|d| d.offset))
            .collect();
        offsets.sort_unstable();
        offsets.get(n).copied().unwrap_or(self.next_offset)
    }

    /// A copy of the messages before offset `cut`, as a batch of its own ending at `cut`.
    fn front(&self, cut: i64) -> Batch {
        let mut front = Batch::new(&self.topic, self.partition, self.expected_offset, cut);
        front.reports = self
            .reports
            .iter()
            .filter(|(o, _)| *o < cut)
            .cloned()
            .collect();
        front.dead_letters = self
            .dead_letters
            .iter()
            .filter(|d| d.offset < cut)
            .cloned()
            .collect();
        front
    }

    /// Forgets the messages before `cut`, stored up to there.
    fn drop_front(&mut self, cut: i64) {
        self.reports.retain(|(o, _)| *o >= cut);
        self.dead_letters.retain(|d| d.offset >= cut);
        self.received = self.received.split_off(&cut);
        self.expected_offset = Some(cut);
    }

    /// Turns the report at `offset` into a dead letter of its original bytes.
    fn refuse(&mut self, offset: i64, why: &str) {
        let report = self.reports.iter().position(|(o, _)| *o == offset);
        let report = report.map(|i| self.reports.remove(i).1);
        // A report pushed without its bytes is kept as the JSON it stands for.
        let (key, value) = match self.received.remove(&offset) {
            Some(r) => (r.key, r.value),
            None => (None, report.map(|r| r.to_json())),
        };
        let error = reason(&format!("the database refused the report: {why}"));
        self.push_dead_letter(offset, key, value, error);
    }
}

/// Whether the database refused a statement because of the data it was given, so that the
/// same data will always be refused: SQLSTATE class 22 (data exception), 23 (integrity
/// constraint violation) and 54 (program limit exceeded, such as an index row too large).
/// A missing day partition ([`is_missing_partition`]) is not about the data: it is created and
/// the batch retried.
pub fn is_data_error(error: &SinkError) -> bool {
    let SinkError::Database(inner) = error else {
        return false;
    };
    let db = match inner {
        sqlx::Error::Database(db) => db,
        sqlx::Error::Encode(_) => return true,
        _ => return false,
    };
    let Some(code) = db.code() else {
        return false;
    };
    match code.get(..2) {
        Some("22" | "54") => true,
        Some("23") => !is_missing_partition(error),
        _ => false,
    }
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// New result rows.
    pub rows: u64,
    /// Reports skipped because their `report_id` was stored already.
    pub duplicates: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
}

impl Stored {
    /// Adds what another store did.
    pub fn add(&mut self, other: Stored) {
        self.rows += other.rows;
        self.duplicates += other.duplicates;
        self.dead_letters += other.dead_letters;
    }
}

/// Writes batches, offsets and table partitions.
#[derive(Debug)]
pub struct ReportStore {
    pool: PgPool,
    /// The day partitions of `results`.
    partitions: DayPartitions,
}

impl ReportStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> ReportStore {
        ReportStore {
            pool,
            partitions: DayPartitions::default(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The stored next offset of a partition.
    pub async fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, SinkError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM kafka_offsets WHERE kafka_topic = $1 AND kafka_partition = $2",
        )
        .bind(topic)
        .bind(partition)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Stores a batch in one transaction: the targets, the rows (skipping stored
    /// `report_id`s), the dead letters, and the partition's next offset, which must still be the
    /// one the batch started from. The day partitions its reports need are created first, and
    /// again when another replica dropped one this replica believed existed.
    pub async fn store(&self, batch: &Batch) -> Result<Stored, SinkError> {
        let days: HashSet<NaiveDate> = batch
            .reports
            .iter()
            .map(|(_, r)| r.scheduled_at.date_naive())
            .collect();
        self.partitions.ensure(&self.pool, &days).await?;
        match self.store_once(batch).await {
            Err(e) if is_missing_partition(&e) => {
                warn!(topic = %batch.topic, partition = batch.partition, error = %e,
                    "a day partition was dropped elsewhere; creating it again");
                self.partitions.forget();
                self.partitions.ensure(&self.pool, &days).await?;
                self.store_once(batch).await
            }
            stored => stored,
        }
    }

    async fn store_once(&self, batch: &Batch) -> Result<Stored, SinkError> {
        let mut tx = self.pool.begin().await?;
        advance_offset(&mut tx, batch).await?;
        let rows = insert_reports(&mut tx, batch).await?;
        let dead_letters = insert_dead_letters(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(Stored {
            rows,
            duplicates: batch.reports.len() as u64 - rows,
            dead_letters,
        })
    }

    /// Stores `batch` like [`ReportStore::store`], but a batch the database refuses for its
    /// data (see [`is_data_error`]) is bisected until the message it cannot hold is found;
    /// that message becomes a dead letter and the rest are stored. What is stored is removed
    /// from `batch` (and counted in `done`) as it goes, so after any other error the caller
    /// retries with the same `batch` and continues where this stopped.
    pub async fn store_bisecting(
        &self,
        batch: &mut Batch,
        done: &mut Stored,
    ) -> Result<(), SinkError> {
        let mut take = batch.len();
        while batch.has_work() {
            let cut = batch.cut_after(take);
            let part = batch.front(cut);
            match self.store(&part).await {
                Ok(stored) => {
                    done.add(stored);
                    batch.drop_front(cut);
                    take = batch.len();
                }
                Err(e) if is_data_error(&e) && part.len() > 1 => {
                    take = part.len() / 2;
                    warn!(topic = %batch.topic, partition = batch.partition, error = %e, messages = part.len(), "the database refused a batch for its data: splitting it");
                }
                Err(e) if is_data_error(&e) && !part.reports.is_empty() => {
                    let offset = part.reports[0].0;
                    batch.refuse(offset, &e.to_string());
                    take = 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the day partitions of `results` from `days_back` days ago to `days_ahead` days
    /// from now.
    pub async fn create_partitions_around_now(
        &self,
        days_back: i64,
        days_ahead: i64,
    ) -> Result<(), SinkError> {
        let today = Utc::now().date_naive();
        let days = (-days_back..=days_ahead)
            .filter_map(|d| today.checked_add_signed(ChronoDuration::days(d)))
            .collect();
        self.partitions.ensure(&self.pool, &days).await
    }

    /// Drops the day partitions of `results` that end before `older_than`. Returns their names.
    pub async fn drop_partitions_before(
        &self,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>, SinkError> {
        self.partitions.drop_before(&self.pool, older_than).await
    }
}

async fn advance_offset(
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
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT next_offset FROM kafka_offsets WHERE kafka_topic = $1 AND kafka_partition = $2",
    )
    .bind(&batch.topic)
    .bind(batch.partition)
    .fetch_optional(&mut **tx)
    .await?;
    Err(SinkError::OffsetMoved {
        topic: batch.topic.clone(),
        partition: batch.partition,
        expected: batch.expected_offset,
        found: found.map(|f| f.0),
    })
}

async fn insert_reports(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
) -> Result<u64, SinkError> {
    if batch.reports.is_empty() {
        return Ok(0);
    }
    // Targets first (the rows reference them), in a fixed order so that two replicas
    // inserting the same new targets cannot deadlock.
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

    let mut c = Columns::default();
    for (offset, r) in &batch.reports {
        c.push(*offset, r);
    }
    let inserted = sqlx::query(
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
         ON CONFLICT DO NOTHING",
    )
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
    .bind(&c.kafka_offset)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected())
}

async fn insert_dead_letters(
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
