//! The admin endpoint under idle and slow clients, through its public API on real sockets:
//! connections beyond the cap close the oldest, request heads that do not arrive in time
//! close their connection, and a scrape still answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use monitor_core::runtime::admin::{self, AdminState, Limits};
use monitor_core::testing::http_get;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// An endpoint serving in this process within `limits`; returns its port.
async fn endpoint(limits: Limits, shutdown: &CancellationToken) -> u16 {
    endpoint_with(Registry::default(), limits, shutdown).await
}

/// [`endpoint`] serving `registry`.
async fn endpoint_with(registry: Registry, limits: Limits, shutdown: &CancellationToken) -> u16 {
    let listener = admin::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let state = Arc::new(AdminState {
        registry: Mutex::new(registry),
        ready: Box::new(|| true),
    });
    tokio::spawn(admin::serve_with(listener, state, shutdown.clone(), limits));
    port
}

/// A connection that sends `sent` and then stalls.
async fn stalled(port: u16, sent: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(sent).await.expect("send");
    s
}

/// Whether the server closed `s` within `within` (end of stream or reset), reading and
/// discarding whatever it answered first.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_close_the_oldest_and_a_scrape_still_answers() {
    let shutdown = CancellationToken::new();
    let limits = Limits {
        max_connections: 8,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let port = endpoint(limits, &shutdown).await;
    let mut slow = Vec::new();
    for i in 0..40 {
        // Half send nothing, half a partial request line (slowloris).
        let sent: &[u8] = if i % 2 == 0 { b"" } else { b"GET /metr" };
        slow.push(stalled(port, sent).await);
    }
    // The scrape gets a place and its answer, long before any header timeout.
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), http_get(port, "/healthz"))
        .await
        .expect("a scrape answers while the endpoint is full of stalled clients");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let mut closed = 0;
    for s in &mut slow {
        if closed_within(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 40 - 8,
        "at most {} stalled connections stay open, {} of 40 were closed",
        8,
        closed
    );
    shutdown.cancel();
}

#[tokio::test]
async fn idle_slow_and_kept_alive_connections_close_after_the_header_timeout() {
    let shutdown = CancellationToken::new();
    let timeout = Duration::from_millis(800);
    let limits = Limits {
        header_read_timeout: timeout,
        ..Limits::default()
    };
    let port = endpoint(limits, &shutdown).await;
    let started = Instant::now();
    let mut idle = stalled(port, b"").await;
    let mut slow = stalled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let mut kept = stalled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut answer = [0u8; 1024];
    let n = kept.read(&mut answer).await.expect("an answer");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    for (name, s) in [
        ("idle", &mut idle),
        ("slow", &mut slow),
        ("kept alive", &mut kept),
    ] {
        assert!(
            closed_within(s, timeout + Duration::from_secs(5)).await,
            "the {name} connection is still open {:?} after it started",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= timeout,
        "closed by the header timeout, not before"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_metrics_page_larger_than_the_request_head_bound_is_served_whole() {
    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    for i in 0..2000 {
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        counter.inc_by(i);
        registry.register(format!("webmon_test_{i}"), "a test counter", counter);
    }
    let port = endpoint_with(registry, Limits::default(), &shutdown).await;
    let (status, body) = http_get(port, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.len() > 4 * admin::MAX_REQUEST_HEAD_BYTES,
        "{} bytes",
        body.len()
    );
    assert!(body.contains("webmon_test_1999_total 1999"));
    assert!(body.ends_with("# EOF\n"), "the page is whole");
    shutdown.cancel();
}

#[tokio::test]
async fn a_request_head_over_the_bound_is_refused_and_closed() {
    let shutdown = CancellationToken::new();
    let port = endpoint(Limits::default(), &shutdown).await;
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(admin::MAX_REQUEST_HEAD_BYTES + 4096, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = s.write_all(&head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    shutdown.cancel();
}

#[tokio::test]
async fn routes_merged_into_the_admin_router_are_served_beside_its_own() {
    let shutdown = CancellationToken::new();
    let state = Arc::new(AdminState {
        registry: Mutex::new(Registry::default()),
        ready: Box::new(|| false),
    });
    let router =
        admin::router(state).route("/api/v1/ping", axum::routing::get(|| async { "pong" }));
    let listener = admin::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(admin::serve_router(listener, router, shutdown.clone()));

    let (status, body) = http_get(port, "/api/v1/ping").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "pong");
    let (status, body) = http_get(port, "/readyz").await;
    assert!(status.contains("503"), "{status}");
    assert_eq!(body, "not ready\n");
    let (status, body) = http_get(port, "/elsewhere").await;
    assert!(status.contains("404"), "{status}");
    assert_eq!(body, "try /metrics, /healthz or /readyz\n");
    shutdown.cancel();
}
