//! Verdicts and incidents through a real broker into a real PostgreSQL, from synthetic
//! reports of three regions (deterministic, so runs can be compared row for row): the same
//! incidents whatever happens to the sink (SIGKILL mid-stream, a second replica taking the
//! partitions over, a replay into an empty database, other batch sizes), flapping that opens
//! no incident, and late reports that rewrite nothing.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use monitor_core::report::to_micros;
use monitor_core::testing::{create_topic, http_get, kafka_client, TestDatabase};
use monitor_core::Status;
use rskafka::client::Client;

use support::{
    env, incident_rows, pool, produce_in_requests_of, produce_messages, run_sink_command, sample,
    settings_from, slot_report, text_rows, verdict_tables, wait_for_offsets, wait_for_offsets_past,
    Message, RunningSink, SinkProcess,
};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const TARGETS: usize = 4;
const SLOTS: i64 = 120;

/// What `region` finds of target `t` at slot `k`; `None`: no report (the region is away).
fn outcome(t: usize, region: usize, k: i64) -> Option<Status> {
    let status = match t {
        // An outage of every region from slot 20 to 29.
        0 => (20..30).contains(&k).then_some(Status::Down),
        // One region failing from slot 10 to 59: degraded, never an incident.
        1 => (region == 2 && (10..60).contains(&k)).then_some(Status::Down),
        // Flapping every slot, everywhere.
        2 => (k % 2 == 1).then_some(Status::Down),
        // An outage, one region away for a while, and missed checks.
        _ => {
            if region == 2 && (40..70).contains(&k) {
                return None;
            }
            if region == 1 && k % 13 == 0 {
                Some(Status::Missed)
            } else {
                (50..65).contains(&k).then_some(Status::Down)
            }
        }
    };
    Some(status.unwrap_or(Status::Up))
}

/// The messages of every target (target `t` on partition `t`), slot by slot: regions in a
/// turning order, one region a slot late now and then, and some reports twice (a producer's
/// retry).
fn messages(start: DateTime<Utc>) -> Vec<Vec<Message>> {
    let mut partitions = vec![Vec::new(); TARGETS];
    for (t, messages) in partitions.iter_mut().enumerate() {
        let target = format!("v{t}");
        let mut held: Vec<Message> = Vec::new();
        for k in 0..SLOTS {
            let mut now = Vec::new();
            for i in 0..REGIONS.len() {
                let region = (i + k as usize) % REGIONS.len();
                let Some(status) = outcome(t, region, k) else {
                    continue;
                };
                let report = slot_report(&target, REGIONS[region], start, k, status);
                let message = (Some(target.clone().into_bytes()), Some(report.to_json()));
                if (k + region as i64) % 17 == 0 {
                    now.push(message.clone());
                }
                if (k + t as i64) % 11 == 0 && i == 0 {
                    held.push(message);
                } else {
                    now.push(message);
                }
            }
            messages.extend(now);
            // A lagging region's report arrives after the others' next slot.
            if k % 11 != 0 {
                messages.append(&mut held);
            }
        }
        messages.append(&mut held);
    }
    partitions
}

/// The distinct reports of [`messages`].
fn unique_reports() -> i64 {
    let mut n = 0;
    for t in 0..TARGETS {
        for k in 0..SLOTS {
            n += (0..REGIONS.len())
                .filter(|r| outcome(t, *r, k).is_some())
                .count() as i64;
        }
    }
    n
}

/// Messages in one sink batch of the runs with faults, and in one record batch of the topic
/// (see [`produce_in_requests_of`]).
const FAULT_BATCH: usize = 25;

/// A topic holding the messages of [`messages`]; returns it and the messages' count.
async fn topic_with_reports(client: &Client, start: DateTime<Utc>) -> (String, i64) {
    let topic = create_topic(client, TARGETS as i32).await;
    let mut total = 0;
    for (p, messages) in messages(start).into_iter().enumerate() {
        total += messages.len() as i64;
        produce_in_requests_of(client, &topic, p as i32, messages, FAULT_BATCH).await;
    }
    (topic, total)
}

