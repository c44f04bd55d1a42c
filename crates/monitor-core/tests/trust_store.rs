//! The Kafka client's TLS trusts the system's trust store when `kafka.tls.ca_file` is not set,
//! and only the CA file when it is.
//!
//! The system's store is pointed at a CA made here with `SSL_CERT_FILE`, as an operator would
//! point it at a company's bundle. The store is read once per process, so this file holds a
//! single test, which sets the variable before anything reads the store.

use std::sync::Arc;

use monitor_core::runtime::broker::tls_config;
use monitor_core::runtime::trust::{self, RootsSource};
use monitor_core::settings::TlsSettings;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority made here: its PEM and its issuer.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    (cert.pem(), Issuer::new(params, key))
}

/// A TLS server for `localhost` with a certificate signed by `issuer`, answering "ok" to
/// whatever arrives.
async fn server(issuer: &Issuer<'static, KeyPair>) -> u16 {
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("leaf");
    let config = monitor_core::testing::tls_server_config(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut byte = [0u8; 1];
                    let _ = tls.read(&mut byte).await;
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// Handshakes with the server at `port` as the Kafka client would, with `settings`.
async fn handshake(settings: &TlsSettings, port: u16) -> Result<(), String> {
    let config = tls_config(settings).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"?").await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    (answer == "ok").then_some(()).ok_or(answer)
}

#[tokio::test]
async fn the_broker_client_trusts_the_system_store_unless_a_ca_file_replaces_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (company_pem, company) = ca("web-monitor test company CA");
    let (other_pem, _) = ca("web-monitor test other CA");
    let bundle = dir.path().join("system-bundle.pem");
    std::fs::write(&bundle, &company_pem).expect("write");
    std::fs::write(dir.path().join("other.pem"), &other_pem).expect("write");
    // Before anything reads the store: this is the only test of this process.
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", &bundle);
    let port = server(&company).await;

    let roots = trust::roots();
    assert_eq!(roots.source(), RootsSource::System);
    assert_eq!(roots.len(), 1, "the store is the bundle of SSL_CERT_FILE");
    let system = TlsSettings {
        ca_file: None,
        cert_file: None,
        key_file: None,
    };
    handshake(&system, port)
        .await
        .expect("a broker whose CA is in the system's store is trusted without kafka.tls.ca_file");

    let own_ca = TlsSettings {
        ca_file: Some(dir.path().join("other.pem")),
        ..system
    };
    let refused = handshake(&own_ca, port)
        .await
        .expect_err("kafka.tls.ca_file replaces the system's store");
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}
