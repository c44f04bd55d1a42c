//! Loading settings from files and the environment: the original service's file, every
//! supported format, overrides, and malformed settings that must be refused with their path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use monitor_core::settings::{
    CheckerSettings, ConfigError, SaslMechanism, SettingsSource, SinkSettings, SslMode,
};

const ORIGINAL: &str = include_str!("fixtures/original-config.json");

/// A directory holding a settings file and the certificate files it names.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let dir = Dir(tempfile::tempdir().expect("temp dir"));
        for file in [
            "certs/kafka/ca.pem",
            "certs/kafka/service.cert",
            "certs/kafka/service.key",
            "certs/db/ca.pem",
        ] {
            dir.write(file, "-----BEGIN CERTIFICATE-----\n");
        }
        dir
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    fn source(&self, file: &Path, env: &[(&str, &str)]) -> SettingsSource {
        SettingsSource {
            file: Some(file.to_path_buf()),
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            base_dir: Some(self.0.path().to_path_buf()),
        }
    }
}

fn problems(err: ConfigError) -> Vec<String> {
    err.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn the_original_config_file_loads_unchanged_and_asks_only_for_its_blanks() {
    let dir = Dir::new();
    let file = dir.write("configs/config.json", ORIGINAL);
    let err = CheckerSettings::load(&dir.source(&file, &[]), true).expect_err("blanks");
    let mut paths: Vec<String> = err.problems.iter().map(|p| p.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["kafka.host", "kafka.topic"], "{err}");
    let err = SinkSettings::load(&dir.source(&file, &[])).expect_err("blanks");
    let mut paths: Vec<String> = err.problems.iter().map(|p| p.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "db.db_name",
            "db.host",
            "db.user",
            "kafka.host",
            "kafka.topic"
        ],
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("kafka.topic: is empty: set the Kafka topic"));
}

#[test]
fn the_original_config_filled_in_maps_every_key() {
    let dir = Dir::new();
    let filled = ORIGINAL
        .replacen("\"host\": \"\"", "\"host\": \"kafka.example.net\"", 1)
        .replacen("\"topic\": \"\"", "\"topic\": \"web-monitoring\"", 1)
        .replacen("\"host\": \"\"", "\"host\": \"pg.example.net\"", 1)
        .replacen("\"db_name\": \"\"", "\"db_name\": \"monitoring\"", 1)
        .replacen("\"user\": \"\"", "\"user\": \"monitor\"", 1)
        .replacen("\"password\": \"\"", "\"password\": \"s3cret\"", 1);
    let file = dir.write("configs/config.json", &filled);

    let checker = CheckerSettings::load(&dir.source(&file, &[]), true).expect("valid");
    let kafka = checker.kafka.expect("kafka section");
    assert_eq!(kafka.brokers, ["kafka.example.net:19071"]);
    assert_eq!(kafka.topic, "web-monitoring");
    let tls = kafka.tls.expect("tls from ssl_* keys");
    assert!(tls.ca_file.expect("ca").ends_with("certs/kafka/ca.pem"));
    assert!(tls
        .cert_file
        .expect("cert")
        .ends_with("certs/kafka/service.cert"));
    assert!(tls
        .key_file
        .expect("key")
        .ends_with("certs/kafka/service.key"));
    assert_eq!(checker.targets.len(), 1);
    let target = &checker.targets[0];
    assert_eq!(target.url.as_str(), "https://google.com/");
    assert_eq!(target.period, Duration::from_secs(60));
    assert_eq!(target.timeout, Duration::from_secs(10));
    assert!(target.regexp.is_none());
    assert!(target.expected_status.contains(200) && !target.expected_status.contains(301));

    let sink = SinkSettings::load(&dir.source(&file, &[])).expect("valid");
    let db = sink.database;
    assert_eq!(
        (
            db.host.as_str(),
            db.port,
            db.name.as_str(),
            db.user.as_str()
        ),
        ("pg.example.net", 19069, "monitoring", "monitor")
    );
    assert_eq!(db.password.as_ref().map(|p| p.expose()), Some("s3cret"));
    assert_eq!(db.sslmode, SslMode::Require);
    assert!(db
        .sslrootcert
        .clone()
        .expect("ca")
        .ends_with("certs/db/ca.pem"));
    assert!(
        !format!("{db:?}").contains("s3cret"),
        "a password must never appear in Debug output"
    );
}

