//! `configs/example.toml` says it shows every key: this holds it to that.
//!
//! The keys the settings accept are not copied here; they are asked of the settings code
//! itself. A key nobody reads is refused with "unknown key; known keys here are: …", listing
//! every key the section's reader asked for, so the example's tree, with an unknown key put
//! into each section, is loaded by both services and the lists are collected. Every one of
//! those keys must then appear in the example, set or commented out (`# key = …`), under its
//! own section's header (commented out too, as `# [kafka.tls]`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use monitor_core::settings::{CheckerSettings, ConfigError, SettingsSource, SinkSettings};
use serde_json::{Map, Value};

/// A key no section knows, put into every section to make it list the keys it knows.
const PROBE: &str = "zz_example_probe";

/// Sections the example shows and the probe is put into (`monitored_urls`: each entry).
const SECTIONS: &[&str] = &[
    "checker",
    "kafka",
    "kafka.tls",
    "kafka.sasl",
    "database",
    "sink",
    "sink.api",
    "sink.verdicts",
    "sink.notifications",
    "sink.status",
];

/// The original Python service's spellings, accepted so that its file loads unchanged
/// (README, "Coming from the original Python service"); the example shows the current names.
const ORIGINAL_SPELLINGS: &[(&str, &str)] = &[
    ("kafka", "host"),
    ("kafka", "port"),
    ("kafka", "ssl_cafile"),
    ("kafka", "ssl_certfile"),
    ("kafka", "ssl_keyfile"),
    ("database", "db_name"),
];

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/example.toml")
}

/// The object at a dotted path of `tree`, made when missing.
fn object_at<'a>(tree: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    let mut node = tree;
    for part in path.split('.') {
        let map = node.as_object_mut().expect("sections are tables");
        node = map.entry(part).or_insert_with(|| Value::Object(Map::new()));
    }
    node.as_object_mut().expect("sections are tables")
}

/// Section path -> the keys its reader asks for, from both services' "unknown key" problems.
fn accepted_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut tree = SettingsSource::file_only(example())
        .tree()
        .expect("the example parses");
    for section in SECTIONS {
        object_at(&mut tree, section).insert(PROBE.into(), Value::from(1));
    }
    let targets = tree["monitored_urls"].as_array_mut().expect("targets");
    for target in targets.iter_mut().filter_map(Value::as_object_mut) {
        target.insert(PROBE.into(), Value::from(1));
    }
    let dir = tempfile::tempdir().expect("dir");
    let probe = dir.path().join("probe.json");
    std::fs::write(&probe, tree.to_string()).expect("write");
    let source = SettingsSource::file_only(&probe);

    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let errors: Vec<ConfigError> = [
        CheckerSettings::load(&source, true).err(),
        SinkSettings::load(&source).err(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let index = regex::Regex::new(r"\[\d+\]").expect("regex");
    for problem in errors.iter().flat_map(|e| e.problems.iter()) {
        let Some(section) = problem.path.strip_suffix(&format!(".{PROBE}")) else {
            continue;
        };
        let known = problem
            .message
            .strip_prefix("unknown key; known keys here are: ")
            .unwrap_or_else(|| panic!("{problem}: not an unknown-key problem"));
        keys.entry(index.replace_all(section, "").into_owned())
            .or_default()
            .extend(known.split(", ").map(str::to_string));
    }
    keys
}

/// Section path -> the keys the example shows, set or commented out.
fn shown_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let header = regex::Regex::new(r"^\s*(?:#\s*)?\[\[?([a-z_.]+)\]\]?\s*(?:#.*)?$").expect("re");
    let key = regex::Regex::new(r"^\s*(?:#\s*)?([a-z_]+)\s*=").expect("re");
    let mut shown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(c) = header.captures(line) {
            section = c[1].to_string();
        } else if let Some(c) = key.captures(line) {
            shown
                .entry(section.clone())
                .or_default()
                .insert(c[1].to_string());
        }
    }
    shown
}

#[test]
fn the_example_settings_show_every_key_the_settings_accept() {
    let accepted = accepted_keys();
    let sections: BTreeSet<&str> = accepted.keys().map(String::as_str).collect();
    for section in SECTIONS.iter().chain(&["monitored_urls"]) {
        assert!(
            sections.contains(section),
            "no key list came back for {section}: {sections:?}"
        );
    }
    let text = std::fs::read_to_string(example()).expect("read the example");
    let shown = shown_keys(&text);
    let mut missing = Vec::new();
    for (section, keys) in &accepted {
        for key in keys {
            let original = ORIGINAL_SPELLINGS.contains(&(section.as_str(), key.as_str()));
            let is_section = accepted.contains_key(&format!("{section}.{key}"));
            let in_example = shown.get(section).is_some_and(|s| s.contains(key));
            if !original && !is_section && !in_example {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "configs/example.toml does not show these keys (add them, commented out if need be, \
         under their section): {missing:?}"
    );
}
