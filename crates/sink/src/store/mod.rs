//! [`ReportStore`]: the only code that writes the results. One transaction per [`Batch`] holds
//! the batch's rows, its dead letters and the partition's next offset, so a crash anywhere
//! stores a batch wholly or not at all.
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
//! - `sql`: the statements of a batch's transaction.
//! - [`partitions`]: the day partitions of `results`.

mod batch;
pub mod partitions;
mod sql;
pub mod text;

use std::collections::HashSet;

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use sqlx::PgPool;
use tracing::warn;

pub use self::batch::{Batch, DeadLetter, Stored};
use self::partitions::{is_missing_partition, DayPartitions};
use crate::error::SinkError;
use crate::verdicts::{Folded, Verdicts, Written};

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
    /// The day partitions of `results`.
    partitions: DayPartitions,
    /// The fold of each transaction's new reports, when verdicts are kept.
    verdicts: Option<Verdicts>,
}

impl ReportStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> ReportStore {
        ReportStore {
            pool,
            partitions: DayPartitions::default(),
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
            Err(e @ SinkError::StateConflict { .. }) => {
                warn!(topic = %batch.topic, partition = batch.partition, error = %e,
                    "target states were written elsewhere; folding the batch again from the stored states");
                self.store_once(batch).await
            }
            stored => stored,
        }
    }

    async fn store_once(&self, batch: &Batch) -> Result<Stored, SinkError> {
        let mut tx = self.pool.begin().await?;
        sql::advance_offset(&mut tx, batch).await?;
        let inserted = sql::insert_reports(&mut tx, batch, self.verdicts.is_some()).await?;
        let rows = inserted.rows + sql::insert_checks(&mut tx, batch).await?;
        let dead_letters = sql::insert_dead_letters(&mut tx, batch).await?;
        let (folded, written) = match &self.verdicts {
            Some(verdicts) => verdicts.fold(&mut tx, &inserted.reports(batch)).await?,
            None => (Folded::default(), Written::default()),
        };
        tx.commit().await?;
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
