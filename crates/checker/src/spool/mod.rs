//! The spool: the on-disk FIFO every report passes through until Kafka acknowledged it, the
//! ground floor of the checker.
//!
//! Written by hand: delivery needs a queue of records on local disk that survives a kill
//! (each append one `write(2)`) and a power loss (fsync), appends all or nothing, a bound that
//! drops the oldest whole segments, and damage that costs only the damaged record. No kept
//! crate offers that set (embedded databases are far larger and hold no such bound; log crates
//! keep no delivered cursor).
//!
//! - [`message`]: [`Message`] and the [`Spool`] contract the publisher writes to.
//! - [`file`](mod@file): [`FileSpool`], the spool in segment files.
//! - `frame`: one record's bytes on disk.
//! - [`metrics`]: the spool's [`SpoolMetrics`].

pub mod file;
mod frame;
pub mod message;
pub mod metrics;

pub use file::{FileSpool, HEARTBEAT_FILE, SEGMENT_BYTES, TARGETS_FILE};
pub use frame::MAX_RECORD_BYTES;
pub use message::{Message, Spool};
pub use metrics::SpoolMetrics;
