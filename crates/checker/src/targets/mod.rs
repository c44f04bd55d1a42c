//! Targets made through the sink's API, as a checker learns them: the sink publishes every
//! change of such a target to a compacted topic of target definitions (`kafka.targets_topic`),
//! keyed by the target's id, with a tombstone when it is deleted. Reading that topic from its
//! start gives every checker, in every region, the current definitions without access to the
//! database; following it applies a change without a restart.
//!
//! This room turns records into [`Definitions`] (id → target): [`read_record`] reads one record
//! as the settings file's entries are read (same validation, `ca_file` refused), and
//! [`apply`] changes the map only when the record changes something, so the periodic
//! republishing of an unchanged definition is a no-op. A record that cannot be read is refused
//! ([`DefinitionError`]) and the previous definition of its id, if any, stays.
//! [`follow`] is the task that reads the topic. Merging with the settings file's targets and
//! sharding happen downstream, in [`crate::schedule::catalog`].

pub mod follow;

use std::collections::BTreeMap;
use std::sync::Arc;

use monitor_core::settings::{read_definition, Problems, TargetSettings};
use prometheus_client::metrics::counter::Counter;

/// The API's targets by id, as the targets topic says now.
pub type Definitions = BTreeMap<String, Arc<TargetSettings>>;

/// What one record of the targets topic says.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The target is defined so (created, or replaced).
    Define(Arc<TargetSettings>),
    /// The target was deleted (a tombstone).
    Delete(String),
}

/// Why a record of the targets topic was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The record has no key, so it names no target.
    #[error("a record without a key (the target id) at offset {offset}")]
    NoKey {
        /// The record's offset.
        offset: i64,
    },
    /// The key is not UTF-8.
    #[error("a record whose key is not UTF-8 at offset {offset}")]
    KeyNotText {
        /// The record's offset.
        offset: i64,
    },
    /// The value is not JSON.
    #[error("target {id}: the definition is not JSON: {source}")]
    NotJson {
        /// The target id (the record's key).
        id: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The definition does not validate.
    #[error("target {id}: {problems}")]
    Invalid {
        /// The target id (the record's key).
        id: String,
        /// Every problem found.
        problems: Problems,
    },
    /// The definition's `id` is not the record's key.
    #[error("target {id}: the definition's id is {found:?}, not the record's key")]
    OtherId {
        /// The record's key.
        id: String,
        /// The definition's id.
        found: String,
    },
}

/// The targets topic's own metrics (registered with the others in [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct TargetsMetrics {
    /// Definitions refused: no key, not JSON, invalid.
    pub refused: Counter,
}

/// Reads one record: its key is the target id; no value is a tombstone.
pub fn read_record(
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Change, DefinitionError> {
    let key = key.ok_or(DefinitionError::NoKey { offset })?;
    let id = std::str::from_utf8(key)
        .map_err(|_| DefinitionError::KeyNotText { offset })?
        .to_string();
    let Some(value) = value else {
        return Ok(Change::Delete(id));
    };
    let json: serde_json::Value = match serde_json::from_slice(value) {
        Ok(json) => json,
        Err(source) => return Err(DefinitionError::NotJson { id, source }),
    };
    let target = match read_definition(&json) {
        Ok(target) => target,
        Err(problems) => return Err(DefinitionError::Invalid { id, problems }),
    };
    if target.id != id {
        return Err(DefinitionError::OtherId {
            id,
            found: target.id,
        });
    }
    Ok(Change::Define(Arc::new(target)))
}

/// Applies `change` to `definitions`; true when it changed them.
pub fn apply(definitions: &mut Definitions, change: Change) -> bool {
    match change {
        Change::Delete(id) => definitions.remove(&id).is_some(),
        Change::Define(target) => {
            if definitions.get(&target.id).is_some_and(|t| *t == target) {
                return false;
            }
            definitions.insert(target.id.clone(), target);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(map: &mut Definitions, id: &str, json: &str) -> Result<bool, DefinitionError> {
        read_record(0, Some(id.as_bytes()), Some(json.as_bytes())).map(|c| apply(map, c))
    }

    #[test]
    fn a_definition_is_added_replaced_and_deleted_and_a_republish_changes_nothing() {
        let mut map = Definitions::new();
        let first = r#"{"id":"api-1","url":"http://127.0.0.1:8081/","period":"30s","name":"API","labels":{"team":"web"}}"#;
        assert!(define(&mut map, "api-1", first).expect("valid"));
        assert!(
            !define(&mut map, "api-1", first).expect("valid"),
            "republish"
        );
        let period = map["api-1"].period;
        assert_eq!(period, std::time::Duration::from_secs(30));
        let changed = r#"{"id":"api-1","url":"http://127.0.0.1:8082/","period":"30s"}"#;
        assert!(define(&mut map, "api-1", changed).expect("valid"));
        assert_eq!(map["api-1"].url.port(), Some(8082));
        let tombstone = read_record(3, Some(b"api-1"), None).expect("tombstone");
        assert!(apply(&mut map, tombstone.clone()));
        assert!(!apply(&mut map, tombstone), "a second tombstone");
        assert!(map.is_empty());
    }

    #[test]
    fn records_that_name_no_target_or_do_not_validate_are_refused_naming_the_target() {
        // (key, value, what the error says)
        type Case<'a> = (Option<&'a [u8]>, &'a [u8], &'a str);
        let cases: [Case<'_>; 5] = [
            (None, b"{}", "without a key"),
            (Some(b"\xff"), b"{}", "not UTF-8"),
            (Some(b"t1"), b"{not json", "t1: the definition is not JSON"),
            (
                Some(b"t1"),
                br#"{"id":"t1","url":"http://a/","period":"1s","timeout":"5s"}"#,
                "t1: timeout",
            ),
            (
                Some(b"t1"),
                br#"{"id":"t2","url":"http://a/"}"#,
                "t1: the definition's id is \"t2\"",
            ),
        ];
        for (key, value, expected) in cases {
            let error = read_record(7, key, Some(value)).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
