//! What the sink's test files share: the test settings, a sink started in this process
//! (through `Application`, its admin endpoint on port 0) or as a process, producing to the
//! topic, and polling the database for what the sink stored.

#![allow(dead_code)]

pub mod api;
pub mod http;
pub mod notify;
pub mod regions;
pub mod smtp;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use monitor_core::report::{report_id, to_micros};
use monitor_core::settings::{SettingsSource, SinkSettings};
use monitor_core::testing::{kafka_brokers, sample_report, TestDatabase};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use sink::store::ReportStore;
use sink::{Application, SinkError};
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The rebalance interval of the test settings.
pub const REBALANCE: Duration = Duration::from_millis(200);

/// Most records produced in one request.
const PRODUCE_RECORDS: usize = 500;
/// Most bytes of values produced in one request (well inside a broker's request bound).
const PRODUCE_BYTES: usize = 512 * 1024;

/// A message's key and value.
pub type Message = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The test settings as `WEBMON__` variables: small batches, short waits, the admin endpoint
/// on port 0.
pub fn env(topic: &str, database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("WEBMON__KAFKA__BROKERS".into(), kafka_brokers().join(",")),
        ("WEBMON__KAFKA__TOPIC".into(), topic.to_string()),
        ("WEBMON__DATABASE__URL".into(), database_url.to_string()),
        ("WEBMON__SINK__BATCH_SIZE".into(), "500".into()),
        ("WEBMON__SINK__BATCH_LINGER".into(), "50ms".into()),
        ("WEBMON__SINK__FETCH_MAX_WAIT".into(), "50ms".into()),
        (
            "WEBMON__SINK__REBALANCE_INTERVAL".into(),
            format!("{}ms", REBALANCE.as_millis()),
        ),
        ("WEBMON__SINK__ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("WEBMON__SINK__HTTP_LISTEN".into(), "127.0.0.1:0".into()),
    ])
}

/// The settings of these variables.
pub fn settings_from(env: HashMap<String, String>) -> SinkSettings {
    SinkSettings::load(&SettingsSource {
        file: None,
        env: Some(env),
        base_dir: None,
    })
    .expect("test settings are valid")
}

/// The test settings.
pub fn settings(topic: &str, db: &TestDatabase) -> SinkSettings {
    settings_from(env(topic, &db.url))
}

/// A sink running in this process until [`RunningSink::stop`].
pub struct RunningSink {
    /// Where its admin endpoint listens.
    pub admin: SocketAddr,
    /// Where its API and status page listen (unless `sink.http_listen` is `off`).
    pub http: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SinkError>>,
}

impl RunningSink {
    /// Starts a sink with `settings`.
    pub async fn start(settings: SinkSettings) -> RunningSink {
        let app = Application::build(settings).await.expect("the sink binds");
        RunningSink::run(app)
    }

    /// Runs `app`.
    pub fn run(app: Application) -> RunningSink {
        let shutdown = CancellationToken::new();
        let admin = app.admin_addr();
        let http = app.http_addr();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        RunningSink {
            admin,
            http,
            shutdown,
            task,
        }
    }

    /// Whether it has ended by itself.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shuts it down and returns how it ended.
    pub async fn stop(self) -> Result<(), SinkError> {
        self.shutdown.cancel();
        self.task.await.expect("the sink does not panic")
    }
}

/// The `sink` binary with these `WEBMON__` variables; killed when dropped, so a failing test
/// leaves none behind.
pub struct SinkProcess(pub Child);

impl SinkProcess {
    /// Starts `sink` with `env`, logging warnings only.
    pub fn start(env: HashMap<String, String>) -> SinkProcess {
        SinkProcess::start_with_args(env, &[])
    }