#[test]
fn environment_overrides_fill_and_replace_file_values() {
    let dir = Dir::new();
    let file = dir.write("configs/config.json", ORIGINAL);
    let source = dir.source(
        &file,
        &[
            ("WEBMON__KAFKA__HOST", "broker.internal"),
            ("WEBMON__KAFKA__PORT", "9093"),
            ("WEBMON__KAFKA__TOPIC", "reports"),
            ("WEBMON__DB__HOST", "db.internal"),
            ("WEBMON__DB__DB_NAME", "monitoring"),
            ("WEBMON__DB__USER", "monitor"),
            ("WEBMON__DB__PASSWORD", "123456"),
            ("UNRELATED", "x"),
        ],
    );
    let sink = SinkSettings::load(&source).expect("valid");
    assert_eq!(sink.kafka.brokers, ["broker.internal:9093"]);
    assert_eq!(sink.kafka.topic, "reports");
    assert_eq!(sink.database.host, "db.internal");
    assert_eq!(
        sink.database.password.as_ref().map(|p| p.expose()),
        Some("123456"),
        "a numeric-looking password stays text"
    );
}

#[test]
fn toml_yaml_and_json_files_give_the_same_settings() {
    let dir = Dir::new();
    dir.write("pw", "from-a-file\n");
    let toml = dir.write(
        "a.toml",
        r#"
[checker]
id = "eu-west-1"
max_in_flight = 200
shard = "1/3"

[kafka]
brokers = ["k1:9092", "k2:9092"]
topic = "reports"
partitions = 12
[kafka.tls]
ca_file = "certs/kafka/ca.pem"
[kafka.sasl]
mechanism = "scram-sha-512"
username = "monitor"
password_file = "pw"

[[monitored_urls]]
url = "https://example.com/health"
period = "30s"
timeout = "1500ms"
regexp = "ok|healthy"
negative_regexp = "maintenance"
method = "post"
headers = { "X-Probe" = "1", Authorization = "Bearer abc" }
body = '{"ping":true}'
expected_status = ["200-204", 301]
follow_redirects = false
max_redirects = 3
body_limit = "256KiB"
ca_file = "certs/db/ca.pem"
id = "example-health"

[[monitored_urls]]
url = "http://example.org"
period = 5
timeout = 0.5
"#,
    );
    let yaml = dir.write(
        "a.yaml",
        r#"
checker: { id: eu-west-1, max_in_flight: 200, shard: "1/3" }
kafka:
  brokers: [k1:9092, k2:9092]
  topic: reports
  partitions: 12
  tls: { ca_file: certs/kafka/ca.pem }
  sasl: { mechanism: SCRAM-SHA-512, username: monitor, password_file: pw }
monitored_urls:
  - url: https://example.com/health
    period: 30s
    timeout: 1500ms
    regexp: ok|healthy
    negative_regexp: maintenance
    method: POST
    headers: { X-Probe: "1", Authorization: Bearer abc }
    body: '{"ping":true}'
    expected_status: ["200-204", 301]
    follow_redirects: false
    max_redirects: 3
    body_limit: 256KiB
    ca_file: certs/db/ca.pem
    id: example-health
  - { url: "http://example.org", period: 5, timeout: 0.5 }
"#,
    );
    let json = dir.write(
        "a.json",
        r#"{
  "checker": {"id": "eu-west-1", "max_in_flight": 200, "shard": "1/3"},
  "kafka": {"brokers": ["k1:9092", "k2:9092"], "topic": "reports", "partitions": 12,
            "tls": {"ca_file": "certs/kafka/ca.pem"},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "monitor", "password_file": "pw"}},
  "monitored_urls": [
    {"url": "https://example.com/health", "period": "30s", "timeout": "1500ms",
     "regexp": "ok|healthy", "negative_regexp": "maintenance", "method": "POST",
     "headers": {"X-Probe": "1", "Authorization": "Bearer abc"}, "body": "{\"ping\":true}",
     "expected_status": ["200-204", 301], "follow_redirects": false, "max_redirects": 3,
     "body_limit": "256KiB", "ca_file": "certs/db/ca.pem", "id": "example-health"},
    {"url": "http://example.org", "period": 5, "timeout": 0.5}
  ]
}"#,
    );
    let from_toml = CheckerSettings::load(&dir.source(&toml, &[]), true).expect("toml");
    let from_yaml = CheckerSettings::load(&dir.source(&yaml, &[]), true).expect("yaml");
    let from_json = CheckerSettings::load(&dir.source(&json, &[]), true).expect("json");
    assert_eq!(from_toml, from_yaml);
    assert_eq!(from_toml, from_json);

    let s = from_toml;
    assert_eq!(s.checker.id, "eu-west-1");
    assert_eq!(s.checker.max_in_flight, 200);
    assert_eq!((s.checker.shard.index, s.checker.shard.count), (1, 3));
    let kafka = s.kafka.expect("kafka");
    assert_eq!(kafka.brokers, ["k1:9092", "k2:9092"]);
    assert_eq!(kafka.partitions, 12);
    let sasl = kafka.sasl.expect("sasl");
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.password.expose(), "from-a-file");
    let t = &s.targets[0];
    assert_eq!(t.id, "example-health");
    assert_eq!(t.period, Duration::from_secs(30));
    assert_eq!(t.timeout, Duration::from_millis(1500));
    assert_eq!(t.regexp.as_ref().map(|p| p.as_str()), Some("ok|healthy"));
    assert_eq!(t.method, http::Method::POST);
    assert_eq!(
        t.headers.get("x-probe").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(t.expected_status.contains(204) && t.expected_status.contains(301));
    assert!(!t.expected_status.contains(205));
    assert!(!t.follow_redirects);
    assert_eq!(t.max_redirects, 3);
    assert_eq!(t.body_limit, 256 * 1024);
    let plain = &s.targets[1];
    assert_eq!(plain.timeout, Duration::from_millis(500));
    assert_eq!(plain.id.len(), 16, "derived ids are 16 hex digits");
}

