//! The admin endpoint both services serve: `/metrics` (Prometheus text format), `/healthz`
//! (the process is alive) and `/readyz` (the service can do its work).
//!
//! The routes are an axum [`Router`] ([`router`]), so later endpoints (an API) can merge
//! theirs into it and be served the same way ([`serve_router`]).
//!
//! It must stay cheap and answer whatever clients do, because it shares the process (and its
//! memory limit) with the service: at most [`MAX_CONNECTIONS`] connections are open, and a
//! new one beyond that closes the oldest, so idle or slow clients (slowloris) can neither
//! exhaust memory nor lock a scraper out; a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] (which also closes idle keep-alive connections) and fit in
//! [`MAX_REQUEST_HEAD_BYTES`]; a connection lives at most [`MAX_CONNECTION_AGE`]. When accepting
//! fails (out of file descriptors, `EMFILE`), it logs once, retries every
//! [`ACCEPT_RETRY_DELAY`] instead of spinning, and says when accepting works again.
//!
//! The accept loop is written here on hyper rather than left to `axum::serve`, which exposes
//! neither a connection cap, nor the header timeout's length, nor the request-head size, nor
//! a connection's age: each accepted connection is served by hyper with those bounds, the
//! router answering its requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most connections open at once; a new one beyond closes the oldest.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest wait for a complete request head, from the connection's start or, on a keep-alive
/// connection, from the end of the previous response (so it is also the idle bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of a connection; then it closes once its current response is written.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a connection past its age may take to finish its response.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest request head read (hyper's smallest allowed buffer is 8 KiB); a larger one is
/// answered 431 and closed.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Pause after a failed accept (such as `EMFILE`) before trying again.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// What the endpoint serves.
pub struct AdminState {
    /// The service's metrics.
    pub registry: Mutex<Registry>,
    /// Whether the service is ready (for `/readyz`).
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminState")
    }
}

/// The endpoint's bounds; [`Limits::default`] is what the services use (the constants above).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request head, also between requests of a keep-alive connection.
    pub header_read_timeout: Duration,
    /// Longest life of a connection.
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connection_age: MAX_CONNECTION_AGE,
        }
    }
}

/// Binds the admin address.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoint on `listener` until `shutdown` fires, within the default [`Limits`].
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    serve_with(listener, state, shutdown, Limits::default()).await;
}

/// [`serve`] within `limits`. Every connection is closed when `shutdown` fires.
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, max_connections = limits.max_connections, "admin endpoint: /metrics /healthz /readyz");
    }
    accept_loop(listener, router(state), shutdown, limits).await;
}

/// The endpoint's routes: `/metrics`, `/healthz` and `/readyz`, whatever the method, and a
/// pointer to them for any other path. Merge other routes into it before serving it.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", any(metrics))
        .route("/healthz", any(healthz))
        .route("/readyz", any(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` fires, within the default [`Limits`].
pub async fn serve_router(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    serve_router_with(listener, router, shutdown, Limits::default()).await;
}

/// [`serve_router`] within `limits`. Every connection is closed when `shutdown` fires.
pub async fn serve_router_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, max_connections = limits.max_connections, "admin endpoint listening");
    }
    accept_loop(listener, router, shutdown, limits).await;
}

/// Accepts connections until `shutdown` fires, each served by `router` in a task of its own
/// within `limits`.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut failed_accepts = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if failed_accepts == 0 {
                    warn!(error = %e, retry_ms = ACCEPT_RETRY_DELAY.as_millis() as u64, "admin endpoint cannot accept connections (out of file descriptors?): retrying");
                }
                failed_accepts += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_RETRY_DELAY) => continue,
                }
            }
        };
        if failed_accepts > 0 {
            info!(failed_accepts, "admin endpoint accepts connections again");
            failed_accepts = 0;
        }
        let slot = Open::admit(&open, limits.max_connections, &shutdown);
        tokio::spawn(connection(stream, router.clone(), limits, slot));
    }
}

/// The open connections, oldest first, each with the token that closes it.
#[derive(Default)]
struct Open {
    next_id: u64,
    live: BTreeMap<u64, CancellationToken>,
}

/// A connection's place among the open ones; freed when dropped.
struct Slot {
    id: u64,
    close: CancellationToken,
    open: Arc<Mutex<Open>>,
}

impl Open {
    /// Makes room for one more connection (closing the oldest when full) and takes it.
    fn admit(open: &Arc<Mutex<Open>>, max: usize, shutdown: &CancellationToken) -> Slot {
        let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
        while o.live.len() >= max.max(1) {
            let Some((_, oldest)) = o.live.pop_first() else {
                break;
            };
            oldest.cancel();
            debug!(max, "admin endpoint full: closed the oldest connection");
        }
        let id = o.next_id;
        o.next_id += 1;
        let close = shutdown.child_token();
        o.live.insert(id, close.clone());
        Slot {
            id,
            close,
            open: open.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        o.live.remove(&self.id);
    }
}

/// Serves one connection until it ends, is closed to make room or by shutdown, or reaches
/// its age.
async fn connection(stream: TcpStream, router: Router, limits: Limits, slot: Slot) {
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = slot.close.cancelled() => return,
        _ = tokio::time::sleep(limits.max_connection_age) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        _ = slot.close.cancelled() => {}
        _ = tokio::time::sleep(CLOSE_GRACE) => {}
    }
}

/// A plain-text answer.
fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `/metrics`: the registry in the OpenMetrics text format.
async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let mut body = String::new();
    let registry = state.registry.lock().unwrap_or_else(|p| p.into_inner());
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// `/healthz`: the process answers.
async fn healthz() -> Response {
    text(StatusCode::OK, "text/plain", "ok\n".to_string())
}

/// `/readyz`: whether the service can do its work.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if (state.ready)() {
        text(StatusCode::OK, "text/plain", "ready\n".to_string())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_string(),
        )
    }
}

/// Any other path.
async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "text/plain",
        "try /metrics, /healthz or /readyz\n".to_string(),
    )
}
