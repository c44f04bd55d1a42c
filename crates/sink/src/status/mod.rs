//! The public status page: `/` and one page per label group (`/group/{label}/{value}`),
//! `/api/v1/status` as JSON, and SVG badges (`/badge/{id}/status.svg`,
//! `/badge/{id}/uptime.svg?window=30d`), read from the verdicts and the per-day rollups the
//! sink keeps as it stores, never from `results`.
//!
//! Every answer comes from an in-memory [`Snapshot`] with the page and the JSON rendered once
//! per snapshot, so a request costs a copy of bytes whatever the number of targets. A request
//! that finds the snapshot older than [`REFRESH_EVERY`] starts one refresh in the background
//! and is answered from the snapshot it found; only the first request waits for the first
//! read. A refresh reads little (see [`rollups`]). Targets that are not public are never
//! read, so they cannot appear in the page, the JSON or a badge (404).
//!
//! ## Layout
//! - [`public`]: which targets are public, by what name and labels.
//! - [`rollups`]: the store's rows the page is made of, kept up to date.
//! - [`snapshot`]: the figures: state, uptime per window, percentiles, days.
//! - [`page`]: the HTML and the badges, from the templates.

pub mod page;
pub mod public;
pub mod rollups;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use monitor_core::settings::StatusSettings;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::warn;

use self::page::{percent, Group, PageKey, Templates};
use self::public::PublicTargets;
use self::rollups::Rollups;
pub use self::snapshot::{Snapshot, Window};
use crate::catalog::Catalog;
use crate::http::HttpState;

/// How old a snapshot may be before a request starts a refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long browsers and proxies may keep the page and the JSON, in seconds.
pub const PAGE_MAX_AGE_S: u64 = 30;
/// How long badges may be kept, in seconds (READMEs embed them through caching proxies).
pub const BADGE_MAX_AGE_S: u64 = 300;
/// Most pages kept rendered per snapshot; others are rendered per request.
pub const MAX_CACHED_PAGES: usize = 256;

/// What went wrong answering a request.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The database could not be read.
    #[error("the status cannot be read from the database: {0}")]
    Database(#[from] sqlx::Error),
    /// A template failed.
    #[error("the status page cannot be rendered: {0}")]
    Render(#[from] minijinja::Error),
    /// The JSON could not be written.
    #[error("the status cannot be written as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The rendering task ended without an answer.
    #[error("the status page's rendering stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        warn!(error = %self, "status page request failed");
        let code = match self {
            StatusError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, self.to_string()).into_response()
    }
}

/// One snapshot with its page and JSON rendered.
#[derive(Debug)]
pub struct Rendered {
    /// The figures.
    pub snapshot: Snapshot,
    /// `/api/v1/status`.
    json: Bytes,
    /// Pages rendered so far (the first page of `/` with the snapshot).
    pages: Mutex<HashMap<PageKey, Bytes>>,
    /// When the snapshot was taken.
    taken: Instant,
}

/// The status page's state: the public targets, the rollups and the current snapshot.
#[derive(Debug)]
pub struct StatusPage {
    pool: PgPool,
    /// Every target the sink knows, the settings file's and the API's.
    catalog: watch::Receiver<Arc<Catalog>>,
    rollups: tokio::sync::Mutex<Rollups>,
    current: RwLock<Option<Arc<Rendered>>>,
    refreshing: AtomicBool,
    templates: Arc<Templates>,
}

impl StatusPage {
    /// The status page of the public targets of `catalog` (the settings file's and the API's,
    /// as they stand at each refresh), over `pool`, with `settings` (`[sink.status]`).
    pub fn new(
        pool: PgPool,
        catalog: watch::Receiver<Arc<Catalog>>,
        settings: &StatusSettings,
    ) -> StatusPage {
        StatusPage {
            pool,
            catalog,
            rollups: tokio::sync::Mutex::default(),
            current: RwLock::default(),
            refreshing: AtomicBool::new(false),
            templates: Arc::new(Templates::new(settings.clone())),
        }
    }

    /// The current snapshot, rendered; a refresh started when it is old.
    pub async fn current(self: &Arc<Self>) -> Result<Arc<Rendered>, StatusError> {
        let found = self.found();
        let Some(found) = found else {
            return self.refresh().await;
        };
        if found.taken.elapsed() >= REFRESH_EVERY && !self.refreshing.swap(true, Ordering::AcqRel) {
            let page = self.clone();
            tokio::spawn(async move {
                if let Err(e) = page.refresh().await {
                    warn!(error = %e, "cannot refresh the status page; serving the last one");
                }
                page.refreshing.store(false, Ordering::Release);
            });
        }
        Ok(found)
    }

    fn found(&self) -> Option<Arc<Rendered>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads what changed and renders a new snapshot (one refresh at a time).
    async fn refresh(&self) -> Result<Arc<Rendered>, StatusError> {
        let mut rollups = self.rollups.lock().await;
        if let Some(fresh) = self.found().filter(|r| r.taken.elapsed() < REFRESH_EVERY) {
            return Ok(fresh);
        }
        let public = PublicTargets::from_settings(&self.catalog.borrow().targets);
        let now = Utc::now();
        rollups.refresh(&self.pool, &public.ids(), now).await?;
        let snapshot = Snapshot::build(&public, &rollups, now);
        drop(rollups);
        let templates = self.templates.clone();
        let rendered =
            tokio::task::spawn_blocking(move || Rendered::of(snapshot, &templates)).await??;
        let rendered = Arc::new(rendered);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(rendered.clone());
        Ok(rendered)
    }
}

