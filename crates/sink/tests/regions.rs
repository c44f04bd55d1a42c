//! Several regions checking the same targets: each region's report of a slot is its own,
//! through a real broker into a real PostgreSQL.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use checker::probe::Checker;
use checker::report::missed_report;
use chrono::Utc;
use monitor_core::report::{to_micros, Report};
use monitor_core::settings::{CheckerSettings, SettingsSource, SinkSettings, TargetSettings};
use monitor_core::testing::{create_topic, kafka_client, ok_site, TestDatabase};
use sqlx::{PgPool, Row};

use support::{produce_messages, settings_from, wait_for_offsets, RunningSink};

/// The targets of a checker settings file, as every region would load it.
fn targets(json: &str) -> (Vec<TargetSettings>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("checker.json");
    std::fs::write(&file, json).expect("write");
    let settings = CheckerSettings::load(
        &SettingsSource {
            file: Some(file),
            env: Some(HashMap::new()),
            base_dir: Some(dir.path().to_path_buf()),
        },
        false,
    )
    .expect("valid settings");
    (settings.targets, dir)
}

fn sink_settings(topic: &str, db: &TestDatabase) -> SinkSettings {
    let mut env = support::env(topic, &db.url);
    // The default batch size.
    env.remove("WEBMON__SINK__BATCH_SIZE");
    settings_from(env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn two_regions_checking_the_same_targets_both_keep_their_results() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = ok_site().await;
    let (targets, _dir) = targets(&format!(
        r#"{{"monitored_urls": [
            {{"url": "http://127.0.0.1:{port}/a", "timeout": 2, "period": 60}},
            {{"url": "http://127.0.0.1:{port}/b", "timeout": 2, "period": 60}}
        ]}}"#
    ));
    let regions = ["eu-west", "us-east"];
    let slots: Vec<_> = (1..=3)
        .map(|k| to_micros(Utc::now()) - chrono::Duration::minutes(k))
        .collect();
    let mut reports: Vec<Report> = Vec::new();
    for region in regions {
        let checker = Checker::new(region);
        for target in &targets {
            for &slot in &slots {
                let report = checker.check(target, slot).await;
                // A retry of the same check carries the same id.
                let again = checker.check(target, slot).await;
                assert_eq!(report.report_id, again.report_id, "a retry keeps its id");
                reports.push(report);
                reports.push(again);
            }
            let missed_slot = slots[0] - chrono::Duration::minutes(10);
            reports.push(missed_report(target, region, missed_slot, Utc::now()));
            reports.push(missed_report(target, region, missed_slot, Utc::now()));
        }
    }

    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let messages = reports
        .iter()
        .map(|r| (Some(r.target_id.as_bytes().to_vec()), Some(r.to_json())))
        .collect();
    produce_messages(&client, &topic, 0, messages).await;

    let sink = RunningSink::start(sink_settings(&topic, &db)).await;
    let pool = PgPool::connect(&db.url).await.expect("connect");
    let messages = reports.len() as i64;
    // Until the sink has applied the migrations, the offsets read as -1.
    wait_for_offsets(&pool, &topic, messages, Duration::from_secs(60)).await;

    // Per region and target: three checked slots and one missed one, each stored once.
    let rows: Vec<(String, String, i64)> = sqlx::query(
        "SELECT checker_id, target_id, count(*)::int8 FROM results \
         GROUP BY checker_id, target_id ORDER BY checker_id, target_id",
    )
    .fetch_all(&pool)
    .await
    .expect("rows")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let mut expected = Vec::new();
    let mut ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
    ids.sort();
    for region in regions {
        for id in &ids {
            expected.push((region.to_string(), id.clone(), 4));
        }
    }
    assert_eq!(
        rows, expected,
        "both regions' results are stored, each once"
    );
    let slots_with_both: i64 = sqlx::query_scalar(
        "SELECT count(*)::int8 FROM (SELECT target_id, scheduled_at FROM results \
         GROUP BY target_id, scheduled_at HAVING count(DISTINCT checker_id) = 2) s",
    )
    .fetch_one(&pool)
    .await
    .expect("slots");
    assert_eq!(
        slots_with_both,
        2 * 4,
        "every slot of every target has both regions"
    );
    sink.stop().await.expect("sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}