#[test]
fn brokers_can_be_given_as_one_comma_separated_environment_variable() {
    let dir = Dir::new();
    let file = dir.write(
        "c.toml",
        "[kafka]\ntopic = \"t\"\nbrokers = [\"x:1\"]\n[[monitored_urls]]\nurl = \"http://a\"\n",
    );
    let s = CheckerSettings::load(
        &dir.source(&file, &[("WEBMON__KAFKA__BROKERS", "a:9092, b:9092")]),
        true,
    )
    .expect("valid");
    assert_eq!(s.kafka.expect("kafka").brokers, ["a:9092", "b:9092"]);
}

#[test]
fn watching_the_settings_file_is_on_by_default_and_can_be_tuned_or_turned_off() {
    let dir = Dir::new();
    let load = |checker: &str, env: &[(&str, &str)]| {
        let file = dir.write(
            "w.toml",
            &format!("[checker]\n{checker}\n[[monitored_urls]]\nurl = \"http://a\"\n"),
        );
        CheckerSettings::load(&dir.source(&file, env), false).map(|s| s.checker.watch_config)
    };
    assert_eq!(load("", &[]).expect("valid"), Some(Duration::from_secs(10)));
    assert_eq!(
        load("watch_config = \"2s\"", &[]).expect("valid"),
        Some(Duration::from_secs(2))
    );
    assert_eq!(load("watch_config = false", &[]).expect("valid"), None);
    assert_eq!(
        load("", &[("WEBMON__CHECKER__WATCH_CONFIG", "false")]).expect("valid"),
        None
    );
    let refused = problems(load("watch_config = \"soon\"", &[]).expect_err("refused"));
    assert!(
        refused
            .iter()
            .any(|p| p.starts_with("checker.watch_config:")),
        "{refused:?}"
    );
}

#[test]
fn the_nodelay_relay_is_on_by_default_and_can_be_turned_off() {
    let dir = Dir::new();
    let load = |line: &str| {
        let file = dir.write(
            "r.toml",
            &format!("[kafka]\ntopic = \"t\"\nbrokers = [\"x:1\"]\n{line}\n[[monitored_urls]]\nurl = \"http://a\"\n"),
        );
        CheckerSettings::load(&dir.source(&file, &[]), true)
            .map(|s| s.kafka.expect("kafka").nodelay_relay)
    };
    assert!(load("").expect("valid"));
    assert!(!load("nodelay_relay = false").expect("valid"));
    let refused = problems(load("nodelay_relay = \"maybe\"").expect_err("refused"));
    assert!(
        refused
            .iter()
            .any(|p| p.starts_with("kafka.nodelay_relay:")),
        "{refused:?}"
    );
}

