//! Wiring: connect, migrate, then a coordinator that takes a fair share of the topic's
//! partitions through leases, runs one consumer per owned partition, gives partitions back
//! when more replicas join, and stops everything on shutdown.
//!
//! The coordinator keeps the leases alive (it pings the lock connection once per rebalance
//! interval, and the server ends a silent lock session after [`crate::leases::lease_timeout`]),
//! so nothing slow runs on its path: housekeeping (creating day partitions ahead, dropping
//! those past the retention; DDL that can wait for a lock behind a long query) and the topic's
//! metadata (a Kafka request) each run in a task of their own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monitor_core::settings::SinkSettings;
use rskafka::client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::consumer::{consume, ConsumerConfig};
use crate::db;
use crate::leases::Leases;
use crate::metrics::SinkMetrics;
use crate::store::ReportStore;
use crate::SinkError;
use monitor_core::runtime::backoff::Backoff;

/// How long Kafka requests retry inside the client before the caller's own backoff takes over.
const KAFKA_RETRY_FOR: Duration = Duration::from_secs(10);
/// How often partitions are created ahead and old ones dropped.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// How soon housekeeping that failed (a long query held its lock, the database was away) is
/// tried again.
const HOUSEKEEPING_RETRY: Duration = Duration::from_secs(10);
/// Days of partitions created behind and ahead of today by housekeeping.
const DAYS_BACK: i64 = 1;
const DAYS_AHEAD: i64 = 3;
/// How long consumers get to store their last batch when the lease connection is lost.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The part of `sink.shutdown_timeout` kept for releasing the partitions after the consumers
/// stopped; they get the rest.
const RELEASE_RESERVE: Duration = Duration::from_secs(1);
/// How long a consumer giving its partition back gets to store its last batch; it is then
/// aborted (its transaction never commits, its messages are read again by the next owner) and
/// the lease released, so no consumer outlives its lease.
const GIVE_BACK_WAIT: Duration = Duration::from_secs(5);

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), SinkError>>,
}

/// Runs the sink until `shutdown` fires. Outages of Kafka or PostgreSQL are waited out; only
/// faults of the sink itself (such as a failed migration) end it with an error.
pub async fn run(settings: SinkSettings, shutdown: CancellationToken) -> Result<(), SinkError> {
    run_with_metrics(settings, Arc::default(), shutdown).await
}

/// [`run`], recording into `metrics`.
pub async fn run_with_metrics(
    settings: SinkSettings,
    metrics: Arc<SinkMetrics>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let pool = db::pool(&settings.database)?;
    let store = Arc::new(ReportStore::new(pool));
    if settings.sink.migrate_on_start && !migrate(&store, &shutdown).await? {
        return Ok(());
    }
    let Some(client) = connect_kafka(&settings, &shutdown).await else {
        return Ok(());
    };

    let stop_tasks = shutdown.child_token();
    let housekeeping = tokio::spawn(housekeeping_loop(
        store.clone(),
        settings.sink.retention,
        stop_tasks.clone(),
    ));
    let (partitions_tx, partitions) = watch::channel(0);
    let metadata = tokio::spawn(watch_partitions(
        client.clone(),
        settings.clone(),
        partitions_tx,
        stop_tasks.clone(),
    ));
    let result = coordinate(&settings, client, store, partitions, &metrics, &shutdown).await;
    stop_tasks.cancel();
    let _ = housekeeping.await;
    let _ = metadata.await;
    result
}

/// Applies the migrations, waiting for the database. False when shut down first.
async fn migrate(store: &ReportStore, shutdown: &CancellationToken) -> Result<bool, SinkError> {
    let mut backoff = Backoff::default();
    loop {
        match db::migrate(store.pool()).await {
            Ok(()) => break,
            Err(SinkError::Migrate(sqlx::migrate::MigrateError::Execute(e))) => {
                warn!(error = %e, "database not reachable for migrations; retrying");
            }
            // A connection lost while a migration runs (it is rolled back) is retried too.
            Err(SinkError::Migrate(sqlx::migrate::MigrateError::ExecuteMigration(e, version)))
                if connection_lost(&e) =>
            {
                warn!(error = %e, version, "connection lost during a migration; retrying");
            }
            Err(e) => return Err(e),
        }
        if !backoff.sleep(shutdown.cancelled()).await {
            return Ok(false);
        }
    }
    info!("migrations applied");
    Ok(true)
}

