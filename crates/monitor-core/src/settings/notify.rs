//! Where notifications go and how hard the sink tries: the `[sink.notifications]` section.
//! Channels are named once (`channels.ops = { kind = "webhook", url = ... }`) and routes pick
//! them by the target's labels, so a new target of a team is notified without editing the
//! routes. Each channel kind is one variant of [`ChannelSettings`]; a kind this sink does not
//! know is refused with the kinds it does.
//!
//! Routes are tried in order; the first that matches a target's labels wins, unless it says
//! `continue = true`, in which case later routes are tried too. A target no route matches
//! goes to `default_channels`; a target with `notify = false` goes nowhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::HeaderMap;
use url::Url;

use super::channels::{
    read_email, read_pagerduty, read_slack, EmailSettings, PagerDutySettings, SlackSettings,
};
use super::labels::{read_selector, LabelSelector, Labels};
use super::problems::{Problem, Problems};
use super::secret::{read_secret, Secret};
use super::target::headers;
use super::walk::Section;

/// The channel kinds this sink delivers to.
pub const CHANNEL_KINDS: [&str; 4] = ["webhook", "slack", "pagerduty", "email"];
/// Most channels.
pub const MAX_CHANNELS: usize = 100;
/// Most routes.
pub const MAX_ROUTES: usize = 1000;
/// Default `give_up_after`: a notification not delivered by then is marked failed.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest `give_up_after`.
pub const MAX_GIVE_UP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `retry_initial`: the wait after the first failed attempt (doubled each time).
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(5);
/// Default `retry_max`: the longest wait between attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// Longest `retry_initial` and `retry_max`.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Longest `reminder` interval.
pub const MAX_REMINDER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest `reminder` interval: reminders more often than this are noise.
pub const MIN_REMINDER: Duration = Duration::from_secs(60);
/// Default `certificate_days`: days before expiry at which a certificate is notified.
pub const DEFAULT_CERTIFICATE_DAYS: [u32; 4] = [30, 14, 7, 1];
/// Largest threshold of `certificate_days`.
pub const MAX_CERTIFICATE_DAYS: u32 = 365;
/// Default `group_window`.
pub const DEFAULT_GROUP_WINDOW: Duration = Duration::from_secs(30);
/// Longest `group_window`: grouping delays every notification by up to this.
pub const MAX_GROUP_WINDOW: Duration = Duration::from_secs(600);
/// Default `group_min`: this many events of one transition for one channel go out as one.
pub const DEFAULT_GROUP_MIN: u32 = 5;
/// Largest `group_min`.
pub const MAX_GROUP_MIN: u32 = 10_000;
/// Default `rate_per_minute` of each channel.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 30;
/// Largest `rate_per_minute`.
pub const MAX_RATE_PER_MINUTE: u32 = 10_000;
/// Default `poll_interval`: how often the dispatcher looks for due notifications.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `poll_interval` and `start_delay`.
pub const MAX_POLL: Duration = Duration::from_secs(24 * 3600);
/// Default `timeout` of a webhook: one attempt's bound.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `timeout` of a webhook.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The `[sink.notifications]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// The channels, by name.
    pub channels: BTreeMap<String, ChannelSettings>,
    /// The routes, in order.
    pub routes: Vec<Route>,
    /// Channels of targets no route matches.
    pub default_channels: Vec<String>,
    /// The status page or dashboard, put in messages.
    pub link: Option<Url>,
    /// A notification not delivered this long after it was written is marked failed.
    pub give_up_after: Duration,
    /// The wait after the first failed attempt; doubled after each, up to `retry_max`.
    pub retry_initial: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Remind of incidents still open this often; `None`: no reminders.
    pub reminder: Option<Duration>,
    /// Notify degraded periods (some regions failing) as well as incidents.
    pub degraded: bool,
    /// Days before a certificate's expiry at which it is notified, largest first.
    pub certificate_days: Vec<u32>,
    /// Events pending within this window may be grouped.
    pub group_window: Duration,
    /// This many events of one transition for one channel within the window go out as one.
    pub group_min: u32,
    /// Most deliveries per minute to one channel, per replica.
    pub rate_per_minute: u32,
    /// How often the dispatcher looks for due notifications.
    pub poll_interval: Duration,
    /// How long after start the dispatcher begins (to let a replica catch up first).
    pub start_delay: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            channels: BTreeMap::new(),
            routes: Vec::new(),
            default_channels: Vec::new(),
            link: None,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            reminder: None,
            degraded: false,
            certificate_days: DEFAULT_CERTIFICATE_DAYS.to_vec(),
            group_window: DEFAULT_GROUP_WINDOW,
            group_min: DEFAULT_GROUP_MIN,
            rate_per_minute: DEFAULT_RATE_PER_MINUTE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            start_delay: Duration::ZERO,
        }
    }
}

