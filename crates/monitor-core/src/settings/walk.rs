//! A walker over the merged configuration tree that turns loose values (a file plus
//! environment overrides) into typed ones, collecting every problem with its path instead of
//! stopping at the first.
//!
//! Written by hand because serde cannot do this part: a `Deserialize` run ends at its first
//! error, so `serde_path_to_error` names the path of one problem only, and `serde_ignored`
//! reports unknown keys only of a run that succeeded; the promise here is every problem at
//! once. Serde still does the parsing (the `config` crate reads each format and merges the
//! overrides into one `serde_json::Value`); this walker only reads that tree. It also takes
//! the loose forms the original service and environment overrides write (`"port": "19071"`,
//! `"true"`, a comma-separated list) where a derived `Deserialize` would want one type.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::problems::{Problem, Problems};
use super::units::{
    duration_at_most, format_duration, format_size, parse_seconds, parse_size, MAX_DURATION,
};

/// One object of the tree, with the path that names it in messages.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
    seen: BTreeSet<String>,
    /// Whether keys nobody asked for are reported (true for our own sections).
    strict: bool,
}

impl<'a> Section<'a> {
    /// The root of the tree; unknown top-level keys are allowed (each service reads its own
    /// sections of a shared file, and the original service's `mode` key is ignored).
    pub fn root(value: &'a Value, problems: &mut Problems) -> Section<'a> {
        let map = match value {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                problems.push(Problem::new(
                    "(root)",
                    format!("expected a table/object of settings, found {}", kind(other)),
                ));
                None
            }
        };
        Section {
            path: String::new(),
            map,
            seen: BTreeSet::new(),
            strict: false,
        }
    }

    /// Whether the section exists in the tree at all.
    pub fn exists(&self) -> bool {
        self.map.is_some()
    }

