//! Monitored targets: the `monitored_urls` list, in the original service's form plus the keys
//! this service adds.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::bytes::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::problems::{Problem, Problems};
use super::walk::{describe, resolve, show, Section};

use super::labels::{read_labels, Labels};
use super::verdicts::{read_target_verdicts, TargetVerdicts};

/// Default time between two checks of a target (the original service's default).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);
/// Longest configurable period: a target checked less than once a day is not monitored.
pub const MAX_PERIOD: Duration = Duration::from_secs(86_400);
/// Default bound on a whole check (the original service's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest configurable timeout of a check (which must also be less than its period).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default number of redirects followed before the check fails as `redirect`.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;
/// Highest configurable number of redirects.
pub const MAX_REDIRECTS_LIMIT: u32 = 30;
/// Default cap on body bytes read per check.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;
/// Highest configurable body cap: the checker holds up to this much per in-flight check.
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Headers that always carry credentials: never sent to another origin than the target's on
/// a redirect (as browsers and curl do).
pub const ALWAYS_SECRET_HEADERS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];
/// Compiled-program size limit for body patterns, so a pathological pattern cannot eat memory.
pub const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// A compiled body pattern that remembers its source text (for reports and comparisons). It
/// matches the body's bytes as they are (UTF-8 text matches as text), so no decoded copy of
/// the body is needed.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` with the size limit.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        let regex = regex::bytes::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.regex
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The set of status codes that count as up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl StatusSet {
    /// Whether `code` is expected.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }

    /// Parses `200-299`, `200`, or a comma-separated list of either.
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part, part),
            };
            let parse = |s: &str| {
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("{s:?} is not a status code from 100 to 599"))
            };
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            if lo > hi {
                return Err(format!("range {part:?} is backwards"));
            }
            ranges.push(lo..=hi);
        }
        if ranges.is_empty() {
            return Err("no status codes given".into());
        }
        Ok(StatusSet(ranges))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![200..=299])
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// One monitored target, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSettings {
    /// Stable id: the configured `id`, or a hash of the request's definition (method, URL,
    /// headers, body), so editing the timeout or the pattern keeps the target's history.
    pub id: String,
    /// The URL to check (http or https).
    pub url: Url,
    /// Time between two checks.
    pub period: Duration,
    /// Bound on the whole check: connect, TLS, redirects and body.
    pub timeout: Duration,
    /// The body must match this pattern.
    pub regexp: Option<Pattern>,
    /// The body must not match this pattern.
    pub negative_regexp: Option<Pattern>,
    /// HTTP method.
    pub method: Method,
    /// Extra request headers. Credentials among them (see [`TargetSettings::is_credential`])
    /// are marked sensitive, so `Debug` does not show their values.
    pub headers: HeaderMap,
    /// Configured headers the user marked secret (`secret_headers`), besides those that are
    /// always credentials ([`ALWAYS_SECRET_HEADERS`]).
    pub secret_headers: Vec<HeaderName>,
    /// Request body.
    pub body: Option<String>,
    /// Status codes that count as up.
    pub expected_status: StatusSet,
    /// Whether redirects are followed.
    pub follow_redirects: bool,
    /// How many redirects are followed at most.
    pub max_redirects: u32,
    /// Cap on body bytes read, in bytes.
    pub body_limit: u64,
    /// Extra CA certificates (PEM) trusted for this target, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How the sink judges this target's reports (`quorum`, `down_after`, `up_after`); the
    /// checker does not use them.
    pub verdicts: TargetVerdicts,
    /// Display name for people (status page, notifications); the URL when not set.
    pub name: Option<String>,
    /// Labels (`team`, `env`, anything) that routes, maintenance windows and pages select by.
    pub labels: Labels,
    /// Whether this target's incidents are notified (`notify = false` opts out).
    pub notify: bool,
    /// Whether the public status page shows this target.
    pub public: bool,
}

/// Who reads the targets: the checker opens their files, the sink (which only needs their
/// ids and verdict settings) does not, so its container needs no copy of a target's CA file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// The checker: files must be readable.
    Checker,
    /// The sink: files are not opened.
    Sink,
    /// A definition made through the sink's API (and read back by checkers from the targets
    /// topic): it names no file, since no file travels with it.
    Api,
}

