//! # sink
//!
//! Consumes check reports from Kafka and stores each exactly once in PostgreSQL.
//!
//! ## Layout
//! - [`decode`]: a Kafka message becomes a report row or a dead letter; nothing in a message
//!   can stop the sink.
//! - [`store`]: [`store::ReportStore`], the only code that writes SQL: one transaction per
//!   batch holds its rows, its dead letters and the partition's next offset.
//! - [`partitions`]: the day partitions of `results`, created on demand and dropped past the
//!   retention, with bounded waits for their locks.
//! - [`leases`]: partition ownership through PostgreSQL advisory locks, so replicas share a
//!   topic's partitions without consumer groups.
//! - [`metrics`]: the Prometheus metrics and readiness.
//! - [`consumer`]: the loop that fetches one partition, batches, and stores.
//! - [`app`]: wiring: the coordinator that takes and gives back partitions, and shutdown.
//! - [`report`]: the uptime report (`sink report`).
//! - [`db`]: connecting to PostgreSQL and the embedded migrations.
//!
//! ## Exactly once
//! rskafka has no consumer groups and no offset commit, so offsets live in PostgreSQL, in the
//! `kafka_offsets` table, written in the same transaction as the rows. A transaction also
//! checks that the stored offset is still the one its batch started from, so a replica that
//! lost its lease cannot store a batch twice. Rows whose `report_id` is stored already are
//! skipped, which covers a producer's retries.

pub mod app;
pub mod consumer;
pub mod db;
pub mod decode;
pub mod error;
pub mod leases;
pub mod metrics;
pub mod partitions;
pub mod report;
pub mod store;

pub use app::{run, run_with_metrics};
pub use error::SinkError;
