//! The probe against local servers that misbehave on purpose, one per failure class. No test
//! depends on outside DNS or network: every server is on 127.0.0.1, every certificate is made
//! here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use checker::probe::Checker;
use chrono::{Datelike, Utc};
use monitor_core::report::{FailureClass, Report, Status};
use monitor_core::settings::{CheckerSettings, SettingsSource, TargetSettings};
use monitor_core::testing::peak_rss;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{ca, leaf_until, Ca};

/// A target from JSON keys, in a directory that also holds `files` (name, contents).
fn target(keys: &str, files: &[(&str, String)]) -> (TargetSettings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let file = dir.path().join("c.json");
    std::fs::write(&file, format!("{{\"monitored_urls\": [{{{keys}}}]}}")).expect("write");
    let settings = CheckerSettings::load(
        &SettingsSource {
            base_dir: Some(dir.path().to_path_buf()),
            ..SettingsSource::file_only(file)
        },
        false,
    )
    .expect("valid target");
    (
        settings.targets.into_iter().next().expect("one target"),
        dir,
    )
}

/// Checks once and asserts the check ended within the target's timeout (plus scheduling slack).
async fn check(t: &TargetSettings) -> Report {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let checker = Checker::new("test");
    let started = std::time::Instant::now();
    let report = checker.check(t, Utc::now()).await;
    let took = started.elapsed();
    assert!(
        took <= t.timeout + Duration::from_millis(500),
        "the check took {took:?}, over its {:?} timeout",
        t.timeout
    );
    assert!(
        Report::from_json(&report.to_json()).is_ok(),
        "a valid report: {report:?}"
    );
    report
}

fn assert_down(report: &Report, class: FailureClass, error_part: &str) {
    assert_eq!(report.status, Status::Down, "{report:?}");
    assert_eq!(report.failure_class, Some(class), "{report:?}");
    let error = report.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(error_part),
        "error {error:?} should contain {error_part:?}"
    );
}

/// A server on 127.0.0.1 running `handler` on each connection. Returns its port.
async fn serve<F, Fut>(handler: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move { handler(stream).await });
        }
    });
    port
}

/// Reads a request head (up to the blank line) and returns its first line.
async fn read_head<S: AsyncReadExt + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A server answering every request with `response`.
async fn answer(response: &'static str) -> u16 {
    serve(move |mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_healthy_site_is_up_with_its_phases_timed() {
    let port =
        answer("HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nall is okay")
            .await;
    let (t, _d) = target(
        &format!(
            r#""url": "http://localhost:{port}/health", "regexp": "is ok", "timeout": 2, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!(r.status, Status::Up, "{r:?}");
    assert_eq!(r.failure_class, None);
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.body_bytes, Some(11));
    assert_eq!(r.body_truncated, Some(false));
    assert_eq!(r.regexp_matched, Some(true));
    assert!(r.timings_ms.dns.is_some(), "localhost is resolved");
    assert!(
        r.timings_ms.connect.is_some()
            && r.timings_ms.ttfb.is_some()
            && r.timings_ms.transfer.is_some()
    );
    assert_eq!(r.timings_ms.tls, None, "no TLS over http");
    assert!(r.response_time_ms.unwrap_or_default() > 0.0);
    assert_eq!((r.timeout_s, r.period_s), (2.0, 5.0));
}

#[tokio::test]
async fn the_request_carries_method_headers_body_and_a_user_agent() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    let port = serve(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let _ = tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .await;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        }
    })
    .await;
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/api?x=1", "method": "POST", "headers": {{"X-Probe": "yes"}}, "body": "ping", "timeout": 2, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!(r.status, Status::Up, "{r:?}");
    let request = rx.recv().await.expect("request seen");
    assert!(
        request.starts_with("POST /api?x=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.to_ascii_lowercase().contains("x-probe: yes"),
        "{request}"
    );
    assert!(request.contains("web-monitor/"), "{request}");
    assert!(request.ends_with("ping"), "{request}");
}

#[tokio::test]
async fn a_closed_port_is_connect_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::ConnectRefused, "connection refused");
    assert!(r.timings_ms.connect.is_some());
    assert_eq!(r.http_status, None);
}

