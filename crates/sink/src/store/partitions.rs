//! The day partitions of `reports` (the rows behind the `results` view): created ahead and on
//! demand, dropped past the retention. The store writes each report straight into its day's
//! partition, `reports_pYYYYMMDD`.
//!
//! Creating or dropping a partition takes an `ACCESS EXCLUSIVE` lock on `reports`. A long
//! reader (a dashboard query) holds a lock the DDL must wait for, and every insert queues
//! behind the waiting DDL, so each DDL statement runs in its own transaction with a short
//! `lock_timeout` ([`DDL_LOCK_TIMEOUT`]): when the lock is not free, the DDL gives up and is
//! tried again later while the inserts go on.
//!
//! Which days exist is cached per replica, but any replica (or an operator) may drop a day
//! another one still believes exists: a write that finds no partition for its row
//! ([`is_missing_partition`]) makes the cache forget what it knew, and the day is created
//! again on demand, whoever dropped it.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sqlx::PgPool;
use tracing::{info, warn};

use crate::error::SinkError;

/// Longest a DDL statement on `reports` waits for its lock before giving up (and being tried
/// again later); also the longest an insert can wait behind it.
pub const DDL_LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// Most day partitions created by one call: a batch whose reports span more missing days gets
/// that many per attempt, so no batch can make one call create thousands of tables.
pub const MAX_NEW_DAYS_PER_CALL: usize = 32;

/// SQLSTATE `check_violation`, which PostgreSQL also raises for "no partition of relation
/// found for row".
const CHECK_VIOLATION: &str = "23514";

/// SQLSTATE `undefined_table`: a `COPY` into a day partition that does not exist.
const UNDEFINED_TABLE: &str = "42P01";

/// Which day partitions of `reports` this replica knows to exist.
#[derive(Debug, Default)]
pub struct DayPartitions {
    known: Mutex<HashSet<NaiveDate>>,
}

impl DayPartitions {
    /// Makes sure a partition exists for each of `days`, creating at most
    /// [`MAX_NEW_DAYS_PER_CALL`] of them (then [`SinkError::TooManyNewDays`]).
    pub async fn ensure(&self, pool: &PgPool, days: &HashSet<NaiveDate>) -> Result<(), SinkError> {
        if self.unknown(days).is_empty() {
            return Ok(());
        }
        // Another replica may have created them: look before taking any lock.
        let existing = existing_days(pool).await?;
        self.lock().extend(existing);
        let missing = self.unknown(days);
        for day in missing.iter().take(MAX_NEW_DAYS_PER_CALL) {
            create_day_partition(pool, *day).await?;
            self.lock().insert(*day);
        }
        if missing.len() > MAX_NEW_DAYS_PER_CALL {
            return Err(SinkError::TooManyNewDays {
                missing: missing.len(),
                created: MAX_NEW_DAYS_PER_CALL,
            });
        }
        Ok(())
    }

    /// Forgets every known day, so the next [`DayPartitions::ensure`] looks again.
    pub fn forget(&self) {
        self.lock().clear();
    }

    /// Drops the day partitions of `reports` that end before `older_than`; returns their names.
    pub async fn drop_before(
        &self,
        pool: &PgPool,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>, SinkError> {
        let mut dropped = Vec::new();
        for day in existing_days(pool).await? {
            let end = day.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0));
            let Some(end) = end.map(|e| Utc.from_utc_datetime(&e)) else {
                continue;
            };
            if end > older_than {
                continue;
            }
            let name = partition_name(day);
            ddl(pool, &format!("DROP TABLE IF EXISTS {name}")).await?;
            self.lock().remove(&day);
            info!(partition = %name, "dropped results past the retention");
            dropped.push(name);
        }
        Ok(dropped)
    }

    fn unknown(&self, days: &HashSet<NaiveDate>) -> BTreeSet<NaiveDate> {
        let known = self.lock();
        days.iter()
            .filter(|d| !known.contains(d))
            .copied()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<NaiveDate>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `error` is PostgreSQL finding no partition of `reports` for a row: the day's
/// partition was dropped (or never created) behind this replica's back. Through the
/// partitioned table that error is a `check_violation` without a constraint name (a CHECK
/// constraint always names itself); a `COPY` straight into the day's partition finds no table
/// (`undefined_table`). The message is not compared, since servers may translate it.
pub fn is_missing_partition(error: &SinkError) -> bool {
    match error {
        SinkError::Database(sqlx::Error::Database(e)) => match e.code().as_deref() {
            Some(CHECK_VIOLATION) => e.constraint().is_none() && e.table() == Some("reports"),
            Some(UNDEFINED_TABLE) => true,
            _ => false,
        },
        _ => false,
    }
}

/// The name of `day`'s partition of `reports`.
pub(super) fn partition_name(day: NaiveDate) -> String {
    format!("reports_p{}", day.format("%Y%m%d"))
}

/// The days that have a partition of `reports` now. Reads the catalog only: takes no lock on
/// `reports`.
async fn existing_days(pool: &PgPool) -> Result<Vec<NaiveDate>, SinkError> {
    let children: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'reports'::regclass AND c.relname ~ '^reports_p[0-9]{8}$'",
    )
    .fetch_all(pool)
    .await?;
    Ok(children
        .iter()
        .filter_map(|(name,)| NaiveDate::parse_from_str(&name["reports_p".len()..], "%Y%m%d").ok())
        .collect())
}

/// `CREATE TABLE reports_pYYYYMMDD PARTITION OF reports`, tolerating another replica doing the
/// same at the same time.
async fn create_day_partition(pool: &PgPool, day: NaiveDate) -> Result<(), SinkError> {
    let Some(next) = day.succ_opt() else {
        return Ok(());
    };
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF reports \
         FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
        partition_name(day),
        day.format("%Y-%m-%d"),
        next.format("%Y-%m-%d"),
    );
    match ddl(pool, &sql).await {
        Ok(()) => Ok(()),
        // duplicate_table / unique_violation: another replica created it first.
        Err(SinkError::Database(sqlx::Error::Database(e)))
            if matches!(e.code().as_deref(), Some("42P07" | "23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs one DDL statement in a transaction that waits at most [`DDL_LOCK_TIMEOUT`] for locks.
async fn ddl(pool: &PgPool, sql: &str) -> Result<(), SinkError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = {}",
        DDL_LOCK_TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    if let Err(e) = sqlx::query(sql).execute(&mut *tx).await {
        if let sqlx::Error::Database(d) = &e {
            if d.code().as_deref() == Some("55P03") {
                warn!(
                    statement = sql,
                    lock_timeout_ms = DDL_LOCK_TIMEOUT.as_millis() as u64,
                    "a long query holds a lock on reports; the partition change is tried again later"
                );
            }
        }
        return Err(e.into());
    }
    tx.commit().await?;
    Ok(())
}
