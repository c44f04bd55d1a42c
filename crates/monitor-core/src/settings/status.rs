//! `[sink.status]`: the public status page's title and how often the page reloads itself in
//! the browser. Which targets it shows is each target's `public`; what it shows needs no
//! setting.

use std::time::Duration;

use super::problems::{Problem, Problems};
use super::walk::Section;

/// Default `sink.status.title`.
pub const DEFAULT_STATUS_TITLE: &str = "Status";
/// Longest `sink.status.title`, in characters.
pub const MAX_STATUS_TITLE_CHARS: usize = 100;
/// Default `sink.status.page_refresh`.
pub const DEFAULT_PAGE_REFRESH: Duration = Duration::from_secs(60);
/// Shortest `sink.status.page_refresh`: every open page reloads this often.
pub const MIN_PAGE_REFRESH: Duration = Duration::from_secs(10);
/// Longest `sink.status.page_refresh`.
pub const MAX_PAGE_REFRESH: Duration = Duration::from_secs(3600);

/// The `[sink.status]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    /// The page's title and heading.
    pub title: String,
    /// How often the page reloads itself (`<meta http-equiv="refresh">`).
    pub page_refresh: Duration,
}

impl Default for StatusSettings {
    fn default() -> StatusSettings {
        StatusSettings {
            title: DEFAULT_STATUS_TITLE.to_string(),
            page_refresh: DEFAULT_PAGE_REFRESH,
        }
    }
}

/// Reads `[sink.status]` from the `sink` section.
pub(crate) fn read_status_section(
    sink: &mut Section<'_>,
    problems: &mut Problems,
) -> StatusSettings {
    let mut s = sink.section("status", problems);
    let d = StatusSettings::default();
    let title = s.string("title", problems).unwrap_or(d.title);
    if title.trim().is_empty() || title.chars().count() > MAX_STATUS_TITLE_CHARS {
        problems.push(Problem::new(
            &s.path_of("title"),
            format!("{title:?}: give a title of 1 to {MAX_STATUS_TITLE_CHARS} characters"),
        ));
    }
    let page_refresh = s
        .duration_within("page_refresh", d.page_refresh, MAX_PAGE_REFRESH, problems)
        .unwrap_or(d.page_refresh);
    if page_refresh < MIN_PAGE_REFRESH {
        problems.push(Problem::new(
            &s.path_of("page_refresh"),
            format!("{page_refresh:?} is below {MIN_PAGE_REFRESH:?}: every open page reloads this often"),
        ));
    }
    s.finish(problems);
    StatusSettings {
        title,
        page_refresh,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn read(status: Value) -> (StatusSettings, Problems) {
        let tree = json!({ "sink": { "status": status } });
        let mut problems = Problems::default();
        let mut root = Section::root(&tree, &mut problems);
        let mut sink = root.section("sink", &mut problems);
        (read_status_section(&mut sink, &mut problems), problems)
    }

    #[test]
    fn the_title_and_refresh_default_and_are_bounded() {
        let (s, p) = read(json!({}));
        assert_eq!((s, p.len()), (StatusSettings::default(), 0));
        let (s, p) = read(json!({ "title": "Acme status", "page_refresh": "2m" }));
        assert_eq!(s.title, "Acme status");
        assert_eq!((s.page_refresh, p.len()), (Duration::from_secs(120), 0));
        let (_, p) = read(json!({ "title": "", "page_refresh": "1s" }));
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
