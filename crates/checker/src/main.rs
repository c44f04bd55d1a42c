//! `checker`: checks HTTP(S) targets on their schedules and produces one report per check.

use std::path::PathBuf;
use std::process::ExitCode;

use checker::app::{self, Application, Destination, Options};
use checker::schedule::shard::my_targets;
use clap::Parser;
use monitor_core::settings::{CheckerSettings, SettingsSource, Shard};
use monitor_core::telemetry::{self, LogFormat};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How long blocking work left over at exit (such as a name lookup) may hold the process.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(200);

/// Checks HTTP(S) targets forever, each on its own period, and produces one JSON report per
/// check to Kafka.
///
/// Settings come from the file given with --config plus environment overrides of the form
/// WEBMON__SECTION__KEY (for example WEBMON__KAFKA__TOPIC=reports). A change of the file
/// (checked every checker.watch_config, default 10 s) or SIGHUP reloads the targets; SIGTERM
/// or Ctrl-C stops after the checks in flight, delivering or spooling every report.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Settings file (TOML, YAML or JSON, by extension). The original service's
    /// configs/config.json works as it is.
    #[arg(long, short = 'c', env = "WEBMON_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Validate the settings, print every problem found, and exit: 0 when valid, 2 otherwise.
    /// Touches no network.
    #[arg(long)]
    check_config: bool,

    /// Check every target once, print one JSON report per line on stdout, and exit: 0 if all
    /// are up, 1 if any is not. Needs no broker.
    #[arg(long, conflicts_with = "stdout")]
    once: bool,

    /// Run the schedule forever, printing the reports on stdout (one JSON object per line)
    /// instead of producing them to Kafka. Needs no broker.
    #[arg(long)]
    stdout: bool,

    /// Check only this replica's share of the targets: I/N, replica I (from 0) of N. Every
    /// target is checked by exactly one replica. Overrides checker.shard.
    #[arg(long, value_name = "I/N", env = "WEBMON_SHARD")]
    shard: Option<Shard>,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address. Overrides
    /// checker.admin_listen (default 0.0.0.0:9101).
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = telemetry::init(args.log_format, args.log_file.as_deref()) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let source = SettingsSource {
        file: args.config.clone(),
        ..SettingsSource::default()
    };
    let needs_kafka = !(args.once || args.stdout);
    let settings = match CheckerSettings::load(&source, needs_kafka) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print_valid(&settings, args.shard.unwrap_or(settings.checker.shard));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = rustls::crypto::ring::default_provider().install_default() {
        error!(?e, "cannot install the TLS crypto provider");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args, settings, source));
    // Dropping the runtime would wait for blocking work without bound (a name lookup of an
    // aborted check, for one): the shutdown is over, so give it only a moment.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

/// What `--check-config` prints for valid settings.
fn print_valid(settings: &CheckerSettings, shard: Shard) {
    println!(
        "configuration is valid: {} target{} ({} in shard {shard}), brokers {}, checker id {:?}",
        settings.targets.len(),
        if settings.targets.len() == 1 { "" } else { "s" },
        my_targets(settings, shard).len(),
        settings
            .kafka
            .as_ref()
            .map(|k| k.brokers.join(","))
            .unwrap_or_else(|| "none".into()),
        settings.checker.id,
    );
}

/// Checks once (`--once`), or runs until SIGTERM or SIGINT.
async fn run(args: Args, settings: CheckerSettings, source: SettingsSource) -> ExitCode {
    if args.once {
        let shard = args.shard.unwrap_or(settings.checker.shard);
        let targets = my_targets(&settings, shard);
        let check = app::checker_of(&settings).into_check_fn();
        let reports = app::check_once(targets, check, settings.checker.max_in_flight).await;
        for r in &reports {
            println!("{}", String::from_utf8_lossy(&r.to_json()));
        }
        return if app::all_up(&reports) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let options = Options {
        destination: if args.stdout {
            Destination::Stdout
        } else {
            Destination::Kafka
        },
        shard: args.shard,
        admin_listen: args.admin_listen,
        source,
    };
    let application = match Application::build(settings, options).await {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            return match e {
                app::Error::NoKafka => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone(), application.reloader()));
    application.run_until_stopped(shutdown).await;
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT fire `shutdown`; SIGHUP asks for a reload.
async fn signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                info!("SIGHUP: reloading the settings");
                let _ = reload.try_send(());
            }
        }
    }
    shutdown.cancel();
}
