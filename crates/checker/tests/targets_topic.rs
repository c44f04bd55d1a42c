//! Checkers follow the targets topic: definitions produced to it (as the sink produces them:
//! key = target id, value = the JSON of a `monitored_urls` entry, no value = deleted) are
//! checked within 2 s, deleted, changed and sharded, rebuilt after a restart, and merged with
//! the settings file's targets, which win. A real broker, checker [`Application`]s with Kafka
//! output, and local sites on port 0.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checker::app::{Application, Destination, Options};
use checker::schedule::shard::owns;
use chrono::{DateTime, TimeDelta, Utc};
use monitor_core::report::Report;
use monitor_core::settings::{CheckerSettings, SettingsSource, Shard};
use monitor_core::testing::{
    create_topic, http_get, kafka_brokers, kafka_client, ok_site, unique_name, OwnBroker, Proxy,
};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The bound a change has to reach the schedule, from its produce.
const APPLY_BOUND: Duration = Duration::from_secs(2);
/// The period of the API targets of these tests.
const PERIOD: Duration = Duration::from_millis(500);
/// How often the tests look at what arrived.
const POLL: Duration = Duration::from_millis(20);

/// A report as it arrived on the reports topic, and when the reader saw it.
#[derive(Debug, Clone)]
struct Seen {
    report: Report,
    at: Instant,
}

/// The topics of one test, a producer of definitions, and every report that arrived.
struct Topics {
    client: Arc<Client>,
    brokers: Vec<String>,
    reports: String,
    targets: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    reader: JoinHandle<()>,
}

impl Drop for Topics {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Topics {
    /// A reports topic of one partition, read as reports arrive, and a targets topic name,
    /// created now when `create_targets`.
    async fn new(create_targets: bool) -> Topics {
        Topics::on(kafka_client().await, kafka_brokers(), create_targets).await
    }

    /// [`Topics::new`] on the brokers `brokers`, reached by `client`.
    async fn on(client: Arc<Client>, brokers: Vec<String>, create_targets: bool) -> Topics {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reports = create_topic(&client, 1).await;
        let targets = if create_targets {
            create_topic(&client, 1).await
        } else {
            unique_name("wmtest-targets").replace('_', "-")
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let partition = partition(&client, &reports).await;
        let reader = tokio::spawn(read_reports(partition, seen.clone()));
        Topics {
            client,
            brokers,
            reports,
            targets,
            seen,
            reader,
        }
    }

    /// Creates the targets topic (for a test that starts without it).
    async fn create_targets(&self) {
        self.client
            .controller_client()
            .expect("controller")
            .create_topic(&self.targets, 1, 1, 5_000)
            .await
            .expect("create the targets topic");
    }

    /// Produces `value` (a definition, or a tombstone when `None`) under `id`; returns when
    /// the broker acknowledged it, and the wall-clock time then.
    async fn produce(&self, id: &str, value: Option<&Value>) -> (Instant, DateTime<Utc>) {
        self.produce_raw(id, value.map(|v| v.to_string().into_bytes()))
            .await
    }

    async fn produce_raw(&self, id: &str, value: Option<Vec<u8>>) -> (Instant, DateTime<Utc>) {
        let record = Record {
            key: Some(id.as_bytes().to_vec()),
            value,
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        partition(&self.client, &self.targets)
            .await
            .produce(vec![record], Compression::NoCompression)
            .await
            .expect("produce a definition");
        (Instant::now(), Utc::now())
    }

    /// The reports seen so far.
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Polls until `done` holds for the reports seen, within `within`; returns when it held.
    async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Seen]) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.seen()) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "not within {within:?}: {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Settings for a checker in `dir`: the file's `monitored_urls` (TOML), these topics.
    fn settings_file(&self, dir: &Path, checker_id: &str, monitored_urls: &str) -> PathBuf {
        let file = dir.join("c.toml");
        let brokers = self
            .brokers
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(",");
        let text = format!(
            "{monitored_urls}\n\
             [kafka]\nbrokers = [{brokers}]\ntopic = \"{}\"\ntargets_topic = \"{}\"\ncreate_topic = false\n\
             [checker]\nid = \"{checker_id}\"\nadmin_listen = \"127.0.0.1:0\"\nspool_dir = \"spool\"\n\
             shutdown_timeout = \"2s\"\nwatch_config = false\n",
            self.reports, self.targets
        );
        std::fs::write(&file, text).expect("write the settings");
        file
    }
}

