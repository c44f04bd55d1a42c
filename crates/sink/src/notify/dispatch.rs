//! The dispatcher: a task beside the coordinator that works off the outbox. Each round it
//! claims the due notifications (see [`outbox::claim`]: several replicas never hold the same
//! one), plans them into messages (a storm of one transition for one channel becomes one
//! grouped message; a channel over its rate waits), delivers them, and records each attempt:
//! delivered, due again after a backoff with jitter, or failed once a retry cannot help or
//! `give_up_after` has passed. It also writes reminders of incidents still open.
//!
//! Notifications of a channel no longer in the settings fail at once ("channel <name> is no
//! longer configured") rather than stay pending forever.
//!
//! A claim holds its rows for a [`Lease`] derived from the longest channel timeout (not a
//! fixed time): a replica killed mid-attempt leaves its rows due again once the lease ends,
//! 14 s after the claim with webhooks of a 3 s timeout, 42 s with the default 10 s.
//!
//! Delivery is at least once; receivers see each message key once only if they deduplicate on
//! `X-Webmon-Key`: an answer lost after the receiver took the message (a timeout, a replica
//! killed mid-attempt) sends it again with the same key. Nothing is lost: a row leaves
//! `pending` only once an attempt is recorded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use monitor_core::settings::NotifySettings;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::channels::Channel;
use super::delivery::DeliveryError;
use super::message::{Message, Transition};
use super::outbox::{self, Attempt, Claimed, Planned};
use super::routing::{OutboxRow, NOTIFICATION_NAMESPACE};
use crate::metrics::{NotificationLabels, SinkMetrics};

/// Most notifications claimed in one round.
pub const CLAIM_LIMIT: i64 = 500;
/// Longest time a claim's messages may wait to begin: those not begun this long after the
/// claim are left for the next claim (see [`Lease`]).
pub const BEGIN_WITHIN: Duration = Duration::from_secs(60);
/// A claim's messages begin within this many of the longest attempt (at most
/// [`BEGIN_WITHIN`]).
pub const BEGIN_WITHIN_ATTEMPTS: u32 = 3;
/// Time a lease holds beyond its last attempt, for recording the outcome.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// Most messages delivered at once by one replica.
pub const MAX_IN_FLIGHT: usize = 16;
/// How often reminders due are looked for (a reminder is at most this late).
pub const REMIND_CHECK: Duration = Duration::from_secs(10);
/// The window of `rate_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How long a claim holds its rows, derived from the channels' timeouts so that a row is
/// never sent by two replicas at once, and a replica killed holding rows leaves them due
/// again soon: its messages begin within `begin_within` of the claim, the last one begun
/// ends within the longest attempt, and its outcome is recorded within [`LEASE_MARGIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Messages not begun this long after the claim wait for the next claim.
    pub begin_within: Duration,
    /// How long the claimed rows are not due for anyone.
    pub hold: Duration,
}

impl Lease {
    /// The lease of channels whose longest attempt takes `longest_attempt`: messages begin
    /// within [`BEGIN_WITHIN_ATTEMPTS`] of it (at most [`BEGIN_WITHIN`]). With webhooks of
    /// the default 10 s timeout, 42 s; with a 3 s timeout, 14 s.
    pub fn of(longest_attempt: Duration) -> Lease {
        let begin_within = longest_attempt
            .saturating_mul(BEGIN_WITHIN_ATTEMPTS)
            .min(BEGIN_WITHIN);
        Lease {
            begin_within,
            hold: begin_within + longest_attempt + LEASE_MARGIN,
        }
    }

    /// The lease of `settings`' channels.
    pub fn of_channels(settings: &NotifySettings) -> Lease {
        let longest = settings
            .channels
            .values()
            .map(Channel::attempt_timeout)
            .max()
            .unwrap_or_default();
        Lease::of(longest)
    }
}

/// The dispatcher of one replica.
#[derive(Debug)]
pub struct Dispatcher {
    pool: PgPool,
    settings: NotifySettings,
    channels: BTreeMap<String, Arc<Channel>>,
    metrics: Arc<SinkMetrics>,
    rate: Rate,
    lease: Lease,
    reminded_at: Option<Instant>,
}

