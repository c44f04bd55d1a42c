//! What a notification says. Every channel renders the same [`Message`], so a page, a chat
//! line and an e-mail agree; the text puts first what on-call people need first: which
//! target, what happened, since when, from where, and why.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Transition {
    /// An incident opened: a quorum of regions finds the target down.
    Opened,
    /// The incident closed: the target is up again.
    Resolved,
    /// The incident is still open (the `n`th reminder).
    Reminder {
        /// Which reminder, from 1.
        n: u32,
    },
    /// A degraded period began: some regions, fewer than the quorum, find it down.
    Degraded,
    /// The degraded period ended.
    DegradedEnded,
    /// The certificate expires within `days` days.
    CertificateExpiring {
        /// The threshold crossed.
        days: u32,
    },
}

impl Transition {
    /// A short word for subjects and keys: `opened`, `resolved`, `reminder-2`, ...
    pub fn key_part(&self) -> String {
        match self {
            Transition::Opened => "opened".into(),
            Transition::Resolved => "resolved".into(),
            Transition::Reminder { n } => format!("reminder-{n}"),
            Transition::Degraded => "degraded".into(),
            Transition::DegradedEnded => "degraded-ended".into(),
            Transition::CertificateExpiring { days } => format!("certificate-{days}d"),
        }
    }

    /// Whether this says something is wrong (as opposed to resolved).
    pub fn is_problem(&self) -> bool {
        !matches!(self, Transition::Resolved | Transition::DegradedEnded)
    }
}

/// One transition of one target, as delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable idempotency key of this transition: the incident (or certificate) and the
    /// transition. A receiver that deduplicates on it sees each transition once.
    pub key: String,
    /// What happened.
    pub transition: Transition,
    /// The target's id.
    pub target_id: String,
    /// Its display name (its URL when it has none).
    pub target_name: String,
    /// The URL checked.
    pub url: String,
    /// The target's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The state it is in after the transition: `down`, `up`, `degraded`.
    pub state: String,
    /// When the problem began (the first failing slot), or, for a resolution, when it ended.
    pub since: DateTime<Utc>,
    /// The incident, when the transition belongs to one.
    pub incident_id: Option<Uuid>,
    /// The regions that found it failing.
    #[serde(default)]
    pub regions: Vec<String>,
    /// The failure class that dominated (`timeout`, `connect`, `tls`, `status`, ...).
    pub cause_class: Option<String>,
    /// The error that dominated.
    pub cause_error: Option<String>,
    /// How long the incident lasted, for a resolution, in seconds.
    pub duration_seconds: Option<i64>,
    /// When the certificate expires, for a certificate warning.
    pub certificate_not_after: Option<DateTime<Utc>>,
    /// A link to the status page or dashboard, when one is configured.
    pub link: Option<String>,
}

impl Event {
    /// One line: `DOWN shop (https://shop.example) since 2026-11-28T12:00:00Z from eu, us: timeout: ...`.
    pub fn headline(&self) -> String {
        let mut line = format!("{} {}", self.word(), self.target_name);
        if self.target_name != self.url {
            let _ = write!(line, " ({})", self.url);
        }
        match self.transition {
            Transition::Resolved | Transition::DegradedEnded => {
                let _ = write!(line, " at {}", show_time(self.since));
                if let Some(d) = self.duration_seconds {
                    let _ = write!(line, " after {}", show_seconds(d));
                }
            }
            Transition::CertificateExpiring { days } => {
                let _ = write!(line, ": certificate expires within {days} days");
                if let Some(at) = self.certificate_not_after {
                    let _ = write!(line, " ({})", show_time(at));
                }
            }
            _ => {
                let _ = write!(line, " since {}", show_time(self.since));
                if !self.regions.is_empty() {
                    let _ = write!(line, " from {}", self.regions.join(", "));
                }
                if let Some(cause) = self.cause() {
                    let _ = write!(line, ": {cause}");
                }
            }
        }
        line
    }

