//! Wiring: connect, migrate, then a coordinator that takes a fair share of the topic's
//! partitions through leases, runs one consumer per owned partition, gives partitions back
//! when more replicas join, and stops everything on shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use monitor_core::settings::SinkSettings;
use rskafka::client::Client;
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
use monitor_core::backoff::Backoff;

/// How long Kafka requests retry inside the client before the caller's own backoff takes over.
const KAFKA_RETRY_FOR: Duration = Duration::from_secs(10);
/// How often partitions are created ahead and old ones dropped.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);
/// How long consumers get to store their last batch when the lease connection is lost.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The part of `sink.shutdown_timeout` kept for releasing the partitions after the consumers
/// stopped; they get the rest.
const RELEASE_RESERVE: Duration = Duration::from_secs(1);

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
    let options = db::connect_options(&settings.database)?;
    let pool = db::pool(&settings.database)?;
    let store = Arc::new(ReportStore::new(pool));
    let mut backoff = Backoff::default();

    if settings.sink.migrate_on_start {
        loop {
            match db::migrate(store.pool()).await {
                Ok(()) => break,
                Err(SinkError::Migrate(sqlx::migrate::MigrateError::Execute(e))) => {
                    warn!(error = %e, "database not reachable for migrations; retrying");
                }
                Err(e) => return Err(e),
            }
            if !backoff.sleep(shutdown.cancelled()).await {
                return Ok(());
            }
        }
        info!("migrations applied");
    }

    let client = loop {
        let attempt = tokio::select! {
            attempt = monitor_core::kafka::connect(&settings.kafka, "web-monitor-sink", KAFKA_RETRY_FOR) => attempt,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match attempt {
            Ok(c) => break Arc::new(c),
            Err(e) => {
                warn!(error = %e, "Kafka not reachable; retrying");
                if !backoff.sleep(shutdown.cancelled()).await {
                    return Ok(());
                }
            }
        }
    };
    let topic = settings.kafka.topic.clone();
    let config = ConsumerConfig {
        batch_size: settings.sink.batch_size,
        batch_linger: settings.sink.batch_linger,
        fetch_max_wait: settings.sink.fetch_max_wait,
    };

    let mut running: HashMap<i32, Running> = HashMap::new();
    let mut leases: Option<Leases> = None;
    let mut partitions = 0i32;
    let mut last_housekeeping: Option<Instant> = None;
    let mut tick = tokio::time::interval(settings.sink.rebalance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY)
            && housekeeping(&store, &settings).await
        {
            last_housekeeping = Some(Instant::now());
        }
        match topic_partitions(&client, &settings).await {
            Ok(n) if n > 0 => partitions = n,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read the topic's metadata; retrying"),
        }

        // Consumers that ended by themselves lost their partition or failed: give it back.
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

        if let Some(l) = leases.as_mut() {
            if let Err(e) = l.ping().await {
                metrics.ready.store(false, Ordering::Relaxed);
                metrics.db_errors.inc();
                warn!(error = %e, "lost the lease connection: stopping every consumer");
                stop_all(&mut running).await;
                if let Some(l) = leases.take() {
                    l.leave().await;
                }
            }
        }
        if leases.is_none() {
            match Leases::join(&options, &topic).await {
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
        if partitions == 0 {
            continue;
        }
        match rebalance(
            l,
            &mut running,
            partitions,
            &client,
            &store,
            &topic,
            config,
            &metrics,
        )
        .await
        {
            Ok(()) => metrics.ready.store(true, Ordering::Relaxed),
            Err(e) => {
                metrics.ready.store(false, Ordering::Relaxed);
                metrics.db_errors.inc();
                warn!(error = %e, "rebalancing failed; retrying");
            }
        }
        metrics
            .owned_partitions
            .set(i64::try_from(l.owned().len()).unwrap_or(0));
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

/// Takes or gives back partitions so this replica owns its fair share.
#[allow(clippy::too_many_arguments)]
async fn rebalance(
    leases: &mut Leases,
    running: &mut HashMap<i32, Running>,
    partitions: i32,
    client: &Arc<Client>,
    store: &Arc<ReportStore>,
    topic: &str,
    config: ConsumerConfig,
    metrics: &Arc<SinkMetrics>,
) -> Result<(), SinkError> {
    let members = leases.members().await?;
    let total = usize::try_from(partitions).unwrap_or(0);
    let fair = total.div_ceil(members).max(1);

    while leases.owned().len() > fair {
        let Some(&partition) = leases.owned().iter().next_back() else {
            break;
        };
        if let Some(r) = running.remove(&partition) {
            r.stop.cancel();
            let _ = r.task.await;
        }
        leases.release(partition).await?;
        info!(partition, members, "gave a partition back");
    }

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
                    client.clone(),
                    store.clone(),
                    topic.to_string(),
                    partition,
                    config,
                    metrics.clone(),
                    stop.clone(),
                ));
                running.insert(partition, Running { stop, task });
            }
        }
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

/// Creates the day partitions ahead and drops those past the retention. True when done.
async fn housekeeping(store: &ReportStore, settings: &SinkSettings) -> bool {
    if let Err(e) = store.create_partitions_around_now(1, 3).await {
        warn!(error = %e, "cannot create the table partitions ahead; retrying");
        return false;
    }
    if let Some(retention) = settings.sink.retention {
        let Ok(retention) = chrono::Duration::from_std(retention) else {
            return true;
        };
        let cutoff = chrono::Utc::now() - retention;
        if let Err(e) = store.drop_partitions_before(cutoff).await {
            warn!(error = %e, "cannot drop partitions past the retention; retrying");
            return false;
        }
    }
    true
}