impl Dispatcher {
    /// The dispatcher of `settings`' channels.
    pub fn new(pool: PgPool, settings: &NotifySettings, metrics: Arc<SinkMetrics>) -> Dispatcher {
        let channels = Channel::all(settings)
            .into_iter()
            .map(|(name, c)| (name, Arc::new(c)))
            .collect();
        Dispatcher {
            pool,
            settings: settings.clone(),
            channels,
            metrics,
            rate: Rate::new(settings.rate_per_minute),
            lease: Lease::of_channels(settings),
            reminded_at: None,
        }
    }

    /// Waits `start_delay`, then runs rounds every `poll_interval` until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut wait = self.settings.start_delay;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.round(&stop).await {
                self.metrics.db_errors.inc();
                warn!(error = %e, "notifications: database error; retrying");
            }
            wait = self.settings.poll_interval;
        }
    }

    /// One round: reminders, then claims and deliveries until nothing is due.
    async fn round(&mut self, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let remind_due = self
            .reminded_at
            .is_none_or(|at| at.elapsed() >= REMIND_CHECK);
        if let (Some(every), true) = (self.settings.reminder, remind_due) {
            remind(&self.pool, every).await?;
            self.reminded_at = Some(Instant::now());
        }
        while !stop.is_cancelled() {
            let (min, window) = (self.settings.group_min, self.settings.group_window);
            let rate = &mut self.rate;
            let messages = outbox::claim(&self.pool, CLAIM_LIMIT, self.lease.hold, |claimed| {
                plan(claimed, min, window, rate, Instant::now())
            })
            .await?;
            if messages.is_empty() {
                break;
            }
            self.deliver_all(messages).await?;
        }
        let pending = outbox::pending(&self.pool).await?;
        self.metrics.notifications_pending.set(pending);
        Ok(())
    }

    /// Delivers `messages`: each channel's in order (an opening before its resolution),
    /// channels side by side, at most [`MAX_IN_FLIGHT`] at once.
    async fn deliver_all(&self, messages: Vec<(String, Vec<Claimed>)>) -> Result<(), sqlx::Error> {
        let mut by_channel: BTreeMap<String, Vec<(String, Vec<Claimed>)>> = BTreeMap::new();
        for (key, members) in messages {
            let channel = members[0].channel.clone();
            by_channel.entry(channel).or_default().push((key, members));
        }
        let claimed_at = Instant::now();
        let begin_within = self.lease.begin_within;
        let mut running = JoinSet::new();
        let mut result = Ok(());
        for (name, queue) in by_channel {
            if running.len() >= MAX_IN_FLIGHT {
                if let Some(Ok(Err(e))) = running.join_next().await {
                    result = Err(e);
                }
            }
            let Some(channel) = self.channels.get(&name).cloned() else {
                if let Err(e) = self.unconfigured(&name, &queue).await {
                    result = Err(e);
                }
                continue;
            };
            let job = Job {
                pool: self.pool.clone(),
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
            };
            running.spawn(async move {
                for (key, members) in queue {
                    // Left pending: due again when the lease ends, with the same key.
                    if claimed_at.elapsed() > begin_within {
                        break;
                    }
                    job.deliver(&channel, key, members).await?;
                }
                Ok::<(), sqlx::Error>(())
            });
        }
        while let Some(done) = running.join_next().await {
            if let Ok(Err(e)) = done {
                result = Err(e);
            }
        }
        result
    }

    /// Fails the claimed notifications of `name`, a channel no longer in the settings (they
    /// would otherwise stay pending forever), counts them failed and says so once.
    async fn unconfigured(
        &self,
        name: &str,
        queue: &[(String, Vec<Claimed>)],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = queue
            .iter()
            .flat_map(|(_, members)| members.iter().map(|c| c.id))
            .collect();
        let error = format!("channel {name} is no longer configured");
        let failed = outbox::fail(&self.pool, &ids, &error).await?;
        if failed > 0 {
            self.metrics.notifications_failed.inc_by(failed);
            warn!(channel = name, notifications = failed, "notifications failed: channel {name} is no longer configured in sink.notifications.channels");
        }
        Ok(())
    }
}

