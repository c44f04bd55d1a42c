//! The channels a [`Message`] is delivered on, one variant of [`Channel`] per kind, each
//! built from its `ChannelSettings` variant. The dispatcher only calls
//! [`Channel::deliver`]; how a kind renders and sends a message stays in its own module.

pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use monitor_core::settings::{ChannelSettings, NotifySettings};

use super::delivery::{Answer, DeliveryError, ATTEMPT_TIMEOUT};
use super::message::Message;

pub use email::Email;
pub use pagerduty::PagerDuty;
pub use slack::Slack;
pub use webhook::Webhook;

/// One configured channel.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A signed JSON POST.
    Webhook(Webhook),
    /// A Slack incoming webhook.
    Slack(Slack),
    /// PagerDuty's Events API v2.
    PagerDuty(PagerDuty),
    /// Mail over SMTP.
    Email(Email),
}

impl Channel {
    /// The channel of its settings.
    pub fn from_settings(settings: &ChannelSettings) -> Channel {
        match settings {
            ChannelSettings::Webhook(w) => Channel::Webhook(Webhook::new(w)),
            ChannelSettings::Slack(s) => Channel::Slack(Slack::new(s)),
            ChannelSettings::PagerDuty(p) => Channel::PagerDuty(PagerDuty::new(p)),
            ChannelSettings::Email(e) => Channel::Email(Email::new(e)),
        }
    }

    /// Every channel of the settings, by name.
    pub fn all(settings: &NotifySettings) -> BTreeMap<String, Channel> {
        settings
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), Channel::from_settings(c)))
            .collect()
    }

    /// The longest one delivery attempt on a channel of `settings` takes: its `timeout`
    /// (webhook, e-mail), or [`ATTEMPT_TIMEOUT`] (Slack, PagerDuty, per request).
    pub fn attempt_timeout(settings: &ChannelSettings) -> Duration {
        match settings {
            ChannelSettings::Webhook(w) => w.timeout,
            ChannelSettings::Email(e) => e.timeout,
            ChannelSettings::Slack(_) | ChannelSettings::PagerDuty(_) => ATTEMPT_TIMEOUT,
        }
    }

    /// One delivery attempt of `message`.
    pub async fn deliver(&self, message: &Message) -> Result<Answer, DeliveryError> {
        match self {
            Channel::Webhook(w) => w.deliver(message).await,
            Channel::Slack(s) => s.deliver(message).await,
            Channel::PagerDuty(p) => p.deliver(message).await,
            Channel::Email(e) => e.deliver(message).await,
        }
    }
}
