//! `sink --check-config`: exit 0 on valid settings, 2 with every problem named otherwise.

use std::process::Command;

fn check_config(file: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(["--check-config", "--config", file])
        .env_remove("WEBMON_CONFIG")
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for file in ["configs/example.toml", "configs/config.json"] {
        let path = format!("{}/../../{file}", env!("CARGO_MANIFEST_DIR"));
        let (code, output) = check_config(&path);
        assert_eq!(code, Some(0), "{file}: {output}");
    }
}

#[test]
fn a_sink_without_a_database_exits_2_and_says_what_to_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sink.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = [\"k:9092\"]\ntopic = \"t\"\n[sink]\nbatch_linger = \"soon\"\n",
    )
    .expect("write");
    let (code, output) = check_config(&file.to_string_lossy());
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("database: is missing"), "{output}");
    assert!(output.contains("sink.batch_linger: \"soon\""), "{output}");
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sink_migrate_sets_the_database_up_and_is_idempotent() {
    let db = monitor_core::testing::TestDatabase::create().await;
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_sink"))
            .arg("migrate")
            .env_remove("WEBMON_CONFIG")
            .env("WEBMON__DATABASE__URL", &db.url)
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    for expected in [
        "dead_letters",
        "kafka_offsets",
        "results",
        "targets",
        "web_monitoring",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "{expected} missing from {tables:?}"
        );
    }
    pool.close().await;
    db.drop_database().await;
}
