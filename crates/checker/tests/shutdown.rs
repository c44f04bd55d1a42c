//! The `checker` binary at SIGTERM: checks that would outlive their share of
//! `shutdown_timeout` are aborted, so the process exits 0 within the bound whatever its
//! targets do, and what finished before is still delivered.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::{Report, Status};
use monitor_core::testing::{create_topic, kafka_brokers, kafka_client, ok_site};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod support;
use support::{checker_command, partition_records, signal};

/// The shutdown bound the tests give the checker.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// What the process may take beyond it: exiting, flushing stdout, the test's own polling.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);
/// Period of the silent target; its timeout is 30 s, far beyond the shutdown bound.
const SILENT_PERIOD: Duration = Duration::from_secs(60);

/// A server that accepts connections, reads what is sent and never answers. Returns its port
/// and how many connections it accepted.
async fn silent_site() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted)
}

/// A target id whose next slot with `period` is between 0.5 and 2 s from now, so that its
/// check is in flight shortly after the checker starts.
fn id_due_soon(prefix: &str, period: Duration) -> String {
    let now = Utc::now();
    (0..100_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| {
            let wait = checker::schedule::next_slot(id, period, now) - now;
            wait > chrono::TimeDelta::milliseconds(500) && wait < chrono::TimeDelta::seconds(2)
        })
        .expect("some id is due soon")
}

/// `checker` with its log on stderr and no watching of the settings file.
fn checker(config: &Path, args: &[&str]) -> Command {
    let mut c = checker_command(config, args);
    c.env("WEBMON__CHECKER__WATCH_CONFIG", "false")
        .stderr(Stdio::piped());
    c
}

/// Settings with a target answering at once every 200 ms and a silent one whose check lasts
/// until its 30 s timeout.
fn targets(ok_port: u16, silent_port: u16, silent_id: &str) -> String {
    format!(
        "[[monitored_urls]]\nid = \"fast\"\nurl = \"http://127.0.0.1:{ok_port}/\"\nperiod = \"200ms\"\ntimeout = \"150ms\"\n\
         [[monitored_urls]]\nid = \"{silent_id}\"\nurl = \"http://127.0.0.1:{silent_port}/\"\nperiod = \"{}s\"\ntimeout = \"30s\"\n",
        SILENT_PERIOD.as_secs()
    )
}

/// Waits until the silent server has a connection: the check is in flight.
async fn wait_for_silent_check(accepted: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the silent target's check never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the request reach the server and five more fast checks finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Sends SIGTERM, then waits for the exit at most `SHUTDOWN_TIMEOUT + EXIT_MARGIN`; returns
/// the exit code and what the process logged.
async fn terminate(child: &mut Child) -> (Option<i32>, String) {
    signal(child, "TERM");
    let sent = Instant::now();
    let mut stderr = child.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let status = tokio::time::timeout(SHUTDOWN_TIMEOUT + EXIT_MARGIN, child.wait()).await;
    let took = sent.elapsed();
    let Ok(status) = status else {
        let _ = child.kill().await;
        panic!(
            "still running {took:?} after SIGTERM with shutdown_timeout {SHUTDOWN_TIMEOUT:?}: \
             a check in flight holds the shutdown up"
        );
    };
    let log = log.await.unwrap_or_default();
    eprintln!("exited {took:?} after SIGTERM, shutdown_timeout {SHUTDOWN_TIMEOUT:?}");
    (status.expect("exit status").code(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_checks_that_would_outlive_the_shutdown_timeout() {
    let ok_port = ok_site().await;
    let (silent_port, accepted) = silent_site().await;
    let silent_id = id_due_soon("silent", SILENT_PERIOD);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[checker]\nshutdown_timeout = \"{}s\"\n{}",
            SHUTDOWN_TIMEOUT.as_secs(),
            targets(ok_port, silent_port, &silent_id)
        ),
    )
    .expect("write");
    let mut child = checker(&config, &["--stdout"]).spawn().expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let printed = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut reports = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            reports.push(Report::from_json(line.as_bytes()).expect("a report per line"));
        }
        reports
    });
    wait_for_silent_check(&accepted).await;

    let (code, log) = terminate(&mut child).await;
    assert_eq!(code, Some(0), "SIGTERM is a clean exit: {log}");
    let reports = printed.await.expect("stdout read");
    assert!(
        reports.iter().all(|r| r.target_id != silent_id),
        "the aborted check is not reported as if it had finished"
    );
    let fast: Vec<&Report> = reports.iter().filter(|r| r.target_id == "fast").collect();
    assert!(fast.len() >= 3, "the fast target's checks are printed");
    assert!(fast.iter().all(|r| r.status == Status::Up));
    assert!(
        log.contains("aborted=1"),
        "the log counts the aborted check: {log}"
    );
}

/// The slots of `target` in `topic`.
async fn slots_in_topic(topic: &str, target: &str) -> BTreeSet<DateTime<Utc>> {
    let client = kafka_client().await;
    partition_records(&client, topic, 0)
        .await
        .into_iter()
        .map(|r| Report::from_json(r.record.value.as_deref().expect("value")).expect("report"))
        .filter(|report| report.target_id == target)
        .map(|report| report.scheduled_at)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka: run scripts/test.sh"]
async fn sigterm_with_a_check_in_flight_still_delivers_every_finished_report_in_time() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let ok_port = ok_site().await;
    let (silent_port, accepted) = silent_site().await;
    let silent_id = id_due_soon("silent", SILENT_PERIOD);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[checker]\nshutdown_timeout = \"{}s\"\nlinger = \"20ms\"\nspool_dir = \"{}\"\n\
             [kafka]\nbrokers = [\"{}\"]\ntopic = \"{topic}\"\n{}",
            SHUTDOWN_TIMEOUT.as_secs(),
            dir.path().join("spool").display(),
            kafka_brokers().join("\", \""),
            targets(ok_port, silent_port, &silent_id)
        ),
    )
    .expect("write");
    let started = Utc::now();
    let mut child = checker(&config, &[]).spawn().expect("starts");
    wait_for_silent_check(&accepted).await;
    let (code, log) = terminate(&mut child).await;
    assert_eq!(code, Some(0), "SIGTERM is a clean exit: {log}");
    let stopped = Utc::now();
    assert!(log.contains("aborted=1"), "{log}");

    assert!(
        slots_in_topic(&topic, &silent_id).await.is_empty(),
        "the aborted check is not reported"
    );
    let fast = slots_in_topic(&topic, "fast").await;
    let first = *fast.iter().next().expect("reports of the fast target");
    assert!(first >= started - chrono::TimeDelta::milliseconds(200));
    // Every slot from the first until the SIGTERM was checked and delivered: none is lost to
    // the shutdown, though the checker stopped within its bound.
    let last = *fast.iter().next_back().expect("reports");
    assert!(last < stopped);
    let mut t = first;
    while t <= last {
        assert!(fast.contains(&t), "slot {t} of the fast target is missing");
        t += chrono::TimeDelta::milliseconds(200);
    }
    assert!(
        fast.len() >= 3,
        "reports of the fast target: {}",
        fast.len()
    );
}
