//! [`Application`]: the sink as a library. [`Application::build`] binds the admin endpoint (port
//! 0 picks a free one, see [`Application::admin_addr`]); [`Application::run_until_stopped`]
//! connects, migrates, and runs the coordinator until the shutdown token fires, bounded by
//! `sink.shutdown_timeout` from then on. `main` only parses the command line, loads the
//! settings and calls these; tests start the sink the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monitor_core::runtime::admin::{self, AdminState};
use monitor_core::settings::SinkSettings;
use prometheus_client::registry::Registry;
use rskafka::client::Client;
use sqlx::migrate::MigrateError;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api;
use crate::catalog::{self, Catalog, Followers};
use crate::consumer::{Budget, Consumer};
use crate::coordinator::Coordinator;
use crate::db;
use crate::error::SinkError;
use crate::housekeeping;
use crate::http::HttpState;
use crate::metrics::{SinkMetrics, STALL_BOUND};
use crate::notify::dispatch::Dispatcher;
use crate::retry::retry_until_stopped;
use crate::status;
use crate::store::ReportStore;
use crate::topic;
use crate::verdicts::{gauges, Rules, Verdicts};

/// How long Kafka requests retry inside the client before the caller's own backoff takes over.
pub const KAFKA_RETRY_FOR: Duration = Duration::from_secs(10);

/// The sink, its admin endpoint bound, ready to run.
#[derive(Debug)]
pub struct Application {
    settings: SinkSettings,
    listener: TcpListener,
    admin_addr: SocketAddr,
    /// The targets API and status page's listener, unless `sink.http_listen` is `off`.
    http: Option<(TcpListener, SocketAddr)>,
    registry: Registry,
    metrics: Arc<SinkMetrics>,
    /// Whether reports are folded into verdicts, state and incidents.
    verdicts: bool,
}

impl Application {
    /// Binds the admin endpoint on `sink.admin_listen` and registers the metrics.
    pub async fn build(settings: SinkSettings) -> Result<Application, SinkError> {
        Application::build_with_stall_bound(settings, STALL_BOUND).await
    }

    /// [`Application::build`], with a stall bound for readiness other than [`STALL_BOUND`].
    pub async fn build_with_stall_bound(
        settings: SinkSettings,
        stall_bound: Duration,
    ) -> Result<Application, SinkError> {
        let mut registry = Registry::default();
        let metrics = SinkMetrics::register_with_stall_bound(&mut registry, stall_bound);
        let addr = settings.sink.admin_listen.clone();
        let bound = match admin::bind(&addr).await {
            Ok(listener) => listener.local_addr().map(|a| (listener, a)),
            Err(e) => Err(e),
        };
        let (listener, admin_addr) = bound.map_err(|source| SinkError::Admin { addr, source })?;
        let http = match settings.sink.http_listen.clone() {
            None => None,
            Some(addr) => Some(
                bind_http(&addr)
                    .await
                    .map_err(|source| SinkError::Http { addr, source })?,
            ),
        };
        Ok(Application {
            settings,
            listener,
            admin_addr,
            http,
            registry,
            metrics,
            verdicts: true,
        })
    }

    /// This sink storing rows alone, without verdicts, state or incidents: the benchmark's
    /// baseline. Reports stored this way are never folded, so a database kept by such a sink
    /// has no verdicts for them.
    pub fn without_verdicts(mut self) -> Application {
        self.verdicts = false;
        self
    }

    /// The address the admin endpoint listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The address the targets API and the status page listen on, unless `sink.http_listen`
    /// is `off`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves the admin endpoint and runs the sink until `shutdown` fires. Outages of Kafka or
    /// PostgreSQL are waited out; only faults of the sink itself (such as a failed migration)
    /// end it with an error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let ready = self.metrics.clone();
        let state = Arc::new(AdminState {
            registry: Mutex::new(self.registry),
            ready: Box::new(move || ready.is_ready()),
        });
        let stop_admin = shutdown.child_token();
        let admin_task = tokio::spawn(admin::serve(self.listener, state, stop_admin.clone()));
        let bound = self.settings.sink.shutdown_timeout;
        let http = self.http.map(|(listener, _)| listener);
        let run = run(self.settings, self.metrics, self.verdicts, http, &shutdown);
        let result = within_shutdown_timeout(run, &shutdown, bound).await;
        stop_admin.cancel();
        let _ = admin_task.await;
        result
    }
}

/// Binds the HTTP side's address.
async fn bind_http(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Connects, migrates, then serves the HTTP side and runs housekeeping, the verdict gauges,
/// the notifications' dispatcher, the topic watch and the coordinator until `shutdown`.
async fn run(
    settings: SinkSettings,
    metrics: Arc<SinkMetrics>,
    verdicts: bool,
    http: Option<TcpListener>,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    let pool = db::pool(&settings.database)?;
    if settings.sink.migrate_on_start && !migrate(&pool, shutdown).await? {
        return Ok(());
    }
    let catalog = catalog::load(&pool, &settings).await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the API's targets yet; starting with the settings file's");
        Catalog {
            targets: settings.targets.clone(),
        }
    });
    let (rules, rules_rx) = watch::channel(Arc::new(Rules::of(&settings, &catalog.targets)));
    let (catalog, catalog_rx) = watch::channel(Arc::new(catalog));
    let mut store = ReportStore::new(pool.clone());
    if verdicts {
        store = store.with_verdicts(Verdicts::following(rules_rx));
    }
    let store = Arc::new(store);
    let state = Arc::new(HttpState {
        pool: pool.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        targets_changed: Arc::new(Notify::new()),
        catalog_changed: Arc::new(Notify::new()),
        catalog: catalog_rx,
        kafka: watch::Sender::new(None),
    });
    let stop_catalog = shutdown.child_token();
    let follow = tokio::spawn(catalog::follow(
        pool.clone(),
        settings.clone(),
        state.catalog_changed.clone(),
        Followers { rules, catalog },
        stop_catalog.clone(),
    ));
    let stop_http = shutdown.child_token();
    let http = http.map(|listener| {
        let router = api::routes(state.clone()).merge(status::routes(state.clone()));
        tokio::spawn(crate::http::serve(listener, router, stop_http.clone()))
    });
    let result = run_on_kafka(&state, store, shutdown).await;
    stop_http.cancel();
    stop_catalog.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    let _ = follow.await;
    result
}

