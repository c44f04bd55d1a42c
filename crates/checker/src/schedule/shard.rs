//! Sharding: which targets this replica checks. Each target belongs to exactly one share of
//! the replicas, chosen by [`id_hash`] of its id modulo the count, so every replica agrees
//! without talking to the others.

use std::sync::Arc;

use monitor_core::settings::{CheckerSettings, Shard, TargetSettings};

use super::slots::id_hash;

/// Whether `shard` holds `target_id`.
pub fn owns(shard: Shard, target_id: &str) -> bool {
    id_hash(target_id) % u64::from(shard.count.max(1)) == u64::from(shard.index)
}

/// The targets this replica checks.
pub fn my_targets(settings: &CheckerSettings, shard: Shard) -> Vec<Arc<TargetSettings>> {
    settings
        .targets
        .iter()
        .filter(|t| owns(shard, &t.id))
        .cloned()
        .map(Arc::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_belongs_to_exactly_one_shard_and_shares_are_even() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for i in 0..3000 {
            let id = format!("target-{i}");
            let owners: Vec<usize> = (0..3).filter(|&s| owns(shards[s], &id)).collect();
            assert_eq!(owners.len(), 1, "{id} owned by {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(
            sizes.iter().all(|&n| (900..=1100).contains(&n)),
            "{sizes:?}"
        );
        assert!(owns(Shard::default(), "anything"));
    }
}
