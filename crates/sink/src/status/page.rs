//! The status page's HTML and the badges' SVG, rendered by minijinja from the templates in
//! `templates/` with HTML escaping on for every template, so a target's name or label can
//! never become markup. A target's 90 days are one SVG whose consecutive equal days are one
//! `rect` (with a `<title>` naming the days, their verdict and uptime, and `data-days`
//! counting them), which keeps the page of 10,000 targets a few megabytes.

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment};
use monitor_core::settings::StatusSettings;
use serde::Serialize;

use super::rollups::IncidentRow;
use super::snapshot::{Day, DayClass, Snapshot, TargetStatus, Window};

/// Most incidents listed in the history.
pub const HISTORY_SHOWN: usize = 50;
/// Most group links in the page's navigation.
pub const MAX_GROUP_LINKS: usize = 100;
/// Most targets on one page; more are on further pages (`?page=2`), so that a page of 10,000
/// targets stays a few megabytes and renders in milliseconds.
pub const TARGETS_PER_PAGE: usize = 1000;

/// The templates, parsed once, and the page's settings.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    settings: StatusSettings,
}

impl Default for Templates {
    fn default() -> Templates {
        Templates::new(StatusSettings::default())
    }
}

impl Templates {
    /// The templates, for pages of these settings.
    pub fn new(settings: StatusSettings) -> Templates {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_keep_trailing_newline(false);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source) in [
            ("page.html", include_str!("templates/page.html")),
            ("badge.svg", include_str!("templates/badge.svg")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                // The templates are part of the binary: a broken one is caught by the tests.
                tracing::error!(template = name, error = %e, "a status page template does not parse");
            }
        }
        Templates { env, settings }
    }
}

/// Which page: of every target or of a group, and which of its pages (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The group; `None` for every public target.
    pub group: Option<Group>,
    /// The page, from 1.
    pub number: usize,
}

/// Which targets a page shows: those with one label's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// The label's name.
    pub label: String,
    /// Its value.
    pub value: String,
}

impl Group {
    /// Whether `target` belongs to it.
    pub fn has(&self, target: &TargetStatus) -> bool {
        target.labels.get(&self.label) == Some(&self.value)
    }
}

impl Templates {
    /// The page `key`; `None` when it has no target (an unknown group, a page past the last).
    pub fn page(
        &self,
        snapshot: &Snapshot,
        key: &PageKey,
    ) -> Result<Option<String>, minijinja::Error> {
        let group = key.group.as_ref();
        let shown: Vec<&TargetStatus> = snapshot
            .targets
            .iter()
            .filter(|t| group.is_none_or(|g| g.has(t)))
            .collect();
        let pages = shown.len().div_ceil(TARGETS_PER_PAGE);
        if key.number == 0 || key.number > pages.max(1) || (pages == 0 && group.is_some()) {
            return Ok(None);
        }
        let names = |id: &str| {
            snapshot
                .target(id)
                .map_or(id.to_string(), |t| t.name.clone())
        };
        let incidents = |rows: &[IncidentRow], limit: usize| -> Vec<IncidentView> {
            rows.iter()
                .filter(|i| {
                    snapshot
                        .target(&i.target_id)
                        .is_some_and(|t| group.is_none_or(|g| g.has(t)))
                })
                .take(limit)
                .map(|i| IncidentView::of(i, names(&i.target_id)))
                .collect()
        };
        let on_page = shown
            .iter()
            .skip((key.number - 1) * TARGETS_PER_PAGE)
            .take(TARGETS_PER_PAGE);
        let view = PageView {
            title: &self.settings.title,
            heading: group.map(|g| format!("{}: {}", g.label, g.value)),
            refresh_s: self.settings.page_refresh.as_secs(),
            generated_at: when(snapshot.generated_at),
            total: shown.len(),
            counts: StateCounts::of(&shown),
            groups: groups(snapshot),
            open: incidents(&open_of(&shown), usize::MAX),
            history: incidents(&snapshot.history, HISTORY_SHOWN),
            pages: (pages > 1).then(|| (1..=pages).map(|n| (n, n == key.number)).collect()),
            targets: on_page.map(|t| TargetView::of(t)).collect(),
        };
        self.env.get_template("page.html")?.render(view).map(Some)
    }

