//! What a check learns as it goes, phase by phase ([`Outcome`]), and why a hop failed
//! ([`Failure`]): filled by the connection and the exchange, read by the judge.

use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::FailureClass;
use tokio::sync::OwnedSemaphorePermit;

/// What a check learned, phase by phase (sums over redirect hops).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub tls: Option<f64>,
    pub ttfb: Option<f64>,
    pub transfer: Option<f64>,
    pub http_status: Option<u16>,
    /// The body kept for the patterns (empty when no pattern needs it).
    pub body: Vec<u8>,
    /// Body bytes read, kept or not (at most the cap).
    pub body_len: u64,
    pub truncated: bool,
    pub body_read: bool,
    /// The share of the body memory budget `body` may use, held until the check is judged.
    pub body_memory: Option<OwnedSemaphorePermit>,
    pub cert_not_after: Option<DateTime<Utc>>,
}

/// Why a hop failed.
pub(super) type Failure = (FailureClass, String);

/// Adds `elapsed` to a phase's milliseconds.
pub(super) fn add(slot: &mut Option<f64>, elapsed: Duration) {
    *slot = Some(slot.unwrap_or(0.0) + elapsed.as_secs_f64() * 1000.0);
}
