//! Start-up backfill: a `missed` report for every slot that fell while the checker was not
//! running, so that no target's history has a hole nobody explains.
//!
//! A target's slots are a function of its id and period ([`next_slot`]), so the
//! slots of a downtime can be told afterwards. While it runs, the checker keeps a heartbeat
//! file in the spool directory ([`HEARTBEAT_FILE`], rewritten every [`HEARTBEAT_EVERY`]): its
//! id and shard, when this run started, and the last time every report made so far was in the
//! spool. On start, for every target, the slots from a little before that time (one period,
//! the target's timeout and [`IN_FLIGHT_SLACK`]: checks that were in flight or on their way
//! to the spool at the kill) up to the start are written to the spool as `missed`, before
//! anything else of this run. A slot that was in fact checked has the same `report_id`, and
//! its real report is ahead of the `missed` one (already delivered, or earlier in the spool),
//! so the sink keeps the real one.
//!
//! Only the targets the last run checked are backfilled ([`TARGETS_FILE`]): a target added
//! while the checker was down gets no `missed` reports for a time before it existed.
//!
//! Bounds: at most [`BACKFILL_MAX_WINDOW`] back, and at most [`BACKFILL_MAX_REPORTS`] reports
//! in all (past that, the window is shortened: the newest slots are kept, the rest counted in
//! a log line). No backfill when the heartbeat is missing or unreadable, or was written by
//! another checker id or shard (the targets were someone else's).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use monitor_core::report::Report;
use monitor_core::settings::TargetSettings;
use tracing::{info, warn};

use super::slots::next_slot;
use crate::report::missed_report;
use crate::spool::{Message, Spool, HEARTBEAT_FILE, TARGETS_FILE};
/// The heartbeat is rewritten this often.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Besides one period and the timeout, how long before the last heartbeat a report may still
/// have been on its way to the spool (between the check and the publisher, and the heartbeat's
/// own interval).
pub const IN_FLIGHT_SLACK: Duration = Duration::from_secs(2);
/// The backfill goes back at most this far.
pub const BACKFILL_MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most `missed` reports one start-up writes (about 600 bytes each: well under the default
/// `spool_max_bytes`).
pub const BACKFILL_MAX_REPORTS: u64 = 500_000;
/// Reports written to the spool in one append.
const APPEND_CHUNK: usize = 1024;

/// What the last run left in the spool directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The `checker.id` of that run.
    pub checker_id: String,
    /// Its shard, `I/N`.
    pub shard: String,
    /// When it started: it backfilled everything before.
    pub started_at: DateTime<Utc>,
    /// Every report it made before this time was in the spool.
    pub alive_at: DateTime<Utc>,
}

/// Why the heartbeat could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// Reading the file failed.
    #[error("cannot read {HEARTBEAT_FILE}: {0}")]
    Io(#[from] io::Error),
    /// The file does not hold a heartbeat.
    #[error("{HEARTBEAT_FILE} is not a heartbeat: {0}")]
    Format(String),
}

impl Heartbeat {
    /// The heartbeat in `dir`, or `None` when there is none (a first start).
    pub fn read(dir: &Path) -> Result<Option<Heartbeat>, HeartbeatError> {
        let text = match fs::read_to_string(dir.join(HEARTBEAT_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HeartbeatError::Format(e.to_string()))?;
        let text_of = |key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| HeartbeatError::Format(format!("no {key}")))
        };
        let time_of = |key: &str| {
            v.get(key)
                .and_then(|x| x.as_i64())
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| HeartbeatError::Format(format!("no {key}")))
        };
        Ok(Some(Heartbeat {
            checker_id: text_of("checker_id")?,
            shard: text_of("shard")?,
            started_at: time_of("started_at_us")?,
            alive_at: time_of("alive_at_us")?,
        }))
    }

    /// Replaces the heartbeat in `dir` (write, then rename). Not fsynced: after a power loss
    /// an older heartbeat only makes the backfill start earlier.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let text = serde_json::json!({
            "checker_id": self.checker_id,
            "shard": self.shard,
            "started_at_us": self.started_at.timestamp_micros(),
            "alive_at_us": self.alive_at.timestamp_micros(),
        })
        .to_string();
        let tmp = dir.join(format!("{HEARTBEAT_FILE}.tmp"));
        fs::write(&tmp, text)?;
        fs::rename(tmp, dir.join(HEARTBEAT_FILE))
    }
}

