//! # checker
//!
//! Checks HTTP(S) targets on their schedules and turns each check into a report.
//!
//! ## Layout
//! Floors follow a report's way, each importing only the floors below it:
//! settings → schedule → probe → report → publish → spool. Above them, [`app`] wires a run
//! and [`metrics`] names every metric.
//!
//! - [`app`]: the service: [`app::Application`] builds (spool opened, admin endpoint bound)
//!   and runs until stopped; the one-shot mode; reload and shutdown.
//! - [`metrics`]: the Prometheus metrics.
//! - [`settings`]: reload when the settings file changes (the settings themselves are
//!   `monitor_core::settings`).
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

pub mod app;
pub mod metrics;
pub mod settings;

pub mod schedule;

pub mod probe;

pub mod report;

pub mod publish;

pub mod spool;
