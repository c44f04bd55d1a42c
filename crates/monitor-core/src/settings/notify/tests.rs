use super::super::labels::labels;
use super::*;

fn read(value: serde_json::Value) -> (NotifySettings, Problems) {
    let root = serde_json::json!({ "sink": { "notifications": value } });
    let mut problems = Problems::default();
    let mut r = Section::root(&root, &mut problems);
    let mut sink = r.section("sink", &mut problems);
    let settings = read_notify_section(&mut sink, Path::new("."), &mut problems);
    (settings, problems)
}

#[test]
fn an_absent_section_is_the_defaults_with_no_channels() {
    let (s, problems) = read(serde_json::Value::Null);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s, NotifySettings::default());
    assert!(s.channels_for(&labels(&[]), true).is_empty());
}

#[test]
fn webhooks_routes_and_defaults_are_read() {
    let (s, problems) = read(serde_json::json!({
        "channels": {
            "web": { "kind": "webhook", "url": "https://hooks.example/web", "secret": "k1",
                     "headers": { "X-Team": "web" } },
            "ops": { "kind": "webhook", "url": "http://127.0.0.1:9/ops", "secret": "k2", "timeout": "2s" },
        },
        "routes": [
            { "match": { "team": "web" }, "channels": ["web"], "continue": true },
            { "match": { "env": "prod" }, "channels": ["ops"] },
            { "match": { "env": "*" }, "channels": ["web"] },
        ],
        "default_channels": ["ops"],
        "link": "https://status.example/",
        "reminder": "1h",
        "certificate_days": [7, 30],
        "group_min": 3,
    }));
    assert!(problems.is_empty(), "{problems:?}");
    let Some(ChannelSettings::Webhook(web)) = s.channels.get("web") else {
        panic!("web is a webhook");
    };
    assert_eq!(web.secret.expose(), "k1");
    assert_eq!(
        web.headers.get("x-team").map(|v| v.as_bytes()),
        Some(&b"web"[..])
    );
    assert_eq!(s.reminder, Some(Duration::from_secs(3600)));
    assert_eq!(s.certificate_days, vec![30, 7]);
    assert_eq!(s.group_min, 3);
    let to = |pairs: &[(&str, &str)], notify| s.channels_for(&labels(pairs), notify);
    assert_eq!(
        to(&[("team", "web"), ("env", "prod")], true),
        ["web", "ops"]
    );
    assert_eq!(to(&[("env", "dev")], true), ["web"], "first match wins");
    assert_eq!(to(&[], true), ["ops"], "no route: the defaults");
    assert!(to(&[("team", "web")], false).is_empty(), "notify = false");
}

#[test]
fn every_problem_is_named_with_its_path() {
    let (_, problems) = read(serde_json::json!({
        "channels": {
            "a": { "kind": "carrier-pigeon" },
            "b": { "kind": "webhook", "url": "ftp://x" },
        },
        "routes": [ { "match": {}, "channels": ["nope"] } ],
        "default_channels": ["missing"],
        "retry_initial": "10m", "retry_max": "1m",
        "certificate_days": [0],
    }));
    let text = format!("{problems:?}");
    for needle in [
        "sink.notifications.channels.a.kind",
        "webhook",
        "sink.notifications.channels.b.url",
        "sink.notifications.channels.b.secret",
        "sink.notifications.routes[0].channels[0]",
        "sink.notifications.default_channels[0]",
        "sink.notifications.retry_max",
        "sink.notifications.certificate_days[0]",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[test]
fn the_secret_is_read_from_a_file_and_never_shown() {
    let dir = std::env::temp_dir().join(format!("notify-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("hook.key"), "s3cret\n").expect("write");
    let root = serde_json::json!({ "sink": { "notifications": { "channels": { "h": {
        "kind": "webhook", "url": "https://h.example/", "secret_file": "hook.key" } } } } });
    let mut problems = Problems::default();
    let mut r = Section::root(&root, &mut problems);
    let mut sink = r.section("sink", &mut problems);
    let s = read_notify_section(&mut sink, &dir, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let Some(ChannelSettings::Webhook(h)) = s.channels.get("h") else {
        panic!("a webhook");
    };
    assert_eq!(h.secret.expose(), "s3cret");
    assert!(!format!("{s:?}").contains("s3cret"));
    let _ = std::fs::remove_dir_all(&dir);
}