async fn partition(client: &Client, topic: &str) -> PartitionClient {
    client
        .partition_client(topic.to_string(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client")
}

/// Reads every report of the reports topic as it arrives.
async fn read_reports(partition: PartitionClient, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut offset = 0;
    loop {
        let Ok((records, _)) = partition.fetch_records(offset, 1..10_000_000, 20).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let at = Instant::now();
        for r in records {
            if r.offset < offset {
                continue;
            }
            offset = r.offset + 1;
            let value = r.record.value.unwrap_or_default();
            let report: Report = serde_json::from_slice(&value).expect("a report");
            seen.lock().expect("lock").push(Seen { report, at });
        }
    }
}

/// A definition as the sink produces it.
fn definition(id: &str, port: u16, period: Duration) -> Value {
    json!({
        "id": id,
        "url": format!("http://127.0.0.1:{port}/"),
        "period": format!("{}ms", period.as_millis()),
        "timeout": "300ms",
        "name": format!("API {id}"),
        "labels": {"team": "web"},
    })
}

/// A settings file target.
fn file_target(id: &str, port: u16) -> String {
    format!(
        "[[monitored_urls]]\nid = \"{id}\"\nurl = \"http://127.0.0.1:{port}/\"\nperiod = \"500ms\"\ntimeout = \"300ms\"\n"
    )
}

/// A checker application running in this process.
struct Running {
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
    task: JoinHandle<()>,
    admin: u16,
}

impl Running {
    async fn start(settings_file: PathBuf, shard: Option<Shard>) -> Running {
        let base_dir = settings_file.parent().map(Path::to_path_buf);
        let options = Options {
            destination: Destination::Kafka,
            shard,
            admin_listen: None,
            source: SettingsSource {
                base_dir,
                ..SettingsSource::file_only(settings_file)
            },
        };
        let settings = CheckerSettings::load(&options.source, true).expect("valid settings");
        let app = Application::build(settings, options).await.expect("builds");
        let admin = app.admin_addr().expect("bound").port();
        let reload = app.reloader();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Running {
            shutdown,
            reload,
            task,
            admin,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops within 10 s")
            .expect("ran");
    }

    /// How many targets from `source` (`file`, `api`) the checker runs, by its metrics.
    async fn targets(&self, source: &str) -> f64 {
        self.metric(&format!("webmon_checker_targets{{source=\"{source}\"}}"))
            .await
    }

    /// Polls the metric `name` until it is at least `least`, within `within`.
    async fn wait_metric(&self, name: &str, least: f64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(name).await < least {
            assert!(
                Instant::now() < deadline,
                "{name} not {least} within {within:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of the sample `name` (with its labels) on the metrics page.
    async fn metric(&self, name: &str) -> f64 {
        let (_, page) = http_get(self.admin, "/metrics").await;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {page}"))
    }
}

/// A checker with one file target, `file_id` on `port`, on fresh topics (the targets topic
/// created when `create_targets`), and its directory (`c.toml`, the spool).
async fn start_one(create_targets: bool, file_id: &str, port: u16) -> (Topics, Running, TempDir) {
    let topics = Topics::new(create_targets).await;
    let dir = tempfile::tempdir().expect("dir");
    let settings = topics.settings_file(dir.path(), "c1", &file_target(file_id, port));
    let checker = Running::start(settings, None).await;
    (topics, checker, dir)
}

fn reports_of<'a>(seen: &'a [Seen], id: &'a str) -> impl Iterator<Item = &'a Report> + 'a {
    seen.iter()
        .map(|s| &s.report)
        .filter(move |r| r.target_id == id)
}

fn checked(seen: &[Seen], id: &str) -> bool {
    reports_of(seen, id).next().is_some()
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_target_produced_to_the_topic_is_checked_within_2_s_of_the_produce() {
    let site = ok_site().await;
    let (topics, checker, _dir) = start_one(true, "file-1", site).await;
    topics
        .wait_for("the file target is checked", Duration::from_secs(10), |s| {
            checked(s, "file-1")
        })
        .await;

    let mut latencies = Vec::new();
    for i in 0..5 {
        let id = format!("api-{i}");
        let (produced, _) = topics
            .produce(&id, Some(&definition(&id, site, PERIOD)))
            .await;
        topics
            .wait_for(&format!("{id} is checked"), APPLY_BOUND, |s| {
                checked(s, &id)
            })
            .await;
        let arrived = topics
            .seen()
            .iter()
            .filter(|s| s.report.target_id == id)
            .map(|s| s.at)
            .min();
        latencies.push(arrived.expect("a report") - produced);
    }
    println!("produce → first report on the reports topic: {latencies:?}");
    assert_eq!(checker.targets("api").await, 5.0);
    assert_eq!(checker.targets("file").await, 1.0);
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_tombstone_stops_its_targets_checks_and_the_others_go_on() {
    let site = ok_site().await;
    let (topics, checker, _dir) = start_one(true, "file-1", site).await;
    for id in ["gone", "stays"] {
        topics
            .produce(id, Some(&definition(id, site, PERIOD)))
            .await;
    }
    topics
        .wait_for("both are checked", Duration::from_secs(10), |s| {
            checked(s, "gone") && checked(s, "stays")
        })
        .await;

    let (_, deleted_at) = topics.produce("gone", None).await;
    let later = deleted_at + TimeDelta::from_std(APPLY_BOUND + 2 * PERIOD).expect("delta");
    topics
        .wait_for(
            "the other target is checked a period after the bound",
            Duration::from_secs(10),
            |s| reports_of(s, "stays").any(|r| r.scheduled_at > later),
        )
        .await;
    let bound = deleted_at + TimeDelta::from_std(APPLY_BOUND).expect("delta");
    let seen = topics.seen();
    let last = reports_of(&seen, "gone")
        .map(|r| r.scheduled_at)
        .max()
        .expect("reports");
    println!(
        "last slot of the deleted target: {} ms after the tombstone",
        (last - deleted_at).num_milliseconds()
    );
    assert!(
        last <= bound,
        "a slot of the deleted target at {last}, tombstone at {deleted_at}"
    );
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_changed_definition_is_applied_and_an_unchanged_republish_keeps_the_slots() {
    let (first, second) = (ok_site().await, ok_site().await);
    let (topics, checker, _dir) = start_one(true, "file-1", first).await;
    let url = |port: u16| format!("http://127.0.0.1:{port}/");

    topics
        .produce("t", Some(&definition("t", first, PERIOD)))
        .await;
    topics
        .wait_for("t is checked", Duration::from_secs(10), |s| checked(s, "t"))
        .await;
    topics
        .produce("t", Some(&definition("t", second, PERIOD)))
        .await;
    topics
        .wait_for("t is checked at its new URL", APPLY_BOUND + PERIOD, |s| {
            reports_of(s, "t").any(|r| r.url == url(second))
        })
        .await;

    let slower = Duration::from_secs(1);
    let (_, changed_at) = topics
        .produce("t", Some(&definition("t", second, slower)))
        .await;
    topics
        .wait_for(
            "t is checked at its new period",
            APPLY_BOUND + 2 * slower,
            |s| reports_of(s, "t").any(|r| r.period_s == 1.0),
        )
        .await;

    // Republished unchanged, as the sink does periodically: the slots go on as they were.
    for _ in 0..3 {
        topics
            .produce("t", Some(&definition("t", second, slower)))
            .await;
    }
    let since = changed_at + TimeDelta::from_std(APPLY_BOUND).expect("delta");
    topics
        .wait_for(
            "four slots after the republishing",
            Duration::from_secs(10),
            |s| {
                reports_of(s, "t")
                    .filter(|r| r.scheduled_at > since)
                    .count()
                    >= 4
            },
        )
        .await;
    let seen = topics.seen();
    let slots: Vec<DateTime<Utc>> = reports_of(&seen, "t")
        .filter(|r| r.scheduled_at > since)
        .map(|r| r.scheduled_at)
        .collect();
    for pair in slots.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            TimeDelta::seconds(1),
            "one slot a period: {slots:?}"
        );
    }
    assert!(reports_of(&seen, "t")
        .filter(|r| r.scheduled_at > since)
        .all(|r| r.url == url(second)));
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn two_checkers_of_two_shards_split_the_api_targets_each_checked_by_exactly_one() {
    let topics = Topics::new(true).await;
    let site = ok_site().await;
    let shards = [Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 }];
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let mut checkers = Vec::new();
    for (shard, dir) in shards.iter().zip(&dirs) {
        let id = format!("shard-{}", shard.index);
        let settings = topics.settings_file(dir.path(), &id, &file_target("file-1", site));
        checkers.push(Running::start(settings, Some(*shard)).await);
    }
    let ids: Vec<String> = (0..20).map(|i| format!("api-{i}")).collect();
    for id in &ids {
        topics
            .produce(id, Some(&definition(id, site, PERIOD)))
            .await;
    }
    topics
        .wait_for(
            "every target is checked three times",
            Duration::from_secs(15),
            |s| ids.iter().all(|id| reports_of(s, id).count() >= 3),
        )
        .await;

    let seen = topics.seen();
    for id in &ids {
        let mut by: Vec<&str> = reports_of(&seen, id)
            .map(|r| r.checker_id.as_str())
            .collect();
        by.dedup();
        let owner = shards.iter().find(|s| owns(**s, id)).expect("an owner");
        assert_eq!(by, [format!("shard-{}", owner.index)], "{id}");
    }
    let mut shares = Vec::new();
    for checker in checkers {
        shares.push(checker.targets("api").await);
        checker.stop().await;
    }
    println!("API targets per shard: {shares:?}");
    assert_eq!(shares.iter().sum::<f64>(), 20.0);
    assert!(shares.iter().all(|&n| n > 0.0), "{shares:?}");
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_restarted_checker_rebuilds_its_targets_from_the_topic() {
    let (first, second) = (ok_site().await, ok_site().await);
    let (topics, checker, dir) = start_one(true, "file-1", first).await;
    for id in ["r1", "r2", "r3"] {
        topics
            .produce(id, Some(&definition(id, first, PERIOD)))
            .await;
    }
    topics.produce("r2", None).await;
    topics
        .produce("r3", Some(&definition("r3", second, PERIOD)))
        .await;
    let moved = format!("http://127.0.0.1:{second}/");
    topics
        .wait_for(
            "r1 and the moved r3 are checked",
            Duration::from_secs(10),
            |s| checked(s, "r1") && reports_of(s, "r3").any(|r| r.url == moved),
        )
        .await;
    checker.stop().await;

    let restarted_at = Utc::now();
    let started = Instant::now();
    let checker = Running::start(dir.path().join("c.toml"), None).await;
    let after = |r: &&Report| r.started_at > restarted_at;
    let rebuilt = topics
        .wait_for(
            "the restarted checker checks r1 and r3",
            Duration::from_secs(10),
            |s| reports_of(s, "r1").any(|r| after(&r)) && reports_of(s, "r3").any(|r| after(&r)),
        )
        .await;
    println!(
        "restart → API targets checked again: {:?}",
        rebuilt - started
    );
    topics
        .wait_for(
            "three more slots of the file target",
            Duration::from_secs(10),
            |s| reports_of(s, "file-1").filter(after).count() >= 3,
        )
        .await;
    let seen = topics.seen();
    assert_eq!(
        reports_of(&seen, "r2").filter(after).count(),
        0,
        "the deleted target"
    );
    assert!(reports_of(&seen, "r3")
        .filter(after)
        .all(|r| r.url == moved));
    // No hole across the restart: each slot of r1 is reported, checked or (while the checker
    // was down) `missed` by the restarted checker's backfill.
    let slots: BTreeSet<DateTime<Utc>> = reports_of(&seen, "r1").map(|r| r.scheduled_at).collect();
    let (first_slot, last_slot) = (slots.first().copied(), slots.last().copied());
    let (Some(mut slot), Some(last_slot)) = (first_slot, last_slot) else {
        panic!("no slots of r1");
    };
    while slot < last_slot {
        assert!(
            slots.contains(&slot),
            "slot {slot} of r1 is missing (restarted at {restarted_at})"
        );
        slot += TimeDelta::from_std(PERIOD).expect("delta");
    }
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_file_target_wins_over_an_api_one_and_an_invalid_definition_is_refused_alone() {
    let (file_site, api_site) = (ok_site().await, ok_site().await);
    let (topics, checker, _dir) = start_one(true, "dup", file_site).await;

    topics
        .produce("dup", Some(&definition("dup", api_site, PERIOD)))
        .await;
    topics
        .produce("keep", Some(&definition("keep", api_site, PERIOD)))
        .await;
    let mut invalid = definition("keep", api_site, PERIOD);
    invalid["timeout"] = json!("5s");
    topics.produce("keep", Some(&invalid)).await;
    topics
        .produce_raw("junk", Some(b"{not json".to_vec()))
        .await;
    let (_, last_at) = topics
        .produce("good", Some(&definition("good", api_site, PERIOD)))
        .await;
    let later = last_at + TimeDelta::from_std(APPLY_BOUND).expect("delta");
    topics
        .wait_for(
            "the targets after the refused ones are checked",
            Duration::from_secs(10),
            |s| checked(s, "good") && reports_of(s, "keep").any(|r| r.scheduled_at > later),
        )
        .await;

    let seen = topics.seen();
    let file_url = format!("http://127.0.0.1:{file_site}/");
    assert!(
        reports_of(&seen, "dup").all(|r| r.url == file_url),
        "the file's dup only"
    );
    assert!(!checked(&seen, "junk"));
    assert!(
        reports_of(&seen, "keep").all(|r| r.timeout_s == 0.3),
        "the valid keep only"
    );
    assert_eq!(
        checker
            .metric("webmon_checker_refused_definitions_total")
            .await,
        2.0
    );
    assert_eq!(checker.targets("api").await, 2.0);
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_checker_started_before_the_targets_topic_exists_follows_it_once_created() {
    let site = ok_site().await;
    let (topics, checker, _dir) = start_one(false, "file-1", site).await;
    topics
        .wait_for("the file target is checked", Duration::from_secs(10), |s| {
            checked(s, "file-1")
        })
        .await;

    topics.create_targets().await;
    let (produced, _) = topics
        .produce("late", Some(&definition("late", site, PERIOD)))
        .await;
    let seen = topics
        .wait_for(
            "the first API target is checked",
            Duration::from_secs(2) + APPLY_BOUND,
            |s| checked(s, "late"),
        )
        .await;
    println!(
        "topic created, produce → first report: {:?}",
        seen - produced
    );
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_settings_reload_keeps_the_api_targets_and_a_topic_change_keeps_the_file_targets() {
    let site = ok_site().await;
    let (topics, checker, dir) = start_one(true, "file-1", site).await;
    topics
        .produce("api-1", Some(&definition("api-1", site, PERIOD)))
        .await;
    topics
        .wait_for(
            "the file and API targets are checked",
            Duration::from_secs(10),
            |s| checked(s, "file-1") && checked(s, "api-1"),
        )
        .await;

    topics.settings_file(dir.path(), "c1", &file_target("file-2", site));
    let reloaded_at = Utc::now();
    checker.reload.send(()).await.expect("reload");
    let after_reload = reloaded_at + TimeDelta::from_std(APPLY_BOUND).expect("delta");
    topics
        .wait_for(
            "the new file target and the API one are checked after the reload",
            Duration::from_secs(10),
            |s| {
                checked(s, "file-2")
                    && reports_of(s, "api-1").any(|r| r.scheduled_at > after_reload)
            },
        )
        .await;

    let (_, defined_at) = topics
        .produce("api-2", Some(&definition("api-2", site, PERIOD)))
        .await;
    let after_change = defined_at + TimeDelta::from_std(APPLY_BOUND).expect("delta");
    topics
        .wait_for(
            "the file target is still checked after a change on the topic",
            Duration::from_secs(10),
            |s| {
                checked(s, "api-2")
                    && reports_of(s, "file-2").any(|r| r.scheduled_at > after_change)
            },
        )
        .await;
    let seen = topics.seen();
    assert_eq!(
        reports_of(&seen, "file-1")
            .filter(|r| r.scheduled_at > after_reload)
            .count(),
        0
    );
    assert_eq!(checker.targets("api").await, 2.0);
    checker.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn through_a_kafka_outage_the_api_targets_known_are_kept_and_changes_resume_after() {
    let (proxy, listener) = Proxy::bind().await;
    let broker = OwnBroker::start(Some(proxy.port)).await;
    proxy.forward_to(listener, broker.port);
    let brokers = vec![format!("127.0.0.1:{}", proxy.port)];
    let client = ClientBuilder::new(brokers.clone())
        .build()
        .await
        .expect("client");
    let topics = Topics::on(Arc::new(client), brokers, true).await;
    let site = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let settings = topics.settings_file(dir.path(), "c1", &file_target("file-1", site));
    let checker = Running::start(settings, None).await;
    topics
        .produce("kept", Some(&definition("kept", site, PERIOD)))
        .await;
    topics
        .wait_for("the API target is checked", Duration::from_secs(10), |s| {
            checked(s, "kept")
        })
        .await;

    proxy.cut();
    let cut_at = Utc::now();
    checker
        .wait_metric(
            "webmon_checker_produce_errors_total",
            3.0,
            Duration::from_secs(20),
        )
        .await;
    proxy.restore();
    let restored_at = Utc::now();
    let (produced, _) = topics
        .produce("after", Some(&definition("after", site, PERIOD)))
        .await;
    let during = cut_at + TimeDelta::from_std(PERIOD).expect("delta");
    let resumed = topics
        .wait_for(
            "checks of the kept target during the outage, and the change after it",
            Duration::from_secs(30),
            |s| {
                checked(s, "after")
                    && reports_of(s, "kept")
                        .any(|r| r.scheduled_at > during && r.scheduled_at < restored_at)
            },
        )
        .await;
    println!(
        "outage of {} ms; produce after it → checked: {:?}",
        (restored_at - cut_at).num_milliseconds(),
        resumed - produced
    );
    checker.stop().await;
    drop(broker);
}