    /// Starts `sink` with `env` and `args` (such as `--config FILE`), logging warnings only.
    pub fn start_with_args(env: HashMap<String, String>, args: &[&std::ffi::OsStr]) -> SinkProcess {
        SinkProcess(
            Command::new(env!("CARGO_BIN_EXE_sink"))
                .args(args)
                .envs(env)
                .env(
                    "RUST_LOG",
                    std::env::var("SINK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .env_remove("WEBMON_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("sink starts"),
        )
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    /// Waits for the exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection pool to the test database.
pub async fn pool(db: &TestDatabase) -> PgPool {
    PgPool::connect(&db.url).await.expect("connect")
}

/// A pool to the test database, migrated, and a store over it.
pub async fn migrated_store(db: &TestDatabase) -> (PgPool, ReportStore) {
    let pool = pool(db).await;
    sink::db::migrate(&pool).await.expect("migrations apply");
    let store = ReportStore::new(pool.clone());
    (pool, store)
}

/// Produces `messages` (key, value) to `partition`, in order.
pub async fn produce_messages(
    client: &Client,
    topic: &str,
    partition: i32,
    messages: Vec<Message>,
) {
    produce_in_requests_of(client, topic, partition, messages, PRODUCE_RECORDS).await;
}

/// Produces `messages` to `partition`, at most `records` in one request (one record batch):
/// a sink restarted at a stored offset inside a record batch is answered by the test broker
/// from the next record batch on, so tests that kill a sink mid-stream produce record
/// batches as large as the sink's batches.
pub async fn produce_in_requests_of(
    client: &Client,
    topic: &str,
    partition: i32,
    messages: Vec<Message>,
    records: usize,
) {
    let pc = client
        .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for (key, value) in messages {
        bytes += key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
        chunk.push(Record {
            key,
            value,
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        });
        if bytes > PRODUCE_BYTES || chunk.len() >= records {
            pc.produce(std::mem::take(&mut chunk), Compression::NoCompression)
                .await
                .expect("produce");
            bytes = 0;
        }
    }
    if !chunk.is_empty() {
        pc.produce(chunk, Compression::NoCompression)
            .await
            .expect("produce");
    }
}

/// Produces `values` to `partition`, keyed by `key`.
pub async fn produce(
    client: &Client,
    topic: &str,
    partition: i32,
    key: &str,
    values: Vec<Vec<u8>>,
) {
    let messages = values
        .into_iter()
        .map(|v| (Some(key.as_bytes().to_vec()), Some(v)))
        .collect();
    produce_messages(client, topic, partition, messages).await;
}

/// Produces `count` reports of target `t<p>` to each of `partitions`, numbered from `from`.
pub async fn produce_reports(client: &Client, topic: &str, partitions: i32, from: i64, count: i64) {
    for p in 0..partitions {
        let target = format!("t{p}");
        let values = (from..from + count)
            .map(|n| sample_report(&target, n).to_json())
            .collect();
        produce(client, topic, p, &target, values).await;
    }
}

/// A report of `target` scheduled `minutes_ago` minutes ago (today's partitions).
pub fn recent_report(target: &str, minutes_ago: i64) -> Vec<u8> {
    let mut r = sample_report(target, 0);
    r.scheduled_at = to_micros(Utc::now() - chrono::Duration::minutes(minutes_ago));
    r.started_at = r.scheduled_at;
    r.report_id = report_id(&r.checker_id, target, r.scheduled_at);
    r.to_json()
}

/// Produces `count` recent reports of target `t<p>-<round>` to each of `partitions`.
pub async fn produce_recent(client: &Client, topic: &str, partitions: i32, round: i64, count: i64) {
    for p in 0..partitions {
        let target = format!("t{p}-{round}");
        let values = (0..count).map(|n| recent_report(&target, n)).collect();
        produce(client, topic, p, &target, values).await;
    }
}

/// The first column of the first row of `sql`, or -1 when it fails (the sink may not have
/// migrated yet).
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(-1)
}

/// Polls `sql` until it returns `expected`, for at most `within`.
pub async fn wait_for(pool: &PgPool, sql: &str, expected: i64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let n = count(pool, sql).await;
        if n == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n}, not {expected} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of the stored offsets of `topic`'s partitions: the messages stored.
pub fn offsets_sql(topic: &str) -> String {
    format!(
        "SELECT COALESCE(sum(next_offset), 0)::int8 FROM kafka_offsets WHERE kafka_topic = '{topic}'"
    )
}

/// Waits until the stored offsets add up to `messages`.
pub async fn wait_for_offsets(pool: &PgPool, topic: &str, messages: i64, within: Duration) {
    wait_for(
        pool,
        &offsets_sql(topic),
        messages,
        within,
        "stored offsets",
    )
    .await;
}

/// Every report stored once: `expected_rows` rows, in the original service's view too, and no
/// `report_id` twice.
pub async fn assert_exactly_once(pool: &PgPool, expected_rows: i64) {
    assert_eq!(
        count(pool, "SELECT count(*) FROM results").await,
        expected_rows
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM web_monitoring").await,
        expected_rows
    );
    assert_eq!(
        count(pool, "SELECT count(DISTINCT report_id) FROM results").await,
        expected_rows,
        "no report is stored twice"
    );
}

/// Advisory locks (membership + partitions) held by each sink in this database.
pub async fn owners(pool: &PgPool) -> Vec<i64> {
    sqlx::query(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'web-monitor-sink-leases' \
           AND a.datname = current_database() \
         GROUP BY l.pid ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("locks")
    .iter()
    .map(|r| r.get::<i64, _>(0))
    .collect()
}

/// Waits until [`owners`] is `expected`, for at most `within`; returns how long it took.
pub async fn wait_for_owners(pool: &PgPool, expected: &[i64], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = owners(pool).await;
        if now == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "lock counts (membership + partitions) per sink: {now:?}, expected {expected:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name` in the Prometheus text `metrics`.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The period of the verdict tests' reports, in seconds.
pub const SLOT_SECONDS: i64 = 1;

/// A report of `target` by `region` for the `k`-th one-second slot after `start`: up, down
/// (connection refused) or missed.
pub fn slot_report(
    target: &str,
    region: &str,
    start: chrono::DateTime<Utc>,
    k: i64,
    status: monitor_core::Status,
) -> monitor_core::Report {
    let mut r = sample_report(target, 0);
    r.checker_id = region.to_string();
    r.scheduled_at = to_micros(start + chrono::Duration::seconds(k * SLOT_SECONDS));
    r.started_at = r.scheduled_at;
    r.report_id = report_id(region, target, r.scheduled_at);
    r.period_s = SLOT_SECONDS as f64;
    r.timeout_s = 0.5;
    r.status = status;
    let down = status == monitor_core::Status::Down;
    r.failure_class = down.then_some(monitor_core::FailureClass::ConnectRefused);
    r.error = down.then(|| "connection refused".to_string());
    r.http_status = (status == monitor_core::Status::Up).then_some(200);
    r
}

/// The rows of `sql` (one text column), in its order.
pub async fn text_rows(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .expect("query")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

/// The incident table, one line per incident, in a fixed order.
pub async fn incident_rows(pool: &PgPool) -> Vec<String> {
    text_rows(
        pool,
        "SELECT concat_ws('|', incident_id, target_id, kind, opened_at, detected_at, closed_at, \
           duration, cause_class, cause_error, array_to_string(regions, ','), checks_failed) \
         FROM incidents ORDER BY target_id, opened_at, kind",
    )
    .await
}

/// Everything the verdicts wrote but wall-clock times: incidents, states (with the whole
/// fold), and verdict counts.
pub async fn verdict_tables(pool: &PgPool) -> Vec<String> {
    let mut rows = incident_rows(pool).await;
    rows.extend(
        text_rows(
            pool,
            "SELECT concat_ws('|', target_id, state, since, watermark, last_final, open_incident, \
               cert_not_after, cert_warning, silent_regions, fold::text) \
             FROM target_states ORDER BY target_id",
        )
        .await,
    );
    rows.extend(
        text_rows(
            pool,
            "SELECT concat_ws('|', target_id, hour, up, degraded, down, unknown) \
             FROM verdicts_by_hour ORDER BY target_id, hour",
        )
        .await,
    );
    rows
}

/// Waits until the stored offsets of `topic` add up to at least `messages`.
pub async fn wait_for_offsets_past(pool: &PgPool, topic: &str, messages: i64, within: Duration) {
    let deadline = Instant::now() + within;
    let sql = offsets_sql(topic);
    while count(pool, &sql).await < messages {
        assert!(
            Instant::now() < deadline,
            "stored offsets did not reach {messages} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `sink <args>` against the database at `url`, which must succeed; returns its output.
pub fn run_sink_command(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(args)
        .env_remove("WEBMON_CONFIG")
        .env("WEBMON__DATABASE__URL", url)
        .output()
        .expect("the sink runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
