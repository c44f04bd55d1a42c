//! `sink`: consumes reports from Kafka and stores each exactly once in PostgreSQL.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use monitor_core::runtime::service::{self, CommonArgs};
use monitor_core::settings::{ConfigError, DatabaseSettings, SinkSettings};
use sink::{Application, SinkError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Consumes check reports from Kafka and stores each exactly once in PostgreSQL.
///
/// Settings come from the file given with --config plus environment overrides of the form
/// WEBMON__SECTION__KEY (for example WEBMON__DATABASE__URL=postgres://...).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and store until SIGTERM or Ctrl-C (the default).
    Run,
    /// Apply the database migrations (the same as `sqlx migrate run`) and exit.
    Migrate,
    /// Per target: state, open incident, incidents with MTTR and MTBF, and uptime from the
    /// verdicts (quorum of regions); checks, failures by class, p50/p95/p99 response time,
    /// last failure and certificate expiry from the stored results.
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
    if let Err(e) = args.common.init_logging() {
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
    if args.common.check_config {
        if let Some(s) = &settings {
            println!(
                "configuration is valid: brokers {}, topic {:?}",
                s.kafka.brokers.join(","),
                s.kafka.topic
            );
        }
        return ExitCode::SUCCESS;
    }
    let admin_listen = args.common.admin_listen.take();
    service::run_to_exit(async move {
        match execute(command, database, settings, admin_listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "sink failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// The settings `command` needs: commands that only touch PostgreSQL need only the database
/// section (unless the whole configuration is being checked).
fn load(
    args: &Args,
    command: &Command,
) -> Result<(DatabaseSettings, Option<SinkSettings>), ConfigError> {
    let source = args.common.source();
    let database_only =
        !args.common.check_config && matches!(command, Command::Migrate | Command::Report { .. });
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
                print!("{}", sink::uptime::failed_notifications(&pool).await?);
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
    tokio::spawn(service::stop_on_signals(shutdown.clone(), None));
    app.run_until_stopped(shutdown).await
}
