//! Connecting to PostgreSQL as the settings say, and the embedded migrations.
//!
//! Every connection also asks the server to notice a dead or cut-off sink: TCP keepalives and
//! a bound on unacknowledged data on the server's side of the socket, and (for the batch pool)
//! an end to transactions left idle, so a sink that vanished mid-batch cannot keep its
//! partition's offset row locked. The client cannot set socket options through sqlx, so these
//! are the server's settings, set per session.
//!
//! TLS to the server trusts the system's trust store plus `sslrootcert`: sqlx's
//! `tls-rustls-ring-native-roots` reads the store with `rustls-native-certs`, as
//! [`monitor_core::runtime::trust`] does for Kafka and the probes, so `verify-full` against a
//! server whose CA is installed in the system needs no `sslrootcert`. sqlx cannot take the
//! compiled-in roots, so where the system has none a verifying mode needs `sslrootcert`: the
//! sink says so when it starts.

use std::str::FromStr;
use std::time::Duration;

use monitor_core::runtime::trust::{self, RootsSource};
use monitor_core::settings::{DatabaseSettings, SslMode};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::warn;

use crate::error::SinkError;

/// Server-side TCP keepalive: silence on a connection before the first probe.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Server-side TCP keepalive: time between two probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Server-side TCP keepalive: unanswered probes before the server closes the connection.
pub const TCP_KEEPALIVE_COUNT: u32 = 3;
/// Longest the server lets data it sent go unacknowledged before closing the connection.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a batch transaction may sit idle on the server (its statements follow each other at
/// once) before the server ends it, releasing its locks.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The server-side TCP bounds every sink connection sets.
pub fn tcp_bounds() -> Vec<(&'static str, String)> {
    vec![
        (
            "tcp_keepalives_idle",
            format!("{}s", TCP_KEEPALIVE_IDLE.as_secs()),
        ),
        (
            "tcp_keepalives_interval",
            format!("{}s", TCP_KEEPALIVE_INTERVAL.as_secs()),
        ),
        ("tcp_keepalives_count", TCP_KEEPALIVE_COUNT.to_string()),
        (
            "tcp_user_timeout",
            format!("{}ms", TCP_USER_TIMEOUT.as_millis()),
        ),
    ]
}

/// Sets each `(parameter, value)` for the session. A parameter this server does not know (an
/// older PostgreSQL: 42704), may not set (42501) or cannot take on its platform (22023, such
/// as `tcp_user_timeout` on a server built without `TCP_USER_TIMEOUT`, outside Linux) is
/// skipped with a warning: the bound it gives is lost, the connection is not.
pub async fn bound_session(
    conn: &mut PgConnection,
    bounds: &[(&str, String)],
) -> Result<(), sqlx::Error> {
    for (name, value) in bounds {
        let set = sqlx::query("SELECT set_config($1, $2, false)")
            .bind(name)
            .bind(value)
            .execute(&mut *conn)
            .await;
        match set {
            Ok(_) => {}
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42704" | "42501" | "22023")) =>
            {
                warn!(parameter = name, error = %e, "the server does not take this session bound; going on without it");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Connection options from the settings. The password never leaves this value.
pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, SinkError> {
    let mut options = match &settings.url {
        Some(url) => PgConnectOptions::from_str(url.expose())?,
        None => {
            let mut o = PgConnectOptions::new()
                .host(&settings.host)
                .port(settings.port)
                .database(&settings.name)
                .username(&settings.user);
            if let Some(password) = &settings.password {
                o = o.password(password.expose());
            }
            o
        }
    };
    if settings.url.is_none() || settings.sslmode != SslMode::default() {
        options = options.ssl_mode(match settings.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow => PgSslMode::Allow,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(ca) = &settings.sslrootcert {
        options = options.ssl_root_cert(ca);
    }
    if matches!(settings.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        && settings.sslrootcert.is_none()
        && trust::roots().source() == RootsSource::Compiled
    {
        warn!(
            sslmode = settings.sslmode.as_str(),
            "the system's trust store is empty and the database connection cannot use the compiled-in roots: \
             no server certificate will verify; set database.sslrootcert or install the CA certificates"
        );
    }
    Ok(options.application_name("web-monitor-sink"))
}

/// A pool for the batches. Connections are made lazily, so a database that is down at start
/// is waited for by the callers' retries rather than failing here. Each connection gets
/// [`tcp_bounds`] and [`IDLE_IN_TRANSACTION_TIMEOUT`]. A connection gives back its buffers'
/// spare room when it returns to the pool: a connection keeps the capacity of the largest
/// statement it sent (a batch of large reports: megabytes) until told to shrink, so without
/// it every pooled connection would hold a batch's worth of memory outside the sink's
/// `max_bytes_in_flight`.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, SinkError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .after_release(|conn, _| {
            Box::pin(async move {
                conn.shrink_buffers();
                Ok(true)
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                let mut bounds = tcp_bounds();
                bounds.push((
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", IDLE_IN_TRANSACTION_TIMEOUT.as_millis()),
                ));
                bound_session(conn, &bounds).await
            })
        })
        .connect_lazy_with(connect_options(settings)?))
}

/// Applies the pending migrations. Migrations a newer sink applied and this one does not know
/// are allowed, so that during a rolling upgrade (or a rollback) an older sink still starts
/// against the newer schema; migrations are written to keep older sinks working (add, then
/// remove in a later release).
pub async fn migrate(pool: &PgPool) -> Result<(), SinkError> {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Runs `statement`, a `DELETE` of at most `$2` rows older than `$1`, with `cutoff` and
/// `batch` until it deletes fewer than `batch`: many short statements rather than one long
/// one that holds its locks and bloats the log. Returns the rows deleted.
pub async fn delete_in_batches(
    pool: &PgPool,
    statement: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(cutoff)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += n;
        if n < batch.max(1) as u64 {
            return Ok(deleted);
        }
    }
}
