//! The message bytes one replica holds at once, across all the partitions it consumes
//! (`sink.max_bytes_in_flight`): without it each partition may hold a fetch and a batch, so a
//! replica that takes over many partitions with a backlog of large reports would need their
//! sum in memory and could be killed for it.
//!
//! Each partition's consumer reserves its next fetch's bytes before asking for them, sized
//! as its share of the budget, and gives back what it no longer holds once a fetch is answered
//! and once a batch is stored. A consumer that cannot reserve while it holds a batch stores
//! the batch first instead of waiting, so a consumer only ever waits holding nothing, and the
//! consumers holding the budget always make progress and give it back. A fetch may return one
//! message larger than its reservation (a broker answers with at least one message); those
//! bytes are held without being counted, bounded by the broker's largest message.
//!
//! Written on tokio's semaphore, counting kibibytes (its permits are 32-bit).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Smallest fetch a consumer asks for when its share of the budget is smaller.
pub const MIN_FETCH_BYTES: usize = 64 * 1024;

const KIB: usize = 1024;

/// The budget one replica's consumers share.
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    total_kib: usize,
    consumers: AtomicUsize,
}

impl Budget {
    /// A budget of `bytes`, at least [`MIN_FETCH_BYTES`].
    pub fn new(bytes: u64) -> Arc<Budget> {
        let kib = usize::try_from(bytes / KIB as u64)
            .unwrap_or(usize::MAX)
            .clamp(MIN_FETCH_BYTES / KIB, u32::MAX as usize);
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(kib)),
            total_kib: kib,
            consumers: AtomicUsize::new(0),
        })
    }

    /// A share for one partition's consumer, for as long as it runs.
    pub fn join(self: &Arc<Budget>) -> Share {
        self.consumers.fetch_add(1, Ordering::Relaxed);
        Share {
            budget: self.clone(),
            held_kib: 0,
        }
    }

    /// Bytes not reserved by any consumer.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * KIB
    }
}

/// What one partition's consumer holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Budget>,
    held_kib: usize,
}

impl Share {
    /// The bytes the next fetch asks for: an even share of the budget among the consumers,
    /// between [`MIN_FETCH_BYTES`] (or the whole budget, if smaller) and `max`.
    pub fn fetch_bytes(&self, max: usize) -> usize {
        let consumers = self.budget.consumers.load(Ordering::Relaxed).max(1);
        let total = self.budget.total_kib * KIB;
        (total / consumers).max(MIN_FETCH_BYTES).min(max).min(total)
    }

    /// Reserves `bytes` if the budget has them now.
    pub fn try_reserve(&mut self, bytes: usize) -> bool {
        let kib = kib_of(bytes);
        match self.budget.permits.try_acquire_many(permits(kib)) {
            Ok(p) => {
                p.forget();
                self.held_kib += kib;
                true
            }
            Err(_) => false,
        }
    }

    /// Reserves `bytes`, waiting until the budget has them. Dropping the future reserves
    /// nothing.
    pub async fn reserve(&mut self, bytes: usize) {
        let kib = kib_of(bytes);
        // The semaphore is never closed.
        if let Ok(p) = self.budget.permits.acquire_many(permits(kib)).await {
            p.forget();
            self.held_kib += kib;
        }
    }

    /// Now holding `bytes`: gives back what is reserved beyond them.
    pub fn hold(&mut self, bytes: usize) {
        let keep = kib_of(bytes).min(self.held_kib);
        self.budget.permits.add_permits(self.held_kib - keep);
        self.held_kib = keep;
    }

    /// Bytes reserved.
    pub fn held(&self) -> usize {
        self.held_kib * KIB
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.hold(0);
        self.budget.consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Kibibytes covering `bytes`.
fn kib_of(bytes: usize) -> usize {
    bytes.div_ceil(KIB)
}

/// `kib` as semaphore permits (a reservation is at most the budget, itself within `u32`).
fn permits(kib: usize) -> u32 {
    u32::try_from(kib).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_budget_and_give_back_what_they_do_not_hold() {
        let budget = Budget::new(8 << 20);
        let mut a = budget.join();
        let mut b = budget.join();
        assert_eq!(a.fetch_bytes(8 << 20), 4 << 20);
        assert_eq!(a.fetch_bytes(1 << 20), 1 << 20);
        assert!(a.try_reserve(4 << 20));
        assert!(b.try_reserve(4 << 20));
        assert!(!a.try_reserve(1));
        a.hold(1000);
        assert_eq!(a.held(), 1024);
        assert_eq!(budget.available(), (4 << 20) - 1024);
        // Holding more than reserved (an oversize message) counts no more than reserved.
        a.hold(5 << 20);
        assert_eq!(a.held(), 1024);
        drop(b);
        assert_eq!(budget.available(), (8 << 20) - 1024);
        assert_eq!(a.fetch_bytes(16 << 20), 8 << 20);
        drop(a);
        assert_eq!(budget.available(), 8 << 20);
    }

    #[test]
    fn a_small_budget_still_fetches_at_least_the_minimum_it_allows() {
        let budget = Budget::new(100 << 10);
        let shares: Vec<Share> = (0..10).map(|_| budget.join()).collect();
        assert_eq!(shares[0].fetch_bytes(8 << 20), MIN_FETCH_BYTES);
        let tiny = Budget::new(1);
        assert_eq!(tiny.join().fetch_bytes(8 << 20), MIN_FETCH_BYTES);
    }

    #[tokio::test]
    async fn a_waiting_reservation_is_served_when_another_share_gives_back() {
        let budget = Budget::new(1 << 20);
        let mut a = budget.join();
        let mut b = budget.join();
        assert!(a.try_reserve(1 << 20));
        let waiting = tokio::spawn(async move {
            b.reserve(512 << 10).await;
            b.held()
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        a.hold(0);
        assert_eq!(waiting.await.expect("joined"), 512 << 10);
    }
}
