//! `checker`: checks HTTP(S) targets on their schedules and produces one report per check.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use monitor_core::settings::{CheckerSettings, SettingsSource, Shard};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use checker::app::{self, Output};
use checker::metrics::CheckerMetrics;
use checker::probe::Prober;
use monitor_core::runtime::admin::{self, AdminState};
use monitor_core::runtime::telemetry::{self, LogFormat};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

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
    let shard = args.shard.unwrap_or(settings.checker.shard);
    if args.check_config {
        println!(
            "configuration is valid: {} target{} ({} in shard {shard}), brokers {}, checker id {:?}",
            settings.targets.len(),
            if settings.targets.len() == 1 { "" } else { "s" },
            app::my_targets(&settings, shard).len(),
            settings.kafka.as_ref().map(|k| k.brokers.join(",")).unwrap_or_else(|| "none".into()),
            settings.checker.id,
        );
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
    let code = runtime.block_on(async move {
        let prober = Arc::new(
            Prober::new(settings.checker.id.clone())
                .with_body_memory(settings.checker.max_body_memory),
        );
        if args.once {
            let targets = app::my_targets(&settings, shard);
            let reports = app::check_once(targets, prober.into_probe(), settings.checker.max_in_flight).await;
            for r in &reports {
                println!("{}", String::from_utf8_lossy(&r.to_json()));
            }
            return if app::all_up(&reports) { ExitCode::SUCCESS } else { ExitCode::from(1) };
        }

        let output = if args.stdout {
            Output::Stdout
        } else {
            let Some(kafka) = settings.kafka.clone() else {
                error!("no kafka section");
                return ExitCode::from(2);
            };
            let spool = match checker::spool::FileSpool::open(
                &settings.checker.producer.spool_dir,
                settings.checker.producer.spool_max_bytes,
            ) {
                Ok(s) => s,
                Err(e) => {
                    error!(dir = %settings.checker.producer.spool_dir.display(), error = %e, "cannot open the spool");
                    return ExitCode::FAILURE;
                }
            };
            Output::Kafka {
                kafka: Box::new(kafka),
                spool_stats: Some(spool.stats()),
                spool: Box::new(spool),
            }
        };
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let metrics = CheckerMetrics::register(&mut registry);
        let admin_addr = args.admin_listen.clone().unwrap_or_else(|| settings.checker.admin_listen.clone());
        let listener = match admin::bind(&admin_addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(addr = %admin_addr, error = %e, "cannot serve the admin endpoint (use --admin-listen)");
                return ExitCode::FAILURE;
            }
        };
        let state = Arc::new(AdminState {
            registry: Mutex::new(registry),
            // Settings are loaded and reports are produced or spooled from the start.
            ready: Box::new(|| true),
        });
        let admin_task = tokio::spawn(admin::serve(listener, state, shutdown.clone()));
        let (reload_tx, reload_rx) = mpsc::channel(1);
        if let (Some(path), Some(every)) = (args.config.clone(), settings.checker.watch_config) {
            tokio::spawn(checker::config_watch::watch(path, every, reload_tx.clone(), shutdown.clone()));
        }
        tokio::spawn(signals(shutdown.clone(), reload_tx));
        let load = move || CheckerSettings::load(&source, needs_kafka);
        app::run(settings, shard, load, prober.into_probe(), output, metrics, reload_rx, shutdown).await;
        let _ = admin_task.await;
        ExitCode::SUCCESS
    });
    // Dropping the runtime would wait for blocking work without bound (a name lookup of an
    // aborted check, for one): the shutdown is over, so give it only a moment.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
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
