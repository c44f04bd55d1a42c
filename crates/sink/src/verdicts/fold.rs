//! [`apply`]: the pure fold of one report into its target's state. No wall clock, no I/O:
//! the same reports in the same order give the same changes, however they are cut into
//! batches, which is what makes a replay, a restart after SIGKILL or a partition moved to
//! another replica produce the same incidents.
//!
//! A report joins its slot's pending reports. The oldest pending slot is final once every
//! expected region has reported it, or once the target's watermark (its newest reported slot)
//! is `grace` periods past it; slots become final oldest first, so verdicts follow slot order.
//! Expected regions are those that reported the target within the last `region_window`
//! periods (of the watermark); a region silent longer drops out and is reported silent.
//! A report of a slot already final is late: it is stored and counted, and changes no
//! verdict; only a late report within the region window still tells that its region is
//! alive (a region back from silence is otherwise always last to report a slot).
//!
//! A final slot's verdict: `down` when at least the quorum of regions reported it down,
//! `degraded` when some did, `up` when none did and one reported it up, `unknown` when every
//! report was `missed`. The state then moves by runs of verdicts (`unknown` is skipped):
//! - not down → `down` after `down_after` consecutive `down` verdicts: a `down` incident opens
//!   at the run's first slot (closing a degraded period there);
//! - `up`/`unknown` → `degraded` after `down_after` consecutive `down`-or-`degraded` verdicts:
//!   a degraded period opens at the run's first slot;
//! - `down` → after `up_after` consecutive `up`-or-`degraded` verdicts the incident closes at
//!   the run's first slot; the state is `up` if that run ends with `up_after` `up` verdicts,
//!   else `degraded` (a degraded period opens where the incident closed);
//! - `degraded` → `up` after `up_after` consecutive `up` verdicts, closing the period at the
//!   run's first slot; `unknown` → `up` the same way.
//!
//! A final slot in one of the target's maintenance windows is counted as maintenance, not
//! by its verdict (so uptime leaves it out), and an incident it opens is marked maintenance.
//! A marked incident still open at the first failing slot after the window outlasted it and
//! becomes an incident like any other ([`Change::MaintenanceOver`]).

use std::collections::BTreeMap;

use super::policy::{Policy, Windows};
use super::state::{
    Certificate, Change, HourCounts, Incident, Kind, Micros, Outcome, ReportFacts, Run, Runs,
    State, Tally, TargetState, Verdict, HOUR_US, MAX_PENDING_SLOTS, MAX_REGIONS,
};

/// Folds `report` into `state` under `policy` and the target's maintenance `windows`; returns
/// what changed, in order.
pub fn apply(
    state: &mut TargetState,
    report: &ReportFacts,
    policy: &Policy,
    windows: Windows<'_>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if state.last_final.is_some_and(|f| report.slot <= f) {
        // A recent late report still says its region is alive (a region back from silence
        // reports each slot after the others made it final), and a region never seen before
        // is known from now on: nothing else changes.
        if report.slot >= window_start(state, policy) || !state.regions.contains_key(&report.region)
        {
            see_region(state, &report.region, report.slot, &mut changes);
        }
        changes.push(Change::Late {
            region: report.region.clone(),
            slot: report.slot,
        });
        return changes;
    }
    see_region(state, &report.region, report.slot, &mut changes);
    if let (Some(ms), Some(hour)) = (report.response_ms, state.hour.as_mut()) {
        hour.response.record(ms);
    }
    state.period_us = report.period_us;
    state.watermark = Some(state.watermark.map_or(report.slot, |w| w.max(report.slot)));
    see_certificate(state, report, policy, &mut changes);
    state
        .pending
        .entry(report.slot)
        .or_default()
        .entry(report.region.clone())
        .or_insert_with(|| report.outcome.clone());
    finalize(state, &report.target_id, (policy, windows), &mut changes);
    mark_silent(state, policy, &mut changes);
    changes
}

/// Records that `region` reported `slot`; a silent region is back.
fn see_region(state: &mut TargetState, region: &str, slot: Micros, changes: &mut Vec<Change>) {
    if state.silent.remove(region) {
        changes.push(Change::RegionBack {
            region: region.to_string(),
        });
    }
    let seen = state.regions.entry(region.to_string()).or_insert(slot);
    *seen = (*seen).max(slot);
    if state.regions.len() > MAX_REGIONS {
        let oldest = state
            .regions
            .iter()
            .filter(|(r, _)| r.as_str() != region)
            .min_by_key(|(r, at)| (**at, (*r).clone()))
            .map(|(r, _)| r.clone());
        if let Some(oldest) = oldest {
            state.regions.remove(&oldest);
            state.silent.remove(&oldest);
        }
    }
}

