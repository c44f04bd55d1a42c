//! The targets API under `/api/v1/targets`: list, read, create, replace, patch and delete
//! targets, with bearer tokens, an audit of every change, and an outbox that carries each
//! change to the checkers on the compacted targets topic.
//!
//! - [`auth`]: the caller of a request, from its bearer token.
//! - [`definition`]: a request's JSON becomes a validated definition (the settings file's
//!   validation, every problem named by its field), merge patches, and secret header values
//!   kept out of answers.
//! - [`sql`]: the definitions, the audit and the outbox, each change in one transaction.
//! - [`targets`]: the handlers.
//! - [`checks`]: "check now", through the checks topic and back through the stored answers.
//! - [`publish`]: the outbox, in order, onto the targets topic.
//!
//! [`ROUTES`] is the API's route table: the router is built from it, and a test holds it and
//! `schemas/openapi.json` (served at `/api/v1/openapi.json`) to each other.

pub mod auth;
pub mod checks;
pub mod definition;
pub mod publish;
pub mod sql;
pub mod targets;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use monitor_core::settings::{Problem, Role};
use serde_json::json;
use tracing::error;

use crate::http::HttpState;
use auth::Tokens;

/// The OpenAPI document of the HTTP side, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../../schemas/openapi.json");

/// Every route of the API, as (method, path), in the OpenAPI document's spelling.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/targets"),
    ("POST", "/api/v1/targets"),
    ("GET", "/api/v1/targets/{id}"),
    ("PUT", "/api/v1/targets/{id}"),
    ("PATCH", "/api/v1/targets/{id}"),
    ("DELETE", "/api/v1/targets/{id}"),
    ("GET", "/api/v1/targets/{id}/changes"),
    ("POST", "/api/v1/targets/{id}/checks"),
    ("GET", "/api/v1/openapi.json"),
];

/// What the API's handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The HTTP side's state: pool, settings, metrics.
    pub http: Arc<HttpState>,
    /// The accepted tokens.
    pub tokens: Tokens,
}

/// The API's routes.
pub fn routes(http: Arc<HttpState>) -> Router {
    let tokens = Tokens::from_settings(&http.settings.sink.api);
    let state = Arc::new(ApiState { http, tokens });
    let mut router = Router::new();
    for (path, methods) in route_methods() {
        router = router.route(path, methods);
    }
    router.with_state(state)
}

/// The handlers of [`ROUTES`], by path.
fn route_methods() -> Vec<(&'static str, MethodRouter<Arc<ApiState>>)> {
    vec![
        ("/api/v1/targets", get(targets::list).post(targets::create)),
        (
            "/api/v1/targets/{id}",
            get(targets::read)
                .put(targets::replace)
                .patch(targets::patch)
                .delete(targets::delete),
        ),
        ("/api/v1/targets/{id}/changes", get(targets::changes)),
        ("/api/v1/targets/{id}/checks", post(checks::check_now)),
        ("/api/v1/openapi.json", get(openapi)),
    ]
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// Why a request was refused; each becomes an answer with a JSON body
/// `{"error": "...", "problems": [{"field": ..., "message": ...}]}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, or not a known one (401).
    #[error("not authenticated: {0}")]
    Unauthorized(&'static str),
    /// The token's role is too low (403).
    #[error("this needs a token with role {}", .0.as_str())]
    Forbidden(Role),
    /// No such target (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names another version than the stored one (412).
    #[error("the target is at version {current}, not the one given in If-Match: read it again")]
    VersionMoved {
        /// The stored version.
        current: i64,
    },
    /// The body is not JSON, or a query parameter is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The definition does not validate (422), every problem at once.
    #[error("the target definition is not valid")]
    Invalid(Vec<Problem>),
    /// Something the request needs is not reachable now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The database failed (503): nothing was changed.
    #[error("the database is not available: nothing was changed, try again")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::VersionMoved { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Database(e) = &self {
            error!(error = %e, "targets API: the database failed");
        }
        let problems: Vec<_> = match &self {
            ApiError::Invalid(problems) => problems
                .iter()
                .map(|p| json!({"field": p.path, "message": p.message}))
                .collect(),
            _ => Vec::new(),
        };
        let body = Json(json!({"error": self.to_string(), "problems": problems}));
        let mut response = (self.status(), body).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"web-monitor\""),
            );
        }
        response
    }
}
