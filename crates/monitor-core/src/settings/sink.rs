//! The sink's settings: the sections it reads (Kafka, PostgreSQL, the targets of a shared file
//! for their verdict policies) and its own `[sink]` section.

use std::time::Duration;

use super::api::{read_api_section, read_http_listen, ApiSettings};
use super::database::{read_database, DatabaseSettings};
use super::kafka::{read_kafka, KafkaSettings};
use super::maintenance::{read_windows, MaintenanceWindow};
use super::notify::{read_notify_section, NotifySettings};
use super::problems::{ConfigError, Problem, Problems};
use super::source::SettingsSource;
use super::status::{read_status_section, StatusSettings};
use super::target::{read_targets, Reader, TargetSettings};
use super::units::format_size;
use super::verdicts::{read_verdict_section, VerdictSettings};
use super::walk::{read_admin_listen, Section};

/// Longest `sink.batch_linger`.
pub const MAX_BATCH_LINGER: Duration = Duration::from_secs(60);
/// Longest `sink.fetch_max_wait` (Kafka takes it in milliseconds as a 32-bit number).
pub const MAX_FETCH_MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest `sink.rebalance_interval`.
pub const MAX_REBALANCE_INTERVAL: Duration = Duration::from_secs(600);

/// Default `sink.max_bytes_in_flight`: the message bytes one replica's partitions hold at once
/// (fetched and not yet stored). The process needs several times this at its peak: each byte is
/// held as fetched, as a decoded report and as a statement's parameter (see
/// `docs/benchmarks.md`).
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: u64 = 64 << 20;
/// Smallest `sink.max_bytes_in_flight`: one message at a broker's default bound.
pub const MIN_MAX_BYTES_IN_FLIGHT: u64 = 1 << 20;
/// Largest `sink.max_bytes_in_flight`.
pub const MAX_MAX_BYTES_IN_FLIGHT: u64 = 64 << 30;
/// Default admin address of the sink.
pub const SINK_ADMIN_LISTEN: &str = "0.0.0.0:9102";
/// Everything the sink needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// The `sink` section.
    pub sink: SinkSection,
    /// Where reports come from.
    pub kafka: KafkaSettings,
    /// Where they are stored.
    pub database: DatabaseSettings,
    /// The targets of a shared settings file (`monitored_urls`, optional here), for their
    /// verdict settings; a target not listed takes the `[sink.verdicts]` defaults.
    pub targets: Vec<TargetSettings>,
}

/// The `sink` section.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSection {
    /// Most reports stored in one transaction.
    pub batch_size: usize,
    /// Longest wait to fill a batch before storing what there is.
    pub batch_linger: Duration,
    /// Longest time the broker may hold a fetch waiting for data.
    pub fetch_max_wait: Duration,
    /// Apply the embedded migrations at start.
    pub migrate_on_start: bool,
    /// Drop stored results older than this (whole partitions); `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often a replica checks its leases and takes or gives back partitions.
    pub rebalance_interval: Duration,
    /// Address of the admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: String,
    /// Address of the targets API and the status page; `None` (`off`) serves neither.
    pub http_listen: Option<String>,
    /// `[sink.api]`: the tokens the targets API accepts.
    pub api: ApiSettings,
    /// At SIGTERM, how long storing the fetched batches and releasing the partitions may take;
    /// a transaction still running then is abandoned (its offset did not move, so its
    /// messages are read again). Keep it well under the pod's termination grace period.
    pub shutdown_timeout: Duration,
    /// Bound on the message bytes all partitions of this replica hold at once.
    pub max_bytes_in_flight: u64,
    /// `[sink.verdicts]`: how reports become verdicts, state and incidents, by default.
    pub verdicts: VerdictSettings,
    /// `[[sink.maintenance]]`: when targets' failures are expected.
    pub maintenance: Vec<MaintenanceWindow>,
    /// `[sink.notifications]`: channels, routes, retries and grouping of notifications.
    pub notifications: NotifySettings,
    /// `[sink.status]`: the public status page's title and reloads.
    pub status: StatusSettings,
}

