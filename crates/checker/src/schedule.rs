//! The scheduler: every target on its own period, at fixed rate, spread over the period.
//!
//! A target's slots are a pure function of its id and period: `offset + k × period` on the
//! Unix time line, where `offset` is a hash of the id modulo the period. So checks are spread
//! evenly (no thundering herd at start-up), never drift (the next slot follows the previous
//! slot, not the end of the check), and survive restarts and reloads unchanged.
//!
//! Checks start under a global cap ([`Semaphore`]): when the cap is reached the scheduler
//! waits instead of spawning more, and a slot that could not start within one period is
//! reported as `missed`, never skipped silently.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use monitor_core::report::{report_id, to_micros, Report, Status, Timings, SCHEMA_VERSION};
use monitor_core::settings::TargetSettings;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Longest the scheduler sleeps before looking at the clock again, so a wall-clock step or a
/// reload is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// Most `missed` reports written for one target at once after a long stall (a suspended
/// process); the rest are counted in a log line.
const MAX_MISSED_PER_CATCH_UP: u32 = 100;

/// Runs one check: the target and its scheduled time in, the report out.
pub type Probe = Arc<
    dyn Fn(Arc<TargetSettings>, DateTime<Utc>) -> Pin<Box<dyn Future<Output = Report> + Send>>
        + Send
        + Sync,
>;

/// The target's offset inside its period, from a hash of its id.
pub fn offset(target_id: &str, period: Duration) -> Duration {
    let digest = Sha256::digest(target_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(u64::from_be_bytes(head) % period_us)
}

/// The first slot of the target at or after `at`.
pub fn next_slot(target_id: &str, period: Duration, at: DateTime<Utc>) -> DateTime<Utc> {
    let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX).max(1);
    let offset_us = i64::try_from(offset(target_id, period).as_micros()).unwrap_or(0);
    let now_us = at.timestamp_micros();
    let k = (now_us - offset_us).div_euclid(period_us);
    let mut slot = k * period_us + offset_us;
    if slot < now_us {
        slot += period_us;
    }
    DateTime::from_timestamp_micros(slot).unwrap_or(at)
}

/// A report for a slot the checker could not start within one period.
pub fn missed_report(
    target: &TargetSettings,
    checker_id: &str,
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Report {
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id(checker_id, &target.id, scheduled_at),
        target_id: target.id.clone(),
        url: target.url.to_string(),
        checker_id: checker_id.to_string(),
        scheduled_at: to_micros(scheduled_at),
        started_at: to_micros(now),
        status: Status::Missed,
        failure_class: None,
        error: None,
        http_status: None,
        response_time_ms: None,
        timings_ms: Timings::default(),
        body_bytes: None,
        regexp: target.regexp.as_ref().map(|p| p.as_str().to_string()),
        regexp_matched: None,
        tls_cert_not_after: None,
        timeout_s: target.timeout.as_secs_f64(),
        period_s: target.period.as_secs_f64(),
        body_truncated: None,
    };
    let late = (now - scheduled_at).to_std().unwrap_or_default();
    report.set_error(format!(
        "check not started within its period: {:.3} s late (checker overloaded, paused or too few in-flight slots)",
        late.as_secs_f64()
    ));
    report
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: DateTime<Utc>,
    target_id: String,
    /// Which queue entry of the target this is: only the one [`Live`] names is acted on.
    generation: u64,
}

/// The one queue entry of each target that is acted on, by target id: its period and
/// generation. Entries the heap still holds for the same id under another generation are
/// stale (left by a reload) and are dropped when they come up, so however targets are removed,
/// added back or have their period changed, a target has exactly one live entry.
#[derive(Debug, Default)]
struct Live {
    entries: HashMap<String, (Duration, u64)>,
    next_generation: u64,
}

impl Live {
    /// Applies a new target list: a target whose live entry has the same period keeps it
    /// (and its slots), even if it was removed and added back meanwhile; any other gets a
    /// new entry, returned to be queued. Entries of removed targets stay live until they come
    /// up, so that adding the target back within a period does not add a second entry.
    fn reload(&mut self, list: &[Arc<TargetSettings>], now: DateTime<Utc>) -> Vec<Due> {
        let mut fresh = Vec::new();
        for t in list {
            if self.entries.get(&t.id).is_some_and(|(p, _)| *p == t.period) {
                continue;
            }
            self.next_generation += 1;
            self.entries
                .insert(t.id.clone(), (t.period, self.next_generation));
            fresh.push(Due {
                at: next_slot(&t.id, t.period, now),
                target_id: t.id.clone(),
                generation: self.next_generation,
            });
        }
        fresh
    }

    /// Whether `due` is the target's live entry.
    fn is_live(&self, due: &Due) -> bool {
        self.entries
            .get(&due.target_id)
            .is_some_and(|(_, g)| *g == due.generation)
    }

