//! From what the verdicts changed to outbox rows: [`Routing`] knows each target's name, URL,
//! labels and whether it is notified (from the settings), turns an incident or a certificate
//! into an [`Event`], and routes it to its channels by labels. It is built once from the
//! settings and used by the fold (inside its transaction) and by the dispatcher (reminders),
//! so both say the same thing about a target.
//!
//! Everything here is a pure function of the incident and the settings: a replay builds the
//! same events with the same keys, so the outbox's `ON CONFLICT DO NOTHING` drops them.

use std::collections::HashMap;

use monitor_core::settings::{Labels, NotifySettings, SinkSettings};
use uuid::Uuid;

use super::message::{Event, Transition};
use crate::verdicts::state::{to_time, Incident, Kind, Micros};

/// Namespace of outbox ids: a row's id is the UUID v5 of its event key and channel.
pub const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x9d2e_41c0_5b7a_4f3e_8c61_2a0f_7e4d_b351);

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// What notifications say of a target besides its id.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInfo {
    /// Its display name (its URL when it has none).
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Its labels.
    pub labels: Labels,
    /// Whether it is notified at all.
    pub notify: bool,
}

/// One event for one channel, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// UUID v5 of the event key and the channel.
    pub id: Uuid,
    /// The channel's name.
    pub channel: String,
    /// Events of one channel and transition share it: they may go out as one message.
    pub group_key: String,
    /// The event.
    pub event: Event,
}

impl OutboxRow {
    /// The row of `event` for `channel`, its id from the event's key and the channel.
    pub fn new(channel: String, group_key: String, event: Event) -> OutboxRow {
        let name = format!("{}\n{channel}", event.key);
        OutboxRow {
            id: Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes()),
            channel,
            group_key,
            event,
        }
    }
}

/// The settings' channels and routes, and every configured target's [`TargetInfo`].
#[derive(Debug, Clone, Default)]
pub struct Routing {
    settings: NotifySettings,
    targets: HashMap<String, TargetInfo>,
}

impl Routing {
    /// The routing of the sink's settings.
    pub fn from_settings(settings: &SinkSettings) -> Routing {
        let targets = settings
            .targets
            .iter()
            .map(|t| {
                let url = t.url.to_string();
                let info = TargetInfo {
                    name: t.name.clone().unwrap_or_else(|| url.clone()),
                    url,
                    labels: t.labels.clone(),
                    notify: t.notify,
                };
                (t.id.clone(), info)
            })
            .collect();
        Routing {
            settings: settings.sink.notifications.clone(),
            targets,
        }
    }

    /// The notification settings.
    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// Whether any channel is configured (no channel: nothing is written).
    pub fn is_active(&self) -> bool {
        !self.settings.channels.is_empty()
    }

    /// What is known of `target_id`; a target not in the settings (reports of a checker with
    /// other settings) is named by its id and notified on the default routes.
    pub fn target(&self, target_id: &str, url: &str) -> TargetInfo {
        self.targets
            .get(target_id)
            .cloned()
            .unwrap_or_else(|| TargetInfo {
                name: target_id.to_string(),
                url: url.to_string(),
                labels: Labels::new(),
                notify: true,
            })
    }

