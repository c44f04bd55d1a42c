//! The target states this replica wrote last, kept in memory so that a batch does not read
//! and lock its targets' rows again: at 100,000 targets that read was a sixth of what the
//! verdicts cost the database. Each state carries the version it was written with; the write
//! of the next batch only succeeds where the stored version is still that one (see
//! `sql::save_states`), so a state another replica wrote meanwhile is never overwritten: the
//! transaction fails with [`SinkError::StateConflict`](crate::error::SinkError), the states
//! it took are gone from here, and the batch is stored again from the rows.
//!
//! States are taken out for a transaction and put back only once it committed, so what is
//! here is always what is stored (or older, which the version check catches).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::state::TargetState;

/// Most states kept. Past it a quarter is dropped (read again from the table when their
/// targets report): at ~1 KiB each, about 200 MiB at most.
pub const MAX_CACHED_STATES: usize = 200_000;

/// A target's state and the version it is stored with (`None`: not stored yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned {
    /// The state.
    pub state: TargetState,
    /// Its stored version.
    pub version: Option<i64>,
}

/// The states this replica wrote last, by target.
#[derive(Debug, Default)]
pub struct StateCache {
    states: Mutex<HashMap<String, Versioned>>,
}

impl StateCache {
    /// Takes the states of `targets` that are here; returns them and the targets that are not.
    pub fn take<'t>(&self, targets: &[&'t str]) -> (BTreeMap<String, Versioned>, Vec<&'t str>) {
        let mut cached = self.lock();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for &target in targets {
            match cached.remove(target) {
                Some(v) => {
                    found.insert(target.to_string(), v);
                }
                None => missing.push(target),
            }
        }
        (found, missing)
    }

    /// Puts back states as a committed transaction stored them.
    pub fn put(&self, states: BTreeMap<String, Versioned>) {
        let mut cached = self.lock();
        if cached.len() + states.len() > MAX_CACHED_STATES {
            let mut n = 0usize;
            cached.retain(|_, _| {
                n += 1;
                n % 4 != 0
            });
        }
        cached.extend(states);
    }

    /// How many states are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Versioned>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(v: i64) -> Versioned {
        Versioned {
            state: TargetState::default(),
            version: Some(v),
        }
    }

    #[test]
    fn taken_states_are_gone_until_put_back() {
        let cache = StateCache::default();
        cache.put(BTreeMap::from([("a".to_string(), versioned(3))]));
        let (found, missing) = cache.take(&["a", "b"]);
        assert_eq!(found.get("a").and_then(|v| v.version), Some(3));
        assert_eq!(missing, ["b"]);
        assert!(
            cache.is_empty(),
            "a transaction that fails leaves nothing stale behind"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = StateCache::default();
        for chunk in 0..5 {
            let states = (0..MAX_CACHED_STATES / 4)
                .map(|i| (format!("{chunk}-{i}"), versioned(1)))
                .collect();
            cache.put(states);
        }
        assert!(cache.len() <= MAX_CACHED_STATES);
    }
}
