//! How reports become verdicts: the `[sink.verdicts]` defaults and each target's overrides
//! (`quorum`, `down_after`, `up_after` in a `monitored_urls` entry). The sink's verdicts fold
//! reads them; the checker accepts the target keys and ignores them.
//!
//! Grace and the region window are counted in periods of the target (event time), so one
//! setting fits targets checked every second and every hour alike.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::problems::{Problem, Problems};
use super::walk::{describe, show, Section};

/// Most regions a quorum may name as a number (and most regions a target's state tracks).
pub const MAX_REGIONS: u32 = 64;
/// Longest run of verdicts a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 1000;
/// Default `down_after`: consecutive down verdicts before a target is down.
pub const DEFAULT_DOWN_AFTER: u32 = 3;
/// Default `up_after`: consecutive up verdicts before a down target is up again.
pub const DEFAULT_UP_AFTER: u32 = 2;
/// Default `grace`, in periods: a slot is final once a report this much newer has arrived.
pub const DEFAULT_GRACE_PERIODS: u32 = 1;
/// Largest `grace`, in periods.
pub const MAX_GRACE_PERIODS: u32 = 100;
/// Default `region_window`, in periods: a region silent longer is no longer expected.
pub const DEFAULT_REGION_WINDOW_PERIODS: u32 = 10;
/// Largest `region_window`, in periods.
pub const MAX_REGION_WINDOW_PERIODS: u32 = 100_000;
/// Default `cert_warning`: a certificate expiring sooner than this is a warning.
pub const DEFAULT_CERT_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// Longest `cert_warning`.
pub const MAX_CERT_WARNING: Duration = Duration::from_secs(365 * 86_400);
/// Default `retention` of verdict hours and closed incidents: 400 days, so a yearly SLA and
/// a 90-day status page always have their data, whatever `sink.retention` keeps of the raw
/// results.
pub const DEFAULT_VERDICT_RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// Shortest verdict `retention`: the status page's 90 days.
pub const MIN_VERDICT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// How many regions must report a slot down for the slot's verdict to be down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quorum {
    /// One region.
    Any,
    /// More than half of the expected regions.
    #[default]
    Majority,
    /// Every expected region.
    All,
    /// At least this many regions (at most the expected regions).
    AtLeast(u32),
}

impl Quorum {
    /// The number of down reports that make a slot down, out of `expected` regions (at least
    /// one; a number above `expected` asks for every expected region).
    pub fn needed(self, expected: usize) -> usize {
        let expected = expected.max(1);
        match self {
            Quorum::Any => 1,
            Quorum::Majority => expected / 2 + 1,
            Quorum::All => expected,
            Quorum::AtLeast(n) => usize::try_from(n).unwrap_or(usize::MAX).clamp(1, expected),
        }
    }
}

impl FromStr for Quorum {
    type Err = String;

    fn from_str(text: &str) -> Result<Quorum, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "any" => return Ok(Quorum::Any),
            "majority" => return Ok(Quorum::Majority),
            "all" => return Ok(Quorum::All),
            _ => {}
        }
        match text.parse::<u32>() {
            Ok(n) if (1..=MAX_REGIONS).contains(&n) => Ok(Quorum::AtLeast(n)),
            _ => Err(format!(
                "{text:?} is not a quorum: write any, majority, all, or a number of regions from 1 to {MAX_REGIONS}"
            )),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Any => f.write_str("any"),
            Quorum::Majority => f.write_str("majority"),
            Quorum::All => f.write_str("all"),
            Quorum::AtLeast(n) => write!(f, "{n}"),
        }
    }
}

/// The `[sink.verdicts]` section: how the sink turns reports into verdicts, state and
/// incidents, by default.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictSettings {
    /// Regions that must report a slot down for it to be down.
    pub quorum: Quorum,
    /// Consecutive down verdicts before the target is down (and an incident opens).
    pub down_after: u32,
    /// Consecutive up verdicts before a down target is up (and its incident closes).
    pub up_after: u32,
    /// A slot is final once a report of the target this many periods newer has arrived, even
    /// if an expected region has not reported it.
    pub grace_periods: u32,
    /// A region that has not reported the target for this many periods is no longer expected
    /// (and is reported silent).
    pub region_window_periods: u32,
    /// A certificate expiring within this of a check is a warning.
    pub cert_warning: Duration,
    /// Verdict hours and closed incidents older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for VerdictSettings {
    fn default() -> Self {
        VerdictSettings {
            quorum: Quorum::default(),
            down_after: DEFAULT_DOWN_AFTER,
            up_after: DEFAULT_UP_AFTER,
            grace_periods: DEFAULT_GRACE_PERIODS,
            region_window_periods: DEFAULT_REGION_WINDOW_PERIODS,
            cert_warning: DEFAULT_CERT_WARNING,
            retention: Some(DEFAULT_VERDICT_RETENTION),
        }
    }
}

/// A target's own verdict settings; `None` takes the `[sink.verdicts]` default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetVerdicts {
    /// `quorum` of the target.
    pub quorum: Option<Quorum>,
    /// `down_after` of the target.
    pub down_after: Option<u32>,
    /// `up_after` of the target.
    pub up_after: Option<u32>,
}

