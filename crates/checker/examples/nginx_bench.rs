//! Checker throughput against its limit, measured in one run: the target is nginx in another
//! process (so the checker's CPU time is its own), and the limit is what `wrk` gets from the
//! same nginx with a fresh connection per request. Then the checker (the real schedule and
//! probe, the settings' defaults but for the targets) checks N targets every second against
//! that nginx, and again with twice as many as it managed (overload, where slots that cannot
//! start are shed as `missed`).
//!
//! wrk runs before the checker and again after its peak, and the ratios are against the mean
//! of the two: a shared machine's speed drifts within minutes, and bracketing the checker keeps
//! the drift out of the ratio (both rates are printed).
//!
//! Prints wrk's rates; for each scenario the checker's achieved checks/s (up, down, missed),
//! the ratio to wrk, CPU time per check (user + system of this process only, from
//! `/proc/self/stat`), lateness, and the peak RSS.
//!
//! ```sh
//! cargo run --release -p checker --example nginx_bench -- [DURATION] [TARGETS] [NGINX_WORKERS] [http|https]
//! cargo run --release -p checker --example nginx_bench -- 10s            # TARGETS = wrk's rate
//! cargo run --release -p checker --example nginx_bench -- 10s 0 1 https  # a full TLS handshake each
//! ```
//!
//! With `https`, nginx serves a certificate of a CA made for the run (the targets name it in
//! `ca_file`), without session resumption, so that wrk and the checker both make a full
//! handshake per request.
//!
//! Needs `nginx` (Debian `nginx-light`) and `wrk` on the `PATH`; nginx runs on loopback ports
//! with a configuration generated in a temporary directory, not as the system's service.

#[path = "support/nginx.rs"]
mod nginx;

/// The allocator the binaries use (see `src/main.rs`), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checker::schedule;
use monitor_core::report::{Report, Status};
use monitor_core::settings::{parse_duration, CheckerSettings, SettingsSource, TargetSettings};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use nginx::{BenchResult, Nginx};

/// Time the schedule runs before counting, so that start-up is not measured.
const WARM_UP: Duration = Duration::from_secs(2);
/// The targets' period.
const PERIOD: Duration = Duration::from_secs(1);
/// The targets' timeout (the settings' default, 10 s, is not less than the period).
const TIMEOUT: Duration = Duration::from_millis(500);
/// wrk's threads and connections.
const WRK_THREADS: usize = 2;
const WRK_CONNECTIONS: usize = 64;

fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let run_for = args
        .get(1)
        .and_then(|a| parse_duration(a).ok())
        .unwrap_or(Duration::from_secs(10));
    let targets: Option<usize> = args.get(2).and_then(|a| a.parse().ok());
    let targets = targets.filter(|n| *n > 0);
    let workers: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let https = args.get(4).is_some_and(|a| a == "https");
    let _ = rustls::crypto::ring::default_provider().install_default();

    let nginx = Nginx::start(workers, https)?;
    let children_cpu0 = cpu_seconds(Whose::Children);
    let wrk_rate = wrk(&nginx.url(0, 0), run_for)?;
    let wrk_cpu = cpu_seconds(Whose::Children) - children_cpu0;
    println!(
        "nginx: {workers} worker(s); wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -H \"Connection: close\" for {run_for:?}: {wrk_rate:.0} requests/s, wrk's cpu {:.1} µs per request",
        1e6 * wrk_cpu / (wrk_rate * run_for.as_secs_f64()).max(1.0)
    );
    let peak_n = targets.unwrap_or(wrk_rate.round() as usize);
    let runtime = tokio::runtime::Runtime::new()?;
    let run = |name, n| {
        let targets = bench_targets(name, &nginx, n);
        // On the runtime's workers, as the checker's own tasks run (not on this thread).
        runtime.block_on(runtime.spawn(async move { scenario(name, targets?, n, run_for).await }))
    };
    let peak = run("peak", peak_n)??;
    let wrk_after = wrk(&nginx.url(0, 0), run_for)?;
    let wrk_rate = (wrk_rate + wrk_after) / 2.0;
    println!("wrk again after the peak: {wrk_after:.0} requests/s; the ratios below are to the mean of the two, {wrk_rate:.0} requests/s");
    peak.print(wrk_rate);
    let overload_n = (2.0 * peak.achieved()).round() as usize;
    let overload = run("overload", overload_n)??;
    overload.print(wrk_rate);
    println!(
        "overload / peak: {:.0} / {:.0} checks/s = {:.2}; peak RSS (VmHWM) {} KiB",
        overload.achieved(),
        peak.achieved(),
        overload.achieved() / peak.achieved().max(1.0),
        proc_status_kib("VmHWM:")
    );
    Ok(())
}

/// What one scenario measured, over the counted window.
struct Figures {
    name: &'static str,
    targets: usize,
    seconds: f64,
    up: u64,
    down: u64,
    missed: u64,
    cpu_seconds: f64,
    lateness_ms: Vec<f64>,
    /// Sum of the completed checks' response times.
    response_ms: f64,
    /// The first failure seen, for the record.
    failure: Option<String>,
}

impl Figures {
    /// Checks that got their answer (up) per second: what wrk's rate counts too. A check
    /// that timed out (down) is counted apart.
    fn achieved(&self) -> f64 {
        self.up as f64 / self.seconds
    }

