//! # monitor-core
//!
//! What the checker and the sink agree on, and the runtime pieces both of them run on.
//!
//! ## Layout
//! Two floors. The contract is always built and has no runtime: a program that only reads
//! reports or settings depends on it alone. The shared runtime sits on top of it, behind
//! features, so each service pulls in only what it runs.
//!
//! Contract (always built):
//! - [`report`]: the report contract, the JSON object that travels through Kafka, one per
//!   check; versioned, and described for other readers by `schemas/report.v1.schema.json`.
//! - [`settings`]: settings of both services: targets, Kafka, PostgreSQL and each service's
//!   own section, loaded from a file plus `WEBMON__…` environment overrides and validated up
//!   front, every problem reported at once with its path.
//!
//! Shared runtime (`runtime`, feature `runtime`, which each of the features below turns on):
//! - `runtime::backoff`: retry delays (exponential, with jitter).
//! - `runtime::trust` (feature `trust`, which `kafka` turns on): the process's TLS trust
//!   roots, the operating system's store read once (the compiled-in roots where it has none),
//!   shared by the probes, the Kafka client and the database check.
//! - `runtime::broker` (feature `kafka`): a Kafka client built from the settings (TLS, SASL,
//!   hints at the setting to check when connecting fails).
//! - `runtime::relay` (feature `kafka`, Linux): the in-process relay broker connections go
//!   through, so small requests are not held back by Nagle's algorithm.
//! - `runtime::admin` (feature `admin`): the `/metrics`, `/healthz`, `/readyz` endpoint, an
//!   axum router served within bounds.
//! - `runtime::telemetry` (feature `telemetry`): logging set-up, text or JSON, to stderr or a
//!   file.
//! - `runtime::service` (feature `telemetry`): what both binaries' `main` share: the common
//!   flags, signal handling and the runtime's start and stop.
//!
//! Test support:
//! - `testing` (feature `testing`): helpers for integration tests against a real broker and a
//!   real PostgreSQL.
//!
//! Imports run down: the runtime reads the contract, the contract never reads the runtime.

pub mod report;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use report::{FailureClass, Report, ReportError, Status, Timings, SCHEMA_VERSION};
