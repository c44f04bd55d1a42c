//! What the fold keeps per target between reports, and what it reads of a report: the
//! [`TargetState`] stored in `target_states.fold` (JSON, kept as text) and written in the same transaction
//! as the reports that changed it, so it is always the state after exactly the stored reports.
//!
//! Times are microseconds since the Unix epoch ([`Micros`]), the report contract's own
//! precision, so that slots compare and add exactly. The stored form is written for every
//! target of every batch, and writing it is most of what the verdicts cost the database, so
//! it uses short keys (`rg`: regions, `sl`: silent regions, read by the views) and leaves
//! out what is empty.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use monitor_core::report::{FailureClass, Report, Status};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::latency::Histogram;

/// A time: microseconds since the Unix epoch.
pub type Micros = i64;

/// Most slots a target keeps waiting to be final; past it the oldest is made final. Grace is
/// at most 100 periods, so this holds every slot a grace can keep waiting.
pub const MAX_PENDING_SLOTS: usize = 256;

/// Most regions a target's state tracks; past it the one silent longest is forgotten.
pub const MAX_REGIONS: usize = monitor_core::settings::MAX_REGIONS as usize;

/// Namespace of incident ids: an incident's id is the UUID v5 of its target, kind and opening
/// slot in this namespace, so a replay produces the same ids.
pub const INCIDENT_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_2a8e_77d1_4c1b_9a43_0e6b_d2f1_a9c7);

/// A time as a [`DateTime`].
pub fn to_time(micros: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// What one region's report says of a slot (stored as `u`, `m`, or `{"d": {"c", "e"}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The target answered as expected.
    #[serde(rename = "u")]
    Up,
    /// The target failed, for this reason.
    #[serde(rename = "d")]
    Down {
        /// The failure class (`None` from a report that named none).
        #[serde(rename = "c")]
        class: Option<FailureClass>,
        /// The report's error text.
        #[serde(rename = "e")]
        error: Option<String>,
    },
    /// The checker could not check: no news of the target.
    #[serde(rename = "m")]
    Missed,
}

/// What the fold reads of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFacts {
    /// The target.
    pub target_id: String,
    /// The region (the report's `checker_id`).
    pub region: String,
    /// The slot (`scheduled_at`).
    pub slot: Micros,
    /// The target's period, in microseconds (at least 1).
    pub period_us: i64,
    /// What the region found.
    pub outcome: Outcome,
    /// Expiry of the server's certificate, when the check saw one.
    pub cert_not_after: Option<Micros>,
    /// The check's total time in milliseconds, when it found the target up.
    pub response_ms: Option<f64>,
}

impl ReportFacts {
    /// The facts of `report`.
    pub fn of(report: &Report) -> ReportFacts {
        let outcome = match report.status {
            Status::Up => Outcome::Up,
            Status::Down => Outcome::Down {
                class: report.failure_class,
                error: report.error.clone(),
            },
            Status::Missed => Outcome::Missed,
        };
        ReportFacts {
            target_id: report.target_id.clone(),
            region: report.checker_id.clone(),
            slot: report.scheduled_at.timestamp_micros(),
            period_us: ((report.period_s * 1e6) as i64).max(1),
            outcome,
            cert_not_after: report.tls_cert_not_after.map(|t| t.timestamp_micros()),
            response_ms: report
                .response_time_ms
                .filter(|_| report.status == Status::Up),
        }
    }
}

/// A final slot's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least the quorum of regions found the target down.
    Down,
    /// Some regions, fewer than the quorum, found it down.
    Degraded,
    /// No region found it down, and at least one found it up.
    Up,
    /// Every report of the slot was `missed`: nothing is known.
    Unknown,
}

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Up.
    Up,
    /// Down: a `down` incident is open.
    Down,
    /// Failing for some regions: a `degraded` period is open.
    Degraded,
    /// Not yet known.
    #[default]
    Unknown,
}

impl State {
    /// The spelling in the database and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Degraded => "degraded",
            State::Unknown => "unknown",
        }
    }
}

/// What an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The target was down (a quorum of regions).
    Down,
    /// The target was failing for some regions only.
    Degraded,
}

impl Kind {
    /// The spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Down => "down",
            Kind::Degraded => "degraded",
        }
    }
}

/// An hour, in microseconds: verdicts are counted per target and hour.
pub const HOUR_US: i64 = 3_600_000_000;