#[test]
fn max_request_bytes_defaults_below_a_mebibyte_and_refuses_sizes_out_of_bounds() {
    let dir = Dir::new();
    let load = |line: &str| {
        let file = dir.write(
            "r.toml",
            &format!("[kafka]\ntopic = \"t\"\nbrokers = [\"x:1\"]\n{line}\n[[monitored_urls]]\nurl = \"http://a\"\n"),
        );
        CheckerSettings::load(&dir.source(&file, &[]), true)
            .map(|s| s.kafka.expect("kafka").max_request_bytes)
    };
    assert_eq!(load("").expect("valid"), 1_000_000);
    assert_eq!(
        load("max_request_bytes = \"256KiB\"").expect("valid"),
        256 * 1024
    );
    for bad in ["1KiB", "1GiB", "lots"] {
        let refused =
            problems(load(&format!("max_request_bytes = \"{bad}\"")).expect_err("refused"));
        assert!(
            refused
                .iter()
                .any(|p| p.starts_with("kafka.max_request_bytes:")),
            "{bad}: {refused:?}"
        );
    }
}

/// A minimal valid checker file with `targets` as the monitored_urls list and `kafka` as the
/// kafka table's body.
fn checker_file(kafka: &str, targets: &str) -> String {
    format!("{{\"kafka\": {{{kafka}}}, \"monitored_urls\": [{targets}]}}")
}

const KAFKA_OK: &str = r#""brokers": ["localhost:9092"], "topic": "reports""#;

