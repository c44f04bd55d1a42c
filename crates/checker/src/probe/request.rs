//! The request of each hop: the target's method, headers and body, credentials and a
//! configured `Host` kept to the target's own origin, and where a redirect leads.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use monitor_core::report::FailureClass;
use monitor_core::settings::TargetSettings;
use url::{Position, Url};

use super::outcome::Failure;

/// The `User-Agent` of every check.
pub const USER_AGENT_VALUE: &str = concat!(
    "web-monitor/",
    env!("CARGO_PKG_VERSION"),
    " (availability check)"
);

/// One request of a check: the target's (borrowed from its settings), or one a redirect
/// leads to.
#[derive(Debug)]
pub(super) struct HopRequest<'t> {
    pub url: Cow<'t, Url>,
    pub method: Method,
    pub body: Option<&'t str>,
    /// Whether `url` has the target's origin: only then are credentials sent.
    pub same_origin: bool,
}

/// Where a redirect's `Location` leads, if it can be followed.
pub(super) fn next_url(current: &Url, location: &str, status: u16) -> Result<Url, Failure> {
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
/// when the hop left the target's origin. Nothing is made that the target's settings already
/// hold: the path is a slice of the URL, the fixed headers are static. (`Connection: close` is
/// not sent: the server then closes first and hyper shuts the socket down gracefully, which
/// cost the checker 20 % more CPU per check against nginx, docs/benchmarks.md.)
pub(super) fn build_request(
    target: &TargetSettings,
    hop: &HopRequest<'_>,
    host: &str,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let url = hop.url.as_ref();
    let sent = |name: &HeaderName| hop.same_origin || !(target.is_credential(name) || name == HOST);
    let configured =
        |name: &HeaderName| !target.headers.is_empty() && target.headers.contains_key(name);
    let mut request = Request::builder()
        .method(hop.method.clone())
        .uri(&url[Position::BeforePath..Position::AfterQuery]);
    if !(hop.same_origin && configured(&HOST)) {
        request = match url.port() {
            Some(port) => request.header(HOST, format!("{host}:{port}")),
            None => request.header(HOST, host),
        };
    }
    if !configured(&USER_AGENT) {
        request = request.header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    }
    for (name, value) in target.headers.iter().filter(|(n, _)| sent(n)) {
        request = request.header(name, value);
    }
    let body = hop
        .body
        .map_or_else(Bytes::new, |b| Bytes::copy_from_slice(b.as_bytes()));
    request.body(Full::new(body))
}

pub(super) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}
