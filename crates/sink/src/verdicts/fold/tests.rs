//! The fold, slot by slot: quorum, thresholds, incidents, late reports, silent regions, the
//! certificate warning, and that cutting a sequence into batches anywhere changes nothing.

use monitor_core::report::FailureClass;
use monitor_core::settings::Quorum;
use proptest::prelude::*;

use super::*;

const PERIOD: i64 = 1_000_000;
const T0: i64 = 1_790_000_000_000_000;

fn at(slot: i64) -> Micros {
    T0 + slot * PERIOD
}

fn down() -> Outcome {
    Outcome::Down {
        class: Some(FailureClass::ConnectRefused),
        error: Some("connection refused".into()),
    }
}

fn facts(region: &str, slot: i64, outcome: Outcome) -> ReportFacts {
    ReportFacts {
        target_id: "t".into(),
        region: region.into(),
        slot: at(slot),
        period_us: PERIOD,
        outcome,
        cert_not_after: None,
        response_ms: None,
    }
}

/// Folds the reports of `slots` (per slot: one outcome per region, `None` for no report).
fn run(
    state: &mut TargetState,
    policy: &Policy,
    regions: &[&str],
    slots: &[Vec<Option<Outcome>>],
    from: i64,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (k, outcomes) in slots.iter().enumerate() {
        for (region, outcome) in regions.iter().zip(outcomes) {
            if let Some(o) = outcome {
                let report = facts(region, from + k as i64, o.clone());
                changes.extend(apply(state, &report, policy, Windows::NONE));
            }
        }
    }
    changes
}

fn all(n: usize, o: Outcome) -> Vec<Option<Outcome>> {
    vec![Some(o); n]
}

/// The incidents opened (`closing` false) or closed (true) among `changes`.
fn incidents_of(changes: &[Change], closing: bool) -> Vec<&Incident> {
    changes
        .iter()
        .filter_map(|c| match (c, closing) {
            (Change::Opened(i), false) | (Change::Closed(i), true) => Some(i),
            _ => None,
        })
        .collect()
}

fn incidents(changes: &[Change]) -> Vec<&Incident> {
    incidents_of(changes, false)
}

fn closed(changes: &[Change]) -> Vec<&Incident> {
    incidents_of(changes, true)
}

fn verdicts(changes: &[Change]) -> Vec<Verdict> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Verdict { verdict, .. } => Some(*verdict),
            _ => None,
        })
        .collect()
}

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

#[test]
fn a_slot_is_final_once_every_expected_region_reported_it() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    // Slot 0 is the first: only its own reporter is known yet.
    run(&mut s, &p, &REGIONS, &[all(3, Outcome::Up)], 0);
    let c = apply(&mut s, &facts("eu", 1, Outcome::Up), &p, Windows::NONE);
    assert!(verdicts(&c).is_empty(), "us and ap are still expected");
    apply(&mut s, &facts("us", 1, Outcome::Up), &p, Windows::NONE);
    let c = apply(&mut s, &facts("ap", 1, Outcome::Up), &p, Windows::NONE);
    assert_eq!(verdicts(&c), [Verdict::Up]);
    assert_eq!(s.last_final, Some(at(1)));
    assert!(s.pending.is_empty());
}

#[test]
fn one_failing_region_of_three_is_degraded_and_never_an_incident() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let slot = vec![Some(down()), Some(Outcome::Up), Some(Outcome::Up)];
    let c = run(&mut s, &p, &REGIONS, &vec![slot; 20], 0);
    assert!(verdicts(&c)[1..].iter().all(|v| *v == Verdict::Degraded));
    assert_eq!(s.state, State::Degraded);
    let opened = incidents(&c);
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].kind,
        Kind::Degraded,
        "a degraded period, not an incident"
    );
    assert!(opened.iter().all(|i| i.kind != Kind::Down));
}

