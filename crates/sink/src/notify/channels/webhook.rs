//! The generic webhook: the [`Message`] as JSON (`{"key": ..., "events": [...]}`, described by
//! `schemas/notification.schema.json`), POSTed with `X-Webmon-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body under the channel's secret, so a receiver can tell our
//! messages from forgeries, and `X-Webmon-Key`, the message's idempotency key: a retry after
//! a lost answer carries the same key, and receivers deduplicate on it.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use monitor_core::settings::{Secret, WebhookSettings};
use sha2::Sha256;

use crate::notify::delivery::{post_within, Answer, DeliveryError};
use crate::notify::message::Message;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-webmon-signature";
/// The idempotency key header.
pub const KEY_HEADER: &str = "x-webmon-key";

/// A webhook channel.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    secret: Secret,
    headers: HeaderMap,
    timeout: Duration,
}

impl Webhook {
    /// The webhook of its settings.
    pub fn new(settings: &WebhookSettings) -> Webhook {
        Webhook {
            url: settings.url.to_string(),
            secret: settings.secret.clone(),
            headers: settings.headers.clone(),
            timeout: settings.timeout,
        }
    }

    /// The body of `message`: its JSON.
    pub fn body(message: &Message) -> Result<Vec<u8>, DeliveryError> {
        serde_json::to_vec(message).map_err(|e| DeliveryError::Refused {
            reason: format!("cannot encode the message: {e}"),
            status: None,
        })
    }

    /// POSTs `message`, signed.
    pub async fn deliver(&self, message: &Message) -> Result<Answer, DeliveryError> {
        let body = Webhook::body(message)?;
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let signature = format!("sha256={}", sign(self.secret.expose().as_bytes(), &body));
        let values = [
            (SIGNATURE_HEADER, HeaderValue::from_str(&signature)),
            (KEY_HEADER, HeaderValue::from_str(&message.key)),
        ];
        for (name, value) in values {
            let value = value.map_err(|_| DeliveryError::Refused {
                reason: format!("{name} cannot carry {:?}", message.key),
                status: None,
            })?;
            headers.insert(HeaderName::from_static(name), value);
        }
        post_within(&self.url, &headers, body, self.timeout).await
    }
}

/// The hex HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