    /// The live entry came up for a target no longer configured: it ends here.
    fn retire(&mut self, target_id: &str) {
        self.entries.remove(target_id);
    }
}

/// Runs the schedule until `stop` fires: checks go to `reports`, one report per slot.
/// A new target list on `targets` takes effect at once; targets whose id and period are
/// unchanged keep their slots. After `stop` it waits for the checks in flight; dropping the
/// future (aborting its task) aborts them instead.
pub async fn run(
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    probe: Probe,
    checker_id: String,
    max_in_flight: usize,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    run_with(targets, probe, checker_id, permits, reports, stop).await;
}

/// [`run`] with the caller's cap on checks in flight (whose free permits tell how many run).
pub async fn run_with(
    mut targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    probe: Probe,
    checker_id: String,
    permits: Arc<Semaphore>,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let mut current: HashMap<String, Arc<TargetSettings>> = HashMap::new();
    let mut live = Live::default();
    let mut queue: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut reload = true;
    // A JoinSet, not a detached spawn: when this future is dropped (the caller aborts the
    // scheduler at its shutdown deadline), every check still in flight is aborted with it.
    let mut tasks = tokio::task::JoinSet::new();

    loop {
        if reload {
            reload = false;
            let list = targets.borrow_and_update().clone();
            let fresh = live.reload(&list, Utc::now());
            queue.extend(fresh.into_iter().map(Reverse));
            current = list.into_iter().map(|t| (t.id.clone(), t)).collect();
            info!(
                targets = current.len(),
                queued = queue.len(),
                "schedule loaded"
            );
        }

        let now = Utc::now();
        let Some(Reverse(top)) = queue.peek() else {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = targets.changed() => { if r.is_err() { break } reload = true; continue }
            }
        };
        if top.at > now {
            let wait = (top.at - now).to_std().unwrap_or_default().min(MAX_SLEEP);
            tokio::select! {
                _ = stop.cancelled() => break,
                r = targets.changed() => { if r.is_err() { break } reload = true; }
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let Some(Reverse(due)) = queue.pop() else {
            continue;
        };
        // Superseded by a reload: this entry is stale.
        if !live.is_live(&due) {
            continue;
        }
        let Some(target) = current.get(&due.target_id).cloned() else {
            live.retire(&due.target_id);
            continue;
        };

        // Backpressure: wait for a free slot rather than spawn without bound.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let started = Utc::now();
        let period = TimeDelta::from_std(target.period).unwrap_or(TimeDelta::MAX);
        let mut scheduled = due.at;
        let mut missed = 0u32;
        // Every slot whose whole period has passed is reported missed; the loop ends on the
        // latest slot not yet a period old, which is checked now.
        while started - scheduled >= period {
            if missed < MAX_MISSED_PER_CATCH_UP {
                let report = missed_report(&target, &checker_id, scheduled, started);
                if reports.send(report).await.is_err() {
                    return;
                }
            }
            missed += 1;
            scheduled += period;
        }
        if missed > 0 {
            warn!(target_id = %target.id, missed, "slots missed: the checker could not start them within their period");
        }
        queue.push(Reverse(Due {
            at: scheduled + period,
            target_id: target.id.clone(),
            generation: due.generation,
        }));
        let probe = probe.clone();
        let reports = reports.clone();
        debug!(target_id = %target.id, lateness_ms = (started - scheduled).num_milliseconds(), "check starts");
        tasks.spawn(async move {
            let report = probe(target, scheduled).await;
            drop(permit);
            let _ = reports.send(report).await;
        });
        // Reap finished checks so the set holds only those in flight.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::settings::{CheckerSettings, SettingsSource};

    fn targets(spec: &[(&str, &str)]) -> Vec<Arc<TargetSettings>> {
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
        let settings = CheckerSettings::load(
            &SettingsSource {
                file: Some(file),
                env: Some(Default::default()),
                base_dir: None,
            },
            false,
        )
        .expect("valid");
        settings.targets.into_iter().map(Arc::new).collect()
    }

    fn up_probe(delay: Duration) -> Probe {
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
        probe: Probe,
        max_in_flight: usize,
        run_for: Duration,
        change: Option<(Duration, Vec<Arc<TargetSettings>>)>,
    ) -> Vec<Report> {
        let changes = change.into_iter().collect();
        collect_with_reloads(list, probe, max_in_flight, run_for, changes).await
    }

    /// Runs the scheduler for `run_for`, sending each target list of `changes` at its time
    /// (from the start).
    async fn collect_with_reloads(
        list: Vec<Arc<TargetSettings>>,
        probe: Probe,
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
            probe,
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
            up_probe(Duration::from_millis(30)),
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
            up_probe(Duration::from_millis(250)),
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
            up_probe(Duration::from_millis(5)),
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
            up_probe(Duration::from_millis(5)),
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