/// A Kafka client, waiting for the brokers. `None` when shut down first.
async fn connect_kafka(
    settings: &SinkSettings,
    shutdown: &CancellationToken,
) -> Option<Arc<Client>> {
    let mut backoff = Backoff::default();
    loop {
        let attempt = tokio::select! {
            attempt = monitor_core::runtime::broker::connect(&settings.kafka, "web-monitor-sink", KAFKA_RETRY_FOR) => attempt,
            _ = shutdown.cancelled() => return None,
        };
        match attempt {
            Ok(c) => return Some(Arc::new(c)),
            Err(e) => {
                warn!(error = %e, "Kafka not reachable; retrying");
                if !backoff.sleep(shutdown.cancelled()).await {
                    return None;
                }
            }
        }
    }
}

/// The coordinator: keeps the leases alive and this replica's share of partitions consumed,
/// until `shutdown`.
async fn coordinate(
    settings: &SinkSettings,
    client: Arc<Client>,
    store: Arc<ReportStore>,
    mut partitions: watch::Receiver<i32>,
    metrics: &Arc<SinkMetrics>,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    let options = db::connect_options(&settings.database)?;
    let topic = settings.kafka.topic.clone();
    let config = ConsumerConfig {
        batch_size: settings.sink.batch_size,
        batch_linger: settings.sink.batch_linger,
        fetch_max_wait: settings.sink.fetch_max_wait,
        batch_bytes: crate::consumer::MAX_BATCH_BYTES,
        window: crate::decode::Window::from_retention(settings.sink.retention),
    };
    let interval = settings.sink.rebalance_interval;
    let mut running: HashMap<i32, Running> = HashMap::new();
    let mut leases: Option<Leases> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            Ok(()) = partitions.changed() => {}
        }
        reap_ended(&mut running, &mut leases).await;

        if let Some(l) = leases.as_mut() {
            if let Err(e) = l.ping().await {
                warn!(error = %e, "lost the lease connection: stopping every consumer");
                lose_leases(&mut running, &mut leases, metrics).await;
            }
        }
        if leases.is_none() {
            match Leases::join(&options, &topic, interval).await {
                Ok(l) => {
                    info!(slot = ?l.slot(), "joined");
                    leases = Some(l);
                }
                Err(e) => {
                    metrics.ready.store(false, Ordering::Relaxed);
                    metrics.db_errors.inc();
                    warn!(error = %e, "cannot take leases; retrying");
                    continue;
                }
            }
        }
        let Some(l) = leases.as_mut() else { continue };
        let count = *partitions.borrow_and_update();
        if count == 0 {
            continue;
        }
        let target = Target {
            client: &client,
            store: &store,
            topic: &topic,
            config,
            metrics,
        };
        match rebalance(l, &mut running, count, &target).await {
            Ok(()) => metrics.ready.store(true, Ordering::Relaxed),
            Err(e @ SinkError::LeaseUnresponsive(_)) => {
                warn!(error = %e, "the lease connection stopped answering: stopping every consumer");
                lose_leases(&mut running, &mut leases, metrics).await;
            }
            Err(e) => {
                metrics.ready.store(false, Ordering::Relaxed);
                metrics.db_errors.inc();
                warn!(error = %e, "rebalancing failed; retrying");
            }
        }
        let owned = leases.as_ref().map_or(0, |l| l.owned().len());
        metrics
            .owned_partitions
            .set(i64::try_from(owned).unwrap_or(0));
    }

    metrics.ready.store(false, Ordering::Relaxed);
    info!("shutting down: storing what is fetched, then releasing the partitions");
    let grace = settings
        .sink
        .shutdown_timeout
        .saturating_sub(RELEASE_RESERVE);
    stop_all_within(&mut running, grace).await;
    if let Some(l) = leases.take() {
        l.leave().await;
    }
    Ok(())
}

