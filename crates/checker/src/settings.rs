//! The checker's side of the settings (loaded and validated by [`monitor_core::settings`]):
//! reload on change. The settings file is read every so often, and a change of its contents
//! asks for a reload, as SIGHUP does. Reading the contents (not the modification time) also
//! sees Kubernetes ConfigMap updates, which swap a symlink.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Reads `path` every `every` until `shutdown`, and sends on `reload` when its contents differ
/// from the last ones read. A file that cannot be read (being replaced, say) is read again
/// next time; nothing is sent for it.
pub async fn watch(
    path: PathBuf,
    every: Duration,
    reload: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut last = fingerprint(&path).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(now) = fingerprint(&path).await else {
            debug!(path = %path.display(), "settings file not readable now; trying again later");
            continue;
        };
        if last != Some(now) {
            last = Some(now);
            info!(path = %path.display(), "settings file changed: reloading");
            // A reload already pending reads the new contents too.
            let _ = reload.try_send(());
        }
    }
}

async fn fingerprint(path: &std::path::Path) -> Option<u64> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}
