//! Which targets the status page shows, by what name and labels: the one place that decides
//! it, so that a target not public never reaches the page, the JSON or a badge. The targets
//! with `public = true` of the sink's catalog (the settings file's and the API's, a file
//! target winning over an API target of the same id, as in the checkers) are public.

use std::collections::BTreeMap;

use monitor_core::settings::{Labels, TargetSettings};
use serde::Serialize;

/// A target the status page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicTarget {
    /// Its id.
    pub id: String,
    /// Its display name (when it has none, its URL's host and path: never its query or
    /// credentials).
    pub name: String,
    /// Its labels: the page has one group per label and value.
    pub labels: Labels,
}

impl PublicTarget {
    /// `target` as shown, when it is public.
    fn of(target: &TargetSettings) -> Option<PublicTarget> {
        target.public.then(|| PublicTarget {
            id: target.id.clone(),
            name: target.name.clone().unwrap_or_else(|| {
                let host = target.url.host_str().unwrap_or_default();
                format!("{host}{}", target.url.path())
            }),
            labels: target.labels.clone(),
        })
    }
}

/// The public targets, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicTargets(BTreeMap<String, PublicTarget>);

impl PublicTargets {
    /// The public ones of `targets`.
    pub fn from_settings(targets: &[TargetSettings]) -> PublicTargets {
        PublicTargets(
            targets
                .iter()
                .filter_map(PublicTarget::of)
                .map(|t| (t.id.clone(), t))
                .collect(),
        )
    }

    /// The public target of `id`.
    pub fn get(&self, id: &str) -> Option<&PublicTarget> {
        self.0.get(id)
    }

    /// Every public target, by id.
    pub fn iter(&self) -> impl Iterator<Item = &PublicTarget> {
        self.0.values()
    }

    /// Their ids.
    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use monitor_core::settings::read_definition;

    use super::*;

    fn target(id: &str, name: Option<&str>, public: bool) -> TargetSettings {
        let mut definition = serde_json::json!({
            "id": id, "url": format!("https://{id}.example/health?key=secret"), "public": public,
        });
        if let Some(name) = name {
            definition["name"] = name.into();
        }
        read_definition(&definition).expect("a valid definition")
    }

    #[test]
    fn only_public_targets_are_shown_named_without_their_query() {
        let targets = [
            target("a", Some("A"), true),
            target("b", None, false),
            target("c", None, true),
        ];
        let all = PublicTargets::from_settings(&targets);
        assert_eq!(all.ids(), ["a", "c"], "b is not public");
        assert_eq!(all.get("a").map(|t| t.name.as_str()), Some("A"));
        assert_eq!(
            all.get("c").map(|t| t.name.as_str()),
            Some("c.example/health"),
            "a name from the URL leaves its query out"
        );
    }
}
