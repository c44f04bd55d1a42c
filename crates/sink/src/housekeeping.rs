//! Housekeeping of the `results` table: day partitions created ahead of the reports that need
//! them, and those past `sink.retention` dropped. It runs in a task of its own, beside the
//! coordinator, because its DDL can wait for a lock behind a long query and nothing slow may
//! hold up the leases.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::ReportStore;

/// How often partitions are created ahead and old ones dropped.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// How soon housekeeping that failed (a long query held its lock, the database was away) is
/// tried again.
pub const HOUSEKEEPING_RETRY: Duration = Duration::from_secs(10);
/// Days of partitions created behind today by housekeeping.
pub const DAYS_BACK: i64 = 1;
/// Days of partitions created ahead of today by housekeeping.
pub const DAYS_AHEAD: i64 = 3;

/// Housekeeping at start, then every [`HOUSEKEEPING_EVERY`] (every [`HOUSEKEEPING_RETRY`] while
/// it fails), until `stop`.
pub async fn run(store: Arc<ReportStore>, retention: Option<Duration>, stop: CancellationToken) {
    loop {
        let done = tokio::select! {
            _ = stop.cancelled() => return,
            done = housekeeping(&store, retention) => done,
        };
        let next = if done {
            HOUSEKEEPING_EVERY
        } else {
            HOUSEKEEPING_RETRY
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// Creates the day partitions ahead and drops those past the retention. True when done.
async fn housekeeping(store: &ReportStore, retention: Option<Duration>) -> bool {
    if let Err(e) = store
        .create_partitions_around_now(DAYS_BACK, DAYS_AHEAD)
        .await
    {
        warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot create the table partitions ahead; retrying");
        return false;
    }
    let Some(retention) = retention else {
        return true;
    };
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return true;
    };
    let cutoff = chrono::Utc::now() - retention;
    if let Err(e) = store.drop_partitions_before(cutoff).await {
        warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot drop partitions past the retention; retrying");
        return false;
    }
    true
}
