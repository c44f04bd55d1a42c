//! Where settings come from: a file (TOML, YAML or JSON, by extension) merged with
//! `WEBMON__…` environment overrides into one tree, before anything is validated, and the
//! directory that relative paths in it are resolved against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::problems::ConfigError;

/// Prefix of environment overrides: `WEBMON__SECTION__KEY`.
pub const ENV_PREFIX: &str = "WEBMON";

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

    /// Settings from `file` alone: no environment overrides, so a `WEBMON__…` variable of the
    /// caller's shell cannot change them (what tests and benchmarks load).
    pub fn file_only(path: impl Into<PathBuf>) -> SettingsSource {
        SettingsSource {
            env: Some(Default::default()),
            ..SettingsSource::file(path)
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
                    return Err(ConfigError::single(
                        "(file)",
                        format!(
                            "{}: unknown settings format: name the file *.toml, *.yaml, *.yml or *.json",
                            path.display()
                        ),
                    ))
                }
            };
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::single("(file)", format!("cannot read {}: {e}", path.display()))
            })?;
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
            ConfigError::single("(file)", format!("{file}: {e}"))
        })?;
        merged
            .try_deserialize::<serde_json::Value>()
            .map_err(|e| ConfigError::single("(file)", format!("cannot read the settings: {e}")))
    }

    pub(crate) fn base_dir(&self) -> PathBuf {
        self.base_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| Path::new(".").to_path_buf())
    }
}