#[test]
fn malformed_settings_are_refused_naming_the_field_and_the_fix() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing url",
            checker_file(KAFKA_OK, r#"{"period": 30}"#),
            "monitored_urls[0].url: is missing",
        ),
        (
            "empty url",
            checker_file(KAFKA_OK, r#"{"url": ""}"#),
            "monitored_urls[0].url: is empty",
        ),
        (
            "bad scheme",
            checker_file(KAFKA_OK, r#"{"url": "ftp://example.com"}"#),
            "monitored_urls[0].url: \"ftp://example.com\" has scheme \"ftp\": only http and https",
        ),
        (
            "not a url",
            checker_file(KAFKA_OK, r#"{"url": "example.com"}"#),
            "monitored_urls[0].url: \"example.com\" is not a valid URL",
        ),
        (
            "bad regex",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "regexp": "(unclosed"}"#),
            "monitored_urls[0].regexp: \"(unclosed\" is not a valid regular expression",
        ),
        (
            "negative period",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "period": -5}"#),
            "monitored_urls[0].period: -5:",
        ),
        (
            "non-numeric timeout",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "timeout": "soon"}"#),
            "monitored_urls[0].timeout: \"soon\":",
        ),
        (
            "zero timeout",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "timeout": 0}"#),
            "monitored_urls[0].timeout: must be greater than zero",
        ),
        (
            "timeout not below period",
            checker_file(
                KAFKA_OK,
                r#"{"url": "http://a"}, {"url": "http://b"}, {"url": "http://c", "timeout": 12, "period": "10s"}"#,
            ),
            "monitored_urls[2].timeout: 12s is not less than period 10s",
        ),
        (
            "typo in a target key",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "perod": 30}"#),
            "monitored_urls[0].perod: unknown key",
        ),
        (
            "bad status set",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "expected_status": ["600"]}"#),
            "monitored_urls[0].expected_status: \"600\" is not a status code",
        ),
        (
            "bad method",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "method": "GE T"}"#),
            "monitored_urls[0].method: \"GE T\" is not an HTTP method",
        ),
        (
            "bad body limit",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "body_limit": "1 parsec"}"#),
            "monitored_urls[0].body_limit: \"1 parsec\": unknown unit",
        ),
        (
            "missing ca file",
            checker_file(KAFKA_OK, r#"{"url": "http://a", "ca_file": "nope.pem"}"#),
            "monitored_urls[0].ca_file: cannot read",
        ),
        (
            "duplicate target",
            checker_file(KAFKA_OK, r#"{"url": "http://a"}, {"url": "HTTP://A:80/"}"#),
            "monitored_urls[1]: has the same target id",
        ),
        (
            "targets not a list",
            format!("{{\"kafka\": {{{KAFKA_OK}}}, \"monitored_urls\": \"http://a\"}}"),
            "monitored_urls: expected a list, found a string",
        ),
        (
            "missing topic",
            checker_file(r#""brokers": ["localhost:9092"]"#, r#"{"url": "http://a"}"#),
            "kafka.topic: is missing",
        ),
        (
            "invalid topic",
            checker_file(
                r#""brokers": ["localhost:9092"], "topic": "a b""#,
                r#"{"url": "http://a"}"#,
            ),
            "kafka.topic: \"a b\" is not a valid topic name",
        ),
        (
            "broker without port",
            checker_file(r#""brokers": ["localhost"], "topic": "t""#, r#"{"url": "http://a"}"#),
            "kafka.brokers: \"localhost\": expected host:port",
        ),
        (
            "original port not a number",
            checker_file(r#""host": "k", "port": "x19071", "topic": "t""#, r#"{"url": "http://a"}"#),
            "kafka.port: expected a whole number from 1 to 65535, found \"x19071\"",
        ),
        (
            "certificate without key",
            checker_file(
                r#""brokers": ["k:1"], "topic": "t", "tls": {"cert_file": "cert.pem"}"#,
                r#"{"url": "http://a"}"#,
            ),
            "kafka.tls: a client certificate needs its key",
        ),
        (
            "sasl without password",
            checker_file(
                r#""brokers": ["k:1"], "topic": "t", "sasl": {"username": "u"}"#,
                r#"{"url": "http://a"}"#,
            ),
            "kafka.sasl.password: is missing",
        ),
        (
            "bad sasl mechanism",
            checker_file(
                r#""brokers": ["k:1"], "topic": "t", "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}"#,
                r#"{"url": "http://a"}"#,
            ),
            "kafka.sasl.mechanism: \"GSSAPI\" is not supported",
        ),
        (
            "bad shard",
            format!(
                "{{\"checker\": {{\"shard\": \"3/3\"}}, \"kafka\": {{{KAFKA_OK}}}, \"monitored_urls\": [\"http://a\"]}}"
            ),
            "checker.shard: \"3/3\" is not a shard",
        ),
        (
            "missing kafka section",
            r#"{"monitored_urls": ["http://a"]}"#.to_string(),
            "kafka: is missing",
        ),
        (
            "syntax error",
            "{\"monitored_urls\": [".to_string(),
            "(file):",
        ),
        (
            "not an object",
            "[1, 2]".to_string(),
            "(file):",
        ),
    ];
    assert!(cases.len() >= 15);
    let dir = Dir::new();
    dir.write("cert.pem", "x");
    for (name, text, expected) in cases {
        let file = dir.write("case.json", &text);
        let err = CheckerSettings::load(&dir.source(&file, &[]), true)
            .expect_err(&format!("case {name:?} must be refused"));
        let all = problems(err);
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "case {name:?}: expected a problem starting with {expected:?}, got {all:#?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = Dir::new();
    let file = dir.write(
        "many.toml",
        r#"
[kafka]
brokers = ["nohost"]
[[monitored_urls]]
period = "x"
[[monitored_urls]]
url = "gopher://a"
timeout = 70
"#,
    );
    let all = problems(CheckerSettings::load(&dir.source(&file, &[]), true).expect_err("bad"));
    for expected in [
        "kafka.brokers: \"nohost\"",
        "kafka.topic: is missing",
        "monitored_urls[0].url: is missing",
        "monitored_urls[0].period: \"x\"",
        "monitored_urls[1].url: \"gopher://a\"",
        "monitored_urls[1].timeout: 70s is not less than period 1m",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {all:#?}"
        );
    }
}

#[test]
fn unreadable_and_unknown_files_are_refused() {
    let dir = Dir::new();
    let missing = dir.0.path().join("absent.toml");
    let all =
        problems(CheckerSettings::load(&dir.source(&missing, &[]), true).expect_err("absent"));
    assert!(all[0].starts_with("(file): cannot read"), "{all:?}");
    let ini = dir.write("x.ini", "[kafka]\n");
    let all = problems(CheckerSettings::load(&dir.source(&ini, &[]), true).expect_err("ini"));
    assert!(all[0].contains("unknown settings format"), "{all:?}");
    let broken = dir.write("broken.toml", "[kafka\ntopic = 1");
    let all = problems(CheckerSettings::load(&dir.source(&broken, &[]), true).expect_err("syntax"));
    assert!(
        all[0].starts_with("(file):") && all[0].contains("broken.toml"),
        "{all:?}"
    );
}

#[test]
fn the_sink_needs_kafka_and_a_database_and_checks_sslmode() {
    let dir = Dir::new();
    let file = dir.write(
        "s.toml",
        "[kafka]\nbrokers=[\"k:1\"]\ntopic=\"t\"\n[database]\nurl=\"mysql://x\"\nsslmode=\"sometimes\"\n[sink]\nbatch_size=0\n",
    );
    let all = problems(SinkSettings::load(&dir.source(&file, &[])).expect_err("bad"));
    for expected in [
        "database.url: must start with postgres://",
        "database.sslmode: \"sometimes\" is not an sslmode",
        "sink.batch_size: 0 is out of range",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "{expected:?} in {all:#?}"
        );
    }
    let ok = dir.write(
        "ok.toml",
        "[kafka]\nbrokers=[\"k:1\"]\ntopic=\"t\"\n[database]\nurl=\"postgres://u:pw@h/db\"\n[sink]\nbatch_linger=\"50ms\"\nretention=\"30d\"\n",
    );
    let s = SinkSettings::load(&dir.source(&ok, &[])).expect("valid");
    assert_eq!(s.sink.batch_linger, Duration::from_millis(50));
    assert_eq!(s.sink.retention, Some(Duration::from_secs(30 * 86_400)));
    assert!(
        !format!("{s:?}").contains("pw@"),
        "the URL holds a password: keep it out of Debug"
    );
}

/// Every duration and size of both services, set to huge values: each is refused with its
/// path and its maximum, none panics, none overflows into a small value.
#[test]
fn huge_durations_and_sizes_are_refused_naming_the_field_and_the_maximum() {
    let dir = Dir::new();
    let checker = dir.write(
        "huge.json",
        r#"{"kafka": {"brokers": ["k:9092"], "topic": "t"},
            "checker": {"linger": "99999999999d", "produce_timeout": 1e300,
                        "shutdown_timeout": "18446744073709551615s", "watch_config": "400000000h",
                        "spool_max_bytes": "99999999999999TiB"},
            "monitored_urls": [
                {"url": "http://a", "period": "400000000h", "timeout": "99999999999d"},
                {"url": "http://b", "period": "18446744073709551615s", "body_limit": "1000000TiB"},
                {"url": "http://c", "period": "25h", "timeout": "2h", "body_limit": 1e30}]}"#,
    );
    let err = CheckerSettings::load(&dir.source(&checker, &[]), true).expect_err("refused");
    let all = problems(err);
    for expected in [
        "checker.linger: \"99999999999d\" is above the maximum 1m",
        "checker.produce_timeout: 1e+300 is above the maximum 5m",
        "checker.shutdown_timeout: \"18446744073709551615s\" is above the maximum 10m",
        "checker.watch_config: \"400000000h\" is above the maximum 1d",
        "checker.spool_max_bytes: \"99999999999999TiB\" is above the maximum 1 TiB",
        "monitored_urls[0].period: \"400000000h\" is above the maximum 1d",
        "monitored_urls[0].timeout: \"99999999999d\" is above the maximum 1h",
        "monitored_urls[1].period: \"18446744073709551615s\" is above the maximum 1d",
        "monitored_urls[1].body_limit: \"1000000TiB\" is above the maximum 64 MiB",
        "monitored_urls[2].period: \"25h\" is above the maximum 1d",
        "monitored_urls[2].timeout: \"2h\" is above the maximum 1h",
        "monitored_urls[2].body_limit: 1e+30 is above the maximum 64 MiB",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "{expected:?} in {all:#?}"
        );
    }
    assert_eq!(all.len(), 12, "{all:#?}");

    let sink = dir.write(
        "huge.toml",
        "[kafka]\nbrokers=[\"k:1\"]\ntopic=\"t\"\n[database]\nurl=\"postgres://u@h/db\"\n\
         [sink]\nbatch_linger=\"99999999999d\"\nfetch_max_wait=\"2m\"\nretention=\"36501d\"\n\
         rebalance_interval=\"18446744073709551615s\"\n",
    );
    let all = problems(SinkSettings::load(&dir.source(&sink, &[])).expect_err("refused"));
    for expected in [
        "sink.batch_linger: \"99999999999d\" is above the maximum 1m",
        "sink.fetch_max_wait: \"2m\" is above the maximum 1m",
        "sink.retention: \"36501d\" is above the maximum 36500d",
        "sink.rebalance_interval: \"18446744073709551615s\" is above the maximum 10m",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "{expected:?} in {all:#?}"
        );
    }
}

