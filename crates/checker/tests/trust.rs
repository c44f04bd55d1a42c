//! The `checker` binary and TLS: a target whose certificate comes from a CA in the system's
//! trust store is up without a `ca_file` (the store pointed at a CA made here with
//! `SSL_CERT_FILE`, as an operator points it at a company's bundle), and each HTTPS target's
//! certificate expiry is a gauge on `/metrics` that a reload removing the target takes away.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::TimeZone;
use monitor_core::report::{FailureClass, Report, Status};
use monitor_core::testing::{http_get, ok_site};

mod support;
use support::{admin_port, ca, checker_command as checker, https_site, leaf_until, signal};

/// The gauge of a target's certificate expiry.
const EXPIRY: &str = "webmon_checker_certificate_expiry_timestamp_seconds";

/// The reports of `checker --once` with `config`, and its exit code; `system_bundle` is the
/// system's trust store it sees (`SSL_CERT_FILE`), or the machine's own when `None`.
async fn once(config: &Path, system_bundle: Option<&Path>) -> (Vec<Report>, Option<i32>, String) {
    let mut command = checker(config, &["--once"]);
    command
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    if let Some(bundle) = system_bundle {
        command.env("SSL_CERT_FILE", bundle);
    }
    let out = command.output().await.expect("runs");
    let reports = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Report::from_json(l.as_bytes()).expect("a report per line"))
        .collect();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (reports, out.status.code(), log)
}

#[tokio::test]
async fn a_certificate_from_a_ca_in_the_system_store_is_up_without_a_ca_file() {
    let company = ca();
    let port = https_site(leaf_until(Some(&company), &["127.0.0.1"], 2090)).await;
    let dir = tempfile::tempdir().expect("dir");
    let bundle = dir.path().join("system-bundle.pem");
    std::fs::write(&bundle, &company.pem).expect("write");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[[monitored_urls]]\nid = \"intranet\"\nurl = \"https://127.0.0.1:{port}/\"\ntimeout = 3\n"),
    )
    .expect("write");

    let (reports, code, log) = once(&config, Some(&bundle)).await;
    assert_eq!(reports.len(), 1, "{log}");
    assert_eq!(reports[0].status, Status::Up, "{:?}", reports[0]);
    assert_eq!(code, Some(0));
    let loaded = log
        .lines()
        .find(|l| l.contains("TLS trust roots loaded"))
        .unwrap_or_else(|| panic!("which trust roots are used is logged: {log}"));
    assert!(
        loaded.contains("system") && loaded.contains("roots=1"),
        "{loaded}"
    );
    assert_eq!(log.matches("TLS trust roots loaded").count(), 1, "{log}");

    // The machine's own store does not hold the CA made here.
    let (reports, code, _) = once(&config, None).await;
    assert_eq!(code, Some(1));
    let r = &reports[0];
    assert_eq!(r.status, Status::Down);
    assert_eq!(r.failure_class, Some(FailureClass::Tls), "{r:?}");
    let error = r.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("unknown authority") && error.contains("system's trust store"),
        "{error}"
    );
}

/// The `EXPIRY` lines of the endpoint's metrics, waiting up to 10 s for `until` to hold.
async fn expiry_lines(admin: u16, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_get(admin, "/metrics").await;
        let lines: Vec<String> = metrics
            .lines()
            .filter(|l| l.starts_with(EXPIRY))
            .map(str::to_string)
            .collect();
        if until(&lines) || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn targets(https_port: Option<u16>, http_port: u16) -> String {
    let mut text = format!(
        "[[monitored_urls]]\nid = \"plain\"\nurl = \"http://127.0.0.1:{http_port}/\"\nperiod = \"300ms\"\ntimeout = \"200ms\"\n"
    );
    if let Some(port) = https_port {
        text += &format!(
            "[[monitored_urls]]\nid = \"secure\"\nurl = \"https://127.0.0.1:{port}/\"\nca_file = \"ca.pem\"\nperiod = \"1s\"\ntimeout = \"900ms\"\n"
        );
    }
    text
}

#[tokio::test]
async fn each_https_target_exports_its_certificate_expiry_until_a_reload_removes_it() {
    let pki = ca();
    let https_port = https_site(leaf_until(Some(&pki), &["127.0.0.1"], 2090)).await;
    let http_port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), &pki.pem).expect("write");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, targets(Some(https_port), http_port)).expect("write");
    let mut child = checker(&config, &["--stdout", "--admin-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn,monitor_core::runtime::admin=info")
        .env("WEBMON__CHECKER__WATCH_CONFIG", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let admin = admin_port(&mut child).await;

    let not_after = chrono::Utc
        .with_ymd_and_hms(2090, 6, 1, 0, 0, 0)
        .single()
        .expect("a date")
        .timestamp();
    let lines = expiry_lines(admin, |l| !l.is_empty()).await;
    assert_eq!(
        lines,
        vec![format!("{EXPIRY}{{target=\"secure\"}} {not_after}")],
        "one series, for the HTTPS target only"
    );

    std::fs::write(&config, targets(None, http_port)).expect("write");
    signal(&child, "HUP");
    let lines = expiry_lines(admin, |l| l.is_empty()).await;
    assert!(
        lines.is_empty(),
        "the removed target's series is gone: {lines:?}"
    );
    // Checks keep running; none brings the series back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(expiry_lines(admin, |_| true).await.is_empty());
    signal(&child, "TERM");
    assert_eq!(child.wait().await.expect("exits").code(), Some(0));
}
