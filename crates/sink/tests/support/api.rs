//! A client of the sink's HTTP side for the API tests: one request, its status, headers and
//! JSON body.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use monitor_core::testing::TestDatabase;
use serde_json::Value;

use super::RunningSink;

/// An answer: status, headers, and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

/// Sends `method path` to `addr` with `token` as the bearer (if any) and `body` (if any).
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = Full::new(Bytes::from(body.unwrap_or_default().to_string()));
    let response = client
        .request(request.body(body).expect("request"))
        .await
        .expect("the sink answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
        text,
    }
}

/// The test's admin token.
pub const ADMIN: &str = "admin-token-0123456789";
/// The test's read-only token.
pub const READER: &str = "read-token-0123456789";

/// A sink consuming `topic` with an admin and a read token and `monitored_urls` (TOML) in its
/// settings file: the sink, its HTTP address, its targets topic, and the settings' directory
/// (kept as long as the sink runs).
pub async fn sink_on(
    db: &TestDatabase,
    topic: &str,
    monitored_urls: &str,
) -> (RunningSink, SocketAddr, String, tempfile::TempDir) {
    let env = super::env(topic, &db.url);
    let toml = format!(
        r#"
monitored_urls = {monitored_urls}
[sink.api]
tokens = [
  {{ name = "deploy-bot", role = "admin", token = "{ADMIN}" }},
  {{ name = "grafana", role = "read", token = "{READER}" }},
]
"#
    );
    let (settings, dir) = super::notify::settings(env, &toml);
    let targets_topic = settings.kafka.targets_topic.clone();
    let sink = RunningSink::start(settings).await;
    let addr = sink.http.expect("the HTTP side listens");
    (sink, addr, targets_topic, dir)
}

/// `method path` with the admin token and `body`.
pub async fn admin(addr: SocketAddr, method: Method, path: &str, body: Option<Value>) -> Answer {
    let body = body.map(|b| b.to_string());
    call(addr, method, path, Some(ADMIN), body.as_deref(), &[]).await
}
