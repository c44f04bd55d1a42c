//! The public status page: `/` and one page per label group, `/api/v1/status` as JSON, and
//! SVG badges, read from the verdicts and the per-day rollups the sink keeps as it stores.

use std::sync::Arc;

use axum::Router;

use crate::http::HttpState;

/// The status page's routes.
pub fn routes(_state: Arc<HttpState>) -> Router {
    Router::new()
}
