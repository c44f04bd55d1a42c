//! An HTTP receiver for the channel tests, on 127.0.0.1:0, playing a webhook, Slack's
//! incoming webhook or PagerDuty's Events API: it records each request (content type,
//! `X-Webmon-Key`, JSON body) as it arrives, answers with the next status queued (202 when
//! none is), and can be told to hold requests: a held request is read and recorded but never
//! answered, as a receiver that hangs. Answered requests are recorded apart, so "delivered
//! once" is one answered request per key.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its `X-Webmon-Key` (empty when it has none).
    pub key: String,
    /// Its body as JSON (`Null` when it is not).
    pub json: Value,
}

/// The receiver; clones share it.
#[derive(Clone)]
pub struct Receiver {
    /// Where to post: `http://127.0.0.1:<port>/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    answered: Arc<Mutex<Vec<(Received, u16)>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    hold: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts a receiver answering every request.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let receiver = Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            received: Arc::default(),
            answered: Arc::default(),
            statuses: Arc::default(),
            hold: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |r| serving.clone().answer(r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (content_type, key) = (header("content-type"), header("x-webmon-key"));
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let json = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let received = Received {
            content_type,
            key,
            json,
        };
        self.received.lock().expect("lock").push(received.clone());
        if self.hold.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let status = self
            .statuses
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(202);
        self.answered.lock().expect("lock").push((received, status));
        let mut response =
            Response::new(Full::new(Bytes::from_static(b"{\"status\":\"success\"}")));
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        Ok(response)
    }

    /// Answers the next requests with `statuses`, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.statuses.lock().expect("lock").extend(statuses);
    }

    /// Holds the requests arriving from now on (true: never answered) or answers them.
    pub fn hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Every request received so far, answered or not.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// The requests answered so far, with the status of the answer.
    pub fn answered(&self) -> Vec<(Received, u16)> {
        self.answered.lock().expect("lock").clone()
    }
}
