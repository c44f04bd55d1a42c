//! TLS for probes: the trust roots (the system's trust store, read once per process by
//! [`trust::roots`], plus a target's extra CA file), a verifier that records the server's leaf
//! certificate even when the handshake then fails, and the words for why a certificate was
//! refused.

use std::collections::HashMap;
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

/// Verifiers by extra CA file, built once and shared by every check of the targets using them,
/// all on the process's trust roots: no check reads the system's store.
#[derive(Debug)]
pub struct TrustStore {
    provider: Arc<CryptoProvider>,
    roots: &'static Roots,
    verifiers: Mutex<HashMap<Option<PathBuf>, Arc<WebPkiServerVerifier>>>,
}

impl Default for TrustStore {
    /// A store on the process's trust roots, which are read now if they were not yet.
    fn default() -> Self {
        TrustStore {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            roots: trust::roots(),
            verifiers: Mutex::new(HashMap::new()),
        }
    }
}

impl TrustStore {
    /// The verifier trusting the process's roots plus the certificates of `ca_file`.
    pub fn verifier(&self, ca_file: Option<&Path>) -> Result<Arc<WebPkiServerVerifier>, String> {
        let key = ca_file.map(Path::to_path_buf);
        if let Some(v) = self
            .verifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(v.clone());
        }
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
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| format!("cannot build a certificate verifier: {e}"))?;
        self.verifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, verifier.clone());
        Ok(verifier)
    }

    /// A client configuration for one check, whose verifier records the leaf certificate in
    /// `leaf`.
    pub fn client_config(
        &self,
        verifier: Arc<WebPkiServerVerifier>,
        leaf: Arc<Mutex<Option<CertificateDer<'static>>>>,
    ) -> Result<rustls::ClientConfig, String> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RecordingVerifier {
                inner: verifier,
                leaf,
            }))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Delegates every decision to the real verifier, after noting the leaf certificate.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Arc<Mutex<Option<CertificateDer<'static>>>>,
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
        *self.leaf.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
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
