//! `checker`: checks HTTP(S) targets on their schedules and produces one report per check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use monitor_core::settings::{CheckerSettings, SettingsSource};

/// Checks HTTP(S) targets forever, each on its own period, and produces one JSON report per
/// check to Kafka.
///
/// Settings come from the file given with --config plus environment overrides of the form
/// WEBMON__SECTION__KEY (for example WEBMON__KAFKA__TOPIC=reports).
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let source = SettingsSource {
        file: args.config.clone(),
        ..SettingsSource::default()
    };
    match CheckerSettings::load(&source, true) {
        Ok(settings) => {
            if args.check_config {
                println!(
                    "configuration is valid: {} target{}, brokers {}, checker id {:?}",
                    settings.targets.len(),
                    if settings.targets.len() == 1 { "" } else { "s" },
                    settings
                        .kafka
                        .as_ref()
                        .map(|k| k.brokers.join(","))
                        .unwrap_or_default(),
                    settings.checker.id,
                );
                return ExitCode::SUCCESS;
            }
            eprintln!("checker: only --check-config is available in this build");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
