//! The status of every public target at one moment, computed from the [`Rollups`]: state,
//! uptime over each [`Window`], response-time percentiles over the last day, the open
//! incidents, and a verdict per day of the last [`DAYS`]. The page, the JSON and the badges
//! are all read from one snapshot, so they agree with each other.
//!
//! Uptime is computed as `sink report` computes it from the verdicts: `(up + degraded) /
//! (up + degraded + down)` over the final slots, slots of `unknown` verdict and slots in
//! maintenance windows left out. The 24-hour window counts the hours since the start of the
//! hour 23 hours back; the day windows count whole UTC days, today included; both add the
//! current hour from the target's state.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use monitor_core::settings::Labels;
use serde::Serialize;

use super::public::PublicTargets;
use super::rollups::{hour_of, Counts, IncidentRow, Rollups, StateRow, DAYS};
use crate::verdicts::latency::{quantile, BUCKETS};

/// A window of uptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days.
    Month,
    /// The last 90 days.
    Quarter,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 4] = [Window::Day, Window::Week, Window::Month, Window::Quarter];

    /// The window spelled `text` (`24h`, `7d`, `30d`, `90d`).
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// Its spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
            Window::Quarter => "90d",
        }
    }

    /// Its days, for the day windows.
    fn days(self) -> Option<i64> {
        match self {
            Window::Day => None,
            Window::Week => Some(7),
            Window::Month => Some(30),
            Window::Quarter => Some(DAYS as i64),
        }
    }
}

/// Uptime in percent per window; `None` without a judged slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Uptime {
    /// The last 24 hours.
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    /// The last 7 days.
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    /// The last 30 days.
    #[serde(rename = "30d")]
    pub month: Option<f64>,
    /// The last 90 days.
    #[serde(rename = "90d")]
    pub quarter: Option<f64>,
}

impl Uptime {
    /// The uptime over `window`.
    pub fn of(&self, window: Window) -> Option<f64> {
        match window {
            Window::Day => self.day,
            Window::Week => self.week,
            Window::Month => self.month,
            Window::Quarter => self.quarter,
        }
    }
}

/// Response-time percentiles of the up checks over the last 24 hours, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// What a day's bar says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DayClass {
    /// Every judged slot up.
    Up,
    /// Some regions failed, never a quorum.
    Degraded,
    /// A quorum of regions failed at least once.
    Down,
    /// Slots in a maintenance window, none failing outside it.
    Maintenance,
    /// No verdict.
    NoData,
}

impl DayClass {
    /// As shown.
    pub fn text(self) -> &'static str {
        match self {
            DayClass::Up => "up",
            DayClass::Degraded => "degraded",
            DayClass::Down => "down",
            DayClass::Maintenance => "maintenance",
            DayClass::NoData => "no data",
        }
    }
}

/// One day of a target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Day {
    /// The UTC day.
    pub date: NaiveDate,
    /// What its bar says.
    pub class: DayClass,
    /// Its uptime in percent.
    pub uptime: Option<f64>,
}

/// One public target's status.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// `up`, `down`, `degraded`, or `unknown` (also before its first verdict).
    pub state: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// Its certificate's expiry, once seen.
    pub cert_not_after: Option<DateTime<Utc>>,
    /// Uptime per window.
    pub uptime: Uptime,
    /// Response times over the last 24 hours.
    pub response_ms: Latency,
    /// Its open incidents.
    pub open_incidents: Vec<IncidentRow>,
    /// The last [`DAYS`] days, oldest first.
    #[serde(skip)]
    pub days: Vec<Day>,
}

/// Every public target's status at `generated_at`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// When it was computed.
    pub generated_at: DateTime<Utc>,
    /// The targets, by name.
    pub targets: Vec<TargetStatus>,
    /// The newest closed incidents of public targets, newest first.
    #[serde(skip)]
    pub history: Vec<IncidentRow>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl Snapshot {
    /// The status of `public` from `rollups` at `now`.
    pub fn build(public: &PublicTargets, rollups: &Rollups, now: DateTime<Utc>) -> Snapshot {
        let mut targets: Vec<TargetStatus> = public
            .iter()
            .map(|t| TargetStatus {
                id: t.id.clone(),
                name: t.name.clone(),
                labels: t.labels.clone(),
                ..status_of(&t.id, rollups, now)
            })
            .collect();
        targets.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let index = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        Snapshot {
            generated_at: now,
            targets,
            history: rollups.history.clone(),
            index,
        }
    }

    /// The status of the public target `id`.
    pub fn target(&self, id: &str) -> Option<&TargetStatus> {
        self.index.get(id).map(|i| &self.targets[*i])
    }
}

