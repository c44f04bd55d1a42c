//! # checker
//!
//! Checks HTTP(S) targets on their schedules and turns each check into a report.
//!
//! ## Layout
//! - [`app`]: the modes (once, schedule to stdout, schedule to Kafka), reload and shutdown.
//! - [`backfill`]: at start-up, `missed` reports for the slots that fell while the checker
//!   was not running.
//! - [`config_watch`]: reload when the settings file changes.
//! - [`metrics`]: the Prometheus metrics.
//! - [`partitioner`]: Kafka's default partitioner (murmur2), so reports of a target share a partition.
//! - [`probe`]: one check of one target on a fresh connection, phase by phase, classified.
//! - [`publish`]: delivery to Kafka in rounds, with an on-disk spool while Kafka is
//!   unreachable or slow; nothing is lost.
//! - [`schedule`]: when each target is checked: fixed rate, spread over the period, under a
//!   global cap on checks in flight, with `missed` reports for slots that could not start.
//! - [`spool`]: the on-disk FIFO every report passes through until Kafka acknowledged it.
//! - [`topic`]: the reports topic: connecting to it and producing one round.

pub mod app;
pub mod backfill;
pub mod config_watch;
pub mod metrics;
pub mod partitioner;
pub mod probe;
pub mod publish;
pub mod schedule;
pub mod spool;
pub mod topic;
