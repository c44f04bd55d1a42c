//! The `checker` binary: `--once`, `--stdout` with reload and shutdown, and producing to a
//! broker whose link is cut, with the checker killed in the middle of the outage.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::{Report, Status};
use monitor_core::testing::{http_get, ok_site, OwnBroker, Proxy};
use rskafka::client::ClientBuilder;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Child;

mod support;
use support::{admin_port, checker_command as checker, partition_records, signal};

/// The reports a `--stdout` checker prints, by target: each one's slot and when it was read.
struct Printed {
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: BTreeMap<String, Vec<(DateTime<Utc>, tokio::time::Instant)>>,
}

impl Printed {
    fn of(child: &mut Child) -> Printed {
        Printed {
            lines: BufReader::new(child.stdout.take().expect("stdout")).lines(),
            seen: BTreeMap::new(),
        }
    }

    /// Reads what is printed for `d`, or until the output ends.
    async fn read_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout_at(deadline, self.lines.next_line()).await
        {
            let r = Report::from_json(line.as_bytes()).expect("a report per line");
            self.seen
                .entry(r.target_id.clone())
                .or_default()
                .push((r.scheduled_at, tokio::time::Instant::now()));
        }
    }

    fn slots(&self, target: &str) -> Vec<DateTime<Utc>> {
        self.seen
            .get(target)
            .map(|v| v.iter().map(|(slot, _)| *slot).collect())
            .unwrap_or_default()
    }

    fn first_read(&self, target: &str) -> Option<tokio::time::Instant> {
        self.seen
            .get(target)
            .and_then(|v| v.first())
            .map(|(_, at)| *at)
    }
}

#[tokio::test]
async fn once_prints_a_report_per_target_and_exits_0_only_if_all_are_up() {
    let port = ok_site().await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "monitored_urls = [\"http://127.0.0.1:{port}/a\", \"http://127.0.0.1:{port}/b\"]\n"
        ),
    )
    .expect("write");
    let out = checker(&good, &["--once"]).output().await.expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let reports: Vec<Report> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Report::from_json(l.as_bytes()).expect("a report per line"))
        .collect();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.status == Status::Up));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("monitored_urls = [\"http://127.0.0.1:{port}/a\", {{ url = \"http://127.0.0.1:{closed}/\", timeout = 1, period = 5 }}]\n"),
    )
    .expect("write");
    let out = checker(&bad, &["--once"]).output().await.expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.contains("\"failure_class\":\"connect_refused\""),
        "{text}"
    );
}

