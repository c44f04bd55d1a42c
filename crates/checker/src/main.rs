//! `checker`: checks HTTP(S) targets on their schedules and produces one report per check.

use std::process::ExitCode;

use checker::app::{self, Application, Destination, Options};
use checker::schedule::shard::my_targets;
use clap::Parser;
use monitor_core::runtime::service::{self, CommonArgs};
use monitor_core::settings::{CheckerSettings, SettingsSource, Shard};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// mimalloc rather than glibc's malloc: a check allocates and frees a few small buffers on
/// every worker thread, which glibc serves from per-thread arenas it grows and trims with
/// system calls; mimalloc took a quarter off the CPU time of a check and off the memory
/// (docs/benchmarks.md, "Against nginx in another process").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[command(flatten)]
    common: CommonArgs,

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.common.init_logging() {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let source = args.common.source();
    let needs_kafka = !(args.once || args.stdout);
    let settings = match CheckerSettings::load(&source, needs_kafka) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.common.check_config {
        print_valid(&settings, args.shard.unwrap_or(settings.checker.shard));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = rustls::crypto::ring::default_provider().install_default() {
        error!(?e, "cannot install the TLS crypto provider");
        return ExitCode::FAILURE;
    }
    service::run_to_exit(run(args, settings, source))
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
        admin_listen: args.common.admin_listen,
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
    tokio::spawn(service::stop_on_signals(
        shutdown.clone(),
        Some(application.reloader()),
    ));
    application.run_until_stopped(shutdown).await;
    ExitCode::SUCCESS
}
