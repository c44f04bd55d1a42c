//! The targets API end to end with real checker processes (`target/debug/checker`) and a sink
//! in this process, through a real broker and PostgreSQL: a target made through the API is
//! checked within 2 s of the API's answer and its reports are stored; deleted, it is no longer
//! checked; "check now" returns a fresh answer from each region, stored apart from the
//! scheduled results.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use monitor_core::testing::{create_topic, kafka_client, TestDatabase};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::Instant;

use support::api::{admin, sink_on};
use support::regions::{start_checker, start_checker_with, Site};

async fn rows_of(pool: &PgPool, target: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM results WHERE target_id = $1")
        .bind(target)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Makes target `id` (checked every second at `port`) and waits for its first stored report:
/// how long after the API's answer it came.
async fn made_and_checked(
    addr: std::net::SocketAddr,
    pool: &PgPool,
    id: &str,
    port: u16,
) -> Duration {
    let made = admin(addr, Method::POST, "/api/v1/targets", Some(json!({
        "id": id, "url": format!("http://127.0.0.1:{port}/{id}"), "period": "1s", "timeout": "500ms"
    }))).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let answered = Instant::now();
    while rows_of(pool, id).await == 0 {
        assert!(
            answered.elapsed() < Duration::from_secs(10),
            "target {id} made through the API is never checked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answered.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_target_made_through_the_api_is_checked_within_two_seconds_and_stops_when_deleted() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let (sink, addr, _, _settings) = sink_on(&db, &topic, "[]").await;
    let pool = support::pool(&db).await;
    let site = Site::start().await;
    let dir = tempfile::tempdir().expect("dir");
    // The checker has one target of its own, and none made through the API yet.
    let file_target = json!([{"id": "own", "url": format!("http://127.0.0.1:{}/own", site.port), "period": 1, "timeout": 0.5}]);
    let _checker = start_checker_with("eu-west", &topic, dir.path(), file_target);
    support::wait_for(
        &pool,
        "SELECT least(count(*), 1) FROM results WHERE target_id = 'own'",
        1,
        Duration::from_secs(30),
        "the checker runs",
    )
    .await;

    // The first target made through the API: the checker follows the targets topic from now.
    let first = made_and_checked(addr, &pool, "first", site.port).await;
    println!("the first target made through the API: first report stored {first:?} after the API's answer");
    let made = made_and_checked(addr, &pool, "made", site.port).await;
    println!("a target made through the API: first report stored {made:?} after the API's answer");
    // Within 2 s of the answer the checker applied it (its first slot falls within the next
    // second and its report is stored within the sink's batch linger).
    assert!(
        made < Duration::from_secs(2),
        "first report stored {made:?} after the answer"
    );

    let deleted = admin(addr, Method::DELETE, "/api/v1/targets/made", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let own_before = rows_of(&pool, "own").await;
    // Three more slots of the checker's own target, then nothing of the deleted one after 2 s.
    support::wait_for(
        &pool,
        &format!("SELECT least(count(*), 1) FROM results WHERE target_id = 'own' AND scheduled_at > '{}'", gone_at + chrono::Duration::seconds(2)),
        1,
        Duration::from_secs(30),
        "the checker's own target goes on",
    )
    .await;
    assert!(rows_of(&pool, "own").await >= own_before + 3);
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM results WHERE target_id = 'made' AND scheduled_at > $1",
    )
    .bind(gone_at)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(late, 0, "the deleted target is still checked");

    sink.stop().await.expect("the sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn check_now_returns_a_fresh_answer_from_each_region_stored_apart() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let shop = r#"[{ id = "shop", url = "http://127.0.0.1:9/shop", period = 1, timeout = 0.5 }]"#;
    let (sink, addr, _, _settings) = sink_on(&db, &topic, shop).await;
    let pool = support::pool(&db).await;
    let site = Site::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let _checkers = [
        start_checker("eu-west", site.port, &topic, dir.path()),
        start_checker("us-east", site.port, &topic, dir.path()),
    ];
    // Both regions report the target (and have had time to follow the checks topic).
    support::wait_for(
        &pool,
        "SELECT count(*) FROM current_state WHERE target_id = 'shop' AND cardinality(regions) = 2",
        1,
        Duration::from_secs(30),
        "both regions report shop",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scheduled = rows_of(&pool, "shop").await;

    let asked = Instant::now();
    let answer = admin(addr, Method::POST, "/api/v1/targets/shop/checks", None).await;
    println!("check now answered in {:?}", asked.elapsed());
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["complete"], true);
    assert_eq!(
        answer.json["expected_regions"],
        json!(["eu-west", "us-east"])
    );
    let request = answer.json["request_id"]
        .as_str()
        .expect("a request id")
        .to_string();
    let results = answer.json["results"].as_array().expect("results");
    let regions: Vec<&str> = results
        .iter()
        .filter_map(|r| r["checker_id"].as_str())
        .collect();
    assert_eq!(regions, ["eu-west", "us-east"]);
    for r in results {
        assert_eq!(r["check_request"], request.as_str());
        assert_eq!(r["status"], "up");
        assert_eq!(r["http_status"], 200);
    }
    // Stored apart: not among the scheduled results, not in the verdicts.
    let ids: Vec<uuid::Uuid> = results
        .iter()
        .filter_map(|r| r["report_id"].as_str()?.parse().ok())
        .collect();
    let among_results: i64 =
        sqlx::query_scalar("SELECT count(*) FROM results WHERE report_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(among_results, 0);
    assert!(
        rows_of(&pool, "shop").await >= scheduled,
        "scheduled checks go on"
    );
    let unknown = admin(addr, Method::POST, "/api/v1/targets/nothing/checks", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    sink.stop().await.expect("the sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}
