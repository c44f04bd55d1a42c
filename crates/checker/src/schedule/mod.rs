//! The scheduler: every target on its own period, at fixed rate, spread over the period.
//!
//! A target's slots are a pure function of its id and period ([`slots`]): checks are spread
//! evenly (no thundering herd at start-up), never drift (the next slot follows the previous
//! slot, not the end of the check), and survive restarts and reloads unchanged.
//!
//! Checks start under a global cap ([`Semaphore`]): when the cap is reached the scheduler
//! waits instead of spawning more, and a slot that could not start within one period is
//! reported as `missed`, never skipped silently.
//!
//! - [`slots`]: when a target's slots fall.
//! - `queue`: the slots to come, one live entry per target through reloads.
//! - [`shard`]: which targets this replica checks.
//! - [`catalog`]: the settings file's targets and the API's, merged, this replica's share.
//! - [`backfill`]: at start-up, `missed` reports for the slots that fell while the checker
//!   was not running.
//! - [`on_demand`]: "check now" requests from the sink's API, checked at once.

pub mod backfill;
pub mod catalog;
pub mod on_demand;
mod queue;
pub mod shard;
pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use monitor_core::report::Report;
use monitor_core::settings::TargetSettings;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::probe::CheckFn;
use crate::report::missed_report;
use queue::Queue;
pub use slots::{next_slot, offset};

/// Most `missed` reports written for one target at once after a long stall (a suspended
/// process); the rest are counted in a log line.
const MAX_MISSED_PER_CATCH_UP: u32 = 100;

/// Missed slots are logged as a sum at most this often: under overload thousands of slots a
/// second are missed, and a log line for each would cost more than the slot itself.
const MISSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Slots missed since the last log line, and of how many targets.
#[derive(Debug)]
struct MissedLog {
    slots: u64,
    targets: u64,
    since: tokio::time::Instant,
}

impl MissedLog {
    fn new() -> MissedLog {
        MissedLog {
            slots: 0,
            targets: 0,
            since: tokio::time::Instant::now(),
        }
    }

    /// Counts `missed` slots of `target_id`; logs the sum when it is due.
    fn count(&mut self, target_id: &str, missed: u32) {
        self.slots += u64::from(missed);
        self.targets += 1;
        if self.since.elapsed() < MISSED_LOG_EVERY && self.targets > 1 {
            return;
        }
        warn!(
            slots = self.slots,
            targets = self.targets,
            last_target_id = %target_id,
            seconds = self.since.elapsed().as_secs(),
            "slots missed: the checker could not start them within their period"
        );
        self.slots = 0;
        self.targets = 0;
        self.since = tokio::time::Instant::now();
    }
}

/// Runs the schedule until `stop` fires: checks go to `reports`, one report per slot.
/// A new target list on `targets` takes effect at once; targets whose id and period are
/// unchanged keep their slots. After `stop` it waits for the checks in flight; dropping the
/// future (aborting its task) aborts them instead.
pub async fn run(
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    check: CheckFn,
    checker_id: String,
    max_in_flight: usize,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    run_with(targets, check, checker_id, permits, reports, stop).await;
}

