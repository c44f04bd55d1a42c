//! The verdicts as metrics: targets by state, open incidents by kind, and silent regions,
//! read from the tables every [`GAUGES_EVERY`]. Read from the database rather than counted by
//! the fold, because each replica folds only its own partitions: every replica shows the same
//! whole picture (take `max` across replicas, not `sum`).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::{KindLabels, RegionLabels, SinkMetrics, StateLabels};

/// How often the gauges are read.
pub const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Reads the gauges every [`GAUGES_EVERY`] until `stop`.
pub async fn refresh_until_stopped(pool: PgPool, metrics: &SinkMetrics, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            read = refresh(&pool, metrics) => {
                if let Err(e) = read {
                    debug!(error = %e, "cannot read the verdict gauges yet");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(GAUGES_EVERY) => {}
        }
    }
}

/// Reads the gauges once.
pub async fn refresh(pool: &PgPool, metrics: &SinkMetrics) -> Result<(), sqlx::Error> {
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM target_states GROUP BY state")
            .fetch_all(pool)
            .await?;
    for state in ["up", "down", "degraded", "unknown"] {
        let n = states
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        let labels = StateLabels {
            state: state.to_string(),
        };
        metrics.targets.get_or_create(&labels).set(n);
    }
    let open: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, count(*) FROM incidents WHERE closed_at IS NULL GROUP BY kind",
    )
    .fetch_all(pool)
    .await?;
    for kind in ["down", "degraded"] {
        let n = open.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        metrics.open_incidents.get_or_create(&labels).set(n);
    }
    let silent: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r, count(*) FROM target_states, jsonb_array_elements_text(fold::jsonb -> 'sl') AS r \
         WHERE silent_regions > 0 GROUP BY r",
    )
    .fetch_all(pool)
    .await?;
    metrics.silent_regions.clear();
    for (region, n) in silent {
        metrics
            .silent_regions
            .get_or_create(&RegionLabels { region })
            .set(n);
    }
    Ok(())
}
