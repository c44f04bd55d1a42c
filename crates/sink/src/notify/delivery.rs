//! Delivering one message over HTTP(S), shared by every HTTP channel (webhook, Slack,
//! PagerDuty): one client per process with the process's trust roots, a bound on each
//! attempt, and the answer sorted into what a retry may fix and what it cannot.
//!
//! hyper's client (with hyper-rustls) is used rather than a higher-level crate: the sink
//! already carries hyper and rustls with one crypto provider, and a POST with a timeout is all
//! a channel needs.

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Bound on one delivery attempt: connect, send and read the answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an answer kept (for the attempt's record and the log).
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another attempt: a timeout, a refused connection, a 5xx or a 429.
    #[error("{reason}")]
    Retry {
        /// What happened, for the attempt's record.
        reason: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
    },
    /// Another attempt would get the same answer: a 4xx other than 408 and 429, a message
    /// the receiver cannot take. The notification fails at once.
    #[error("{reason}")]
    Refused {
        /// What happened, for the attempt's record.
        reason: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
    },
}

impl DeliveryError {
    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Retry { status, .. } | DeliveryError::Refused { status, .. } => *status,
        }
    }
}

/// A delivered attempt: the receiver's status and the start of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The start of the body (at most [`MAX_ANSWER_BYTES`]), lossily as text.
    pub body: String,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The process's one client: connections are pooled per receiver.
fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(monitor_core::runtime::trust::roots().store())
                .with_no_client_auth()
        });
        let connector = match tls {
            Ok(tls) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build(),
            // ring supports the safe defaults; kept total rather than panicking.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .build(),
        };
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// POSTs `body` to `url` with `headers` (a `Content-Type` among them), within
/// [`ATTEMPT_TIMEOUT`]. A 2xx is delivered; anything else is a [`DeliveryError`].
pub async fn post(url: &str, headers: &HeaderMap, body: Vec<u8>) -> Result<Answer, DeliveryError> {
    post_within(url, headers, body, ATTEMPT_TIMEOUT).await
}

/// [`post`] within `timeout` (a channel's own bound).
pub async fn post_within(
    url: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, DeliveryError> {
    let mut request = Request::post(url)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| DeliveryError::Refused {
            reason: format!("cannot build the request: {e}"),
            status: None,
        })?;
    request.headers_mut().extend(headers.clone());
    let attempt = async {
        let response = client()
            .request(request)
            .await
            .map_err(|e| DeliveryError::Retry {
                reason: format!("request failed: {e}"),
                status: None,
            })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, DeliveryError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, body) =
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| DeliveryError::Retry {
                reason: format!("no answer within {timeout:?}"),
                status: None,
            })??;
    judge(status, body)
}

/// Sorts an answer: 2xx delivered, 408/429/5xx retry, other 4xx refused.
fn judge(status: StatusCode, body: String) -> Result<Answer, DeliveryError> {
    let code = status.as_u16();
    if status.is_success() {
        return Ok(Answer { status: code, body });
    }
    let reason = format!(
        "answered {status}: {}",
        body.chars().take(200).collect::<String>()
    );
    let retry = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if retry {
        Err(DeliveryError::Retry {
            reason,
            status: Some(code),
        })
    } else {
        Err(DeliveryError::Refused {
            reason,
            status: Some(code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted() {
        assert!(judge(StatusCode::ACCEPTED, String::new()).is_ok());
        assert!(matches!(
            judge(StatusCode::BAD_GATEWAY, String::new()),
            Err(DeliveryError::Retry {
                status: Some(502),
                ..
            })
        ));
        assert!(matches!(
            judge(StatusCode::TOO_MANY_REQUESTS, String::new()),
            Err(DeliveryError::Retry { .. })
        ));
        assert!(matches!(
            judge(StatusCode::BAD_REQUEST, String::new()),
            Err(DeliveryError::Refused {
                status: Some(400),
                ..
            })
        ));
    }
}
