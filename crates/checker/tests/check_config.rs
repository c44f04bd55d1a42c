//! `checker --check-config`: exit 0 on valid settings, 2 with every problem named otherwise.

use std::process::Command;

fn repo_file(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn check_config(file: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_checker"))
        .args(["--check-config", "--config", file])
        .env_remove("WEBMON_CONFIG")
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for (file, targets) in [("configs/example.toml", 4), ("configs/config.json", 3)] {
        let (code, stdout, stderr) = check_config(&repo_file(file));
        assert_eq!(code, Some(0), "{file}: {stderr}");
        assert!(
            stdout.contains(&format!("configuration is valid: {targets} targets")),
            "{file}: {stdout}"
        );
    }
}

#[test]
fn invalid_settings_exit_2_naming_each_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"kafka": {"brokers": ["k:9092"]},
            "monitored_urls": [{"url": "ftp://x"}, {"url": "http://a", "timeout": 12, "period": 10}]}"#,
    )
    .expect("write");
    let (code, _, stderr) = check_config(&file.to_string_lossy());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(stderr.contains("kafka.topic: is missing"), "{stderr}");
    assert!(stderr.contains("monitored_urls[0].url"), "{stderr}");
    assert!(
        stderr.contains("monitored_urls[1].timeout: 12s is not less than period 10s"),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_file_exits_2() {
    let (code, _, stderr) = check_config("/nonexistent/web-monitor.toml");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("cannot read /nonexistent/web-monitor.toml"),
        "{stderr}"
    );
}

/// Huge durations and sizes: exit 2 naming each field and its maximum, never a panic.
#[test]
fn huge_durations_and_sizes_exit_2_naming_the_field_and_the_maximum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("huge.json");
    std::fs::write(
        &file,
        r#"{"kafka": {"brokers": ["k:9092"], "topic": "t"},
            "checker": {"shutdown_timeout": "18446744073709551615s"},
            "monitored_urls": [
                {"url": "http://a", "period": "99999999999d", "timeout": "99999999998d"},
                {"url": "http://b", "period": "18446744073709551615s"},
                {"url": "http://c", "body_limit": "1000000TiB"}]}"#,
    )
    .expect("write");
    let (code, _, stderr) = check_config(&file.to_string_lossy());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for expected in [
        "checker.shutdown_timeout: \"18446744073709551615s\" is above the maximum 10m",
        "monitored_urls[0].period: \"99999999999d\" is above the maximum 1d",
        "monitored_urls[0].timeout: \"99999999998d\" is above the maximum 1h",
        "monitored_urls[1].period: \"18446744073709551615s\" is above the maximum 1d",
        "monitored_urls[2].body_limit: \"1000000TiB\" is above the maximum 64 MiB",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert!(stderr.contains("5 problems"), "{stderr}");
}
