//! The targets this replica runs: the settings file's and the API's (from the targets topic,
//! [`crate::targets`]), merged, then filtered to this replica's shard ([`super::shard`]).
//!
//! The two sources change apart (a file reload, a change on the topic), and each change must
//! keep the other's targets: the catalog holds the file's, and merges them with the API's
//! definitions as they are now. A file target wins over an API one of the same id (the file is
//! the operator's, and the API refuses to change it); the conflict is logged once per id while
//! it lasts.

use std::collections::HashSet;
use std::sync::Arc;

use monitor_core::settings::{Shard, TargetSettings};
use tracing::warn;

use super::shard::owns;
use crate::targets::Definitions;

/// The settings file's targets, and the ids whose conflict was logged.
#[derive(Debug, Default)]
pub struct Catalog {
    file: Vec<Arc<TargetSettings>>,
    shadowed: HashSet<String>,
}

/// The merged list of this replica's targets, and how many came from each source.
#[derive(Debug, Default)]
pub struct Merged {
    /// The targets, the file's first.
    pub targets: Vec<Arc<TargetSettings>>,
    /// How many of them come from the settings file.
    pub from_file: usize,
    /// How many of them come from the API.
    pub from_api: usize,
}

impl Catalog {
    /// A catalog of the settings file's `targets`.
    pub fn new(targets: &[TargetSettings]) -> Catalog {
        let mut catalog = Catalog::default();
        catalog.set_file(targets);
        catalog
    }

    /// The settings file was reloaded: its targets are `targets` from now on.
    pub fn set_file(&mut self, targets: &[TargetSettings]) {
        self.file = targets.iter().cloned().map(Arc::new).collect();
    }

    /// This replica's share of the file's targets and of `api`'s that no file target shadows.
    pub fn merge(&mut self, api: &Definitions, shard: Shard) -> Merged {
        let file_ids: HashSet<&str> = self.file.iter().map(|t| t.id.as_str()).collect();
        let shadowed: HashSet<String> = api
            .keys()
            .filter(|id| file_ids.contains(id.as_str()))
            .cloned()
            .collect();
        for id in shadowed.difference(&self.shadowed) {
            warn!(target_id = %id, "a target of the settings file has the id of an API target: the file's is checked");
        }
        self.shadowed = shadowed;
        let mine = |t: &&Arc<TargetSettings>| owns(shard, &t.id);
        let file: Vec<_> = self.file.iter().filter(mine).cloned().collect();
        let api: Vec<_> = api
            .values()
            .filter(|t| !self.shadowed.contains(&t.id))
            .filter(mine)
            .cloned()
            .collect();
        Merged {
            from_file: file.len(),
            from_api: api.len(),
            targets: file.into_iter().chain(api).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_core::settings::read_definition;

    fn target(id: &str, port: u16) -> TargetSettings {
        let json = serde_json::json!({"id": id, "url": format!("http://127.0.0.1:{port}/")});
        read_definition(&json).expect("valid")
    }

    fn api(targets: &[TargetSettings]) -> Definitions {
        targets
            .iter()
            .map(|t| (t.id.clone(), Arc::new(t.clone())))
            .collect()
    }

    #[test]
    fn file_targets_win_over_api_targets_of_the_same_id_and_both_survive_the_others_changes() {
        let mut catalog = Catalog::new(&[target("a", 1), target("both", 2)]);
        let defs = api(&[target("both", 3), target("b", 4)]);
        let merged = catalog.merge(&defs, Shard::default());
        let ids: Vec<(&str, Option<u16>)> = merged
            .targets
            .iter()
            .map(|t| (t.id.as_str(), t.url.port()))
            .collect();
        assert_eq!(ids, [("a", Some(1)), ("both", Some(2)), ("b", Some(4))]);
        assert_eq!((merged.from_file, merged.from_api), (2, 1));

        catalog.set_file(&[target("c", 5)]);
        let merged = catalog.merge(&defs, Shard::default());
        let ids: Vec<&str> = merged.targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            ["c", "b", "both"],
            "the API's `both` is no longer shadowed"
        );
    }

    #[test]
    fn each_api_target_lands_in_exactly_one_shard() {
        let defs = api(&(0..40)
            .map(|i| target(&format!("api-{i}"), 80))
            .collect::<Vec<_>>());
        let mut seen = Vec::new();
        for index in 0..2 {
            let merged = Catalog::default().merge(&defs, Shard { index, count: 2 });
            assert!(merged.from_api > 0, "shard {index} has a share");
            seen.extend(merged.targets.iter().map(|t| t.id.clone()));
        }
        seen.sort();
        let mut all: Vec<String> = defs.keys().cloned().collect();
        all.sort();
        assert_eq!(seen, all);
    }
}
