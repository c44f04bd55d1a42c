//! The checker's settings: the sections it reads (targets, Kafka unless it only prints) and
//! its own `[checker]` section, with the shard it checks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::kafka::{read_kafka, KafkaSettings};
use super::problems::{ConfigError, Problem, Problems};
use super::source::SettingsSource;
use super::target::{read_targets, Reader, TargetSettings};
use super::units::format_size;
use super::walk::{read_admin_listen, resolve, Section};

/// Default bound on checks running at once in one checker.
pub const DEFAULT_MAX_IN_FLIGHT: i64 = 1000;

/// Default `checker.max_body_memory`: the bytes all checks in flight together may hold of
/// response bodies they match patterns against.
pub const DEFAULT_MAX_BODY_MEMORY: u64 = 256 << 20;
/// Largest `checker.max_body_memory`.
pub const MAX_MAX_BODY_MEMORY: u64 = 64 << 30;
/// Longest `checker.linger`: reports wait in memory at most this long to fill a round.
pub const MAX_LINGER: Duration = Duration::from_secs(60);
/// Longest `checker.produce_timeout`.
pub const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `checker.shutdown_timeout`.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest `checker.watch_config` interval.
pub const MAX_WATCH_CONFIG: Duration = Duration::from_secs(86_400);
/// Largest `checker.spool_max_bytes`.
pub const MAX_SPOOL_BYTES: u64 = 1 << 40;
/// Everything the checker needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerSettings {
    /// The `checker` section.
    pub checker: CheckerSection,
    /// Where reports go; `None` when the section is absent (allowed for `--once`/`--stdout`).
    pub kafka: Option<KafkaSettings>,
    /// What to check, in configuration order.
    pub targets: Vec<TargetSettings>,
}

/// The `checker` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerSection {
    /// Names this checker instance or region in every report. Default: the `HOSTNAME`
    /// environment variable, else `checker`.
    pub id: String,
    /// Bound on checks running at once.
    pub max_in_flight: usize,
    /// Bound on the body bytes all checks in flight hold at once, for their patterns. At least
    /// every target's `body_limit`.
    pub max_body_memory: u64,
    /// Which share of the targets this replica checks.
    pub shard: Shard,
    /// How the reports reach Kafka.
    pub producer: ProducerSettings,
    /// Address of the admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: String,
    /// How often the settings file is read for changes, which then take effect as on SIGHUP;
    /// `None` (`watch_config = false`): on SIGHUP only.
    pub watch_config: Option<Duration>,
}

/// How often the checker looks for changes of its settings file, by default.
pub const DEFAULT_WATCH_CONFIG: Duration = Duration::from_secs(10);

/// Default admin address of the checker.
pub const CHECKER_ADMIN_LISTEN: &str = "0.0.0.0:9101";

/// How the checker's reports reach Kafka, and where they wait when it cannot be reached.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSettings {
    /// Longest a report waits in memory to fill a batch.
    pub linger: Duration,
    /// Most reports in one produce round (all partitions together).
    pub batch_max_reports: usize,
    /// Reports held in memory between the checks and the producer.
    pub queue_capacity: usize,
    /// A produce round slower than this sends its reports, and what follows, to the spool.
    pub produce_timeout: Duration,
    /// Where reports wait on disk while Kafka is unreachable or slow.
    pub spool_dir: PathBuf,
    /// Largest size of the spool, in bytes; past it the oldest reports are dropped.
    pub spool_max_bytes: u64,
    /// At shutdown, how long checks in flight and the last deliveries may take.
    pub shutdown_timeout: Duration,
}

/// A share of the targets: replica `index` of `count` (from 0). Each target belongs to exactly
/// one share, chosen by a hash of its id (the checker's `schedule::shard::owns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This replica, from 0.
    pub index: u32,
    /// How many replicas share the targets.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("{text:?} is not a shard: write I/N with 0 <= I < N, e.g. 0/3");
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl CheckerSettings {
    /// Loads and validates. With `needs_kafka`, a missing `kafka` section is a problem too.
    pub fn load(
        source: &SettingsSource,
        needs_kafka: bool,
    ) -> Result<CheckerSettings, ConfigError> {
        let tree = source.tree()?;
        let base_dir = source.base_dir();
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);

        let checker = read_checker_section(&mut root, &base_dir, &mut problems);
        let kafka_present = root.has("kafka");
        let kafka = read_kafka(&mut root, &base_dir, &mut problems);
        if needs_kafka && !kafka_present {
            problems.push(Problem::new(
                "kafka",
                "is missing: the checker produces its reports to Kafka (or run it with --once or --stdout)",
            ));
        }
        let targets = read_targets(&mut root, &base_dir, Reader::Checker, &mut problems);
        root.finish(&mut problems);
        if problems.is_empty() {
            check_body_memory(&checker, &targets, &mut problems);
        }

        if problems.is_empty() {
            Ok(CheckerSettings {
                checker,
                kafka,
                targets,
            })
        } else {
            Err(problems.into())
        }
    }
}