    /// The failure class and error: `timeout: no answer within 10s`.
    pub fn cause(&self) -> Option<String> {
        match (&self.cause_class, &self.cause_error) {
            (Some(c), Some(e)) => Some(format!("{c}: {e}")),
            (Some(c), None) => Some(c.clone()),
            (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        }
    }

    /// The leading word: `DOWN`, `RESOLVED`, `STILL DOWN`, `DEGRADED`, `RECOVERED`, `CERTIFICATE`.
    pub fn word(&self) -> &'static str {
        match self.transition {
            Transition::Opened => "DOWN",
            Transition::Resolved => "RESOLVED",
            Transition::Reminder { .. } => "STILL DOWN",
            Transition::Degraded => "DEGRADED",
            Transition::DegradedEnded => "RECOVERED",
            Transition::CertificateExpiring { .. } => "CERTIFICATE",
        }
    }
}

/// What one delivery carries: one event, or a storm's events grouped into one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The delivery's idempotency key: the event's key, or the group's.
    pub key: String,
    /// The events, at least one.
    pub events: Vec<Event>,
}

impl Message {
    /// A subject line: the one event's headline, or `12 targets DOWN: a, b, c and 9 more`.
    pub fn subject(&self) -> String {
        match self.events.as_slice() {
            [one] => one.headline(),
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .take(3)
                    .map(|e| e.target_name.as_str())
                    .collect();
                let word = many.first().map_or("", Event::word);
                let mut s = format!("{} targets {word}: {}", many.len(), names.join(", "));
                if many.len() > names.len() {
                    let _ = write!(s, " and {} more", many.len() - names.len());
                }
                s
            }
        }
    }

    /// The whole text: the subject, then one headline per event, then the link.
    pub fn text(&self) -> String {
        let mut text = self.subject();
        if self.events.len() > 1 {
            for e in &self.events {
                let _ = write!(text, "\n- {}", e.headline());
            }
        }
        if let Some(link) = self.events.iter().find_map(|e| e.link.as_deref()) {
            let _ = write!(text, "\n{link}");
        }
        text
    }
}

/// `text` cut to at most `max_chars` characters, ending in `…` when cut: receivers bound
/// their fields (Slack's header, PagerDuty's summary) and refuse a message that overflows one.
pub fn bounded(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A time as messages show it: `2026-11-28T12:00:00Z`.
pub fn show_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration in seconds as messages show it: `1h 5m`, `42s`, `3d 2h`.
pub fn show_seconds(s: i64) -> String {
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(transition: Transition) -> Event {
        Event {
            key: "k".into(),
            transition,
            target_id: "shop".into(),
            target_name: "Shop".into(),
            url: "https://shop.example/".into(),
            labels: BTreeMap::new(),
            state: "down".into(),
            since: DateTime::from_timestamp(1_764_331_200, 0).unwrap_or_default(),
            incident_id: None,
            regions: vec!["eu".into(), "us".into()],
            cause_class: Some("timeout".into()),
            cause_error: Some("no answer within 10s".into()),
            duration_seconds: Some(3900),
            certificate_not_after: None,
            link: Some("https://status.example/".into()),
        }
    }

    #[test]
    fn headline_says_what_where_and_why() {
        let line = event(Transition::Opened).headline();
        assert_eq!(
            line,
            "DOWN Shop (https://shop.example/) since 2025-11-28T12:00:00Z from eu, us: timeout: no answer within 10s"
        );
        let line = event(Transition::Resolved).headline();
        assert!(
            line.starts_with("RESOLVED Shop") && line.ends_with("after 1h 5m"),
            "{line}"
        );
    }

    #[test]
    fn a_group_lists_its_targets() {
        let events = (0..5)
            .map(|i| Event {
                target_name: format!("t{i}"),
                ..event(Transition::Opened)
            })
            .collect();
        let m = Message {
            key: "g".into(),
            events,
        };
        assert_eq!(m.subject(), "5 targets DOWN: t0, t1, t2 and 2 more");
        assert_eq!(m.text().lines().count(), 7);
    }

    #[test]
    fn bounded_text_ends_in_an_ellipsis_when_cut() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("ééééé", 3), "éé…");
        assert_eq!(bounded("abcdef", 6), "abcdef");
    }
}
