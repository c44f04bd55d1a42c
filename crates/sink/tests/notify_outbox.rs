//! The outbox's upkeep against a real PostgreSQL: old delivered and failed notifications
//! deleted with their attempts, in batches, pending ones and the opening of an open incident
//! kept; and the notifications of a channel removed from the settings failed by a running
//! sink rather than left pending.

mod support;

use chrono::Utc;
use monitor_core::testing::TestDatabase;
use sink::notify::outbox;
use support::http::Receiver;
use support::notify::{notifications as dispatcher, Fixture};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn notifications_of_a_channel_no_longer_configured_fail_once_and_are_counted() {
    let hook = Receiver::start().await;
    let mut f = Fixture::new(Vec::new()).await;
    let _migrated = support::migrated_store(&f.db).await;
    // Two notifications written while channel `gone` was configured, one for `ops`.
    for (key, channel) in [("a/1", "gone"), ("a/2", "gone"), ("a/3", "ops")] {
        let event = format!(
            "{{\"key\": \"{key}\", \"transition\": {{\"type\": \"opened\"}}, \"target_id\": \"t\", \
             \"target_name\": \"t\", \"url\": \"https://t.example/\", \"labels\": {{}}, \"state\": \"down\", \
             \"since\": \"2026-11-28T12:00:00Z\", \"regions\": []}}"
        );
        sqlx::query(
            "INSERT INTO notifications (id, event_key, channel, group_key, event) \
             VALUES (gen_random_uuid(), $1, $2, $2 || '/opened', $3::jsonb)",
        )
        .bind(key)
        .bind(channel)
        .bind(event)
        .execute(&f.pool)
        .await
        .expect("insert");
    }
    let toml = dispatcher("default_channels = [\"ops\"]")
        + &format!(
            "[sink.notifications.channels.ops]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s\"\n",
            hook.url
        );
    let sink = f.start(&toml).await;
    let gone = "channel = 'gone' AND status = 'failed' AND attempts = 0 \
                AND last_error = 'channel gone is no longer configured'";
    f.notifications(gone, 2).await;
    f.notifications("channel = 'ops' AND status = 'delivered'", 1)
        .await;
    assert_eq!(
        count(&f.pool, "SELECT count(*) FROM notification_attempts WHERE notification_id IN (SELECT id FROM notifications WHERE channel = 'gone')").await,
        0,
        "nothing was attempted"
    );
    let (_, metrics) = monitor_core::testing::http_get(sink.admin.port(), "/metrics").await;
    assert_eq!(
        support::sample(&metrics, "webmon_sink_notifications_failed_total"),
        Some(2.0),
        "{metrics}"
    );
    f.end(vec![sink]).await;
}