/// Consumers that ended by themselves lost their partition or failed: give it back.
async fn reap_ended(running: &mut HashMap<i32, Running>, leases: &mut Option<Leases>) {
    let ended: Vec<i32> = running
        .iter()
        .filter(|(_, r)| r.task.is_finished())
        .map(|(p, _)| *p)
        .collect();
    for partition in ended {
        if let Some(r) = running.remove(&partition) {
            match r.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(partition, error = %e, "consumer stopped"),
                Err(e) => error!(partition, error = %e, "consumer panicked"),
            }
        }
        if let Some(l) = leases.as_mut() {
            if let Err(e) = l.release(partition).await {
                warn!(error = %e, "releasing a lease failed");
            }
        }
    }
}

/// The lease connection is gone or does not answer: stop every consumer and drop it.
async fn lose_leases(
    running: &mut HashMap<i32, Running>,
    leases: &mut Option<Leases>,
    metrics: &SinkMetrics,
) {
    metrics.ready.store(false, Ordering::Relaxed);
    metrics.db_errors.inc();
    metrics.owned_partitions.set(0);
    stop_all(running).await;
    if let Some(l) = leases.take() {
        l.leave().await;
    }
}

/// What a consumer of a newly taken partition needs.
struct Target<'a> {
    client: &'a Arc<Client>,
    store: &'a Arc<ReportStore>,
    topic: &'a str,
    config: ConsumerConfig,
    metrics: &'a Arc<SinkMetrics>,
}

/// Whether `error` is a lost connection (I/O, or SQLSTATE class 08 or 57 such as an
/// administrator's termination) rather than a fault of the statement.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
        _ => false,
    }
}

/// Takes or gives back partitions so this replica owns its fair share.
async fn rebalance(
    leases: &mut Leases,
    running: &mut HashMap<i32, Running>,
    partitions: i32,
    target: &Target<'_>,
) -> Result<(), SinkError> {
    let members = leases.members().await?;
    let total = usize::try_from(partitions).unwrap_or(0);
    let fair = total.div_ceil(members).max(1);

    let surplus: Vec<i32> = leases
        .owned()
        .iter()
        .rev()
        .take(leases.owned().len().saturating_sub(fair))
        .copied()
        .collect();
    give_back(leases, running, &surplus, members).await?;

    if leases.owned().len() < fair {
        // Start looking at a different place per replica, so they do not all race for the
        // same partitions.
        let start = leases.slot().unwrap_or(0).rem_euclid(partitions);
        for i in 0..partitions {
            if leases.owned().len() >= fair {
                break;
            }
            let partition = (start + i) % partitions;
            if leases.owned().contains(&partition) {
                continue;
            }
            if leases.try_acquire(partition).await? {
                info!(partition, members, "took a partition");
                let stop = CancellationToken::new();
                let task = tokio::spawn(consume(
                    target.client.clone(),
                    target.store.clone(),
                    target.topic.to_string(),
                    partition,
                    target.config,
                    target.metrics.clone(),
                    stop.clone(),
                ));
                running.insert(partition, Running { stop, task });
            }
        }
    }
    Ok(())
}

/// Stops the consumers of `surplus` (each may store its last batch, all within
/// [`GIVE_BACK_WAIT`]; one still running then is aborted) and releases their leases.
async fn give_back(
    leases: &mut Leases,
    running: &mut HashMap<i32, Running>,
    surplus: &[i32],
    members: usize,
) -> Result<(), SinkError> {
    let stopping: Vec<(i32, Running)> = surplus
        .iter()
        .filter_map(|p| running.remove(p).map(|r| (*p, r)))
        .collect();
    for (_, r) in &stopping {
        r.stop.cancel();
    }
    let deadline = Instant::now() + GIVE_BACK_WAIT;
    for (partition, mut r) in stopping {
        if tokio::time::timeout_at(deadline, &mut r.task)
            .await
            .is_err()
        {
            r.task.abort();
            // Returns once the consumer, and the transaction it held, are dropped.
            let _ = r.task.await;
            warn!(
                partition,
                wait_ms = GIVE_BACK_WAIT.as_millis() as u64,
                "consumer did not store its last batch in time: abandoned uncommitted, giving the partition back"
            );
        }
    }
    for &partition in surplus {
        leases.release(partition).await?;
        info!(partition, members, "gave a partition back");
    }
    Ok(())
}