#[tokio::test]
async fn a_listener_that_never_completes_the_handshake_is_connect_timeout() {
    // A listener with a backlog of one that never accepts: once its queue is full, the kernel
    // drops further SYNs, and a connect waits for an answer that does not come.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    let (t, _d) = target(
        &format!(r#""url": "http://{addr}/", "timeout": "700ms", "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::ConnectTimeout, "no answer from");
    drop(listener);
}

#[tokio::test]
async fn a_server_that_never_answers_is_timeout() {
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": "500ms", "period": 5"#),
        &[],
    );
    assert_down(
        &check(&t).await,
        FailureClass::Timeout,
        "no response within the timeout",
    );
}

#[tokio::test]
async fn slowloris_headers_are_cut_by_the_timeout() {
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": "600ms", "period": 5"#),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::Timeout, "no response");
}

#[tokio::test]
async fn garbage_instead_of_http_is_protocol() {
    let port = answer("SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 definitely not http\r\n\r\n").await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    assert_down(
        &check(&t).await,
        FailureClass::Protocol,
        "not a valid HTTP response",
    );
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_body_is_io() {
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nfirst bytes")
            .await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // SO_LINGER 0: close with a reset rather than a clean end of stream.
        #[allow(deprecated)]
        let _ = s.set_linger(Some(Duration::ZERO));
        drop(s);
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::Io, "reading the body");
    assert_eq!(r.http_status, Some(200));
}

#[tokio::test]
async fn a_trickled_body_is_cut_by_the_timeout() {
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        for _ in 0..1000 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": "800ms", "period": 5"#),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::Timeout, "body not complete");
}

/// A server sending an endless chunked body as fast as it can.
async fn endless() -> u16 {
    serve(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 16384, "z".repeat(16384));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await
}

#[tokio::test]
async fn an_endless_body_is_read_up_to_the_cap_and_no_further() {
    let port = endless().await;
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "body_limit": "64KiB", "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!(
        r.status,
        Status::Up,
        "without a pattern the check is judged on what was read: {r:?}"
    );
    assert_eq!(r.body_bytes, Some(64 * 1024));
    assert_eq!(r.body_truncated, Some(true));
}

#[tokio::test]
async fn a_pattern_not_found_before_the_cap_is_body_too_large() {
    let port = endless().await;
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "regexp": "needle", "body_limit": "64KiB", "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_down(
        &r,
        FailureClass::BodyTooLarge,
        "larger than the 65536-byte cap",
    );
    assert_eq!(r.body_bytes, Some(64 * 1024));
    assert_eq!(r.regexp_matched, Some(false));
}

#[tokio::test]
async fn an_unexpected_status_is_http_status() {
    let port = answer("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown").await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::HttpStatus, "status 503, expected 200-299");
    assert_eq!(r.http_status, Some(503));
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "expected_status": ["503"], "timeout": 2, "period": 5"#
        ),
        &[],
    );
    assert_eq!(
        check(&t).await.status,
        Status::Up,
        "503 can be the expected answer"
    );
}

#[tokio::test]
async fn body_patterns_decide_body_mismatch() {
    let port = answer("HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nunder maintenance, bye").await;
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "regexp": "welcome", "timeout": 2, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_down(
        &r,
        FailureClass::BodyMismatch,
        "regexp \"welcome\" not found",
    );
    assert_eq!(r.regexp_matched, Some(false));
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "negative_regexp": "maint[a-z]+", "timeout": 2, "period": 5"#
        ),
        &[],
    );
    assert_down(
        &check(&t).await,
        FailureClass::BodyMismatch,
        "negative_regexp",
    );
}

#[tokio::test]
async fn redirects_are_followed_and_loops_and_long_chains_are_redirect() {
    let port = serve(|mut s| async move {
        let line = read_head(&mut s).await;
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let response = match path.as_str() {
            "/loop" => {
                "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n".to_string()
            }
            "/moved" => {
                "HTTP/1.1 301 Moved\r\nLocation: /final\r\nContent-Length: 0\r\n\r\n".to_string()
            }
            "/final" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
            p => {
                let n: u32 = p.trim_start_matches("/chain/").parse().unwrap_or(0);
                format!(
                    "HTTP/1.1 307 Again\r\nLocation: /chain/{}\r\nContent-Length: 0\r\n\r\n",
                    n + 1
                )
            }
        };
        let _ = s.write_all(response.as_bytes()).await;
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/moved", "timeout": 2, "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/loop", "timeout": 2, "period": 5"#),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::Redirect, "redirect loop");
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/chain/0", "max_redirects": 3, "timeout": 2, "period": 5"#
        ),
        &[],
    );
    assert_down(
        &check(&t).await,
        FailureClass::Redirect,
        "more than 3 redirects",
    );
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/moved", "follow_redirects": false, "timeout": 2, "period": 5"#
        ),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::HttpStatus, "status 301");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_dns() {
    let (t, _d) = target(
        r#""url": "http://no-such-host.invalid/", "timeout": 2, "period": 5"#,
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::Dns, "no-such-host.invalid");
    assert!(r.timings_ms.dns.is_some());
    assert_eq!(r.timings_ms.connect, None);
}

