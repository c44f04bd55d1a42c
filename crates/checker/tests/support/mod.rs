//! What the checker's test files share: the binary started as a test starts it, signals, its
//! admin address read from its log, a spool in memory, and certificates made on the spot.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use checker::spool::{Message, Spool};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::Client;
use rskafka::record::RecordAndOffset;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// `checker --config <config> <args>` as the tests run it: no settings from the environment
/// but the admin endpoint on port 0, warnings only, reports piped from stdout, killed when
/// dropped.
pub fn checker_command(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_checker"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("WEBMON_CONFIG")
        .env("RUST_LOG", "warn")
        .env("WEBMON__CHECKER__ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Sends the signal `name` (TERM, HUP, ...) to `child`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running");
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// The address in the admin endpoint's start-up log line (`admin endpoint: ... addr=...`),
/// text or JSON: how a test finds the port of a checker started with `--admin-listen
/// 127.0.0.1:0`.
pub fn admin_addr_in_log(line: &str) -> Option<SocketAddr> {
    if !line.contains("admin endpoint: /metrics") {
        return None;
    }
    let (_, rest) = line.split_once("addr")?;
    let rest = rest.trim_start_matches(['=', '"', ':']);
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))?;
    rest[..end].parse().ok()
}

/// The port of the admin endpoint of `child`, started with `--admin-listen 127.0.0.1:0` and its
/// log on stderr, read from that log (which is then drained, so the child never blocks on it).
pub async fn admin_port(child: &mut Child) -> u16 {
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = log
                .next_line()
                .await
                .expect("read")
                .expect("the admin log line");
            if let Some(addr) = admin_addr_in_log(&line) {
                return addr;
            }
        }
    })
    .await
    .expect("the admin endpoint starts within 10 s");
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    addr.port()
}

/// A listener on a loopback port of its own, and that port: bound before a broker starts, so
/// that the broker can advertise it.
pub async fn loopback_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// Every record of `partition` of `topic` up to its high watermark, in offset order.
pub async fn partition_records(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Vec<RecordAndOffset> {
    let pc = client
        .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let (batch, high_watermark) = pc
            .fetch_records(offset, 1..50_000_000, 50)
            .await
            .expect("fetch");
        for r in batch {
            if r.offset >= offset {
                offset = r.offset + 1;
                records.push(r);
            }
        }
        if offset >= high_watermark {
            return records;
        }
    }
}

/// A spool in memory: the publisher's fallback, without the disk.
#[derive(Default)]
pub struct MemorySpool(VecDeque<Message>);

impl Spool for MemorySpool {
    fn append(&mut self, messages: &[Message]) -> io::Result<()> {
        self.0.extend(messages.iter().cloned());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn peek(&mut self, max: usize) -> io::Result<Vec<Message>> {
        Ok(self.0.iter().take(max).cloned().collect())
    }
    fn commit(&mut self, n: usize) -> io::Result<()> {
        self.0.drain(..n.min(self.0.len()));
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A certificate authority made for a test.
pub struct Ca {
    pub pem: String,
    pub der: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

/// A fresh certificate authority.
pub fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "web-monitor test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate and its key, in DER and PEM.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub pem: String,
    pub key: PrivateKeyDer<'static>,
    pub key_pem: String,
}

/// A certificate for `names` signed by `ca` (self-signed without one), valid from 2019 to
/// June of `not_after_year`.
pub fn leaf_until(ca: Option<&Ca>, names: &[&str], not_after_year: i32) -> Leaf {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after_year, 6, 1);
    let key = KeyPair::generate().expect("key");
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer).expect("signed"),
        None => params.self_signed(&key).expect("self-signed"),
    };
    Leaf {
        der: cert.der().clone(),
        pem: cert.pem(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        key_pem: key.serialize_pem(),
    }
}

/// A certificate for `names` signed by `ca`, valid for decades: DER, PEM, key DER, key PEM.
pub fn leaf(
    ca: &Ca,
    names: &[&str],
) -> (
    CertificateDer<'static>,
    String,
    PrivateKeyDer<'static>,
    String,
) {
    let l = leaf_until(Some(ca), names, 2090);
    (l.der, l.pem, l.key, l.key_pem)
}

/// Terminates mutual TLS on `listener` (client certificates signed by `ca` only) and forwards
/// the plain bytes to `upstream`.
pub fn tls_terminator(ca: &Ca, listener: TcpListener, upstream: u16) {
    let (cert, _, key, _) = leaf(ca, &["127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

/// An HTTPS site on 127.0.0.1 with the certificate `leaf`, answering every request with 200
/// "secure" on a fresh connection. Returns its port.
pub async fn https_site(leaf: Leaf) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = monitor_core::testing::tls_server_config(vec![leaf.der], leaf.key);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (listener, port) = loopback_listener().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}