/// Reads `[sink.verdicts]` from the sink section.
pub(crate) fn read_verdict_section(
    sink: &mut Section<'_>,
    problems: &mut Problems,
) -> VerdictSettings {
    let mut s = sink.section("verdicts", problems);
    let d = VerdictSettings::default();
    let verdicts = VerdictSettings {
        quorum: read_quorum(&mut s, problems).unwrap_or(d.quorum),
        down_after: count(&mut s, "down_after", d.down_after, MAX_THRESHOLD, problems),
        up_after: count(&mut s, "up_after", d.up_after, MAX_THRESHOLD, problems),
        grace_periods: count(
            &mut s,
            "grace",
            d.grace_periods,
            MAX_GRACE_PERIODS,
            problems,
        ),
        region_window_periods: count(
            &mut s,
            "region_window",
            d.region_window_periods,
            MAX_REGION_WINDOW_PERIODS,
            problems,
        ),
        cert_warning: s
            .duration_within("cert_warning", d.cert_warning, MAX_CERT_WARNING, problems)
            .unwrap_or(d.cert_warning),
        retention: read_retention(&mut s, problems),
    };
    if verdicts.region_window_periods <= verdicts.grace_periods {
        problems.push(Problem::new(
            &s.path_of("region_window"),
            format!(
                "{} periods is not more than grace {}: a region would drop out before its slots are final",
                verdicts.region_window_periods, verdicts.grace_periods
            ),
        ));
    }
    s.finish(problems);
    verdicts
}

/// Reads `retention`: a duration of at least [`MIN_VERDICT_RETENTION`], or `"forever"`.
fn read_retention(s: &mut Section<'_>, problems: &mut Problems) -> Option<Duration> {
    if s.raw("retention").and_then(Value::as_str) == Some("forever") {
        return None;
    }
    let retention = s.duration("retention", DEFAULT_VERDICT_RETENTION, problems)?;
    if retention < MIN_VERDICT_RETENTION {
        problems.push(Problem::new(
            &s.path_of("retention"),
            format!(
                "{} is shorter than the status page's 90 days: give at least 90d, or \"forever\"",
                show(retention)
            ),
        ));
    }
    Some(retention)
}

/// Reads a target's `quorum`, `down_after` and `up_after`.
pub(crate) fn read_target_verdicts(s: &mut Section<'_>, problems: &mut Problems) -> TargetVerdicts {
    let present = |s: &Section<'_>, key| s.has(key);
    let down_after =
        present(s, "down_after").then(|| count(s, "down_after", 1, MAX_THRESHOLD, problems));
    let up_after = present(s, "up_after").then(|| count(s, "up_after", 1, MAX_THRESHOLD, problems));
    TargetVerdicts {
        quorum: read_quorum(s, problems),
        down_after,
        up_after,
    }
}

/// A count (of verdicts, of periods) from 1 to `max`.
fn count(s: &mut Section<'_>, key: &str, default: u32, max: u32, problems: &mut Problems) -> u32 {
    s.integer(key, i64::from(default), 1, i64::from(max), problems) as u32
}

/// `quorum`: a number of regions, or `any`, `majority`, `all`.
fn read_quorum(s: &mut Section<'_>, problems: &mut Problems) -> Option<Quorum> {
    let value = s.raw("quorum")?;
    let text = match value {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        other => describe(other),
    };
    match text.parse() {
        Ok(q) => Some(q),
        Err(why) => {
            problems.push(Problem::new(&s.path_of("quorum"), why));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_parse_and_count_out_of_the_expected_regions() {
        assert_eq!("majority".parse(), Ok(Quorum::Majority));
        assert_eq!(" ANY ".parse(), Ok(Quorum::Any));
        assert_eq!("all".parse(), Ok(Quorum::All));
        assert_eq!("2".parse(), Ok(Quorum::AtLeast(2)));
        assert!("0".parse::<Quorum>().is_err());
        assert!("most".parse::<Quorum>().is_err());
        assert_eq!(Quorum::Majority.needed(3), 2);
        assert_eq!(Quorum::Majority.needed(2), 2);
        assert_eq!(Quorum::Majority.needed(1), 1);
        assert_eq!(Quorum::Majority.needed(0), 1);
        assert_eq!(Quorum::All.needed(3), 3);
        assert_eq!(Quorum::Any.needed(3), 1);
        assert_eq!(Quorum::AtLeast(5).needed(3), 3, "never more than expected");
        assert_eq!(Quorum::AtLeast(2).to_string(), "2");
    }

    fn retention_of(value: Value) -> (Option<Duration>, Problems) {
        let root = serde_json::json!({ "sink": { "verdicts": { "retention": value } } });
        let mut problems = Problems::default();
        let mut sink = Section::root(&root, &mut problems).section("sink", &mut problems);
        let verdicts = read_verdict_section(&mut sink, &mut problems);
        (verdicts.retention, problems)
    }

    #[test]
    fn retention_is_at_least_the_status_pages_90_days_or_forever() {
        let (r, p) = retention_of(Value::from("400d"));
        assert_eq!((r, p.len()), (Some(Duration::from_secs(400 * 86_400)), 0));
        let (r, p) = retention_of(Value::from("forever"));
        assert_eq!((r, p.len()), (None, 0));
        let (_, p) = retention_of(Value::from("30d"));
        let text = p.to_string();
        assert!(
            text.contains("sink.verdicts.retention") && text.contains("90d"),
            "{text}"
        );
        let (r, p) = retention_of(Value::Null);
        assert_eq!((r, p.len()), (Some(DEFAULT_VERDICT_RETENTION), 0));
    }
}
