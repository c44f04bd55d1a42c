//! `sink`: consumes reports from Kafka and stores each exactly once in PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use monitor_core::settings::{ConfigError, DatabaseSettings, SettingsSource, SinkSettings};
use monitor_core::telemetry::{self, LogFormat};
use sink::{Application, SinkError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How long blocking work left over at exit may hold the process.
const RUNTIME_STOP: Duration = Duration::from_millis(200);

/// Consumes check reports from Kafka and stores each exactly once in PostgreSQL.
///
/// Settings come from the file given with --config plus environment overrides of the form
/// WEBMON__SECTION__KEY (for example WEBMON__DATABASE__URL=postgres://...).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Settings file (TOML, YAML or JSON, by extension). The original service's
    /// configs/config.json works as it is.
    #[arg(
        long,
        short = 'c',
        env = "WEBMON_CONFIG",
        value_name = "PATH",
        global = true
    )]
    config: Option<PathBuf>,

    /// Validate the settings, print every problem found, and exit: 0 when valid, 2 otherwise.
    /// Touches no network.
    #[arg(long)]
    check_config: bool,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address. Overrides
    /// sink.admin_listen (default 0.0.0.0:9102).
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<String>,

    /// Log format: text (human-readable) or json (one object per line). The level comes from
    /// RUST_LOG (default info).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "WEBMON_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,

    /// Append the logs to this file (its directory is created), e.g. logs/monitor.log,
    /// instead of writing them to standard error.
    #[arg(long, value_name = "PATH", env = "WEBMON_LOG_FILE", global = true)]
    log_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and store until SIGTERM or Ctrl-C (the default).
    Run,
    /// Apply the database migrations (the same as `sqlx migrate run`) and exit.
    Migrate,
    /// Per target: checks, uptime, failures by class, p50/p95/p99 response time, last failure
    /// and certificate expiry, from the stored results.
    Report {
        /// The window: results scheduled this long ago or later ("24h", "7d", "90m").
        #[arg(long, default_value = "24h", value_parser = parse_since)]
        since: std::time::Duration,
        /// Only this target (its URL as checked, or its id).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
        /// table (for a terminal) or json.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    monitor_core::settings::parse_duration(text)
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Err(e) = telemetry::init(args.log_format, args.log_file.as_deref()) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let command = args.command.take().unwrap_or(Command::Run);
    let (database, settings) = match load(&args, &command) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        if let Some(s) = &settings {
            println!(
                "configuration is valid: brokers {}, topic {:?}",
                s.kafka.brokers.join(","),
                s.kafka.topic
            );
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(execute(command, database, settings, args.admin_listen));
    // Dropping the runtime would wait for blocking work without bound: the shutdown is over.
    runtime.shutdown_timeout(RUNTIME_STOP);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "sink failed");
            ExitCode::FAILURE
        }
    }
}

/// The settings `command` needs: commands that only touch PostgreSQL need only the database
/// section (unless the whole configuration is being checked).
fn load(
    args: &Args,
    command: &Command,
) -> Result<(DatabaseSettings, Option<SinkSettings>), ConfigError> {
    let source = SettingsSource {
        file: args.config.clone(),
        ..SettingsSource::default()
    };
    let database_only =
        !args.check_config && matches!(command, Command::Migrate | Command::Report { .. });
    if database_only {
        SinkSettings::load_database(&source).map(|database| (database, None))
    } else {
        SinkSettings::load(&source).map(|s| (s.database.clone(), Some(s)))
    }
}

/// Runs `command`.
async fn execute(
    command: Command,
    database: DatabaseSettings,
    settings: Option<SinkSettings>,
    admin_listen: Option<String>,
) -> Result<(), SinkError> {
    match command {
        Command::Report {
            since,
            target,
            format,
        } => {
            let pool = sink::db::pool(&database)?;
            let summaries = sink::uptime::summarize(&pool, since, target.as_deref()).await?;
            if format == "json" {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summaries).unwrap_or_default()
                );
            } else {
                print!("{}", sink::uptime::table(&summaries));
            }
            Ok(())
        }
        Command::Migrate => {
            let pool = sink::db::pool(&database)?;
            sink::db::migrate(&pool).await?;
            info!("migrations applied");
            Ok(())
        }
        Command::Run => match settings {
            Some(settings) => run(settings, admin_listen).await,
            None => Ok(()),
        },
    }
}

/// Consumes and stores until SIGTERM or SIGINT; `admin_listen` overrides `sink.admin_listen`.
async fn run(mut settings: SinkSettings, admin_listen: Option<String>) -> Result<(), SinkError> {
    if let Some(addr) = admin_listen {
        settings.sink.admin_listen = addr;
    }
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

/// Fires `shutdown` on SIGTERM or SIGINT.
async fn signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
