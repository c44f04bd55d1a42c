//! Response times of the checks that found a target up, counted per hour as a log-bucket
//! histogram, so that the status page can give p50/p95 over a day from 24 rows per target
//! and never read `results`. A histogram rides in the hour's verdict counts
//! ([`super::state::HourCounts`]) and is written to `verdict_hours.response` when the hour
//! turns, with no write of its own. Buckets grow by a quarter octave (2^¼, about 19 %), so a
//! percentile read from them is within about 9 % of the true one.
//!
//! In the target's state (written every batch) a histogram is kept sparse, as `[bucket,
//! count]` pairs; in the database and in readers it is dense ([`Histogram::to_dense`]).

use serde::{Deserialize, Serialize};

/// Buckets per doubling of the response time.
pub const BUCKETS_PER_OCTAVE: f64 = 4.0;
/// Buckets in all: bucket 0 holds times under 1 ms, bucket `b ≥ 1` those in
/// `[2^((b-1)/4), 2^(b/4))` ms, and the last one everything from about 46 s up.
pub const BUCKETS: usize = 64;

/// Response times in milliseconds, by bucket: `(bucket, count)` pairs in bucket order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram(Vec<(u8, u32)>);

impl Histogram {
    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts one response time.
    pub fn record(&mut self, ms: f64) {
        let bucket = bucket_of(ms);
        match self.0.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(1),
            Err(i) => self.0.insert(i, (bucket, 1)),
        }
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, n) in &other.0 {
            match self.0.binary_search_by_key(bucket, |(b, _)| *b) {
                Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(*n),
                Err(i) => self.0.insert(i, (*bucket, *n)),
            }
        }
    }

    /// Counts by bucket, trailing empty buckets left out (empty when it counts nothing).
    pub fn to_dense(&self) -> Vec<i32> {
        let len = self.0.last().map_or(0, |(b, _)| usize::from(*b) + 1);
        let mut dense = vec![0; len];
        for (b, n) in &self.0 {
            dense[usize::from(*b)] = i32::try_from(*n).unwrap_or(i32::MAX);
        }
        dense
    }
}

/// The bucket of a response time in milliseconds.
pub fn bucket_of(ms: f64) -> u8 {
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    let b = (ms.log2() * BUCKETS_PER_OCTAVE).floor() + 1.0;
    b.min((BUCKETS - 1) as f64) as u8
}

/// The time a bucket stands for: the geometric middle of its range, in milliseconds.
pub fn bucket_value(bucket: usize) -> f64 {
    if bucket == 0 {
        return 0.5;
    }
    (((bucket as f64) - 0.5) / BUCKETS_PER_OCTAVE).exp2()
}

/// The `q` quantile (0 to 1) of dense counts, in milliseconds; `None` when they count
/// nothing.
pub fn quantile(dense: &[u64], q: f64) -> Option<f64> {
    let total: u64 = dense.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (bucket, n) in dense.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_value(bucket));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_stands_for_its_times_within_a_tenth() {
        for ms in [1.0, 3.3, 47.0, 120.0, 999.0, 12_345.0] {
            let v = bucket_value(usize::from(bucket_of(ms)));
            assert!((v / ms - 1.0).abs() < 0.1, "{ms} ms read as {v}");
        }
    }

    #[test]
    fn percentiles_come_from_the_counted_times() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(f64::from(ms) * 10.0);
        }
        let dense: Vec<u64> = h.to_dense().iter().map(|n| *n as u64).collect();
        let p50 = quantile(&dense, 0.5).unwrap_or_default();
        let p95 = quantile(&dense, 0.95).unwrap_or_default();
        assert!((p50 / 500.0 - 1.0).abs() < 0.12, "p50 {p50}");
        assert!((p95 / 950.0 - 1.0).abs() < 0.12, "p95 {p95}");
        assert_eq!(quantile(&[], 0.5), None);
    }
}
