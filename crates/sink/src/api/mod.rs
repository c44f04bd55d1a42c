//! The targets API under `/api/v1/targets`: list, read, create, replace, patch and delete
//! targets, with bearer tokens, an audit of every change, and an outbox that carries each
//! change to the checkers on the compacted targets topic.

use std::sync::Arc;

use axum::Router;

use crate::http::HttpState;

/// The API's routes.
pub fn routes(_state: Arc<HttpState>) -> Router {
    Router::new()
}
