//! Connecting to PostgreSQL as the settings say, and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use monitor_core::settings::{DatabaseSettings, SslMode};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::PgPool;

use crate::SinkError;

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
    Ok(options.application_name("web-monitor-sink"))
}

/// A pool for the batches. Connections are made lazily, so a database that is down at start
/// is waited for by the callers' retries rather than failing here.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, SinkError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(connect_options(settings)?))
}

/// Applies the pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), SinkError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