/// The certificate of the newest check that saw one, and whether it expires within the
/// warning threshold of that check's slot.
fn see_certificate(
    state: &mut TargetState,
    report: &ReportFacts,
    policy: &Policy,
    changes: &mut Vec<Change>,
) {
    let Some(not_after) = report.cert_not_after else {
        return;
    };
    if state.cert.is_some_and(|c| c.seen_at > report.slot) {
        return;
    }
    let warning = not_after.saturating_sub(report.slot) < policy.cert_warning_us;
    let was = state.cert.is_some_and(|c| c.warning);
    state.cert = Some(Certificate {
        not_after,
        seen_at: report.slot,
        warning,
    });
    if warning != was {
        changes.push(Change::CertWarning { not_after, warning });
    }
}

/// The oldest slot the region window still counts: regions that reported this slot or a
/// newer one are expected.
fn window_start(state: &TargetState, policy: &Policy) -> Micros {
    let window = state
        .period_us
        .saturating_mul(i64::from(policy.region_window_periods));
    state.watermark.unwrap_or(0).saturating_sub(window)
}

/// Makes pending slots final, oldest first, while the oldest is final.
fn finalize(
    state: &mut TargetState,
    target_id: &str,
    (policy, windows): (&Policy, Windows<'_>),
    changes: &mut Vec<Change>,
) {
    let grace = state
        .period_us
        .saturating_mul(i64::from(policy.grace_periods));
    let since = window_start(state, policy);
    let watermark = state.watermark.unwrap_or(0);
    while let Some((&slot, reports)) = state.pending.first_key_value() {
        let expected = state.regions.values().filter(|at| **at >= since).count();
        let complete = state
            .regions
            .iter()
            .filter(|(_, at)| **at >= since)
            .all(|(r, _)| reports.contains_key(r));
        let graced = watermark >= slot.saturating_add(grace);
        if !(complete || graced || state.pending.len() > MAX_PENDING_SLOTS) {
            break;
        }
        let reports = state
            .pending
            .pop_first()
            .map(|(_, r)| r)
            .unwrap_or_default();
        let reporters_outside = reports
            .keys()
            .filter(|r| state.regions.get(*r).is_none_or(|at| *at < since))
            .count();
        let verdict = judge(&reports, expected + reporters_outside, policy);
        state.last_final = Some(slot);
        changes.push(Change::Verdict { slot, verdict });
        let maintenance = windows.covers(slot);
        count_verdict(state, slot, verdict, maintenance, changes);
        let judged = Judged {
            slot,
            verdict,
            maintenance,
        };
        step(state, target_id, judged, &reports, policy, changes);
    }
}

/// Counts a final slot's verdict (or maintenance) in its hour; an hour left behind is
/// complete.
fn count_verdict(
    state: &mut TargetState,
    slot: Micros,
    verdict: Verdict,
    maintenance: bool,
    changes: &mut Vec<Change>,
) {
    let hour = slot - slot.rem_euclid(HOUR_US);
    let current = match state.hour.take() {
        Some(current) if current.hour == hour => current,
        done => {
            if let Some(done) = done {
                changes.push(Change::HourCounted(done));
            }
            HourCounts {
                hour,
                ..HourCounts::default()
            }
        }
    };
    let mut current = current;
    if maintenance {
        current.maintenance = current.maintenance.saturating_add(1);
    } else {
        current.counts[verdict.index()] = current.counts[verdict.index()].saturating_add(1);
    }
    state.hour = Some(current);
}

/// A slot's verdict from its reports, out of `expected` regions.
fn judge(reports: &BTreeMap<String, Outcome>, expected: usize, policy: &Policy) -> Verdict {
    let downs = reports
        .values()
        .filter(|o| matches!(o, Outcome::Down { .. }))
        .count();
    let ups = reports.values().filter(|o| **o == Outcome::Up).count();
    if downs >= policy.quorum.needed(expected) {
        Verdict::Down
    } else if downs > 0 {
        Verdict::Degraded
    } else if ups > 0 {
        Verdict::Up
    } else {
        Verdict::Unknown
    }
}

/// Regions past the window are silent: reported once, until they report again.
fn mark_silent(state: &mut TargetState, policy: &Policy, changes: &mut Vec<Change>) {
    let since = window_start(state, policy);
    for (region, at) in &state.regions {
        if *at < since && state.silent.insert(region.clone()) {
            changes.push(Change::RegionSilent {
                region: region.clone(),
            });
        }
    }
}

/// Extends `run` by one slot (starting it at `slot` when broken).
fn extend(run: &mut Option<Run>, slot: Micros, tally: &Tally) {
    let run = run.get_or_insert_with(|| Run {
        first: slot,
        count: 0,
        tally: Tally::default(),
    });
    run.count = run.count.saturating_add(1);
    run.tally.add(tally);
}

/// Extends or breaks each run by one verdict.
fn advance_runs(runs: &mut Runs, slot: Micros, verdict: Verdict, tally: &Tally) {
    let keep = |run: &mut Option<Run>, extends: bool| {
        if extends {
            extend(run, slot, tally);
        } else {
            *run = None;
        }
    };
    keep(&mut runs.down, verdict == Verdict::Down);
    keep(
        &mut runs.failing,
        matches!(verdict, Verdict::Down | Verdict::Degraded),
    );
    keep(&mut runs.up, verdict == Verdict::Up);
    keep(
        &mut runs.not_down,
        matches!(verdict, Verdict::Up | Verdict::Degraded),
    );
}

/// A final slot: its start, its verdict, and whether it is in a maintenance window.
#[derive(Debug, Clone, Copy)]
struct Judged {
    slot: Micros,
    verdict: Verdict,
    maintenance: bool,
}

/// One final slot's verdict: the runs, the open incident's tally, and the state.
fn step(
    state: &mut TargetState,
    target_id: &str,
    judged: Judged,
    reports: &BTreeMap<String, Outcome>,
    policy: &Policy,
    changes: &mut Vec<Change>,
) {
    let Judged {
        slot,
        verdict,
        maintenance,
    } = judged;
    if verdict == Verdict::Unknown {
        return;
    }
    let mut tally = Tally::default();
    tally.add_slot(reports);
    advance_runs(&mut state.runs, slot, verdict, &tally);
    if let Some(open) = &mut state.open {
        let counts = match open.kind {
            Kind::Down => verdict == Verdict::Down,
            Kind::Degraded => matches!(verdict, Verdict::Down | Verdict::Degraded),
        };
        if counts && tally.checks_failed > 0 {
            open.tally.add(&tally);
            changes.push(Change::Updated(open.clone()));
        }
        if counts && open.maintenance && !maintenance {
            open.maintenance = false;
            changes.push(Change::MaintenanceOver(open.clone()));
        }
    }
    transition(state, target_id, judged, policy, changes);
}

/// Moves the state as the runs say (see the module doc).
fn transition(
    state: &mut TargetState,
    target_id: &str,
    judged: Judged,
    policy: &Policy,
    changes: &mut Vec<Change>,
) {
    let Judged {
        slot, maintenance, ..
    } = judged;
    let open = |state: &mut TargetState, to, mut incident: Incident, changes: &mut _| {
        incident.maintenance = maintenance;
        open(state, to, incident, changes);
    };
    let runs = &state.runs;
    let (down, failing) = (Runs::len(&runs.down), Runs::len(&runs.failing));
    let (up, not_down) = (Runs::len(&runs.up), Runs::len(&runs.not_down));
    match state.state {
        State::Up | State::Unknown | State::Degraded if down >= policy.down_after => {
            let Some(run) = state.runs.down.clone() else {
                return;
            };
            close(state, run.first, changes);
            let incident = Incident::open(target_id, Kind::Down, run.first, slot, run.tally);
            open(state, State::Down, incident, changes);
        }
        State::Up | State::Unknown if failing >= policy.down_after => {
            let Some(run) = state.runs.failing.clone() else {
                return;
            };
            let period = Incident::open(target_id, Kind::Degraded, run.first, slot, run.tally);
            open(state, State::Degraded, period, changes);
        }
        State::Down if not_down >= policy.up_after => {
            let Some(first) = state.runs.not_down.as_ref().map(|r| r.first) else {
                return;
            };
            close(state, first, changes);
            if up >= policy.up_after {
                become_(state, State::Up, first, changes);
            } else {
                let period =
                    Incident::open(target_id, Kind::Degraded, first, slot, Tally::default());
                open(state, State::Degraded, period, changes);
            }
        }
        State::Degraded | State::Unknown if up >= policy.up_after => {
            let Some(first) = state.runs.up.as_ref().map(|r| r.first) else {
                return;
            };
            close(state, first, changes);
            become_(state, State::Up, first, changes);
        }
        _ => {}
    }
}

/// Opens `incident` and enters `to`, at the incident's opening slot.
fn open(state: &mut TargetState, to: State, incident: Incident, changes: &mut Vec<Change>) {
    let at = incident.opened_at;
    changes.push(Change::Opened(incident.clone()));
    state.open = Some(incident);
    become_(state, to, at, changes);
}

/// Closes the open incident, if any, at `at`.
fn close(state: &mut TargetState, at: Micros, changes: &mut Vec<Change>) {
    if let Some(mut incident) = state.open.take() {
        incident.closed_at = Some(at.max(incident.opened_at));
        changes.push(Change::Closed(incident));
    }
}

/// Enters `to` at `at`.
fn become_(state: &mut TargetState, to: State, at: Micros, changes: &mut Vec<Change>) {
    if state.state != to {
        changes.push(Change::State {
            from: state.state,
            to,
            at,
        });
        state.state = to;
        state.since = Some(at);
    }
}

#[cfg(test)]
mod tests;
