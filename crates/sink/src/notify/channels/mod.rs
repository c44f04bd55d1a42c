//! The channels a notification is delivered to, one module per kind, each turning a
//! [`Message`](super::message::Message) into its receiver's own format.

pub mod email;
pub mod pagerduty;
pub mod slack;