impl TargetSettings {
    /// Whether the header `name` carries credentials: `Authorization`, `Cookie`,
    /// `Proxy-Authorization`, or one listed in `secret_headers`.
    pub fn is_credential(&self, name: &HeaderName) -> bool {
        ALWAYS_SECRET_HEADERS.contains(name) || self.secret_headers.contains(name)
    }
}

/// Reads the `monitored_urls` list. Each problem names the entry (`monitored_urls[2].timeout`).
pub(crate) fn read_targets(
    root: &mut Section<'_>,
    base_dir: &Path,
    reader: Reader,
    problems: &mut Problems,
) -> Vec<TargetSettings> {
    // A checker may have no target of its own: those made through the sink's API reach it on
    // the targets topic.
    let Some(items) = root.array("monitored_urls", problems) else {
        return Vec::new();
    };
    let mut targets = Vec::with_capacity(items.len());
    let mut ids: HashMap<String, String> = HashMap::new();
    for (path, value) in items {
        let Some(target) = read_target(path.clone(), value, base_dir, reader, problems) else {
            continue;
        };
        if let Some(first) = ids.insert(target.id.clone(), path.clone()) {
            problems.push(Problem::new(
                &path,
                format!(
                    "has the same target id {:?} as {first}: remove the duplicate or give one of them a distinct `id`",
                    target.id
                ),
            ));
        }
        targets.push(target);
    }
    targets
}

/// Reads one target definition made through the sink's API, or carried to the checkers on
/// the targets topic: the keys of a `monitored_urls` entry, every problem named by its key
/// (`timeout: 12s is not less than period 10s`). The `id` is derived as for the settings file
/// when the definition has none.
pub fn read_definition(value: &Value) -> Result<TargetSettings, Problems> {
    let mut problems = Problems::default();
    if !value.is_object() {
        problems.push(Problem::new(
            "",
            format!(
                "a target definition is a JSON object such as {{\"url\": \"https://example.com\"}}, not {}",
                describe(value)
            ),
        ));
        return Err(problems);
    }
    match read_target(
        String::new(),
        value,
        Path::new("."),
        Reader::Api,
        &mut problems,
    ) {
        Some(target) if problems.is_empty() => Ok(target),
        _ => Err(problems),
    }
}

fn read_target(
    path: String,
    value: &Value,
    base_dir: &Path,
    reader: Reader,
    problems: &mut Problems,
) -> Option<TargetSettings> {
    // A bare string is a URL with every default.
    if let Value::String(url) = value {
        let object = serde_json::json!({ "url": url });
        return read_target(path, &object, base_dir, reader, problems);
    }
    let before = problems.len();
    let mut s = Section::from_value(path, value, problems)?;

    let url = s
        .required_string("url", "the http:// or https:// URL to check", problems)
        .and_then(|text| parse_url(&text, &s.path_of("url"), problems));
    let period = s.duration_within("period", DEFAULT_PERIOD, MAX_PERIOD, problems);
    let timeout = s.duration_within("timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT, problems);
    if let (Some(period), Some(timeout)) = (period, timeout) {
        check_timeout_below_period(&s, period, timeout, problems);
    }
    let regexp = pattern(&mut s, "regexp", problems);
    let negative_regexp = pattern(&mut s, "negative_regexp", problems);
    let method = read_method(&mut s, problems);
    let mut headers = headers(&mut s, problems);
    let secret_headers = secret_headers(&mut s, &mut headers, problems);
    let body = s.string("body", problems);
    let expected_status = read_expected_status(&mut s, problems);
    let follow_redirects = s.bool("follow_redirects", true, problems);
    let max_redirects = s.integer(
        "max_redirects",
        i64::from(DEFAULT_MAX_REDIRECTS),
        0,
        i64::from(MAX_REDIRECTS_LIMIT),
        problems,
    ) as u32;
    let body_limit = s.size("body_limit", DEFAULT_BODY_LIMIT, MAX_BODY_LIMIT, problems);
    let ca_file = match reader {
        Reader::Checker => s.readable_file("ca_file", base_dir, problems),
        Reader::Sink => s.string("ca_file", problems).map(|f| resolve(base_dir, &f)),
        Reader::Api => {
            if s.string("ca_file", problems).is_some() {
                problems.push(Problem::new(
                    &s.path_of("ca_file"),
                    "names a file on the checkers' hosts, which a target made through the API cannot rely on: add the CA to the checkers' trust settings or define this target in the settings file",
                ));
            }
            None
        }
    };
    let verdicts = read_target_verdicts(&mut s, problems);
    let name = read_name(&mut s, problems);
    let labels = read_labels(&mut s, problems);
    let notify = s.bool("notify", true, problems);
    let public = s.bool("public", false, problems);
    let configured_id = read_id(&mut s, problems);
    s.finish(problems);

    if problems.len() > before {
        return None;
    }
    let url = url?;
    let id = configured_id.unwrap_or_else(|| derived_id(&method, &url, &headers, body.as_deref()));
    Some(TargetSettings {
        id,
        url,
        period: period?,
        timeout: timeout?,
        regexp,
        negative_regexp,
        method,
        headers,
        secret_headers,
        body,
        expected_status,
        follow_redirects,
        max_redirects,
        body_limit,
        ca_file,
        verdicts,
        name,
        labels,
        notify,
        public,
    })
}

/// Most bytes of a display name.
pub const MAX_NAME_LEN: usize = 200;

/// Reads the display `name`: 1 to [`MAX_NAME_LEN`] bytes without control characters.
fn read_name(s: &mut Section<'_>, problems: &mut Problems) -> Option<String> {
    let name = s.string("name", problems)?;
    let bad =
        name.trim().is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control);
    if bad {
        problems.push(Problem::new(
            &s.path_of("name"),
            format!(
                "a display name is 1 to {MAX_NAME_LEN} bytes of text without control characters"
            ),
        ));
        return None;
    }
    Some(name)
}

