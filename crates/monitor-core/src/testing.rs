//! Helpers for integration tests that need a real Kafka-protocol broker and a real PostgreSQL.
//!
//! Tests find the services through `KAFKA_BROKERS` (comma-separated `host:port`) and
//! `DATABASE_URL` (a server URL whose user may create databases), as `scripts/test.sh` sets
//! them. A missing variable fails the test with a message that says how to run it: a test that
//! needs a service never passes without one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rskafka::client::{Client, ClientBuilder};

use crate::report::{report_id, Report, Status, Timings, SCHEMA_VERSION};
use sqlx::{Connection, Executor, PgConnection};

/// The reason service tests are ignored by a plain `cargo test`.
pub const NEEDS_SERVICES: &str = "needs Kafka and PostgreSQL: run scripts/test.sh";

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs a real service. Run `scripts/test.sh`, which \
             starts a broker and PostgreSQL and sets KAFKA_BROKERS, DATABASE_URL and TANSU_BIN, or set \
             them yourself"
        ),
    }
}

/// The brokers from `KAFKA_BROKERS`; panics with instructions when unset.
pub fn kafka_brokers() -> Vec<String> {
    required_env("KAFKA_BROKERS")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The server URL from `DATABASE_URL`; panics with instructions when unset.
pub fn database_url() -> String {
    required_env("DATABASE_URL")
}

/// A name no other test uses: `prefix-<uuid>` with only lowercase letters, digits and `_`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A client of the test broker.
pub async fn kafka_client() -> Arc<Client> {
    let brokers = kafka_brokers();
    let client = tokio::time::timeout(
        Duration::from_secs(30),
        ClientBuilder::new(brokers.clone())
            .backoff_config(rskafka::BackoffConfig {
                deadline: Some(Duration::from_secs(30)),
                ..Default::default()
            })
            .build(),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out connecting to the broker at {brokers:?}"))
    .unwrap_or_else(|e| panic!("cannot connect to the broker at {brokers:?}: {e}"));
    Arc::new(client)
}

/// Creates a topic of its own for one test, and returns its name.
pub async fn create_topic(client: &Client, partitions: i32) -> String {
    let topic = unique_name("wmtest").replace('_', "-");
    client
        .controller_client()
        .unwrap_or_else(|e| panic!("no controller: {e}"))
        .create_topic(&topic, partitions, 1, 5_000)
        .await
        .unwrap_or_else(|e| panic!("cannot create topic {topic}: {e}"));
    topic
}

/// A database of its own for one test, dropped by [`TestDatabase::drop_database`].
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database on the server of `DATABASE_URL`.
    pub async fn create() -> TestDatabase {
        let admin_url = database_url();
        let name = unique_name("wmtest");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let mut url = url::Url::parse(&admin_url).unwrap_or_else(|e| panic!("DATABASE_URL: {e}"));
        url.set_path(&name);
        TestDatabase {
            name,
            url: url.to_string(),
            admin_url,
        }
    }

    /// Drops the database (closing anything still connected to it).
    pub async fn drop_database(self) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

/// A realistic report of `target`'s `n`-th check (one a minute from a fixed time; every tenth
/// one down with `http_status`): deterministic, so a report built twice is the same report.
pub fn sample_report(target: &str, n: i64) -> Report {
    let scheduled = Utc
        .timestamp_opt(1_790_000_000 + n * 60, 0)
        .single()
        .unwrap_or_default();
    Report {
        schema_version: SCHEMA_VERSION,
        report_id: report_id("test", target, scheduled),
        target_id: target.to_string(),
        url: format!("https://{target}.example/"),
        checker_id: "test".into(),
        scheduled_at: scheduled,
        started_at: scheduled + chrono::Duration::milliseconds(3),
        status: if n % 10 == 0 {
            Status::Down
        } else {
            Status::Up
        },
        failure_class: (n % 10 == 0).then_some(crate::report::FailureClass::HttpStatus),
        error: (n % 10 == 0).then(|| "status 503, expected 200-299".to_string()),
        http_status: Some(if n % 10 == 0 { 503 } else { 200 }),
        response_time_ms: Some(12.0 + n as f64),
        timings_ms: Timings {
            dns: Some(0.5),
            connect: Some(1.0),
            tls: Some(4.0),
            ttfb: Some(6.0),
            transfer: Some(0.5),
        },
        body_bytes: Some(100),
        regexp: Some("ok".into()),
        regexp_matched: Some(true),
        tls_cert_not_after: Some(scheduled + chrono::Duration::days(40)),
        timeout_s: 5.0,
        period_s: 60.0,
        body_truncated: Some(false),
        check_request: None,
    }
}

/// How [`OwnBroker::start_with`] starts a broker.
#[derive(Debug, Default, Clone)]
pub struct BrokerOptions {
    /// The port the broker advertises (a proxy's or a TLS terminator's, for tests that put
    /// something in front of it); its own port when `None`.
    pub advertised_port: Option<u16>,
    /// Require SASL authentication from every client (`tansu broker --authentication`).
    pub authentication: bool,
    /// Keep the broker's state (topics, records, SCRAM users) in SQLite under this directory
    /// instead of memory, so that it outlives a restart of the broker.
    pub state_dir: Option<std::path::PathBuf>,
}

/// A broker of one test's own: `tansu` from `TANSU_BIN` (which `scripts/test.sh` sets), by
/// default with memory storage. Killed when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    /// The port the broker listens on.
    pub port: u16,
    child: std::process::Child,
}

impl OwnBroker {
    /// Starts a broker with memory storage that advertises `advertised_port` (its own port
    /// when `None`), and waits until it accepts connections.
    pub async fn start(advertised_port: Option<u16>) -> OwnBroker {
        OwnBroker::start_with(BrokerOptions {
            advertised_port,
            ..BrokerOptions::default()
        })
        .await
    }

    /// Starts a broker as `options` say, and waits until it accepts connections.
    pub async fn start_with(options: BrokerOptions) -> OwnBroker {
        let bin = required_env("TANSU_BIN");
        let port = free_port();
        let advertised = options.advertised_port.unwrap_or(port);
        let mut command = std::process::Command::new(&bin);
        command.arg("broker");
        match &options.state_dir {
            // tansu resolves a sqlite:// path against its working directory.
            Some(dir) => {
                command
                    .current_dir(dir)
                    .args(["--storage-engine", "sqlite://tansu.db"]);
            }
            None => {
                command.args(["--storage-engine", "memory://tansu/"]);
            }
        }
        command.args([
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ]);
        if options.authentication {
            command.arg("--authentication");
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut broker = OwnBroker { port, child };
        for _ in 0..200 {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "tansu exited ({status}) instead of listening on {port}; is TANSU_BIN a \
                     tansu 0.6 built with the dynostore and libsql features? scripts/test.sh \
                     installs one"
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tansu did not start listening on {port} within 10 s");
    }

    /// A broker that requires SASL and knows `users` (name, password, SCRAM-SHA-`256` or
    /// `512`), its state kept under `state_dir`: the users are created while a first broker on
    /// that state is open, then it restarts with authentication on.
    pub async fn start_with_scram_users(
        state_dir: &std::path::Path,
        advertised_port: Option<u16>,
        users: &[(&str, &str, u16)],
    ) -> OwnBroker {
        let open = OwnBroker::start_with(BrokerOptions {
            state_dir: Some(state_dir.to_path_buf()),
            ..BrokerOptions::default()
        })
        .await;
        for (name, password, sha) in users {
            open.create_scram_user(name, password, *sha);
        }
        drop(open);
        OwnBroker::start_with(BrokerOptions {
            advertised_port,
            authentication: true,
            state_dir: Some(state_dir.to_path_buf()),
        })
        .await
    }

    /// Creates (or replaces) a SCRAM user with `tansu user create`; `sha` is 256 or 512. The
    /// broker must not require authentication yet: create the users, then restart it with
    /// [`BrokerOptions::authentication`] on the same [`BrokerOptions::state_dir`].
    pub fn create_scram_user(&self, name: &str, password: &str, sha: u16) {
        let bin = required_env("TANSU_BIN");
        let output = std::process::Command::new(&bin)
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--mechanism",
                &format!("scram{sha}"),
                // The least RFC 7677 allows: logins are slow enough in debug builds.
                "--iterations",
                "4096",
                name,
                password,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {bin} user create: {e}"));
        assert!(
            output.status.success(),
            "tansu user create {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls server configuration (with `ring`) presenting `chain`, whose first certificate's
/// key is `key` (an rcgen key as `PrivatePkcs8KeyDer::from(key.serialize_der())`), for the
/// TLS servers tests play.
pub fn tls_server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: impl Into<rustls::pki_types::PrivateKeyDer<'static>>,
) -> rustls::ServerConfig {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key.into())
        .expect("server config")
}

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes, for tests that bound a
/// service's memory.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A TCP proxy on loopback whose link can be cut (every connection dropped, new ones closed at
/// once) and restored, to play a network outage between a client and a server, or turned into
/// a black hole ([`Proxy::black_hole`]) to play a half-open connection; and that can add
/// latency ([`Proxy::with_latency`]), to play a server in another zone or region.
#[derive(Debug)]
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
    silent: tokio::sync::watch::Sender<bool>,
    one_way: Duration,
}

/// Keeps `sockets` open, silent, until the link is cut or the proxy dropped.
async fn hold<T>(mut link: tokio::sync::watch::Receiver<bool>, sockets: T) {
    let _ = link.wait_for(|up| !*up).await;
    drop(sockets);
}

impl Proxy {
    /// Binds a proxy port; forwarding starts with [`Proxy::forward_to`].
    pub async fn bind() -> (Proxy, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind a proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (up, _) = tokio::sync::watch::channel(true);
        let (silent, _) = tokio::sync::watch::channel(false);
        (
            Proxy {
                port,
                up,
                silent,
                one_way: Duration::ZERO,
            },
            listener,
        )
    }

    /// Delays every chunk of bytes by `one_way` in each direction (a round trip takes twice
    /// that), and a new connection by one round trip before its first byte is forwarded, as
    /// TCP's handshake does. Bandwidth is not limited: chunks in flight overlap. Applies to
    /// connections forwarded after this call. (A black hole applies to links without latency.)
    pub fn with_latency(mut self, one_way: Duration) -> Proxy {
        self.one_way = one_way;
        self
    }

    /// Forwards connections accepted on `listener` to `upstream_port` while the link is up.
    pub fn forward_to(&self, listener: tokio::net::TcpListener, upstream_port: u16) {
        let up = self.up.subscribe();
        let silent = self.silent.subscribe();
        let one_way = self.one_way;
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*up.borrow() {
                    drop(client);
                    continue;
                }
                if *silent.borrow() {
                    tokio::spawn(hold(up.clone(), client));
                    continue;
                }
                let mut link = up.clone();
                let mut quiet = silent.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if one_way.is_zero() {
                        let black_hole = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                            _ = link.wait_for(|up| !*up) => false,
                            _ = quiet.wait_for(|silent| *silent) => true,
                        };
                        if black_hole {
                            hold(link, (client, server)).await;
                        }
                        return;
                    }
                    tokio::time::sleep(one_way * 2).await;
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    tokio::select! {
                        _ = async {
                            tokio::join!(
                                delayed_copy(from_client, to_server, one_way),
                                delayed_copy(from_server, to_client, one_way),
                            )
                        } => {}
                        _ = link.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
    }

    /// Cuts the link: drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Restores the link (new connections are forwarded again).
    pub fn restore(&self) {
        self.silent.send_replace(false);
        self.up.send_replace(true);
    }

    /// Turns the link into a black hole, as a network that drops every packet: connections
    /// stay open at both ends but nothing more is forwarded either way (no FIN, no RST), and
    /// new connections are accepted and left silent. [`Proxy::cut`] closes them all.
    pub fn black_hole(&self) {
        self.silent.send_replace(true);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; the end of the stream
/// is passed on after the last chunk.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A site on 127.0.0.1 answering every request with 200 "ok" on a fresh connection (it closes
/// after each answer). Returns its port.
pub async fn ok_site() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind a test site: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

/// GET `path` from 127.0.0.1:`port` (an admin endpoint): the status line and the body.
pub async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("nothing answers on port {port}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("cannot send to port {port}: {e}"));
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}
