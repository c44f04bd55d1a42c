//! Where events go: [`Routing`] knows each target's name, URL, labels and whether it is
//! notified (from the settings), fills an [`Event`] with them, and routes it to its channels
//! by labels as outbox rows. It is built once from the settings and used by the fold (which
//! turns incidents and certificates into events inside its transaction) and by the dispatcher
//! (reminders), so both say the same thing about a target.
//!
//! Everything here is a pure function of the incident and the settings: a replay builds the
//! same events with the same keys, so the outbox's `ON CONFLICT DO NOTHING` drops them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use monitor_core::settings::{Labels, NotifySettings, SinkSettings, TargetSettings};
use uuid::Uuid;

use super::message::{Event, Transition};

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
        Routing::of_targets(settings, &settings.targets)
    }

    /// The routing of the sink's settings for `targets`.
    pub fn of_targets(settings: &SinkSettings, targets: &[TargetSettings]) -> Routing {
        let targets = targets
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

    /// The smallest threshold of `certificate_days` a certificate expiring at `not_after`
    /// has crossed at `seen_at`, when it is smaller than `notified` (the smallest already
    /// notified for this expiry).
    pub fn certificate_threshold(
        &self,
        not_after: i64,
        seen_at: i64,
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

    /// The event of a certificate expiring at `not_after` (microseconds) crossing `days`
    /// before its expiry, seen at `seen_at`.
    pub fn certificate_event(
        &self,
        target_id: &str,
        target: &TargetInfo,
        not_after: i64,
        days: u32,
        seen_at: DateTime<Utc>,
    ) -> Event {
        let transition = Transition::CertificateExpiring { days };
        let key = format!("certificate/{target_id}/{not_after}/{days}");
        let mut event = self.event(key, transition, target_id, target, "up", seen_at);
        event.certificate_not_after = DateTime::from_timestamp_micros(not_after);
        event
    }

    /// An event with the target's fields and the link filled in.
    pub fn event(
        &self,
        key: String,
        transition: Transition,
        target_id: &str,
        target: &TargetInfo,
        state: &str,
        since: DateTime<Utc>,
    ) -> Event {
        Event {
            key,
            transition,
            target_id: target_id.to_string(),
            target_name: target.name.clone(),
            url: target.url.clone(),
            labels: target.labels.clone(),
            state: state.to_string(),
            since,
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
pub(crate) mod tests {
    use super::*;

    /// Routing to `ops` by default, degraded periods notified when `degraded`.
    pub(crate) fn routing(degraded: bool) -> Routing {
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
