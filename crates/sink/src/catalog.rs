//! What the sink knows of its targets: the settings file's and those made through the API,
//! the file's winning on an id conflict. The fold's rules (each target's policy, maintenance
//! windows, name, labels and routes) and the status page follow it, so a target made,
//! changed or deleted through any replica's API is judged and shown by every replica within
//! [`CATALOG_POLL`] (at once by the replica that made the change).

use std::sync::Arc;
use std::time::Duration;

use monitor_core::settings::{read_definition, SinkSettings, TargetSettings};
use sqlx::types::Json;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::SinkError;
use crate::verdicts::Rules;

/// How often the API's definitions are compared with the stored ones.
pub const CATALOG_POLL: Duration = Duration::from_secs(2);

/// Every target the sink knows, the settings file's first.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The targets, by id order within each source.
    pub targets: Vec<TargetSettings>,
}

/// Where the catalog goes when it changes.
#[derive(Debug)]
pub struct Followers {
    /// The fold's rules.
    pub rules: watch::Sender<Arc<Rules>>,
    /// The catalog itself (the status page).
    pub catalog: watch::Sender<Arc<Catalog>>,
}

/// Keeps `followers` up to date until `stop`: whenever `changed` is woken (this replica's
/// API changed a target), and every [`CATALOG_POLL`].
pub async fn follow(
    pool: PgPool,
    settings: SinkSettings,
    changed: Arc<Notify>,
    followers: Followers,
    stop: CancellationToken,
) {
    // Read again at the first poll: a change may have come after the first load.
    let mut current = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(CATALOG_POLL) => {}
        }
        match newest_change(&pool).await {
            Ok(newest) if newest != current => match load(&pool, &settings).await {
                Ok(catalog) => {
                    info!(targets = catalog.targets.len(), "targets updated");
                    followers
                        .rules
                        .send_replace(Arc::new(Rules::of(&settings, &catalog.targets)));
                    followers.catalog.send_replace(Arc::new(catalog));
                    current = newest;
                }
                Err(e) => warn!(error = %e, "cannot read the API's targets; keeping the last ones"),
            },
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the API's targets; keeping the last ones"),
        }
    }
}

/// The number of the newest change made through the API: every change records one, so the
/// catalog is read again only when it moved (one index lookup per poll, however many
/// targets).
async fn newest_change(pool: &PgPool) -> Result<Option<i64>, SinkError> {
    Ok(
        sqlx::query_scalar("SELECT max(change_id) FROM target_changes")
            .fetch_one(pool)
            .await?,
    )
}

/// The catalog: the settings file's targets, then the API's (a definition this sink cannot
/// read is logged and left out).
pub async fn load(pool: &PgPool, settings: &SinkSettings) -> Result<Catalog, SinkError> {
    let rows: Vec<(String, Json<serde_json::Value>)> =
        sqlx::query_as("SELECT target_id, definition FROM api_targets ORDER BY target_id")
            .fetch_all(pool)
            .await?;
    let mut targets = settings.targets.clone();
    for (id, definition) in rows {
        if targets.iter().any(|t| t.id == id) {
            continue;
        }
        match read_definition(&definition.0) {
            Ok(target) => targets.push(target),
            Err(problems) => {
                warn!(target_id = id, %problems, "a stored target definition is not valid; left out")
            }
        }
    }
    Ok(Catalog { targets })
}