async fn stop_all(running: &mut HashMap<i32, Running>) {
    stop_all_within(running, SHUTDOWN_GRACE).await;
}

/// Stops every consumer, letting each store what it fetched within `grace`; one still running
/// then (a transaction stuck behind a lock, a database that stopped answering) is aborted:
/// its transaction never commits, its offset does not move, and its messages are read again.
async fn stop_all_within(running: &mut HashMap<i32, Running>, grace: Duration) {
    for r in running.values() {
        r.stop.cancel();
    }
    let deadline = Instant::now() + grace;
    for (partition, mut r) in running.drain() {
        match tokio::time::timeout_at(deadline, &mut r.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(partition, error = %e, "consumer stopped with an error"),
            Ok(Err(e)) => error!(partition, error = %e, "consumer panicked"),
            Err(_) => {
                r.task.abort();
                // Returns once the consumer, and the transaction it held, are dropped.
                let _ = r.task.await;
                warn!(
                    partition,
                    grace_ms = grace.as_millis() as u64,
                    "consumer did not stop in time: its batch was abandoned uncommitted and will be read again"
                );
            }
        }
    }
}

/// The topic's partition count, creating the topic when missing (and allowed).
async fn topic_partitions(client: &Client, settings: &SinkSettings) -> Result<i32, SinkError> {
    let topics = client.list_topics().await?;
    if let Some(t) = topics.iter().find(|t| t.name == settings.kafka.topic) {
        return Ok(i32::try_from(t.partitions.len()).unwrap_or(i32::MAX));
    }
    if settings.kafka.create_topic {
        info!(topic = %settings.kafka.topic, partitions = settings.kafka.partitions, "creating the topic");
        match client
            .controller_client()?
            .create_topic(
                &settings.kafka.topic,
                settings.kafka.partitions,
                settings.kafka.replication_factor,
                5_000,
            )
            .await
        {
            Ok(()) => return Ok(settings.kafka.partitions),
            Err(e) => {
                warn!(error = %e, "creating the topic failed (another service may have created it)")
            }
        }
    } else {
        warn!(topic = %settings.kafka.topic, "the topic does not exist and create_topic is off: waiting for it");
    }
    Ok(0)
}

/// Keeps the topic's partition count in `partitions`, read every rebalance interval, until
/// `stop`.
async fn watch_partitions(
    client: Arc<Client>,
    settings: SinkSettings,
    partitions: watch::Sender<i32>,
    stop: CancellationToken,
) {
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = topic_partitions(&client, &settings) => read,
        };
        match read {
            Ok(n) if n > 0 => {
                partitions.send_if_modified(|p| std::mem::replace(p, n) != n);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the topic's metadata; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.sink.rebalance_interval) => {}
        }
    }
}

/// Housekeeping at start, then every [`HOUSEKEEPING_EVERY`] (every [`HOUSEKEEPING_RETRY`] while
/// it fails), until `stop`.
async fn housekeeping_loop(
    store: Arc<ReportStore>,
    retention: Option<Duration>,
    stop: CancellationToken,
) {
    loop {
        let done = tokio::select! {
            _ = stop.cancelled() => return,
            done = housekeeping(&store, retention) => done,
        };
        let next = if done {
            HOUSEKEEPING_EVERY
        } else {
            HOUSEKEEPING_RETRY
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// Creates the day partitions ahead and drops those past the retention. True when done.
async fn housekeeping(store: &ReportStore, retention: Option<Duration>) -> bool {
    if let Err(e) = store
        .create_partitions_around_now(DAYS_BACK, DAYS_AHEAD)
        .await
    {
        warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot create the table partitions ahead; retrying");
        return false;
    }
    let Some(retention) = retention else {
        return true;
    };
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return true;
    };
    let cutoff = chrono::Utc::now() - retention;
    if let Err(e) = store.drop_partitions_before(cutoff).await {
        warn!(error = %e, retry_in = ?HOUSEKEEPING_RETRY, "cannot drop partitions past the retention; retrying");
        return false;
    }
    true
}
