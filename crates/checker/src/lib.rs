//! # checker
//!
//! Checks HTTP(S) targets on their schedules and turns each check into a report.
//!
//! ## Layout
//! Floors follow a report's way, each importing only the floors below it:
//! settings → targets → schedule → probe → report → publish → spool. Above them, [`app`] wires a run
//! and [`metrics`] names every metric.
//!
//! - [`app`]: the service: [`app::Application`] builds (spool opened, admin endpoint bound)
//!   and runs until stopped; the one-shot mode; reload and shutdown.
//! - [`metrics`]: the Prometheus metrics.
//! - [`settings`]: reload when the settings file changes (the settings themselves are
//!   `monitor_core::settings`).
//! - [`targets`]: targets made through the sink's API, read from the targets topic.
//! - [`schedule`]: when each target is checked: fixed rate, spread over the period
//!   ([`schedule::slots`]), this replica's share ([`schedule::shard`]), under a global cap on
//!   checks in flight, with `missed` reports for slots that could not start, and for the
//!   slots of a downtime ([`schedule::backfill`]).
//! - [`probe`]: one check of one target on a fresh connection, phase by phase, and how it
//!   is judged; [`probe::Checker`] runs checks, [`probe::CheckFn`] is what the schedule calls.
//! - [`report`]: the reports the checker writes besides a check's own (`missed`), and
//!   their printing on stdout.
//! - [`publish`]: delivery to Kafka in rounds through the spool, nothing lost; the reports
//!   topic ([`publish::topic`]) and Kafka's partitioner ([`publish::partitioner`]).
//! - [`spool`]: the on-disk FIFO every report passes through until Kafka acknowledged it.
//!
//! ## Targets from the API
//! Besides the settings file's targets, a checker that reports to Kafka runs the targets made
//! through the sink's API. The sink publishes each one's definition to a compacted topic
//! (`kafka.targets_topic`, key = target id, a tombstone on delete); the checker reads it from
//! the start at boot and follows it ([`targets::follow`]), so a change reaches the schedule
//! within a second or so, without a restart, and unchanged targets keep their slots. The two
//! sources are merged in [`schedule::catalog`]: a file target wins over an API target of the
//! same id, and each replica keeps its shard's share of both. An invalid definition is
//! refused (logged, counted in `webmon_checker_refused_definitions_total`) and the previous
//! one of its target kept; while Kafka is out, the last definitions known stay in force.

pub mod app;
pub mod metrics;
pub mod settings;

pub mod targets;

pub mod schedule;

pub mod probe;

pub mod report;

pub mod publish;

pub mod spool;
