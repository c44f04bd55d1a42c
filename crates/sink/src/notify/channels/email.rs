//! E-mail: one plain-text mail per message to every recipient at once, over SMTP with
//! STARTTLS, implicit TLS, or none (a relay on the same host, tests), with AUTH when a user is
//! set.
//!
//! `lettre` speaks SMTP, with rustls and `ring` (the process's one crypto provider). It reads
//! the system's trust store with `rustls-native-certs`, as [`monitor_core::runtime::trust`]
//! does (`SSL_CERT_FILE` included), but without its compiled-in fallback: on an image without
//! `ca-certificates`, name the server's CA in `ca_file`. The transport is built once per
//! channel; each delivery opens one connection (no pool: notifications are rare) and is
//! bounded by the channel's `timeout`.
//!
//! The subject is [`Message::subject`], the body [`Message::text`]. The message's
//! idempotency key travels in `X-Webmon-Key` and, made fit for the header, in `Message-ID`,
//! so a mail sent again after a lost answer is recognisably the same mail.
//!
//! SMTP answers are sorted as HTTP ones are: a 4xx reply, a lost connection or a timeout is
//! retried; a 5xx reply (an unknown recipient, a refused sender) is refused. The
//! [`DeliveryError`]'s `status` is then the SMTP reply code.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use monitor_core::settings::{EmailSettings, SmtpTls};

use crate::notify::delivery::{Answer, DeliveryError};
use crate::notify::message::Message;

/// The header carrying the message's idempotency key.
pub const KEY_HEADER: &str = "X-Webmon-Key";
/// The right-hand side of the `Message-ID`s sent.
pub const MESSAGE_ID_DOMAIN: &str = "web-monitor.invalid";

/// An e-mail channel: one SMTP server, one sender, its recipients.
#[derive(Debug, Clone)]
pub struct Email {
    /// The ready transport and addresses, or why the settings cannot be used (every delivery
    /// is then refused with that reason, as a retry would not change it).
    ready: Result<Ready, DeliveryError>,
}

#[derive(Clone)]
struct Ready {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// The channel of these settings. Settings the reader accepted always build; should one
    /// not (a `ca_file` without a certificate), its deliveries say why.
    pub fn new(settings: &EmailSettings) -> Email {
        Email {
            ready: ready(settings).map_err(|reason| DeliveryError::Refused {
                reason: format!("the e-mail channel cannot be used: {reason}"),
                status: None,
            }),
        }
    }

    /// Sends `message` as one mail to every recipient, within the channel's timeout.
    pub async fn deliver(&self, message: &Message) -> Result<Answer, DeliveryError> {
        let ready = self.ready.as_ref().map_err(Clone::clone)?;
        let mail = mail(ready, message)?;
        let sent = tokio::time::timeout(ready.timeout, ready.transport.send(mail))
            .await
            .map_err(|_| DeliveryError::Retry {
                reason: format!("no answer from the SMTP server within {:?}", ready.timeout),
                status: None,
            })?;
        match sent {
            Ok(response) => Ok(Answer {
                status: u16::from(response.code()),
                body: response.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) => Err(judge(&e)),
        }
    }
}

fn ready(settings: &EmailSettings) -> Result<Ready, String> {
    let parse = |text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| format!("{text:?} is not an address: {e}"))
    };
    let from = parse(&settings.from)?;
    let to = settings
        .to
        .iter()
        .map(|t| parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
        .port(settings.port)
        .tls(tls(settings)?)
        .timeout(Some(settings.timeout));
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    Ok(Ready {
        transport: builder.build(),
        from,
        to,
        timeout: settings.timeout,
    })
}

/// The TLS of the connection: required STARTTLS, implicit TLS, or none; the system's roots
/// and the `ca_file`'s.
fn tls(settings: &EmailSettings) -> Result<Tls, String> {
    if settings.tls == SmtpTls::None {
        return Ok(Tls::None);
    }
    let mut params = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("{} holds no PEM certificate: {e}", path.display()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    Ok(match settings.tls {
        SmtpTls::Tls => Tls::Wrapper(params),
        _ => Tls::Required(params),
    })
}

/// The mail: subject, plain-text body, the key in `X-Webmon-Key` and the `Message-ID`.
fn mail(ready: &Ready, message: &Message) -> Result<lettre::Message, DeliveryError> {
    let mut builder = lettre::Message::builder()
        .from(ready.from.clone())
        .subject(message.subject())
        .message_id(Some(message_id(&message.key)))
        .header(ContentType::TEXT_PLAIN);
    for to in &ready.to {
        builder = builder.to(to.clone());
    }
    let mut mail = builder
        .body(message.text())
        .map_err(|e| DeliveryError::Refused {
            reason: format!("cannot build the mail: {e}"),
            status: None,
        })?;
    let name =
        HeaderName::new_from_ascii(KEY_HEADER.to_string()).map_err(|e| DeliveryError::Refused {
            reason: format!("cannot name the key header: {e}"),
            status: None,
        })?;
    mail.headers_mut()
        .insert_raw(HeaderValue::new(name, message.key.clone()));
    Ok(mail)
}

/// `<key@web-monitor.invalid>`, with every character a `Message-ID` may not hold as `-`.
pub fn message_id(key: &str) -> String {
    let left: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let left = left.trim_matches('.');
    format!("<{left}@{MESSAGE_ID_DOMAIN}>")
}

/// A 5xx reply (or a mail lettre cannot send at all) is refused; 4xx, connection, TLS and
/// timeouts are retried.
fn judge(e: &lettre::transport::smtp::Error) -> DeliveryError {
    let status = e.status().map(u16::from);
    let reason = format!("SMTP: {e}");
    if e.is_permanent() || e.is_client() {
        DeliveryError::Refused { reason, status }
    } else {
        DeliveryError::Retry { reason, status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_keeps_the_key_readable_and_valid() {
        assert_eq!(
            message_id("incident:5f0c:opened"),
            "<incident-5f0c-opened@web-monitor.invalid>"
        );
        assert_eq!(message_id("a b<c>"), "<a-b-c-@web-monitor.invalid>");
    }
}