    /// A badge reading `label | value` on `colour`.
    pub fn badge(
        &self,
        label: &str,
        value: &str,
        colour: &str,
    ) -> Result<String, minijinja::Error> {
        let (lw, vw) = (text_width(label), text_width(value));
        self.env
            .get_template("badge.svg")?
            .render(minijinja::context! {
                label, value, colour,
                width => lw + vw, label_width => lw, value_width => vw,
                label_x => lw / 2, value_x => lw + vw / 2,
            })
    }
}

/// The open incidents of `targets`.
fn open_of(targets: &[&TargetStatus]) -> Vec<IncidentRow> {
    let mut open: Vec<IncidentRow> = targets
        .iter()
        .flat_map(|t| t.open_incidents.iter().cloned())
        .collect();
    open.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
    open
}

/// A badge's text width in pixels, with padding (Verdana 11 px, about 7 px a character).
fn text_width(text: &str) -> usize {
    text.chars().count() * 7 + 12
}

/// A time as shown.
fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[derive(Serialize)]
struct PageView<'a> {
    title: &'a str,
    heading: Option<String>,
    refresh_s: u64,
    generated_at: String,
    total: usize,
    counts: StateCounts,
    groups: Vec<GroupLink>,
    /// Page numbers, and whether each is this one; `None` when all fit on one.
    pages: Option<Vec<(usize, bool)>>,
    open: Vec<IncidentView>,
    history: Vec<IncidentView>,
    targets: Vec<TargetView<'a>>,
}

/// How many shown targets are in each state.
#[derive(Serialize, Default)]
struct StateCounts {
    up: usize,
    degraded: usize,
    down: usize,
    unknown: usize,
}

impl StateCounts {
    fn of(targets: &[&TargetStatus]) -> StateCounts {
        let mut c = StateCounts::default();
        for t in targets {
            match t.state.as_str() {
                "up" => c.up += 1,
                "degraded" => c.degraded += 1,
                "down" => c.down += 1,
                _ => c.unknown += 1,
            }
        }
        c
    }
}

#[derive(Serialize)]
struct GroupLink {
    label: String,
    value: String,
}

/// The groups of the public targets, by label and value, at most [`MAX_GROUP_LINKS`].
fn groups(snapshot: &Snapshot) -> Vec<GroupLink> {
    let mut all = std::collections::BTreeSet::new();
    for t in &snapshot.targets {
        for (label, value) in &t.labels {
            all.insert((label.as_str(), value.as_str()));
        }
    }
    all.into_iter()
        .take(MAX_GROUP_LINKS)
        .map(|(label, value)| GroupLink {
            label: label.to_string(),
            value: value.to_string(),
        })
        .collect()
}

#[derive(Serialize)]
struct IncidentView {
    target: String,
    kind: String,
    opened_at: String,
    closed_at: Option<String>,
    maintenance: bool,
    cause: Option<String>,
}

impl IncidentView {
    fn of(i: &IncidentRow, target: String) -> IncidentView {
        IncidentView {
            target,
            kind: i.kind.clone(),
            opened_at: when(i.opened_at),
            closed_at: i.closed_at.map(when),
            maintenance: i.maintenance,
            cause: i.cause.clone(),
        }
    }
}

#[derive(Serialize)]
struct TargetView<'a> {
    id: &'a str,
    name: &'a str,
    state: &'a str,
    since: Option<String>,
    uptime: Vec<(&'static str, String)>,
    p50: String,
    p95: String,
    cert: Option<String>,
    summary: String,
    bars: Vec<Bar>,
}

