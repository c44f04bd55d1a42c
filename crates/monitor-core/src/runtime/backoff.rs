//! Retry delays shared by both services: exponential backoff with jitter, so replicas that
//! lost the same broker or database do not come back in lockstep.

use std::future::Future;
use std::time::Duration;

/// Exponential backoff with jitter: 100 ms × 2ⁿ, capped at 10 s, of which a random 50-100 % is
/// taken.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = Duration::from_millis(100).saturating_mul(1 << self.attempt.min(7));
        self.attempt = self.attempt.saturating_add(1);
        base.min(Duration::from_secs(10))
            .mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Sleeps the next delay; false if `cancel` completed first.
    pub async fn sleep(&mut self, cancel: impl Future<Output = ()>) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_sleep_ends_false_when_cancelled_and_true_after_its_delay() {
        let mut b = Backoff::default();
        assert!(!b.sleep(std::future::ready(())).await);
        b.reset();
        let started = std::time::Instant::now();
        assert!(b.sleep(std::future::pending::<()>()).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
