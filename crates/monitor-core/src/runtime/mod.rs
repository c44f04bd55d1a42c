//! The runtime both services share, above the contract: retry delays, the connection to
//! Kafka and its relay, the TLS trust roots, the admin endpoint, logging, and what both
//! binaries' `main` do.
//!
//! Each piece is behind the feature of what it needs (`trust`, `kafka`, `admin`, `telemetry`), so a
//! service builds only what it runs; all of them read the contract ([`crate::settings`],
//! [`crate::report`]) and none is read by it.
//!
//! Floors, top to bottom: `service` (the binaries' shared start and stop) uses `telemetry`;
//! `broker` (the Kafka client) uses `relay` and `trust` (the system's trust roots, also read by
//! the checker's probes and the sink's database check); `admin` and `backoff` stand alone.

#[cfg(feature = "telemetry")]
pub mod service;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "kafka")]
pub mod broker;
#[cfg(all(feature = "kafka", target_os = "linux"))]
pub mod relay;
#[cfg(feature = "trust")]
pub mod trust;

pub mod backoff;
#[cfg(feature = "telemetry")]
pub mod telemetry;
