//! The slots to come: every configured target with exactly one live entry in a time-ordered
//! queue, kept through reloads.
//!
//! The queue is taken from once per check, so its entries are small and plain: a slot's time
//! in microseconds and an index into a table of targets, 16 bytes that compare as integers.
//! Finding a slot's target is an index, not a hash of its id, and the heap of a million targets
//! is 16 MB that a pop walks in a few cache lines per level. The id is hashed only on reload.
//!
//! A table entry outlives a reload that drops its target until its queued slot comes up, so a
//! target removed and added back within a period keeps its slots instead of gaining a second
//! entry; a target whose period changes gets a new generation, and the queue entries of the
//! old one are stale and dropped when they come up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::settings::TargetSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::slots::next_slot;

/// Longest the scheduler sleeps before looking at the clock again, so a wall-clock step or a
/// reload is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// One queued slot: when it falls (microseconds since the Unix epoch), and which generation of
/// which table entry it belongs to. Ordered by time first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    at_us: i64,
    index: u32,
    generation: u32,
}

impl Due {
    /// When the slot falls.
    pub fn at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.at_us).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The same target's slot at `at`.
    pub fn moved_to(self, at: DateTime<Utc>) -> Due {
        Due {
            at_us: at.timestamp_micros(),
            ..self
        }
    }
}

/// A target the queue knows: its current settings (`None` once a reload dropped it) and the
/// period and generation of its one live queue entry.
#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    period: Duration,
    generation: u32,
    target: Option<Arc<TargetSettings>>,
}

/// The configured targets, each with its one live queue entry.
pub(super) struct Queue {
    targets: watch::Receiver<Vec<Arc<TargetSettings>>>,
    table: Vec<Entry>,
    /// Table index by target id, for reloads.
    by_id: HashMap<Arc<str>, u32>,
    /// Table indexes free for reuse: their targets were dropped and their last slot came up.
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<Due>>,
    reload: bool,
}

impl Queue {
    pub fn new(targets: watch::Receiver<Vec<Arc<TargetSettings>>>) -> Queue {
        Queue {
            targets,
            table: Vec::new(),
            by_id: HashMap::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            reload: true,
        }
    }

