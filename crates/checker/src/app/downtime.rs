//! The start-up backfill ([`crate::schedule::backfill`]) wired into a run: the target list
//! saved beside the spool, the downtime's `missed` reports written before anything else, and
//! the heartbeat kept while the checker runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use monitor_core::settings::{CheckerSettings, Shard, TargetSettings};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::CheckerMetrics;
use crate::publish::Drained;
use crate::schedule::backfill::{self, GapFill, Heartbeat};
use crate::spool::Spool;

/// Saves the ids of the targets checked now beside the spool, for the next start's backfill.
pub(super) fn save_targets(dir: Option<&Path>, targets: &[Arc<TargetSettings>]) {
    if let Some(dir) = dir {
        if let Err(e) = backfill::save_targets(dir, targets) {
            warn!(dir = %dir.display(), error = %e, "cannot save the target list for the backfill");
        }
    }
}

/// Writes the `missed` reports of the slots that fell since the last run (see [`backfill`])
/// to the spool, and returns what fills the gap up to this run's first slots.
pub(super) fn backfill_downtime(
    spool: &mut dyn Spool,
    settings: &CheckerSettings,
    shard: Shard,
    targets: &[Arc<TargetSettings>],
    started: DateTime<Utc>,
    metrics: &CheckerMetrics,
) -> Option<GapFill> {
    let dir = &settings.checker.producer.spool_dir;
    let id = &settings.checker.id;
    let last = match Heartbeat::read(dir) {
        Ok(Some(last)) => last,
        Ok(None) => return None,
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "no backfill of the downtime");
            return None;
        }
    };
    if !backfill::is_ours(&last, id, &shard.to_string()) {
        return None;
    }
    let ours = backfill::checked_last_time(dir, targets);
    backfill::backfill(spool, &ours, &last, id, started, |r| metrics.observe(r));
    let now = Heartbeat {
        started_at: started,
        alive_at: started,
        ..last
    };
    if let Err(e) = now.write(dir) {
        warn!(dir = %dir.display(), error = %e, "cannot write the heartbeat");
    }
    Some(GapFill::new(&ours, id, started))
}

/// Rewrites the heartbeat every [`backfill::HEARTBEAT_EVERY`] until `stop`, and once more
/// after: the time up to which every report made was in the spool.
pub(super) async fn keep_heartbeat(
    mut beat: Heartbeat,
    dir: PathBuf,
    drained: Drained,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(backfill::HEARTBEAT_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Some(at) = drained.at() {
            beat.alive_at = beat.alive_at.max(at);
        }
        if let Err(e) = beat.write(&dir) {
            warn!(dir = %dir.display(), error = %e, "cannot write the heartbeat");
        }
        if stopping {
            return;
        }
    }
}
