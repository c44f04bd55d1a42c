//! Settings of both services, loaded once and validated before anything starts.
//!
//! A settings file (TOML, YAML or JSON, by extension) is merged with environment overrides
//! under the prefix [`ENV_PREFIX`] with `__` between levels: `WEBMON__KAFKA__TOPIC=reports`
//! sets `kafka.topic`. Both services can read one shared file holding every section; each
//! ignores the sections it does not use. The original Python service's `configs/config.json`
//! loads unchanged (JSON files are read as JSON5, which also accepts its trailing comma).
//!
//! Loading never stops at the first problem: every problem comes back at once, each naming
//! its path (`monitored_urls[2].timeout: 12s is not less than period 10s`).

mod database;
mod kafka;
mod service;
mod target;
mod units;
mod walk;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use database::{DatabaseSettings, SslMode};
pub use kafka::{
    Compression, KafkaSettings, SaslMechanism, SaslSettings, TlsSettings, DEFAULT_PARTITIONS,
};
pub use service::{
    CheckerSection, CheckerSettings, ProducerSettings, Shard, SinkSection, SinkSettings,
    DEFAULT_MAX_BODY_MEMORY,
};
pub use target::{
    Pattern, StatusSet, TargetSettings, ALWAYS_SECRET_HEADERS, DEFAULT_BODY_LIMIT,
    DEFAULT_MAX_REDIRECTS, DEFAULT_PERIOD, DEFAULT_TIMEOUT, MAX_BODY_LIMIT, MAX_PERIOD,
    MAX_TIMEOUT,
};
pub use units::{format_duration, format_size, parse_duration, parse_size, MAX_DURATION};

/// Prefix of environment overrides: `WEBMON__SECTION__KEY`.
pub const ENV_PREFIX: &str = "WEBMON";

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `kafka.topic`, `monitored_urls[2].timeout`, or `(file)` for the file itself.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    /// Adds one.
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Settings that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({} problem{}):\n{problems}", problems.len(), if problems.len() == 1 { "" } else { "s" })]
pub struct ConfigError {
    /// Every problem found.
    pub problems: Problems,
}

impl From<Problems> for ConfigError {
    fn from(problems: Problems) -> Self {
        ConfigError { problems }
    }
}

/// A password or key: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where settings come from.
#[derive(Debug, Clone, Default)]
pub struct SettingsSource {
    /// The settings file; `None` for environment only.
    pub file: Option<PathBuf>,
    /// Environment variables to read overrides from; `None` for the process environment.
    pub env: Option<HashMap<String, String>>,
    /// Directory that relative paths in the settings (certificates, password files) are
    /// resolved against; `None` for the working directory.
    pub base_dir: Option<PathBuf>,
}

impl SettingsSource {
    /// Settings from `file` plus the process environment.
    pub fn file(path: impl Into<PathBuf>) -> SettingsSource {
        SettingsSource {
            file: Some(path.into()),
            ..SettingsSource::default()
        }
    }

    /// The merged tree of the file and the environment overrides, before validation.
    pub fn tree(&self) -> Result<serde_json::Value, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &self.file {
            let format = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("toml") => config::FileFormat::Toml,
                Some("yaml" | "yml") => config::FileFormat::Yaml,
                // JSON5 is a superset of JSON that also takes trailing commas and comments.
                Some("json" | "json5") => config::FileFormat::Json5,
                _ => {
                    return Err(single(
                        "(file)",
                        format!(
                            "{}: unknown settings format: name the file *.toml, *.yaml, *.yml or *.json",
                            path.display()
                        ),
                    ))
                }
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| single("(file)", format!("cannot read {}: {e}", path.display())))?;
            builder = builder.add_source(config::File::from_str(&text, format));
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(self.env.clone());
        builder = builder.add_source(env);
        let merged = builder.build().map_err(|e| {
            let file = self
                .file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "environment".into());
            single("(file)", format!("{file}: {e}"))
        })?;
        merged
            .try_deserialize::<serde_json::Value>()
            .map_err(|e| single("(file)", format!("cannot read the settings: {e}")))
    }

    fn base_dir(&self) -> PathBuf {
        self.base_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| Path::new(".").to_path_buf())
    }
}

fn single(path: &str, message: String) -> ConfigError {
    let mut problems = Problems::default();
    problems.push(Problem::new(path, message));
    ConfigError { problems }
}