    /// Queues the target's next slot.
    pub fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// Waits for the next slot that is due, of a target still configured, taking new target
    /// lists meanwhile. `None` once `stop` fires or the target lists end.
    pub async fn next_due(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(Due, Arc<TargetSettings>)> {
        loop {
            if self.reload {
                self.take_list();
            }
            let now = Utc::now().timestamp_micros();
            let wait = self.heap.peek().map(|Reverse(top)| {
                let ahead = u64::try_from(top.at_us - now).unwrap_or(0);
                (ahead > 0).then(|| Duration::from_micros(ahead).min(MAX_SLEEP))
            });
            match wait {
                None => tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = self.targets.changed() => { r.ok()?; self.reload = true; }
                },
                Some(Some(wait)) => tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = self.targets.changed() => { r.ok()?; self.reload = true; }
                    _ = tokio::time::sleep(wait) => {}
                },
                Some(None) => {
                    if let Some(due) = self.pop_live() {
                        return Some(due);
                    }
                }
            }
        }
    }

    /// Takes the latest target list: a target whose live entry has the same period keeps it
    /// (and its slots), even if it was dropped and added back meanwhile; any other gets a new
    /// entry, queued at its next slot.
    fn take_list(&mut self) {
        self.reload = false;
        let list = self.targets.borrow_and_update().clone();
        for entry in &mut self.table {
            entry.target = None;
        }
        let now = Utc::now();
        for target in list {
            let (index, new) = match self.by_id.get(target.id.as_str()) {
                Some(&index) => (index, false),
                None => (self.allocate(&target), true),
            };
            let Some(entry) = self.table.get_mut(index as usize) else {
                continue;
            };
            if new || entry.period != target.period {
                entry.generation = entry.generation.wrapping_add(1);
                entry.period = target.period;
                self.heap.push(Reverse(Due {
                    at_us: next_slot(&target.id, target.period, now).timestamp_micros(),
                    index,
                    generation: entry.generation,
                }));
            }
            entry.target = Some(target);
        }
        info!(
            targets = self.table.iter().filter(|e| e.target.is_some()).count(),
            queued = self.heap.len(),
            "schedule loaded"
        );
    }

    /// A table entry for a target new to the queue, nothing queued for it yet.
    fn allocate(&mut self, target: &TargetSettings) -> u32 {
        let id: Arc<str> = Arc::from(target.id.as_str());
        let entry = Entry {
            id: id.clone(),
            period: target.period,
            generation: 0,
            target: None,
        };
        let index = match self.free.pop() {
            Some(index) => {
                if let Some(slot) = self.table.get_mut(index as usize) {
                    // Keep the generation counting up: stale queue entries of the index's
                    // earlier target must never match.
                    let generation = slot.generation;
                    *slot = Entry {
                        generation,
                        ..entry
                    };
                }
                index
            }
            None => {
                self.table.push(entry);
                u32::try_from(self.table.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.by_id.insert(id, index);
        index
    }

    /// The entry on top of the queue with its target, unless it is stale or its target is
    /// no longer configured (then its table entry ends here).
    fn pop_live(&mut self) -> Option<(Due, Arc<TargetSettings>)> {
        let Reverse(due) = self.heap.pop()?;
        let entry = self.table.get_mut(due.index as usize)?;
        // Superseded by a reload: this entry is stale.
        if entry.generation != due.generation {
            return None;
        }
        match &entry.target {
            Some(target) => Some((due, target.clone())),
            None => {
                entry.generation = entry.generation.wrapping_add(1);
                self.by_id.remove(&entry.id);
                self.free.push(due.index);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::targets;
    use super::*;

    /// Every queued entry, taken in order: the ids of the live ones, and the stale ones.
    fn drain(queue: &mut Queue) -> (Vec<String>, usize) {
        let (mut live, mut stale) = (Vec::new(), 0);
        while !queue.heap.is_empty() {
            match queue.pop_live() {
                Some((_, target)) => live.push(target.id.clone()),
                None => stale += 1,
            }
        }
        live.sort();
        (live, stale)
    }

    #[test]
    fn a_changed_period_leaves_one_live_entry() {
        let (tx, rx) = watch::channel(targets(&[("a", "1s"), ("b", "1s")]));
        let mut queue = Queue::new(rx);
        queue.take_list();
        tx.send_replace(targets(&[("a", "2s"), ("b", "1s")]));
        queue.take_list();
        tx.send_replace(targets(&[("a", "1s"), ("b", "1s")]));
        queue.take_list();
        assert_eq!(drain(&mut queue), (vec!["a".into(), "b".into()], 2));
    }

    #[test]
    fn a_dropped_target_ends_when_its_slot_comes_up_and_its_index_is_reused() {
        let (tx, rx) = watch::channel(targets(&[("a", "1s"), ("b", "1s")]));
        let mut queue = Queue::new(rx);
        queue.take_list();
        let old: Vec<Due> = queue.heap.iter().map(|Reverse(d)| *d).collect();
        tx.send_replace(targets(&[("b", "1s")]));
        queue.take_list();
        // "a" comes up dropped: its entry ends and its index is free.
        assert_eq!(drain(&mut queue), (vec!["b".into()], 1));
        assert_eq!(queue.free.len(), 1);
        // "c" takes the index; a copy of "a"'s old entry on that index must not name "c".
        tx.send_replace(targets(&[("c", "1s")]));
        queue.take_list();
        assert!(queue.free.is_empty());
        for due in old {
            queue.push(due);
        }
        assert_eq!(drain(&mut queue), (vec!["c".into()], 2));
        // Added back, "a" gets an entry of its own again; "c" keeps its one entry (taken by
        // the drain above, where the scheduler would have queued its next slot).
        tx.send_replace(targets(&[("a", "1s"), ("c", "1s")]));
        queue.take_list();
        assert_eq!(drain(&mut queue), (vec!["a".into()], 0));
    }
}