/// A check must end before the next one of its target is due.
fn check_timeout_below_period(
    s: &Section<'_>,
    period: Duration,
    timeout: Duration,
    problems: &mut Problems,
) {
    if timeout >= period {
        problems.push(Problem::new(
            &s.path_of("timeout"),
            format!(
                "{} is not less than period {}: a check must end before the next one is due",
                show(timeout),
                show(period)
            ),
        ));
    }
}

/// The HTTP method (default GET), in any case.
fn read_method(s: &mut Section<'_>, problems: &mut Problems) -> Method {
    let Some(text) = s.string("method", problems) else {
        return Method::GET;
    };
    match Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            problems.push(Problem::new(
                &s.path_of("method"),
                format!("{text:?} is not an HTTP method (GET, HEAD, POST…)"),
            ));
            Method::GET
        }
    }
}

/// The status codes that count as up: a list of codes and ranges, one code, or a
/// comma-separated string of either (default 200-299).
fn read_expected_status(s: &mut Section<'_>, problems: &mut Problems) -> StatusSet {
    let Some(value) = s.raw("expected_status") else {
        return StatusSet::default();
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => describe(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => describe(other),
    };
    StatusSet::parse(&text).unwrap_or_else(|why| {
        problems.push(Problem::new(
            &s.path_of("expected_status"),
            format!("{why}; use codes and ranges such as [\"200-299\", 301]"),
        ));
        StatusSet::default()
    })
}

/// The configured `id`, if any: 1 to [`MAX_ID_CHARS`](crate::report::MAX_ID_CHARS)
/// characters, counted in characters as the report's bound is.
fn read_id(s: &mut Section<'_>, problems: &mut Problems) -> Option<String> {
    let id = s.string("id", problems)?;
    let max = crate::report::MAX_ID_CHARS;
    if id.trim().is_empty() || id.chars().count() > max {
        problems.push(Problem::new(
            &s.path_of("id"),
            format!("must be 1 to {max} characters"),
        ));
    }
    Some(id)
}

fn parse_url(text: &str, path: &str, problems: &mut Problems) -> Option<Url> {
    match Url::parse(text.trim()) {
        Ok(url) if url.as_str().chars().count() > crate::report::MAX_URL_CHARS => {
            problems.push(Problem::new(
                path,
                format!(
                    "is {} characters once normalised: reports allow at most {}",
                    url.as_str().chars().count(),
                    crate::report::MAX_URL_CHARS
                ),
            ));
            None
        }
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            problems.push(Problem::new(
                path,
                format!(
                    "{text:?} has scheme {:?}: only http and https URLs can be checked",
                    url.scheme()
                ),
            ));
            None
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => {
            problems.push(Problem::new(path, format!("{text:?} has no host")));
            None
        }
        Ok(url) => Some(url),
        Err(e) => {
            problems.push(Problem::new(
                path,
                format!("{text:?} is not a valid URL ({e}): write it in full, e.g. https://example.com/health"),
            ));
            None
        }
    }
}

fn pattern(s: &mut Section<'_>, key: &str, problems: &mut Problems) -> Option<Pattern> {
    let text = s.string(key, problems)?;
    let chars = text.chars().count();
    if chars > crate::report::MAX_PATTERN_CHARS {
        problems.push(Problem::new(
            &s.path_of(key),
            format!(
                "is {chars} characters: reports allow at most {}",
                crate::report::MAX_PATTERN_CHARS
            ),
        ));
        return None;
    }
    match Pattern::new(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            problems.push(Problem::new(
                &s.path_of(key),
                format!("{text:?} is not a valid regular expression: {detail}"),
            ));
            None
        }
    }
}

