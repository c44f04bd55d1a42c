//! [`ReportStore`]: the only code that writes the results. One transaction per [`Batch`] holds
//! the batch's rows, its dead letters and the partition's next offset, so a crash anywhere
//! stores a batch wholly or not at all.
//!
//! The rows are the compact `reports` (read through the `results` view): each report's
//! repeated fields are a series id ([`series`]), and the rows go straight into their day's
//! partition with a binary `COPY` ([`rows`]). A batch holding a report stored before (a
//! redelivery after a crash) makes that `COPY` fail; the batch is then written again with
//! `INSERT … ON CONFLICT DO NOTHING`, which skips it.
//!
//! A batch the database refuses for a reason tied to its data (a value out of range, a bound
//! of the schema, an index row too large) is bisected by [`ReportStore::store_bisecting`]: the
//! message it cannot hold becomes a dead letter, the rest are stored, and the partition moves
//! on. Refusals that are not about the data (the connection, a lock, a missing day partition)
//! are returned for the caller to retry.
//!
//! With [`ReportStore::with_verdicts`], each transaction also hands its newly inserted
//! reports to [`Verdicts::fold`], which writes the targets' states and incidents in the same
//! transaction.
//!
//! ## Layout
//! - [`batch`]: [`Batch`], what the decoder fills and the store takes.
//! - [`text`]: text as PostgreSQL `text` holds it, and dead letters' reasons.
//! - `series`: the series ids of the reports, and the targets, cached once stored.
//! - `rows`: the reports' rows: binary `COPY`, or `INSERT … ON CONFLICT DO NOTHING`.
//! - `sql`: the other statements of a batch's transaction.
//! - [`partitions`]: the day partitions of `reports`.

mod batch;
pub mod partitions;
mod rows;
mod series;
mod sql;
pub mod text;

use std::collections::HashSet;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use monitor_core::report::Report;
use sqlx::PgPool;
use tracing::warn;

pub use self::batch::{Batch, DeadLetter, Stored};
use self::partitions::{is_missing_partition, DayPartitions};
use self::rows::{Row, Rows};
use self::series::{NewSeries, SeriesCache, SeriesFields};
use crate::error::SinkError;
use crate::verdicts::{Folded, Verdicts, Written};

/// SQLSTATE `unique_violation`: a `COPY` met a report stored before.
const UNIQUE_VIOLATION: &str = "23505";

/// How a transaction writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Binary `COPY` into the day partitions: every row must be new.
    Copy,
    /// `INSERT … ON CONFLICT DO NOTHING`: rows stored before are skipped.
    Insert,
}