#[test]
fn an_outage_of_every_region_opens_one_incident_after_down_after_and_closes_after_up_after() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut slots = vec![all(3, Outcome::Up); 5];
    slots.extend(vec![all(3, down()); 6]);
    slots.extend(vec![all(3, Outcome::Up); 5]);
    let c = run(&mut s, &p, &REGIONS, &slots, 0);
    let opened = incidents(&c);
    assert_eq!(opened.len(), 1, "{c:#?}");
    let incident = opened[0];
    assert_eq!(incident.kind, Kind::Down);
    assert_eq!(incident.opened_at, at(5), "the first failing slot");
    assert_eq!(incident.detected_at, at(7), "the third down verdict");
    let done = closed(&c);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].closed_at, Some(at(11)), "the first good slot");
    assert_eq!(done[0].tally.checks_failed, 18, "6 slots × 3 regions");
    assert_eq!(done[0].tally.regions.len(), 3);
    assert_eq!(
        done[0].tally.dominant(),
        Some(("connect_refused", Some("connection refused")))
    );
    assert_eq!(s.state, State::Up);
    assert_eq!(s.since, Some(at(11)));
    assert!(s.open.is_none());
}

#[test]
fn the_state_waits_for_up_after_before_closing() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut slots = vec![all(3, Outcome::Up); 3];
    slots.extend(vec![all(3, down()); 3]);
    slots.push(all(3, Outcome::Up));
    let c = run(&mut s, &p, &REGIONS, &slots, 0);
    assert!(closed(&c).is_empty(), "one good slot is not enough");
    assert_eq!(s.state, State::Down);
}

#[test]
fn a_flapping_target_opens_no_incident_with_thresholds_above_one() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let slots: Vec<_> = (0..40)
        .map(|k| all(3, if k % 2 == 0 { Outcome::Up } else { down() }))
        .collect();
    let c = run(&mut s, &p, &REGIONS, &slots, 0);
    assert!(incidents(&c).is_empty(), "{:?}", incidents(&c));
    // With thresholds of one, every flap is an incident.
    let p1 = Policy {
        down_after: 1,
        up_after: 1,
        ..Policy::default()
    };
    let mut s1 = TargetState::default();
    let c = run(&mut s1, &p1, &REGIONS, &slots, 0);
    assert_eq!(incidents(&c).len(), 20);
}

#[test]
fn missed_reports_are_neither_up_nor_down() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut slots = vec![all(3, Outcome::Up); 3];
    slots.extend(vec![all(3, Outcome::Missed); 5]);
    slots.push(vec![Some(Outcome::Missed), Some(down()), Some(down())]);
    let c = run(&mut s, &p, &REGIONS, &slots, 0);
    let v = verdicts(&c);
    assert!(v[3..8].iter().all(|v| *v == Verdict::Unknown), "{v:?}");
    assert_eq!(v[8], Verdict::Down, "two of three expected regions");
    assert_eq!(s.state, State::Up, "unknown slots do not count");
}

#[test]
fn quorums_count_down_regions_out_of_the_expected_ones() {
    let slot = vec![Some(down()), Some(down()), Some(Outcome::Up)];
    for (quorum, expected) in [
        (Quorum::Majority, Verdict::Down),
        (Quorum::All, Verdict::Degraded),
        (Quorum::Any, Verdict::Down),
        (Quorum::AtLeast(3), Verdict::Degraded),
        (Quorum::AtLeast(2), Verdict::Down),
    ] {
        let p = Policy {
            quorum,
            ..Policy::default()
        };
        let mut s = TargetState::default();
        let c = run(&mut s, &p, &REGIONS, &vec![slot.clone(); 3], 0);
        assert_eq!(verdicts(&c).last(), Some(&expected), "{quorum}");
    }
}

#[test]
fn a_late_report_is_counted_and_changes_nothing() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut slots = vec![all(3, Outcome::Up); 3];
    slots.extend(vec![all(3, down()); 4]);
    slots.extend(vec![all(3, Outcome::Up); 3]);
    run(&mut s, &p, &REGIONS, &slots, 0);
    let before = s.clone();
    // A spool replay of an outage: "ap" was down at slots 0..9, reported long after.
    for k in 0..9 {
        let c = apply(&mut s, &facts("ap", k, down()), &p, Windows::NONE);
        assert_eq!(
            c,
            [Change::Late {
                region: "ap".into(),
                slot: at(k)
            }]
        );
    }
    assert_eq!(s, before);
}