/// [`run`] with the caller's cap on checks in flight (whose free permits tell how many run).
pub async fn run_with(
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    check: CheckFn,
    checker_id: String,
    permits: Arc<Semaphore>,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let mut queue = Queue::new(targets);
    // A JoinSet, not a detached spawn: when this future is dropped (the caller aborts the
    // scheduler at its shutdown deadline), every check still in flight is aborted with it.
    let mut tasks = JoinSet::new();
    let mut missed_log = MissedLog::new();
    while let Some((due, target)) = queue.next_due(&stop).await {
        // Backpressure: wait for a free slot rather than spawn without bound.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let started = Utc::now();
        let caught_up = catch_up(&target, due.at(), started, &checker_id, &reports);
        let Some(scheduled) = caught_up.await.map(|(scheduled, missed)| {
            if missed > 0 {
                missed_log.count(&target.id, missed);
            }
            scheduled
        }) else {
            return;
        };
        let period = TimeDelta::from_std(target.period).unwrap_or(TimeDelta::MAX);
        queue.push(due.moved_to(scheduled + period));
        let check = check.clone();
        let reports = reports.clone();
        debug!(target_id = %target.id, lateness_ms = (started - scheduled).num_milliseconds(), "check starts");
        tasks.spawn(async move {
            let report = check(target, scheduled).await;
            drop(permit);
            let _ = reports.send(report).await;
        });
        // Reap finished checks so the set holds only those in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Reports `missed` every slot from `due` on whose whole period has passed by `started`, and
/// returns the latest slot not yet a period old, which is checked now, and how many slots were
/// missed. `None` when `reports` is closed.
async fn catch_up(
    target: &TargetSettings,
    due: DateTime<Utc>,
    started: DateTime<Utc>,
    checker_id: &str,
    reports: &mpsc::Sender<Report>,
) -> Option<(DateTime<Utc>, u32)> {
    let period = TimeDelta::from_std(target.period).unwrap_or(TimeDelta::MAX);
    let mut scheduled = due;
    let mut missed = 0u32;
    while started - scheduled >= period {
        if missed < MAX_MISSED_PER_CATCH_UP {
            let report = missed_report(target, checker_id, scheduled, started);
            reports.send(report).await.ok()?;
        }
        missed += 1;
        scheduled += period;
    }
    Some((scheduled, missed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::report::Status;
    use monitor_core::settings::{CheckerSettings, SettingsSource};
    use std::collections::HashMap;

    /// Settings of targets `(id, period)` on a closed port, each with a 10 ms timeout.
    pub(super) fn targets(spec: &[(&str, &str)]) -> Vec<Arc<TargetSettings>> {
        let list: Vec<String> = spec
            .iter()
            .map(|(id, period)| {
                format!(r#"{{"id": "{id}", "url": "http://127.0.0.1:9/", "period": "{period}", "timeout": "10ms"}}"#)
            })
            .collect();
        let json = format!(r#"{{"monitored_urls": [{}]}}"#, list.join(","));
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("c.json");
        std::fs::write(&file, json).expect("write");
        let settings =
            CheckerSettings::load(&SettingsSource::file_only(file), false).expect("valid");
        settings.targets.into_iter().map(Arc::new).collect()
    }

    fn up_check(delay: Duration) -> CheckFn {
        Arc::new(
            move |target: Arc<TargetSettings>, scheduled: DateTime<Utc>| {
                Box::pin(async move {
                    let now = Utc::now();
                    tokio::time::sleep(delay).await;
                    let mut r = missed_report(&target, "test", scheduled, now);
                    r.status = Status::Up;
                    r.error = None;
                    r
                })
            },
        )
    }

    #[test]
    fn slots_are_aligned_to_the_targets_offset_and_never_in_the_past() {
        let period = Duration::from_secs(60);
        let at = DateTime::from_timestamp(1_800_000_000, 123_000).expect("time");
        for id in ["a", "b", "c", "a-much-longer-target-id"] {
            let slot = next_slot(id, period, at);
            assert!(
                slot >= at && slot < at + TimeDelta::seconds(60),
                "{id}: {slot}"
            );
            let off = offset(id, period).as_micros() as i64;
            assert_eq!((slot.timestamp_micros() - off).rem_euclid(60_000_000), 0);
            assert_eq!(
                next_slot(id, period, slot),
                slot,
                "a slot is its own next slot"
            );
        }
    }

    #[test]
    fn offsets_spread_targets_evenly_over_the_period() {
        let period = Duration::from_secs(60);
        let mut buckets = [0usize; 10];
        for i in 0..10_000 {
            let off = offset(&format!("target-{i}"), period);
            buckets[(off.as_secs_f64() / 6.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (850..=1150).contains(&n)),
            "{buckets:?}"
        );
    }

    /// Runs the scheduler for `run_for`, sending the target list of `change` at its time.
    async fn collect(
        list: Vec<Arc<TargetSettings>>,
        check: CheckFn,
        max_in_flight: usize,
        run_for: Duration,
        change: Option<(Duration, Vec<Arc<TargetSettings>>)>,
    ) -> Vec<Report> {
        let changes = change.into_iter().collect();
        collect_with_reloads(list, check, max_in_flight, run_for, changes).await
    }

    /// Runs the scheduler for `run_for`, sending each target list of `changes` at its time
    /// (from the start).
    async fn collect_with_reloads(
        list: Vec<Arc<TargetSettings>>,
        check: CheckFn,
        max_in_flight: usize,
        run_for: Duration,
        changes: Vec<(Duration, Vec<Arc<TargetSettings>>)>,
    ) -> Vec<Report> {
        let (tx, rx) = watch::channel(list);
        let (reports_tx, mut reports_rx) = mpsc::channel(10_000);
        let stop = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(run(
            rx,
            check,
            "test".into(),
            max_in_flight,
            reports_tx,
            stop.clone(),
        ));
        for (at, list) in changes {
            tokio::time::sleep_until(start + at).await;
            tx.send(list).expect("scheduler listening");
        }
        tokio::time::sleep_until(start + run_for).await;
        stop.cancel();
        task.await.expect("scheduler ends");
        let mut out = Vec::new();
        while let Ok(r) = reports_rx.try_recv() {
            out.push(r);
        }
        out
    }

    fn slots_of(reports: &[Report], id: &str) -> Vec<DateTime<Utc>> {
        let mut s: Vec<_> = reports
            .iter()
            .filter(|r| r.target_id == id)
            .map(|r| r.scheduled_at)
            .collect();
        s.sort();
        s
    }

    fn assert_contiguous(slots: &[DateTime<Utc>], period: TimeDelta) {
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], period, "slots {slots:?}");
        }
    }

    #[tokio::test]
    async fn each_target_runs_at_fixed_rate_on_its_own_period() {
        let list = targets(&[("fast", "100ms"), ("slow", "300ms")]);
        let reports = collect(
            list,
            up_check(Duration::from_millis(30)),
            10,
            Duration::from_millis(1250),
            None,
        )
        .await;
        let fast = slots_of(&reports, "fast");
        let slow = slots_of(&reports, "slow");
        assert!((11..=13).contains(&fast.len()), "{}", fast.len());
        assert!((4..=5).contains(&slow.len()), "{}", slow.len());
        assert_contiguous(&fast, TimeDelta::milliseconds(100));
        assert_contiguous(&slow, TimeDelta::milliseconds(300));
        assert!(reports.iter().all(|r| r.status == Status::Up));
        for r in &reports {
            let lateness = r.started_at - r.scheduled_at;
            assert!(
                lateness >= TimeDelta::zero() && lateness < TimeDelta::milliseconds(90),
                "{lateness}"
            );
        }
    }

    #[tokio::test]
    async fn slots_that_cannot_start_within_their_period_are_reported_missed() {
        // One check at a time, each taking 250 ms, for targets due every 100 ms.
        let list = targets(&[("a", "100ms"), ("b", "100ms")]);
        let reports = collect(
            list,
            up_check(Duration::from_millis(250)),
            1,
            Duration::from_millis(1500),
            None,
        )
        .await;
        let missed = reports
            .iter()
            .filter(|r| r.status == Status::Missed)
            .count();
        assert!(missed > 0, "some slots must be missed");
        for id in ["a", "b"] {
            let slots = slots_of(&reports, id);
            assert_contiguous(&slots, TimeDelta::milliseconds(100));
        }
        let r = reports
            .iter()
            .find(|r| r.status == Status::Missed)
            .expect("missed");
        assert!(r
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("not started within its period"));
        assert!(r.started_at - r.scheduled_at >= TimeDelta::milliseconds(100));
    }

    #[tokio::test]
    async fn a_reload_keeps_unchanged_targets_slots_and_applies_the_rest() {
        let before = targets(&[
            ("kept", "100ms"),
            ("removed", "100ms"),
            ("changed", "100ms"),
        ]);
        let after = targets(&[("kept", "100ms"), ("changed", "200ms"), ("added", "100ms")]);
        let reports = collect(
            before,
            up_check(Duration::from_millis(5)),
            10,
            Duration::from_millis(1200),
            Some((Duration::from_millis(600), after)),
        )
        .await;
        let kept = slots_of(&reports, "kept");
        assert!((11..=13).contains(&kept.len()), "{}", kept.len());
        assert_contiguous(&kept, TimeDelta::milliseconds(100));
        assert!((5..=7).contains(&slots_of(&reports, "removed").len()));
        let changed = slots_of(&reports, "changed");
        assert!(changed.len() >= 7, "{changed:?}");
        let added = slots_of(&reports, "added");
        assert!((5..=7).contains(&added.len()), "{}", added.len());
    }

    #[tokio::test]
    async fn any_sequence_of_reloads_leaves_one_check_per_slot() {
        let all = || targets(&[("steady", "100ms"), ("flap", "100ms"), ("ab", "100ms")]);
        let without_flap = || targets(&[("steady", "100ms"), ("ab", "100ms")]);
        let ab_at_b = || targets(&[("steady", "100ms"), ("flap", "100ms"), ("ab", "150ms")]);
        // Each list is sent 40 ms after the previous one: "flap" is removed and added back
        // three times, each time within its period, and "ab" goes 100 ms → 150 ms → 100 ms
        // twice, all within 520 ms; then the schedule runs on unchanged.
        let sequence = [
            without_flap(),
            all(),
            without_flap(),
            all(),
            ab_at_b(),
            all(),
            without_flap(),
            all(),
            ab_at_b(),
            all(),
            without_flap(),
            ab_at_b(),
            all(),
        ];
        let changes = sequence
            .into_iter()
            .enumerate()
            .map(|(i, list)| (Duration::from_millis(40 * (i as u64 + 1)), list))
            .collect();
        let reports = collect_with_reloads(
            all(),
            up_check(Duration::from_millis(5)),
            10,
            Duration::from_millis(1500),
            changes,
        )
        .await;
        for id in ["steady", "flap", "ab"] {
            let slots = slots_of(&reports, id);
            assert!(slots.len() >= 10, "{id}: {slots:?}");
            let mut per_slot: HashMap<DateTime<Utc>, usize> = HashMap::new();
            for s in &slots {
                *per_slot.entry(*s).or_default() += 1;
            }
            let repeated: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).collect();
            assert!(
                repeated.is_empty(),
                "{id}: slots checked more than once: {repeated:?}"
            );
        }
        // A slot that falls while "flap" is removed is not checked; the others keep to its
        // grid, and the target that never changed keeps every slot.
        let offset_us = offset("flap", Duration::from_millis(100)).as_micros() as i64;
        for s in slots_of(&reports, "flap") {
            assert_eq!(
                (s.timestamp_micros() - offset_us).rem_euclid(100_000),
                0,
                "{s}"
            );
        }
        assert_contiguous(&slots_of(&reports, "steady"), TimeDelta::milliseconds(100));
    }
}