/// Final slots of one hour by verdict: up, degraded, down, unknown; and the response times of
/// the up checks folded while it was the newest hour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HourCounts {
    /// The hour's start.
    #[serde(rename = "h")]
    pub hour: Micros,
    /// Slots by verdict, in the order of [`Verdict::index`], outside maintenance windows.
    #[serde(rename = "c")]
    pub counts: [u32; 4],
    /// Slots in a maintenance window, whatever their verdict: left out of uptime.
    #[serde(rename = "m", default, skip_serializing_if = "is_zero")]
    pub maintenance: u32,
    /// Response times of the checks that found the target up, folded while this was the
    /// newest hour (a check is counted when folded, its slot final or not: at an hour's turn
    /// a grace period's worth falls in the hour before).
    #[serde(rename = "rt", default, skip_serializing_if = "Histogram::is_empty")]
    pub response: Histogram,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Verdict {
    /// The verdict's place in [`HourCounts::counts`] and `verdict_hours`' columns.
    pub fn index(self) -> usize {
        match self {
            Verdict::Up => 0,
            Verdict::Degraded => 1,
            Verdict::Down => 2,
            Verdict::Unknown => 3,
        }
    }
}

/// How often one failure class was seen, and the first error text seen with it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cause {
    /// Down reports of this class.
    #[serde(rename = "n")]
    pub count: u32,
    /// The first error text of this class.
    #[serde(rename = "e", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The down reports of a run of slots: how many, from which regions, for what.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Down reports.
    #[serde(rename = "n")]
    pub checks_failed: u32,
    /// Regions that reported the target down.
    #[serde(rename = "r")]
    pub regions: BTreeSet<String>,
    /// Down reports by failure class (`unknown` when a report named none).
    #[serde(rename = "c")]
    pub causes: BTreeMap<String, Cause>,
}

impl Tally {
    /// Whether it holds no down report.
    pub fn is_empty(&self) -> bool {
        self.checks_failed == 0 && self.regions.is_empty() && self.causes.is_empty()
    }

    /// Adds the down reports of one slot.
    pub fn add_slot(&mut self, reports: &BTreeMap<String, Outcome>) {
        for (region, outcome) in reports {
            let Outcome::Down { class, error } = outcome else {
                continue;
            };
            self.checks_failed = self.checks_failed.saturating_add(1);
            if self.regions.len() < MAX_REGIONS || self.regions.contains(region) {
                self.regions.insert(region.clone());
            }
            let class = class.map_or("unknown", FailureClass::as_str);
            let cause = self.causes.entry(class.to_string()).or_default();
            cause.count = cause.count.saturating_add(1);
            if cause.error.is_none() {
                cause.error.clone_from(error);
            }
        }
    }

    /// Adds another tally.
    pub fn add(&mut self, other: &Tally) {
        self.checks_failed = self.checks_failed.saturating_add(other.checks_failed);
        for region in &other.regions {
            if self.regions.len() < MAX_REGIONS {
                self.regions.insert(region.clone());
            }
        }
        for (class, c) in &other.causes {
            let cause = self.causes.entry(class.clone()).or_default();
            cause.count = cause.count.saturating_add(c.count);
            if cause.error.is_none() {
                cause.error.clone_from(&c.error);
            }
        }
    }

    /// The class seen most often (the first by name among equals), and its first error.
    pub fn dominant(&self) -> Option<(&str, Option<&str>)> {
        let mut best: Option<(&String, &Cause)> = None;
        for (class, cause) in &self.causes {
            if best.is_none_or(|(_, b)| cause.count > b.count) {
                best = Some((class, cause));
            }
        }
        best.map(|(class, cause)| (class.as_str(), cause.error.as_deref()))
    }
}

/// A run of consecutive verdicts of one sort: where it started, how long it is, and the down
/// reports in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its first slot.
    #[serde(rename = "a")]
    pub first: Micros,
    /// Its verdicts.
    #[serde(rename = "c")]
    pub count: u32,
    /// Its down reports.
    #[serde(rename = "t", default, skip_serializing_if = "Tally::is_empty")]
    pub tally: Tally,
}

/// The runs the thresholds look at; `None` where the last verdict broke the run. `Unknown`
/// verdicts neither extend nor break a run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Runs {
    /// Consecutive `down` verdicts.
    #[serde(rename = "d", skip_serializing_if = "Option::is_none")]
    pub down: Option<Run>,
    /// Consecutive `down` or `degraded` verdicts.
    #[serde(rename = "f", skip_serializing_if = "Option::is_none")]
    pub failing: Option<Run>,
    /// Consecutive `up` verdicts.
    #[serde(rename = "u", skip_serializing_if = "Option::is_none")]
    pub up: Option<Run>,
    /// Consecutive `up` or `degraded` verdicts.
    #[serde(rename = "n", skip_serializing_if = "Option::is_none")]
    pub not_down: Option<Run>,
}

impl Runs {
    /// The length of a run (0 when broken).
    pub fn len(run: &Option<Run>) -> u32 {
        run.as_ref().map_or(0, |r| r.count)
    }
}

