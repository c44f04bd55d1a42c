//! Housekeeping of the tables: day partitions of `reports` created ahead of the reports that
//! need them and those past `sink.retention` dropped, and verdict hours, closed incidents and
//! delivered or failed notifications past `sink.verdicts.retention` deleted (kept longer than
//! the raw results by default: the status page and SLAs read them), and answers to "check
//! now" requests past [`checks::CHECK_RESULTS_KEPT`]. It runs in a task of its own, beside the
//! coordinator, because its DDL can wait for a lock behind a long query and nothing slow may
//! hold up the leases.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::checks;
use crate::notify::outbox;
use crate::store::ReportStore;
use crate::verdicts;

/// How often partitions are created ahead and old ones dropped.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// How soon housekeeping that failed (a long query held its lock, the database was away) is
/// tried again.
pub const HOUSEKEEPING_RETRY: Duration = Duration::from_secs(10);
/// Days of partitions created behind today by housekeeping.
pub const DAYS_BACK: i64 = 1;
/// Days of partitions created ahead of today by housekeeping.
pub const DAYS_AHEAD: i64 = 3;

/// How long each kind of row is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw results (`sink.retention`), whole day partitions.
    pub results: Option<Duration>,
    /// Verdict hours, closed incidents, delivered and failed notifications
    /// (`sink.verdicts.retention`).
    pub verdicts: Option<Duration>,
}

/// Housekeeping at start, then every [`HOUSEKEEPING_EVERY`] (every [`HOUSEKEEPING_RETRY`] while
/// it fails), until `stop`.
pub async fn run(store: Arc<ReportStore>, retention: Retention, stop: CancellationToken) {
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

/// Creates the day partitions ahead, drops those past the retention and deletes the verdicts
/// past theirs. True when done.
async fn housekeeping(store: &ReportStore, retention: Retention) -> bool {
    if let Err(e) = store
        .create_partitions_around_now(DAYS_BACK, DAYS_AHEAD)
        .await
    {
        warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot create the table partitions ahead; retrying");
        return false;
    }
    if let Some(cutoff) = cutoff(retention.results) {
        if let Err(e) = store.drop_partitions_before(cutoff).await {
            warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot drop partitions past the retention; retrying");
            return false;
        }
    }
    if let Some(cutoff) = cutoff(Some(checks::CHECK_RESULTS_KEPT)) {
        match checks::prune_before(store.pool(), cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(answers = n, %cutoff, "deleted answers to \"check now\" requests"),
            Err(e) => {
                warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot delete old answers to \"check now\" requests; retrying");
                return false;
            }
        }
    }
    if let Some(cutoff) = cutoff(retention.verdicts) {
        match verdicts::prune_before(store.pool(), cutoff).await {
            Ok(p) if p != verdicts::Pruned::default() => {
                info!(hours = p.hours, days = p.days, incidents = p.incidents, %cutoff, "deleted verdicts past the retention");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot delete verdicts past the retention; retrying");
                return false;
            }
        }
        match outbox::prune_before(store.pool(), cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(notifications = n, %cutoff, "deleted notifications past the retention"),
            Err(e) => {
                warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot delete notifications past the retention; retrying");
                return false;
            }
        }
    }
    true
}

/// Now less `retention`, when there is one.
fn cutoff(retention: Option<Duration>) -> Option<chrono::DateTime<chrono::Utc>> {
    let retention = chrono::Duration::from_std(retention?).ok()?;
    Some(chrono::Utc::now() - retention)
}
