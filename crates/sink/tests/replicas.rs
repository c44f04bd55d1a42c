//! Several sink replicas and several deployments on one PostgreSQL server, against a real
//! broker and a real PostgreSQL: membership counted per database, day partitions dropped by
//! another replica, DDL behind a long reader, and a replica whose connections go half-open.

mod support;

use std::time::Duration;

use chrono::Utc;
use monitor_core::testing::{create_topic, kafka_client, sample_report, Proxy, TestDatabase};
use sink::decode::{self, Window};
use sink::store::{Batch, ReportStore};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::time::Instant;

use support::{
    assert_exactly_once, count, env, migrated_store, owners, pool, produce_recent, recent_report,
    wait_for_offsets, wait_for_owners, SinkProcess, REBALANCE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn two_deployments_on_one_server_each_take_every_partition_of_the_same_topic() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 4).await;
    let (db_a, db_b) = (TestDatabase::create().await, TestDatabase::create().await);
    let _a = SinkProcess::start(env(&topic, &db_a.url));
    let _b = SinkProcess::start(env(&topic, &db_b.url));
    let (pool_a, pool_b) = (pool(&db_a).await, pool(&db_b).await);
    // Both have joined, then several rebalance intervals for their shares to settle.
    for pool in [&pool_a, &pool_b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while owners(pool).await.is_empty() {
            assert!(Instant::now() < deadline, "a sink never joined");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(REBALANCE * 10).await;

    produce_recent(&client, &topic, 4, 0, 50).await;
    for pool in [&pool_a, &pool_b] {
        wait_for_offsets(pool, &topic, 200, Duration::from_secs(60)).await;
        assert_exactly_once(pool, 200).await;
        // One membership lock plus every partition, in each database.
        assert_eq!(owners(pool).await, [5]);
    }
    pool_a.close().await;
    pool_b.close().await;
    db_a.drop_database().await;
    db_b.drop_database().await;
}

/// A batch of `reports` continuing from `expected`.
fn batch_of(reports: &[Vec<u8>], expected: Option<i64>, first: i64) -> Batch {
    let mut batch = Batch::new("days", 0, expected, first);
    for (i, r) in (first..).zip(reports) {
        decode::push(&mut batch, &Window::default(), i, None, Some(r.clone()));
    }
    batch
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_day_dropped_by_another_replicas_retention_is_created_again_on_demand() {
    let db = TestDatabase::create().await;
    let (pool, x) = migrated_store(&db).await;
    let y = ReportStore::new(PgPool::connect(&db.url).await.expect("connect"));
    // Replica x stores a report of an old day, so it knows that day's partition.
    let day_old = sample_report("late", 0).to_json();
    x.store(&batch_of(&[day_old], None, 0))
        .await
        .expect("stored");
    // Replica y's retention drops that day.
    let dropped = y
        .drop_partitions_before(Utc::now())
        .await
        .expect("retention");
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    // A late report of the same day reaches replica x.
    let late = sample_report("late", 1).to_json();
    let stored = x
        .store(&batch_of(&[late], Some(1), 1))
        .await
        .expect("the missing partition is created again and the report stored");
    assert_eq!(stored.rows, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM results").await, 1);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn reports_spanning_many_days_create_a_bounded_number_of_partitions_per_call() {
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    // 100 reports, one a day over the last 100 days (inside the sink's accepted window).
    let reports: Vec<Vec<u8>> = (0..100)
        .map(|n| recent_report("spread", n * 24 * 60))
        .collect();
    let partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'reports'::regclass";
    let mut attempts = 0;
    let stored = loop {
        attempts += 1;
        let before = count(&pool, partitions).await;
        match store.store(&batch_of(&reports, None, 0)).await {
            Ok(stored) => break stored,
            Err(e) => {
                let made = count(&pool, partitions).await - before;
                assert!(
                    made <= sink::store::partitions::MAX_NEW_DAYS_PER_CALL as i64,
                    "one call created {made} partitions ({e})"
                );
                assert!(attempts < 10, "no progress: {e}");
            }
        }
    };
    assert_eq!(stored.rows, 100);
    assert!(attempts > 1, "100 new days cannot be created by one call");
    assert_eq!(count(&pool, partitions).await, 100);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn inserts_and_leases_go_on_while_a_long_reader_holds_results_and_retention_waits() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 4).await;
    let db = TestDatabase::create().await;
    let (pool, store) = migrated_store(&db).await;
    // Today's partitions, and an old day that the retention below wants gone.
    store
        .create_partitions_around_now(1, 3)
        .await
        .expect("partitions");
    store
        .store(&batch_of(&[sample_report("old", 0).to_json()], None, 0))
        .await
        .expect("old day stored");
    let old = "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
               WHERE i.inhparent = 'reports'::regclass AND c.relname = 'reports_p20260921'";
    assert_eq!(count(&pool, old).await, 1);

    // A dashboard query that holds results for the whole test.
    let mut reader = PgConnection::connect(&db.url).await.expect("reader");
    reader.execute("BEGIN").await.expect("begin");
    reader
        .execute("LOCK TABLE results IN ACCESS SHARE MODE")
        .await
        .expect("lock");

    let mut env = env(&topic, &db.url);
    env.insert("WEBMON__SINK__RETENTION".into(), "30d".into());
    let _sink = SinkProcess::start(env);
    produce_recent(&client, &topic, 4, 0, 100).await;
    wait_for_offsets(&pool, &topic, 400, Duration::from_secs(60)).await;
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM results WHERE target_id <> 'old'"
        )
        .await,
        400
    );
    assert_eq!(owners(&pool).await, [5], "the leases are held meanwhile");
    // More while the retention keeps trying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    produce_recent(&client, &topic, 4, 1, 100).await;
    wait_for_offsets(&pool, &topic, 800, Duration::from_secs(60)).await;
    assert_eq!(owners(&pool).await, [5], "the leases are held meanwhile");
    assert_eq!(count(&pool, old).await, 1, "the reader still holds results");

    // The reader ends: the retention drops the old day at its next attempt.
    reader.execute("COMMIT").await.expect("commit");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&pool, old).await != 0 {
        assert!(Instant::now() < deadline, "the old day was never dropped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_exactly_once(&pool, 800).await;
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_half_open_replica_loses_its_partitions_within_the_lease_timeout() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 4).await;
    let db = TestDatabase::create().await;
    let pool = pool(&db).await;

    // Replica a reaches PostgreSQL through a proxy; replica b directly.
    let (proxy, listener) = Proxy::bind().await;
    let url = url::Url::parse(&db.url).expect("url");
    proxy.forward_to(listener, url.port().unwrap_or(5432));
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.port)).expect("port");
    let _a = SinkProcess::start(env(&topic, proxied.as_str()));
    wait_for_owners(&pool, &[5], Duration::from_secs(60)).await;
    let _b = SinkProcess::start(env(&topic, &db.url));
    wait_for_owners(&pool, &[3, 3], Duration::from_secs(60)).await;
    produce_recent(&client, &topic, 4, 0, 100).await;
    wait_for_offsets(&pool, &topic, 400, Duration::from_secs(60)).await;

    // a's network goes silent: no FIN, no RST, nothing more either way.
    proxy.black_hole();
    produce_recent(&client, &topic, 4, 1, 100).await;
    let bound = sink::leases::lease_timeout(REBALANCE) + REBALANCE;
    let took = wait_for_owners(&pool, &[5], bound + Duration::from_secs(20)).await;
    println!("b took a's partitions over {took:?} after a went half-open (bound {bound:?})");
    assert!(
        took <= bound + Duration::from_secs(5),
        "takeover took {took:?}, the documented bound is {bound:?}"
    );
    wait_for_offsets(&pool, &topic, 800, Duration::from_secs(60)).await;
    assert_exactly_once(&pool, 800).await;
    proxy.cut();
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn a_session_bound_the_server_cannot_take_is_skipped_not_fatal() {
    // A server built where a bound is not supported (TCP_USER_TIMEOUT outside Linux) refuses
    // its value with 22023, as any server refuses a value out of range: the connection must
    // still be usable, without that bound.
    let db = TestDatabase::create().await;
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let bounds = [
        ("tcp_keepalives_count", "-1".to_string()),
        ("idle_in_transaction_session_timeout", "20s".to_string()),
    ];
    sink::db::bound_session(&mut conn, &bounds)
        .await
        .expect("a refused bound is skipped");
    let (set,): (String,) = sqlx::query_as("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(set, "20s", "the bounds after the refused one are still set");
    conn.close().await.expect("close");
    db.drop_database().await;
}
