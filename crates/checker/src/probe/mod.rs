//! One check of one target, measured phase by phase, and how it is judged.
//!
//! Every check opens a fresh connection (no pooling), so each report really measures DNS,
//! TCP connect and the TLS handshake. The whole check, redirects and body included, is bounded
//! by the target's timeout. A failed check is data: the report says which phase failed and
//! why ([`FailureClass`] and an error text); `Err` never leaves this module.
//!
//! Memory is bounded whatever the servers send, so that `max_in_flight` checks fit in the
//! container: a body is kept only when a pattern needs it (otherwise it is counted up to
//! `body_limit` and dropped frame by frame), and what is kept comes out of one budget shared
//! by every check ([`Checker::with_body_memory`], `checker.max_body_memory`): a check reserves
//! its `body_limit` (or the `Content-Length`, if smaller) before reading, and waits, within its
//! timeout, while other checks hold the budget. Each connection's read buffer is bounded too
//! ([`READ_BUFFER_MAX`]).
//!
//! Layout: `connect` opens the connection phase by phase, `exchange` speaks HTTP on it and
//! reads the body, `request` makes each hop's request, `judge` judges what was learned
//! and writes the report, `tls` holds the trust roots; every step is bounded by the check's
//! deadline (`deadline`).

mod connect;
mod deadline;
mod exchange;
mod judge;
mod outcome;
mod request;
mod tls;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::Method;
use monitor_core::report::{FailureClass, Report};
use monitor_core::settings::{TargetSettings, DEFAULT_MAX_BODY_MEMORY};
use tokio::time::Instant;
use url::Url;

use connect::Endpoint;
use exchange::{exchange, BodyBudget};
use judge::Times;
use outcome::{Failure, Outcome};
use request::{next_url, HopRequest};

pub use exchange::READ_BUFFER_MAX;
pub use request::USER_AGENT_VALUE;
pub use tls::TrustStore;

/// One check as the scheduler runs it: the target and its scheduled time in, the report out.
pub type CheckFn = Arc<
    dyn Fn(Arc<TargetSettings>, DateTime<Utc>) -> Pin<Box<dyn Future<Output = Report> + Send>>
        + Send
        + Sync,
>;

/// Runs checks; cheap to share.
#[derive(Debug)]
pub struct Checker {
    checker_id: String,
    trust: TrustStore,
    /// Body bytes checks may keep at once, shared by all.
    body_memory: BodyBudget,
}

impl Checker {
    /// A checker whose reports name `checker_id`.
    pub fn new(checker_id: impl Into<String>) -> Checker {
        Checker {
            checker_id: checker_id.into(),
            trust: TrustStore::default(),
            body_memory: BodyBudget::new(DEFAULT_MAX_BODY_MEMORY),
        }
    }

    /// This checker with a budget of `bytes` for the bodies all its checks keep at once
    /// (`checker.max_body_memory`; [`DEFAULT_MAX_BODY_MEMORY`] by default).
    pub fn with_body_memory(mut self, bytes: u64) -> Checker {
        self.body_memory = BodyBudget::new(bytes);
        self
    }

    /// This checker as the scheduler's [`CheckFn`].
    pub fn into_check_fn(self: Arc<Self>) -> CheckFn {
        Arc::new(move |target, scheduled_at| {
            let checker = self.clone();
            Box::pin(async move { checker.check(&target, scheduled_at).await })
        })
    }

    /// Checks `target` once, for the slot `scheduled_at`.
    pub async fn check(&self, target: &TargetSettings, scheduled_at: DateTime<Utc>) -> Report {
        let started_at = Utc::now();
        let start = Instant::now();
        let deadline = start + target.timeout;
        let mut out = Outcome::default();
        let failure = self.follow(target, deadline, &mut out).await.err();
        let times = Times {
            scheduled_at,
            started_at,
            total: start.elapsed(),
        };
        judge::report(&self.checker_id, target, times, out, failure)
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
        let mut request = HopRequest {
            url: target.url.clone(),
            method: target.method.clone(),
            body: target.body.clone(),
            same_origin: true,
        };
        // Most checks end at their first hop: what only redirects need is made at the first.
        let mut visited: HashSet<Url> = HashSet::new();
        let mut redirects = 0u32;
        loop {
            let Some(location) = self.hop(target, &request, deadline, out).await? else {
                return Ok(());
            };
            let status = out.http_status.unwrap_or(0);
            let next = next_url(&request.url, &location, status)?;
            if redirects == 0 {
                visited.insert(target.url.clone());
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
            if status == 303 || (matches!(status, 301 | 302) && request.method == Method::POST) {
                request.method = Method::GET;
                request.body = None;
            }
            request.same_origin = next.origin() == target.url.origin();
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
        let at = Endpoint::of(&request.url);
        let addrs = connect::resolve(&at, deadline, out).await?;
        let tcp = connect::tcp(&addrs, &at.host, target.timeout, deadline, out).await?;
        let budget = &self.body_memory;
        let https = request.url.scheme() == "https";
        // Nagle's algorithm only holds back a write that follows another: the TLS handshake's
        // flights, or a body after the head. A plain request without a body goes out in one
        // write, so it is spared the system call.
        if https || request.body.is_some() {
            let _ = tcp.set_nodelay(true);
        }
        if https {
            let tls = connect::tls(&self.trust, target, &at, tcp, deadline, out).await?;
            exchange(budget, target, tls, request, &at.host, deadline, out).await
        } else {
            exchange(budget, target, tcp, request, &at.host, deadline, out).await
        }
    }
}
