//! One check of one target, measured phase by phase, and its verdict.
//!
//! Every check opens a fresh connection (no pooling), so each report really measures DNS,
//! TCP connect and the TLS handshake. The whole check, redirects and body included, is bounded
//! by the target's timeout. A failed check is data: the report says which phase failed and
//! why ([`FailureClass`] and an error text); `Err` never leaves this module.
//!
//! Memory is bounded whatever the servers send, so that `max_in_flight` checks fit in the
//! container: a body is kept only when a pattern needs it (otherwise it is counted up to
//! `body_limit` and dropped frame by frame), and what is kept comes out of one budget shared
//! by every check ([`Prober::with_body_memory`], `checker.max_body_memory`): a check reserves
//! its `body_limit` (or the `Content-Length`, if smaller) before reading, and waits, within its
//! timeout, while other checks hold the budget. Each connection's read buffer is bounded too
//! ([`READ_BUFFER_MAX`]).

mod tls;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderName, HOST, LOCATION, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use monitor_core::report::{
    report_id, to_micros, FailureClass, Report, Status, Timings, SCHEMA_VERSION,
};
use monitor_core::settings::{TargetSettings, DEFAULT_MAX_BODY_MEMORY};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::schedule::Probe;
pub use tls::TrustStore;

/// The `User-Agent` of every check.
pub const USER_AGENT_VALUE: &str = concat!(
    "web-monitor/",
    env!("CARGO_PKG_VERSION"),
    " (availability check)"
);

/// Bound on hyper's read buffer for one connection: it grows no further once it holds this
/// much (so it holds at most this plus one read), and a response head that does not fit is
/// refused (`protocol`). Bounds the memory of a check besides the body it keeps.
pub const READ_BUFFER_MAX: usize = 64 * 1024;

/// Runs checks; cheap to share.
#[derive(Debug)]
pub struct Prober {
    checker_id: String,
    trust: TrustStore,
    /// Body bytes checks may keep at once, shared by all, one permit per byte.
    body_memory: Arc<Semaphore>,
    /// The size of `body_memory`, for messages.
    body_memory_bytes: u64,
}

/// What a check learned, phase by phase (sums over redirect hops).
#[derive(Debug, Default)]
struct Outcome {
    dns: Option<f64>,
    connect: Option<f64>,
    tls: Option<f64>,
    ttfb: Option<f64>,
    transfer: Option<f64>,
    http_status: Option<u16>,
    /// The body kept for the patterns (empty when no pattern needs it).
    body: Vec<u8>,
    /// Body bytes read, kept or not (at most the cap).
    body_len: u64,
    truncated: bool,
    body_read: bool,
    /// The share of the body memory budget `body` may use, held until the verdict.
    body_memory: Option<OwnedSemaphorePermit>,
    cert_not_after: Option<DateTime<Utc>>,
}

/// Why a hop failed.
type Failure = (FailureClass, String);

fn add(slot: &mut Option<f64>, elapsed: Duration) {
    *slot = Some(slot.unwrap_or(0.0) + elapsed.as_secs_f64() * 1000.0);
}

impl Prober {
    /// A prober whose reports name `checker_id`.
    pub fn new(checker_id: impl Into<String>) -> Prober {
        Prober {
            checker_id: checker_id.into(),
            trust: TrustStore::default(),
            body_memory: Arc::new(Semaphore::new(budget_permits(DEFAULT_MAX_BODY_MEMORY))),
            body_memory_bytes: DEFAULT_MAX_BODY_MEMORY,
        }
    }

    /// This prober with a budget of `bytes` for the bodies all its checks keep at once
    /// (`checker.max_body_memory`; [`DEFAULT_MAX_BODY_MEMORY`] by default).
    pub fn with_body_memory(mut self, bytes: u64) -> Prober {
        self.body_memory = Arc::new(Semaphore::new(budget_permits(bytes)));
        self.body_memory_bytes = bytes;
        self
    }