/// The figures of one target (its name and labels left empty).
fn status_of(id: &str, rollups: &Rollups, now: DateTime<Utc>) -> TargetStatus {
    let state = rollups.states.get(id);
    let current = state.and_then(|s| s.hour);
    let no_days = Default::default();
    let days = rollups.days.get(id).unwrap_or(&no_days);
    let no_hours = Default::default();
    let hours = rollups.hours.get(id).unwrap_or(&no_hours);
    let today = now.date_naive();
    let day_counts = |date: NaiveDate| {
        let mut counts = days.get(&date).copied().unwrap_or_default();
        if let Some((_, c)) = current.filter(|(h, _)| h.date_naive() == date) {
            add(&mut counts, &c);
        }
        counts
    };
    let mut uptime = Uptime::default();
    for window in Window::ALL {
        let counts = match window.days() {
            Some(n) => (0..n).fold(Counts::default(), |mut sum, back| {
                add(&mut sum, &day_counts(today - TimeDelta::days(back)));
                sum
            }),
            None => last_day(hours, current, now),
        };
        let value = uptime_of(&counts);
        match window {
            Window::Day => uptime.day = value,
            Window::Week => uptime.week = value,
            Window::Month => uptime.month = value,
            Window::Quarter => uptime.quarter = value,
        }
    }
    let mut response = vec![0u64; BUCKETS];
    for hour in hours.values() {
        for (sum, n) in response.iter_mut().zip(&hour.response) {
            *sum += n;
        }
    }
    let days = (0..DAYS as i64)
        .rev()
        .map(|back| {
            let date = today - TimeDelta::days(back);
            let counts = day_counts(date);
            Day {
                date,
                class: class_of(&counts),
                uptime: uptime_of(&counts),
            }
        })
        .collect();
    TargetStatus {
        id: String::new(),
        name: String::new(),
        labels: Labels::new(),
        state: state.map_or("unknown", |s: &StateRow| &s.state).to_string(),
        since: state.and_then(|s| s.since),
        cert_not_after: state.and_then(|s| s.cert_not_after),
        uptime,
        response_ms: Latency {
            p50: quantile(&response, 0.5),
            p95: quantile(&response, 0.95),
        },
        open_incidents: rollups
            .open
            .iter()
            .filter(|i| i.target_id == id)
            .cloned()
            .collect(),
        days,
    }
}

/// The counts of the hours since the start of the hour 23 hours back, the current one
/// included.
fn last_day(
    hours: &std::collections::BTreeMap<DateTime<Utc>, super::rollups::Hour>,
    current: Option<(DateTime<Utc>, Counts)>,
    now: DateTime<Utc>,
) -> Counts {
    let first = hour_of(now) - TimeDelta::hours(23);
    let mut sum = Counts::default();
    for (_, hour) in hours.range(first..) {
        add(&mut sum, &hour.counts);
    }
    if let Some((_, c)) = current.filter(|(h, _)| *h >= first) {
        add(&mut sum, &c);
    }
    sum
}

fn add(sum: &mut Counts, counts: &Counts) {
    for (s, n) in sum.iter_mut().zip(counts) {
        *s += n;
    }
}

/// Uptime in percent of `counts`; `None` without a judged slot.
pub fn uptime_of(counts: &Counts) -> Option<f64> {
    let [up, degraded, down, _, _] = *counts;
    let judged = up + degraded + down;
    (judged > 0).then(|| 100.0 * (up + degraded) as f64 / judged as f64)
}

/// What a day of `counts` shows.
fn class_of(counts: &Counts) -> DayClass {
    let [up, degraded, down, _, maintenance] = *counts;
    if down > 0 {
        DayClass::Down
    } else if degraded > 0 {
        DayClass::Degraded
    } else if maintenance > 0 {
        DayClass::Maintenance
    } else if up > 0 {
        DayClass::Up
    } else {
        DayClass::NoData
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_spelled_as_in_urls() {
        for w in Window::ALL {
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
        assert_eq!(Window::parse("1y"), None);
    }

    #[test]
    fn a_day_shows_its_worst_verdict_and_maintenance_only_when_nothing_failed() {
        assert_eq!(class_of(&[10, 0, 1, 0, 3]), DayClass::Down);
        assert_eq!(class_of(&[10, 2, 0, 0, 3]), DayClass::Degraded);
        assert_eq!(class_of(&[10, 0, 0, 0, 3]), DayClass::Maintenance);
        assert_eq!(class_of(&[10, 0, 0, 5, 0]), DayClass::Up);
        assert_eq!(class_of(&[0, 0, 0, 5, 0]), DayClass::NoData);
        assert_eq!(uptime_of(&[3, 1, 4, 9, 9]), Some(50.0));
        assert_eq!(uptime_of(&[0, 0, 0, 9, 9]), None);
    }
}
