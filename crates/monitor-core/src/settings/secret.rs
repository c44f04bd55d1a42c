//! Passwords and keys in the settings: [`Secret`] keeps them out of `Debug` output and logs
//! (and wipes them from memory when dropped, through the `secrecy` crate), and
//! [`read_password`] takes one from the settings or from a file beside them.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::problems::{Problem, Problems};
use super::walk::Section;

/// A password or key: kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(SecretString::from(value))
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Settings compare equal when their secrets do (a reload tells a changed password apart).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

/// A password from `password` or from the file named by `password_file` (one line, trailing
/// newline removed). At most one of the two may be set; one must be when `required`.
pub(crate) fn read_password(
    s: &mut Section<'_>,
    base_dir: &Path,
    required: bool,
    problems: &mut Problems,
) -> Option<Secret> {
    read_secret(s, "password", base_dir, required, problems)
}

/// A secret from `key` (set through the environment, `WEBMON__...`) or from the file named
/// by `<key>_file` (one line, trailing newline removed). At most one of the two may be set;
/// one must be when `required`.
pub(crate) fn read_secret(
    s: &mut Section<'_>,
    key: &str,
    base_dir: &Path,
    required: bool,
    problems: &mut Problems,
) -> Option<Secret> {
    let file_key = format!("{key}_file");
    let inline = s.string(key, problems);
    let file = s.readable_file(&file_key, base_dir, problems);
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                &s.path_of(&file_key),
                format!("give either {key} or {file_key}, not both"),
            ));
            None
        }
        (Some(p), None) => Some(Secret::new(p)),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(Secret::new(text.trim_end_matches(['\r', '\n']).to_string())),
            Err(e) => {
                problems.push(Problem::new(
                    &s.path_of(&file_key),
                    format!("cannot read {}: {e}", path.display()),
                ));
                None
            }
        },
        (None, None) => {
            if !required {
                return None;
            }
            problems.push(Problem::new(
                &s.path_of(key),
                format!("is missing: set {file_key}, or the {key} through the environment"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_hidden_from_debug_and_compares_by_value() {
        let a = Secret::new("hunter2".into());
        assert_eq!(format!("{a:?}"), "Secret(***)");
        assert_eq!(a.expose(), "hunter2");
        assert_eq!(a.clone(), Secret::new("hunter2".into()));
        assert_ne!(a, Secret::new("hunter3".into()));
    }
}
