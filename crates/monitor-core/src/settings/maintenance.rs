//! Maintenance windows (`[[sink.maintenance]]`): times when a target's failures are expected.
//! Checks go on and are stored; the sink marks incidents that open in a window as
//! maintenance, notifies no one of them, and leaves the window's slots out of uptime.
//!
//! A window is one-off (`start`, `end`, RFC 3339) or weekly (`weekly = { days, from, to,
//! time_zone }`, local times in an IANA time zone, so a window at 02:00 Berlin time stays at
//! 02:00 across daylight saving; `to` before `from` runs past midnight). It applies to the
//! targets it names by id (`targets`) and those its label selector matches (`match`; `{}`
//! matches every target). Whether a slot is in a window depends on the slot's time only,
//! never on the wall clock, so verdicts stay a pure function of the reports.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::Value;

use super::labels::{read_selector, LabelSelector, Labels};
use super::problems::{Problem, Problems};
use super::walk::{describe, Section};

/// Most maintenance windows.
pub const MAX_WINDOWS: usize = 1000;
/// Longest one-off window.
pub const MAX_ONE_OFF: ChronoDuration = ChronoDuration::days(31);

/// One maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// What it is for, shown in reports.
    pub name: String,
    /// When.
    pub when: WindowTimes,
    /// Targets by id.
    pub targets: Vec<String>,
    /// Targets by label; `None` when only ids are named.
    pub selector: Option<LabelSelector>,
}

/// When a window is.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowTimes {
    /// From `start` (included) to `end` (excluded).
    Once {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
    /// Every week on `days`, from `from` to `to` local time in `time_zone`.
    Weekly {
        /// The days the window starts on.
        days: Vec<Weekday>,
        /// Local start.
        from: NaiveTime,
        /// Local end; before `from`, the window ends the next day.
        to: NaiveTime,
        /// The time zone of `from` and `to`.
        time_zone: Tz,
    },
}

impl MaintenanceWindow {
    /// Whether the window applies to the target `id` with `labels`.
    pub fn applies_to(&self, id: &str, labels: &Labels) -> bool {
        self.targets.iter().any(|t| t == id)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether `at` falls in the window.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        match &self.when {
            WindowTimes::Once { start, end } => *start <= at && at < *end,
            WindowTimes::Weekly {
                days,
                from,
                to,
                time_zone,
            } => {
                let local = at.with_timezone(time_zone);
                let (day, time) = (local.weekday(), local.time().with_nanosecond(0));
                let time = time.unwrap_or(local.time());
                if from < to {
                    days.contains(&day) && *from <= time && time < *to
                } else {
                    (days.contains(&day) && time >= *from)
                        || (days.contains(&day.pred()) && time < *to)
                }
            }
        }
    }
}

/// Reads `[[sink.maintenance]]`.
pub(crate) fn read_windows(
    sink: &mut Section<'_>,
    problems: &mut Problems,
) -> Vec<MaintenanceWindow> {
    let Some(items) = sink.array("maintenance", problems) else {
        return Vec::new();
    };
    if items.len() > MAX_WINDOWS {
        problems.push(Problem::new(
            &sink.path_of("maintenance"),
            format!("has {} windows, more than {MAX_WINDOWS}", items.len()),
        ));
        return Vec::new();
    }
    items
        .into_iter()
        .filter_map(|(path, value)| read_window(path, value, problems))
        .collect()
}

fn read_window(path: String, value: &Value, problems: &mut Problems) -> Option<MaintenanceWindow> {
    let before = problems.len();
    let mut s = Section::from_value(path.clone(), value, problems)?;
    let name = s.string("name", problems).unwrap_or_else(|| path.clone());
    let when = if s.has("weekly") {
        read_weekly(&mut s, problems)
    } else {
        read_once(&mut s, problems)
    };
    let targets = s.string_list("targets", problems).unwrap_or_default();
    let selector = s
        .has("match")
        .then(|| read_selector(&mut s, "match", problems));
    if targets.is_empty() && selector.is_none() {
        problems.push(Problem::new(
            &path,
            "names no target: give `targets = [\"id\", ...]`, `match = { label = \"value\" }`, or `match = {}` for every target",
        ));
    }
    s.finish(problems);
    if problems.len() > before {
        return None;
    }
    Some(MaintenanceWindow {
        name,
        when: when?,
        targets,
        selector,
    })
}

/// `start` and `end`, RFC 3339, `end` after `start` and at most [`MAX_ONE_OFF`] later.
fn read_once(s: &mut Section<'_>, problems: &mut Problems) -> Option<WindowTimes> {
    let start = instant(s, "start", problems);
    let end = instant(s, "end", problems);
    let (start, end) = (start?, end?);
    if end <= start || end - start > MAX_ONE_OFF {
        problems.push(Problem::new(
            &s.path_of("end"),
            format!(
                "must be after `start` and at most {} days later (or use `weekly`)",
                MAX_ONE_OFF.num_days()
            ),
        ));
        return None;
    }
    Some(WindowTimes::Once { start, end })
}

fn instant(s: &mut Section<'_>, key: &str, problems: &mut Problems) -> Option<DateTime<Utc>> {
    let text = s.required_string(
        key,
        "an RFC 3339 time such as \"2026-12-01T02:00:00Z\"",
        problems,
    )?;
    match DateTime::parse_from_rfc3339(&text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(Problem::new(
                &s.path_of(key),
                format!("{text:?} is not an RFC 3339 time ({e}): write e.g. \"2026-12-01T02:00:00+01:00\""),
            ));
            None
        }
    }
}