impl NotifySettings {
    /// The channels a target with `labels` is notified on (none when `notify` is false),
    /// each once, in the order the routes name them.
    pub fn channels_for(&self, labels: &Labels, notify: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if !notify {
            return out;
        }
        let mut matched = false;
        for route in &self.routes {
            if !route.selector.matches(labels) {
                continue;
            }
            matched = true;
            out.extend(route.channels.iter().cloned());
            if !route.continue_matching {
                break;
            }
        }
        if !matched {
            out.extend(self.default_channels.iter().cloned());
        }
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|c| seen.insert(c.clone()));
        out
    }
}

/// One channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSettings {
    /// `kind = "webhook"`: a signed JSON POST.
    Webhook(WebhookSettings),
    /// `kind = "slack"`: a Slack incoming webhook.
    Slack(SlackSettings),
    /// `kind = "pagerduty"`: PagerDuty's Events API v2.
    PagerDuty(PagerDutySettings),
    /// `kind = "email"`: mail over SMTP.
    Email(EmailSettings),
}

/// A generic webhook: the message as JSON, signed with HMAC-SHA256.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// Where to POST (http or https).
    pub url: Url,
    /// The HMAC key of `X-Webmon-Signature`.
    pub secret: Secret,
    /// Headers added to every request.
    pub headers: HeaderMap,
    /// Bound on one attempt.
    pub timeout: Duration,
}

/// A route: targets whose labels match go to these channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Which targets.
    pub selector: LabelSelector,
    /// The channels, by name.
    pub channels: Vec<String>,
    /// Whether later routes are tried after this one matched.
    pub continue_matching: bool,
}

/// Reads `[sink.notifications]` from the sink section.
pub(crate) fn read_notify_section(
    sink: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> NotifySettings {
    let mut s = sink.section("notifications", problems);
    let channels = read_channels(&mut s, base_dir, problems);
    let routes = read_routes(&mut s, &channels, problems);
    let default_channels = s
        .string_list("default_channels", problems)
        .unwrap_or_default();
    let path = s.path_of("default_channels");
    check_names(&path, &default_channels, &channels, problems);
    let d = NotifySettings::default();
    let mut settings = NotifySettings {
        link: read_link(&mut s, problems),
        degraded: s.bool("degraded", false, problems),
        certificate_days: read_certificate_days(&mut s, problems),
        group_min: count(&mut s, "group_min", d.group_min, MAX_GROUP_MIN, problems),
        rate_per_minute: count(
            &mut s,
            "rate_per_minute",
            d.rate_per_minute,
            MAX_RATE_PER_MINUTE,
            problems,
        ),
        reminder: read_reminder(&mut s, problems),
        channels,
        routes,
        default_channels,
        ..d
    };
    read_timing(&mut s, &mut settings, problems);
    s.finish(problems);
    settings
}

/// A whole number from 1 to `max`.
fn count(s: &mut Section<'_>, key: &str, default: u32, max: u32, problems: &mut Problems) -> u32 {
    s.integer(key, i64::from(default), 1, i64::from(max), problems) as u32
}

/// The waits: retries, giving up, grouping, polling, the start delay.
fn read_timing(s: &mut Section<'_>, settings: &mut NotifySettings, problems: &mut Problems) {
    let mut within = |s: &mut Section<'_>, key: &str, value: &mut Duration, max: Duration| {
        *value = s
            .duration_within(key, *value, max, problems)
            .unwrap_or(*value);
    };
    within(
        s,
        "give_up_after",
        &mut settings.give_up_after,
        MAX_GIVE_UP_AFTER,
    );
    within(s, "retry_initial", &mut settings.retry_initial, MAX_RETRY);
    within(s, "retry_max", &mut settings.retry_max, MAX_RETRY);
    within(
        s,
        "group_window",
        &mut settings.group_window,
        MAX_GROUP_WINDOW,
    );
    within(s, "poll_interval", &mut settings.poll_interval, MAX_POLL);
    within(s, "start_delay", &mut settings.start_delay, MAX_POLL);
    if settings.retry_max < settings.retry_initial {
        problems.push(Problem::new(
            &s.path_of("retry_max"),
            format!(
                "{:?} is less than retry_initial {:?}: give a longest wait at least the first",
                settings.retry_max, settings.retry_initial
            ),
        ));
    }
}

/// `reminder`: off unless set; between [`MIN_REMINDER`] and [`MAX_REMINDER`].
fn read_reminder(s: &mut Section<'_>, problems: &mut Problems) -> Option<Duration> {
    if !s.has("reminder") {
        s.raw("reminder");
        return None;
    }
    let reminder = s.duration_within("reminder", MIN_REMINDER, MAX_REMINDER, problems)?;
    if reminder < MIN_REMINDER {
        problems.push(Problem::new(
            &s.path_of("reminder"),
            format!("{reminder:?} is shorter than {MIN_REMINDER:?}: remind less often"),
        ));
        return None;
    }
    Some(reminder)
}

/// `link`: an http(s) URL.
fn read_link(s: &mut Section<'_>, problems: &mut Problems) -> Option<Url> {
    let text = s.string("link", problems)?;
    http_url(&text, &s.path_of("link"), problems)
}