#[test]
fn durations_and_sizes_at_their_maximum_are_accepted() {
    let dir = Dir::new();
    let file = dir.write(
        "max.json",
        r#"{"kafka": {"brokers": ["k:9092"], "topic": "t"},
            "checker": {"linger": "1m", "shutdown_timeout": "10m", "spool_max_bytes": "1TiB"},
            "monitored_urls": [{"url": "http://a", "period": "1d", "timeout": "1h", "body_limit": "64MiB"}]}"#,
    );
    let s = CheckerSettings::load(&dir.source(&file, &[]), true).expect("valid");
    assert_eq!(s.targets[0].period, Duration::from_secs(86_400));
    assert_eq!(s.targets[0].timeout, Duration::from_secs(3600));
    assert_eq!(s.targets[0].body_limit, 64 << 20);
    assert_eq!(s.checker.producer.spool_max_bytes, 1 << 40);
}

#[test]
fn secret_headers_are_marked_and_a_name_not_among_the_headers_is_refused() {
    let dir = Dir::new();
    let file = dir.write(
        "secret.json",
        r#"{"monitored_urls": [{"url": "http://a", "headers": {"Authorization": "Bearer tok3n", "X-Api-Key": "k3y", "X-Trace": "1"}, "secret_headers": ["x-api-key"]}]}"#,
    );
    let s = CheckerSettings::load(&dir.source(&file, &[]), false).expect("valid");
    let t = &s.targets[0];
    for name in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
    ] {
        assert!(t.is_credential(&name.parse().expect("name")), "{name}");
    }
    assert!(!t.is_credential(&"x-trace".parse().expect("name")));
    let debug = format!("{t:?}");
    assert!(
        !debug.contains("tok3n") && !debug.contains("k3y"),
        "{debug}"
    );

    let bad = dir.write(
        "typo.json",
        r#"{"monitored_urls": [{"url": "http://a", "headers": {"X-Api-Key": "k"}, "secret_headers": ["X-Api-Kye", "bad name"]}]}"#,
    );
    let all = problems(CheckerSettings::load(&dir.source(&bad, &[]), false).expect_err("typo"));
    for expected in [
        "monitored_urls[0].secret_headers[0]: \"X-Api-Kye\" is not one of this target's headers",
        "monitored_urls[0].secret_headers[1]: \"bad name\" is not a valid header name",
    ] {
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "{expected:?} in {all:#?}"
        );
    }
}

