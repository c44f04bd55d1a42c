//! TLS for probes: the trust roots (the system's trust store, read once per process by
//! [`trust::roots`], plus a target's extra CA file), a verifier that records the server's leaf
//! certificate even when the handshake then fails, and the words for why a certificate was
//! refused.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use monitor_core::runtime::trust::{self, Roots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Most certificate expiries kept by [`TrustStore::not_after`]; past that the cache starts
/// again (one entry per distinct server certificate, a few dozen bytes each).
const MAX_CACHED_EXPIRIES: usize = 10_000;

tokio::task_local! {
    /// The leaf certificate the server presented during the handshake running in this task
    /// ([`TrustStore::handshake_recording_leaf`]): the one client configuration per CA file is
    /// shared by every check, so what one handshake saw is kept with its task.
    static LEAF: RefCell<Option<CertificateDer<'static>>>;
}

/// Client configurations by extra CA file, built once and shared by every check of the targets
/// using them, all on the process's trust roots: no check reads the system's store or builds a
/// configuration. Certificate expiries are parsed once per certificate.
#[derive(Debug)]
pub struct TrustStore {
    provider: Arc<CryptoProvider>,
    roots: &'static Roots,
    configs: Mutex<HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>>,
    /// notAfter by certificate (a keyed hash of its DER).
    expiries: Mutex<HashMap<u64, Option<DateTime<Utc>>>>,
    hasher: RandomState,
}

impl Default for TrustStore {
    /// A store on the process's trust roots, which are read now if they were not yet.
    fn default() -> Self {
        TrustStore {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            roots: trust::roots(),
            configs: Mutex::new(HashMap::new()),
            expiries: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }
}

impl TrustStore {
    /// The client configuration trusting the process's roots plus the certificates of
    /// `ca_file`: made on first use, then shared.
    pub fn client_config(
        &self,
        ca_file: Option<&Path>,
    ) -> Result<Arc<rustls::ClientConfig>, String> {
        let key = ca_file.map(Path::to_path_buf);
        let configs = || self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = configs().get(&key) {
            return Ok(config.clone());
        }
        // Built without the lock (the CA file is read): two first checks may both build one.
        let config = Arc::new(self.build_config(ca_file)?);
        configs().insert(key, config.clone());
        Ok(config)
    }

    fn build_config(&self, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
        let mut roots = self.roots.store();
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
            }
        }
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| format!("cannot build a certificate verifier: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RecordingVerifier { inner }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every check measures a full handshake and sees the server's certificate: a shared
        // configuration must not resume an earlier check's session.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// Runs `handshake`, returning its output and the leaf certificate the server presented,
    /// if it got that far (also when the handshake then failed).
    pub async fn handshake_recording_leaf<T>(
        handshake: impl Future<Output = T>,
    ) -> (T, Option<CertificateDer<'static>>) {
        LEAF.scope(RefCell::new(None), async {
            let out = handshake.await;
            (out, LEAF.with(|leaf| leaf.take()))
        })
        .await
    }

    /// The expiry of the DER certificate `der`, parsed once per certificate.
    pub fn not_after(&self, der: &[u8]) -> Option<DateTime<Utc>> {
        let key = self.hasher.hash_one(der);
        let mut expiries = self.expiries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = expiries.get(&key) {
            return *at;
        }
        if expiries.len() >= MAX_CACHED_EXPIRIES {
            expiries.clear();
        }
        let at = not_after(der);
        expiries.insert(key, at);
        at
    }
}

/// Delegates every decision to the real verifier, after noting the leaf certificate for the
/// handshake's task.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let _ = LEAF.try_with(|leaf| *leaf.borrow_mut() = Some(end_entity.clone().into_owned()));
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The expiry (notAfter) of a DER certificate.
pub fn not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

/// Why the handshake failed, in words an operator acts on.
pub fn describe_failure(
    error: &std::io::Error,
    host: &str,
    not_after: Option<DateTime<Utc>>,
) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => match not_after {
                Some(at) => format!("certificate expired {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
                None => "certificate expired".into(),
            },
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate is not valid for host {host}")
            }
            CertificateError::UnknownIssuer => {
                "certificate signed by an unknown authority (self-signed, or its CA is in neither the system's trust store nor the target's ca_file)".into()
            }
            CertificateError::Revoked => "certificate is revoked".into(),
            other => format!("certificate refused: {other:?}"),
        },
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {error}"),
    }
}