    /// This prober as the scheduler's [`Probe`].
    pub fn into_probe(self: Arc<Self>) -> Probe {
        Arc::new(move |target, scheduled_at| {
            let prober = self.clone();
            Box::pin(async move { prober.check(&target, scheduled_at).await })
        })
    }

    /// Checks `target` once, for the slot `scheduled_at`.
    pub async fn check(&self, target: &TargetSettings, scheduled_at: DateTime<Utc>) -> Report {
        let started_at = Utc::now();
        let start = Instant::now();
        let deadline = start + target.timeout;
        let mut out = Outcome::default();
        let failure = self.follow(target, deadline, &mut out).await.err();
        let total = start.elapsed();
        self.report(target, scheduled_at, started_at, total, out, failure)
    }

    /// Requests the target's URL, following redirects as configured.
    ///
    /// Credentials ([`TargetSettings::is_credential`]) and a configured `Host` go only to the
    /// target's own origin (scheme, host and port), as browsers and curl do: a redirect to
    /// another host or port, or from https to http, drops them. A 307/308 resends the body
    /// within the origin only; one that would carry it elsewhere fails as `redirect`.
    async fn follow(
        &self,
        target: &TargetSettings,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<(), Failure> {
        let origin = target.url.origin();
        let mut request = HopRequest {
            url: target.url.clone(),
            method: target.method.clone(),
            body: target.body.clone(),
            same_origin: true,
        };
        let mut visited: HashSet<Url> = HashSet::from([request.url.clone()]);
        let mut redirects = 0u32;
        loop {
            let Some(location) = self.hop(target, &request, deadline, out).await? else {
                return Ok(());
            };
            let status = out.http_status.unwrap_or(0);
            let next = next_url(&request.url, &location, status)?;
            redirects += 1;
            if redirects > target.max_redirects {
                return Err((
                    FailureClass::Redirect,
                    format!(
                        "more than {} redirects (the last to {next})",
                        target.max_redirects
                    ),
                ));
            }
            if !visited.insert(next.clone()) {
                return Err((
                    FailureClass::Redirect,
                    format!("redirect loop: {next} was already visited"),
                ));
            }
            if status == 303 || (matches!(status, 301 | 302) && request.method == Method::POST) {
                request.method = Method::GET;
                request.body = None;
            }
            request.same_origin = next.origin() == origin;
            if request.body.is_some() && !request.same_origin {
                return Err((
                    FailureClass::Redirect,
                    format!(
                        "status {status} would resend the request body to {next}, outside the target's origin; point the target at the final URL"
                    ),
                ));
            }
            request.url = next;
        }
    }

    /// One request on a fresh connection. Returns the `Location` to follow, if any.
    async fn hop(
        &self,
        target: &TargetSettings,
        request: &HopRequest,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<Option<String>, Failure> {
        let url = &request.url;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();

        // DNS (skipped for an address literal).
        let addrs: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let t = Instant::now();
                let resolved = tokio::time::timeout_at(
                    deadline,
                    tokio::net::lookup_host((bare_host.as_str(), port)),
                )
                .await;
                add(&mut out.dns, t.elapsed());
                match resolved {
                    Err(_) => {
                        return Err((
                            FailureClass::Dns,
                            format!("resolving {host} did not finish within the timeout"),
                        ))
                    }
                    Ok(Err(e)) => {
                        return Err((FailureClass::Dns, format!("cannot resolve {host}: {e}")))
                    }
                    Ok(Ok(a)) => {
                        let a: Vec<SocketAddr> = a.collect();
                        if a.is_empty() {
                            return Err((FailureClass::Dns, format!("{host} has no address")));
                        }
                        a
                    }
                }
            }
        };

        // TCP connect, address by address.
        let t = Instant::now();
        let mut last_error = None;
        let mut stream = None;
        for addr in &addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => {
                    add(&mut out.connect, t.elapsed());
                    return Err((
                        FailureClass::ConnectTimeout,
                        format!(
                            "no answer from {addr} within the {:?} timeout",
                            target.timeout
                        ),
                    ));
                }
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last_error = Some((*addr, e)),
            }
        }
        add(&mut out.connect, t.elapsed());
        let tcp = match (stream, last_error) {
            (Some(s), _) => s,
            (None, Some((addr, e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err((
                    FailureClass::ConnectRefused,
                    format!("connection refused by {addr}"),
                ))
            }
            (None, Some((addr, e))) => {
                return Err((FailureClass::Io, format!("cannot connect to {addr}: {e}")))
            }
            (None, None) => return Err((FailureClass::Dns, format!("{host} has no address"))),
        };
        let _ = tcp.set_nodelay(true);

        if url.scheme() == "https" {
            let verifier = self
                .trust
                .verifier(target.ca_file.as_deref())
                .map_err(|e| (FailureClass::Tls, e))?;
            let leaf = Arc::new(Mutex::new(None));
            let config = self
                .trust
                .client_config(verifier, leaf.clone())
                .map_err(|e| (FailureClass::Tls, e))?;
            let server_name = ServerName::try_from(bare_host.clone()).map_err(|e| {
                (
                    FailureClass::Tls,
                    format!("{host} cannot be a TLS server name: {e}"),
                )
            })?;
            let t = Instant::now();
            let handshake = tokio::time::timeout_at(
                deadline,
                tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
            )
            .await;
            add(&mut out.tls, t.elapsed());
            let recorded = leaf.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(der) = recorded {
                out.cert_not_after = tls::not_after(&der);
            }
            match handshake {
                Err(_) => Err((
                    FailureClass::Timeout,
                    "TLS handshake did not finish within the timeout".into(),
                )),
                Ok(Err(e)) => Err((
                    FailureClass::Tls,
                    tls::describe_failure(&e, &bare_host, out.cert_not_after),
                )),
                Ok(Ok(stream)) => {
                    self.exchange(target, stream, request, &host, deadline, out)
                        .await
                }
            }
        } else {
            self.exchange(target, tcp, request, &host, deadline, out)
                .await
        }
    }

    /// The HTTP exchange on an established connection.
    async fn exchange<S>(
        &self,
        target: &TargetSettings,
        stream: S,
        hop: &HopRequest,
        host: &str,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<Option<String>, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http1::Builder::new()
                .max_buf_size(READ_BUFFER_MAX)
                .handshake(TokioIo::new(stream)),
        )
        .await;
        let (mut sender, connection) = match handshake {
            Err(_) => {
                return Err((
                    FailureClass::Timeout,
                    "HTTP handshake did not finish within the timeout".into(),
                ))
            }
            Ok(Err(e)) => return Err(classify(&e, "starting HTTP")),
            Ok(Ok(pair)) => pair,
        };
        // The connection task ends with the exchange; aborting it on return closes the socket
        // even when the body was not read to the end.
        let connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));

        let request = build_request(target, hop, host).map_err(|e| {
            (
                FailureClass::Protocol,
                format!("cannot build the request: {e}"),
            )
        })?;

        let t = Instant::now();
        let response = tokio::time::timeout_at(deadline, sender.send_request(request)).await;
        add(&mut out.ttfb, t.elapsed());
        let response = match response {
            Err(_) => {
                return Err((
                    FailureClass::Timeout,
                    "no response within the timeout".into(),
                ))
            }
            Ok(Err(e)) => return Err(classify(&e, "waiting for the response")),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        out.http_status = Some(status.as_u16());
        if target.follow_redirects && is_redirect(status) {
            if let Some(location) = response.headers().get(LOCATION) {
                let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
                drop(connection);
                return Ok(Some(location));
            }
        }

        let body = response.into_body();
        let result = match self.reserve(target, &body, deadline).await {
            Ok(permit) => {
                let t = Instant::now();
                let result = read_body(target, body, permit, deadline, out).await;
                add(&mut out.transfer, t.elapsed());
                result
            }
            Err(failure) => Err(failure),
        };
        drop(connection);
        result.map(|()| None)
    }

    /// The share of the body memory budget a check needs: none without a pattern, else its
    /// cap or the announced length if smaller. Waits for it within the check's deadline.
    async fn reserve(
        &self,
        target: &TargetSettings,
        body: &Incoming,
        deadline: Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, Failure> {
        if target.regexp.is_none() && target.negative_regexp.is_none() {
            return Ok(None);
        }
        let bytes = body
            .size_hint()
            .exact()
            .map_or(target.body_limit, |n| n.min(target.body_limit))
            .min(self.body_memory_bytes);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let waited = tokio::time::timeout_at(
            deadline,
            self.body_memory.clone().acquire_many_owned(permits),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Err(_) | Ok(Err(_)) => Err((
                FailureClass::Timeout,
                format!(
                    "no room for the body within the timeout: the checks in flight hold the whole body memory budget ({} bytes, checker.max_body_memory)",
                    self.body_memory_bytes
                ),
            )),
        }
    }

    fn report(
        &self,
        target: &TargetSettings,
        scheduled_at: DateTime<Utc>,
        started_at: DateTime<Utc>,
        total: Duration,
        out: Outcome,
        failure: Option<Failure>,
    ) -> Report {
        let text = out.body_read.then_some(out.body.as_slice());
        let regexp_matched = match (&target.regexp, text) {
            (Some(p), Some(t)) => Some(p.regex().is_match(t)),
            _ => None,
        };
        let negative_matched = match (&target.negative_regexp, text) {
            (Some(p), Some(t)) => Some(p.regex().is_match(t)),
            _ => None,
        };
        let cap = target.body_limit;
        let failure = failure.or_else(|| {
            let status = out.http_status?;
            if !target.expected_status.contains(status) {
                return Some((
                    FailureClass::HttpStatus,
                    format!("status {status}, expected {}", target.expected_status),
                ));
            }
            if regexp_matched == Some(false) {
                let pattern = target.regexp.as_ref().map(|p| p.as_str()).unwrap_or_default();
                return Some(if out.truncated {
                    (
                        FailureClass::BodyTooLarge,
                        format!("regexp {pattern:?} not found in the first {cap} bytes, and the body is larger than the {cap}-byte cap"),
                    )
                } else {
                    (
                        FailureClass::BodyMismatch,
                        format!("regexp {pattern:?} not found in the body ({} bytes)", out.body_len),
                    )
                });
            }
            if let Some(p) = &target.negative_regexp {
                if negative_matched == Some(true) {
                    return Some((
                        FailureClass::BodyMismatch,
                        format!("negative_regexp {:?} found in the body", p.as_str()),
                    ));
                }
                if out.truncated {
                    return Some((
                        FailureClass::BodyTooLarge,
                        format!(
                            "the body is larger than the {cap}-byte cap: negative_regexp {:?} cannot be ruled out",
                            p.as_str()
                        ),
                    ));
                }
            }
            None
        });
        let mut report = Report {
            schema_version: SCHEMA_VERSION,
            report_id: report_id(&self.checker_id, &target.id, scheduled_at),
            target_id: target.id.clone(),
            url: target.url.to_string(),
            checker_id: self.checker_id.clone(),
            scheduled_at: to_micros(scheduled_at),
            started_at: to_micros(started_at),
            status: if failure.is_some() {
                Status::Down
            } else {
                Status::Up
            },
            failure_class: failure.as_ref().map(|f| f.0),
            error: None,
            http_status: out.http_status,
            response_time_ms: Some(total.as_secs_f64() * 1000.0),
            timings_ms: Timings {
                dns: out.dns,
                connect: out.connect,
                tls: out.tls,
                ttfb: out.ttfb,
                transfer: out.transfer,
            },
            body_bytes: out.body_read.then_some(out.body_len),
            regexp: target.regexp.as_ref().map(|p| p.as_str().to_string()),
            regexp_matched,
            tls_cert_not_after: out.cert_not_after.map(to_micros),
            timeout_s: target.timeout.as_secs_f64(),
            period_s: target.period.as_secs_f64(),
            body_truncated: out.body_read.then_some(out.truncated),
        };
        if let Some((_, text)) = failure {
            report.set_error(text);
        }
        report
    }
}

