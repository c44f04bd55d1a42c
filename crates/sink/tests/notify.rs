//! Notifications end to end: crafted reports of three regions through a real broker into a
//! real PostgreSQL, incidents written as outbox rows with the fold, and the dispatcher
//! delivering them to webhook receivers started here on port 0, which record every request
//! and can be told to answer 500 or to sleep past the channel's timeout first. Receivers
//! count every request, so "exactly once" means one request per key.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use monitor_core::Status;
use serde_json::Value;
use sink::notify::channels::webhook::sign;
use sqlx::PgPool;
use tokio::time::Instant;

use support::notify::{
    notifications, outage, outage_with_certificate, start, Fixture, REGIONS, WITHIN,
};
use support::{count, slot_report, Message};

const SECRET: &str = "test-hook-secret";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    signature: String,
    /// The channel's custom header `X-Test`.
    custom: String,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn transitions(&self) -> Vec<String> {
        let body = self.json();
        let events = body["events"].as_array().cloned().unwrap_or_default();
        events
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["target_id"].as_str().unwrap_or(""),
                    e["transition"]["type"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

/// What a receiver does: answer 500 to the first `fail` requests, sleep `sleep` after
/// reading the first `slow` requests, then answer 200.
#[derive(Default)]
struct Behaviour {
    fail: AtomicUsize,
    slow: AtomicUsize,
    sleep: Duration,
    /// Answer 400 to everything.
    refuse: bool,
    got: Mutex<Vec<Received>>,
}

/// A webhook receiver on 127.0.0.1:0.
struct Receiver {
    addr: SocketAddr,
    state: Arc<Behaviour>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let state = Arc::new(behaviour);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().expect("lock").clone()
    }

    /// Waits until `enough` holds of the requests, then returns them.
    async fn wait(&self, what: &str, enough: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let got = self.got();
            if enough(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: got {:#?}",
                got.iter().map(Received::transitions).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn receive(State(s): State<Arc<Behaviour>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    s.got.lock().expect("lock").push(Received {
        key: header("x-webmon-key"),
        signature: header("x-webmon-signature"),
        custom: header("x-test"),
        body,
    });
    if s.slow
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        tokio::time::sleep(s.sleep).await;
    }
    if s.refuse {
        return StatusCode::BAD_REQUEST;
    }
    if s.fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

/// A webhook channel `name` to `receiver`, retrying fast.
fn channel(name: &str, url: &str) -> String {
    format!(
        "[sink.notifications.channels.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\ntimeout = \"500ms\"\nheaders = {{ X-Test = \"yes\" }}\n"
    )
}

/// Reports of `target` for 24 slots from every region, the first region failing from slot 4:
/// a degraded period, no incident.
fn one_region_failing(target: &str) -> Vec<Message> {
    let start = start();
    let mut out = Vec::new();
    for k in 0..24 {
        for (i, region) in REGIONS.iter().enumerate() {
            let down = i == 0 && k >= 4;
            let status = if down { Status::Down } else { Status::Up };
            let mut r = slot_report(target, region, start, k, status);
            r.tls_cert_not_after = None;
            out.push((Some(target.as_bytes().to_vec()), Some(r.to_json())));
        }
    }
    out
}

/// Checks the signature, the custom header, and the body against the schema.
fn check(r: &Received) {
    assert_eq!(r.custom, "yes", "the channel's own headers are sent");
    assert_eq!(
        r.signature,
        format!("sha256={}", sign(SECRET.as_bytes(), &r.body)),
        "signature of {}",
        r.key
    );
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/notification.schema.json"))
            .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let body = r.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?} in {body}");
    assert_eq!(
        body["key"].as_str(),
        Some(r.key.as_str()),
        "X-Webmon-Key is the body's key"
    );
}

/// How many requests carried each key.
fn by_key(got: &[Received]) -> HashMap<String, usize> {
    let mut keys = HashMap::new();
    for r in got {
        *keys.entry(r.key.clone()).or_default() += 1;
    }
    keys
}

/// Settings sending every target to channel `ops` at `hook`, plus `more`.
fn ops(hook: &Receiver, more: &str) -> String {
    notifications(&format!("default_channels = [\"ops\"]\n{more}")) + &channel("ops", &hook.url())
}

async fn pending(pool: &PgPool) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM notifications WHERE status = 'pending'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn an_outage_is_delivered_once_opened_and_once_resolved_signed_and_as_the_schema_says() {
    let hook = Receiver::start(Behaviour::default()).await;
    // A certificate 10 days from expiry on every report: the 14-day threshold, once.
    let mut f = Fixture::new(outage_with_certificate(
        &["shop".into()],
        start(),
        12,
        Some(10),
    ))
    .await;
    let sink = f.start(&ops(&hook, "")).await;
    f.stored().await;
    hook.wait("three messages", |g| g.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.got();
    let transitions: Vec<String> = got.iter().flat_map(Received::transitions).collect();
    assert_eq!(
        transitions,
        ["shop:certificate_expiring", "shop:opened", "shop:resolved"],
        "in order, once each"
    );
    assert_eq!(got[0].json()["events"][0]["transition"]["days"], 14);
    for r in &got {
        check(r);
        assert_eq!(r.json()["events"][0]["link"], "https://status.example/");
    }
    f.notifications("status = 'delivered' AND attempts = 1", 3)
        .await;
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_receiver_answering_500_then_200_gets_the_same_key_twice_and_one_row_has_two_attempts() {
    let hook = Receiver::start(Behaviour {
        fail: AtomicUsize::new(1),
        ..Behaviour::default()
    })
    .await;
    let mut f = Fixture::new(outage(&["shop".into()], 30)).await;
    let sink = f.start(&ops(&hook, "")).await;
    f.stored().await;
    let got = hook.wait("a retry", |g| g.len() >= 2).await;
    assert_eq!(got[0].key, got[1].key, "a retry carries the same key");
    f.notifications("status = 'delivered' AND attempts = 2", 1)
        .await;
    let attempts = count(
        &f.pool,
        "SELECT count(*) FROM notification_attempts WHERE outcome = 'retry' AND http_status = 500",
    )
    .await;
    assert_eq!(attempts, 1, "the 500 is recorded");
    let (_, metrics) = monitor_core::testing::http_get(sink.admin.port(), "/metrics").await;
    assert!(
        metrics.contains("webmon_sink_notifications_total{channel=\"ops\",outcome=\"retry\"} 1"),
        "{metrics}"
    );
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_receiver_that_times_out_after_reading_gets_the_message_again_with_the_same_key() {
    let hook = Receiver::start(Behaviour {
        slow: AtomicUsize::new(1),
        sleep: Duration::from_secs(2),
        ..Behaviour::default()
    })
    .await;
    let mut f = Fixture::new(outage(&["shop".into()], 30)).await;
    let sink = f.start(&ops(&hook, "")).await;
    f.stored().await;
    let got = hook.wait("a second request", |g| g.len() >= 2).await;
    assert_eq!(got[0].key, got[1].key);
    assert_eq!(got[0].body, got[1].body, "the same message");
    f.notifications("status = 'delivered' AND attempts = 2", 1)
        .await;
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn two_replicas_on_one_database_deliver_each_key_exactly_once() {
    let hook = Receiver::start(Behaviour::default()).await;
    let targets: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let mut f = Fixture::new(outage(&targets, 12)).await;
    // group_min above the targets: every event is a message of its own.
    let toml = ops(&hook, "group_min = 100\npoll_interval = \"10ms\"");
    let first = f.start(&toml).await;
    let second = f.start(&toml).await;
    f.stored().await;
    f.notifications("status = 'delivered'", 8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = by_key(&hook.got());
    assert_eq!(keys.len(), 8, "{keys:?}");
    assert!(
        keys.values().all(|n| *n == 1),
        "a key delivered twice: {keys:?}"
    );
    f.end(vec![first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn notifications_stored_by_a_sink_stopped_before_dispatching_are_delivered_after_restart() {
    let hook = Receiver::start(Behaviour::default()).await;
    let mut f = Fixture::new(outage(&["shop".into()], 12)).await;
    let sink = f.start(&ops(&hook, "start_delay = \"1h\"")).await;
    f.stored().await;
    assert_eq!(pending(&f.pool).await, 2, "stored, not delivered");
    sink.stop().await.expect("stops");
    assert!(hook.got().is_empty());

    let sink = f.start(&ops(&hook, "")).await;
    let got = hook.wait("both after the restart", |g| g.len() >= 2).await;
    assert_eq!(by_key(&got).len(), 2);
    f.notifications("status = 'pending'", 0).await;
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_storm_of_200_targets_going_down_is_one_grouped_message_per_channel() {
    let a = Receiver::start(Behaviour::default()).await;
    let b = Receiver::start(Behaviour::default()).await;
    let targets: Vec<String> = (0..200).map(|i| format!("s{i:03}")).collect();
    // Down to the end: only `opened` events.
    let mut f = Fixture::new(outage(&targets, 24)).await;
    let channels = channel("a", &a.url()) + &channel("b", &b.url());
    let both = "default_channels = [\"a\", \"b\"]\n";
    let held = notifications(&format!("{both}start_delay = \"1h\"")) + &channels;
    let sink = f.start(&held).await;
    f.stored().await;
    assert_eq!(pending(&f.pool).await, 400);
    sink.stop().await.expect("stops");
    let sink = f.start(&(notifications(both) + &channels)).await;
    for hook in [&a, &b] {
        let got = hook.wait("a grouped message", |g| !g.is_empty()).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].key.starts_with("group/"), "{}", got[0].key);
        assert_eq!(got[0].transitions().len(), 200);
        check(&got[0]);
    }
    f.notifications("status = 'delivered'", 400).await;
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn routes_send_each_target_to_its_channels_only() {
    let web = Receiver::start(Behaviour::default()).await;
    let dbs = Receiver::start(Behaviour::default()).await;
    let ops = Receiver::start(Behaviour::default()).await;
    let targets: Vec<String> = ["web1", "db1", "other", "quiet"].map(String::from).to_vec();
    let mut f = Fixture::new(outage(&targets, 24)).await;
    let toml = notifications(
        "default_channels = [\"ops\"]\nroutes = [\n { match = { team = \"web\" }, channels = [\"web\"] },\n { match = { team = \"db\" }, channels = [\"db\", \"ops\"] },\n]",
    ) + &channel("web", &web.url())
        + &channel("db", &dbs.url())
        + &channel("ops", &ops.url())
        + "[[monitored_urls]]\nid = \"web1\"\nurl = \"https://web1.example/\"\nname = \"Web one\"\nlabels = { team = \"web\" }\n"
        + "[[monitored_urls]]\nid = \"db1\"\nurl = \"https://db1.example/\"\nlabels = { team = \"db\" }\n"
        + "[[monitored_urls]]\nid = \"quiet\"\nurl = \"https://quiet.example/\"\nnotify = false\n";
    let sink = f.start(&toml).await;
    f.stored().await;
    f.notifications("status = 'delivered'", 4).await;
    let names = |r: &Receiver| {
        let mut t: Vec<String> = r.got().iter().flat_map(Received::transitions).collect();
        t.sort();
        t
    };
    assert_eq!(names(&web), ["web1:opened"]);
    assert_eq!(names(&dbs), ["db1:opened"]);
    assert_eq!(names(&ops), ["db1:opened", "other:opened"]);
    assert_eq!(web.got()[0].json()["events"][0]["target_name"], "Web one");
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn an_incident_still_open_is_reminded_once_per_interval_passed_under_its_own_key() {
    let hook = Receiver::start(Behaviour::default()).await;
    // Down to the end, an hour ago: with reminders every minute, the reminder due now is
    // about the 60th, and only it is written.
    let mut f = Fixture::new(outage(&["shop".into()], 24)).await;
    let toml = ops(
        &hook,
        "reminder = \"1m\"\ngroup_min = 100\npoll_interval = \"10ms\"",
    );
    let first = f.start(&toml).await;
    let second = f.start(&toml).await;
    f.stored().await;
    let got = hook.wait("opened and a reminder", |g| g.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = by_key(&hook.got());
    // (A minute may turn during the test: then the next reminder follows, under its key.)
    assert!(
        keys.values().all(|n| *n == 1),
        "each reminder once, even from two replicas: {keys:?}"
    );
    let reminder = got
        .iter()
        .find(|r| r.key.contains("/reminder-"))
        .expect("a reminder");
    let n = reminder.json()["events"][0]["transition"]["n"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        (59..=61).contains(&n),
        "the reminder number counts the minutes: {n}"
    );
    check(reminder);
    f.end(vec![first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_refused_notification_fails_at_once_and_sink_report_lists_it() {
    let hook = Receiver::start(Behaviour {
        refuse: true,
        ..Behaviour::default()
    })
    .await;
    let mut f = Fixture::new(outage(&["shop".into()], 24)).await;
    let sink = f.start(&ops(&hook, "")).await;
    f.stored().await;
    f.notifications("status = 'failed' AND attempts = 1", 1)
        .await;
    let report = sink::uptime::failed_notifications(&f.pool)
        .await
        .expect("the report reads");
    assert!(report.contains("FAILED NOTIFICATIONS"), "{report}");
    assert!(
        report.contains("ops  1  last error: answered 400"),
        "{report}"
    );
    let (_, metrics) = monitor_core::testing::http_get(sink.admin.port(), "/metrics").await;
    assert!(
        metrics.contains("webmon_sink_notifications_failed_total 1"),
        "{metrics}"
    );
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn degraded_periods_are_notified_only_when_asked_for() {
    let hook = Receiver::start(Behaviour::default()).await;
    let mut messages = one_region_failing("asked");
    let quiet = one_region_failing("quiet");
    messages.extend(quiet);
    let mut f = Fixture::new(messages).await;
    let toml = ops(&hook, "degraded = true")
        + "[[monitored_urls]]\nid = \"quiet\"\nurl = \"https://quiet.example/\"\nnotify = false\n";
    let sink = f.start(&toml).await;
    f.stored().await;
    let got = hook.wait("a degraded period", |g| !g.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let transitions: Vec<String> = hook.got().iter().flat_map(Received::transitions).collect();
    assert_eq!(transitions, ["asked:degraded"]);
    assert_eq!(got[0].json()["events"][0]["state"], "degraded");
    assert_eq!(got[0].json()["events"][0]["regions"][0], "eu-west");
    f.end(vec![sink]).await;
}