    fn print(&self, wrk_rate: f64) {
        let checks = (self.up + self.down).max(1);
        let late = |p: f64| {
            let i = ((self.lateness_ms.len().max(1) - 1) as f64 * p).round() as usize;
            self.lateness_ms.get(i).copied().unwrap_or(0.0)
        };
        println!(
            "{}: {} targets every {PERIOD:?} = {:.0}/s requested; achieved {:.0} checks/s up (up {}, down {}, missed {} in {:.1} s), {:.2}x wrk",
            self.name,
            self.targets,
            self.targets as f64 / PERIOD.as_secs_f64(),
            self.achieved(),
            self.up,
            self.down,
            self.missed,
            self.seconds,
            self.achieved() / wrk_rate
        );
        println!(
            "  cpu {:.2} s = {:.0} % of one core, {:.1} µs per check (up or down); lateness p50 {:.1} / p99 {:.1} ms; RSS {} KiB",
            self.cpu_seconds,
            100.0 * self.cpu_seconds / self.seconds,
            1e6 * self.cpu_seconds / checks as f64,
            late(0.5),
            late(0.99),
            proc_status_kib("VmRSS:")
        );
        println!(
            "  response time mean {:.1} ms{}",
            self.response_ms / checks as f64,
            self.failure
                .as_ref()
                .map_or(String::new(), |f| format!("; first failure: {f}"))
        );
    }
}

/// `n` targets every second against `ports` for `WARM_UP` plus `run_for`, counting the reports
/// of the last `run_for`.
async fn scenario(
    name: &'static str,
    settings: CheckerSettings,
    n: usize,
    run_for: Duration,
) -> BenchResult<Figures> {
    let list: Vec<Arc<TargetSettings>> = settings.targets.iter().cloned().map(Arc::new).collect();
    let (_targets_tx, targets_rx) = watch::channel(list);
    let (tx, mut rx) = mpsc::channel(100_000);
    let stop = CancellationToken::new();
    let check = checker::app::checker_of(&settings).into_check_fn();
    let task = tokio::spawn(schedule::run(
        targets_rx,
        check,
        settings.checker.id.clone(),
        settings.checker.max_in_flight,
        tx,
        stop.clone(),
    ));
    let start = tokio::time::Instant::now();
    drain_until(&mut rx, start + WARM_UP, |_| {}).await;
    let mut figures = Figures {
        name,
        targets: n,
        seconds: 0.0,
        up: 0,
        down: 0,
        missed: 0,
        cpu_seconds: 0.0,
        lateness_ms: Vec::new(),
        response_ms: 0.0,
        failure: None,
    };
    let (cpu0, t0) = (cpu_seconds(Whose::Own), Instant::now());
    drain_until(&mut rx, start + WARM_UP + run_for, |r| figures.count(r)).await;
    figures.cpu_seconds = cpu_seconds(Whose::Own) - cpu0;
    figures.seconds = t0.elapsed().as_secs_f64();
    stop.cancel();
    drain_until(
        &mut rx,
        tokio::time::Instant::now() + Duration::from_secs(2),
        |_| {},
    )
    .await;
    task.abort();
    figures.lateness_ms.sort_by(f64::total_cmp);
    Ok(figures)
}

impl Figures {
    fn count(&mut self, r: Report) {
        match r.status {
            Status::Up => self.up += 1,
            Status::Down => self.down += 1,
            Status::Missed => self.missed += 1,
        }
        if r.status == Status::Down && self.failure.is_none() {
            self.failure = Some(format!(
                "{:?}: {}",
                r.failure_class,
                r.error.unwrap_or_default()
            ));
        }
        self.response_ms += r.response_time_ms.unwrap_or(0.0);
        let late = (r.started_at - r.scheduled_at)
            .num_microseconds()
            .unwrap_or(0);
        self.lateness_ms.push(late as f64 / 1000.0);
    }
}

/// Hands every report received before `until` to `each`.
async fn drain_until(
    rx: &mut mpsc::Receiver<Report>,
    until: tokio::time::Instant,
    mut each: impl FnMut(Report),
) {
    loop {
        tokio::select! {
            r = rx.recv() => match r { Some(r) => each(r), None => return },
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

/// Settings of `n` targets every [`PERIOD`] spread over nginx's ports, the rest the defaults.
fn bench_targets(name: &str, nginx: &Nginx, n: usize) -> BenchResult<CheckerSettings> {
    let ca_file = match nginx.https {
        true => format!(r#","ca_file":"{}""#, nginx.dir.join("ca.pem").display()),
        false => String::new(),
    };
    let targets: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{name}-{i}","url":"{}","period":{},"timeout":{}{ca_file}}}"#,
                nginx.url(i, i),
                PERIOD.as_secs_f64(),
                TIMEOUT.as_secs_f64()
            )
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("nginx-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("checker.json");
    let json = format!(
        r#"{{"checker":{{"id":"bench"}},"monitored_urls":[{}]}}"#,
        targets.join(",")
    );
    std::fs::write(&file, json)?;
    let settings = CheckerSettings::load(&SettingsSource::file_only(file), false);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(settings.map_err(|e| format!("bench settings: {e}"))?)
}

/// wrk's requests per second against `url`, a new connection per request.
fn wrk(url: &str, run_for: Duration) -> BenchResult<f64> {
    let output = Command::new("wrk")
        .args([
            "-t",
            &WRK_THREADS.to_string(),
            "-c",
            &WRK_CONNECTIONS.to_string(),
        ])
        .args(["-d", &format!("{}s", run_for.as_secs().max(1))])
        .args(["-H", "Connection: close"])
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| format!("no rate in wrk's output: {text}"))?;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        println!("wrk reported errors:\n{text}");
    }
    Ok(rate)
}

/// Whose CPU time [`cpu_seconds`] reads.
enum Whose {
    /// This process's.
    Own,
    /// Its children's that ended and were waited for (wrk's).
    Children,
}

/// user + system CPU seconds (clock ticks of 1/100 s).
fn cpu_seconds(whose: Whose) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let first = match whose {
        Whose::Own => 11,
        Whose::Children => 13,
    };
    (ticks(first) + ticks(first + 1)) / 100.0
}

/// A `/proc/self/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
