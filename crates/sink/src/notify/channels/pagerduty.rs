//! PagerDuty: events sent to an Events API v2 integration, which opens an alert on a
//! `trigger` and closes it on a `resolve` carrying the same `dedup_key`.
//!
//! The `dedup_key` is the incident's, not the transition's: [`dedup_key`] takes the event's
//! `incident_id` when it has one, so the trigger of an incident, its reminders and its
//! resolution land on one PagerDuty alert. Without an incident (a certificate warning) it is
//! the event's key with its transition's suffix (`:opened`, `:resolved`, ...) removed, so a
//! key of the form `<thing>:<transition>` still pairs, and it is bounded to
//! [`MAX_DEDUP_KEY_CHARS`].
//!
//! PagerDuty has no grouped event: a grouped [`Message`] (a storm of several targets) is sent
//! as one event per incident, one request each, in order. The first failure ends the
//! delivery and is its answer; a retry sends them all again, which PagerDuty's deduplication
//! makes harmless (a second trigger with the same `dedup_key` adds to the open alert).

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use monitor_core::settings::{PagerDutySettings, Secret};
use serde_json::{json, Map, Value};

use crate::notify::delivery::{post, Answer, DeliveryError};
use crate::notify::message::{bounded, show_time, Event, Message};

/// PagerDuty's bound on `payload.summary`.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// PagerDuty's bound on `dedup_key`.
pub const MAX_DEDUP_KEY_CHARS: usize = 255;
/// Who sends the events, as PagerDuty shows it (`client`).
pub const CLIENT: &str = "web-monitor";

/// A PagerDuty service's Events API v2 integration.
#[derive(Debug, Clone)]
pub struct PagerDuty {
    routing_key: Secret,
    url: String,
    severity: &'static str,
}

impl PagerDuty {
    /// The integration of these settings.
    pub fn new(settings: &PagerDutySettings) -> PagerDuty {
        PagerDuty {
            routing_key: settings.routing_key.clone(),
            url: settings.url.to_string(),
            severity: settings.severity.as_str(),
        }
    }

    /// Sends one event per event of `message` (PagerDuty answers 202 to each it accepts);
    /// the answer is the last one, or the first failure.
    pub async fn deliver(&self, message: &Message) -> Result<Answer, DeliveryError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut answer = Err(DeliveryError::Refused {
            reason: "the message has no events".into(),
            status: None,
        });
        for event in &message.events {
            let body = self.event(event).to_string().into_bytes();
            answer = Ok(post(&self.url, &headers, body).await?);
        }
        answer
    }

    /// The Events API v2 body for one event: `trigger` for a problem, `resolve` otherwise.
    pub fn event(&self, event: &Event) -> Value {
        let mut body = json!({
            "routing_key": self.routing_key.expose(),
            "dedup_key": dedup_key(event),
        });
        let trigger = event.transition.is_problem();
        body["event_action"] = json!(if trigger { "trigger" } else { "resolve" });
        if trigger {
            body["payload"] = self.payload(event);
            body["client"] = json!(CLIENT);
            if let Some(link) = &event.link {
                body["client_url"] = json!(link);
                body["links"] = json!([{"href": link, "text": "Status"}]);
            }
        }
        body
    }

    /// What the alert shows: summary, source, severity, when, which target, details.
    fn payload(&self, event: &Event) -> Value {
        let mut payload = json!({
            "summary": bounded(&event.headline(), MAX_SUMMARY_CHARS),
            "source": event.url,
            "severity": self.severity,
            "timestamp": show_time(event.since),
            "component": event.target_id,
            "custom_details": details(event),
        });
        if let Some(group) = group(event) {
            payload["group"] = json!(group);
        }
        if let Some(class) = &event.cause_class {
            payload["class"] = json!(class);
        }
        payload
    }
}

/// The incident's key: see the module's doc.
pub fn dedup_key(event: &Event) -> String {
    let key = match event.incident_id {
        Some(id) => id.to_string(),
        None => {
            let suffix = format!(":{}", event.transition.key_part());
            event
                .key
                .strip_suffix(&suffix)
                .unwrap_or(&event.key)
                .to_string()
        }
    };
    key.chars().take(MAX_DEDUP_KEY_CHARS).collect()
}

/// The alert's `group`: the target's `group` label, or else its first label as `key=value`.
fn group(event: &Event) -> Option<String> {
    if let Some(group) = event.labels.get("group") {
        return Some(group.clone());
    }
    event.labels.iter().next().map(|(k, v)| format!("{k}={v}"))
}

/// `custom_details`: what the headline says, as fields.
fn details(event: &Event) -> Value {
    let mut details = Map::new();
    details.insert("target".into(), json!(event.target_name));
    details.insert("state".into(), json!(event.state));
    details.insert("transition".into(), json!(event.transition.key_part()));
    if !event.regions.is_empty() {
        details.insert("regions".into(), json!(event.regions));
    }
    if let Some(cause) = event.cause() {
        details.insert("cause".into(), json!(cause));
    }
    if let Some(at) = event.certificate_not_after {
        details.insert("certificate_not_after".into(), json!(show_time(at)));
    }
    if !event.labels.is_empty() {
        details.insert("labels".into(), json!(event.labels));
    }
    Value::Object(details)
}