/// Connects to Kafka, then runs housekeeping, the verdict gauges, the notifications'
/// dispatcher, the topic watch and the coordinator until `shutdown`.
async fn run_on_kafka(
    state: &Arc<HttpState>,
    store: Arc<ReportStore>,
    shutdown: &CancellationToken,
) -> Result<(), SinkError> {
    let (settings, metrics, pool) = (
        state.settings.clone(),
        state.metrics.clone(),
        state.pool.clone(),
    );
    let Some(client) = connect_kafka(&settings, shutdown).await else {
        return Ok(());
    };
    state.kafka.send_replace(Some(client.clone()));
    let consumer = Consumer {
        client: client.clone(),
        store: store.clone(),
        topic: settings.kafka.topic.clone(),
        config: Coordinator::consumer_config(&settings),
        metrics: metrics.clone(),
        budget: Budget::new(settings.sink.max_bytes_in_flight),
    };
    let coordinator = Coordinator::new(&settings, consumer, metrics.clone())?;

    let stop_tasks = shutdown.child_token();
    let housekeeping = tokio::spawn(housekeeping::run(
        store,
        housekeeping::Retention {
            results: settings.sink.retention,
            verdicts: settings.sink.verdicts.retention,
        },
        stop_tasks.clone(),
    ));
    let dispatcher = Dispatcher::new(pool.clone(), &settings.sink.notifications, metrics.clone());
    let dispatch = tokio::spawn(dispatcher.run(stop_tasks.clone()));
    let gauges = tokio::spawn({
        let stop = stop_tasks.clone();
        async move { gauges::refresh_until_stopped(pool, &metrics, stop).await }
    });
    let publisher = tokio::spawn(api::publish::run(
        client.clone(),
        state.clone(),
        stop_tasks.clone(),
    ));
    let (partitions_tx, partitions) = watch::channel(0);
    let metadata = tokio::spawn(topic::watch_partitions(
        client,
        settings,
        partitions_tx,
        stop_tasks.clone(),
    ));
    let result = coordinator.run(partitions, shutdown).await;
    stop_tasks.cancel();
    let _ = housekeeping.await;
    let _ = gauges.await;
    let _ = dispatch.await;
    let _ = publisher.await;
    let _ = metadata.await;
    result
}

/// Applies the migrations, waiting for the database. False when shut down first.
async fn migrate(pool: &PgPool, shutdown: &CancellationToken) -> Result<bool, SinkError> {
    let migrated = retry_until_stopped(
        shutdown,
        move || async move {
            match db::migrate(pool).await {
                Ok(()) => Ok(Ok(())),
                Err(SinkError::Migrate(MigrateError::Execute(e))) => Err((e, None)),
                // A connection lost while a migration runs (it is rolled back) is retried too.
                Err(SinkError::Migrate(MigrateError::ExecuteMigration(e, version)))
                    if connection_lost(&e) =>
                {
                    Err((e, Some(version)))
                }
                Err(e) => Ok(Err(e)),
            }
        },
        |(e, version)| match version {
            None => warn!(error = %e, "database not reachable for migrations; retrying"),
            Some(version) => {
                warn!(error = %e, version, "connection lost during a migration; retrying");
            }
        },
    )
    .await;
    match migrated.transpose()? {
        Some(()) => {
            info!("migrations applied");
            Ok(true)
        }
        None => Ok(false),
    }
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

/// A Kafka client, waiting for the brokers. `None` when shut down first.
async fn connect_kafka(
    settings: &SinkSettings,
    shutdown: &CancellationToken,
) -> Option<Arc<Client>> {
    let client = retry_until_stopped(
        shutdown,
        move || async move {
            tokio::select! {
                attempt = monitor_core::runtime::broker::connect(&settings.kafka, "web-monitor-sink", KAFKA_RETRY_FOR) => attempt.map_err(Some),
                // Stopped: the wait after this failure ends at once.
                _ = shutdown.cancelled() => Err(None),
            }
        },
        |e| {
            if let Some(e) = e {
                warn!(error = %e, "Kafka not reachable; retrying");
            }
        },
    )
    .await?;
    Some(Arc::new(client))
}

/// Runs the sink until it ends, but no longer than `bound` after `shutdown` fired: whatever is
/// still running then (a coordinator waiting on the database, a lease release) is dropped with
/// the runtime, and a transaction left open is never committed, so its messages are read again.
async fn within_shutdown_timeout(
    run: impl Future<Output = Result<(), SinkError>>,
    shutdown: &CancellationToken,
    bound: Duration,
) -> Result<(), SinkError> {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(bound).await;
    };
    tokio::select! {
        result = run => result,
        () = deadline => {
            warn!(
                shutdown_timeout_ms = bound.as_millis() as u64,
                "shutdown did not finish within sink.shutdown_timeout: exiting now; batches not committed will be read again"
            );
            Ok(())
        }
    }
}
