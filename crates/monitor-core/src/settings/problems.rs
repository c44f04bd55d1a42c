//! What is wrong with the settings: every [`Problem`] found, each with the path that names it
//! (`monitored_urls[2].timeout`), gathered in [`Problems`] and returned at once as a
//! [`ConfigError`], so a person fixes a settings file in one pass instead of one error a run.

use std::fmt;

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

impl ConfigError {
    /// A single problem at `path`, for what stops loading before any value is read (an
    /// unreadable file).
    pub(crate) fn single(path: &str, message: String) -> ConfigError {
        let mut problems = Problems::default();
        problems.push(Problem::new(path, message));
        ConfigError { problems }
    }
}

impl From<Problems> for ConfigError {
    fn from(problems: Problems) -> Self {
        ConfigError { problems }
    }
}
