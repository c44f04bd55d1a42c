//! The HTTP exchange of one hop on an established connection: the request sent, the response
//! head read (a redirect's `Location` returned), and the body read within the check's share of
//! the body memory budget ([`BodyBudget`]), counted up to the cap and kept only when a pattern
//! needs it.

use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::LOCATION;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use monitor_core::report::FailureClass;
use monitor_core::settings::TargetSettings;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::deadline::within;
use super::outcome::{add, Failure, Outcome};
use super::request::{build_request, is_redirect, HopRequest};

/// Bound on hyper's read buffer for one connection: it grows no further once it holds this
/// much (so it holds at most this plus one read), and a response head that does not fit is
/// refused (`protocol`). Bounds the memory of a check besides the body it keeps.
pub const READ_BUFFER_MAX: usize = 64 * 1024;

/// Body bytes the checks may keep at once, shared by all, one permit per byte.
#[derive(Debug)]
pub(super) struct BodyBudget {
    permits: Arc<Semaphore>,
    /// The size of the budget, for messages.
    bytes: u64,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> BodyBudget {
        BodyBudget {
            permits: Arc::new(Semaphore::new(budget_permits(bytes))),
            bytes,
        }
    }

    /// The share of the budget a check needs: none without a pattern, else its cap or the
    /// announced length if smaller. Waits for it within the check's deadline.
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
            .min(self.bytes);
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let no_room = || {
            (
                FailureClass::Timeout,
                format!(
                    "no room for the body within the timeout: the checks in flight hold the whole body memory budget ({} bytes, checker.max_body_memory)",
                    self.bytes
                ),
            )
        };
        let waited = within(
            deadline,
            self.permits.clone().acquire_many_owned(permits),
            no_room,
        )
        .await?;
        waited.map(Some).map_err(|_| no_room())
    }
}

/// The HTTP exchange on an established connection. Returns the `Location` to follow, if any.
pub(super) async fn exchange<S>(
    budget: &BodyBudget,
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
    let handshake = within(
        deadline,
        hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER_MAX)
            .handshake(TokioIo::new(stream)),
        || {
            (
                FailureClass::Timeout,
                "HTTP handshake did not finish within the timeout".into(),
            )
        },
    )
    .await?;
    let (sender, connection) = handshake.map_err(|e| classify(&e, "starting HTTP"))?;
    // The connection is driven here, beside the exchange, rather than in a task of its own:
    // one task per check and no wake-ups handed between workers. It is dropped, closing the
    // socket, when the exchange returns, even when the body was not read to the end.
    let mut connection = pin!(connection);
    let mut talk = pin!(talk(budget, target, sender, hop, host, deadline, out));
    tokio::select! {
        biased;
        result = &mut talk => result,
        // The connection ended (closed, or failed: the exchange sees the error); the body
        // already received is still read.
        _ = &mut connection => talk.await,
    }
}

/// The request sent and the response read on a connection driven beside it.
async fn talk(
    budget: &BodyBudget,
    target: &TargetSettings,
    mut sender: SendRequest<Full<Bytes>>,
    hop: &HopRequest,
    host: &str,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<Option<String>, Failure> {
    let request = build_request(target, hop, host).map_err(|e| {
        (
            FailureClass::Protocol,
            format!("cannot build the request: {e}"),
        )
    })?;

    let t = Instant::now();
    let response = within(deadline, sender.send_request(request), || {
        (
            FailureClass::Timeout,
            "no response within the timeout".into(),
        )
    })
    .await;
    add(&mut out.ttfb, t.elapsed());
    let response = response?.map_err(|e| classify(&e, "waiting for the response"))?;
    let status = response.status();
    out.http_status = Some(status.as_u16());
    if target.follow_redirects && is_redirect(status) {
        if let Some(location) = response.headers().get(LOCATION) {
            return Ok(Some(
                String::from_utf8_lossy(location.as_bytes()).into_owned(),
            ));
        }
    }
    let body = response.into_body();
    let permit = budget.reserve(target, &body, deadline).await?;
    let t = Instant::now();
    let result = read_body(target, body, permit, deadline, out).await;
    add(&mut out.transfer, t.elapsed());
    result.map(|()| None)
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
        let read = out.body_len;
        let frame = within(deadline, body.frame(), || {
            (
                FailureClass::Timeout,
                format!("body not complete within the timeout ({read} bytes read)"),
            )
        })
        .await?;
        let frame = match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(classify(&e, "reading the body")),
            Some(Ok(frame)) => frame,
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