/// An http or https URL, or a problem at `path`.
fn http_url(text: &str, path: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(url) => {
            problems.push(Problem::new(
                path,
                format!(
                    "{text:?} has scheme {:?}: give an http or https URL",
                    url.scheme()
                ),
            ));
            None
        }
        Err(e) => {
            problems.push(Problem::new(path, format!("{text:?} is not a URL: {e}")));
            None
        }
    }
}

/// `certificate_days`: whole days from 1 to [`MAX_CERTIFICATE_DAYS`], kept largest first; an
/// empty list turns certificate notifications off.
fn read_certificate_days(s: &mut Section<'_>, problems: &mut Problems) -> Vec<u32> {
    let path = s.path_of("certificate_days");
    let Some(items) = s.string_list("certificate_days", problems) else {
        return DEFAULT_CERTIFICATE_DAYS.to_vec();
    };
    let mut days = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_CERTIFICATE_DAYS).contains(&n) => days.push(n),
            _ => problems.push(Problem::new(
                &format!("{path}[{i}]"),
                format!("{item:?} is not a number of days from 1 to {MAX_CERTIFICATE_DAYS}"),
            )),
        }
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    days
}

/// `channels`: a table of named channels.
pub(crate) fn read_channels(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> BTreeMap<String, ChannelSettings> {
    let section = s.section("channels", problems);
    let mut channels = BTreeMap::new();
    for (name, value) in section.entries() {
        let path = section.path_of(name);
        let Some(mut c) = Section::from_value(path.clone(), value, problems) else {
            continue;
        };
        if let Some(channel) = read_channel(&mut c, base_dir, problems) {
            channels.insert(name.clone(), channel);
        }
        c.finish(problems);
    }
    if channels.len() > MAX_CHANNELS {
        problems.push(Problem::new(
            &s.path_of("channels"),
            format!("has {} channels, more than {MAX_CHANNELS}", channels.len()),
        ));
    }
    channels
}

/// One channel, by its `kind`.
fn read_channel(
    c: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ChannelSettings> {
    let kind = c.required_string("kind", "the channel's kind", problems)?;
    match kind.trim() {
        "webhook" => read_webhook(c, base_dir, problems).map(ChannelSettings::Webhook),
        "slack" => read_slack(c, base_dir, problems).map(ChannelSettings::Slack),
        "pagerduty" => read_pagerduty(c, base_dir, problems).map(ChannelSettings::PagerDuty),
        "email" => read_email(c, base_dir, problems).map(ChannelSettings::Email),
        other => {
            problems.push(Problem::new(
                &c.path_of("kind"),
                format!(
                    "{other:?} is not a channel kind: use one of {}",
                    CHANNEL_KINDS.join(", ")
                ),
            ));
            for (key, _) in c.entries() {
                c.raw(key);
            }
            None
        }
    }
}

/// A webhook channel: `url`, `secret` (or `secret_file`), `headers`, `timeout`.
fn read_webhook(
    c: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<WebhookSettings> {
    let url = c
        .required_string("url", "the webhook's http(s) URL", problems)
        .and_then(|t| http_url(&t, &c.path_of("url"), problems));
    let secret = read_secret(c, "secret", base_dir, true, problems);
    let headers = headers(c, problems);
    let timeout = c
        .duration_within(
            "timeout",
            DEFAULT_WEBHOOK_TIMEOUT,
            MAX_WEBHOOK_TIMEOUT,
            problems,
        )
        .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    Some(WebhookSettings {
        url: url?,
        secret: secret?,
        headers,
        timeout,
    })
}

/// `routes`: `[{ match = { ... }, channels = [...], continue = false }]`.
fn read_routes(
    s: &mut Section<'_>,
    known: &BTreeMap<String, ChannelSettings>,
    problems: &mut Problems,
) -> Vec<Route> {
    let Some(items) = s.array("routes", problems) else {
        return Vec::new();
    };
    if items.len() > MAX_ROUTES {
        problems.push(Problem::new(
            &s.path_of("routes"),
            format!("has {} routes, more than {MAX_ROUTES}", items.len()),
        ));
    }
    let mut routes = Vec::new();
    for (path, value) in items {
        let Some(mut r) = Section::from_value(path, value, problems) else {
            continue;
        };
        let selector = read_selector(&mut r, "match", problems);
        let channels = r.string_list("channels", problems).unwrap_or_default();
        if channels.is_empty() {
            problems.push(Problem::new(
                &r.path_of("channels"),
                "is missing or empty: name the channels this route sends to",
            ));
        }
        check_names(&r.path_of("channels"), &channels, known, problems);
        let continue_matching = r.bool("continue", false, problems);
        r.finish(problems);
        routes.push(Route {
            selector,
            channels,
            continue_matching,
        });
    }
    routes
}

/// Checks that every channel of `names` exists.
fn check_names(
    path: &str,
    names: &[String],
    channels: &BTreeMap<String, ChannelSettings>,
    problems: &mut Problems,
) {
    for (i, name) in names.iter().enumerate() {
        if !channels.contains_key(name) {
            let known: Vec<&str> = channels.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                &format!("{path}[{i}]"),
                format!(
                    "names channel {name:?}, which is not defined: define it under channels, or use one of [{}]",
                    known.join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