/// What one delivery needs.
struct Job {
    pool: PgPool,
    settings: NotifySettings,
    metrics: Arc<SinkMetrics>,
}

impl Job {
    /// Delivers one message and records the attempt for each of its notifications.
    async fn deliver(
        &self,
        channel: &Channel,
        key: String,
        members: Vec<Claimed>,
    ) -> Result<(), sqlx::Error> {
        let name = members[0].channel.clone();
        let message = Message {
            key: key.clone(),
            events: members.iter().map(|c| c.event.clone()).collect(),
        };
        let at = Utc::now();
        let started = Instant::now();
        let answer = channel.deliver(&message).await;
        let (outcome, http_status, error) = match &answer {
            Ok(a) => ("delivered", Some(a.status), None),
            Err(e @ DeliveryError::Retry { .. }) => ("retry", e.status(), Some(e.to_string())),
            Err(e @ DeliveryError::Refused { .. }) => ("refused", e.status(), Some(e.to_string())),
        };
        let attempt = Attempt {
            at,
            duration: started.elapsed(),
            outcome,
            http_status,
            error,
        };
        let retry_in = self.retry_in(&members, outcome);
        let ids: Vec<Uuid> = members.iter().map(|c| c.id).collect();
        outbox::finish(&self.pool, &ids, &attempt, retry_in).await?;
        let labels = NotificationLabels {
            channel: name.clone(),
            outcome: outcome.to_string(),
        };
        self.metrics
            .notifications
            .get_or_create(&labels)
            .inc_by(ids.len() as u64);
        match (outcome, retry_in) {
            ("delivered", _) => debug!(channel = %name, key, "notification delivered"),
            (_, Some(wait)) => {
                debug!(channel = %name, key, retry_in = ?wait, error = attempt.error.as_deref(), "notification not delivered; retrying");
            }
            (_, None) => {
                self.metrics.notifications_failed.inc_by(ids.len() as u64);
                warn!(channel = %name, key, error = attempt.error.as_deref(), attempts = members[0].attempts + 1, "notification failed: giving up");
            }
        }
        Ok(())
    }

    /// The wait before the next attempt, or `None` when there is none (delivered, refused,
    /// or past `give_up_after`).
    fn retry_in(&self, members: &[Claimed], outcome: &str) -> Option<Duration> {
        if outcome != "retry" {
            return None;
        }
        let oldest = members.iter().map(|c| c.created_at).min()?;
        let age = (Utc::now() - oldest).to_std().unwrap_or_default();
        if age >= self.settings.give_up_after {
            return None;
        }
        let attempts = members.iter().map(|c| c.attempts).max().unwrap_or(0);
        Some(backoff(&self.settings, attempts, members[0].id))
    }
}

/// The wait after attempt number `attempts + 1`: `retry_initial` doubled per attempt, at
/// most `retry_max`, times a jitter of 0.8 to 1.2 drawn from the notification's id (so
/// replicas retrying a storm spread out, and a test can predict the bounds).
pub fn backoff(settings: &NotifySettings, attempts: i32, id: Uuid) -> Duration {
    let doubled = settings
        .retry_initial
        .saturating_mul(1u32 << attempts.clamp(0, 20));
    let base = doubled.min(settings.retry_max);
    let spread = (id.as_u128() % 401) as f64 / 1000.0;
    base.mul_f64(0.8 + spread)
}

/// Plans claimed notifications into messages: rows tried before keep their message; others
/// of one group key (channel and transition) go out as one message when at least
/// `group_min` of them fall within `window`; each message takes one of its channel's rate,
/// and a message over the rate is put off until the rate allows it.
pub fn plan(
    claimed: Vec<Claimed>,
    group_min: u32,
    window: Duration,
    rate: &mut Rate,
    now: Instant,
) -> Planned {
    let mut planned = Planned::default();
    for (key, members) in messages(claimed, group_min, window) {
        match rate.take(&members[0].channel, now) {
            Ok(()) => planned.send.push((key, members)),
            Err(wait) => planned.defer.extend(members.iter().map(|c| (c.id, wait))),
        }
    }
    planned
}