#[test]
fn the_body_memory_budget_has_a_default_and_must_hold_every_body_limit() {
    let dir = Dir::new();
    let file = dir.write("default.json", r#"{"monitored_urls": ["http://a"]}"#);
    let s = CheckerSettings::load(&dir.source(&file, &[]), false).expect("valid");
    assert_eq!(
        s.checker.max_body_memory,
        monitor_core::settings::DEFAULT_MAX_BODY_MEMORY
    );
    let file = dir.write(
        "small.json",
        r#"{"checker": {"max_body_memory": "4MiB"},
            "monitored_urls": [{"url": "http://a", "body_limit": "4MiB"}, {"url": "http://b", "body_limit": "8MiB"}]}"#,
    );
    let all = problems(CheckerSettings::load(&dir.source(&file, &[]), false).expect_err("refused"));
    assert_eq!(
        all,
        ["monitored_urls[1].body_limit: 8 MiB is above checker.max_body_memory 4 MiB: lower it or raise the budget"]
    );
    let file = dir.write(
        "huge.json",
        r#"{"checker": {"max_body_memory": "1000000TiB"}, "monitored_urls": ["http://a"]}"#,
    );
    let all = problems(CheckerSettings::load(&dir.source(&file, &[]), false).expect_err("refused"));
    assert!(
        all[0].starts_with("checker.max_body_memory: \"1000000TiB\" is above the maximum 64 GiB"),
        "{all:?}"
    );
}

