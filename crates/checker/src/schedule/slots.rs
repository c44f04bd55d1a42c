//! A target's slots: `offset + k × period` on the Unix time line, where `offset` comes from a
//! hash of the target's id ([`id_hash`], which also picks a target's shard). A pure function of
//! the id and the period, so slots survive restarts and reloads and can be told afterwards
//! (the start-up backfill does).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A stable, evenly spread number for a target id: the first 8 bytes of its SHA-256, big
/// endian. Every replica and every run computes the same one.
pub fn id_hash(target_id: &str) -> u64 {
    let digest = Sha256::digest(target_id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

/// The target's offset inside its period, from a hash of its id.
pub fn offset(target_id: &str, period: Duration) -> Duration {
    let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(id_hash(target_id) % period_us)
}

/// The first slot of the target at or after `at`.
pub fn next_slot(target_id: &str, period: Duration, at: DateTime<Utc>) -> DateTime<Utc> {
    let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX).max(1);
    let offset_us = i64::try_from(offset(target_id, period).as_micros()).unwrap_or(0);
    let now_us = at.timestamp_micros();
    let k = (now_us - offset_us).div_euclid(period_us);
    let mut slot = k * period_us + offset_us;
    if slot < now_us {
        slot += period_us;
    }
    DateTime::from_timestamp_micros(slot).unwrap_or(at)
}
