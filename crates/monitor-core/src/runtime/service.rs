//! What both binaries' `main` share, written once: the flags they both take
//! ([`CommonArgs`]), how signals stop them ([`stop_on_signals`]), and how the runtime starts
//! and stops ([`run_to_exit`]), so the checker and the sink start, log and stop alike.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::telemetry::{self, LogFormat};
use crate::settings::SettingsSource;

/// How long blocking work left over at exit (such as a name lookup of an aborted check) may
/// hold the process once `main`'s future has ended.
pub const RUNTIME_STOP: Duration = Duration::from_millis(200);

/// The flags both binaries take, with the same names, environment variables and help.
/// Flatten it into a binary's own arguments (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Settings file (TOML, YAML or JSON, by extension). The original service's
    /// configs/config.json works as it is.
    #[arg(
        long,
        short = 'c',
        env = "WEBMON_CONFIG",
        value_name = "PATH",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Validate the settings, print every problem found, and exit: 0 when valid, 2 otherwise.
    /// Touches no network.
    #[arg(long)]
    pub check_config: bool,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address. Overrides
    /// checker.admin_listen (default 0.0.0.0:9101) or sink.admin_listen (default
    /// 0.0.0.0:9102).
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<String>,

    /// Log format: text (human-readable) or json (one object per line). The level comes from
    /// RUST_LOG (default info).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "WEBMON_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,

    /// Append the logs to this file (its directory is created), e.g. logs/monitor.log,
    /// instead of writing them to standard error.
    #[arg(long, value_name = "PATH", env = "WEBMON_LOG_FILE", global = true)]
    pub log_file: Option<PathBuf>,
}

impl CommonArgs {
    /// Installs the logger as `--log-format` and `--log-file` say.
    pub fn init_logging(&self) -> Result<(), String> {
        telemetry::init(self.log_format, self.log_file.as_deref())
    }

    /// Where the settings come from: the `--config` file (if any) plus the process
    /// environment.
    pub fn source(&self) -> SettingsSource {
        SettingsSource {
            file: self.config.clone(),
            ..SettingsSource::default()
        }
    }
}

/// SIGTERM/SIGINT cancel `shutdown`; SIGHUP try_sends on `reload` when given (without
/// `reload`, SIGHUP is left to its default). Returns once `shutdown` is cancelled, by a
/// signal or otherwise.
pub async fn stop_on_signals(shutdown: CancellationToken, reload: Option<mpsc::Sender<()>>) {
    tokio::select! {
        stop = wait_for_stop(reload) => {
            if stop {
                shutdown.cancel();
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

/// Waits for SIGTERM or SIGINT, passing SIGHUP on to `reload` meanwhile. False when the
/// handlers cannot be installed (then nothing stops the service but its own end).
#[cfg(unix)]
async fn wait_for_stop(reload: Option<mpsc::Sender<()>>) -> bool {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let hangup = match &reload {
        Some(_) => signal(SignalKind::hangup()).map(Some),
        None => Ok(None),
    };
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        hangup,
    ) else {
        error!("cannot install signal handlers");
        return false;
    };
    async fn next_hangup(hup: &mut Option<Signal>) {
        let received = match hup {
            Some(h) => h.recv().await.is_some(),
            None => false,
        };
        if !received {
            std::future::pending::<()>().await;
        }
    }
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: stopping"); return true }
            _ = int.recv() => { info!("SIGINT: stopping"); return true }
            _ = next_hangup(&mut hup) => {
                info!("SIGHUP: reloading the settings");
                if let Some(reload) = &reload {
                    let _ = reload.try_send(());
                }
            }
        }
    }
}

/// Waits for Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
async fn wait_for_stop(_reload: Option<mpsc::Sender<()>>) -> bool {
    if tokio::signal::ctrl_c().await.is_err() {
        error!("cannot install signal handlers");
        return false;
    }
    info!("Ctrl-C: stopping");
    true
}

/// Runs `main` on a new multi-thread runtime, then shuts the runtime down within
/// [`RUNTIME_STOP`] so leftover blocking work cannot hold the exit.
pub fn run_to_exit(main: impl Future<Output = ExitCode>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(main);
    // Dropping the runtime would wait for blocking work without bound (a name lookup of an
    // aborted check, for one): the service is over, so give it only a moment.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn the_common_flags_parse_as_both_binaries_take_them() {
        let args = Args::try_parse_from([
            "x",
            "-c",
            "s.toml",
            "--check-config",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-file",
            "l.log",
        ])
        .expect("parses");
        assert_eq!(args.common.config, Some(PathBuf::from("s.toml")));
        assert!(args.common.check_config);
        assert_eq!(args.common.admin_listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(args.common.log_format, LogFormat::Json);
        assert_eq!(args.common.log_file, Some(PathBuf::from("l.log")));
        assert_eq!(args.common.source().file, Some(PathBuf::from("s.toml")));
    }

    #[tokio::test]
    async fn signal_handling_ends_when_the_service_stops_by_itself() {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stop_on_signals(shutdown.clone(), None));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends")
            .expect("no panic");
    }

    #[test]
    fn the_runtime_stops_without_waiting_for_leftover_blocking_work() {
        let started = std::time::Instant::now();
        let code = run_to_exit(async {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(5)));
            ExitCode::from(3)
        });
        assert_eq!(code, ExitCode::from(3));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
