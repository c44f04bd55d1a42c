//! The `checker` binary's admin endpoint against hostile or unlucky clients: many idle and
//! slow (slowloris) connections do not grow its memory and do not lock a scrape out, and
//! running out of file descriptors neither spins a CPU nor stops it for good.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use monitor_core::testing::{http_get, ok_site};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod support;
use support::admin_addr_in_log;

/// The endpoint's header timeout (`monitor_core::runtime::admin::HEADER_READ_TIMEOUT`, not reachable
/// here without the crate's `admin` feature).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

fn config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[[monitored_urls]]\nurl = \"http://127.0.0.1:9/\"\nperiod = \"60s\"\ntimeout = \"1s\"\n",
    )
    .expect("write");
    file
}

/// `checker --stdout` serving its admin endpoint on a port of its choosing, through `sh -c`
/// so that `limit` (a `ulimit` command) applies to it; and that port, read from `log`.
async fn spawn(config: &Path, limit: &str, log: &Path) -> (Child, u16) {
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_checker"))
        .arg("--config")
        .arg(config)
        .args(["--stdout", "--admin-listen", "127.0.0.1:0"])
        .arg("--log-file")
        .arg(log)
        .env_remove("WEBMON_CONFIG")
        .env("RUST_LOG", "warn,monitor_core::runtime::admin=info")
        .env("WEBMON__CHECKER__WATCH_CONFIG", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts");
    (child, admin_port_in(log).await)
}

/// The admin endpoint's port, from its start-up line in the log file `log`.
async fn admin_port_in(log: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(admin_addr_in_log) {
            return addr.port();
        }
        assert!(
            Instant::now() < deadline,
            "no admin endpoint in the log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET /healthz answered 200 within `within`, retrying while it does not answer.
async fn healthz_within(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let attempt = async {
            let s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            drop(s);
            Some(http_get(port, "/healthz").await)
        };
        if let Ok(Some((status, _))) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            if status.contains("200") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn proc_field(pid: u32, file: &str, f: impl Fn(&str) -> Option<u64>) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("proc readable");
    f(&text).unwrap_or_else(|| panic!("cannot parse /proc/{pid}/{file}: {text}"))
}

/// Resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", |t| {
        t.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// CPU time used (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    proc_field(pid, "stat", |t| {
        // Fields after the command name, which is in parentheses: state is field 3, utime 14.
        let rest = t.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    })
}

fn clock_ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_and_slow_connections_neither_grow_memory_nor_lock_a_scrape_out() {
    let _site = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, admin) = spawn(&config(dir.path()), "", &dir.path().join("log")).await;
    let pid = child.id().expect("running");
    assert!(
        healthz_within(admin, Duration::from_secs(20)).await,
        "the endpoint answers"
    );
    for _ in 0..3 {
        let _ = http_get(admin, "/metrics").await;
    }
    let before = rss_kib(pid);

    // Half send nothing; half a request head of 12 KiB that never ends (slowloris).
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(12 * 1024, b'a');
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", admin))
            .await
            .expect("connect");
        if i % 2 == 1 {
            let _ = s.write_all(&head).await;
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kib(pid);
    let answered = healthz_within(admin, Duration::from_secs(2)).await;
    drop(held);
    let _ = child.kill().await;

    let grown = during.saturating_sub(before);
    eprintln!("resident memory: {before} KiB before, {during} KiB with 1000 stalled connections");
    assert!(answered, "a scrape answers while 1000 clients stall");
    assert!(
        grown < 8 * 1024,
        "memory grew by {grown} KiB with 1000 stalled connections (from {before} KiB): it must \
         not grow per connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_it_backs_off_instead_of_spinning_and_recovers() {
    let _site = ok_site().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("log");
    let (mut child, admin) = spawn(&config(dir.path()), "ulimit -n 64 && ", &log).await;
    let pid = child.id().expect("running");
    assert!(
        healthz_within(admin, Duration::from_secs(20)).await,
        "the endpoint answers"
    );

    // More connections than the process has descriptors left: the rest wait in the backlog
    // and every accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(
            TcpStream::connect(("127.0.0.1", admin))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window = Duration::from_secs(3);
    assert!(
        window < HEADER_READ_TIMEOUT,
        "measured before any connection times out"
    );
    let start = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid) - start;
    let budget = clock_ticks_per_second() * window.as_secs() / 10;

    drop(held);
    let recovered = healthz_within(admin, Duration::from_secs(10)).await;
    let _ = child.kill().await;
    let _ = child.wait().await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let complaints = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("accept"))
        .count();
    eprintln!("CPU while out of descriptors: {used} ticks in {window:?}; {complaints} warnings about accepting");
    assert!(
        used < budget,
        "{used} clock ticks of CPU in {window:?} while out of descriptors: the accept loop spins \
         (at most {budget}, a tenth of a core)"
    );
    assert!(
        recovered,
        "the endpoint answers again once connections close"
    );
    assert!(
        complaints <= 5,
        "a failure is logged once, not per attempt: {complaints} warnings"
    );
    assert!(text.contains("accepts connections again"), "{text}");
}