/// Whether a `COPY` failed on a row stored before.
fn is_duplicate(error: &SinkError) -> bool {
    match error {
        SinkError::Database(sqlx::Error::Database(e)) => {
            e.code().as_deref() == Some(UNIQUE_VIOLATION)
        }
        _ => false,
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

/// Writes batches, offsets and table partitions.
#[derive(Debug)]
pub struct ReportStore {
    pool: PgPool,
    /// The day partitions of `reports`.
    partitions: DayPartitions,
    /// The series and targets stored.
    series: SeriesCache,
    /// The fold of each transaction's new reports, when verdicts are kept.
    verdicts: Option<Verdicts>,
}

impl ReportStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> ReportStore {
        ReportStore {
            pool,
            partitions: DayPartitions::default(),
            series: SeriesCache::default(),
            verdicts: None,
        }
    }

    /// This store, folding each transaction's new reports with `verdicts`.
    pub fn with_verdicts(mut self, verdicts: Verdicts) -> ReportStore {
        self.verdicts = Some(verdicts);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The stored next offset of a partition.
    pub async fn next_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, SinkError> {
        Ok(sql::stored_offset(&self.pool, topic, partition).await?)
    }

    /// Stores a batch in one transaction: the new targets and series, the rows (skipping
    /// reports stored before), the dead letters, and the partition's next offset, which must
    /// still be the one the batch started from. The day partitions its reports need are
    /// created first, and again when another replica dropped one this replica believed
    /// existed.
    pub async fn store(&self, batch: &Batch) -> Result<Stored, SinkError> {
        let days: HashSet<NaiveDate> = batch
            .reports
            .iter()
            .map(|(_, r)| r.scheduled_at.date_naive())
            .collect();
        self.partitions.ensure(&self.pool, &days).await?;
        let mut write = Write::Copy;
        let (mut recreated, mut refolded) = (false, false);
        loop {
            match self.store_once(batch, write).await {
                Err(e) if write == Write::Copy && is_duplicate(&e) => write = Write::Insert,
                Err(e) if is_missing_partition(&e) && !recreated => {
                    warn!(topic = %batch.topic, partition = batch.partition, error = %e,
                        "a day partition was dropped elsewhere; creating it again");
                    recreated = true;
                    self.partitions.forget();
                    self.partitions.ensure(&self.pool, &days).await?;
                }
                Err(e @ SinkError::StateConflict { .. }) if !refolded => {
                    warn!(topic = %batch.topic, partition = batch.partition, error = %e,
                        "target states were written elsewhere; folding the batch again from the stored states");
                    refolded = true;
                }
                stored => return stored,
            }
        }
    }

    async fn store_once(&self, batch: &Batch, write: Write) -> Result<Stored, SinkError> {
        let mut tx = self.pool.begin().await?;
        sql::advance_offset(&mut tx, batch).await?;
        let (rows, new_series) = self.rows(&mut tx, batch).await?;
        let inserted = match write {
            _ if rows.is_empty() => Vec::new(),
            Write::Copy => {
                rows::copy(&mut tx, &rows).await?;
                rows.positions()
            }
            Write::Insert => rows::insert(&mut tx, &rows).await?,
        };
        let rows = inserted.len() as u64 + sql::insert_checks(&mut tx, batch).await?;
        let dead_letters = sql::insert_dead_letters(&mut tx, batch).await?;
        let (folded, written) = match &self.verdicts {
            Some(verdicts) => {
                let reports: Vec<&Report> = inserted.iter().map(|i| &batch.reports[*i].1).collect();
                verdicts.fold(&mut tx, &reports).await?
            }
            None => (Folded::default(), Written::default()),
        };
        tx.commit().await?;
        self.series.remember(new_series);
        if let Some(verdicts) = &self.verdicts {
            verdicts.remember(written);
        }
        Ok(Stored {
            rows,
            duplicates: batch.reports.len() as u64 - rows,
            dead_letters,
            folded,
        })
    }

    /// The rows of the batch's scheduled reports (answers to "check now" requests are stored
    /// apart), in offset order, each once; their new series are inserted in `tx`.
    async fn rows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        batch: &Batch,
    ) -> Result<(Rows, NewSeries), SinkError> {
        let scheduled: Vec<usize> = (0..batch.reports.len())
            .filter(|i| batch.reports[*i].1.check_request.is_none())
            .collect();
        let fields: Vec<SeriesFields> = scheduled
            .iter()
            .map(|i| SeriesFields::of(&batch.reports[*i].1, &batch.topic))
            .collect();
        let (ids, new_series) = series::resolve(tx, &self.series, &fields).await?;
        let rows = scheduled
            .iter()
            .zip(fields.iter().zip(ids))
            .map(|(i, (f, id))| {
                let (offset, report) = &batch.reports[*i];
                (*i, Row::of(report, f, id, batch.partition, *offset))
            });
        Ok((Rows::new(rows), new_series))
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

    /// Creates the day partitions of `reports` from `days_back` days ago to `days_ahead` days
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

    /// Drops the day partitions of `reports` that end before `older_than`. Returns their names.
    pub async fn drop_partitions_before(
        &self,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>, SinkError> {
        self.partitions.drop_before(&self.pool, older_than).await
    }
}
