//! The public status page end to end: reports of two regions over three days (an outage, a
//! degraded period, an outage inside a maintenance window, response times in known ranges)
//! for public targets and one that is not, through a real broker into a real PostgreSQL, a
//! sink in this process serving its HTTP side on port 0. The JSON and the badges are checked
//! against what the verdicts say (read from `verdicts_by_hour`, never hard-coded), and the
//! page is loaded in headless Chromium: each public target with its state and 90 days of
//! bars, the one not public nowhere.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use monitor_core::report::to_micros;
use monitor_core::testing::http_get;
use monitor_core::Status;
use serde_json::Value;
use sqlx::PgPool;
use support::notify::{Fixture, WITHIN};
use support::{slot_report, Message, RunningSink};
use tokio::time::Instant;

/// The regions reporting.
const REGIONS: [&str; 2] = ["eu-west", "us-east"];
/// Seconds between slots.
const PERIOD_S: i64 = 1200;
/// Slots of every target: three days.
const SLOTS: i64 = 216;
/// `web` is down everywhere in these slots.
const WEB_DOWN: std::ops::Range<i64> = 100..112;
/// `shop` is down in one region in these slots: degraded.
const SHOP_DEGRADED: std::ops::Range<i64> = 40..52;
/// `api` is down everywhere in these slots, all inside its maintenance window.
const API_DOWN: std::ops::Range<i64> = 150..160;
/// The maintenance window of `api`, in slots.
const API_WINDOW: (i64, i64) = (148, 165);

/// A target of the test: id, name, labels, public, response times (ms) from.
struct Target {
    id: &'static str,
    name: &'static str,
    team: &'static str,
    public: bool,
    fastest_ms: f64,
}

const TARGETS: [Target; 4] = [
    Target {
        id: "web",
        name: "Web site",
        team: "web",
        public: true,
        fastest_ms: 100.0,
    },
    Target {
        id: "shop",
        name: "Shop",
        team: "web",
        public: true,
        fastest_ms: 200.0,
    },
    Target {
        id: "api",
        name: "API <&> \"v2\"",
        team: "api",
        public: true,
        fastest_ms: 300.0,
    },
    Target {
        id: "secret",
        name: "Back office",
        team: "ops",
        public: false,
        fastest_ms: 50.0,
    },
];

/// The page's title (`sink.status.title`).
const TITLE: &str = "Example & Co";

/// Response times of a target spread over 40 % above its fastest.
const SPREAD: f64 = 0.4;