/// An incident or a degraded period, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// UUID v5 of the target, the kind and the opening slot ([`INCIDENT_NAMESPACE`]).
    pub id: Uuid,
    /// The target.
    pub target_id: String,
    /// Down or degraded.
    pub kind: Kind,
    /// The first failing slot of the run that opened it.
    pub opened_at: Micros,
    /// The slot whose verdict crossed the threshold.
    pub detected_at: Micros,
    /// The first good slot of the run that ended it.
    pub closed_at: Option<Micros>,
    /// Its down reports.
    pub tally: Tally,
    /// Opened in a maintenance window and not notified (until it outlasts the window).
    #[serde(default, skip_serializing_if = "is_false")]
    pub maintenance: bool,
}

impl Incident {
    /// An incident of `target_id` opened at `opened_at`, detected at `detected_at`.
    pub fn open(
        target_id: &str,
        kind: Kind,
        opened_at: Micros,
        detected_at: Micros,
        tally: Tally,
    ) -> Incident {
        let name = format!("{target_id}\n{}\n{opened_at}", kind.as_str());
        Incident {
            id: Uuid::new_v5(&INCIDENT_NAMESPACE, name.as_bytes()),
            target_id: target_id.to_string(),
            kind,
            opened_at,
            detected_at,
            closed_at: None,
            tally,
            maintenance: false,
        }
    }
}

/// The certificate as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Its expiry.
    #[serde(rename = "na")]
    pub not_after: Micros,
    /// The slot of the check that saw it.
    #[serde(rename = "at")]
    pub seen_at: Micros,
    /// Whether it expires within the warning threshold of that check.
    #[serde(rename = "w")]
    pub warning: bool,
}

/// Everything the fold keeps of one target. Fields missing from a stored state (written by
/// an older sink) take their defaults; fields this sink does not know are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetState {
    /// The state.
    #[serde(rename = "st")]
    pub state: State,
    /// The slot the state began at.
    #[serde(rename = "sn", skip_serializing_if = "Option::is_none")]
    pub since: Option<Micros>,
    /// The newest slot reported (the target's event-time watermark).
    #[serde(rename = "wm", skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Micros>,
    /// The newest final slot: a report of this slot or an older one is late.
    #[serde(rename = "lf", skip_serializing_if = "Option::is_none")]
    pub last_final: Option<Micros>,
    /// The period of the newest report, in microseconds.
    #[serde(rename = "p")]
    pub period_us: i64,
    /// Each region's newest reported slot.
    #[serde(rename = "rg")]
    pub regions: BTreeMap<String, Micros>,
    /// Regions that stopped reporting within the region window.
    #[serde(rename = "sl", skip_serializing_if = "BTreeSet::is_empty")]
    pub silent: BTreeSet<String>,
    /// Slots not final yet: each region's outcome.
    #[serde(rename = "pd", skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<Micros, BTreeMap<String, Outcome>>,
    /// The runs of verdicts.
    #[serde(rename = "ru")]
    pub runs: Runs,
    /// The open incident or degraded period.
    #[serde(rename = "op", skip_serializing_if = "Option::is_none")]
    pub open: Option<Incident>,
    /// The certificate, once seen.
    #[serde(rename = "ce", skip_serializing_if = "Option::is_none")]
    pub cert: Option<Certificate>,
    /// The final slots of the newest hour, by verdict: added to `verdict_hours` when a slot
    /// of a later hour is final (readers add the current hour from here).
    #[serde(rename = "hr", skip_serializing_if = "Option::is_none")]
    pub hour: Option<HourCounts>,
    /// The certificate expiry last notified and the smallest threshold (days) notified for
    /// it, so each threshold of each certificate is notified once.
    #[serde(rename = "cn", skip_serializing_if = "Option::is_none")]
    pub cert_notified: Option<(Micros, u32)>,
}

/// What a report changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A slot became final with this verdict.
    Verdict {
        /// The slot.
        slot: Micros,
        /// Its verdict.
        verdict: Verdict,
    },
    /// An hour's verdict counts are complete (a slot of a later hour is final).
    HourCounted(HourCounts),
    /// The target's state changed.
    State {
        /// Before.
        from: State,
        /// After.
        to: State,
        /// The slot the new state began at.
        at: Micros,
    },
    /// An incident or degraded period opened.
    Opened(Incident),
    /// An open incident's tally grew.
    Updated(Incident),
    /// An incident or degraded period closed.
    Closed(Incident),
    /// An incident opened in a maintenance window outlasted it: from now on it is an
    /// incident like any other (and is notified).
    MaintenanceOver(Incident),
    /// A report of a slot already final: stored, counted, changes nothing.
    Late {
        /// Its region.
        region: String,
        /// Its slot.
        slot: Micros,
    },
    /// A region stopped reporting the target for longer than the region window.
    RegionSilent {
        /// The region.
        region: String,
    },
    /// A silent region reports again.
    RegionBack {
        /// The region.
        region: String,
    },
    /// The certificate warning began or ended.
    CertWarning {
        /// The certificate's expiry.
        not_after: Micros,
        /// Whether it is a warning now.
        warning: bool,
    },
}
