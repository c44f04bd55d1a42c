//! Checker benchmark: N targets on loopback, each checked on a fresh connection every period,
//! for a fixed time. Prints checks/s achieved against requested, scheduling lateness
//! (`started_at − scheduled_at`) percentiles, CPU time, and RSS per target.
//!
//! ```sh
//! cargo run --release -p checker --example schedule_bench -- 10000 1s 20s
//! cargo run --release -p checker --example schedule_bench -- 100000 1h 20s   # idle memory per target
//! cargo run --release -p checker --example schedule_bench -- 50000 1s 10s noop
//! ```
//!
//! With `noop` the check returns its report at once without a connection, so the CPU per slot
//! is the schedule's own: the queue, the cap, the task, the report's way out.

/// The allocator the binaries use (see `src/main.rs`), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use checker::probe::{CheckFn, Checker};
use checker::report::missed_report;
use checker::schedule;
use chrono::{DateTime, Utc};
use monitor_core::report::Status;
use monitor_core::settings::{parse_duration, CheckerSettings, SettingsSource, TargetSettings};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Listeners the targets are spread over, so connection tuples do not run out.
const SERVER_PORTS: usize = 16;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    // utime + stime, in clock ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let period = args
        .get(2)
        .and_then(|a| parse_duration(a).ok())
        .unwrap_or(Duration::from_secs(1));
    let run_for = args
        .get(3)
        .and_then(|a| parse_duration(a).ok())
        .unwrap_or(Duration::from_secs(10));
    let noop = args.get(4).is_some_and(|a| a == "noop");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let mut ports = Vec::new();
        for _ in 0..SERVER_PORTS {
            ports.push(monitor_core::testing::ok_site().await);
        }
        let rss_before = rss_kib();
        let list = bench_targets(&ports, n, period);
        let (_targets_tx, targets_rx) = watch::channel(list);
        let (tx, mut rx) = mpsc::channel(100_000);
        let stop = CancellationToken::new();
        let check = match noop {
            true => noop_check(),
            false => Arc::new(Checker::new("bench")).into_check_fn(),
        };
        let cpu0 = cpu_seconds();
        let started = Instant::now();
        let task = tokio::spawn(schedule::run(targets_rx, check, "bench".into(), 4096, tx, stop.clone()));
        let mut lateness = Vec::new();
        let (mut up, mut down, mut missed) = (0u64, 0u64, 0u64);
        let mut peak_rss = 0;
        let deadline = tokio::time::Instant::now() + run_for;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => {
                        match r.status { Status::Up => up += 1, Status::Down => down += 1, Status::Missed => missed += 1 }
                        lateness.push((r.started_at - r.scheduled_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        if lateness.len() % 10_000 == 0 { peak_rss = peak_rss.max(rss_kib()); }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let rss = rss_kib().max(peak_rss);
        stop.cancel();
        let _ = task.await;
        lateness.sort_by(|a, b| a.total_cmp(b));
        let checks = up + down + missed;
        println!("targets {n}, period {period:?}, run {elapsed:.1} s");
        println!(
            "checks/s: {:.0} achieved, {:.0} requested  (up {up}, down {down}, missed {missed})",
            checks as f64 / elapsed,
            n as f64 / period.as_secs_f64()
        );
        println!(
            "lateness ms: p50 {:.2}, p99 {:.2}, max {:.2}",
            percentile(&lateness, 0.5),
            percentile(&lateness, 0.99),
            lateness.last().copied().unwrap_or(0.0)
        );
        println!(
            "cpu: {cpu:.1} s over {elapsed:.1} s = {:.0} % of one core, {:.2} µs per slot",
            100.0 * cpu / elapsed,
            1e6 * cpu / checks.max(1) as f64
        );
        println!(
            "rss: {} KiB (before targets {} KiB): {:.2} KiB per target",
            rss,
            rss_before,
            (rss.saturating_sub(rss_before)) as f64 / n as f64
        );
    });
}

/// A check that makes no connection: its report, up, at once.
fn noop_check() -> CheckFn {
    Arc::new(|target: Arc<TargetSettings>, scheduled_at: DateTime<Utc>| {
        Box::pin(async move {
            let mut report = missed_report(&target, "bench", scheduled_at, Utc::now());
            report.status = Status::Up;
            report
        })
    })
}

/// `n` targets every `period`, each on one of the local sites of `ports`.
fn bench_targets(ports: &[u16], n: usize, period: Duration) -> Vec<Arc<TargetSettings>> {
    let timeout = (period / 2).min(Duration::from_secs(5));
    let targets: String = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"t{i}\",\"url\":\"http://127.0.0.1:{}/{i}\",\"period\":{},\"timeout\":{}}}",
                ports[i % ports.len()],
                period.as_secs_f64(),
                timeout.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let dir = std::env::temp_dir().join(format!("checker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bench.json");
    std::fs::write(&file, format!("{{\"monitored_urls\":[{targets}]}}")).expect("write");
    let settings =
        CheckerSettings::load(&SettingsSource::file_only(file), false).expect("settings");
    let _ = std::fs::remove_dir_all(&dir);
    settings.targets.into_iter().map(Arc::new).collect()
}
