//! What the spool holds and what it promises: [`Message`], one report as it travels, and
//! [`Spool`], the durable FIFO the publisher writes every report to.

use std::io;

use monitor_core::report::Report;

/// One report as it travels: the Kafka key (the target id) and the JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The target id.
    pub key: Vec<u8>,
    /// The report as JSON.
    pub value: Vec<u8>,
}

impl Message {
    /// The message of a report.
    pub fn of(report: &Report) -> Message {
        Message {
            key: report.target_id.as_bytes().to_vec(),
            value: report.to_json(),
        }
    }
}

/// The durable FIFO every report passes through: appended when it arrives, removed once
/// Kafka acknowledged it.
pub trait Spool: Send {
    /// Appends messages at the end, all of them or (on an error) none, where a kill of the
    /// process cannot take them.
    fn append(&mut self, messages: &[Message]) -> io::Result<()>;
    /// Makes what was appended and committed durable against a power loss (fsync).
    fn flush(&mut self) -> io::Result<()>;
    /// Up to `max` of the oldest messages, without removing them.
    fn peek(&mut self, max: usize) -> io::Result<Vec<Message>>;
    /// Removes the `n` oldest messages (delivered).
    fn commit(&mut self, n: usize) -> io::Result<()>;
    /// Whether nothing waits.
    fn is_empty(&self) -> bool;
}
