//! # monitor-core
//!
//! What the checker and the sink agree on.
//!
//! ## Layout
//! - [`backoff`]: retry delays (exponential, with jitter) shared by both services.
//! - [`report`]: the report contract, the JSON object that travels through Kafka, one per
//!   check; versioned, and described for other readers by `schemas/report.v1.schema.json`.
//! - [`settings`]: settings of both services: targets, Kafka, PostgreSQL and each service's
//!   own section, loaded from a file plus `WEBMON__…` environment overrides and validated up
//!   front, every problem reported at once with its path.
//! - `admin` (feature `admin`): the `/metrics`, `/healthz`, `/readyz` endpoint.
//! - `kafka` (feature `kafka`): a Kafka client built from the settings (TLS, SASL).
//! - `telemetry` (feature `telemetry`): logging set-up, text or JSON, to stderr or a file.
//! - `testing` (feature `testing`): helpers for integration tests against a real broker and a
//!   real PostgreSQL.

#[cfg(feature = "admin")]
pub mod admin;
pub mod backoff;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(all(feature = "kafka", target_os = "linux"))]
pub mod kafka_relay;
pub mod report;
pub mod settings;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use report::{FailureClass, Report, ReportError, Status, Timings, SCHEMA_VERSION};
