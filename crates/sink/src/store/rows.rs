//! The stored reports' rows: one narrow row of `reports` per report, written straight into its
//! day's partition with a binary `COPY` (no routing through the partitioned table, no text to
//! parse, no conflict check per row).
//!
//! `COPY` cannot skip a row already stored, so it fails the whole transaction on the first
//! one (a batch delivered again after a crash); the store then writes that batch again with
//! [`insert`], an `INSERT … ON CONFLICT DO NOTHING` through `UNNEST` that returns which rows
//! it inserted, so the verdicts still fold each report once. A batch is first cleared of its
//! own repeats ([`Rows::new`]), so `COPY` meets a stored row only across batches.
//!
//! Row values are narrowed as the schema says (migrations/20261128000500_compact_results.sql):
//! durations as float4, status, failure class and HTTP status as smallint codes, started_at as
//! microseconds after scheduled_at, report_id only when it is not the derived one.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use monitor_core::report::{report_id, FailureClass, Report, Status};
use sqlx::{Postgres, Row as _, Transaction};
use uuid::Uuid;

use super::partitions::partition_name;
use super::series::SeriesFields;
use super::text::storable_text;
use crate::error::SinkError;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch for timestamps.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The columns of `reports` the sink writes (stored_at is the database's default).
const COLUMNS: &str = "series_id, scheduled_at, kafka_offset, body_bytes, started_us, \
     kafka_partition, response_time_ms, dns_ms, connect_ms, tls_ms, ttfb_ms, transfer_ms, \
     status, failure_class, http_status, body_truncated, regexp_matched, started_at, \
     report_id, error";

/// One report as a row of `reports`.
#[derive(Debug, Clone)]
pub(super) struct Row {
    series_id: i32,
    scheduled_at: DateTime<Utc>,
    kafka_offset: i64,
    body_bytes: Option<i64>,
    started_us: Option<i32>,
    kafka_partition: i32,
    timings: [Option<f32>; 6],
    status: i16,
    failure_class: Option<i16>,
    http_status: Option<i16>,
    body_truncated: Option<bool>,
    regexp_matched: Option<bool>,
    started_at: Option<DateTime<Utc>>,
    report_id: Option<Uuid>,
    error: Option<String>,
}

impl Row {
    /// The row of `report`, at `offset` of `partition`, in series `series_id` (`fields`).
    pub fn of(
        report: &Report,
        fields: &SeriesFields,
        series_id: i32,
        partition: i32,
        offset: i64,
    ) -> Row {
        let started_us = (report.started_at - report.scheduled_at)
            .num_microseconds()
            .and_then(|us| i32::try_from(us).ok());
        let derived = report_id(fields.checker_id(), fields.target_id(), report.scheduled_at);
        let t = &report.timings_ms;
        Row {
            series_id,
            scheduled_at: report.scheduled_at,
            kafka_offset: offset,
            body_bytes: report
                .body_bytes
                .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
            started_us,
            kafka_partition: partition,
            timings: [
                report.response_time_ms,
                t.dns,
                t.connect,
                t.tls,
                t.ttfb,
                t.transfer,
            ]
            .map(|ms| ms.map(|v| v as f32)),
            status: status_code(report.status),
            failure_class: report.failure_class.map(class_code),
            // The code's 16 bits: a code above 32767 is stored negative.
            http_status: report
                .http_status
                .map(|s| i16::from_be_bytes(s.to_be_bytes())),
            body_truncated: report.body_truncated,
            regexp_matched: report.regexp_matched,
            started_at: started_us.is_none().then_some(report.started_at),
            report_id: (report.report_id != derived).then_some(report.report_id),
            error: report
                .error
                .as_deref()
                .map(|e| storable_text(e).into_owned()),
        }
    }

    /// What makes the row unique: its series and scheduled time.
    fn key(&self) -> (i32, i64) {
        (self.series_id, self.scheduled_at.timestamp_micros())
    }
}

/// The status's code in `reports.status`.
fn status_code(status: Status) -> i16 {
    match status {
        Status::Up => 0,
        Status::Down => 1,
        Status::Missed => 2,
    }
}

/// The class's code in `reports.failure_class`: its position in the `failure_class` type.
fn class_code(class: FailureClass) -> i16 {
    FailureClass::ALL
        .iter()
        .position(|c| *c == class)
        .and_then(|p| i16::try_from(p).ok())
        .unwrap_or(i16::MAX)
}

/// A batch's rows, each once, with the positions of their reports in the batch.
#[derive(Debug, Default)]
pub(super) struct Rows {
    rows: Vec<Row>,
    /// For each row, its report's position in the batch.
    positions: Vec<usize>,
}

impl Rows {
    /// The rows, the first of each (series, scheduled_at) kept: a report twice in a batch is
    /// stored once.
    pub fn new(rows: impl IntoIterator<Item = (usize, Row)>) -> Rows {
        let mut seen = HashSet::new();
        let mut out = Rows::default();
        for (position, row) in rows {
            if seen.insert(row.key()) {
                out.rows.push(row);
                out.positions.push(position);
            }
        }
        out
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The positions of every row's report.
    pub fn positions(&self) -> Vec<usize> {
        self.positions.clone()
    }
}

/// Writes every row with a binary `COPY` into its day's partition. Fails (SQLSTATE 23505) if
/// one is stored already, and (42P01) if a day's partition does not exist. Returns the rows
/// written.
pub(super) async fn copy(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
) -> Result<u64, SinkError> {
    let mut by_day: BTreeMap<NaiveDate, Vec<&Row>> = BTreeMap::new();
    for row in &rows.rows {
        by_day
            .entry(row.scheduled_at.date_naive())
            .or_default()
            .push(row);
    }
    let mut written = 0;
    for (day, rows) in by_day {
        let statement = format!(
            "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
            partition_name(day)
        );
        let mut copy = (**tx).copy_in_raw(&statement).await?;
        copy.send(encode(&rows)).await?;
        written += copy.finish().await?;
    }
    Ok(written)
}

/// Inserts the rows not stored yet, through the partitioned table. Returns the positions of
/// the reports of the rows inserted.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &Rows,
) -> Result<Vec<usize>, SinkError> {
    let c = Columns::of(&rows.rows);
    let inserted = sqlx::query(&format!(
        "INSERT INTO reports ({COLUMNS}) \
         SELECT * FROM UNNEST($1::int4[], $2::timestamptz[], $3::int8[], $4::int8[], \
           $5::int4[], $6::int4[], $7::float4[], $8::float4[], $9::float4[], $10::float4[], \
           $11::float4[], $12::float4[], $13::int2[], $14::int2[], $15::int2[], $16::bool[], \
           $17::bool[], $18::timestamptz[], $19::uuid[], $20::text[]) \
         ON CONFLICT DO NOTHING RETURNING series_id, scheduled_at"
    ))
    .bind(&c.series_id)
    .bind(&c.scheduled_at)
    .bind(&c.kafka_offset)
    .bind(&c.body_bytes)
    .bind(&c.started_us)
    .bind(&c.kafka_partition)
    .bind(&c.timings[0])
    .bind(&c.timings[1])
    .bind(&c.timings[2])
    .bind(&c.timings[3])
    .bind(&c.timings[4])
    .bind(&c.timings[5])
    .bind(&c.status)
    .bind(&c.failure_class)
    .bind(&c.http_status)
    .bind(&c.body_truncated)
    .bind(&c.regexp_matched)
    .bind(&c.started_at)
    .bind(&c.report_id)
    .bind(&c.error)
    .fetch_all(&mut **tx)
    .await?;
    let mut keys = HashSet::with_capacity(inserted.len());
    for row in &inserted {
        let at: DateTime<Utc> = row.try_get(1)?;
        keys.insert((row.try_get::<i32, _>(0)?, at.timestamp_micros()));
    }
    Ok(rows
        .rows
        .iter()
        .zip(&rows.positions)
        .filter(|(row, _)| keys.contains(&row.key()))
        .map(|(_, p)| *p)
        .collect())
}

/// The rows as one array per column, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    series_id: Vec<i32>,
    scheduled_at: Vec<DateTime<Utc>>,
    kafka_offset: Vec<i64>,
    body_bytes: Vec<Option<i64>>,
    started_us: Vec<Option<i32>>,
    kafka_partition: Vec<i32>,
    timings: [Vec<Option<f32>>; 6],
    status: Vec<i16>,
    failure_class: Vec<Option<i16>>,
    http_status: Vec<Option<i16>>,
    body_truncated: Vec<Option<bool>>,
    regexp_matched: Vec<Option<bool>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    report_id: Vec<Option<Uuid>>,
    error: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [Row]) -> Columns<'a> {
        let mut c = Columns::default();
        for r in rows {
            c.series_id.push(r.series_id);
            c.scheduled_at.push(r.scheduled_at);
            c.kafka_offset.push(r.kafka_offset);
            c.body_bytes.push(r.body_bytes);
            c.started_us.push(r.started_us);
            c.kafka_partition.push(r.kafka_partition);
            for (column, value) in c.timings.iter_mut().zip(r.timings) {
                column.push(value);
            }
            c.status.push(r.status);
            c.failure_class.push(r.failure_class);
            c.http_status.push(r.http_status);
            c.body_truncated.push(r.body_truncated);
            c.regexp_matched.push(r.regexp_matched);
            c.started_at.push(r.started_at);
            c.report_id.push(r.report_id);
            c.error.push(r.error.as_deref());
        }
        c
    }
}