// --- TLS -------------------------------------------------------------------------------------

/// A leaf for `names`, valid from 2019 to `not_after_year`, signed by `ca` (or self-signed):
/// its chain and key.
fn leaf(
    ca: Option<&Ca>,
    names: &[&str],
    not_after_year: i32,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let l = leaf_until(ca, names, not_after_year);
    (vec![l.der], l.key)
}

/// An HTTPS server with the given certificate, answering 200 "secure".
async fn https(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> u16 {
    let config = monitor_core::testing::tls_server_config(chain, key);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(s).await else {
                return;
            };
            read_head(&mut tls).await;
            let _ = tls
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                )
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await
}

#[tokio::test]
async fn a_certificate_from_the_targets_ca_is_up_with_its_expiry() {
    let pki = ca();
    let (chain, key) = leaf(Some(&pki), &["127.0.0.1", "localhost"], 2090);
    let port = https(chain, key).await;
    let (t, _d) = target(
        &format!(
            r#""url": "https://127.0.0.1:{port}/", "ca_file": "ca.pem", "timeout": 3, "period": 5"#
        ),
        &[("ca.pem", pki.pem.clone())],
    );
    let r = check(&t).await;
    assert_eq!(r.status, Status::Up, "{r:?}");
    assert!(r.timings_ms.tls.is_some());
    assert_eq!(
        r.tls_cert_not_after.map(|d| (d.year(), d.month(), d.day())),
        Some((2090, 6, 1))
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_tls_unknown_authority() {
    let (chain, key) = leaf(None, &["127.0.0.1"], 2090);
    let port = https(chain, key).await;
    let (t, _d) = target(
        &format!(r#""url": "https://127.0.0.1:{port}/", "timeout": 3, "period": 5"#),
        &[],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::Tls, "unknown authority");
    assert!(
        r.tls_cert_not_after.is_some(),
        "the expiry is reported even when the handshake fails"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_tls_with_its_expiry_date() {
    let pki = ca();
    let (chain, key) = leaf(Some(&pki), &["127.0.0.1"], 2020);
    let port = https(chain, key).await;
    let (t, _d) = target(
        &format!(
            r#""url": "https://127.0.0.1:{port}/", "ca_file": "ca.pem", "timeout": 3, "period": 5"#
        ),
        &[("ca.pem", pki.pem.clone())],
    );
    let r = check(&t).await;
    assert_down(&r, FailureClass::Tls, "certificate expired 2020-06-01");
    assert_eq!(r.tls_cert_not_after.map(|d| d.year()), Some(2020));
}

#[tokio::test]
async fn a_certificate_for_another_host_is_tls_wrong_host() {
    let pki = ca();
    let (chain, key) = leaf(Some(&pki), &["other.example"], 2090);
    let port = https(chain, key).await;
    let (t, _d) = target(
        &format!(
            r#""url": "https://127.0.0.1:{port}/", "ca_file": "ca.pem", "timeout": 3, "period": 5"#
        ),
        &[("ca.pem", pki.pem.clone())],
    );
    assert_down(
        &check(&t).await,
        FailureClass::Tls,
        "not valid for host 127.0.0.1",
    );
}

#[tokio::test]
async fn tls_to_a_server_that_does_not_speak_it_is_tls() {
    // A plain-text server that answers whatever arrives, as many do to a TLS hello.
    let port = serve(|mut s| async move {
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        let _ = s.shutdown().await;
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "https://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::Tls, "TLS handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_targets_do_not_delay_the_others() {
    use checker::schedule;
    use tokio::sync::{mpsc, watch};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let healthy =
        answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    let flood = endless().await;
    let silent = serve(|mut s| async move {
        read_head(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let garbage = serve(|mut s| async move {
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"monitored_urls": [
            {{"id": "healthy", "url": "http://127.0.0.1:{healthy}/", "period": "200ms", "timeout": "150ms"}},
            {{"id": "flood", "url": "http://127.0.0.1:{flood}/", "period": "500ms", "timeout": "400ms", "body_limit": "1MiB", "regexp": "never"}},
            {{"id": "silent", "url": "http://127.0.0.1:{silent}/", "period": "500ms", "timeout": "400ms"}},
            {{"id": "tls-garbage", "url": "https://127.0.0.1:{garbage}/", "period": "500ms", "timeout": "400ms"}}
            ]}}"#
        ),
    )
    .expect("write");
    let settings =
        CheckerSettings::load(&SettingsSource::file_only(file), false).expect("settings");
    let targets = settings.targets.into_iter().map(Arc::new).collect();
    let (_keep, rx) = watch::channel(targets);
    let (tx, mut reports) = mpsc::channel(1000);
    let stop = tokio_util::sync::CancellationToken::new();
    let check = Arc::new(Checker::new("test")).into_check_fn();
    let task = tokio::spawn(schedule::run(
        rx,
        check,
        "test".into(),
        100,
        tx,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await.expect("scheduler ends");
    let mut healthy_reports = Vec::new();
    let mut hostile = 0;
    while let Ok(r) = reports.try_recv() {
        if r.target_id == "healthy" {
            healthy_reports.push(r);
        } else {
            hostile += 1;
            assert_eq!(r.status, Status::Down, "{r:?}");
            assert!(
                r.response_time_ms.unwrap_or(f64::MAX) < 400.0 + 100.0,
                "ended within its timeout: {r:?}"
            );
            assert!(
                r.body_bytes.unwrap_or(0) <= 1024 * 1024,
                "never more than the cap"
            );
        }
    }
    assert!(hostile >= 12, "the hostile targets were checked: {hostile}");
    assert!(healthy_reports.len() >= 14, "{}", healthy_reports.len());
    for r in &healthy_reports {
        assert_eq!(r.status, Status::Up, "{r:?}");
        let late = r.started_at - r.scheduled_at;
        assert!(
            late < chrono::TimeDelta::milliseconds(50),
            "the healthy target stays on schedule: {late}"
        );
    }
}

/// One request as a server received it.
#[derive(Debug, Clone)]
struct Received {
    /// Over TLS or not.
    tls: bool,
    method: String,
    path: String,
    /// Header names in lower case, with their values.
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<std::sync::Mutex<Vec<Received>>>;

/// Reads one request (head and `Content-Length` body) and records it in `log`.
async fn receive<S: AsyncReadExt + Unpin>(stream: &mut S, tls: bool, log: &Log) -> Received {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body).await;
    let request = Received {
        tls,
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    log.lock().expect("log").push(request.clone());
    request
}

/// A plain HTTP server that records every request and answers with `respond(path)`.
async fn recorder(respond: fn(&Received) -> String) -> (u16, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let port = serve(move |mut s| {
        let seen = seen.clone();
        async move {
            let request = receive(&mut s, false, &seen).await;
            let _ = s.write_all(respond(&request).as_bytes()).await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    (port, log)
}

fn redirect(status: &str, location: &str) -> String {
    format!("HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

/// The credentials of the redirect tests: three that always are, one marked secret, and a
/// header that is not a secret.
const CREDENTIALS: &str = r#""headers": {"Authorization": "Bearer s3cret", "Cookie": "session=s3cret", "Proxy-Authorization": "Basic czNjcmV0", "X-Api-Key": "s3cret", "X-Trace": "visible"}, "secret_headers": ["X-Api-Key"]"#;

fn assert_credentials(request: &Received, sent: bool) {
    for name in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
    ] {
        assert_eq!(
            request.header(name).is_some(),
            sent,
            "{name} {} to {} {}: {request:?}",
            if sent { "missing" } else { "leaked" },
            request.method,
            request.path
        );
    }
    assert!(
        !format!("{:?}", request.headers).contains("s3cret") || sent,
        "{request:?}"
    );
    assert_eq!(request.header("x-trace"), Some("visible"), "{request:?}");
}

#[tokio::test]
async fn credentials_go_to_the_targets_origin_only_when_redirected() {
    // Two origins on 127.0.0.1: two ports. "localhost" on the first port is a third origin
    // (another host name), though the same server.
    let (other, other_log) = recorder(|_| OK.to_string()).await;
    let (port, log) = recorder(|r| match r.path.as_str() {
        "/same" => redirect("302 Found", "/final"),
        "/to-ip" => {
            let host = r.header("host").unwrap_or_default();
            let port = host.rsplit(':').next().unwrap_or_default();
            redirect("302 Found", &format!("http://127.0.0.1:{port}/final"))
        }
        p if p.starts_with("/to-port/") => redirect(
            "302 Found",
            &format!("http://127.0.0.1:{}/landing", &p[9..]),
        ),
        _ => OK.to_string(),
    })
    .await;

    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/same", {CREDENTIALS}, "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let seen = log.lock().expect("log").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_credentials(request, true);
    }

    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/to-port/{other}", {CREDENTIALS}, "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    assert_credentials(log.lock().expect("log").last().expect("first hop"), true);
    let landed = other_log.lock().expect("log").clone();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_credentials(&landed[0], false);
    assert_eq!(
        landed[0].header("host"),
        Some(format!("127.0.0.1:{other}").as_str())
    );

    // A configured Host names the target's server: it is not sent to another origin.
    let (t, _d) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/to-port/{other}", "headers": {{"Host": "internal.example"}}, "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let first = log.lock().expect("log").last().cloned().expect("first hop");
    assert_eq!(first.header("host"), Some("internal.example"));
    let landed = other_log
        .lock()
        .expect("log")
        .last()
        .cloned()
        .expect("second hop");
    assert_eq!(
        landed.header("host"),
        Some(format!("127.0.0.1:{other}").as_str())
    );

    // Another host name for the same address and port is another origin too.
    let (t, _d) = target(
        &format!(
            r#""url": "http://localhost:{port}/to-ip", {CREDENTIALS}, "timeout": 3, "period": 5"#
        ),
        &[],
    );
    let before = log.lock().expect("log").len();
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let seen = log.lock().expect("log")[before..].to_vec();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_credentials(&seen[0], true);
    assert_eq!(
        seen[1].header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_credentials(&seen[1], false);
}

/// A server speaking both HTTPS and plain HTTP on one port (it looks at the first byte), so a
/// redirect from https to http keeps host and port and changes only the scheme.
async fn https_and_http(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> (u16, Log) {
    let config = monitor_core::testing::tls_server_config(chain, key);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let log: Log = Arc::default();
    let seen = log.clone();
    let port = serve(move |s| {
        let acceptor = acceptor.clone();
        let seen = seen.clone();
        async move {
            let mut first = [0u8; 1];
            if s.peek(&mut first).await.unwrap_or(0) == 0 {
                return;
            }
            let answer = |r: &Received| match r.path.as_str() {
                "/downgrade" => {
                    let host = r.header("host").unwrap_or_default().to_string();
                    redirect("302 Found", &format!("http://{host}/plain"))
                }
                "/secure-hop" => redirect("307 Temporary Redirect", "/final"),
                _ => OK.to_string(),
            };
            if first[0] == 0x16 {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let r = receive(&mut tls, true, &seen).await;
                let _ = tls.write_all(answer(&r).as_bytes()).await;
                let _ = tls.shutdown().await;
            } else {
                let mut s = s;
                let r = receive(&mut s, false, &seen).await;
                let _ = s.write_all(answer(&r).as_bytes()).await;
                let _ = s.shutdown().await;
            }
        }
    })
    .await;
    (port, log)
}

#[tokio::test]
async fn credentials_never_follow_a_downgrade_from_https_to_http() {
    let pki = ca();
    let (chain, key) = leaf(Some(&pki), &["localhost"], 2090);
    let (port, log) = https_and_http(chain, key).await;
    let (t, _d) = target(
        &format!(
            r#""url": "https://localhost:{port}/downgrade", {CREDENTIALS}, "ca_file": "ca.pem", "timeout": 3, "period": 5"#
        ),
        &[("ca.pem", pki.pem.clone())],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let seen = log.lock().expect("log").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].tls && seen[0].path == "/downgrade", "{seen:?}");
    assert_credentials(&seen[0], true);
    assert!(!seen[1].tls && seen[1].path == "/plain", "{seen:?}");
    assert_credentials(&seen[1], false);

    // Within the https origin they are kept, and a 307 resends the body there.
    let (t, _d) = target(
        &format!(
            r#""url": "https://localhost:{port}/secure-hop", "method": "POST", "body": "form=1", {CREDENTIALS}, "ca_file": "ca.pem", "timeout": 3, "period": 5"#
        ),
        &[("ca.pem", pki.pem.clone())],
    );
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let seen = log.lock().expect("log")[2..].to_vec();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert!(request.tls, "{request:?}");
        assert_credentials(request, true);
        assert_eq!(
            (request.method.as_str(), request.body.as_str()),
            ("POST", "form=1")
        );
    }
}

#[tokio::test]
async fn a_307_or_308_resends_the_body_within_the_origin_only() {
    let (other, other_log) = recorder(|_| OK.to_string()).await;
    let (port, log) = recorder(|r| match r.path.as_str() {
        "/307" => redirect("307 Temporary Redirect", "/echo"),
        "/308" => redirect("308 Permanent Redirect", "/echo"),
        p if p.starts_with("/307-to/") => redirect(
            "307 Temporary Redirect",
            &format!("http://127.0.0.1:{}/landing", &p[8..]),
        ),
        p if p.starts_with("/308-to/") => redirect(
            "308 Permanent Redirect",
            &format!("http://127.0.0.1:{}/landing", &p[8..]),
        ),
        p if p.starts_with("/303-to/") => redirect(
            "303 See Other",
            &format!("http://127.0.0.1:{}/landing", &p[8..]),
        ),
        _ => OK.to_string(),
    })
    .await;
    let post = |path: String| {
        target(
            &format!(
                r#""url": "http://127.0.0.1:{port}{path}", "method": "POST", "body": "password=s3cret", {CREDENTIALS}, "timeout": 3, "period": 5"#
            ),
            &[],
        )
    };
    for code in ["307", "308"] {
        let before = log.lock().expect("log").len();
        let (t, _d) = post(format!("/{code}"));
        let r = check(&t).await;
        assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
        let seen = log.lock().expect("log")[before..].to_vec();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].path, "/echo");
        assert_eq!(
            (seen[1].method.as_str(), seen[1].body.as_str()),
            ("POST", "password=s3cret")
        );
        assert_credentials(&seen[1], true);

        let (t, _d) = post(format!("/{code}-to/{other}"));
        let r = check(&t).await;
        assert_down(&r, FailureClass::Redirect, "would resend the request body");
        assert!(
            other_log.lock().expect("log").is_empty(),
            "{code}: the other origin must receive nothing"
        );
    }
    // A 303 turns the request into a GET without a body: followed, without the credentials.
    let (t, _d) = post(format!("/303-to/{other}"));
    let r = check(&t).await;
    assert_eq!((r.status, r.http_status), (Status::Up, Some(200)), "{r:?}");
    let landed = other_log.lock().expect("log").clone();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!(
        (landed[0].method.as_str(), landed[0].body.as_str()),
        ("GET", "")
    );
    assert_credentials(&landed[0], false);
}

/// Runs `checker --stdout` on `settings` until it has reported every one of `ids` once, and
/// returns its peak memory then.
async fn peak_memory_of_one_round(settings: &str, ids: &[String]) -> u64 {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("checker.json");
    std::fs::write(&file, settings).expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_checker"))
        .args(["--stdout", "--config"])
        .arg(&file)
        .env_remove("WEBMON_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("checker starts");
    let pid = child.id().expect("pid");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut waiting: std::collections::HashSet<&String> = ids.iter().collect();
    let round = async {
        while !waiting.is_empty() {
            let line = lines.next_line().await.expect("read").expect("a report");
            let report = Report::from_json(line.as_bytes()).expect("a valid report");
            waiting.remove(&report.target_id);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), round)
        .await
        .expect("one report per target within a minute");
    let peak = peak_rss(pid);
    child.kill().await.expect("kill");
    peak
}

/// Checker settings for `ids`, all at `url`, half of them with a pattern.
fn memory_settings(ids: &[String], url: &str, budget: &str, body_limit: &str) -> String {
    let targets: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let pattern = if i % 2 == 0 { r#", "regexp": "needle""# } else { "" };
            format!(
                r#"{{"id": "{id}", "url": "{url}", "period": "4s", "timeout": "3s", "body_limit": "{body_limit}"{pattern}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"checker": {{"max_in_flight": 200, "max_body_memory": "{budget}", "admin_listen": "127.0.0.1:0", "watch_config": false}},
            "monitored_urls": [{}]}}"#,
        targets.join(",")
    )
}

/// Many checks of endless bodies at once, with and without a pattern, each allowed 8 MiB:
/// the checker's peak memory stays within the body memory budget (plus a bounded allowance
/// for connection buffers and the allocator) over the same checks of tiny bodies. Every check
/// buffering up to its cap would take 40 × 8 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_in_flight_hold_no_more_body_memory_than_the_budget() {
    const TARGETS: usize = 40;
    const BUDGET: u64 = 8 << 20;
    /// Connection buffers of 40 checks (hyper's read buffer is bounded) and allocator slack.
    const ALLOWANCE: u64 = 24 << 20;
    // Ids whose slots fall in the same 300 ms of every 4 s period, so the checks overlap.
    let period = Duration::from_secs(4);
    let ids: Vec<String> = (0..)
        .map(|i| format!("memory-{i}"))
        .filter(|id| checker::schedule::offset(id, period) < Duration::from_millis(300))
        .take(TARGETS)
        .collect();
    let endless = endless().await;
    let tiny =
        answer("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nneedle").await;

    let baseline = peak_memory_of_one_round(
        &memory_settings(&ids, &format!("http://127.0.0.1:{tiny}/"), "8MiB", "8MiB"),
        &ids,
    )
    .await;
    let peak = peak_memory_of_one_round(
        &memory_settings(
            &ids,
            &format!("http://127.0.0.1:{endless}/"),
            "8MiB",
            "8MiB",
        ),
        &ids,
    )
    .await;
    let over = peak.saturating_sub(baseline);
    eprintln!(
        "peak memory: {} MiB with tiny bodies, {} MiB with endless ones (+{} MiB; budget {} MiB)",
        baseline >> 20,
        peak >> 20,
        over >> 20,
        BUDGET >> 20
    );
    assert!(
        over <= BUDGET + ALLOWANCE,
        "endless bodies took {} MiB over the tiny-body baseline of {} MiB: more than the {} MiB budget + {} MiB",
        over >> 20,
        baseline >> 20,
        BUDGET >> 20,
        ALLOWANCE >> 20
    );
}

/// A check that finds the body memory budget held by another waits for it within its own
/// timeout, and says so when it runs out; without a pattern it needs none of it.
#[tokio::test]
async fn a_check_waits_for_body_memory_within_its_timeout() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A body that trickles for 3 s: the first check holds its reservation all that time.
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
            .await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let keys = |pattern: &str| {
        format!(
            r#""url": "http://127.0.0.1:{port}/", "body_limit": 30, "timeout": "1500ms", "period": 5{pattern}"#
        )
    };
    let (holder, _d1) = target(
        &format!(
            r#""url": "http://127.0.0.1:{port}/", "body_limit": 30, "timeout": 4, "period": 5, "id": "holder", "regexp": "x{{30}}""#
        ),
        &[],
    );
    let (waiter, _d2) = target(&keys(r#", "id": "waiter", "regexp": "x""#), &[]);
    let (counter, _d3) = target(&keys(r#", "id": "counter""#), &[]);
    let checker = Arc::new(Checker::new("test").with_body_memory(30));
    let first = {
        let checker = checker.clone();
        tokio::spawn(async move { checker.check(&holder, Utc::now()).await })
    };
    // Time for the first check to get its headers and the budget (its body lasts 3 s; the
    // others end by 0.8 + 1.5 s).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (waiting, counting) = tokio::join!(
        checker.check(&waiter, Utc::now()),
        checker.check(&counter, Utc::now())
    );
    assert_down(&waiting, FailureClass::Timeout, "no room for the body");
    assert_eq!(waiting.body_bytes, None, "{waiting:?}");
    // The check without a pattern read what came, needing no budget.
    assert_down(&counting, FailureClass::Timeout, "body not complete");
    assert!(
        counting.body_bytes.unwrap_or_default() >= 10,
        "{counting:?}"
    );
    let first = first.await.expect("first check");
    assert_eq!(
        (first.status, first.body_bytes, first.regexp_matched),
        (Status::Up, Some(30), Some(true)),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_response_head_larger_than_the_read_buffer_is_protocol() {
    let port = serve(|mut s| async move {
        read_head(&mut s).await;
        let filler = "a".repeat(2 * checker::probe::READ_BUFFER_MAX);
        let head = format!("HTTP/1.1 200 OK\r\nX-Filler: {filler}\r\nContent-Length: 2\r\n\r\nok");
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let (t, _d) = target(
        &format!(r#""url": "http://127.0.0.1:{port}/", "timeout": 2, "period": 5"#),
        &[],
    );
    assert_down(&check(&t).await, FailureClass::Protocol, "too large");
}