/// A slot grid of whole seconds, an hour ago (inside the sink's window).
fn start() -> DateTime<Utc> {
    let now = to_micros(Utc::now()) - chrono::Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// The sink's test settings for `topic` into `url`, with `batch_size` messages a batch.
fn env_with(topic: &str, url: &str, batch_size: usize) -> HashMap<String, String> {
    let mut env = env(topic, url);
    env.insert("WEBMON__SINK__BATCH_SIZE".into(), batch_size.to_string());
    env
}

/// A database filled by a sink in this process from `topic`, and its verdict tables.
async fn run_in_process(topic: &str, total: i64, batch_size: usize) -> Vec<String> {
    let db = TestDatabase::create().await;
    let sink = RunningSink::start(settings_from(env_with(topic, &db.url, batch_size))).await;
    let pool = pool(&db).await;
    wait_for_offsets(&pool, topic, total, Duration::from_secs(120)).await;
    sink.stop().await.expect("the sink stops cleanly");
    let tables = verdict_tables(&pool).await;
    pool.close().await;
    db.drop_database().await;
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sigkills_a_second_replica_and_replays_give_the_same_incidents_as_a_run_without_faults() {
    let client = kafka_client().await;
    let (topic, total) = topic_with_reports(&client, start()).await;
    let reference = run_in_process(&topic, total, 500).await;

    // The same topic, with the sink SIGKILLed twice mid-stream, then two replicas of which
    // one is killed and the other takes its partitions over.
    let db = TestDatabase::create().await;
    let pool = pool(&db).await;
    let env = env_with(&topic, &db.url, FAULT_BATCH);
    let within = Duration::from_secs(120);
    for share in [4, 2] {
        let mut sink = SinkProcess::start(env.clone());
        wait_for_offsets_past(&pool, &topic, total / share, within).await;
        sink.kill().expect("SIGKILL");
        sink.wait().expect("reaped");
    }
    let mut first = SinkProcess::start(env.clone());
    let mut second = SinkProcess::start(env.clone());
    wait_for_offsets_past(&pool, &topic, total * 3 / 4, within).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    wait_for_offsets(&pool, &topic, total, within).await;
    let faulty = verdict_tables(&pool).await;
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    let rows = text_rows(&pool, "SELECT count(*)::text FROM results").await;
    pool.close().await;
    db.drop_database().await;

    assert_eq!(faulty, reference, "the faults changed the verdicts");
    assert_eq!(rows, [unique_reports().to_string()], "every report once");

    // A replay into an empty database, in batches of another size, agrees too.
    let replay = run_in_process(&topic, total, 7).await;
    assert_eq!(
        replay, reference,
        "a replay in other batches changed the verdicts"
    );

    // And the verdicts are the ones the scenario asks for.
    let incidents: Vec<&String> = reference
        .iter()
        .filter(|r| r.contains("|down|") || r.contains("|degraded|"))
        .collect();
    let down: Vec<&&String> = incidents
        .iter()
        .filter(|r| r.contains("|v0|down|"))
        .collect();
    assert_eq!(
        down.len(),
        1,
        "one outage of every region is one incident: {incidents:#?}"
    );
    assert!(
        !incidents.iter().any(|r| r.contains("|v1|down|")),
        "one failing region is no incident: {incidents:#?}"
    );
    assert!(
        incidents.iter().any(|r| r.contains("|v1|degraded|")),
        "one failing region is a degraded period: {incidents:#?}"
    );
    assert!(
        !incidents.iter().any(|r| r.contains("|v2|")),
        "a flapping target opens nothing: {incidents:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn late_reports_after_a_regions_outage_are_stored_and_counted_but_rewrite_no_incident() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 1).await;
    let db = TestDatabase::create().await;
    let pool = pool(&db).await;
    let sink = RunningSink::start(settings_from(env_with(&topic, &db.url, 50))).await;
    let start = start();
    let target = "late";
    let message = |region: &str, k: i64, status| -> Message {
        let r = slot_report(target, region, start, k, status);
        (Some(target.as_bytes().to_vec()), Some(r.to_json()))
    };
    // Every region down from slot 10 to 19; ap-south's checker cannot deliver from slot 5 to
    // 39 (its spool keeps the reports).
    let mut live = Vec::new();
    let mut spooled = Vec::new();
    for k in 0..60 {
        for region in REGIONS {
            let status = if (10..20).contains(&k) {
                Status::Down
            } else {
                Status::Up
            };
            if region == "ap-south" && (5..40).contains(&k) {
                spooled.push(message(
                    region,
                    k,
                    if (10..30).contains(&k) {
                        Status::Down
                    } else {
                        status
                    },
                ));
            } else {
                live.push(message(region, k, status));
            }
        }
    }
    let live_count = live.len() as i64;
    produce_messages(&client, &topic, 0, live).await;
    wait_for_offsets(&pool, &topic, live_count, Duration::from_secs(60)).await;
    let before = incident_rows(&pool).await;
    assert_eq!(before.len(), 1, "{before:#?}");
    assert!(before[0].contains("|down|"), "{before:#?}");
    let closed_at = slot_report(target, "eu-west", start, 20, Status::Up).scheduled_at;
    let silent = text_rows(
        &pool,
        "SELECT array_to_string(silent_regions, ',') FROM current_state",
    )
    .await;
    assert_eq!(silent, ["".to_string()], "ap-south came back");

    // Late already: the other regions' reports of the first slot (made final by the first
    // report of the target) and ap-south's first report back (made final by the others).
    let late = async || {
        let (_, metrics) = http_get(sink.admin.port(), "/metrics").await;
        sample(&metrics, "webmon_sink_late_reports_total")
    };
    assert_eq!(late().await, Some(3.0));

    // The spool is delivered: 35 reports of slots long final.
    let spooled_count = spooled.len() as i64;
    produce_messages(&client, &topic, 0, spooled).await;
    wait_for_offsets(
        &pool,
        &topic,
        live_count + spooled_count,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        incident_rows(&pool).await,
        before,
        "late reports rewrote an incident"
    );
    let closed = text_rows(&pool, "SELECT closed_at::text FROM incidents").await;
    assert_eq!(closed.len(), 1);
    assert!(
        closed[0].starts_with(&closed_at.format("%Y-%m-%d %H:%M:%S").to_string()),
        "{closed:?} {closed_at}"
    );
    let stored = text_rows(
        &pool,
        "SELECT count(*)::text FROM results WHERE checker_id = 'ap-south'",
    )
    .await;
    assert_eq!(stored, ["60".to_string()], "late reports are stored");
    assert_eq!(late().await, Some(3.0 + spooled_count as f64));
    sink.stop().await.expect("the sink stops cleanly");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn sink_report_shows_state_incidents_mttr_mtbf_and_uptime_from_the_verdicts() {
    let db = TestDatabase::create().await;
    let pool = pool(&db).await;
    sink::db::migrate(&pool).await.expect("migrations apply");
    let store = sink::store::ReportStore::new(pool.clone())
        .with_verdicts(sink::verdicts::Verdicts::default());
    // Two regions; every region down at slots 10-14 and 30-34 (two incidents of 5 s, 15 s
    // apart); one region down at 50-59 (degraded, up by slot quorum); down again from 80.
    let start = start();
    let mut batch = sink::store::Batch::new("report", 0, None, 0);
    let window = sink::decode::Window::default();
    let mut offset = 0;
    for k in 0..90 {
        for (i, region) in ["eu-west", "us-east"].into_iter().enumerate() {
            let down = (10..15).contains(&k)
                || (30..35).contains(&k)
                || (i == 0 && (50..60).contains(&k))
                || k >= 80;
            let status = if down { Status::Down } else { Status::Up };
            let r = slot_report("reported", region, start, k, status);
            sink::decode::push(&mut batch, &window, offset, None, Some(r.to_json()));
            offset += 1;
        }
    }
    let stored = store.store(&batch).await.expect("stored");
    assert_eq!(stored.rows, 180);
    assert_eq!(
        stored.folded.opened, 4,
        "three incidents and a degraded period"
    );

    let out = run_sink_command(&db.url, &["report", "--since", "24h", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let target = &json[0];
    assert_eq!(target["state"], "down");
    assert_eq!(target["open_incident"][0], "down");
    assert_eq!(target["incidents"], 3);
    assert_eq!(target["mttr_s"], 5.0, "two closed incidents of 5 s");
    assert_eq!(target["mtbf_s"], 30.0, "15 s and 45 s between them");
    // 90 final slots: 20 down, 10 degraded (up for uptime).
    let uptime = target["verdict_uptime_percent"].as_f64().expect("uptime");
    assert!((uptime - 100.0 * 70.0 / 90.0).abs() < 1e-9, "{uptime}");
    let table = run_sink_command(&db.url, &["report"]);
    assert!(table.contains("STATE") && table.contains("MTTR"), "{table}");
    assert!(table.contains("down since"), "{table}");
    pool.close().await;
    db.drop_database().await;
}

/// `sink.verdicts.retention`: verdict hours before the cutoff and incidents closed before it
/// are deleted, in batches; recent hours, recent incidents and open incidents (however old)
/// are kept.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn retention_deletes_old_verdict_hours_and_closed_incidents_but_keeps_open_ones() {
    let db = TestDatabase::create().await;
    let (pool, _store) = support::migrated_store(&db).await;
    let setup = [
        "INSERT INTO targets (target_id, url) SELECT 't' || i, 'http://t' || i FROM generate_series(1, 10) i",
        // 10,001 hours of 10 targets: 100,010 rows, from 10,000 hours (416 days) back to now.
        "INSERT INTO verdict_hours (target_id, hour, up) \
         SELECT 't' || i, date_trunc('hour', now()) - h * interval '1 hour', 60 \
         FROM generate_series(1, 10) i, generate_series(0, 10000) h",
        "INSERT INTO incidents (incident_id, target_id, kind, opened_at, detected_at, closed_at, regions, checks_failed) VALUES \
         (gen_random_uuid(), 't1', 'down', now() - interval '200 days', now() - interval '200 days', now() - interval '199 days', '{eu}', 3), \
         (gen_random_uuid(), 't2', 'down', now() - interval '200 days', now() - interval '200 days', NULL, '{eu}', 3), \
         (gen_random_uuid(), 't3', 'degraded', now() - interval '2 days', now() - interval '2 days', now() - interval '1 day', '{eu}', 1)",
    ];
    for sql in setup {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    let cutoff = Utc::now() - chrono::Duration::days(100);
    let pruned = sink::verdicts::prune_before(&pool, cutoff)
        .await
        .expect("prune");
    let kept_hours = support::count(&pool, "SELECT count(*) FROM verdict_hours").await;
    let old_left = support::count(
        &pool,
        &format!(
            "SELECT count(*) FROM verdict_hours WHERE hour < '{}'",
            cutoff.to_rfc3339()
        ),
    )
    .await;
    assert_eq!(old_left, 0, "no hour before the cutoff is left");
    assert_eq!(
        pruned.hours as i64 + kept_hours,
        100_010,
        "what was deleted and what is kept add up"
    );
    assert!(
        pruned.hours > sink::verdicts::PRUNE_BATCH as u64,
        "deleted in several batches"
    );
    assert_eq!(pruned.incidents, 1, "only the old closed incident goes");
    let left = text_rows(&pool, "SELECT target_id FROM incidents ORDER BY target_id").await;
    assert_eq!(
        left,
        ["t2", "t3"],
        "the open incident and the recent one stay"
    );
}

/// Stores `chunks` of reports in turn through `stores` (chunk i by store i % n, on partition
/// i % n), each store keeping its own offsets; returns what the verdicts wrote.
async fn store_in_turn(
    stores: &[sink::store::ReportStore],
    chunks: &[Vec<monitor_core::Report>],
    pool: &sqlx::PgPool,
) -> Vec<String> {
    let mut next = vec![0i64; stores.len()];
    for (i, chunk) in chunks.iter().enumerate() {
        let n = i % stores.len();
        let start = next[n];
        let expected = (start > 0).then_some(start);
        let mut batch =
            sink::store::Batch::new("turns", n as i32, expected, start + chunk.len() as i64);
        for (j, report) in chunk.iter().enumerate() {
            batch.push_report(start + j as i64, None, None, report.clone());
        }
        stores[n].store(&batch).await.expect("store");
        next[n] += chunk.len() as i64;
    }
    verdict_tables(pool).await
}

/// Two replicas writing one target's state in turn (as after a partition moved, or the topic
/// grew partitions): each keeps the states it wrote in memory, and must find that the other
/// wrote since. The incidents and states are those of one replica storing everything.
#[tokio::test]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn replicas_writing_a_targets_state_in_turn_give_the_states_of_one_replica() {
    use sink::store::ReportStore;
    use sink::verdicts::Verdicts;
    let start = start();
    let reports: Vec<monitor_core::Report> = (0..SLOTS)
        .flat_map(|k| {
            (0..REGIONS.len()).filter_map(move |r| {
                let status = outcome(0, r, k)?;
                Some(slot_report("t-0", REGIONS[r], start, k, status))
            })
        })
        .collect();
    let chunks: Vec<Vec<_>> = reports.chunks(7).map(<[_]>::to_vec).collect();

    let one = TestDatabase::create().await;
    let (pool_one, store) = support::migrated_store(&one).await;
    let alone = store_in_turn(
        &[store.with_verdicts(Verdicts::default())],
        &chunks,
        &pool_one,
    )
    .await;

    let two = TestDatabase::create().await;
    let (pool_two, a) = support::migrated_store(&two).await;
    let b = ReportStore::new(pool_two.clone());
    let stores = [
        a.with_verdicts(Verdicts::default()),
        b.with_verdicts(Verdicts::default()),
    ];
    let in_turn = store_in_turn(&stores, &chunks, &pool_two).await;

    assert!(
        alone.iter().any(|row| row.contains("down")),
        "the run opens an incident: {alone:#?}"
    );
    assert_eq!(
        in_turn, alone,
        "two replicas in turn wrote what one replica writes"
    );
}
