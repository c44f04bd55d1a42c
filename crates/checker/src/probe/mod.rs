//! One check of one target, measured phase by phase, and its verdict.
//!
//! Every check opens a fresh connection (no pooling), so each report really measures DNS,
//! TCP connect and the TLS handshake. The whole check, redirects and body included, is bounded
//! by the target's timeout. A failed check is data: the report says which phase failed and
//! why ([`FailureClass`] and an error text); `Err` never leaves this module.

mod tls;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HOST, LOCATION, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use monitor_core::report::{
    report_id, to_micros, FailureClass, Report, Status, Timings, SCHEMA_VERSION,
};
use monitor_core::settings::TargetSettings;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
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

/// Runs checks; cheap to share.
#[derive(Debug)]
pub struct Prober {
    checker_id: String,
    trust: TrustStore,
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
    body: Vec<u8>,
    truncated: bool,
    body_read: bool,
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
        }
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
    async fn follow(
        &self,
        target: &TargetSettings,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<(), Failure> {
        let mut url = target.url.clone();
        let mut method = target.method.clone();
        let mut body = target.body.clone();
        let mut visited: HashSet<Url> = HashSet::from([url.clone()]);
        let mut redirects = 0u32;
        loop {
            let location = self
                .hop(target, &url, &method, body.as_deref(), deadline, out)
                .await?;
            let Some(location) = location else {
                return Ok(());
            };
            let status = out.http_status.unwrap_or(0);
            let next = url.join(&location).map_err(|e| {
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
            if status == 303 || (matches!(status, 301 | 302) && method == Method::POST) {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
    }

    /// One request on a fresh connection. Returns the `Location` to follow, if any.
    async fn hop(
        &self,
        target: &TargetSettings,
        url: &Url,
        method: &Method,
        body: Option<&str>,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<Option<String>, Failure> {
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
                    self.exchange(target, stream, url, &host, method, body, deadline, out)
                        .await
                }
            }
        } else {
            self.exchange(target, tcp, url, &host, method, body, deadline, out)
                .await
        }
    }

    /// The HTTP exchange on an established connection.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<S>(
        &self,
        target: &TargetSettings,
        stream: S,
        url: &Url,
        host: &str,
        method: &Method,
        body: Option<&str>,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<Option<String>, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
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

        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = Request::builder().method(method.clone()).uri(path);
        if !target.headers.contains_key(HOST) {
            request = request.header(HOST, authority);
        }
        if !target.headers.contains_key(USER_AGENT) {
            request = request.header(USER_AGENT, USER_AGENT_VALUE);
        }
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_string())))
            .map_err(|e| {
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

        // The body, never more than the cap.
        let cap = usize::try_from(target.body_limit).unwrap_or(usize::MAX);
        let mut body = response.into_body();
        out.body.clear();
        out.truncated = false;
        out.body_read = true;
        let t = Instant::now();
        let result = loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    break Err((
                        FailureClass::Timeout,
                        format!(
                            "body not complete within the timeout ({} bytes read)",
                            out.body.len()
                        ),
                    ))
                }
                Ok(None) => break Ok(None),
                Ok(Some(Err(e))) => break Err(classify(&e, "reading the body")),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        let room = cap - out.body.len();
                        if data.len() > room {
                            out.body.extend_from_slice(&data[..room]);
                            out.truncated = true;
                            break Ok(None);
                        }
                        out.body.extend_from_slice(&data);
                    }
                }
            }
        };
        add(&mut out.transfer, t.elapsed());
        drop(connection);
        result
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
        let text = out.body_read.then(|| String::from_utf8_lossy(&out.body));
        let regexp_matched = match (&target.regexp, &text) {
            (Some(p), Some(t)) => Some(p.regex().is_match(t)),
            _ => None,
        };
        let negative_matched = match (&target.negative_regexp, &text) {
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
                        format!("regexp {pattern:?} not found in the body ({} bytes)", out.body.len()),
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
            body_bytes: out.body_read.then_some(out.body.len() as u64),
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