/// The first slot: three days back, on whole seconds.
fn start() -> DateTime<Utc> {
    let now = to_micros(Utc::now()) - TimeDelta::seconds(SLOTS * PERIOD_S);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// What `region` finds of `target` at slot `k`.
fn status(target: &str, region: usize, k: i64) -> Status {
    let down = match target {
        "web" => WEB_DOWN.contains(&k),
        "shop" => region == 1 && SHOP_DEGRADED.contains(&k),
        "api" => API_DOWN.contains(&k),
        _ => false,
    };
    if down {
        Status::Down
    } else {
        Status::Up
    }
}

/// Every report, slot by slot.
fn messages(start: DateTime<Utc>) -> Vec<Message> {
    let mut out = Vec::new();
    for k in 0..SLOTS {
        for t in &TARGETS {
            for (i, region) in REGIONS.iter().enumerate() {
                let mut r = slot_report(t.id, region, start, 0, status(t.id, i, k));
                r.scheduled_at = start + TimeDelta::seconds(k * PERIOD_S);
                r.started_at = r.scheduled_at;
                r.report_id = monitor_core::report::report_id(region, t.id, r.scheduled_at);
                r.period_s = PERIOD_S as f64;
                r.timeout_s = 10.0;
                r.response_time_ms = Some(t.fastest_ms * (1.0 + SPREAD * (k % 10) as f64 / 10.0));
                r.tls_cert_not_after = Some(start + TimeDelta::days(60));
                out.push((Some(t.id.as_bytes().to_vec()), Some(r.to_json())));
            }
        }
    }
    out
}

/// The settings file: the four targets, and the maintenance window of `api`.
fn settings(start: DateTime<Utc>) -> String {
    let mut toml = String::new();
    for t in &TARGETS {
        toml += &format!(
            "[[monitored_urls]]\nid = \"{}\"\nurl = \"https://{}.example/\"\nname = {}\n\
             labels = {{ team = \"{}\" }}\npublic = {}\nperiod = \"{PERIOD_S}s\"\n\n",
            t.id,
            t.id,
            serde_json::to_string(t.name).unwrap_or_default(),
            t.team,
            t.public
        );
    }
    let at = |k: i64| (start + TimeDelta::seconds(k * PERIOD_S)).to_rfc3339();
    toml + &format!(
        "[sink.status]\ntitle = \"{TITLE}\"\n\n[[sink.maintenance]]\nname = \"upgrade\"\nstart = \"{}\"\nend = \"{}\"\ntargets = [\"api\"]\n",
        at(API_WINDOW.0),
        at(API_WINDOW.1)
    )
}

/// A sink that stored every report, where its HTTP side listens, and its settings' directory.
async fn stored() -> (Fixture, RunningSink, SocketAddr, tempfile::TempDir) {
    let start = start();
    let f = Fixture::new(messages(start)).await;
    let env = support::env(&f.topic, &f.db.url);
    let (s, dir) = support::notify::settings(env, &settings(start));
    let app = sink::Application::build(s).await.expect("the sink binds");
    let http = app.http_addr().expect("the HTTP side listens");
    let sink = RunningSink::run(app);
    f.stored().await;
    (f, sink, http, dir)
}

/// Uptime in percent per window from `verdicts_by_hour`, as the status page counts windows:
/// the last 24 hours from the start of the hour 23 hours back, days from UTC midnights.
async fn expected_uptime(pool: &PgPool, target: &str) -> BTreeMap<String, Option<f64>> {
    let now = Utc::now();
    let hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let midnight = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let mut out = BTreeMap::new();
    for (window, from) in [
        ("24h", hour - TimeDelta::hours(23)),
        ("7d", midnight - TimeDelta::days(6)),
        ("30d", midnight - TimeDelta::days(29)),
        ("90d", midnight - TimeDelta::days(89)),
    ] {
        let (up, judged): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(sum(up + degraded), 0)::int8, \
               COALESCE(sum(up + degraded + down), 0)::int8 \
             FROM verdicts_by_hour WHERE target_id = $1 AND hour >= $2",
        )
        .bind(target)
        .bind(from)
        .fetch_one(pool)
        .await
        .expect("the verdicts read");
        let uptime = (judged > 0).then(|| 100.0 * up as f64 / judged as f64);
        out.insert(window.to_string(), uptime);
    }
    out
}

/// The uptime per window of one target of the JSON.
fn uptime_of(target: &Value) -> BTreeMap<String, Option<f64>> {
    ["24h", "7d", "30d", "90d"]
        .iter()
        .map(|w| (w.to_string(), target["uptime"][w].as_f64()))
        .collect()
}

/// The `Status` schema of the OpenAPI document.
fn status_schema() -> jsonschema::Validator {
    let doc: Value = serde_json::from_str(sink::api::OPENAPI).expect("the document is JSON");
    let schema =
        serde_json::json!({"$ref": "#/components/schemas/Status", "components": doc["components"]});
    jsonschema::validator_for(&schema).expect("a valid schema")
}