/// Default of `sink.shutdown_timeout`: a third of Kubernetes' default termination grace (30 s).
pub const SINK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest `sink.shutdown_timeout`: one second is kept for releasing the partitions.
pub const SINK_SHUTDOWN_TIMEOUT_MIN: Duration = Duration::from_secs(2);
/// Longest `sink.shutdown_timeout`: no orchestrator waits longer for a pod to stop.
pub const SINK_SHUTDOWN_TIMEOUT_MAX: Duration = Duration::from_secs(600);

impl SinkSettings {
    /// Loads and validates.
    pub fn load(source: &SettingsSource) -> Result<SinkSettings, ConfigError> {
        let tree = source.tree()?;
        let base_dir = source.base_dir();
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);

        let sink = read_sink_section(&mut root, &base_dir, &mut problems);
        let kafka_present = root.has("kafka");
        let kafka = read_kafka(&mut root, &base_dir, &mut problems);
        if !kafka_present {
            problems.push(Problem::new(
                "kafka",
                "is missing: the sink consumes reports from Kafka; set kafka.brokers and kafka.topic",
            ));
        }
        let database_present = root.has("database") || root.has("db");
        let database = read_database(&mut root, &base_dir, &mut problems);
        if !database_present {
            problems.push(Problem::new(
                "database",
                "is missing: set database.url (or WEBMON__DATABASE__URL), or host, name and user",
            ));
        }
        let targets = read_targets(&mut root, &base_dir, Reader::Sink, &mut problems);
        root.finish(&mut problems);

        match (kafka, database) {
            (Some(kafka), Some(database)) if problems.is_empty() => Ok(SinkSettings {
                sink,
                kafka,
                database,
                targets,
            }),
            _ => Err(problems.into()),
        }
    }

    /// Loads and validates the database settings alone, for commands that only touch
    /// PostgreSQL (`sink migrate`, `sink report`): other sections are not required.
    pub fn load_database(source: &SettingsSource) -> Result<DatabaseSettings, ConfigError> {
        let tree = source.tree()?;
        let base_dir = source.base_dir();
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);
        let present = root.has("database") || root.has("db");
        let database = read_database(&mut root, &base_dir, &mut problems);
        if !present {
            problems.push(Problem::new(
                "database",
                "is missing: set database.url (or WEBMON__DATABASE__URL), or host, name and user",
            ));
        }
        match database {
            Some(d) if problems.is_empty() => Ok(d),
            _ => Err(problems.into()),
        }
    }
}

fn read_sink_section(
    root: &mut Section<'_>,
    base_dir: &std::path::Path,
    problems: &mut Problems,
) -> SinkSection {
    let mut s = root.section("sink", problems);
    let batch_size = s.integer("batch_size", 5000, 1, 1_000_000, problems) as usize;
    let batch_linger = s
        .duration_within(
            "batch_linger",
            Duration::from_millis(200),
            MAX_BATCH_LINGER,
            problems,
        )
        .unwrap_or(Duration::from_millis(200));
    let fetch_max_wait = s
        .duration_within(
            "fetch_max_wait",
            Duration::from_millis(500),
            MAX_FETCH_MAX_WAIT,
            problems,
        )
        .unwrap_or(Duration::from_millis(500));
    let max_bytes_in_flight = read_max_bytes_in_flight(&mut s, problems);
    let migrate_on_start = s.bool("migrate_on_start", true, problems);
    let retention = if s.has("retention") {
        s.duration("retention", Duration::ZERO, problems)
    } else {
        s.raw("retention");
        None
    };
    let rebalance_interval = s
        .duration_within(
            "rebalance_interval",
            Duration::from_secs(2),
            MAX_REBALANCE_INTERVAL,
            problems,
        )
        .unwrap_or(Duration::from_secs(2));
    let admin_listen = read_admin_listen(&mut s, SINK_ADMIN_LISTEN, problems);
    let http_listen = read_http_listen(&mut s, problems);
    let api = read_api_section(&mut s, base_dir, problems);
    let verdicts = read_verdict_section(&mut s, problems);
    let maintenance = read_windows(&mut s, problems);
    let notifications = read_notify_section(&mut s, base_dir, problems);
    let status = read_status_section(&mut s, problems);
    let shutdown_timeout = s
        .duration("shutdown_timeout", SINK_SHUTDOWN_TIMEOUT, problems)
        .unwrap_or(SINK_SHUTDOWN_TIMEOUT);
    if !(SINK_SHUTDOWN_TIMEOUT_MIN..=SINK_SHUTDOWN_TIMEOUT_MAX).contains(&shutdown_timeout) {
        problems.push(Problem::new(
            &s.path_of("shutdown_timeout"),
            format!(
                "{shutdown_timeout:?} is out of range: give {SINK_SHUTDOWN_TIMEOUT_MIN:?} to {SINK_SHUTDOWN_TIMEOUT_MAX:?}, well under the pod's termination grace period"
            ),
        ));
    }
    s.finish(problems);
    SinkSection {
        batch_size,
        max_bytes_in_flight,
        batch_linger,
        fetch_max_wait,
        migrate_on_start,
        retention,
        rebalance_interval,
        admin_listen,
        http_listen,
        api,
        shutdown_timeout,
        verdicts,
        maintenance,
        notifications,
        status,
    }
}

