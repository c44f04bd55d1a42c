//! Labels on targets (`labels = { team = "web", env = "prod" }`) and the selectors that pick
//! targets by them: a notification route, a maintenance window and the status page's groups
//! all name targets this way rather than by listing ids, so a new target of a team is
//! covered without editing them.
//!
//! A selector is a table of label → wanted value; a value may be a list of alternatives and
//! `"*"` asks only that the label is present. A target matches when every entry matches; the
//! empty selector matches every target.

use std::collections::BTreeMap;

use serde_json::Value;

use super::problems::{Problem, Problems};
use super::walk::{describe, Section};

/// Most labels on one target.
pub const MAX_LABELS: usize = 64;
/// Longest label name or value, in bytes.
pub const MAX_LABEL_LEN: usize = 128;

/// A target's labels, by name.
pub type Labels = BTreeMap<String, String>;

/// Which targets something applies to, by label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    wanted: BTreeMap<String, Wanted>,
}

/// What one label of a selector asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// The label is present, whatever its value (`"*"`).
    Present,
    /// The label has one of these values.
    OneOf(Vec<String>),
}

impl LabelSelector {
    /// Whether a target with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.wanted
            .iter()
            .all(|(name, wanted)| match (wanted, labels.get(name)) {
                (_, None) => false,
                (Wanted::Present, Some(_)) => true,
                (Wanted::OneOf(values), Some(v)) => values.contains(v),
            })
    }

    /// Reads a selector from a JSON table (an API's filter, a test), every problem named
    /// under `path`.
    pub fn from_value(path: &str, value: &Value) -> Result<LabelSelector, Problems> {
        let root = serde_json::json!({ path: value });
        let mut problems = Problems::default();
        let mut s = Section::root(&root, &mut problems);
        let selector = read_selector(&mut s, path, &mut problems);
        if problems.is_empty() {
            Ok(selector)
        } else {
            Err(problems)
        }
    }

    /// Whether the selector selects every target.
    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }
}

/// Reads a target's `labels` table: names and values are non-empty strings of at most
/// [`MAX_LABEL_LEN`] bytes, at most [`MAX_LABELS`] of them.
pub(crate) fn read_labels(s: &mut Section<'_>, problems: &mut Problems) -> Labels {
    let section = s.section("labels", problems);
    let mut labels = Labels::new();
    for (name, value) in section.entries() {
        let path = section.path_of(name);
        let text = match value {
            Value::String(v) => v.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a string, found {}", describe(other)),
                ));
                continue;
            }
        };
        if check_label(&path, name, &text, problems) {
            labels.insert(name.clone(), text);
        }
    }
    if labels.len() > MAX_LABELS {
        problems.push(Problem::new(
            &s.path_of("labels"),
            format!(
                "has {} labels, more than {MAX_LABELS}: keep the ones routes and pages use",
                labels.len()
            ),
        ));
    }
    labels
}

/// Reads the selector under `key` (`labels = { team = "web", env = ["prod", "staging"] }`).
pub(crate) fn read_selector(
    s: &mut Section<'_>,
    key: &str,
    problems: &mut Problems,
) -> LabelSelector {
    let section = s.section(key, problems);
    let mut wanted = BTreeMap::new();
    for (name, value) in section.entries() {
        let path = section.path_of(name);
        let values: Vec<String> = match value {
            Value::String(v) if v == "*" => {
                wanted.insert(name.clone(), Wanted::Present);
                continue;
            }
            Value::String(v) => vec![v.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let all_strings = matches!(value, Value::String(_))
            || value.as_array().is_some_and(|a| a.len() == values.len());
        if values.is_empty() || !all_strings {
            problems.push(Problem::new(
                &path,
                format!(
                    "expected a label value, a list of values or \"*\", found {}",
                    describe(value)
                ),
            ));
            continue;
        }
        if values.iter().all(|v| check_label(&path, name, v, problems)) {
            wanted.insert(name.clone(), Wanted::OneOf(values));
        }
    }
    LabelSelector { wanted }
}

/// Whether a label's name and value are acceptable; says why not.
fn check_label(path: &str, name: &str, value: &str, problems: &mut Problems) -> bool {
    let bad_name = name.is_empty()
        || name.len() > MAX_LABEL_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if bad_name {
        problems.push(Problem::new(
            path,
            format!("{name:?} is not a label name: use 1 to {MAX_LABEL_LEN} letters, digits, '_', '-', '.' or '/'"),
        ));
        return false;
    }
    if value.is_empty() || value.len() > MAX_LABEL_LEN || value.chars().any(char::is_control) {
        problems.push(Problem::new(
            path,
            format!("a label value is 1 to {MAX_LABEL_LEN} bytes without control characters"),
        ));
        return false;
    }
    true
}

/// Labels from pairs, for tests.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(value: Value) -> (LabelSelector, Problems) {
        let root = serde_json::json!({ "match": value });
        let mut problems = Problems::default();
        let mut s = Section::root(&root, &mut problems);
        let selector = read_selector(&mut s, "match", &mut problems);
        (selector, problems)
    }

    #[test]
    fn every_entry_must_match() {
        let (s, problems) =
            selector(serde_json::json!({ "team": "web", "env": ["prod", "staging"] }));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(s.matches(&labels(&[("team", "web"), ("env", "staging")])));
        assert!(!s.matches(&labels(&[("team", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("team", "web")])));
    }

    #[test]
    fn star_asks_for_presence_and_empty_matches_all() {
        let (s, _) = selector(serde_json::json!({ "team": "*" }));
        assert!(s.matches(&labels(&[("team", "db")])));
        assert!(!s.matches(&labels(&[])));
        let (all, _) = selector(serde_json::json!({}));
        assert!(all.is_empty() && all.matches(&labels(&[])));
    }

    #[test]
    fn bad_values_are_named() {
        let (_, problems) = selector(serde_json::json!({ "team": 3, "bad name": "x" }));
        let text = format!("{problems:?}");
        assert!(text.contains("match.team"), "{text}");
        assert!(text.contains("match.bad name"), "{text}");
    }
}
