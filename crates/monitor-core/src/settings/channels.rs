//! The settings of the notification channels that speak a service's own language: Slack
//! (an incoming webhook), PagerDuty (Events API v2) and e-mail (SMTP). Each is read from the
//! channel's own section of `[sink.notifications]`; the generic webhook lives beside the
//! notification settings themselves.
//!
//! The section's `kind` key chooses the reader. Whoever walks the channel list reads `kind`
//! first, then calls `read_slack`, `read_pagerduty` or `read_email` on the same section, then
//! `finish`es it (so a misspelt key is reported): `notify::read_channel` does.
//!
//! Keys and URLs that let anyone post to the channel are [`Secret`]s, read as the database
//! password is: inline (best through the environment, `WEBMON__...__URL`) or from a file
//! beside the settings (`url_file`, `routing_key_file`, `password_file`).
//!
//! The keys of each kind's section, in TOML:
//!
//! ```toml
//! kind = "slack"
//! url_file = "secrets/slack-webhook"      # or url = "https://hooks.slack.com/services/..."
//!
//! kind = "pagerduty"
//! routing_key_file = "secrets/pagerduty"  # or routing_key = "..."
//! severity = "critical"                   # critical (default), error, warning, info
//! # url = "https://events.eu.pagerduty.com/v2/enqueue"
//!
//! kind = "email"
//! host = "smtp.example.com"
//! tls = "starttls"                        # starttls (default, port 587), tls (465), none (25)
//! username = "alerts"                     # with password or password_file, or neither
//! password_file = "secrets/smtp"
//! from = "Web monitor <alerts@example.com>"
//! to = ["oncall@example.com"]
//! timeout = "30s"
//! # ca_file = "certs/company-ca.pem"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::problems::{Problem, Problems};
use super::secret::{read_password, read_secret, Secret};
use super::walk::Section;

/// PagerDuty's Events API v2 endpoint, the default `url` of a PagerDuty channel.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Default bound on one SMTP delivery (connect, greet, send, quit).
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest SMTP `timeout` accepted: a delivery attempt holds a worker that long.
pub const MAX_SMTP_TIMEOUT: Duration = Duration::from_secs(300);
/// Most `to` addresses of one e-mail channel.
pub const MAX_RECIPIENTS: usize = 50;

/// A Slack channel: where its incoming webhook is.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackSettings {
    /// The incoming-webhook URL (`url` or `url_file`): whoever holds it can post, so it is
    /// a secret.
    pub url: Secret,
}

/// How urgent PagerDuty is told a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PagerDutySeverity {
    /// `critical` (the default: a monitored URL is down).
    #[default]
    Critical,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `info`.
    Info,
}

impl PagerDutySeverity {
    /// PagerDuty's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }

    fn parse(text: &str) -> Option<PagerDutySeverity> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "critical" => PagerDutySeverity::Critical,
            "error" => PagerDutySeverity::Error,
            "warning" => PagerDutySeverity::Warning,
            "info" => PagerDutySeverity::Info,
            _ => return None,
        })
    }
}

impl fmt::Display for PagerDutySeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A PagerDuty service, reached through an Events API v2 integration.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutySettings {
    /// The integration's routing key (`routing_key` or `routing_key_file`).
    pub routing_key: Secret,
    /// The Events API endpoint ([`PAGERDUTY_EVENTS_URL`] unless set, e.g. for an EU account
    /// or a test receiver).
    pub url: Url,
    /// The severity of problems it is told about.
    pub severity: PagerDutySeverity,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (submission, port 587).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all (port 25; a relay on the same host, or tests).
    None,
}

impl SmtpTls {
    /// The settings' word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    /// The port used when none is set: 587, 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }

    fn parse(text: &str) -> Option<SmtpTls> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            _ => return None,
        })
    }
}