    /// The path of `key` inside this section.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The path of this section.
    pub fn path(&self) -> &str {
        if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        }
    }

    /// The raw value of `key`, marking it as known. `null` counts as absent.
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        let map = self.map?;
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    /// Every key and value of the section (for sections whose keys are free-form).
    pub fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.into_iter().flatten()
    }

    /// Whether `key` is present (and not null), without marking it.
    pub fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    /// A nested section. A missing key gives an empty section; a non-object is a problem.
    pub fn section(&mut self, key: &str, problems: &mut Problems) -> Section<'a> {
        let path = self.path_of(key);
        let map = match self.raw(key) {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a table/object, found {}", kind(other)),
                ));
                None
            }
        };
        Section {
            path,
            map,
            seen: BTreeSet::new(),
            strict: true,
        }
    }

    /// An array of values, each with its own path (`key[i]`).
    pub fn array(
        &mut self,
        key: &str,
        problems: &mut Problems,
    ) -> Option<Vec<(String, &'a Value)>> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}[{i}]"), v))
                    .collect(),
            ),
            other => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a list, found {}", kind(other)),
                ));
                None
            }
        }
    }

    /// A string. Numbers and booleans are taken as their text, since environment overrides
    /// arrive as text that may look like a number (a numeric password, a port).
    pub fn string(&mut self, key: &str, problems: &mut Problems) -> Option<String> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a string, found {}", kind(other)),
                ));
                None
            }
        }
    }

    /// A string that must be present and not blank.
    pub fn required_string(
        &mut self,
        key: &str,
        what: &str,
        problems: &mut Problems,
    ) -> Option<String> {
        let path = self.path_of(key);
        match self.string(key, problems) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                problems.push(Problem::new(&path, format!("is empty: set {what}")));
                None
            }
            None => {
                if !self.has(key) {
                    problems.push(Problem::new(&path, format!("is missing: set {what}")));
                }
                None
            }
        }
    }

    /// A boolean (`true`/`false`, or the strings `"true"`/`"false"`).
    pub fn bool(&mut self, key: &str, default: bool, problems: &mut Problems) -> bool {
        let path = self.path_of(key);
        match self.raw(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => {
                problems.push(Problem::new(
                    &path,
                    format!("expected true or false, found {}", describe(other)),
                ));
                default
            }
        }
    }

    /// An integer within `min..=max` (numbers, or strings holding one, as in the original
    /// service's `"port": "19071"`).
    pub fn integer(
        &mut self,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
        problems: &mut Problems,
    ) -> i64 {
        let path = self.path_of(key);
        let Some(value) = self.raw(key) else {
            return default;
        };
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                problems.push(Problem::new(
                    &path,
                    format!("{n} is out of range: use a whole number from {min} to {max}"),
                ));
                default
            }
            None => {
                problems.push(Problem::new(
                    &path,
                    format!(
                        "expected a whole number from {min} to {max}, found {}",
                        describe(value)
                    ),
                ));
                default
            }
        }
    }

    /// A duration: a number of seconds (as in the original service) or a string with a unit
    /// (`"500ms"`, `"1.5s"`, `"2m"`, `"1h"`). Must be positive and at most [`MAX_DURATION`].
    pub fn duration(
        &mut self,
        key: &str,
        default: Duration,
        problems: &mut Problems,
    ) -> Option<Duration> {
        self.duration_within(key, default, MAX_DURATION, problems)
    }

    /// A duration as [`Section::duration`] reads it, at most `max` (refused with the maximum
    /// named otherwise).
    pub fn duration_within(
        &mut self,
        key: &str,
        default: Duration,
        max: Duration,
        problems: &mut Problems,
    ) -> Option<Duration> {
        let path = self.path_of(key);
        let Some(value) = self.raw(key) else {
            return Some(default);
        };
        let parsed = match value {
            Value::Number(n) => n.as_f64().ok_or_else(|| "not a number".to_string()),
            Value::String(s) => parse_seconds(s),
            other => Err(format!("found {}", kind(other))),
        };
        let message = match parsed.map(|secs| duration_at_most(secs, max.min(MAX_DURATION))) {
            Ok(Ok(d)) if d.is_zero() => "must be greater than zero".to_string(),
            Ok(Ok(d)) => return Some(d),
            Ok(Err(Some(max))) => format!(
                "{} is above the maximum {}: use a shorter duration",
                describe(value),
                show(max)
            ),
            Ok(Err(None)) => format!("{}: must be a positive duration", describe(value)),
            Err(why) => format!(
                "{}: {why}; use seconds (10, 0.5) or a string with a unit (\"500ms\", \"2m\")",
                describe(value)
            ),
        };
        problems.push(Problem::new(&path, message));
        None
    }

    /// A size in bytes: a number, or a string with a unit (`"512KiB"`, `"1MiB"`, `"10MB"`),
    /// at most `max`.
    pub fn size(&mut self, key: &str, default: u64, max: u64, problems: &mut Problems) -> u64 {
        let path = self.path_of(key);
        let Some(value) = self.raw(key) else {
            return default;
        };
        let parsed = match value {
            Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                (Some(n), _) => Ok(n),
                // Whole but beyond u64 (1e30): saturate, so the maximum refuses it.
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(u64::MAX),
                _ => Err("not a whole, non-negative number".to_string()),
            },
            Value::String(s) => parse_size(s),
            other => Err(format!("found {}", kind(other))),
        };
        match parsed {
            Ok(0) => {
                problems.push(Problem::new(&path, "must be greater than zero".to_string()));
                default
            }
            Ok(n) if n > max => {
                problems.push(Problem::new(
                    &path,
                    format!(
                        "{} is above the maximum {} ({max} bytes): use a smaller size",
                        describe(value),
                        format_size(max)
                    ),
                ));
                default
            }
            Ok(n) => n,
            Err(why) => {
                problems.push(Problem::new(
                    &path,
                    format!(
                        "{}: {why}; use bytes (1048576) or a string with a unit (\"1MiB\", \"512KiB\")",
                        describe(value)
                    ),
                ));
                default
            }
        }
    }

    /// A list of strings: a list, or one comma-separated string (the form environment
    /// overrides take).
    pub fn string_list(&mut self, key: &str, problems: &mut Problems) -> Option<Vec<String>> {
        let path = self.path_of(key);
        match self.raw(key)? {
            Value::String(s) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(n) => out.push(n.to_string()),
                        other => problems.push(Problem::new(
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", kind(other)),
                        )),
                    }
                }
                Some(out)
            }
            other => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a list of strings, found {}", kind(other)),
                ));
                None
            }
        }
    }

    /// A path to a local file that must be readable. Relative paths are resolved against
    /// `base_dir`.
    pub fn readable_file(
        &mut self,
        key: &str,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> Option<PathBuf> {
        let path = self.path_of(key);
        let text = self.string(key, problems)?;
        if text.trim().is_empty() {
            return None;
        }
        let file = resolve(base_dir, &text);
        if let Err(e) = std::fs::File::open(&file) {
            problems.push(Problem::new(
                &path,
                format!("cannot read {}: {e}", file.display()),
            ));
            return None;
        }
        Some(file)
    }

    /// Reports keys of this section that no reader asked for: most often a typo.
    pub fn finish(self, problems: &mut Problems) {
        if !self.strict {
            return;
        }
        let Some(map) = self.map else { return };
        for key in map.keys() {
            if !self.seen.contains(key) {
                let known: Vec<&str> = self.seen.iter().map(String::as_str).collect();
                problems.push(Problem::new(
                    &self.path_of(key),
                    format!("unknown key; known keys here are: {}", known.join(", ")),
                ));
            }
        }
    }
}

