//! Notifications: telling people about incidents, once. What the verdicts change is written
//! as notifications (an outbox) in the same transaction as the change, and delivered to the
//! channels its target is routed to.
//!
//! ## Layout
//! - [`message`]: what a notification says, as data and as text, the same for every channel.
//! - [`routing`]: incidents and certificates become events, routed to channels by labels;
//!   the fold writes them with [`outbox::insert`].
//! - [`outbox`]: the outbox's SQL: writing, claiming, recording attempts.
//! - [`delivery`]: one HTTP(S) delivery attempt and what its answer means.
//! - [`channels`]: the channel kinds ([`channels::Channel`]: webhook, Slack, PagerDuty,
//!   e-mail), each rendering a message in its receiver's own format.
//! - [`dispatch`]: the task that claims due notifications, groups, rate-bounds, delivers and
//!   retries them, and writes reminders.

pub mod message;
pub mod routing;

pub mod outbox;

pub mod delivery;

pub mod channels;
pub mod dispatch;