/// Reads the body up to the target's cap: kept in `out.body` when `permit` (a share of the
/// body memory budget, sized for it) is given, otherwise only counted. `out.body_len` is the
/// bytes read; `out.truncated` says the body went on past the cap.
async fn read_body(
    target: &TargetSettings,
    mut body: Incoming,
    permit: Option<OwnedSemaphorePermit>,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let cap = target.body_limit;
    out.body = Vec::new();
    if let Some(p) = &permit {
        // Exactly the reserved size: the buffer never grows past what the budget granted.
        let reserved = p.num_permits();
        out.body.try_reserve_exact(reserved).map_err(|e| {
            (
                FailureClass::Io,
                format!("cannot allocate {reserved} bytes for the body: {e}"),
            )
        })?;
    }
    let limit = permit.as_ref().map_or(cap, |p| p.num_permits() as u64);
    out.body_memory = permit;
    out.body_len = 0;
    out.truncated = false;
    out.body_read = true;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err((
                    FailureClass::Timeout,
                    format!(
                        "body not complete within the timeout ({} bytes read)",
                        out.body_len
                    ),
                ))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(classify(&e, "reading the body")),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = cap - out.body_len;
        let take = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
        if out.body_memory.is_some() {
            let kept_room = usize::try_from(limit).unwrap_or(usize::MAX) - out.body.len();
            out.body.extend_from_slice(&data[..take.min(kept_room)]);
        }
        out.body_len += take as u64;
        if data.len() > take {
            out.truncated = true;
            return Ok(());
        }
    }
}