#[test]
fn a_lagging_region_is_waited_for_one_grace() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    run(&mut s, &p, &REGIONS, &vec![all(3, Outcome::Up); 2], 0);
    apply(&mut s, &facts("eu", 2, Outcome::Up), &p, Windows::NONE);
    apply(&mut s, &facts("us", 2, Outcome::Up), &p, Windows::NONE);
    // ap has not reported slot 2; the next slot from eu is one period later: grace is over.
    let c = apply(&mut s, &facts("eu", 3, Outcome::Up), &p, Windows::NONE);
    assert_eq!(verdicts(&c), [Verdict::Up]);
    let late = apply(&mut s, &facts("ap", 2, down()), &p, Windows::NONE);
    assert!(matches!(late[..], [Change::Late { .. }]));
}

#[test]
fn a_region_silent_past_the_window_is_no_longer_expected_and_is_reported() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    run(&mut s, &p, &REGIONS, &vec![all(3, Outcome::Up); 3], 0);
    let two = vec![Some(Outcome::Up), Some(Outcome::Up), None];
    let c = run(&mut s, &p, &REGIONS, &vec![two.clone(); 12], 3);
    let silent: Vec<_> = c
        .iter()
        .filter(|c| matches!(c, Change::RegionSilent { .. }))
        .collect();
    assert_eq!(
        silent,
        [&Change::RegionSilent {
            region: "ap".into()
        }]
    );
    assert!(s.silent.contains("ap"));
    // Without ap expected, a slot is final as soon as eu and us reported it.
    apply(&mut s, &facts("eu", 15, Outcome::Up), &p, Windows::NONE);
    let c = apply(&mut s, &facts("us", 15, Outcome::Up), &p, Windows::NONE);
    assert!(verdicts(&c).contains(&Verdict::Up));
    assert_eq!(s.last_final, Some(at(15)));
    // ap comes back.
    let c = apply(&mut s, &facts("ap", 16, Outcome::Up), &p, Windows::NONE);
    assert!(c.contains(&Change::RegionBack {
        region: "ap".into()
    }));
    assert!(s.silent.is_empty());
}

#[test]
fn a_certificate_near_expiry_is_a_warning_of_its_own() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let day = 86_400 * 1_000_000;
    let mut r = facts("eu", 0, Outcome::Up);
    r.cert_not_after = Some(at(0) + 30 * day);
    assert!(apply(&mut s, &r, &p, Windows::NONE)
        .iter()
        .all(|c| !matches!(c, Change::CertWarning { .. })));
    r.slot = at(1);
    r.cert_not_after = Some(at(1) + 10 * day);
    let c = apply(&mut s, &r, &p, Windows::NONE);
    assert!(c.contains(&Change::CertWarning {
        not_after: at(1) + 10 * day,
        warning: true
    }));
    assert!(incidents(&c).is_empty(), "not an outage");
    assert_eq!(s.state, State::Up);
    assert!(s.cert.is_some_and(|c| c.warning));
}

#[test]
fn a_target_failing_for_some_regions_after_an_outage_goes_on_degraded() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut slots = vec![all(3, Outcome::Up); 3];
    slots.extend(vec![all(3, down()); 3]);
    slots.extend(vec![
        vec![Some(down()), Some(Outcome::Up), Some(Outcome::Up)];
        3
    ]);
    let c = run(&mut s, &p, &REGIONS, &slots, 0);
    let done = closed(&c);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].closed_at, Some(at(6)));
    assert_eq!(s.state, State::Degraded);
    assert_eq!(
        s.open.as_ref().map(|i| (i.kind, i.opened_at)),
        Some((Kind::Degraded, at(6)))
    );
}

