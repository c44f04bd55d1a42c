//! The sink's HTTP side on `sink.http_listen`: the targets API ([`crate::api`], under
//! `/api/v1/targets`) and the status page ([`crate::status`]: `/`, `/api/v1/status`, the
//! badges), one router served by the same bounded accept loop as the admin endpoint
//! ([`monitor_core::runtime::admin::serve_router_with`]) with a connection cap sized for a
//! public page.

use std::sync::Arc;

use axum::Router;
use monitor_core::runtime::admin::{serve_router_with, Limits};
use monitor_core::settings::SinkSettings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::metrics::SinkMetrics;
use crate::status;

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
}

/// Every route of the HTTP side.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .merge(api::routes(state.clone()))
        .merge(status::routes(state))
}

/// Serves [`router`] on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, shutdown: CancellationToken) {
    let limits = Limits {
        max_connections: MAX_HTTP_CONNECTIONS,
        ..Limits::default()
    };
    serve_router_with(listener, router(state), shutdown, limits).await;
}
