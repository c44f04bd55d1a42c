//! What the notification tests share: crafted outages of three regions (reports of
//! one-second slots, an hour ago), a topic holding them, the sink's settings from a TOML
//! text (the notifications section, channels and targets) plus the test environment, and a
//! fixture that starts sinks on them, in this process or as the `sink` binary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::to_micros;
use monitor_core::settings::{SettingsSource, SinkSettings};
use monitor_core::testing::{create_topic, kafka_client, TestDatabase};
use monitor_core::Status;
use rskafka::client::Client;
use sqlx::PgPool;

use super::{
    env, pool, produce_in_requests_of, slot_report, wait_for, wait_for_offsets, Message,
    RunningSink, SinkProcess,
};

/// The regions of every crafted outage.
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The bound on every wait of the notification tests.
pub const WITHIN: Duration = Duration::from_secs(40);

/// Writes `toml` to `sink.toml` in a new temporary directory; returns the file and the
/// directory (which removes it when dropped).
fn settings_file(toml: &str) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sink.toml");
    std::fs::write(&file, toml).expect("write settings");
    (file, dir)
}

/// The sink's settings: the test environment plus `more` variables, and `toml` from a file.
pub fn settings(env: HashMap<String, String>, toml: &str) -> (SinkSettings, tempfile::TempDir) {
    let (file, dir) = settings_file(toml);
    let settings = SinkSettings::load(&SettingsSource {
        file: Some(file),
        env: Some(env),
        base_dir: Some(dir.path().to_path_buf()),
    })
    .expect("test settings are valid");
    (settings, dir)
}

/// The fast dispatcher settings (polling every 100 ms unless `more` says otherwise), plus
/// `more`.
pub fn notifications(more: &str) -> String {
    let poll = if more.contains("poll_interval") {
        ""
    } else {
        "poll_interval = \"100ms\"\n"
    };
    format!("[sink.notifications]\n{poll}retry_initial = \"200ms\"\nretry_max = \"1s\"\nlink = \"https://status.example/\"\n{more}\n")
}

/// A slot grid of whole seconds, an hour ago.
pub fn start() -> DateTime<Utc> {
    let now = to_micros(Utc::now()) - chrono::Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// Reports of `targets` from every region for 24 slots from `start`: down from slot 4 to
/// `down_until`, without a certificate.
pub fn outage(targets: &[String], down_until: i64) -> Vec<Message> {
    outage_with_certificate(targets, start(), down_until, None)
}

/// [`outage`] from `start`, every report seeing a certificate that expires `days` after the
/// first slot.
pub fn outage_with_certificate(
    targets: &[String],
    start: DateTime<Utc>,
    down_until: i64,
    days: Option<i64>,
) -> Vec<Message> {
    let mut out = Vec::new();
    for k in 0..24 {
        for target in targets {
            for region in REGIONS {
                let status = if (4..down_until).contains(&k) {
                    Status::Down
                } else {
                    Status::Up
                };
                let mut r = slot_report(target, region, start, k, status);
                r.tls_cert_not_after = days.map(|d| start + chrono::Duration::days(d));
                out.push((Some(target.clone().into_bytes()), Some(r.to_json())));
            }
        }
    }
    out
}

/// A topic holding `messages`; returns it and their count.
pub async fn topic_with(client: &Client, messages: Vec<Message>) -> (String, i64) {
    let topic = create_topic(client, 1).await;
    let n = messages.len() as i64;
    produce_in_requests_of(client, &topic, 0, messages, 500).await;
    (topic, n)
}

/// A topic holding a test's messages, its database, and the settings files of its sinks.
pub struct Fixture {
    /// The topic.
    pub topic: String,
    /// Messages in it.
    pub messages: i64,
    /// The database.
    pub db: TestDatabase,
    /// A pool to it.
    pub pool: PgPool,
    /// Variables added to the test environment of every sink started.
    pub env: HashMap<String, String>,
    dirs: Vec<tempfile::TempDir>,
}

impl Fixture {
    /// A new topic holding `messages`, and a new database.
    pub async fn new(messages: Vec<Message>) -> Fixture {
        let client = kafka_client().await;
        let (topic, messages) = topic_with(&client, messages).await;
        let db = TestDatabase::create().await;
        let pool = pool(&db).await;
        Fixture {
            topic,
            messages,
            db,
            pool,
            env: HashMap::new(),
            dirs: Vec::new(),
        }
    }

    /// The test environment of this fixture's sinks.
    fn environment(&self) -> HashMap<String, String> {
        let mut all = env(&self.topic, &self.db.url);
        all.extend(self.env.clone());
        all
    }

    /// Starts a sink in this process with the settings of `toml`.
    pub async fn start(&mut self, toml: &str) -> RunningSink {
        let (s, dir) = settings(self.environment(), toml);
        self.dirs.push(dir);
        RunningSink::start(s).await
    }

    /// Starts the `sink` binary with the settings of `toml` (`--config`).
    pub fn process(&mut self, toml: &str) -> SinkProcess {
        let (file, dir) = settings_file(toml);
        self.dirs.push(dir);
        let args = [std::ffi::OsStr::new("--config"), file.as_os_str()];
        SinkProcess::start_with_args(self.environment(), &args)
    }

    /// Waits until every message is stored.
    pub async fn stored(&self) {
        wait_for_offsets(&self.pool, &self.topic, self.messages, WITHIN).await;
    }

    /// Waits until `n` notifications match `condition`.
    pub async fn notifications(&self, condition: &str, n: i64) {
        let sql = format!("SELECT count(*) FROM notifications WHERE {condition}");
        wait_for(&self.pool, &sql, n, WITHIN, condition).await;
    }

    /// Stops `sinks` and drops the database.
    pub async fn end(self, sinks: Vec<RunningSink>) {
        for sink in sinks {
            sink.stop().await.expect("the sink stops cleanly");
        }
        self.pool.close().await;
        self.db.drop_database().await;
    }
}
