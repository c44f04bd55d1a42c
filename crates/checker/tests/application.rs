//! The checker as a library: an [`Application`] built with its admin endpoint on port 0 tells
//! the port it got, serves it while the schedule runs, and stops when its shutdown fires.

use std::path::Path;
use std::time::Duration;

use checker::app::{Application, Destination, Error, Options};
use monitor_core::settings::{CheckerSettings, SettingsSource};
use monitor_core::testing::{http_get, ok_site};
use tokio_util::sync::CancellationToken;

/// Options for settings in `dir`/c.toml: one target on `port` every 200 ms, a broker that is
/// not there (reports go to the spool), the admin endpoint on `admin_listen`.
fn options(dir: &Path, port: u16, admin_listen: &str) -> Options {
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[[monitored_urls]]\nurl = \"http://127.0.0.1:{port}/\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n\
             [kafka]\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"reports\"\n\
             [checker]\nadmin_listen = \"{admin_listen}\"\nspool_dir = \"spool\"\n\
             shutdown_timeout = \"1s\"\nwatch_config = false\n"
        ),
    )
    .expect("write");
    Options {
        destination: Destination::Kafka,
        shard: None,
        admin_listen: None,
        source: SettingsSource {
            base_dir: Some(dir.to_path_buf()),
            ..SettingsSource::file_only(file)
        },
    }
}

/// The value of the first sample of `name` in a Prometheus text page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {page}"))
}

#[tokio::test]
async fn an_application_on_port_0_serves_its_admin_endpoint_while_it_runs_and_stops_when_told() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let options = options(dir.path(), port, "127.0.0.1:0");
    let settings = CheckerSettings::load(&options.source, true).expect("valid settings");
    let app = Application::build(settings, options).await.expect("builds");
    let admin = app.admin_addr().expect("bound").port();
    assert_ne!(admin, 0, "the port the system chose");

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = http_get(admin, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let (_, page) = http_get(admin, "/metrics").await;
    assert!(
        sample(&page, "webmon_checker_checks_total{") >= 3.0,
        "{page}"
    );
    assert!(
        sample(&page, "webmon_checker_spooled_reports_total") >= 3.0,
        "every report is written to the spool while the broker is away: {page}"
    );
    assert!(sample(&page, "webmon_checker_spool_bytes") > 0.0, "{page}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops within its shutdown_timeout")
        .expect("runs to its end");
    assert!(
        http_get_refused(admin).await,
        "the admin endpoint is closed once the application stopped"
    );
}

#[tokio::test]
async fn an_address_in_use_fails_the_build_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let options = options(dir.path(), 9, &addr);
    let settings = CheckerSettings::load(&options.source, true).expect("valid settings");
    match Application::build(settings, options).await {
        Err(e @ Error::Admin { .. }) => assert!(e.to_string().contains(&addr), "{e}"),
        other => panic!("expected the admin address to be refused, got {other:?}"),
    }
}

/// Whether nothing accepts connections on `port` any more.
async fn http_get_refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
}