/// The JSON's targets by id, once every public target's uptime matches the verdicts.
async fn status_matching_verdicts(pool: &PgPool, http: SocketAddr) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let (head, body) = http_get(http.port(), "/api/v1/status").await;
        assert!(head.contains("200"), "{head}: {body}");
        let json: Value = serde_json::from_str(&body).expect("the status is JSON");
        let errors: Vec<String> = status_schema()
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "the status does not match schemas/openapi.json: {errors:?}"
        );
        let targets: BTreeMap<String, Value> = json["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .map(|t| (t["id"].as_str().unwrap_or_default().to_string(), t.clone()))
            .collect();
        let mut mismatch = None;
        for t in TARGETS.iter().filter(|t| t.public) {
            let expected = expected_uptime(pool, t.id).await;
            let found = targets.get(t.id).map(uptime_of);
            if found.as_ref() != Some(&expected) {
                mismatch = Some(format!("{}: {found:?}, verdicts say {expected:?}", t.id));
            }
        }
        let Some(mismatch) = mismatch else {
            return targets;
        };
        assert!(
            Instant::now() < deadline,
            "the status never matched the verdicts: {mismatch}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The head and body of `path` with the raw head (status line and headers).
async fn get_raw(http: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_lowercase(), body.to_string())
}

/// Checks a badge: 200, SVG with caching, an `<svg>` root saying `value`.
async fn assert_badge(http: SocketAddr, path: &str, value: &str) {
    let (head, body) = get_raw(http, path).await;
    assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    assert!(
        head.contains("content-type: image/svg+xml"),
        "{path}: {head}"
    );
    assert!(
        head.contains("cache-control: public, max-age="),
        "{path}: {head}"
    );
    let doc = roxmltree::Document::parse(&body)
        .unwrap_or_else(|e| panic!("{path} is not XML: {e}\n{body}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "{path}");
    let text: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains(value), "{path} says {text:?}, not {value:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn the_status_json_and_badges_say_what_the_verdicts_say_of_public_targets_only() {
    let (f, sink, http, _dir) = stored().await;
    let targets = status_matching_verdicts(&f.pool, http).await;

    assert!(
        !targets.contains_key("secret"),
        "a target not public is not in the JSON"
    );
    assert_eq!(targets.len(), 3);
    let web = &targets["web"];
    assert_eq!(web["name"], "Web site");
    assert_eq!(web["state"], "up", "web is up again after its outage");
    let web_90d = web["uptime"]["90d"].as_f64().expect("web has verdicts");
    assert!(web_90d < 100.0, "web's outage counts: {web_90d}");
    let api_90d = targets["api"]["uptime"]["90d"]
        .as_f64()
        .expect("api has verdicts");
    assert_eq!(
        api_90d, 100.0,
        "api's outage was all in its maintenance window"
    );
    assert!(
        web["cert_not_after"].is_string(),
        "the certificate's expiry is shown"
    );
    for t in TARGETS.iter().filter(|t| t.public) {
        let found = &targets[t.id]["response_ms"];
        let highest = t.fastest_ms * (1.0 + SPREAD);
        for p in ["p50", "p95"] {
            let ms = found[p]
                .as_f64()
                .unwrap_or_else(|| panic!("{} has no {p}", t.id));
            assert!(
                ms > t.fastest_ms * 0.9 && ms < highest * 1.1,
                "{} {p}: {ms} ms, its checks took {} to {highest} ms",
                t.id,
                t.fastest_ms
            );
        }
    }
    let open = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM open_incidents")
        .fetch_one(&f.pool)
        .await
        .expect("count");
    let listed: usize = targets
        .values()
        .map(|t| t["open_incidents"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        listed as i64, open,
        "every open incident of a public target is listed"
    );

    assert_badge(http, "/badge/web/status.svg", "up").await;
    for window in ["24h", "7d", "30d", "90d"] {
        let uptime = web["uptime"][window].as_f64().expect("an uptime");
        let shown = format!("{uptime:.2} %");
        assert_badge(
            http,
            &format!("/badge/web/uptime.svg?window={window}"),
            &shown,
        )
        .await;
    }
    let (head, body) = http_get(http.port(), "/badge/web/uptime.svg?window=1y").await;
    assert!(
        head.contains("400") && body.contains("1y"),
        "{head}: {body}"
    );
    for path in [
        "/badge/secret/status.svg",
        "/badge/secret/uptime.svg",
        "/badge/nothing/status.svg",
        "/group/team/ops",
    ] {
        let (head, _) = http_get(http.port(), path).await;
        assert!(head.contains("404"), "{path}: {head}");
    }

    let (head, page) = get_raw(http, "/").await;
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        !page.contains("secret") && !page.contains("Back office"),
        "nothing of a target not public"
    );
    assert!(
        page.contains("API &lt;&amp;&gt; &quot;v2&quot;")
            || page.contains("API &lt;&amp;&gt; &#34;v2&#34;"),
        "names are escaped"
    );
    assert!(!page.contains("API <&>"), "never as markup");
    assert!(
        page.contains("<h1>Example &amp; Co</h1>"),
        "the title of the settings"
    );
    let (_, group) = http_get(http.port(), "/group/team/web").await;
    assert!(
        group.contains("Web site") && group.contains("Shop") && !group.contains("API &lt;"),
        "the group page shows its team"
    );

    sink.stop().await.expect("the sink stops cleanly");
    f.end(Vec::new()).await;
}

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a headless Chromium run may take.
const CHROMIUM_WITHIN: Duration = Duration::from_secs(120);

/// Runs headless Chromium on `url` with `args`; returns its standard output.
async fn chromium(url: &str, args: &[String]) -> String {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (scripts/test.sh does)"
    );
    let profile = tempfile::tempdir().expect("a profile directory");
    let run = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CHROMIUM_WITHIN, run)
        .await
        .expect("chromium ends in time")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per target shown in `dom`: its state and the days its bars count.
fn shown_targets(dom: &str) -> BTreeMap<String, (String, usize)> {
    let mut shown = BTreeMap::new();
    for card in dom.split("<li class=\"target\"").skip(1) {
        let attr = |name: &str, text: &str| -> Option<String> {
            let at = text.find(&format!("{name}=\""))? + name.len() + 2;
            Some(text[at..].split('"').next()?.to_string())
        };
        let id = attr("data-target", card).unwrap_or_default();
        let state = attr("data-state", card).unwrap_or_default();
        let days = card
            .split("<rect ")
            .skip(1)
            .filter_map(|rect| attr("data-days", rect)?.parse::<usize>().ok())
            .sum();
        shown.insert(id, (state, days));
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, PostgreSQL and chromium: run scripts/test.sh"]
async fn the_page_in_a_browser_shows_each_public_target_with_its_state_and_90_days() {
    let (f, sink, http, _dir) = stored().await;
    let targets = status_matching_verdicts(&f.pool, http).await;
    let url = format!("http://{http}/");

    let dom = chromium(&url, &["--dump-dom".to_string()]).await;
    let shown = shown_targets(&dom);
    let public: Vec<&str> = TARGETS.iter().filter(|t| t.public).map(|t| t.id).collect();
    assert_eq!(
        shown.keys().map(String::as_str).collect::<Vec<_>>().len(),
        public.len(),
        "{shown:?}"
    );
    for id in &public {
        let (state, days) = shown
            .get(*id)
            .unwrap_or_else(|| panic!("{id} is not on the page"));
        assert_eq!(
            Some(state.as_str()),
            targets[*id]["state"].as_str(),
            "{id}'s state"
        );
        assert_eq!(*days, 90, "{id} has 90 days of bars");
    }
    assert!(
        !dom.contains("Back office"),
        "a target not public is not on the page"
    );
    assert!(
        dom.contains("class=\"b-maintenance\""),
        "api's maintenance day is shown as such"
    );
    assert!(
        dom.contains("class=\"b-down\""),
        "web's outage day is shown"
    );
    assert!(dom.contains(": maintenance"), "in words too");

    if std::env::var("WEBMON_WRITE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/status-page.png");
        let args = [
            format!("--screenshot={}", file.display()),
            "--window-size=1280,900".to_string(),
        ];
        chromium(&url, &args).await;
        assert!(file.exists(), "the screenshot is written");
    }
    sink.stop().await.expect("the sink stops cleanly");
    f.end(Vec::new()).await;
}