impl<'a> Section<'a> {
    /// A section over an arbitrary object value (an element of a list).
    pub fn from_value(
        path: String,
        value: &'a Value,
        problems: &mut Problems,
    ) -> Option<Section<'a>> {
        match value {
            Value::Object(map) => Some(Section {
                path,
                map: Some(map),
                seen: BTreeSet::new(),
                strict: true,
            }),
            other => {
                problems.push(Problem::new(
                    &path,
                    format!("expected a table/object, found {}", kind(other)),
                ));
                None
            }
        }
    }
}

/// Resolves a configured path: absolute as is, relative against `base_dir`.
pub(crate) fn resolve(base_dir: &Path, text: &str) -> PathBuf {
    let path = Path::new(text);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// "a string", "a list"… for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table/object",
    }
}

/// The value itself for scalars (`"abc"`, `-5`), its kind otherwise.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_string(),
    }
}

/// Formats a duration the way messages show it (`12s`, `500ms`).
pub(crate) fn show(d: Duration) -> String {
    format_duration(d)
}

/// The `admin_listen` key of a service's section: an `IP:PORT`, `default` when absent.
pub(crate) fn read_admin_listen(
    s: &mut Section<'_>,
    default: &str,
    problems: &mut Problems,
) -> String {
    match s.string("admin_listen", problems) {
        None => default.to_string(),
        Some(text) => {
            if text.trim().parse::<std::net::SocketAddr>().is_err() {
                problems.push(Problem::new(
                    &s.path_of("admin_listen"),
                    format!("{text:?} is not an address: write IP:PORT, e.g. 0.0.0.0:9101"),
                ));
            }
            text.trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_in_a_section_are_reported_with_their_path() {
        let tree = serde_json::json!({"kafka": {"topic": "t", "topik": "x"}, "mode": "any"});
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);
        let mut kafka = root.section("kafka", &mut problems);
        assert_eq!(kafka.string("topic", &mut problems).as_deref(), Some("t"));
        kafka.finish(&mut problems);
        root.finish(&mut problems);
        let text = problems.to_string();
        assert!(text.contains("kafka.topik: unknown key"), "{text}");
        assert!(!text.contains("mode"), "{text}");
    }
}
