//! `sink`: consumes reports from Kafka and stores each exactly once in PostgreSQL.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use monitor_core::settings::{SettingsSource, SinkSettings};

/// Consumes check reports from Kafka and stores each exactly once in PostgreSQL.
///
/// Settings come from the file given with --config plus environment overrides of the form
/// WEBMON__SECTION__KEY (for example WEBMON__DATABASE__URL=postgres://...).
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
    match SinkSettings::load(&source) {
        Ok(settings) => {
            if args.check_config {
                println!(
                    "configuration is valid: brokers {}, topic {:?}",
                    settings.kafka.brokers.join(","),
                    settings.kafka.topic
                );
                return ExitCode::SUCCESS;
            }
            eprintln!("sink: only --check-config is available in this build");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
