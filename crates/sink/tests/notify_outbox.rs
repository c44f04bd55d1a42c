//! The outbox's upkeep against a real PostgreSQL: old delivered and failed notifications
//! deleted with their attempts, in batches, pending ones and the opening of an open incident
//! kept.

mod support;

use chrono::Utc;
use monitor_core::testing::TestDatabase;
use sink::notify::outbox;
use support::{count, text_rows};

/// `n` notifications of channel `ops`, `status`, written `days` ago, each with one attempt;
/// keys `<prefix>/<i>`.
fn notifications(prefix: &str, n: i64, status: &str, days: i64) -> [String; 2] {
    [
        format!(
            "INSERT INTO notifications (id, event_key, channel, group_key, event, status, created_at) \
             SELECT gen_random_uuid(), '{prefix}/' || i, 'ops', 'ops/opened', '{{}}', '{status}', \
                    now() - interval '{days} days' \
             FROM generate_series(1, {n}) i"
        ),
        format!(
            "INSERT INTO notification_attempts (notification_id, attempted_at, duration, outcome) \
             SELECT id, created_at, interval '1 second', 'retry' FROM notifications \
             WHERE event_key LIKE '{prefix}/%'"
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn retention_deletes_old_delivered_and_failed_notifications_with_their_attempts_but_keeps_pending_ones(
) {
    let db = TestDatabase::create().await;
    let (pool, _store) = support::migrated_store(&db).await;
    let open = uuid::Uuid::new_v4();
    let mut setup = vec![
        "INSERT INTO targets (target_id, url) VALUES ('t1', 'http://t1')".to_string(),
        format!(
            "INSERT INTO incidents (incident_id, target_id, kind, opened_at, detected_at, closed_at, regions, checks_failed) \
             VALUES ('{open}', 't1', 'down', now() - interval '200 days', now() - interval '200 days', NULL, '{{eu}}', 3)"
        ),
    ];
    // More old delivered rows than one batch deletes.
    let batch = outbox::PRUNE_BATCH;
    setup.extend(notifications("old-delivered", batch + 5, "delivered", 200));
    setup.extend(notifications("old-failed", 3, "failed", 200));
    setup.extend(notifications("old-pending", 2, "pending", 200));
    setup.extend(notifications("recent", 4, "delivered", 1));
    setup.extend(notifications(
        &format!("incident/{open}"),
        1,
        "delivered",
        200,
    ));
    // The opening of the open incident: its key is the one reminders look for.
    setup.push(format!(
        "UPDATE notifications SET event_key = 'incident/{open}/opened' WHERE event_key = 'incident/{open}/1'"
    ));
    for sql in &setup {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }

    let cutoff = Utc::now() - chrono::Duration::days(100);
    let pruned = outbox::prune_before(&pool, cutoff).await.expect("prune");
    assert_eq!(
        pruned,
        batch as u64 + 5 + 3,
        "the old delivered and failed ones"
    );
    let left = text_rows(
        &pool,
        "SELECT concat_ws(' ', split_part(event_key, '/', 1), status, count(*)) \
         FROM notifications GROUP BY split_part(event_key, '/', 1), status ORDER BY 1",
    )
    .await;
    assert_eq!(
        left,
        [
            "incident delivered 1",
            "old-pending pending 2",
            "recent delivered 4"
        ],
        "pending, recent, and the opening of an open incident stay"
    );
    let attempts = count(&pool, "SELECT count(*) FROM notification_attempts").await;
    assert_eq!(attempts, 7, "the attempts of the rows kept, and no others");
    pool.close().await;
    db.drop_database().await;
}