    /// The event of an incident opening, closing or still open, or `None` when it is not
    /// notified (a degraded period without `degraded = true`, or during maintenance).
    pub fn incident_event(
        &self,
        incident: &Incident,
        transition: Transition,
        target: &TargetInfo,
    ) -> Option<Event> {
        if incident.maintenance || (incident.kind == Kind::Degraded && !self.settings.degraded) {
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
        let (cause_class, cause_error) = match incident.tally.dominant() {
            Some((c, e)) => (Some(c.to_string()), e.map(str::to_string)),
            None => (None, None),
        };
        let state = match (closed, incident.kind) {
            (true, _) => "up",
            (false, Kind::Down) => "down",
            (false, Kind::Degraded) => "degraded",
        };
        let mut event = self.event_of(
            format!("incident/{}/{}", incident.id, transition.key_part()),
            transition,
            &incident.target_id,
            target,
            state,
            since,
        );
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

    /// The smallest threshold of `certificate_days` a certificate expiring at `not_after`
    /// has crossed at `seen_at`, when it is smaller than `notified` (the smallest already
    /// notified for this expiry).
    pub fn certificate_threshold(
        &self,
        not_after: Micros,
        seen_at: Micros,
        notified: Option<u32>,
    ) -> Option<u32> {
        let left = not_after.saturating_sub(seen_at);
        let crossed = self
            .settings
            .certificate_days
            .iter()
            .copied()
            .filter(|d| left < i64::from(*d).saturating_mul(DAY_US))
            .min()?;
        notified.is_none_or(|n| crossed < n).then_some(crossed)
    }

    /// The event of a certificate crossing `days` before its expiry.
    pub fn certificate_event(
        &self,
        target_id: &str,
        target: &TargetInfo,
        not_after: Micros,
        days: u32,
        seen_at: Micros,
    ) -> Event {
        let transition = Transition::CertificateExpiring { days };
        let mut event = self.event_of(
            format!("certificate/{target_id}/{not_after}/{days}"),
            transition,
            target_id,
            target,
            "up",
            seen_at,
        );
        event.certificate_not_after = Some(to_time(not_after));
        event
    }

    /// An event with the target's fields and the link filled in.
    fn event_of(
        &self,
        key: String,
        transition: Transition,
        target_id: &str,
        target: &TargetInfo,
        state: &str,
        since: Micros,
    ) -> Event {
        Event {
            key,
            transition,
            target_id: target_id.to_string(),
            target_name: target.name.clone(),
            url: target.url.clone(),
            labels: target.labels.clone(),
            state: state.to_string(),
            since: to_time(since),
            incident_id: None,
            regions: Vec::new(),
            cause_class: None,
            cause_error: None,
            duration_seconds: None,
            certificate_not_after: None,
            link: self.settings.link.as_ref().map(|l| l.to_string()),
        }
    }

    /// The outbox rows of `event`: one per channel its target is routed to.
    pub fn rows(&self, event: Event, target: &TargetInfo) -> Vec<OutboxRow> {
        self.settings
            .channels_for(&target.labels, target.notify)
            .into_iter()
            .map(|channel| {
                let group_key = format!("{channel}/{}", event.transition.key_part());
                OutboxRow::new(channel, group_key, event.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::state::Tally;

    fn routing(degraded: bool) -> Routing {
        let mut settings = NotifySettings {
            degraded,
            ..NotifySettings::default()
        };
        settings.default_channels = vec!["ops".into()];
        Routing {
            settings,
            targets: HashMap::new(),
        }
    }

    #[test]
    fn incidents_become_events_with_stable_keys_and_ids() {
        let r = routing(false);
        let target = r.target("shop", "https://shop.example/");
        let mut incident =
            Incident::open("shop", Kind::Down, 1_000_000, 3_000_000, Tally::default());
        let opened = r
            .incident_event(&incident, Transition::Opened, &target)
            .expect("down is notified");
        assert_eq!(opened.state, "down");
        incident.closed_at = Some(61_000_000);
        let resolved = r
            .incident_event(&incident, Transition::Resolved, &target)
            .expect("notified");
        assert_eq!(resolved.duration_seconds, Some(60));
        assert_ne!(opened.key, resolved.key);
        let a = r.rows(opened.clone(), &target);
        let b = r.rows(opened, &target);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].id, b[0].id, "a replay gives the same id");
        incident.maintenance = true;
        assert!(r
            .incident_event(&incident, Transition::Opened, &target)
            .is_none());
    }

    #[test]
    fn degraded_periods_are_notified_only_when_asked() {
        let incident = Incident::open("s", Kind::Degraded, 0, 0, Tally::default());
        let target = routing(false).target("s", "https://s.example/");
        assert!(routing(false)
            .incident_event(&incident, Transition::Opened, &target)
            .is_none());
        let event = routing(true)
            .incident_event(&incident, Transition::Opened, &target)
            .expect("notified");
        assert_eq!(event.transition, Transition::Degraded);
    }

    #[test]
    fn each_certificate_threshold_is_crossed_once_smallest_first() {
        let r = routing(false);
        let not_after = 100 * DAY_US;
        assert_eq!(r.certificate_threshold(not_after, 50 * DAY_US, None), None);
        assert_eq!(
            r.certificate_threshold(not_after, 75 * DAY_US, None),
            Some(30)
        );
        assert_eq!(
            r.certificate_threshold(not_after, 75 * DAY_US, Some(30)),
            None
        );
        assert_eq!(
            r.certificate_threshold(not_after, 95 * DAY_US, Some(30)),
            Some(7),
            "a jump past several thresholds notifies the smallest"
        );
    }
}
