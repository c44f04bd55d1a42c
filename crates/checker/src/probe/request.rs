//! The request of each hop: the target's method, headers and body, credentials and a
//! configured `Host` kept to the target's own origin, and where a redirect leads.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use monitor_core::report::FailureClass;
use monitor_core::settings::TargetSettings;
use url::Url;

use super::outcome::Failure;

/// The `User-Agent` of every check.
pub const USER_AGENT_VALUE: &str = concat!(
    "web-monitor/",
    env!("CARGO_PKG_VERSION"),
    " (availability check)"
);

/// One request of a check: the target's, or one a redirect leads to.
#[derive(Debug)]
pub(super) struct HopRequest {
    pub url: Url,
    pub method: Method,
    pub body: Option<String>,
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
/// when the hop left the target's origin.
pub(super) fn build_request(
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
        request = request.header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    }
    for (name, value) in target.headers.iter().filter(|(n, _)| sent(n)) {
        request = request.header(name, value);
    }
    request.body(Full::new(Bytes::from(hop.body.clone().unwrap_or_default())))
}

pub(super) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}