/// The budget's size in semaphore permits (one per byte).
fn budget_permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// One request of a check: the target's, or one a redirect leads to.
#[derive(Debug)]
struct HopRequest {
    url: Url,
    method: Method,
    body: Option<String>,
    /// Whether `url` has the target's origin: only then are credentials sent.
    same_origin: bool,
}

/// Where a redirect's `Location` leads, if it can be followed.
fn next_url(current: &Url, location: &str, status: u16) -> Result<Url, Failure> {
    let next = current.join(location).map_err(|e| {
        (
            FailureClass::Redirect,
            format!("status {status} with an unusable Location {location:?}: {e}"),
        )
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err((
            FailureClass::Redirect,
            format!("redirect to unsupported scheme: {next}"),
        ));
    }
    Ok(next)
}

/// The request of one hop: the target's headers, without credentials and a configured `Host`
/// when the hop left the target's origin.
fn build_request(
    target: &TargetSettings,
    hop: &HopRequest,
    host: &str,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let url = &hop.url;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let sent = |name: &HeaderName| hop.same_origin || !(target.is_credential(name) || name == HOST);
    let mut request = Request::builder().method(hop.method.clone()).uri(path);
    if !(hop.same_origin && target.headers.contains_key(HOST)) {
        request = request.header(HOST, authority);
    }
    if !target.headers.contains_key(USER_AGENT) {
        request = request.header(USER_AGENT, USER_AGENT_VALUE);
    }
    for (name, value) in target.headers.iter().filter(|(n, _)| sent(n)) {
        request = request.header(name, value);
    }
    request.body(Full::new(Bytes::from(hop.body.clone().unwrap_or_default())))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Maps hyper's errors to failure classes: not HTTP → `protocol`, cut connections → `io`.
fn classify(e: &hyper::Error, during: &str) -> Failure {
    if e.is_parse() || e.is_parse_status() {
        return (
            FailureClass::Protocol,
            format!("not a valid HTTP response while {during}: {e}"),
        );
    }
    if e.is_timeout() {
        return (FailureClass::Timeout, format!("timed out while {during}"));
    }
    let cause = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    if e.is_incomplete_message() {
        return (
            FailureClass::Io,
            format!("connection closed while {during}{cause}"),
        );
    }
    (
        FailureClass::Io,
        format!("connection failed while {during}: {e}{cause}"),
    )
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
