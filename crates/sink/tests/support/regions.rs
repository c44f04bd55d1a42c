//! Sites and checker processes of several regions for the tests that run real checkers: a
//! site that answers 200 (or 503 while switched to failing), and `target/debug/checker` of a
//! region checking target `shop` at a URL of its own every second.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use monitor_core::testing::kafka_brokers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// A site that answers 200, or 503 while its switch is on.
pub struct Site {
    pub port: u16,
    failing: Arc<AtomicBool>,
}

impl Site {
    pub async fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let failing = Arc::new(AtomicBool::new(false));
        let switch = failing.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let failing = switch.load(Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let status = if failing {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                    let _ = s.write_all(response.as_bytes()).await;
                });
            }
        });
        Site { port, failing }
    }

    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// The checker binary beside this test's (`target/debug/checker`), built first if missing.
pub fn checker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug");
    let checker = dir.join("checker");
    if !checker.exists() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "checker", "--bin", "checker"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cannot build the checker");
    }
    checker
}

/// A checker process of region `region`, checking target `shop` at `port` every second (at
/// a path of the region's name).
pub fn start_checker(region: &str, port: u16, topic: &str, dir: &std::path::Path) -> Child {
    let shop = serde_json::json!([{
        "id": "shop",
        "url": format!("http://127.0.0.1:{port}/{region}"),
        "period": 1,
        "timeout": 0.5,
    }]);
    start_checker_with(region, topic, dir, shop)
}

/// A checker process of region `region` with `targets` as its `monitored_urls`.
pub fn start_checker_with(
    region: &str,
    topic: &str,
    dir: &std::path::Path,
    targets: serde_json::Value,
) -> Child {
    let config = serde_json::json!({
        "checker": {
            "id": region,
            "admin_listen": "127.0.0.1:0",
            "spool_dir": dir.join(format!("spool-{region}")),
            "linger": "20ms",
        },
        "kafka": { "brokers": kafka_brokers(), "topic": topic, "create_topic": false },
        "monitored_urls": targets,
    });
    let file = dir.join(format!("{region}.json"));
    std::fs::write(&file, config.to_string()).expect("write");
    Command::new(checker_binary())
        .arg("--config")
        .arg(&file)
        .env_remove("WEBMON_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the checker starts")
}