#[tokio::test]
async fn stdout_mode_reloads_on_sighup_keeps_the_old_settings_when_invalid_and_stops_on_sigterm() {
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    let one = format!("[[monitored_urls]]\nid = \"first\"\nurl = \"http://127.0.0.1:{port}/1\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n");
    std::fs::write(&config, &one).expect("write");
    let mut child = checker(&config, &["--stdout"])
        .env("WEBMON__CHECKER__WATCH_CONFIG", "false")
        .spawn()
        .expect("starts");
    let mut out = Printed::of(&mut child);
    out.read_for(Duration::from_millis(1200)).await;

    let two = format!("{one}[[monitored_urls]]\nid = \"second\"\nurl = \"http://127.0.0.1:{port}/2\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n");
    std::fs::write(&config, &two).expect("write");
    signal(&child, "HUP");
    out.read_for(Duration::from_millis(1200)).await;
    std::fs::write(&config, "monitored_urls = [{ url = \"ftp://nope\" }]\n").expect("write");
    signal(&child, "HUP");
    out.read_for(Duration::from_millis(1000)).await;
    signal(&child, "TERM");
    out.read_for(Duration::from_secs(5)).await;
    let status = child.wait().await.expect("exits");
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");

    let first = out.slots("first");
    let second = out.slots("second");
    assert!(first.len() >= 15, "first ran all along: {}", first.len());
    assert!(
        second.len() >= 8,
        "second was added by the reload and kept after the invalid one: {}",
        second.len()
    );
    for slots in [&first, &second] {
        let set: BTreeSet<_> = slots.iter().collect();
        assert_eq!(set.len(), slots.len(), "no slot reported twice");
        let v: Vec<_> = set.into_iter().collect();
        for pair in v.windows(2) {
            assert_eq!(
                *pair[1] - *pair[0],
                chrono::TimeDelta::milliseconds(200),
                "fixed rate, no gap: {v:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_changed_settings_file_is_reloaded_without_a_signal() {
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    let target = |id: &str| {
        format!("[[monitored_urls]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:{port}/{id}\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n")
    };
    let head = "[checker]\nwatch_config = \"200ms\"\n";
    std::fs::write(&config, format!("{head}{}", target("first"))).expect("write");
    let mut child = checker(&config, &["--stdout"]).spawn().expect("starts");
    let mut out = Printed::of(&mut child);
    out.read_for(Duration::from_millis(1000)).await;

    // Replaced the way editors and ConfigMaps do: a new file renamed over the old one.
    let written = tokio::time::Instant::now();
    let next = dir.path().join("c.toml.new");
    std::fs::write(
        &next,
        format!("{head}{}{}", target("first"), target("second")),
    )
    .expect("write");
    std::fs::rename(&next, &config).expect("rename");
    out.read_for(Duration::from_millis(1500)).await;
    // An invalid file is not applied: the running targets go on.
    std::fs::write(&config, "monitored_urls = [{ url = \"ftp://nope\" }]\n").expect("write");
    out.read_for(Duration::from_millis(1000)).await;
    signal(&child, "TERM");
    out.read_for(Duration::from_secs(5)).await;
    let status = child.wait().await.expect("exits");
    assert_eq!(status.code(), Some(0));

    let first = out.slots("first");
    let second = out.slots("second");
    assert!(first.len() >= 15, "first ran all along: {}", first.len());
    let arrived = out
        .first_read("second")
        .expect("second was added by the change");
    assert!(
        arrived.duration_since(written) < Duration::from_millis(800),
        "the change took effect within a watch interval and a period: {:?}",
        arrived.duration_since(written)
    );
    assert!(
        second.len() >= 8,
        "second stayed after the invalid change: {}",
        second.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn reports_survive_a_cut_broker_link_and_a_sigkill_during_the_outage() {
    let port = ok_site().await;
    let (proxy, listener) = Proxy::bind().await;
    let broker = OwnBroker::start(Some(proxy.port)).await;
    proxy.forward_to(listener, broker.port);
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    // A round includes connecting (metadata, a client per partition), which on a busy machine
    // can take over a second: the produce timeout leaves room for it. What a slow connect does
    // to delivery is another test's business; this one is about kills and the spool.
    std::fs::write(
        &config,
        format!(
            "[checker]\nid = \"cli-test\"\nspool_dir = \"{}\"\nlinger = \"20ms\"\nproduce_timeout = \"2s\"\n\
             [kafka]\nbrokers = [\"127.0.0.1:{}\"]\ntopic = \"reports\"\npartitions = 2\n\
             [[monitored_urls]]\nid = \"a\"\nurl = \"http://127.0.0.1:{port}/a\"\nperiod = \"100ms\"\ntimeout = \"80ms\"\n\
             [[monitored_urls]]\nid = \"b\"\nurl = \"http://127.0.0.1:{port}/b\"\nperiod = \"100ms\"\ntimeout = \"80ms\"\n",
            dir.path().join("spool").display(),
            proxy.port
        ),
    )
    .expect("write");

    let mut first = checker(&config, &[]).spawn().expect("starts");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Killed in the middle of the outage: every report it made is in the spool's file.
    let killed_at = Utc::now();
    first.kill().await.expect("SIGKILL");
    // Down for a second: those slots are reported `missed` by the next start.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let restarted_at = Utc::now();
    let mut second = checker(&config, &[]).spawn().expect("restarts");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopping_at = Utc::now();
    signal(&second, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), second.wait())
        .await
        .expect("stops in time")
        .expect("exits");
    assert_eq!(status.code(), Some(0));

    let topic = read_topic(proxy.port, 2).await;
    let period = chrono::TimeDelta::milliseconds(100);
    for id in ["a", "b"] {
        let s = topic.get(id).cloned().unwrap_or_default();
        let first_slot = *s.keys().next().expect("reports of the first run");
        // Every slot from the first report to the stop is in the topic, checked or `missed`:
        // those of the first run up to the kill (its last second included), those of the
        // downtime (backfilled), those of the second run. The one assumption: the schedule
        // starts a due slot within a second, so the slots of the last second before SIGTERM
        // may not have started when it stopped (the next start would report them missed).
        let mut t = first_slot;
        while t < stopping_at - chrono::TimeDelta::seconds(1) {
            assert!(
                s.contains_key(&t),
                "{id}: slot {t} is missing (killed at {killed_at}, restarted at {restarted_at})"
            );
            t += period;
        }
        let downtime: Vec<_> = s
            .range(killed_at + chrono::TimeDelta::milliseconds(200)..restarted_at)
            .collect();
        assert!(
            downtime.len() >= 5,
            "{id}: slots of the downtime: {downtime:?}"
        );
        assert!(
            downtime
                .iter()
                .all(|(_, statuses)| statuses.contains(&Status::Missed)),
            "{id}: the downtime is reported missed: {downtime:?}"
        );
    }
    drop(broker);
}

/// Every report in the topic's `partitions`: the statuses of each target's slots.
async fn read_topic(
    port: u16,
    partitions: i32,
) -> BTreeMap<String, BTreeMap<DateTime<Utc>, Vec<Status>>> {
    let client = ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
        .build()
        .await
        .expect("client");
    let mut slots: BTreeMap<String, BTreeMap<DateTime<Utc>, Vec<Status>>> = BTreeMap::new();
    for p in 0..partitions {
        for r in partition_records(&client, "reports", p).await {
            let report =
                Report::from_json(r.record.value.as_deref().expect("value")).expect("report");
            assert_eq!(Some(report.target_id.as_bytes()), r.record.key.as_deref());
            slots
                .entry(report.target_id)
                .or_default()
                .entry(report.scheduled_at)
                .or_default()
                .push(report.status);
        }
    }
    slots
}

#[tokio::test]
async fn the_admin_endpoint_serves_health_and_metrics_while_reports_are_printed() {
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[[monitored_urls]]\nurl = \"http://127.0.0.1:{port}/\"\nperiod = \"200ms\"\ntimeout = \"100ms\"\n"),
    )
    .expect("write");
    let mut child = checker(&config, &["--stdout", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn,monitor_core::runtime::admin=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let admin = admin_port(&mut child).await;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..5 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("a report within 5 s")
            .expect("read")
            .expect("a line");
        Report::from_json(line.as_bytes()).expect("a report");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = http_get(admin, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    assert!(http_get(admin, "/readyz").await.0.contains("200"));
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let up = metrics
        .lines()
        .find(|l| l.starts_with("webmon_checker_checks_total{") && l.contains("status=\"up\""))
        .unwrap_or_else(|| panic!("no checks counter in {metrics}"));
    let count: f64 = up
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 5.0, "{up}");
    for name in [
        "webmon_checker_check_duration_seconds_bucket",
        "webmon_checker_schedule_lateness_seconds_count",
        "webmon_checker_checks_in_flight",
        "webmon_checker_queue_depth",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
    assert!(http_get(admin, "/nope").await.0.contains("404"));
    signal(&child, "TERM");
    assert_eq!(child.wait().await.expect("exits").code(), Some(0));
}

#[tokio::test]
async fn logs_can_be_json_lines_appended_to_a_file() {
    let port = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("monitored_urls = [\"http://127.0.0.1:{port}/\"]\n"),
    )
    .expect("write");
    let log = dir.path().join("logs").join("monitor.log");
    let mut child = checker(&config, &["--stdout", "--log-format", "json", "--log-file"])
        .arg(&log)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("starts");
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(&child, "TERM");
    assert_eq!(child.wait().await.expect("exits").code(), Some(0));
    let text = std::fs::read_to_string(&log).expect("the log file exists");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "checker starting"),
        "{text}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string()));
}
