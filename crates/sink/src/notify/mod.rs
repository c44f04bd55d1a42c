//! Notifications: telling people about incidents, once. What the verdicts change is written
//! as notifications (an outbox) in the same transaction as the change, and delivered to the
//! channels its target is routed to.
//!
//! ## Layout
//! - [`message`]: what a notification says, as data and as text, the same for every channel.
//! - [`delivery`]: one HTTP(S) delivery attempt and what its answer means.
//! - [`channels`]: each kind of channel, rendering a message in its receiver's language.

pub mod message;

pub mod delivery;

pub mod channels;