impl Rendered {
    fn of(snapshot: Snapshot, templates: &Templates) -> Result<Rendered, StatusError> {
        let rendered = Rendered {
            json: serde_json::to_string(&snapshot)?.into(),
            snapshot,
            pages: Mutex::default(),
            taken: Instant::now(),
        };
        let first = PageKey {
            group: None,
            number: 1,
        };
        rendered.page(first, templates)?;
        Ok(rendered)
    }

    /// The page `key`, rendered once per snapshot; `None` when it has no target.
    fn page(&self, key: PageKey, templates: &Templates) -> Result<Option<Bytes>, StatusError> {
        let mut cached = self.pages.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(page) = cached.get(&key) {
            return Ok(Some(page.clone()));
        }
        let Some(page) = templates.page(&self.snapshot, &key)? else {
            return Ok(None);
        };
        let page = Bytes::from(page);
        if cached.len() < MAX_CACHED_PAGES {
            cached.insert(key, page.clone());
        }
        Ok(Some(page))
    }
}

/// The routes of the status page that `schemas/openapi.json` describes (the HTML pages and the
/// badges are not an API).
pub const API_ROUTES: &[(&str, &str)] = &[("GET", "/api/v1/status")];

/// The status page's routes; the first snapshot is read at once, in the background, so that
/// the first visitor need not wait for it.
pub fn routes(state: Arc<HttpState>) -> Router {
    let settings = &state.settings;
    let page = StatusPage::new(
        state.pool.clone(),
        state.catalog.clone(),
        &settings.sink.status,
    );
    let page = Arc::new(page);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let first = page.clone();
        runtime.spawn(async move {
            if let Err(e) = first.current().await {
                warn!(error = %e, "cannot read the status page's first snapshot; reading it at the first request");
            }
        });
    }
    routes_of(page)
}

/// The routes of `page`.
pub fn routes_of(page: Arc<StatusPage>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/group/{label}/{value}", get(group))
        .route("/api/v1/status", get(json))
        .route("/badge/{id}/status.svg", get(status_badge))
        .route("/badge/{id}/uptime.svg", get(uptime_badge))
        .with_state(page)
}

type Page = State<Arc<StatusPage>>;

/// `body` as `content_type`, cacheable for `max_age_s`.
fn answer(body: Bytes, content_type: &'static str, max_age_s: u64) -> Response {
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age_s}"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

const HTML: &str = "text/html; charset=utf-8";
const SVG: &str = "image/svg+xml; charset=utf-8";

/// The query of the pages.
#[derive(Debug, Deserialize)]
struct PageQuery {
    /// The page, from 1; the first when left out.
    page: Option<usize>,
}

async fn index(State(page): Page, Query(query): Query<PageQuery>) -> Result<Response, StatusError> {
    html(page, None, query).await
}

async fn group(
    State(page): Page,
    Path((label, value)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, StatusError> {
    html(page, Some(Group { label, value }), query).await
}

/// The page of `group`, rendered off the async threads when not rendered yet.
async fn html(
    page: Arc<StatusPage>,
    group: Option<Group>,
    query: PageQuery,
) -> Result<Response, StatusError> {
    let r = page.current().await?;
    let key = PageKey {
        group,
        number: query.page.unwrap_or(1),
    };
    let templates = page.templates.clone();
    let found = tokio::task::spawn_blocking(move || r.page(key, &templates)).await??;
    Ok(match found {
        Some(body) => answer(body, HTML, PAGE_MAX_AGE_S),
        None => not_found("no public target is on this page"),
    })
}

async fn json(State(page): Page) -> Result<Response, StatusError> {
    let r = page.current().await?;
    Ok(answer(r.json.clone(), "application/json", PAGE_MAX_AGE_S))
}

fn not_found(why: &'static str) -> Response {
    (StatusCode::NOT_FOUND, why).into_response()
}

async fn status_badge(State(page): Page, Path(id): Path<String>) -> Result<Response, StatusError> {
    let r = page.current().await?;
    let Some(t) = r.snapshot.target(&id) else {
        return Ok(not_found("no public target has this id"));
    };
    let colour = match t.state.as_str() {
        "up" => "#1a7f37",
        "degraded" => "#9a6700",
        "down" => "#cf222e",
        _ => "#57606a",
    };
    let svg = page.templates.badge("status", &t.state, colour)?;
    Ok(answer(svg.into(), SVG, BADGE_MAX_AGE_S))
}

/// The query of the uptime badge.
#[derive(Debug, Deserialize)]
struct UptimeQuery {
    /// `24h`, `7d`, `30d` or `90d`; 30 days when left out.
    window: Option<String>,
}

async fn uptime_badge(
    State(page): Page,
    Path(id): Path<String>,
    Query(query): Query<UptimeQuery>,
) -> Result<Response, StatusError> {
    let text = query.window.as_deref().unwrap_or(Window::Month.as_str());
    let Some(window) = Window::parse(text) else {
        let why = format!("window: `{text}` is not one of 24h, 7d, 30d, 90d");
        return Ok((StatusCode::BAD_REQUEST, why).into_response());
    };
    let r = page.current().await?;
    let Some(t) = r.snapshot.target(&id) else {
        return Ok(not_found("no public target has this id"));
    };
    let uptime = t.uptime.of(window);
    let colour = match uptime {
        Some(u) if u >= 99.9 => "#1a7f37",
        Some(u) if u >= 99.0 => "#4c7d00",
        Some(u) if u >= 95.0 => "#9a6700",
        Some(_) => "#cf222e",
        None => "#57606a",
    };
    let label = format!("uptime {}", window.as_str());
    let svg = page.templates.badge(&label, &percent(uptime), colour)?;
    Ok(answer(svg.into(), SVG, BADGE_MAX_AGE_S))
}