impl<'a> TargetView<'a> {
    fn of(t: &'a TargetStatus) -> TargetView<'a> {
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0} ms"));
        TargetView {
            id: &t.id,
            name: &t.name,
            state: &t.state,
            since: t.since.map(when),
            uptime: Window::ALL
                .iter()
                .map(|w| (w.as_str(), percent(t.uptime.of(*w))))
                .collect(),
            p50: ms(t.response_ms.p50),
            p95: ms(t.response_ms.p95),
            cert: t.cert_not_after.map(|c| c.format("%Y-%m-%d").to_string()),
            summary: summary(&t.days),
            bars: bars(&t.days),
        }
    }
}

/// An uptime as shown.
pub fn percent(uptime: Option<f64>) -> String {
    uptime.map_or("no data".into(), |u| format!("{u:.2} %"))
}

/// One `rect` of the bars: consecutive days of the same verdict and uptime.
#[derive(Serialize, Debug, PartialEq)]
struct Bar {
    x: usize,
    days: usize,
    class: DayClass,
    title: String,
}

/// The days as bars, equal neighbours merged.
fn bars(days: &[Day]) -> Vec<Bar> {
    let mut bars: Vec<(usize, &Day, &Day)> = Vec::new();
    for (x, day) in days.iter().enumerate() {
        match bars.last_mut() {
            Some((_, first, last)) if first.class == day.class && first.uptime == day.uptime => {
                *last = day;
            }
            _ => bars.push((x, day, day)),
        }
    }
    let count = |first: &Day, last: &Day| (last.date - first.date).num_days() as usize + 1;
    bars.into_iter()
        .map(|(x, first, last)| {
            let days = count(first, last);
            let span = if days == 1 {
                first.date.to_string()
            } else {
                format!("{} to {} ({days} days)", first.date, last.date)
            };
            let uptime = match first.uptime {
                Some(u) => format!(", uptime {u:.2} %"),
                None => String::new(),
            };
            Bar {
                x,
                days,
                class: first.class,
                title: format!("{span}: {}{uptime}", first.class.text()),
            }
        })
        .collect()
}

/// The bars in words: days per verdict.
fn summary(days: &[Day]) -> String {
    let classes = [
        DayClass::Up,
        DayClass::Degraded,
        DayClass::Down,
        DayClass::Maintenance,
        DayClass::NoData,
    ];
    let parts: Vec<String> = classes
        .iter()
        .filter_map(|c| {
            let n = days.iter().filter(|d| d.class == *c).count();
            (n > 0).then(|| format!("{n} {}", c.text()))
        })
        .collect();
    format!("Last {} days: {}", days.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn day(n: u32, class: DayClass, uptime: Option<f64>) -> Day {
        Day {
            date: NaiveDate::from_ymd_opt(2026, 11, n).unwrap_or_default(),
            class,
            uptime,
        }
    }

    #[test]
    fn equal_neighbouring_days_are_one_bar_that_names_them() {
        let days = [
            day(1, DayClass::Up, Some(100.0)),
            day(2, DayClass::Up, Some(100.0)),
            day(3, DayClass::Down, Some(90.0)),
            day(4, DayClass::Maintenance, None),
        ];
        let b = bars(&days);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].x, b[0].days), (0, 2));
        assert_eq!(
            b[0].title,
            "2026-11-01 to 2026-11-02 (2 days): up, uptime 100.00 %"
        );
        assert_eq!(b[2].title, "2026-11-04: maintenance");
        assert_eq!(b.iter().map(|b| b.days).sum::<usize>(), days.len());
        assert_eq!(summary(&days), "Last 4 days: 2 up, 1 down, 1 maintenance");
    }

    #[test]
    fn names_are_escaped_in_badges() {
        let svg = Templates::default()
            .badge("<b>", "a&b", "#000")
            .unwrap_or_default();
        assert!(
            svg.contains("&lt;b&gt;") && svg.contains("a&amp;b"),
            "{svg}"
        );
    }
}
