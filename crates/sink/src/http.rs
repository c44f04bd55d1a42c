//! The sink's HTTP side on `sink.http_listen`, where the targets API ([`crate::api`], under
//! `/api/v1/targets`) and the status page ([`crate::status`]: `/`, `/api/v1/status`, the
//! badges) are served: what their routes share ([`HttpState`]) and the server, the same
//! bounded accept loop as the admin endpoint
//! ([`monitor_core::runtime::admin::serve_router_with`]) with a connection cap sized for a
//! public page. The application merges the two rooms' routes.

use std::sync::Arc;

use axum::Router;
use monitor_core::runtime::admin::{serve_router_with, Limits};
use monitor_core::settings::SinkSettings;
use rskafka::client::Client;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tokio::sync::{watch, Notify};

use crate::catalog::Catalog;
use crate::metrics::SinkMetrics;

/// Most connections open at once on the HTTP side; a new one beyond closes the oldest.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;

/// What every route reads: the database, the settings, the metrics.
#[derive(Debug)]
pub struct HttpState {
    /// The sink's pool.
    pub pool: PgPool,
    /// The sink's settings (tokens, the targets of its settings file, topics).
    pub settings: SinkSettings,
    /// The sink's metrics.
    pub metrics: Arc<SinkMetrics>,
    /// Woken when a change of targets is waiting in the outbox, so this replica publishes
    /// it at once rather than at its next poll.
    pub targets_changed: Arc<Notify>,
    /// Woken with it, so this replica's catalog of targets follows at once.
    pub catalog_changed: Arc<Notify>,
    /// Every target the sink knows (the settings file's and the API's), as it stands.
    pub catalog: watch::Receiver<Arc<Catalog>>,
    /// The Kafka client, once connected ("check now" produces with it).
    pub kafka: watch::Sender<Option<Arc<Client>>>,
}

impl HttpState {
    /// Tells the publisher and the catalog that a target changed.
    pub fn target_changed(&self) {
        self.targets_changed.notify_one();
        self.catalog_changed.notify_one();
    }
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let limits = Limits {
        max_connections: MAX_HTTP_CONNECTIONS,
        ..Limits::default()
    };
    serve_router_with(listener, router, shutdown, limits).await;
}
