//! The sink accepts every report its own checker can produce: reports made by the checker's
//! probe, against servers that answer with arbitrary statuses, bodies, garbage and
//! certificates of arbitrary expiry (up to RFC 5280's 9999-12-31T23:59:59Z "no expiry"), for
//! targets with arbitrary ids, URLs and patterns and checkers with arbitrary ids, all decode
//! and store in a real PostgreSQL.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use checker::probe::Checker;
use chrono::Utc;
use monitor_core::settings::{CheckerSettings, SettingsSource, TargetSettings};
use monitor_core::testing::TestDatabase;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sink::decode::{self, Window};
use sink::store::Batch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the target's server answers.
#[derive(Debug, Clone)]
enum Answer {
    /// An HTTP response with this status and body.
    Http { status: u16, body: Vec<u8> },
    /// These bytes, then the connection closes.
    Garbage(Vec<u8>),
    /// TLS with a self-signed certificate expiring at this time (Unix seconds).
    Tls { not_after: i64 },
}

#[derive(Debug, Clone)]
struct Case {
    checker_id: String,
    target_id: Option<String>,
    path: String,
    pattern: Option<String>,
    answer: Answer,
}

/// 9999-12-31T23:59:59Z, RFC 5280's "no well-defined expiration date".
const NO_EXPIRY: i64 = 253_402_300_799;
/// 1950-01-01T00:00:00Z, the first date X.509's UTCTime can say.
const UTC_TIME_START: i64 = -631_152_000;

fn any_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..=max).prop_map(|c| c.into_iter().collect())
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        (
            200u16..=599,
            proptest::collection::vec(any::<u8>(), 0..2048)
        )
            .prop_map(|(status, body)| Answer::Http { status, body }),
        proptest::collection::vec(any::<u8>(), 1..256).prop_map(Answer::Garbage),
        prop_oneof![
            Just(NO_EXPIRY),
            Just(UTC_TIME_START),
            UTC_TIME_START..=NO_EXPIRY
        ]
        .prop_map(|not_after| Answer::Tls { not_after }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any_text(200),
        proptest::option::of(any_text(60)),
        any_text(80),
        proptest::option::of(any_text(40)),
        answer(),
    )
        .prop_map(|(checker_id, target_id, path, pattern, answer)| Case {
            checker_id,
            target_id,
            path,
            pattern,
            answer,
        })
}

/// A pattern matching `text` literally: ASCII punctuation escaped, everything else as is.
fn literal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_punctuation() || c.is_ascii_whitespace() {
                format!("\\x{{{:X}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The case's target as the checker's settings load it, or `None` when the settings refuse
/// it (then the checker never checks it).
fn target(case: &Case, port: u16) -> Option<TargetSettings> {
    let scheme = match case.answer {
        Answer::Tls { .. } => "https",
        _ => "http",
    };
    let mut entry = serde_json::json!({
        "url": format!("{scheme}://127.0.0.1:{port}/{}", case.path),
        "timeout": 2,
        "period": 60,
    });
    if let Some(id) = &case.target_id {
        entry["id"] = id.clone().into();
    }
    if let Some(p) = &case.pattern {
        entry["regexp"] = literal(p).into();
    }
    let dir = tempfile::tempdir().ok()?;
    let file = dir.path().join("checker.json");
    let json = serde_json::json!({ "monitored_urls": [entry] });
    std::fs::write(&file, json.to_string()).ok()?;
    let settings = CheckerSettings::load(
        &SettingsSource {
            base_dir: Some(dir.path().to_path_buf()),
            ..SettingsSource::file_only(file)
        },
        false,
    )
    .ok()?;
    settings.targets.into_iter().next()
}

/// Serves `answer` to every connection; returns the port.
async fn serve(answer: Answer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = match &answer {
        Answer::Tls { not_after } => Some(acceptor(*not_after)),
        _ => None,
    };
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match (answer, tls) {
                    (_, Some(acceptor)) => {
                        if let Ok(mut s) = acceptor.accept(stream).await {
                            let mut buf = [0u8; 4096];
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                        }
                    }
                    (Answer::Http { status, body }, None) => {
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf).await;
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body).await;
                    }
                    (Answer::Garbage(bytes), None) => {
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf).await;
                        let _ = stream.write_all(&bytes).await;
                    }
                    (Answer::Tls { .. }, None) => {}
                }
            });
        }
    });
    port
}

/// A TLS acceptor with a self-signed certificate for 127.0.0.1 expiring at `not_after`.
fn acceptor(not_after: i64) -> tokio_rustls::TlsAcceptor {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(1950, 1, 1);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let offset = Duration::from_secs(not_after.unsigned_abs());
    params.not_after = if not_after < 0 {
        epoch - offset
    } else {
        epoch + offset
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = monitor_core::testing::tls_server_config(chain, key);
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn every_report_the_checker_can_produce_decodes_and_stores() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create().await;
    let (pool, store) = support::migrated_store(&db).await;
    let handle = tokio::runtime::Handle::current();
    // The stored offset so far: each case is one message, stored in a batch of its own.
    let stored: Mutex<Option<i64>> = Mutex::new(None);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let port = serve(case.answer.clone()).await;
                let Some(target) = target(&case, port) else {
                    return Ok(());
                };
                let checker = Checker::new(case.checker_id.clone());
                let report = checker.check(&target, Utc::now()).await;
                let expected = *stored.lock().unwrap_or_else(|p| p.into_inner());
                let offset = expected.unwrap_or(0);
                let mut batch = Batch::new("checker-reports", 0, expected, offset);
                decode::push(
                    &mut batch,
                    &Window::default(),
                    offset,
                    None,
                    Some(report.to_json()),
                );
                let refused: Vec<String> =
                    batch.dead_letters.iter().map(|d| d.error.clone()).collect();
                prop_assert!(
                    refused.is_empty(),
                    "dead-lettered: {refused:?} for {report:?}"
                );
                let done = store
                    .store(&batch)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e} for {report:?}")))?;
                prop_assert_eq!(done.rows, 1, "not stored: {:?}", report);
                *stored.lock().unwrap_or_else(|p| p.into_inner()) = Some(offset + 1);
                Ok(())
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (rows, certs, no_expiry, downs): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*)::int8, count(tls_cert_not_after)::int8, \
           count(*) FILTER (WHERE tls_cert_not_after = '9999-12-31T23:59:59Z')::int8, \
           count(*) FILTER (WHERE status = 'down')::int8 FROM results",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    eprintln!("{rows} reports stored: {certs} with a certificate date, {no_expiry} without expiry, {downs} down");
    assert!(
        rows >= 48,
        "most cases are targets the settings accept: {rows} of 64"
    );
    assert!(
        certs > 0 && downs > 0,
        "the cases cover certificates and failures"
    );
    pool.close().await;
    db.drop_database().await;
}
