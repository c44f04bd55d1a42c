//! The sink's HTTP side: `sink.http_listen` (the targets API and the status page) and
//! `[sink.api]`, the bearer tokens the API accepts. A token comes from the environment
//! (`token_env`, the variable's name) or a file (`token_file`), so no settings file needs to
//! hold one; `token` itself is accepted for environment overrides. Each token has a `name`,
//! which the audit records as who made a change, and a `role`: `read` lists and reads,
//! `admin` also changes targets and asks for checks.

use std::path::Path;

use super::problems::{Problem, Problems};
use super::secret::{read_secret, Secret};
use super::walk::Section;

/// Default address of the targets API and the status page.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Shortest token accepted: a shorter one can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// Most tokens configured.
pub const MAX_TOKENS: usize = 100;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// List and read targets.
    Read,
    /// Also create, change and delete targets and ask for checks.
    Admin,
}

impl Role {
    /// The role's name in the settings and the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One bearer token.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Who holds it: recorded with every change made with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token itself.
    pub token: Secret,
}

/// `[sink.api]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiSettings {
    /// The tokens accepted; with none, the API answers every request to `/api/v1/targets`
    /// with 401 (the status page and its JSON stay public).
    pub tokens: Vec<ApiToken>,
}

/// `sink.http_listen`: an `IP:PORT`, [`DEFAULT_HTTP_LISTEN`] when absent, `None` for `off`.
pub(crate) fn read_http_listen(s: &mut Section<'_>, problems: &mut Problems) -> Option<String> {
    let Some(text) = s.string("http_listen", problems) else {
        return Some(DEFAULT_HTTP_LISTEN.to_string());
    };
    let text = text.trim();
    if text == "off" {
        return None;
    }
    if text.parse::<std::net::SocketAddr>().is_err() {
        problems.push(Problem::new(
            &s.path_of("http_listen"),
            format!(
                "{text:?} is not an address: write IP:PORT, e.g. 0.0.0.0:8080, or \"off\" to serve neither the API nor the status page"
            ),
        ));
    }
    Some(text.to_string())
}

/// Reads `[sink.api]`.
pub(crate) fn read_api_section(
    parent: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> ApiSettings {
    let mut s = parent.section("api", problems);
    let mut tokens: Vec<ApiToken> = Vec::new();
    for (path, value) in s.array("tokens", problems).unwrap_or_default() {
        let Some(mut t) = Section::from_value(path.clone(), value, problems) else {
            continue;
        };
        let token = read_token(&mut t, base_dir, problems);
        t.finish(problems);
        let Some(token) = token else { continue };
        // Two tokens with one value could not be told apart in the audit.
        if tokens.iter().any(|b| b.token == token.token) {
            problems.push(Problem::new(
                &path,
                "has the same token as an earlier entry: give each holder a token of its own",
            ));
        }
        tokens.push(token);
    }
    if tokens.len() > MAX_TOKENS {
        problems.push(Problem::new(
            &s.path_of("tokens"),
            format!("has {} tokens: at most {MAX_TOKENS}", tokens.len()),
        ));
    }
    s.finish(problems);
    ApiSettings { tokens }
}

fn read_token(t: &mut Section<'_>, base_dir: &Path, problems: &mut Problems) -> Option<ApiToken> {
    let before = problems.len();
    let name = t.required_string(
        "name",
        "who holds the token, recorded in the audit",
        problems,
    );
    let role = match t.string("role", problems).as_deref() {
        None | Some("read") => Role::Read,
        Some("admin") => Role::Admin,
        Some(other) => {
            problems.push(Problem::new(
                &t.path_of("role"),
                format!("{other:?} is not a role: use \"read\" or \"admin\""),
            ));
            Role::Read
        }
    };
    let token = read_token_value(t, base_dir, problems);
    if let Some(token) = &token {
        if token.expose().len() < MIN_TOKEN_LEN || token.expose().chars().any(char::is_whitespace) {
            problems.push(Problem::new(
                &t.path_of("token"),
                format!("a token is at least {MIN_TOKEN_LEN} characters without spaces: make one with `openssl rand -hex 32`"),
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(ApiToken {
        name: name?,
        role,
        token: token?,
    })
}

/// The token from the variable named by `token_env`, or from `token` / `token_file`.
fn read_token_value(
    t: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Secret> {
    let Some(var) = t.string("token_env", problems) else {
        return read_secret(t, "token", base_dir, true, problems);
    };
    if t.has("token") || t.has("token_file") {
        problems.push(Problem::new(
            &t.path_of("token_env"),
            "give one of token_env, token_file or token, not several",
        ));
        return None;
    }
    match std::env::var(&var) {
        Ok(value) => Some(Secret::new(
            value.trim_end_matches(['\r', '\n']).to_string(),
        )),
        Err(_) => {
            problems.push(Problem::new(
                &t.path_of("token_env"),
                format!("the environment variable {var:?} is not set (or not UTF-8): set it to the token"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(tree: serde_json::Value) -> (ApiSettings, Problems) {
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);
        let api = read_api_section(&mut root, Path::new("."), &mut problems);
        (api, problems)
    }

    #[test]
    fn tokens_come_inline_or_from_the_environment_with_their_role() {
        std::env::set_var("WEBMON_TEST_API_TOKEN_A", "0123456789abcdef0123\n");
        let (api, problems) = read(serde_json::json!({"api": {"tokens": [
            {"name": "ci", "role": "admin", "token_env": "WEBMON_TEST_API_TOKEN_A"},
            {"name": "grafana", "token": "fedcba9876543210fedc"},
        ]}}));
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(api.tokens.len(), 2);
        assert_eq!(api.tokens[0].role, Role::Admin);
        assert_eq!(api.tokens[0].token.expose(), "0123456789abcdef0123");
        assert_eq!(api.tokens[1].role, Role::Read);
    }

    #[test]
    fn short_missing_and_shared_tokens_are_refused_by_path() {
        let (_, problems) = read(serde_json::json!({"api": {"tokens": [
            {"name": "a", "token": "short"},
            {"name": "b", "role": "root", "token": "0123456789abcdef0123"},
            {"name": "c", "token_env": "WEBMON_TEST_API_TOKEN_UNSET"},
            {"name": "d", "token": "0123456789abcdef0123"},
            {"name": "e", "token": "0123456789abcdef0123"},
        ]}}));
        let text = problems.to_string();
        assert!(
            text.contains("api.tokens[0].token: a token is at least 16"),
            "{text}"
        );
        assert!(
            text.contains("api.tokens[1].role: \"root\" is not a role"),
            "{text}"
        );
        assert!(
            text.contains("api.tokens[2].token_env: the environment variable"),
            "{text}"
        );
        assert!(text.contains("api.tokens[4]: has the same token"), "{text}");
        assert!(
            !text.contains("0123456789abcdef0123"),
            "a token appeared: {text}"
        );
    }
}
