//! The sink against a real broker and a real PostgreSQL: exactly-once storage, dead letters,
//! restarts, SIGKILL, several replicas, and connections killed under it.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use monitor_core::report::report_id;
use monitor_core::testing::{
    create_topic, http_get, kafka_client, sample_report as report, OwnBroker, Proxy, TestDatabase,
};
use rskafka::client::Client;
use sink::decode::{self, Window};
use sqlx::Row;

use support::{
    assert_exactly_once, count, migrated_store, pool, produce, produce_reports, sample, settings,
    settings_from, wait_for_offsets, wait_for_owners, RunningSink, SinkProcess,
};

/// How long the partitions' leases may take to settle.
const OWNERS_WITHIN: Duration = Duration::from_secs(30);

fn env(topic: &str, db: &TestDatabase) -> HashMap<String, String> {
    support::env(topic, &db.url)
}

fn spawn_sink_process(topic: &str, db: &TestDatabase) -> SinkProcess {
    SinkProcess::start(env(topic, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn valid_duplicate_and_malformed_messages_are_stored_once_each() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 3).await;
    let db = TestDatabase::create().await;

    produce_reports(&client, &topic, 3, 0, 100).await;
    // The same reports again, as a producer retry would send them.
    produce_reports(&client, &topic, 3, 0, 10).await;
    let oversize = format!(
        "{{\"schema_version\":1,\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let mut nul = serde_json::to_value(report("t0", 5000)).expect("json");
    nul["error"] = "bad\u{0}byte".into();
    nul["status"] = "down".into();
    nul["failure_class"] = "io".into();
    let mut wrong_type = serde_json::to_value(report("t0", 5001)).expect("json");
    wrong_type["http_status"] = "two hundred".into();
    let mut missing = serde_json::to_value(report("t0", 5002)).expect("json");
    missing
        .as_object_mut()
        .expect("object")
        .remove("timings_ms");
    let mut extra = serde_json::to_value(report("t0", 5003)).expect("json");
    extra["a_future_key"] = serde_json::json!({"nested": true});
    let malformed: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"{\"schema_version\": 2}".to_vec(),
        oversize.into_bytes(),
        serde_json::to_vec(&wrong_type).expect("json"),
        serde_json::to_vec(&missing).expect("json"),
    ];
    produce(&client, &topic, 0, "t0", malformed).await;
    // Unknown keys in a valid report are ignored, and a NUL in a text is stored as U+FFFD:
    // both stored.
    produce(
        &client,
        &topic,
        0,
        "t0",
        vec![
            serde_json::to_vec(&extra).expect("json"),
            serde_json::to_vec(&nul).expect("json"),
        ],
    )
    .await;

    let sink = RunningSink::start(settings(&topic, &db)).await;
    let pool = pool(&db).await;
    let messages = 3 * 100 + 3 * 10 + 6 + 2;
    wait_for_offsets(&pool, &topic, messages, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 302).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 6);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM results WHERE error = 'bad\u{FFFD}byte'"
        )
        .await,
        1,
        "a NUL is stored as U+FFFD"
    );
    let errors: Vec<String> = sqlx::query("SELECT error FROM dead_letters ORDER BY kafka_offset")
        .fetch_all(&pool)
        .await
        .expect("dead letters")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (error, expected) in errors.iter().zip([
        "not JSON",
        "not a JSON object",
        "unsupported schema_version 2",
        "larger than the 65536-byte limit",
        "invalid report: invalid type",
        "invalid report: missing field `timings_ms`",
    ]) {
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
    let raw: Vec<u8> =
        sqlx::query("SELECT payload FROM dead_letters ORDER BY kafka_offset LIMIT 1")
            .fetch_one(&pool)
            .await
            .expect("row")
            .get(0);
    assert_eq!(raw, b"not json at all", "dead letters keep the raw bytes");

    // The original service's view.
    let row = sqlx::query(
        "SELECT url, is_fine, transport, response_code, response_time, regexp, regexp_found, timeout, period \
         FROM web_monitoring WHERE url = 'https://t1.example/' ORDER BY event_date LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("view row");
    assert!(!row.get::<bool, _>("is_fine"), "report 0 is down");
    assert_eq!(row.get::<String, _>("transport"), "connected");
    assert_eq!(row.get::<i16, _>("response_code"), 503);
    assert!((row.get::<f32, _>("response_time") - 0.012).abs() < 1e-6);
    assert_eq!(row.get::<f32, _>("period"), 60.0);

    // Stop, produce more, start again: it resumes from the stored offsets.
    sink.stop().await.expect("sink stops cleanly");
    produce_reports(&client, &topic, 3, 100, 20).await;
    let sink = RunningSink::start(settings(&topic, &db)).await;
    wait_for_offsets(&pool, &topic, messages + 60, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 362).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 6);
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_sink_killed_mid_stream_resumes_without_loss_or_duplicates() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 2).await;
    let db = TestDatabase::create().await;
    // A backlog of 20,000 reports: many batches of 500.
    produce_reports(&client, &topic, 2, 0, 10_000).await;
    let mut produced = 20_000;
    let mut sink = spawn_sink_process(&topic, &db);
    let pool = pool(&db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stored_at_kill = loop {
        let stored = count(&pool, "SELECT count(*) FROM results").await;
        if stored > 0 {
            sink.kill().expect("SIGKILL");
            sink.wait().expect("reaped");
            break count(&pool, "SELECT count(*) FROM results").await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        stored_at_kill < produced,
        "the sink must be killed while it has work left (stored {stored_at_kill})"
    );
    // More arrive while it is down.
    produce_reports(&client, &topic, 2, 10_000, 1_000).await;
    produced += 2_000;
    let mut sink = spawn_sink_process(&topic, &db);
    wait_for_offsets(&pool, &topic, produced, Duration::from_secs(120)).await;
    assert_exactly_once(&pool, produced).await;
    sink.kill().expect("kill");
    let _ = sink.wait();
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn two_sinks_split_the_partitions_and_a_survivor_takes_over() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 4).await;
    let db = TestDatabase::create().await;
    let mut first = spawn_sink_process(&topic, &db);
    let pool = pool(&db).await;
    // One membership lock plus four partitions.
    wait_for_owners(&pool, &[5], OWNERS_WITHIN).await;
    let mut second = spawn_sink_process(&topic, &db);
    wait_for_owners(&pool, &[3, 3], OWNERS_WITHIN).await;

    produce_reports(&client, &topic, 4, 0, 200).await;
    wait_for_offsets(&pool, &topic, 800, Duration::from_secs(60)).await;
    let by_partition: Vec<i64> = sqlx::query(
        "SELECT count(*) FROM results GROUP BY kafka_partition ORDER BY kafka_partition",
    )
    .fetch_all(&pool)
    .await
    .expect("rows")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(by_partition, [200, 200, 200, 200]);

    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    wait_for_owners(&pool, &[5], OWNERS_WITHIN).await;
    produce_reports(&client, &topic, 4, 200, 100).await;
    wait_for_offsets(&pool, &topic, 1200, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 1200).await;
    second.kill().expect("kill");
    let _ = second.wait();
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn connections_terminated_mid_stream_lose_nothing() {
    let client: Arc<Client> = kafka_client().await;
    let topic = create_topic(&client, 2).await;
    let db = TestDatabase::create().await;
    let sink = RunningSink::start(settings(&topic, &db)).await;
    let pool = pool(&db).await;
    let kill = format!(
        "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name LIKE 'web-monitor-sink%' AND pid <> pg_backend_pid()",
        db.name
    );
    let mut terminated = 0;
    for round in 0..8 {
        produce_reports(&client, &topic, 2, round * 250, 250).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        terminated += count(&pool, &kill).await;
    }
    assert!(
        terminated > 0,
        "the test must kill some of the sink's connections"
    );
    wait_for_offsets(&pool, &topic, 4000, Duration::from_secs(120)).await;
    assert_exactly_once(&pool, 4000).await;
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sigterm_stores_what_is_fetched_releases_the_partitions_and_exits_0() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 2).await;
    let db = TestDatabase::create().await;
    produce_reports(&client, &topic, 2, 0, 300).await;
    let mut sink = spawn_sink_process(&topic, &db);
    let pool = pool(&db).await;
    wait_for_offsets(&pool, &topic, 600, Duration::from_secs(60)).await;
    wait_for_owners(&pool, &[3], OWNERS_WITHIN).await;
    let pid = i32::try_from(sink.0.id()).expect("pid");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || sink.wait())
        .await
        .expect("joined")
        .expect("exit status");
    assert_eq!(exit.code(), Some(0), "a SIGTERM is a clean exit");
    assert_eq!(
        support::owners(&pool).await,
        Vec::<i64>::new(),
        "no lease is left behind"
    );
    assert_exactly_once(&pool, 600).await;
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn retention_drops_whole_day_partitions_past_the_cutoff() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    let mut batch = sink::store::Batch::new("retention", 0, None, 0);
    // Ten days of reports, one a day, ending today.
    for day in 0..10i64 {
        let mut r = report("old", 0);
        r.scheduled_at = Utc::now() - chrono::Duration::days(9 - day);
        r.started_at = r.scheduled_at;
        r.report_id = report_id("test", "old", r.scheduled_at);
        decode::push(&mut batch, &Window::default(), day, None, Some(r.to_json()));
    }
    let stored = store.store(&batch).await.expect("stored");
    assert_eq!(stored.rows, 10);
    let dropped = store
        .drop_partitions_before(Utc::now() - chrono::Duration::days(3))
        .await
        .expect("dropped");
    assert_eq!(
        dropped.len(),
        6,
        "days 9 to 4 ago end before the cutoff: {dropped:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 4);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn outages_of_postgresql_and_of_the_broker_are_waited_out_without_loss() {
    // The sink reaches both services through proxies whose links the test cuts.
    let (kafka_proxy, kafka_listener) = Proxy::bind().await;
    let broker = OwnBroker::start(Some(kafka_proxy.port)).await;
    kafka_proxy.forward_to(kafka_listener, broker.port);
    let brokers = format!("127.0.0.1:{}", kafka_proxy.port);
    let client = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{}", broker.port)])
        .build()
        .await
        .expect("client");
    let topic = create_topic(&client, 2).await;

    let db = TestDatabase::create().await;
    let (pg_proxy, pg_listener) = Proxy::bind().await;
    let pg_url = url::Url::parse(&db.url).expect("url");
    pg_proxy.forward_to(pg_listener, pg_url.port().unwrap_or(5432));
    let mut proxied = pg_url.clone();
    proxied.set_port(Some(pg_proxy.port)).expect("port");

    let mut env = env(&topic, &db);
    env.insert("WEBMON__KAFKA__BROKERS".into(), brokers);
    env.insert("WEBMON__DATABASE__URL".into(), proxied.to_string());
    let sink = RunningSink::start(settings_from(env)).await;
    let pool = pool(&db).await;

    produce_reports(&client, &topic, 2, 0, 200).await;
    wait_for_offsets(&pool, &topic, 400, Duration::from_secs(60)).await;

    // PostgreSQL goes away while reports keep arriving.
    pg_proxy.cut();
    produce_reports(&client, &topic, 2, 200, 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM results").await,
        400,
        "nothing stored while the database is away"
    );
    pg_proxy.restore();
    wait_for_offsets(&pool, &topic, 800, Duration::from_secs(60)).await;

    // Then the broker (the producer of this test reaches it through the same proxy, so the
    // reports are produced once the link is back; the sink meanwhile fails its fetches).
    kafka_proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka_proxy.restore();
    produce_reports(&client, &topic, 2, 400, 200).await;
    wait_for_offsets(&pool, &topic, 1200, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 1200).await;

    sink.stop().await.expect("the sink survives both outages");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn the_admin_endpoint_reports_rows_dead_letters_lag_and_readiness() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 2).await;
    let db = TestDatabase::create().await;
    produce_reports(&client, &topic, 2, 0, 100).await;
    produce(&client, &topic, 0, "t0", vec![b"garbage".to_vec()]).await;
    // Port 0 in the settings: the endpoint listens where the application says.
    let sink = RunningSink::start(settings(&topic, &db)).await;
    let admin = sink.admin.port();
    let pool = pool(&db).await;
    wait_for_offsets(&pool, &topic, 201, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(http_get(admin, "/healthz").await.0.contains("200"));
    assert!(http_get(admin, "/readyz").await.0.contains("200"));
    let (_, metrics) = http_get(admin, "/metrics").await;
    let value = |name: &str| -> f64 {
        sample(&metrics, name).unwrap_or_else(|| panic!("{name} missing from {metrics}"))
    };
    assert_eq!(value("webmon_sink_rows_stored_total"), 200.0);
    assert_eq!(value("webmon_sink_dead_letters_total"), 1.0);
    assert_eq!(value("webmon_sink_owned_partitions"), 2.0);
    assert_eq!(value("webmon_sink_partition_lag{partition=\"0\"}"), 0.0);
    assert!(metrics.contains("webmon_sink_batch_seconds_bucket"));
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sink_report_summarizes_uptime_latency_and_failures_per_target() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    let mut batch = sink::store::Batch::new("report", 0, None, 0);
    let window = Window::default();
    let now = Utc::now();
    let mut offset = 0;
    for (target, n, down_every) in [("alpha", 10i64, 5i64), ("bravo", 4, 0)] {
        for i in 0..n {
            let mut r = report(target, 0);
            r.scheduled_at =
                monitor_core::report::to_micros(now - chrono::Duration::minutes(10 * (i + 1)));
            r.started_at = r.scheduled_at;
            r.report_id = report_id("test", target, r.scheduled_at);
            r.response_time_ms = Some(10.0 * (i + 1) as f64);
            let down = down_every > 0 && i % down_every == 0;
            r.status = if down {
                monitor_core::Status::Down
            } else {
                monitor_core::Status::Up
            };
            r.failure_class = down.then_some(if i == 0 {
                monitor_core::FailureClass::Timeout
            } else {
                monitor_core::FailureClass::HttpStatus
            });
            r.error = down.then(|| format!("failure {i}"));
            decode::push(&mut batch, &window, offset, None, Some(r.to_json()));
            offset += 1;
        }
    }
    // An old result outside the window.
    let mut old = report("alpha", 0);
    old.scheduled_at = monitor_core::report::to_micros(now - chrono::Duration::days(3));
    old.started_at = old.scheduled_at;
    old.report_id = report_id("test", "alpha", old.scheduled_at);
    decode::push(&mut batch, &window, offset, None, Some(old.to_json()));
    store.store(&batch).await.expect("stored");

    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sink"))
            .args(args)
            .env_remove("WEBMON_CONFIG")
            .env("WEBMON__DATABASE__URL", &db.url)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json: serde_json::Value =
        serde_json::from_str(&run(&["report", "--since", "24h", "--format", "json"]))
            .expect("json");
    let alpha = &json[0];
    assert_eq!(alpha["target_id"], "alpha");
    assert_eq!(
        alpha["checks"], 10,
        "the 3-day-old result is outside the window"
    );
    assert_eq!(alpha["uptime_percent"], 80.0);
    assert_eq!(alpha["failures"]["timeout"], 1);
    assert_eq!(alpha["failures"]["http_status"], 1);
    assert_eq!(alpha["p50_ms"], 55.0);
    assert_eq!(alpha["last_failure_error"], "failure 0");
    assert!(alpha["tls_cert_not_after"].is_string());
    assert_eq!(json[1]["uptime_percent"], 100.0);

    let only = run(&[
        "report",
        "--target",
        "https://bravo.example/",
        "--format",
        "json",
    ]);
    let only: serde_json::Value = serde_json::from_str(&only).expect("json");
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    let table = run(&["report"]);
    assert!(table.starts_with("URL"), "{table}");
    assert!(
        table.contains("https://alpha.example/") && table.contains("80.00%"),
        "{table}"
    );
    assert!(table.contains("http_status:1 timeout:1"), "{table}");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_sink_with_scram_credentials_stores_and_a_wrong_password_stores_nothing() {
    let state = tempfile::tempdir().expect("dir");
    let broker = OwnBroker::start_with_scram_users(
        state.path(),
        None,
        &[("producer", "producer-pw", 256), ("sink", "sink-pw", 512)],
    )
    .await;
    let db = TestDatabase::create().await;
    let topic = "scram-reports";
    let with_login = |user: &str, password: &str| {
        let mut env = env(topic, &db);
        env.insert(
            "WEBMON__KAFKA__BROKERS".into(),
            format!("127.0.0.1:{}", broker.port),
        );
        env.insert(
            "WEBMON__KAFKA__SASL__MECHANISM".into(),
            "SCRAM-SHA-512".into(),
        );
        env.insert("WEBMON__KAFKA__SASL__USERNAME".into(), user.into());
        env.insert("WEBMON__KAFKA__SASL__PASSWORD".into(), password.into());
        settings_from(env)
    };

    let mut producer_settings = with_login("producer", "producer-pw").kafka;
    producer_settings.sasl = producer_settings.sasl.map(|mut sasl| {
        sasl.mechanism = monitor_core::settings::SaslMechanism::ScramSha256;
        sasl
    });
    let client = monitor_core::runtime::broker::connect(
        &producer_settings,
        "producer",
        Duration::from_secs(10),
    )
    .await
    .expect("the producer logs in");
    client
        .controller_client()
        .expect("controller")
        .create_topic(topic, 2, 1, 5_000)
        .await
        .expect("topic");
    produce_reports(&client, topic, 2, 0, 150).await;
    let pool = pool(&db).await;

    // A wrong password: the sink keeps trying and stores nothing, and still stops on request.
    let sink = RunningSink::start(with_login("sink", "not-the-password")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sink.is_finished(),
        "a refused login is waited out, not fatal"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 0);
    tokio::time::timeout(Duration::from_secs(5), sink.stop())
        .await
        .expect("stops within 5 s while it cannot log in")
        .expect("a clean stop");

    let sink = RunningSink::start(with_login("sink", "sink-pw")).await;
    wait_for_offsets(&pool, topic, 300, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 300).await;
    sink.stop().await.expect("the sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
    drop(broker);
}