/// Saves the ids of `targets` in `dir` (write, then rename), for the next start's backfill.
pub fn save_targets(dir: &Path, targets: &[Arc<TargetSettings>]) -> io::Result<()> {
    let ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
    let tmp = dir.join(format!("{TARGETS_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec(&ids).map_err(io::Error::other)?)?;
    fs::rename(tmp, dir.join(TARGETS_FILE))
}

/// The ids of the targets the last run checked, as saved in `dir`; `None` when not known.
pub fn saved_ids(dir: &Path) -> Option<HashSet<String>> {
    serde_json::from_slice(&fs::read(dir.join(TARGETS_FILE)).ok()?).ok()
}

/// Of `targets`, those the last run checked, as saved in `dir`; all of them when that is not
/// known (no file: a spool from before the file existed).
pub fn checked_last_time(dir: &Path, targets: &[Arc<TargetSettings>]) -> Vec<Arc<TargetSettings>> {
    let ids: HashSet<String> = match fs::read(dir.join(TARGETS_FILE)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "{TARGETS_FILE} is unreadable: no backfill");
                return Vec::new();
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return targets.to_vec(),
        Err(e) => {
            warn!(error = %e, "cannot read {TARGETS_FILE}: no backfill");
            return Vec::new();
        }
    };
    targets
        .iter()
        .filter(|t| ids.contains(&t.id))
        .cloned()
        .collect()
}

/// The first moment of `target`'s backfill window after `last`, never before `floor`.
fn window_start(target: &TargetSettings, last: &Heartbeat, floor: DateTime<Utc>) -> DateTime<Utc> {
    let lookback = TimeDelta::from_std(target.period + target.timeout + IN_FLIGHT_SLACK)
        .unwrap_or(TimeDelta::MAX);
    let from = last
        .alive_at
        .checked_sub_signed(lookback)
        .unwrap_or(last.started_at);
    from.max(last.started_at).max(floor)
}

/// Slots of `target` in `[from, until)`.
fn slots(
    target: &TargetSettings,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> {
    let period = TimeDelta::from_std(target.period).unwrap_or(TimeDelta::MAX);
    let first = next_slot(&target.id, target.period, from);
    std::iter::successors(Some(first), move |t| t.checked_add_signed(period))
        .take_while(move |t| *t < until)
}

/// How many slots `[max(start, cut), until)` holds over all targets.
fn count(
    targets: &[(Arc<TargetSettings>, DateTime<Utc>)],
    cut: DateTime<Utc>,
    until: DateTime<Utc>,
) -> u64 {
    targets
        .iter()
        .map(|(t, start)| {
            let from = (*start).max(cut);
            let period = t.period.as_micros().max(1);
            let span = (until - from).num_microseconds().unwrap_or(i64::MAX).max(0);
            // An upper bound (one more at most), which is all the cap needs.
            u64::try_from(span as u128 / period + 1).unwrap_or(u64::MAX)
        })
        .fold(0u64, u64::saturating_add)
}

/// The latest cut-off that keeps the backfill within [`BACKFILL_MAX_REPORTS`].
fn cut_off(
    targets: &[(Arc<TargetSettings>, DateTime<Utc>)],
    floor: DateTime<Utc>,
    until: DateTime<Utc>,
) -> DateTime<Utc> {
    if count(targets, floor, until) <= BACKFILL_MAX_REPORTS {
        return floor;
    }
    let (mut lo, mut hi) = (floor, until);
    while (hi - lo) > TimeDelta::milliseconds(1) {
        let mid = lo + (hi - lo) / 2;
        if count(targets, mid, until) <= BACKFILL_MAX_REPORTS {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// What a backfill did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfilled {
    /// `missed` reports written to the spool.
    pub written: u64,
    /// Reports the spool could not take.
    pub failed: u64,
}

/// Writes to `spool` a `missed` report for every slot of `targets` from `last`'s window up to
/// `until` (the moment this run's schedule starts), each one passed to `observe` too.
pub fn backfill(
    spool: &mut dyn Spool,
    targets: &[Arc<TargetSettings>],
    last: &Heartbeat,
    checker_id: &str,
    until: DateTime<Utc>,
    mut observe: impl FnMut(&Report),
) -> Backfilled {
    let floor = until
        .checked_sub_signed(TimeDelta::from_std(BACKFILL_MAX_WINDOW).unwrap_or(TimeDelta::MAX))
        .unwrap_or(until);
    let windows: Vec<_> = targets
        .iter()
        .map(|t| (t.clone(), window_start(t, last, floor)))
        .collect();
    let cut = cut_off(&windows, floor, until);
    if cut > floor {
        warn!(
            cut_off = %cut,
            max_reports = BACKFILL_MAX_REPORTS,
            "the downtime holds more slots than one backfill writes: only the newest are reported missed"
        );
    }
    let mut done = Backfilled::default();
    let mut chunk = Vec::with_capacity(APPEND_CHUNK);
    let mut flush = |chunk: &mut Vec<Message>, done: &mut Backfilled| {
        let n = chunk.len() as u64;
        match spool.append(chunk) {
            Ok(()) => done.written += n,
            Err(e) => {
                warn!(error = %e, reports = n, "cannot write backfilled reports to the spool");
                done.failed += n;
            }
        }
        chunk.clear();
    };
    for (target, start) in &windows {
        for slot in slots(target, (*start).max(cut), until) {
            let report = missed_by_downtime(target, checker_id, slot, until);
            observe(&report);
            chunk.push(Message::of(&report));
            if chunk.len() >= APPEND_CHUNK {
                flush(&mut chunk, &mut done);
            }
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut done);
    }
    info!(
        reports = done.written,
        failed = done.failed,
        since = %last.alive_at,
        "slots of the downtime reported missed"
    );
    done
}

/// The `missed` report of a slot that fell while no checker ran.
pub fn missed_by_downtime(
    target: &TargetSettings,
    checker_id: &str,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Report {
    let mut report = missed_report(target, checker_id, slot, now);
    report.set_error(
        "not checked: the checker was not running at this slot (reported at its restart)",
    );
    report
}

/// The slots between the backfill's end and the first slot this run's schedule reports for
/// each target (the schedule starts a moment after the backfill ends): reported `missed` on
/// the way to the publisher, ahead of that first report.
#[derive(Debug)]
pub struct GapFill {
    from: DateTime<Utc>,
    checker_id: String,
    /// Targets whose first report of this run has not been seen yet.
    waiting: HashMap<String, Arc<TargetSettings>>,
}

impl GapFill {
    /// For `targets`, backfilled up to `from`.
    pub fn new(targets: &[Arc<TargetSettings>], checker_id: &str, from: DateTime<Utc>) -> Self {
        GapFill {
            from,
            checker_id: checker_id.to_string(),
            waiting: targets.iter().map(|t| (t.id.clone(), t.clone())).collect(),
        }
    }

    /// The `missed` reports to send before `report`.
    pub fn before(&mut self, report: &Report) -> Vec<Report> {
        let Some(target) = self.waiting.remove(&report.target_id) else {
            return Vec::new();
        };
        let now = Utc::now();
        slots(&target, self.from, report.scheduled_at)
            .map(|slot| missed_by_downtime(&target, &self.checker_id, slot, now))
            .collect()
    }
}

/// Whether `last` was left by this checker and shard: only then are its targets ours.
pub fn is_ours(last: &Heartbeat, checker_id: &str, shard: &str) -> bool {
    let ours = last.checker_id == checker_id && last.shard == shard;
    if !ours {
        warn!(
            previous_id = %last.checker_id,
            previous_shard = %last.shard,
            "the spool's heartbeat is another checker's or shard's: no backfill"
        );
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::report::Status;
    use monitor_core::settings::{CheckerSettings, SettingsSource};

    /// A spool that keeps what is appended.
    #[derive(Default)]
    struct Kept(Vec<Report>);

    impl Spool for Kept {
        fn append(&mut self, messages: &[Message]) -> io::Result<()> {
            for m in messages {
                self.0
                    .push(Report::from_json(&m.value).map_err(io::Error::other)?);
            }
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn peek(&mut self, _: usize) -> io::Result<Vec<Message>> {
            Ok(Vec::new())
        }
        fn commit(&mut self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn is_empty(&self) -> bool {
            true
        }
    }

    fn targets(periods: &[&str]) -> Vec<Arc<TargetSettings>> {
        let list: Vec<String> = periods
            .iter()
            .enumerate()
            .map(|(i, p)| format!(r#"{{"id": "t{i}", "url": "http://127.0.0.1:9/", "period": "{p}", "timeout": "500ms"}}"#))
            .collect();
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.json");
        fs::write(
            &file,
            format!(r#"{{"monitored_urls": [{}]}}"#, list.join(",")),
        )
        .expect("write");
        let settings =
            CheckerSettings::load(&SettingsSource::file_only(file), false).expect("valid");
        settings.targets.into_iter().map(Arc::new).collect()
    }

    fn heartbeat(started: DateTime<Utc>, alive: DateTime<Utc>) -> Heartbeat {
        Heartbeat {
            checker_id: "c".into(),
            shard: "0/1".into(),
            started_at: started,
            alive_at: alive,
        }
    }

    #[test]
    fn every_slot_of_the_downtime_is_reported_missed_once_from_before_the_last_heartbeat() {
        let list = targets(&["10s", "1m"]);
        let started = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let alive = started + TimeDelta::minutes(5);
        let now = alive + TimeDelta::minutes(10);
        let mut spool = Kept::default();
        let mut seen = 0;
        let done = backfill(
            &mut spool,
            &list,
            &heartbeat(started, alive),
            "c",
            now,
            |_| seen += 1,
        );
        assert_eq!(done.written, spool.0.len() as u64);
        assert_eq!(seen, spool.0.len());
        for t in &list {
            let from =
                alive - TimeDelta::from_std(t.period + t.timeout + IN_FLIGHT_SLACK).expect("delta");
            let slots: Vec<_> = spool
                .0
                .iter()
                .filter(|r| r.target_id == t.id)
                .map(|r| r.scheduled_at)
                .collect();
            let expected: Vec<_> = slots_of(t, from, now);
            assert_eq!(slots, expected, "{}", t.id);
            assert!(slots.first().is_some_and(|s| *s >= from && *s < alive));
        }
        assert!(spool
            .0
            .iter()
            .all(|r| r.status == Status::Missed && r.checker_id == "c"));
    }

    fn slots_of(
        t: &TargetSettings,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        slots(t, from, until).collect()
    }

    #[test]
    fn a_long_downtime_is_bounded_and_keeps_the_newest_slots() {
        // 20 targets every second, down for two days: far over the bound.
        let list = targets(&["1s"; 20]);
        let started = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let now = started + TimeDelta::days(2);
        let floor = now - TimeDelta::from_std(BACKFILL_MAX_WINDOW).expect("delta");
        let windows: Vec<_> = list
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    window_start(t, &heartbeat(started, started), floor),
                )
            })
            .collect();
        assert!(
            windows.iter().all(|(_, from)| *from == floor),
            "at most the window back"
        );
        let cut = cut_off(&windows, floor, now);
        let kept: usize = list.iter().map(|t| slots(t, cut, now).count()).sum();
        assert!(kept as u64 <= BACKFILL_MAX_REPORTS, "{kept}");
        assert!(
            kept as u64 >= BACKFILL_MAX_REPORTS - 40,
            "as many as the bound allows: {kept}"
        );
        // A downtime within the bound is kept whole.
        let short = now - TimeDelta::hours(1);
        let windows: Vec<_> = list.iter().map(|t| (t.clone(), short)).collect();
        assert_eq!(cut_off(&windows, short, now), short);
    }

    #[test]
    fn only_the_targets_the_last_run_checked_are_backfilled() {
        let dir = tempfile::tempdir().expect("dir");
        let list = targets(&["10s", "10s", "10s"]);
        assert_eq!(
            checked_last_time(dir.path(), &list).len(),
            3,
            "unknown: all"
        );
        save_targets(dir.path(), &list[..2]).expect("save");
        let ids: Vec<_> = checked_last_time(dir.path(), &list)
            .iter()
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(ids, ["t0", "t1"]);
    }

    #[test]
    fn the_heartbeat_round_trips_and_another_checkers_is_not_ours() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(Heartbeat::read(dir.path()).expect("none"), None);
        let t = DateTime::from_timestamp_micros(1_800_000_000_123_456).expect("time");
        let beat = heartbeat(t, t + TimeDelta::seconds(3));
        beat.write(dir.path()).expect("write");
        assert_eq!(
            Heartbeat::read(dir.path()).expect("read"),
            Some(beat.clone())
        );
        assert!(is_ours(&beat, "c", "0/1"));
        assert!(!is_ours(&beat, "other", "0/1"));
        assert!(!is_ours(&beat, "c", "1/2"));
        fs::write(dir.path().join(HEARTBEAT_FILE), "{").expect("write");
        assert!(Heartbeat::read(dir.path()).is_err());
    }
}
