//! Verdicts from real checker processes in two regions (`target/debug/checker`, two
//! `checker.id`s, one-second periods), each checking the same target id at a URL of its own,
//! through a real broker into a sink in this process: a failure seen from one region is
//! degraded and never an incident under the default quorum (a majority); a failure seen from
//! every region opens exactly one incident after `down_after` slots and closes it after
//! `up_after`.

mod support;

use std::time::Duration;

use monitor_core::testing::{create_topic, kafka_client, TestDatabase};
use sqlx::PgPool;

use support::regions::{start_checker, Site};
use support::{env, pool, settings_from, text_rows, RunningSink};

/// The incidents of `shop`: kind, regions, whether closed.
async fn incidents(pool: &PgPool) -> Vec<String> {
    text_rows(
        pool,
        "SELECT concat_ws('|', kind, array_to_string(regions, ','), closed_at IS NOT NULL, \
           checks_failed) FROM incidents ORDER BY opened_at",
    )
    .await
}

/// Verdicts of `shop` so far: (up, degraded, down).
async fn verdict_counts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(up), 0)::int8, COALESCE(sum(degraded), 0)::int8, \
           COALESCE(sum(down), 0)::int8 FROM verdicts_by_hour",
    )
    .fetch_one(pool)
    .await
    .unwrap_or((0, 0, 0))
}

/// Waits until `shop`'s verdicts of `which` (0 up, 1 degraded, 2 down) grew by `more`.
async fn wait_for_verdicts(pool: &PgPool, which: usize, more: i64) {
    let count = |c: (i64, i64, i64)| [c.0, c.1, c.2][which];
    let from = count(verdict_counts(pool).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(verdict_counts(pool).await) < from + more {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {more} more verdicts of kind {which}: {:?}",
            verdict_counts(pool).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn one_failing_region_is_degraded_and_every_region_failing_is_one_incident() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let mut env = env(&topic, &db.url);
    // Slots wait up to two periods for a region's report.
    env.insert("WEBMON__SINK__VERDICTS__GRACE".into(), "2".into());
    let sink = RunningSink::start(settings_from(env)).await;
    let pool = pool(&db).await;
    let dir = tempfile::tempdir().expect("dir");
    let (eu, us) = (Site::start().await, Site::start().await);
    let _checkers = [
        start_checker("eu-west", eu.port, &topic, dir.path()),
        start_checker("us-east", us.port, &topic, dir.path()),
    ];
    wait_for_verdicts(&pool, 0, 3).await;

    // eu-west's view fails: degraded, not down.
    eu.fail(true);
    wait_for_verdicts(&pool, 1, 5).await;
    eu.fail(false);
    wait_for_verdicts(&pool, 0, 3).await;
    let seen = incidents(&pool).await;
    assert!(
        seen.iter().all(|i| i.starts_with("degraded|eu-west|")),
        "one failing region of two is no incident: {seen:?}"
    );
    let state = text_rows(&pool, "SELECT state FROM current_state").await;
    assert_eq!(state, ["up".to_string()]);

    // Every region fails: one incident after down_after (3) slots, closed after up_after (2).
    eu.fail(true);
    us.fail(true);
    wait_for_verdicts(&pool, 2, 5).await;
    let open = text_rows(&pool, "SELECT kind FROM open_incidents").await;
    assert_eq!(open, ["down".to_string()]);
    eu.fail(false);
    us.fail(false);
    wait_for_verdicts(&pool, 0, 3).await;
    let seen = incidents(&pool).await;
    let down: Vec<&String> = seen.iter().filter(|i| i.starts_with("down|")).collect();
    assert_eq!(down.len(), 1, "{seen:?}");
    assert!(down[0].starts_with("down|eu-west,us-east|t|"), "{seen:?}");
    let state = text_rows(&pool, "SELECT state FROM current_state").await;
    assert_eq!(state, ["up".to_string()]);
    assert!(text_rows(&pool, "SELECT kind FROM open_incidents")
        .await
        .is_empty());
    sink.stop().await.expect("the sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}
