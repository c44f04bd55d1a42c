//! `sslmode = "verify-full"` trusts the system's trust store: a server whose CA is in it is
//! reached without `sslrootcert`, and one whose CA is not is refused.
//!
//! The test PostgreSQL speaks no TLS, so a front made here answers the client's SSLRequest,
//! terminates TLS with a certificate for `localhost` from a CA made here, and passes the plain
//! protocol on to the server. The system's store the sink sees is pointed at that CA with
//! `SSL_CERT_FILE`, as an operator points it at a company's bundle.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use monitor_core::testing::{tls_server_config, TestDatabase};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// A certificate authority made here (its PEM) and a server certificate for `localhost` it
/// signed, as a rustls server configuration.
fn pki() -> (String, rustls::ServerConfig) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "web-monitor test database CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("key");
    let ca = params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let config = tls_server_config(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    (ca.pem(), config)
}

/// The TLS front of the PostgreSQL at `upstream` (host:port); returns its port.
async fn tls_front(config: rustls::ServerConfig, upstream: String) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if tcp.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                    return;
                }
                if tcp.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

/// `sink migrate` with `config`, seeing `system_bundle` as the system's trust store (or the
/// machine's own when `None`).
fn sink_migrate(config: &Path, system_bundle: Option<&Path>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sink"));
    command
        .args(["migrate", "--config"])
        .arg(config)
        .env_remove("WEBMON_CONFIG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "warn");
    if let Some(bundle) = system_bundle {
        command.env("SSL_CERT_FILE", bundle);
    }
    command.output().expect("sink runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run scripts/test.sh"]
async fn verify_full_trusts_a_server_whose_ca_is_in_the_system_store() {
    let db = TestDatabase::create().await;
    let server = url::Url::parse(&db.url).expect("url");
    let upstream = format!(
        "{}:{}",
        server.host_str().unwrap_or("127.0.0.1"),
        server.port().unwrap_or(5432)
    );
    let (ca_pem, config) = pki();
    let port = tls_front(config, upstream).await;
    let dir = tempfile::tempdir().expect("dir");
    let bundle = dir.path().join("system-bundle.pem");
    std::fs::write(&bundle, ca_pem).expect("write");
    let settings = dir.path().join("sink.toml");
    std::fs::write(
        &settings,
        format!(
            "[database]\nhost = \"localhost\"\nport = {port}\nname = \"{}\"\nuser = \"{}\"\nsslmode = \"verify-full\"\n",
            db.name,
            server.username()
        ),
    )
    .expect("write");

    let trusted = tokio::task::spawn_blocking({
        let (settings, bundle) = (settings.clone(), bundle.clone());
        move || sink_migrate(&settings, Some(&bundle))
    })
    .await
    .expect("runs");
    let refused = tokio::task::spawn_blocking(move || sink_migrate(&settings, None))
        .await
        .expect("runs");
    db.drop_database().await;
    assert!(
        trusted.status.success(),
        "verify-full with the CA in the system's store: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        !refused.status.success(),
        "a CA outside the store is refused"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("UnknownIssuer"), "{why}");
}