/// The messages of `claimed`: by kept message key, then grouped or one by one.
fn messages(
    claimed: Vec<Claimed>,
    group_min: u32,
    window: Duration,
) -> Vec<(String, Vec<Claimed>)> {
    let mut kept: BTreeMap<(String, String), Vec<Claimed>> = BTreeMap::new();
    let mut fresh: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
    for c in claimed {
        match c.message_key.clone() {
            Some(key) => kept.entry((c.channel.clone(), key)).or_default().push(c),
            None => fresh.entry(c.group_key.clone()).or_default().push(c),
        }
    }
    let mut out: Vec<(String, Vec<Claimed>)> =
        kept.into_iter().map(|((_, key), m)| (key, m)).collect();
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    for (_, mut rows) in fresh {
        rows.sort_by(|a, b| (a.created_at, &a.event.key).cmp(&(b.created_at, &b.event.key)));
        let mut rest = rows.as_slice();
        while let Some(first) = rest.first() {
            let end = first.created_at + window;
            let n = rest.iter().take_while(|c| c.created_at <= end).count();
            if n >= group_min as usize && n > 1 {
                let (group, tail) = rest.split_at(n);
                out.push((group_key(group), group.to_vec()));
                rest = tail;
            } else {
                out.push((first.event.key.clone(), vec![first.clone()]));
                rest = &rest[1..];
            }
        }
    }
    out.sort_by_key(|(_, members)| members.iter().map(|c| c.seq).min());
    out
}

/// A group's message key: stable for its members (`group/<uuid v5 of their ids>`).
fn group_key(members: &[Claimed]) -> String {
    let mut ids: Vec<String> = members.iter().map(|c| c.id.to_string()).collect();
    ids.sort_unstable();
    let id = Uuid::new_v5(&NOTIFICATION_NAMESPACE, ids.join("\n").as_bytes());
    format!("group/{id}")
}

/// Each channel's deliveries of the last minute, against `rate_per_minute`.
#[derive(Debug)]
pub struct Rate {
    per_minute: usize,
    sent: HashMap<String, VecDeque<Instant>>,
}

impl Rate {
    /// A rate of `per_minute` messages per channel.
    pub fn new(per_minute: u32) -> Rate {
        Rate {
            per_minute: per_minute.max(1) as usize,
            sent: HashMap::new(),
        }
    }

    /// Takes one message of `channel`'s rate at `now`, or says how long until one is free.
    pub fn take(&mut self, channel: &str, now: Instant) -> Result<(), Duration> {
        let sent = self.sent.entry(channel.to_string()).or_default();
        while sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            sent.pop_front();
        }
        if sent.len() < self.per_minute {
            sent.push_back(now);
            return Ok(());
        }
        let oldest = sent.front().copied().unwrap_or(now);
        Err((oldest + RATE_WINDOW)
            .saturating_duration_since(now)
            .max(Duration::from_secs(1)))
    }
}

/// Writes the reminders due of incidents still open: the `n`th once `n` times `every` has
/// passed since the incident opened, to the channels its opening went to. The key holds the
/// incident and `n`, so replicas writing the same reminder write it once.
async fn remind(pool: &PgPool, every: Duration) -> Result<u64, sqlx::Error> {
    let opened: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT n.channel, n.event FROM incidents i
         JOIN notifications n ON n.event_key = 'incident/' || i.incident_id || '/opened'
         WHERE i.closed_at IS NULL AND i.kind = 'down'",
    )
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    let rows: Vec<OutboxRow> = opened
        .into_iter()
        .filter_map(|(channel, event)| {
            let mut event: super::message::Event = serde_json::from_value(event).ok()?;
            let open_for = (now - event.since).to_std().ok()?;
            let n = u32::try_from(open_for.as_secs() / every.as_secs().max(1)).ok()?;
            if n == 0 {
                return None;
            }
            let incident = event.incident_id?;
            event.transition = Transition::Reminder { n };
            event.key = format!("incident/{incident}/{}", event.transition.key_part());
            let group_key = format!("{channel}/reminder");
            Some(OutboxRow::new(channel, group_key, event))
        })
        .collect();
    let mut conn = pool.acquire().await?;
    outbox::insert(&mut conn, &rows).await
}

#[cfg(test)]
mod tests;