/// A check holds up to its `body_limit` of the body memory budget at once: a target whose
/// limit is above the whole budget could never run. (Called when every target was read, so
/// `targets[i]` is `monitored_urls[i]`.)
fn check_body_memory(
    checker: &CheckerSection,
    targets: &[TargetSettings],
    problems: &mut Problems,
) {
    for (i, t) in targets.iter().enumerate() {
        if t.body_limit > checker.max_body_memory {
            problems.push(Problem::new(
                &format!("monitored_urls[{i}].body_limit"),
                format!(
                    "{} is above checker.max_body_memory {}: lower it or raise the budget",
                    format_size(t.body_limit),
                    format_size(checker.max_body_memory)
                ),
            ));
        }
    }
}

fn read_checker_section(
    root: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> CheckerSection {
    let mut s = root.section("checker", problems);
    let id = read_checker_id(&mut s, problems);
    let max_in_flight = s.integer(
        "max_in_flight",
        DEFAULT_MAX_IN_FLIGHT,
        1,
        1_000_000,
        problems,
    ) as usize;
    let max_body_memory = s.size(
        "max_body_memory",
        DEFAULT_MAX_BODY_MEMORY,
        MAX_MAX_BODY_MEMORY,
        problems,
    );
    let shard = match s.string("shard", problems) {
        None => Shard::default(),
        Some(text) => text.parse().unwrap_or_else(|why: String| {
            problems.push(Problem::new(&s.path_of("shard"), why));
            Shard::default()
        }),
    };
    let producer = read_producer(&mut s, base_dir, problems);
    let admin_listen = read_admin_listen(&mut s, CHECKER_ADMIN_LISTEN, problems);
    let watch_config = read_watch_config(&mut s, problems);
    s.finish(problems);
    CheckerSection {
        id,
        max_in_flight,
        max_body_memory,
        shard,
        producer,
        admin_listen,
        watch_config,
    }
}

/// `checker.id`, else the `HOSTNAME` environment variable, else `checker`; it must fit in a
/// report.
fn read_checker_id(s: &mut Section<'_>, problems: &mut Problems) -> String {
    let id = s
        .string("id", problems)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "checker".into());
    let id_chars = id.chars().count();
    if id_chars > crate::report::MAX_ID_CHARS {
        problems.push(Problem::new(
            &s.path_of("id"),
            format!(
                "is {id_chars} characters (from checker.id or HOSTNAME): reports allow at most {}",
                crate::report::MAX_ID_CHARS
            ),
        ));
    }
    id
}

/// The producer's keys of the `checker` section.
fn read_producer(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> ProducerSettings {
    ProducerSettings {
        linger: s
            .duration_within("linger", Duration::from_millis(50), MAX_LINGER, problems)
            .unwrap_or(Duration::from_millis(50)),
        batch_max_reports: s.integer("batch_max_reports", 10_000, 1, 1_000_000, problems) as usize,
        queue_capacity: s.integer("queue_capacity", 100_000, 1, 10_000_000, problems) as usize,
        produce_timeout: s
            .duration_within(
                "produce_timeout",
                Duration::from_secs(1),
                MAX_PRODUCE_TIMEOUT,
                problems,
            )
            .unwrap_or(Duration::from_secs(1)),
        spool_dir: s
            .string("spool_dir", problems)
            .map(|d| resolve(base_dir, &d))
            .unwrap_or_else(|| base_dir.join("spool")),
        spool_max_bytes: s.size(
            "spool_max_bytes",
            1024 * 1024 * 1024,
            MAX_SPOOL_BYTES,
            problems,
        ),
        shutdown_timeout: s
            .duration_within(
                "shutdown_timeout",
                Duration::from_secs(10),
                MAX_SHUTDOWN_TIMEOUT,
                problems,
            )
            .unwrap_or(Duration::from_secs(10)),
    }
}

/// `checker.watch_config`: an interval, `true` for the default one, or `false` for SIGHUP
/// only.
fn read_watch_config(s: &mut Section<'_>, problems: &mut Problems) -> Option<Duration> {
    match s.raw("watch_config") {
        Some(serde_json::Value::Bool(false)) => None,
        Some(serde_json::Value::String(off)) if off.eq_ignore_ascii_case("false") => None,
        Some(serde_json::Value::Bool(true)) => Some(DEFAULT_WATCH_CONFIG),
        Some(serde_json::Value::String(on)) if on.eq_ignore_ascii_case("true") => {
            Some(DEFAULT_WATCH_CONFIG)
        }
        _ => s.duration_within(
            "watch_config",
            DEFAULT_WATCH_CONFIG,
            MAX_WATCH_CONFIG,
            problems,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("a/b".parse::<Shard>().is_err());
        assert!("2".parse::<Shard>().is_err());
    }
}
