//! A request's JSON becomes a target definition the checkers will accept: the same validation
//! as the settings file (`monitor_core::settings::read_definition`), every problem named by
//! its field; the stored form is the JSON as given with its `id` filled in, so a checker reads
//! exactly what was accepted. Also the JSON merge patch (RFC 7396) of `PATCH`, and the
//! redaction of secret header values: answers and the audit show [`REDACTED`] in their place,
//! and a replace or patch that sends [`REDACTED`] back keeps the stored value.

use monitor_core::settings::{read_definition, Problem, TargetSettings};
use serde_json::{Map, Value};

use super::ApiError;

/// What answers and the audit show instead of a secret header's value.
pub const REDACTED: &str = "(secret)";

/// A validated definition, ready to store.
#[derive(Debug)]
pub struct Accepted {
    /// The target as the checkers will read it.
    pub target: TargetSettings,
    /// The JSON to store and publish, `id` included.
    pub json: Value,
}

/// Validates `json` as the definition of a target. `path_id` is the id of the URL (replace,
/// patch): the body's `id`, when given, must be the same. Redacted header values are taken from
/// `stored` (the current definition) first.
pub fn accept(
    mut json: Value,
    path_id: Option<&str>,
    stored: Option<&Value>,
) -> Result<Accepted, ApiError> {
    if let (Some(stored), Some(object)) = (stored, json.as_object_mut()) {
        restore_secrets(object, stored);
    }
    if let (Some(id), Some(object)) = (path_id, json.as_object_mut()) {
        match object.get("id") {
            None => {
                object.insert("id".into(), Value::String(id.to_string()));
            }
            Some(Value::String(given)) if given == id => {}
            Some(_) => {
                return Err(ApiError::Invalid(vec![Problem::new(
                    "id",
                    format!("differs from the id in the URL ({id:?}): a target's id cannot change; create a new target instead"),
                )]))
            }
        }
    }
    let target =
        read_definition(&json).map_err(|p| ApiError::Invalid(p.iter().cloned().collect()))?;
    if let Some(object) = json.as_object_mut() {
        object.insert("id".into(), Value::String(target.id.clone()));
    }
    Ok(Accepted { target, json })
}

/// Applies a JSON merge patch (RFC 7396): `null` removes a key, objects merge, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// `definition` with the values of its secret headers replaced by [`REDACTED`]: those the
/// definition marks secret (`secret_headers`) and those that always carry credentials.
pub fn redacted(definition: &Value) -> Value {
    let mut shown = definition.clone();
    let secret = secret_names(definition);
    if let Some(Value::Object(headers)) = shown.get_mut("headers") {
        for (name, value) in headers.iter_mut() {
            if secret.contains(&name.to_ascii_lowercase()) {
                *value = Value::String(REDACTED.into());
            }
        }
    }
    shown
}

/// The lower-case names of the headers whose values are secret in `definition`.
fn secret_names(definition: &Value) -> Vec<String> {
    let mut names: Vec<String> = monitor_core::settings::ALWAYS_SECRET_HEADERS
        .iter()
        .map(|h| h.as_str().to_string())
        .collect();
    if let Some(Value::Array(listed)) = definition.get("secret_headers") {
        names.extend(
            listed
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

/// Puts the stored value back where `object` sends [`REDACTED`] for a header.
fn restore_secrets(object: &mut Map<String, Value>, stored: &Value) {
    let Some(Value::Object(headers)) = object.get_mut("headers") else {
        return;
    };
    let Some(Value::Object(stored_headers)) = stored.get("headers") else {
        return;
    };
    for (name, value) in headers.iter_mut() {
        if value.as_str() == Some(REDACTED) {
            if let Some(old) = stored_headers.get(name) {
                *value = old.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_merges_and_replaces() {
        let mut doc =
            json!({"url": "http://a/", "labels": {"team": "web", "env": "prod"}, "period": "60s"});
        merge_patch(
            &mut doc,
            &json!({"labels": {"env": null, "tier": "1"}, "period": "30s", "name": "A"}),
        );
        assert_eq!(
            doc,
            json!({"url": "http://a/", "labels": {"team": "web", "tier": "1"}, "period": "30s", "name": "A"})
        );
    }

    #[test]
    fn secret_headers_are_redacted_and_restored() {
        let stored = json!({"url": "http://a/", "headers": {"Authorization": "Bearer s3cret", "X-Key": "k", "X-Team": "web"}, "secret_headers": ["x-key"]});
        let shown = redacted(&stored);
        assert_eq!(shown["headers"]["Authorization"], REDACTED);
        assert_eq!(shown["headers"]["X-Key"], REDACTED);
        assert_eq!(shown["headers"]["X-Team"], "web");
        let accepted = accept(shown, Some("a"), Some(&stored)).expect("valid");
        assert_eq!(accepted.json["headers"]["Authorization"], "Bearer s3cret");
        assert_eq!(accepted.json["id"], "a");
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let Err(ApiError::Invalid(problems)) = accept(
            json!({"url": "ftp://x", "period": "1s", "timeout": "5s", "labelz": {}}),
            None,
            None,
        ) else {
            panic!("an invalid definition was accepted");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(fields.contains(&"url"), "{fields:?}");
        assert!(fields.contains(&"timeout"), "{fields:?}");
        assert!(fields.contains(&"labelz"), "{fields:?}");
    }
}
