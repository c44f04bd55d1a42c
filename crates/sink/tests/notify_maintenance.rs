//! A one-off maintenance window end to end: crafted reports of two targets down in every
//! region, their slot times inside a `[[sink.maintenance]]` window (windows are judged on
//! slot time, never the wall clock), through a real broker into a real PostgreSQL, with the
//! dispatcher delivering to a webhook receiver on port 0. An outage over within the window
//! is told to no one and left out of the verdict uptime; one that outlasts its window is
//! notified like any other, once opened and once resolved.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::Status;
use support::http::Receiver;
use support::notify::{notifications, start, Fixture, REGIONS};
use support::{count, slot_report, text_rows, Message};

/// Slots of each target's reports.
const SLOTS: i64 = 24;
/// The window: slots 2 to 15.
const WINDOW: (i64, i64) = (2, 16);

/// Reports of `target` from every region for [`SLOTS`] slots from `start`, down in slots
/// `down`.
fn reports(target: &str, start: DateTime<Utc>, down: std::ops::Range<i64>) -> Vec<Message> {
    let mut out = Vec::new();
    for k in 0..SLOTS {
        for region in REGIONS {
            let status = if down.contains(&k) {
                Status::Down
            } else {
                Status::Up
            };
            let mut r = slot_report(target, region, start, k, status);
            r.tls_cert_not_after = None;
            out.push((Some(target.as_bytes().to_vec()), Some(r.to_json())));
        }
    }
    out
}

/// Every target to a webhook at `hook`, and the window over `calm` and `long`.
fn settings(hook: &Receiver, start: DateTime<Utc>) -> String {
    let at = |k: i64| (start + chrono::Duration::seconds(k)).to_rfc3339();
    notifications("default_channels = [\"hook\"]")
        + &format!(
            "[sink.notifications.channels.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s\"\n\
             [[sink.maintenance]]\nname = \"database upgrade\"\nstart = \"{}\"\nend = \"{}\"\ntargets = [\"calm\", \"long\"]\n",
            hook.url,
            at(WINDOW.0),
            at(WINDOW.1)
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_maintenance_window_silences_its_outage_leaves_it_out_of_uptime_and_tells_one_that_outlasts_it(
) {
    let hook = Receiver::start().await;
    let start = start();
    // `calm` is down in slots 4 to 11, inside the window; `long` from 4 to 19, past its end.
    let mut messages = reports("calm", start, 4..12);
    messages.extend(reports("long", start, 4..20));
    let mut f = Fixture::new(messages).await;
    let sink = f.start(&settings(&hook, start)).await;
    f.stored().await;

    // Every report stored: the fold wrote its notifications in the same transactions.
    let calm = "SELECT count(*) FROM notifications WHERE event->>'target_id' = 'calm'";
    assert_eq!(count(&f.pool, calm).await, 0, "nothing told of `calm`");
    f.notifications("status = 'delivered' AND attempts = 1", 2)
        .await;
    let keys = text_rows(&f.pool, "SELECT event_key FROM notifications ORDER BY seq").await;
    let incident = text_rows(
        &f.pool,
        "SELECT incident_id::text FROM incidents WHERE target_id = 'long'",
    )
    .await;
    assert_eq!(incident.len(), 1, "one incident of `long`");
    assert_eq!(
        keys,
        [
            format!("incident/{}/opened", incident[0]),
            format!("incident/{}/resolved", incident[0])
        ]
    );
    let answered: Vec<String> = hook.answered().into_iter().map(|(r, _)| r.key).collect();
    assert_eq!(
        answered, keys,
        "`long` once opened, once resolved; `calm` never"
    );

    let summaries = sink::uptime::summarize(&f.pool, Duration::from_secs(7200), Some("calm"))
        .await
        .expect("the report reads");
    assert_eq!(summaries.len(), 1);
    let window_slots = WINDOW.1 - WINDOW.0;
    assert_eq!(summaries[0].maintenance_slots, window_slots);
    assert_eq!(
        summaries[0].verdict_uptime_percent,
        Some(100.0),
        "the only down slots were in the window"
    );
    f.end(vec![sink]).await;
}
