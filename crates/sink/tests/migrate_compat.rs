//! Rolling upgrades: an older sink starts against a schema a newer sink has migrated.
//!
//! deploy/k8s runs `sink migrate` as the sink's init container, so during a rollout (or a
//! rollback) an older pod runs its `sink migrate` after a newer one applied a migration the
//! older binary does not know. That must succeed, or the older pods cannot restart.

use std::process::Output;

use monitor_core::testing::TestDatabase;
use sqlx::{Connection, Executor, PgConnection};

/// A migration "from a newer release": a version above every one in migrations/.
const NEWER_VERSION: i64 = 99_991_231_000_000;

fn sink_migrate(config: &std::path::Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sink"))
        .args(["migrate", "--config"])
        .arg(config)
        .env_remove("WEBMON_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("sink runs")
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn sink_migrate_succeeds_on_a_schema_a_newer_sink_migrated() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("sink.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", db.url)).expect("write");

    let first = sink_migrate(&config);
    assert!(first.status.success(), "first migrate: {first:?}");

    // What a newer sink's `sink migrate` leaves behind: one more applied migration.
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    conn.execute(
        format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({NEWER_VERSION}, 'from a newer release', true, '\\x00'::bytea, 1)"
        )
        .as_str(),
    )
    .await
    .expect("record a newer migration");
    conn.close().await.expect("close");

    let again = sink_migrate(&config);
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    db.drop_database().await;
    assert!(
        again.status.success(),
        "an older sink's migrate must accept the newer schema: {stderr}"
    );
}