/// `weekly = { days = ["sat", "sun"], from = "02:00", to = "04:00", time_zone = "Europe/Berlin" }`.
fn read_weekly(s: &mut Section<'_>, problems: &mut Problems) -> Option<WindowTimes> {
    let mut w = s.section("weekly", problems);
    let days = read_days(&mut w, problems);
    let from = local_time(&mut w, "from", problems);
    let to = local_time(&mut w, "to", problems);
    let zone = w
        .string("time_zone", problems)
        .unwrap_or_else(|| "UTC".into());
    let time_zone = match zone.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.push(Problem::new(
                &w.path_of("time_zone"),
                format!(
                    "{zone:?} is not an IANA time zone: write e.g. \"Europe/Berlin\" or \"UTC\""
                ),
            ));
            None
        }
    };
    if from.is_some() && from == to {
        problems.push(Problem::new(
            &w.path_of("to"),
            "equals `from`: the window would be empty",
        ));
    }
    w.finish(problems);
    let (days, from, to, time_zone) = (days?, from?, to?, time_zone?);
    if from == to {
        return None;
    }
    Some(WindowTimes::Weekly {
        days,
        from,
        to,
        time_zone,
    })
}

fn read_days(w: &mut Section<'_>, problems: &mut Problems) -> Option<Vec<Weekday>> {
    let Some(names) = w.string_list("days", problems) else {
        problems.push(Problem::new(
            &w.path_of("days"),
            "is missing: list the days, e.g. [\"sat\", \"sun\"]",
        ));
        return None;
    };
    let mut days = Vec::new();
    for name in names {
        match name.parse::<Weekday>() {
            Ok(d) => days.push(d),
            Err(_) => problems.push(Problem::new(
                &w.path_of("days"),
                format!("{name:?} is not a day: use mon, tue, wed, thu, fri, sat, sun"),
            )),
        }
    }
    (!days.is_empty()).then_some(days)
}

fn local_time(w: &mut Section<'_>, key: &str, problems: &mut Problems) -> Option<NaiveTime> {
    let text = w.required_string(key, "a local time such as \"02:00\"", problems)?;
    match NaiveTime::parse_from_str(&text, "%H:%M") {
        Ok(t) => Some(t),
        Err(_) => {
            problems.push(Problem::new(
                &w.path_of(key),
                format!(
                    "{text:?} is not a time of day: write HH:MM, e.g. \"02:00\" ({})",
                    describe(&Value::from(text.clone()))
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(value: Value) -> (Vec<MaintenanceWindow>, Problems) {
        let root = serde_json::json!({ "maintenance": value });
        let mut problems = Problems::default();
        let mut s = Section::root(&root, &mut problems);
        let windows = read_windows(&mut s, &mut problems);
        (windows, problems)
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_one_off_window_covers_its_start_and_not_its_end() {
        let (w, p) = windows(
            serde_json::json!([{ "name": "db", "start": "2026-12-01T02:00:00Z",
            "end": "2026-12-01T04:00:00+00:00", "targets": ["api"] }]),
        );
        assert!(p.is_empty(), "{p}");
        assert!(w[0].covers(at("2026-12-01T02:00:00Z")));
        assert!(!w[0].covers(at("2026-12-01T04:00:00Z")));
        assert!(w[0].applies_to("api", &Labels::new()));
        assert!(!w[0].applies_to("web", &Labels::new()));
    }

    #[test]
    fn a_weekly_window_follows_local_time_across_daylight_saving_and_midnight() {
        let (w, p) = windows(
            serde_json::json!([{ "weekly": { "days": ["sat"], "from": "23:00",
            "to": "01:00", "time_zone": "Europe/Berlin" }, "match": {} }]),
        );
        assert!(p.is_empty(), "{p}");
        // Saturday 23:30 in Berlin: 22:30 UTC in winter (CET), 21:30 UTC in summer (CEST).
        assert!(w[0].covers(at("2026-12-05T22:30:00Z")));
        assert!(w[0].covers(at("2026-07-04T21:30:00Z")));
        // Sunday 00:30 Berlin is still in; Sunday 01:30 and Friday 23:30 are not.
        assert!(w[0].covers(at("2026-12-05T23:30:00Z")));
        assert!(!w[0].covers(at("2026-12-06T00:30:00Z")));
        assert!(!w[0].covers(at("2026-12-04T22:30:00Z")));
        assert!(
            w[0].applies_to("any", &Labels::new()),
            "match = {{}} selects every target"
        );
    }

    #[test]
    fn problems_name_their_field() {
        let (_, p) = windows(serde_json::json!([
            { "start": "yesterday", "end": "2026-12-01T04:00:00Z", "targets": ["a"] },
            { "weekly": { "days": ["someday"], "from": "2am", "to": "04:00", "time_zone": "Mars/Base" }, "targets": ["a"] },
            { "start": "2026-12-01T02:00:00Z", "end": "2026-12-01T04:00:00Z" },
        ]));
        let text = p.to_string();
        for needle in [
            "maintenance[0].start",
            "maintenance[1].weekly.days",
            "maintenance[1].weekly.from",
            "maintenance[1].weekly.time_zone",
            "maintenance[2]: names no target",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }
}