/// The rows in `COPY`'s binary format: a header, then per row the field count and each field
/// as its length (-1 for NULL) and its bytes in network order, then a trailer.
fn encode(rows: &[&Row]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + rows.len() * 160);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        let mut f = Fields(&mut out);
        f.count(20);
        f.int4(Some(r.series_id));
        f.time(Some(r.scheduled_at));
        f.int8(Some(r.kafka_offset));
        f.int8(r.body_bytes);
        f.int4(r.started_us);
        f.int4(Some(r.kafka_partition));
        for t in r.timings {
            f.float4(t);
        }
        f.int2(Some(r.status));
        f.int2(r.failure_class);
        f.int2(r.http_status);
        f.bool(r.body_truncated);
        f.bool(r.regexp_matched);
        f.time(r.started_at);
        f.value(r.report_id.as_ref().map(|u| u.as_bytes().as_slice()));
        f.value(r.error.as_deref().map(str::as_bytes));
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Writes one row's fields in `COPY`'s binary format.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn count(&mut self, n: i16) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn value(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                // Every field is far below 2 GiB (texts are bounded by the report contract).
                let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(b);
            }
            None => self.0.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    fn int2(&mut self, v: Option<i16>) {
        self.value(v.map(i16::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    fn int4(&mut self, v: Option<i32>) {
        self.value(v.map(i32::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    fn int8(&mut self, v: Option<i64>) {
        self.value(v.map(i64::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    fn float4(&mut self, v: Option<f32>) {
        self.value(v.map(f32::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    fn bool(&mut self, v: Option<bool>) {
        self.value(v.map(|b| [u8::from(b)]).as_ref().map(|b| b.as_slice()));
    }

    /// A timestamptz: microseconds since 2000-01-01 UTC.
    fn time(&mut self, v: Option<DateTime<Utc>>) {
        self.int8(v.map(|t| t.timestamp_micros() - PG_EPOCH_MICROS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_class_codes_follow_the_database_type() {
        // The order of `CREATE TYPE failure_class` in migrations/20261124000001_initial.sql.
        let database = [
            "dns",
            "connect_refused",
            "connect_timeout",
            "tls",
            "timeout",
            "http_status",
            "body_mismatch",
            "body_too_large",
            "redirect",
            "protocol",
            "io",
        ];
        for class in FailureClass::ALL {
            let code = usize::try_from(class_code(class)).expect("code");
            assert_eq!(database[code], class.as_str());
        }
    }

    #[test]
    fn a_report_twice_in_a_batch_is_one_row() {
        let report = monitor_core::testing::sample_report("t", 1);
        let fields = SeriesFields::of(&report, "topic");
        let row = Row::of(&report, &fields, 7, 0, 0);
        let rows = Rows::new([(0, row.clone()), (1, row)]);
        assert_eq!(rows.positions(), vec![0]);
        assert_eq!(rows.rows[0].report_id, None, "the derived id is not stored");
    }
}
