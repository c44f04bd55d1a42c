//! Slack: a message posted to a channel's incoming webhook, as Block Kit blocks with a plain
//! `text` fallback (what notifications and screen readers show).
//!
//! One event gets a header (its word and target), a section with the headline and the target's
//! URL, and fields for the regions, the cause and the time; a group gets the header (the
//! group's subject) and one section listing each event's headline. Every text is bounded by
//! Slack's limits ([`MAX_HEADER_CHARS`], [`MAX_SECTION_CHARS`], [`MAX_FIELD_CHARS`]), since
//! Slack refuses a whole message whose one block overflows, and `&`, `<`, `>` are escaped so
//! that nothing a target reports (`<!channel>`) is read as Slack markup.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use monitor_core::settings::{Secret, SlackSettings};
use serde_json::{json, Value};

use crate::notify::delivery::{post, Answer, DeliveryError};
use crate::notify::message::{bounded, show_seconds, show_time, Event, Message, Transition};

/// Slack's bound on a header block's text.
pub const MAX_HEADER_CHARS: usize = 150;
/// Slack's bound on a section block's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's bound on one field of a section.
pub const MAX_FIELD_CHARS: usize = 2000;
/// Bound on the `text` fallback (Slack truncates a message's text far above it).
pub const MAX_TEXT_CHARS: usize = 4000;

/// A Slack channel, reached through its incoming webhook.
#[derive(Debug, Clone)]
pub struct Slack {
    url: Secret,
}

impl Slack {
    /// The channel of these settings.
    pub fn new(settings: &SlackSettings) -> Slack {
        Slack {
            url: settings.url.clone(),
        }
    }

    /// Posts `message`. Slack answers 200 `ok` when it takes it; 4xx (a revoked webhook, a
    /// payload it refuses) is refused, 429 and 5xx are retried.
    pub async fn deliver(&self, message: &Message) -> Result<Answer, DeliveryError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = payload(message).to_string().into_bytes();
        post(self.url.expose(), &headers, body).await
    }
}

/// The webhook's JSON: `text` and `blocks`.
pub fn payload(message: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": bounded(&message.subject(), MAX_HEADER_CHARS)},
    })];
    match message.events.as_slice() {
        [one] => blocks.push(event_section(one)),
        many => blocks.push(list_section(many)),
    }
    if let Some(link) = message.events.iter().find_map(|e| e.link.as_deref()) {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{}|Status>", escape(link))}],
        }));
    }
    json!({
        "text": bounded(&message.text(), MAX_TEXT_CHARS),
        "blocks": blocks,
    })
}

/// One event: the headline and the URL, with fields for the regions, cause and time.
fn event_section(event: &Event) -> Value {
    let text = format!("*{}*\n{}", escape(&event.headline()), escape(&event.url));
    let mut fields = Vec::new();
    if !event.regions.is_empty() {
        fields.push(field("Regions", &event.regions.join(", ")));
    }
    if let Some(cause) = event.cause() {
        fields.push(field("Cause", &cause));
    }
    let since = match event.transition {
        Transition::Resolved | Transition::DegradedEnded => "Ended",
        _ => "Since",
    };
    fields.push(field(since, &show_time(event.since)));
    if let Some(d) = event.duration_seconds {
        fields.push(field("Lasted", &show_seconds(d)));
    }
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": bounded(&text, MAX_SECTION_CHARS)},
        "fields": fields,
    })
}

/// A group: one bullet per event, as many as fit in a section, then how many more.
fn list_section(events: &[Event]) -> Value {
    let mut text = String::new();
    for (i, event) in events.iter().enumerate() {
        let line = format!("• {}\n", escape(&event.headline()));
        let rest = format!("… and {} more", events.len() - i);
        if text.chars().count() + line.chars().count() + rest.chars().count() > MAX_SECTION_CHARS {
            text.push_str(&rest);
            break;
        }
        text.push_str(&line);
    }
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": bounded(text.trim_end(), MAX_SECTION_CHARS)},
    })
}

fn field(name: &str, value: &str) -> Value {
    let text = format!("*{name}*\n{}", escape(value));
    json!({"type": "mrkdwn", "text": bounded(&text, MAX_FIELD_CHARS)})
}

/// Slack's escaping of its three control characters in `mrkdwn`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