#[test]
fn incident_ids_depend_on_target_kind_and_opening_slot_only() {
    let a = Incident::open("t", Kind::Down, 5, 7, Tally::default());
    let b = Incident::open("t", Kind::Down, 5, 9, Tally::default());
    assert_eq!(a.id, b.id);
    assert_ne!(
        a.id,
        Incident::open("t", Kind::Degraded, 5, 7, Tally::default()).id
    );
    assert_ne!(
        a.id,
        Incident::open("u", Kind::Down, 5, 7, Tally::default()).id
    );
}

/// A report sequence: three regions, slots mostly in order with some lag and some late or
/// missing reports, outcomes of every kind.
fn sequence() -> impl Strategy<Value = Vec<ReportFacts>> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Up),
        3 => Just(down()),
        1 => Just(Outcome::Down { class: Some(FailureClass::Timeout), error: None }),
        1 => Just(Outcome::Missed),
    ];
    proptest::collection::vec(
        (0usize..3, -3i64..2, outcome, proptest::bool::weighted(0.1)),
        1..300,
    )
    .prop_map(|steps| {
        let mut slot = 0i64;
        let mut out = Vec::new();
        for (region, jitter, outcome, skip) in steps {
            if region == 0 {
                slot += 1;
            }
            if skip {
                continue;
            }
            let mut r = facts(REGIONS[region], (slot + jitter).max(0), outcome);
            if slot % 7 == 0 {
                r.cert_not_after = Some(r.slot + 5 * 86_400 * 1_000_000);
            }
            out.push(r);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn folding_in_one_go_or_cut_anywhere_through_the_stored_form_gives_the_same_changes(
        reports in sequence(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        policy in (1u32..4, 1u32..4, 1u32..3).prop_map(|(d, u, g)| Policy {
            down_after: d, up_after: u, grace_periods: g, ..Policy::default()
        }),
    ) {
        let mut whole = TargetState::default();
        let expected: Vec<Change> =
            reports.iter().flat_map(|r| apply(&mut whole, r, &policy, Windows::NONE)).collect();

        let mut cut_at: Vec<usize> = cuts.iter().map(|i| i.index(reports.len() + 1)).collect();
        cut_at.sort_unstable();
        let mut state = TargetState::default();
        let mut changes = Vec::new();
        let mut from = 0;
        for cut in cut_at.into_iter().chain([reports.len()]) {
            // Each batch starts from the state as stored.
            let stored = serde_json::to_value(&state).expect("serializes");
            state = serde_json::from_value(stored).expect("deserializes");
            for r in &reports[from..cut] {
                changes.extend(apply(&mut state, r, &policy, Windows::NONE));
            }
            from = cut;
        }
        prop_assert_eq!(&changes, &expected);
        prop_assert_eq!(&state, &whole);
    }

    #[test]
    fn incidents_open_and_close_in_turn_and_never_close_before_they_open(
        reports in sequence(),
    ) {
        let mut state = TargetState::default();
        let mut open: Option<Incident> = None;
        for r in &reports {
            for change in apply(&mut state, r, &Policy::default(), Windows::NONE) {
                match change {
                    Change::Opened(i) => {
                        prop_assert!(open.is_none(), "opened {i:?} while {open:?} is open");
                        prop_assert!(i.opened_at <= i.detected_at);
                        open = Some(i);
                    }
                    Change::Closed(i) => {
                        let was = open.take();
                        prop_assert_eq!(was.map(|w| w.id), Some(i.id));
                        prop_assert!(i.closed_at.is_some_and(|c| c >= i.opened_at));
                    }
                    _ => {}
                }
            }
        }
        prop_assert_eq!(open.map(|i| i.id), state.open.map(|i| i.id));
    }
}

#[test]
fn an_hours_verdict_counts_are_complete_once_a_slot_of_a_later_hour_is_final() {
    let (mut s, p) = (TargetState::default(), Policy::default());
    // One region, one-minute slots: 60 of them in the first hour (T0 is not on an hour).
    let minute = 60_000_000;
    let first_hour = T0 - T0.rem_euclid(HOUR_US);
    let mut counted = Vec::new();
    for k in 0..120 {
        let mut r = facts("eu", 0, if k % 10 == 0 { down() } else { Outcome::Up });
        r.slot = T0 + k * minute;
        r.period_us = minute;
        counted.extend(
            apply(&mut s, &r, &p, Windows::NONE)
                .into_iter()
                .filter_map(|c| match c {
                    Change::HourCounted(h) => Some(h),
                    _ => None,
                }),
        );
    }
    assert_eq!(
        counted.len(),
        1 + usize::from(T0 + 120 * minute > first_hour + 2 * HOUR_US)
    );
    assert_eq!(counted[0].hour, first_hour);
    let in_first_hour = (first_hour + HOUR_US - T0 + minute - 1) / minute;
    assert_eq!(counted[0].counts.iter().sum::<u32>() as i64, in_first_hour);
    assert!(
        s.hour.as_ref().is_some_and(|h| h.hour > first_hour),
        "the current hour is in the state"
    );
}

/// Folds every region's outcome of slots `0..slots` (`outcome(k)`) under `windows`.
fn run_windowed(
    windows: Windows<'_>,
    slots: i64,
    outcome: impl Fn(i64) -> Outcome,
) -> (TargetState, Vec<Change>) {
    let (mut s, p) = (TargetState::default(), Policy::default());
    let mut changes = Vec::new();
    for k in 0..slots {
        for r in REGIONS {
            changes.extend(apply(&mut s, &facts(r, k, outcome(k)), &p, windows));
        }
    }
    (s, changes)
}

fn window(from: i64, to: i64) -> [std::sync::Arc<monitor_core::settings::MaintenanceWindow>; 1] {
    use monitor_core::settings::{MaintenanceWindow, WindowTimes};
    [std::sync::Arc::new(MaintenanceWindow {
        name: "deploy".into(),
        when: WindowTimes::Once {
            start: crate::verdicts::state::to_time(at(from)),
            end: crate::verdicts::state::to_time(at(to)),
        },
        targets: vec!["t".into()],
        selector: None,
    })]
}

fn maintenance_over(changes: &[Change]) -> Vec<&Incident> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::MaintenanceOver(i) => Some(i),
            _ => None,
        })
        .collect()
}