/// Reads a `headers` table: every key is a header name, every value its value.
pub(crate) fn headers(s: &mut Section<'_>, problems: &mut Problems) -> HeaderMap {
    let mut map = HeaderMap::new();
    // Header names are free-form: every key of the section is a header.
    let section = s.section("headers", problems);
    for (name, value) in section.entries() {
        let header_path = section.path_of(name);
        let value_text = match value {
            Value::String(v) => v.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                problems.push(Problem::new(
                    &header_path,
                    format!("expected a string, found {}", describe(other)),
                ));
                continue;
            }
        };
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value_text),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            (Err(_), _) => problems.push(Problem::new(
                &header_path,
                format!("{name:?} is not a valid header name"),
            )),
            (_, Err(_)) => problems.push(Problem::new(
                &header_path,
                "the value holds characters a header cannot carry (control characters, newlines)",
            )),
        }
    }
    map
}

/// Reads `secret_headers`, the names of configured headers that carry credentials, and marks
/// every credential's value sensitive. A name that is not among the target's headers is
/// refused: it is most likely a typo that would leave the real secret unmarked.
fn secret_headers(
    s: &mut Section<'_>,
    headers: &mut HeaderMap,
    problems: &mut Problems,
) -> Vec<HeaderName> {
    let path = s.path_of("secret_headers");
    let mut names = Vec::new();
    for (i, text) in s
        .string_list("secret_headers", problems)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match HeaderName::from_bytes(text.trim().as_bytes()) {
            Ok(name) if headers.contains_key(&name) => names.push(name),
            Ok(_) => problems.push(Problem::new(
                &format!("{path}[{i}]"),
                format!("{text:?} is not one of this target's headers: list names from `headers`"),
            )),
            Err(_) => problems.push(Problem::new(
                &format!("{path}[{i}]"),
                format!("{text:?} is not a valid header name"),
            )),
        }
    }
    for (name, value) in headers.iter_mut() {
        if ALWAYS_SECRET_HEADERS.contains(name) || names.contains(name) {
            value.set_sensitive(true);
        }
    }
    names
}

/// A stable id from what defines the request: method, URL (normalised by the URL parser:
/// lower-case host, default port dropped), headers and body. 16 hex digits.
fn derived_id(method: &Method, url: &Url, headers: &HeaderMap, body: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(url.as_str().as_bytes());
    let mut pairs: Vec<(String, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes()))
        .collect();
    pairs.sort();
    for (name, value) in pairs {
        hasher.update(b"\n");
        hasher.update(name.as_bytes());
        hasher.update(b":");
        hasher.update(value);
    }
    if let Some(body) = body {
        hasher.update(b"\n\n");
        hasher.update(body.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_parse_codes_and_ranges() {
        let set = StatusSet::parse("200-299, 301,404").expect("valid");
        assert!(set.contains(204) && set.contains(301) && set.contains(404));
        assert!(!set.contains(302));
        assert_eq!(set.to_string(), "200-299,301,404");
        assert!(StatusSet::parse("299-200").is_err());
        assert!(StatusSet::parse("99").is_err());
        assert!(StatusSet::parse("").is_err());
    }

    #[test]
    fn derived_ids_ignore_url_spelling_but_not_the_request() {
        let a = Url::parse("HTTPS://Example.COM:443/").expect("url");
        let b = Url::parse("https://example.com").expect("url");
        let h = HeaderMap::new();
        assert_eq!(
            derived_id(&Method::GET, &a, &h, None),
            derived_id(&Method::GET, &b, &h, None)
        );
        assert_ne!(
            derived_id(&Method::GET, &a, &h, None),
            derived_id(&Method::HEAD, &a, &h, None)
        );
        assert_eq!(derived_id(&Method::GET, &a, &h, None).len(), 16);
    }
}