/// `sink.max_bytes_in_flight`, within [`MIN_MAX_BYTES_IN_FLIGHT`] and
/// [`MAX_MAX_BYTES_IN_FLIGHT`].
fn read_max_bytes_in_flight(s: &mut Section<'_>, problems: &mut Problems) -> u64 {
    let bytes = s.size(
        "max_bytes_in_flight",
        DEFAULT_MAX_BYTES_IN_FLIGHT,
        MAX_MAX_BYTES_IN_FLIGHT,
        problems,
    );
    if bytes < MIN_MAX_BYTES_IN_FLIGHT {
        problems.push(Problem::new(
            &s.path_of("max_bytes_in_flight"),
            format!(
                "{bytes} bytes is below the minimum {}: give at least \"1MiB\" (one message at a broker's default bound)",
                format_size(MIN_MAX_BYTES_IN_FLIGHT)
            ),
        ));
        return DEFAULT_MAX_BYTES_IN_FLIGHT;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_with(shutdown_timeout: Option<&str>) -> Result<SinkSettings, ConfigError> {
        sink_with_env("WEBMON__SINK__SHUTDOWN_TIMEOUT", shutdown_timeout)
    }

    fn sink_with_env(key: &str, value: Option<&str>) -> Result<SinkSettings, ConfigError> {
        let mut env: std::collections::HashMap<String, String> = [
            ("WEBMON__KAFKA__BROKERS", "k:9092"),
            ("WEBMON__KAFKA__TOPIC", "t"),
            ("WEBMON__DATABASE__URL", "postgres://u@h/db"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(v) = value {
            env.insert(key.into(), v.into());
        }
        SinkSettings::load(&crate::settings::SettingsSource {
            file: None,
            env: Some(env),
            base_dir: None,
        })
    }

    #[test]
    fn the_sinks_shutdown_timeout_defaults_well_under_a_pods_grace_and_is_bounded() {
        let default = sink_with(None).expect("valid");
        assert_eq!(default.sink.shutdown_timeout, SINK_SHUTDOWN_TIMEOUT);
        let set = sink_with(Some("5s")).expect("valid");
        assert_eq!(set.sink.shutdown_timeout, Duration::from_secs(5));
        for bad in ["1s", "2h"] {
            let err = sink_with(Some(bad)).expect_err("out of range").to_string();
            assert!(err.contains("sink.shutdown_timeout"), "{bad}: {err}");
            assert!(err.contains("termination grace"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_sinks_bytes_in_flight_default_and_bounds() {
        let key = "WEBMON__SINK__MAX_BYTES_IN_FLIGHT";
        let default = sink_with_env(key, None).expect("valid");
        assert_eq!(
            default.sink.max_bytes_in_flight,
            DEFAULT_MAX_BYTES_IN_FLIGHT
        );
        let set = sink_with_env(key, Some("16MiB")).expect("valid");
        assert_eq!(set.sink.max_bytes_in_flight, 16 << 20);
        for bad in ["512KiB", "100GiB", "lots"] {
            let err = sink_with_env(key, Some(bad))
                .expect_err("refused")
                .to_string();
            assert!(err.contains("sink.max_bytes_in_flight"), "{bad}: {err}");
        }
    }
}