#[test]
fn an_outage_in_a_maintenance_window_is_marked_and_counted_apart() {
    let windows = window(5, 12);
    let down_in = |k| {
        if (5..10).contains(&k) {
            down()
        } else {
            Outcome::Up
        }
    };
    let (s, changes) = run_windowed(Windows::new(&windows), 20, down_in);
    let opened = incidents(&changes);
    assert_eq!(opened.len(), 1);
    assert!(opened[0].maintenance, "opened in the window");
    assert!(
        closed(&changes)[0].maintenance,
        "closed in it, never notified"
    );
    assert!(maintenance_over(&changes).is_empty());
    let hour = s.hour.unwrap_or_default();
    assert_eq!(hour.maintenance, 7, "slots 5 to 11 are counted apart");
    assert_eq!(hour.counts[Verdict::Down.index()], 0, "no down slot counts");
}

#[test]
fn an_outage_that_outlasts_its_window_becomes_an_incident_at_the_first_failing_slot_after() {
    let windows = window(5, 12);
    let down_in = |k| {
        if (5..16).contains(&k) {
            down()
        } else {
            Outcome::Up
        }
    };
    let (s, changes) = run_windowed(Windows::new(&windows), 24, down_in);
    let over = maintenance_over(&changes);
    assert_eq!(over.len(), 1, "{changes:#?}");
    assert!(!over[0].maintenance);
    assert_eq!(closed(&changes).len(), 1);
    assert!(!closed(&changes)[0].maintenance);
    let hour = s.hour.unwrap_or_default();
    assert_eq!(
        (hour.maintenance, hour.counts[Verdict::Down.index()]),
        (7, 4)
    );
    let (_, plain) = run_windowed(Windows::NONE, 24, down_in);
    assert!(
        !incidents(&plain)[0].maintenance,
        "without a window nothing is marked"
    );
}