#[test]
fn checker_ids_urls_and_patterns_beyond_the_report_bounds_are_refused() {
    let long_path = "p".repeat(monitor_core::report::MAX_URL_CHARS);
    let long_pattern = "x".repeat(monitor_core::report::MAX_PATTERN_CHARS + 1);
    let long_id = "c".repeat(monitor_core::report::MAX_ID_CHARS + 1);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "url",
            checker_file(KAFKA_OK, &format!(r#"{{"url": "http://a/{long_path}"}}"#)),
            "monitored_urls[0].url: is 8201 characters once normalised: reports allow at most 8192",
        ),
        (
            "regexp",
            checker_file(
                KAFKA_OK,
                &format!(r#"{{"url": "http://a", "regexp": "{long_pattern}"}}"#),
            ),
            "monitored_urls[0].regexp: is 4097 characters: reports allow at most 4096",
        ),
        (
            "checker id",
            format!(
                r#"{{"checker": {{"id": "{long_id}"}}, "kafka": {{{KAFKA_OK}}}, "monitored_urls": ["http://a"]}}"#
            ),
            "checker.id: is 201 characters",
        ),
    ];
    let dir = Dir::new();
    for (name, text, expected) in cases {
        let file = dir.write("case.json", &text);
        let err = CheckerSettings::load(&dir.source(&file, &[]), true)
            .expect_err(&format!("case {name:?} must be refused"));
        let all = problems(err);
        assert!(
            all.iter().any(|p| p.starts_with(expected)),
            "case {name:?}: expected a problem starting with {expected:?}, got {all:#?}"
        );
    }
    let at_the_bound = checker_file(
        KAFKA_OK,
        &format!(
            r#"{{"url": "http://a/{}", "regexp": "{}"}}"#,
            "p".repeat(monitor_core::report::MAX_URL_CHARS - "http://a/".len()),
            "x".repeat(monitor_core::report::MAX_PATTERN_CHARS)
        ),
    );
    let file = dir.write("case.json", &at_the_bound);
    assert!(CheckerSettings::load(&dir.source(&file, &[]), true).is_ok());
}

#[test]
fn target_ids_are_bounded_in_characters_as_the_report_counts_them() {
    let max = monitor_core::report::MAX_ID_CHARS;
    let dir = Dir::new();
    // Two bytes of UTF-8 each: within the bound in characters, beyond it in bytes.
    let at_the_bound = "é".repeat(max);
    let file = dir.write(
        "case.json",
        &checker_file(
            KAFKA_OK,
            &format!(r#"{{"url": "http://a", "id": "{at_the_bound}"}}"#),
        ),
    );
    let settings = CheckerSettings::load(&dir.source(&file, &[]), true).expect("accepted");
    assert_eq!(settings.targets[0].id, at_the_bound);
    let beyond = "é".repeat(max + 1);
    let file = dir.write(
        "case.json",
        &checker_file(
            KAFKA_OK,
            &format!(r#"{{"url": "http://a", "id": "{beyond}"}}"#),
        ),
    );
    let all = problems(CheckerSettings::load(&dir.source(&file, &[]), true).expect_err("refused"));
    assert!(
        all.iter()
            .any(|p| p.starts_with("monitored_urls[0].id: must be 1 to 200 characters")),
        "{all:#?}"
    );
}

#[test]
fn a_checker_without_targets_of_its_own_loads_for_the_targets_made_through_the_api() {
    for text in [
        format!("{{\"kafka\": {{{KAFKA_OK}}}}}"),
        checker_file(KAFKA_OK, ""),
    ] {
        let dir = Dir::new();
        let file = dir.write("c.json", &text);
        let settings = CheckerSettings::load(&dir.source(&file, &[]), true).expect("loads");
        assert!(settings.targets.is_empty());
    }
}
