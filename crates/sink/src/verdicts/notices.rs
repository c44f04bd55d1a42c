//! What the verdicts tell people: the outbox rows of what one report changed (incidents
//! opened, outlasting their maintenance window, or closed; a certificate crossing a
//! threshold), built here in the fold, where incidents live, with the routing of
//! [`notify::routing`](crate::notify::routing), which knows targets and channels but not
//! incidents. Pure functions of the changes and the settings, so a replay builds the same rows
//! with the same ids.

use monitor_core::report::Report;

use super::state::{to_time, Change, Incident, Kind, TargetState};
use crate::notify::message::{Event, Transition};
use crate::notify::routing::{OutboxRow, Routing, TargetInfo};

/// The outbox rows of what one report changed: incidents opened and closed, and a
/// certificate threshold crossed (remembered in `state`).
pub(super) fn notices(
    routing: &Routing,
    report: &Report,
    state: &mut TargetState,
    changes: &[Change],
    out: &mut Vec<OutboxRow>,
) {
    let target = || routing.target(&report.target_id, &report.url);
    for change in changes {
        let (incident, transition) = match change {
            Change::Opened(i) | Change::MaintenanceOver(i) => (i, Transition::Opened),
            Change::Closed(i) => (i, Transition::Resolved),
            _ => continue,
        };
        let target = target();
        if let Some(event) = incident_event(routing, incident, transition, &target) {
            out.extend(routing.rows(event, &target));
        }
    }
    let Some(cert) = state.cert else { return };
    let notified = state
        .cert_notified
        .filter(|(not_after, _)| *not_after == cert.not_after)
        .map(|(_, days)| days);
    let crossed = routing.certificate_threshold(cert.not_after, cert.seen_at, notified);
    if let Some(days) = crossed {
        state.cert_notified = Some((cert.not_after, days));
        let target = target();
        let seen_at = to_time(cert.seen_at);
        let event =
            routing.certificate_event(&report.target_id, &target, cert.not_after, days, seen_at);
        out.extend(routing.rows(event, &target));
    }
}

/// The event of an incident opening, closing or still open, or `None` when it is not
/// notified (a degraded period without `degraded = true`, or during maintenance).
pub fn incident_event(
    routing: &Routing,
    incident: &Incident,
    transition: Transition,
    target: &TargetInfo,
) -> Option<Event> {
    let degraded_notified = routing.settings().degraded;
    if incident.maintenance || (incident.kind == Kind::Degraded && !degraded_notified) {
        return None;
    }
    let transition = match (incident.kind, transition) {
        (Kind::Degraded, Transition::Opened) => Transition::Degraded,
        (Kind::Degraded, Transition::Resolved) => Transition::DegradedEnded,
        (_, t) => t,
    };
    let closed = matches!(transition, Transition::Resolved | Transition::DegradedEnded);
    let since = match (closed, incident.closed_at) {
        (true, Some(at)) => at,
        _ => incident.opened_at,
    };
    let state = match (closed, incident.kind) {
        (true, _) => "up",
        (false, Kind::Down) => "down",
        (false, Kind::Degraded) => "degraded",
    };
    let key = format!("incident/{}/{}", incident.id, transition.key_part());
    let since = to_time(since);
    let mut event = routing.event(key, transition, &incident.target_id, target, state, since);
    let (cause_class, cause_error) = match incident.tally.dominant() {
        Some((c, e)) => (Some(c.to_string()), e.map(str::to_string)),
        None => (None, None),
    };
    event.incident_id = Some(incident.id);
    event.regions = incident.tally.regions.iter().cloned().collect();
    event.cause_class = cause_class;
    event.cause_error = cause_error;
    event.duration_seconds = incident
        .closed_at
        .filter(|_| closed)
        .map(|at| (at - incident.opened_at) / 1_000_000);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::routing::tests::routing;
    use crate::verdicts::state::Tally;

    #[test]
    fn incidents_become_events_with_stable_keys_and_ids() {
        let r = routing(false);
        let target = r.target("shop", "https://shop.example/");
        let mut incident =
            Incident::open("shop", Kind::Down, 1_000_000, 3_000_000, Tally::default());
        let opened =
            incident_event(&r, &incident, Transition::Opened, &target).expect("down is notified");
        assert_eq!(opened.state, "down");
        incident.closed_at = Some(61_000_000);
        let resolved =
            incident_event(&r, &incident, Transition::Resolved, &target).expect("notified");
        assert_eq!(resolved.duration_seconds, Some(60));
        assert_ne!(opened.key, resolved.key);
        let a = r.rows(opened.clone(), &target);
        let b = r.rows(opened, &target);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].id, b[0].id, "a replay gives the same id");
        incident.maintenance = true;
        assert!(incident_event(&r, &incident, Transition::Opened, &target).is_none());
    }

    #[test]
    fn degraded_periods_are_notified_only_when_asked() {
        let incident = Incident::open("s", Kind::Degraded, 0, 0, Tally::default());
        let target = routing(false).target("s", "https://s.example/");
        assert!(incident_event(&routing(false), &incident, Transition::Opened, &target).is_none());
        let event = incident_event(&routing(true), &incident, Transition::Opened, &target)
            .expect("notified");
        assert_eq!(event.transition, Transition::Degraded);
    }
}