/// An e-mail channel: one SMTP server and the people written to.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    /// The SMTP server's host name.
    pub host: String,
    /// Its port (by default the usual one for `tls`: [`SmtpTls::default_port`]).
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// The user to authenticate as, when the server wants AUTH (with `tls = "none"` its
    /// password crosses the network in clear: only for a relay on the same host).
    pub username: Option<String>,
    /// Its password (`password`, `password_file`); set exactly when `username` is.
    pub password: Option<Secret>,
    /// The sender, `alerts@example.com` or `Web monitor <alerts@example.com>`.
    pub from: String,
    /// The recipients (at least one, at most [`MAX_RECIPIENTS`]), in the same forms; each
    /// message goes to all of them at once.
    pub to: Vec<String>,
    /// Bound on one delivery, in seconds or with a unit.
    pub timeout: Duration,
    /// CA certificates (PEM) trusted for the server besides the system's trust store.
    pub ca_file: Option<PathBuf>,
}

/// Reads a `kind = "slack"` section (its `kind` already read): `url` or `url_file`.
pub(crate) fn read_slack(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<SlackSettings> {
    let before = problems.len();
    let url = read_secret(s, "url", base_dir, true, problems);
    if let Some(url) = &url {
        check_http_url(
            url.expose(),
            &s.path_of("url"),
            "the Slack incoming-webhook URL (https://hooks.slack.com/services/...)",
            problems,
        );
    }
    let url = url?;
    (problems.len() == before).then_some(SlackSettings { url })
}

/// Reads a `kind = "pagerduty"` section (its `kind` already read): `routing_key` (or
/// `routing_key_file`), `url`, `severity`.
pub(crate) fn read_pagerduty(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<PagerDutySettings> {
    let before = problems.len();
    let routing_key = read_secret(s, "routing_key", base_dir, true, problems);
    let url = match s.string("url", problems) {
        None => Url::parse(PAGERDUTY_EVENTS_URL).ok(),
        Some(text) => check_http_url(&text, &s.path_of("url"), "the Events API v2 URL", problems),
    };
    let severity = match s.string("severity", problems) {
        None => PagerDutySeverity::default(),
        Some(text) => PagerDutySeverity::parse(&text).unwrap_or_else(|| {
            problems.push(Problem::new(
                &s.path_of("severity"),
                format!("{text:?} is not a severity: use critical, error, warning or info"),
            ));
            PagerDutySeverity::default()
        }),
    };
    let (routing_key, url) = (routing_key?, url?);
    (problems.len() == before).then_some(PagerDutySettings {
        routing_key,
        url,
        severity,
    })
}

/// Reads a `kind = "email"` section (its `kind` already read): `host`, `port`, `tls`,
/// `username`, `password` (or `password_file`), `from`, `to`, `timeout`, `ca_file`.
pub(crate) fn read_email(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<EmailSettings> {
    let before = problems.len();
    let host = s.required_string("host", "the SMTP server's host name", problems);
    let tls = read_tls(s, problems);
    let port = s.integer("port", i64::from(tls.default_port()), 1, 65535, problems);
    let (username, password) = read_auth(s, base_dir, problems);
    let from = s
        .required_string(
            "from",
            "the sender's address (alerts@example.com)",
            problems,
        )
        .and_then(|text| check_mailbox(&text, &s.path_of("from"), problems));
    let to = read_recipients(s, problems);
    let timeout = s.duration_within("timeout", DEFAULT_SMTP_TIMEOUT, MAX_SMTP_TIMEOUT, problems);
    let ca_file = s.readable_file("ca_file", base_dir, problems);
    let (host, from, timeout) = (host?, from?, timeout?);
    (problems.len() == before).then(|| EmailSettings {
        host: host.trim().to_string(),
        port: u16::try_from(port).unwrap_or(tls.default_port()),
        tls,
        username,
        password,
        from,
        to,
        timeout,
        ca_file,
    })
}

fn read_tls(s: &mut Section<'_>, problems: &mut Problems) -> SmtpTls {
    match s.string("tls", problems) {
        None => SmtpTls::default(),
        Some(text) => SmtpTls::parse(&text).unwrap_or_else(|| {
            problems.push(Problem::new(
                &s.path_of("tls"),
                format!(
                    "{text:?} is not a TLS mode: use starttls (port 587), tls (port 465) or none (port 25)"
                ),
            ));
            SmtpTls::default()
        }),
    }
}

/// `username` and `password`: both or neither.
fn read_auth(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> (Option<String>, Option<Secret>) {
    let username = s
        .string("username", problems)
        .filter(|u| !u.trim().is_empty());
    let password = read_password(s, base_dir, username.is_some(), problems);
    if username.is_none() && password.is_some() {
        problems.push(Problem::new(
            &s.path_of("username"),
            "is missing while a password is set: set the user to authenticate as, or remove the password",
        ));
    }
    (username, password)
}

/// `to`: a list (or a comma-separated string) of at least one mailbox.
fn read_recipients(s: &mut Section<'_>, problems: &mut Problems) -> Vec<String> {
    let path = s.path_of("to");
    let Some(list) = s.string_list("to", problems) else {
        if !s.has("to") {
            problems.push(Problem::new(
                &path,
                "is missing: set the recipients' addresses ([\"oncall@example.com\"])",
            ));
        }
        return Vec::new();
    };
    if list.is_empty() {
        problems.push(Problem::new(
            &path,
            "is empty: set at least one recipient's address",
        ));
    } else if list.len() > MAX_RECIPIENTS {
        problems.push(Problem::new(
            &path,
            format!(
                "has {} addresses, more than {MAX_RECIPIENTS}: write to a list address instead",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| check_mailbox(text, &format!("{path}[{i}]"), problems))
        .collect()
}

/// An `http://` or `https://` URL, or a problem at `path` (not echoing the value, which may
/// be a secret).
fn check_http_url(text: &str, path: &str, what: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && url.host().is_some() => Some(url),
        Ok(_) => {
            problems.push(Problem::new(
                path,
                format!("is not an http(s) URL with a host: set {what}"),
            ));
            None
        }
        Err(e) => {
            problems.push(Problem::new(
                path,
                format!("is not a URL ({e}): set {what}"),
            ));
            None
        }
    }
}

/// A mailbox, `user@example.com` or `Name <user@example.com>`, trimmed; a problem at `path`
/// otherwise.
fn check_mailbox(text: &str, path: &str, problems: &mut Problems) -> Option<String> {
    let text = text.trim();
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => text,
        _ => "",
    };
    match address_problem(address) {
        None => Some(text.to_string()),
        Some(why) => {
            problems.push(Problem::new(
                path,
                format!(
                    "{text:?} is not an e-mail address ({why}): write user@example.com or Name <user@example.com>"
                ),
            ));
            None
        }
    }
}

/// What is wrong with a bare address, if anything.
fn address_problem(address: &str) -> Option<&'static str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Some("no @");
    };
    if local.is_empty() || domain.is_empty() {
        return Some("nothing before or after the @");
    }
    if address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Some("spaces or brackets in the address");
    }
    let domain_ok = domain
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-'));
    (!domain_ok).then_some("the domain is not a host name")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::notify::{read_channels, ChannelSettings};
    use super::*;

    /// Reads `value` as the channel `oncall` of `[sink.notifications]`, of kind `kind`.
    fn read(kind: &str, mut value: Value) -> (Option<ChannelSettings>, String) {
        if let Some(section) = value.as_object_mut() {
            section.entry("kind").or_insert(kind.into());
        }
        let root = serde_json::json!({ "channels": { "oncall": value } });
        let mut problems = Problems::default();
        let mut s = Section::root(&root, &mut problems);
        let mut channels = read_channels(&mut s, Path::new("/nonexistent"), &mut problems);
        (channels.remove("oncall"), problems.to_string())
    }

    #[test]
    fn a_slack_channel_needs_its_webhook_url_and_hides_it() {
        let (channel, text) = read(
            "slack",
            serde_json::json!({"kind": "slack", "url": "https://hooks.slack.com/services/T/B/x"}),
        );
        let Some(ChannelSettings::Slack(slack)) = channel else {
            panic!("{text}");
        };
        assert_eq!(slack.url.expose(), "https://hooks.slack.com/services/T/B/x");
        assert!(!format!("{slack:?}").contains("hooks.slack.com"));

        let (channel, text) = read("slack", serde_json::json!({"kind": "slack"}));
        assert!(channel.is_none());
        assert!(
            text.contains("channels.oncall.url: is missing: set url_file"),
            "{text}"
        );
        let (_, text) = read("slack", serde_json::json!({"url": "hooks.slack.com/x"}));
        assert!(text.contains("oncall.url: is not a URL"), "{text}");
        assert!(
            !text.contains("hooks.slack.com/x"),
            "the secret is echoed: {text}"
        );
    }

    #[test]
    fn a_pagerduty_channel_has_defaults_and_names_bad_severities() {
        let (channel, text) = read("pagerduty", serde_json::json!({"routing_key": "R0UT1NG"}));
        let Some(ChannelSettings::PagerDuty(pd)) = channel else {
            panic!("{text}");
        };
        assert_eq!(pd.url.as_str(), PAGERDUTY_EVENTS_URL);
        assert_eq!(pd.severity, PagerDutySeverity::Critical);
        assert_eq!(pd.routing_key.expose(), "R0UT1NG");

        let (channel, text) = read(
            "pagerduty",
            serde_json::json!({"severity": "urgent", "url": "ftp://x", "routing_ky": "R"}),
        );
        assert!(channel.is_none());
        for expected in [
            "oncall.routing_key: is missing",
            "oncall.severity: \"urgent\" is not a severity: use critical, error, warning or info",
            "oncall.url: is not an http(s) URL",
            "oncall.routing_ky: unknown key",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }

    #[test]
    fn an_email_channel_takes_the_port_from_its_tls_mode() {
        let (channel, text) = read(
            "email",
            serde_json::json!({
                "kind": "email", "host": "smtp.example.com", "tls": "tls",
                "username": "alerts", "password": "pw",
                "from": "Web monitor <alerts@example.com>",
                "to": "oncall@example.com, Ops <ops@example.org>",
                "timeout": "10s",
            }),
        );
        let Some(ChannelSettings::Email(email)) = channel else {
            panic!("{text}");
        };
        assert_eq!(email.port, 465);
        assert_eq!(email.tls, SmtpTls::Tls);
        assert_eq!(email.to, ["oncall@example.com", "Ops <ops@example.org>"]);
        assert_eq!(email.timeout, Duration::from_secs(10));
        assert_eq!(email.password.as_ref().map(Secret::expose), Some("pw"));

        let (channel, text) = read(
            "email",
            serde_json::json!({"host": "h", "from": "a@b.c", "to": ["x@y.z"]}),
        );
        let Some(ChannelSettings::Email(email)) = channel else {
            panic!("{text}");
        };
        assert_eq!((email.tls, email.port), (SmtpTls::StartTls, 587));
    }

    #[test]
    fn every_email_problem_is_named_with_its_path() {
        let (channel, text) = read(
            "email",
            serde_json::json!({
                "tls": "ssl", "username": "u", "from": "alerts",
                "to": ["ok@example.com", "not an address", "x@bad_domain"],
                "timeout": "1h",
            }),
        );
        assert!(channel.is_none());
        for expected in [
            "oncall.host: is missing: set the SMTP server's host name",
            "oncall.tls: \"ssl\" is not a TLS mode",
            "oncall.password: is missing: set password_file",
            "oncall.from: \"alerts\" is not an e-mail address (no @)",
            "oncall.to[1]: \"not an address\" is not an e-mail address",
            "oncall.to[2]: \"x@bad_domain\" is not an e-mail address (the domain is not a host name)",
            "oncall.timeout: \"1h\" is above the maximum",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
        assert!(!text.contains("to[0]"), "{text}");
        let (_, text) = read("email", serde_json::json!({"host": "h", "from": "a@b.c"}));
        assert!(text.contains("oncall.to: is missing"), "{text}");
    }

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let (channel, text) = read("teams", serde_json::json!({"kind": "teams"}));
        assert!(channel.is_none());
        assert!(
            text.contains("oncall.kind: \"teams\" is not a channel kind: use one of webhook, slack, pagerduty, email"),
            "{text}"
        );
    }
}
