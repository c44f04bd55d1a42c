//! Connecting to Kafka as the settings say: brokers, TLS (mutual TLS included) and SASL.
//! Shared by the checker (producer) and the sink (consumer).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::trust;
use crate::settings::{KafkaSettings, SaslMechanism, TlsSettings};

/// Why a Kafka client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConnectError {
    /// A certificate or key file could not be read or parsed.
    #[error("{what} {path}: {source}")]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// rustls refused the TLS settings.
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    /// The brokers could not be reached or refused us.
    #[error("cannot connect to brokers {brokers}: {source}{}", hint_for(source))]
    Connect {
        /// The bootstrap brokers.
        brokers: String,
        /// Why.
        source: rskafka::client::error::Error,
    },
    /// The in-process relay to the brokers could not start.
    #[error("cannot start the broker connection relay (set kafka.nodelay_relay = false to connect directly): {0}")]
    Relay(io::Error),
    /// A broker accepted the connection but did not finish the handshake.
    #[error(
        "brokers {brokers} did not finish the connection handshake within {after:?}: check that \
         they are Kafka listeners and that kafka.tls and kafka.sasl (mechanism, user, password) \
         match what they expect"
    )]
    NoAnswer {
        /// The bootstrap brokers.
        brokers: String,
        /// How long it waited.
        after: Duration,
    },
}

/// The TLS client configuration for the brokers: their CA file, which replaces the roots, or
/// else the system's trust roots ([`trust::roots`]); and the client certificate and key for
/// mutual TLS.
pub fn tls_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, KafkaConnectError> {
    let roots = match &tls.ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("CA file", path)? {
                roots.add(cert)?;
            }
            roots
        }
        None => trust::roots().store(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client certificate", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| KafkaConnectError::File {
                what: "client key",
                path: key.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, KafkaConnectError> {
    let err = |source: io::Error| KafkaConnectError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
    if certs.is_empty() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no PEM certificate in the file",
        )));
    }
    Ok(certs)
}

/// Builds a client of the brokers. Requests retry with backoff for at most `retry_for`, after
/// which they fail and the caller decides (back off and try again, or spool).
pub async fn connect(
    settings: &KafkaSettings,
    client_id: &str,
    retry_for: Duration,
) -> Result<Client, KafkaConnectError> {
    let mut builder = ClientBuilder::new(settings.brokers.clone())
        .client_id(client_id.to_string())
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(retry_for),
        });
    if let Some(tls) = &settings.tls {
        builder = builder.tls_config(Arc::new(tls_config(tls)?));
    }
    // The relay needs Linux (TCP_QUICKACK, /proc); elsewhere the brokers are reached directly.
    #[cfg(target_os = "linux")]
    if settings.nodelay_relay {
        let relay = super::relay::address().map_err(KafkaConnectError::Relay)?;
        builder = builder.socks5_proxy(relay.to_string());
    }
    if let Some(sasl) = &settings.sasl {
        let credentials =
            Credentials::new(sasl.username.clone(), sasl.password.expose().to_string());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    // rskafka bounds reconnecting by the backoff deadline, but waits for an answer forever: a
    // listener that never answers the TLS or SASL handshake or the metadata request would hang
    // the caller.
    let limit = retry_for + HANDSHAKE_SLACK;
    match tokio::time::timeout(limit, builder.build()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(KafkaConnectError::Connect {
            brokers: settings.brokers.join(","),
            source,
        }),
        Err(_) => Err(KafkaConnectError::NoAnswer {
            brokers: settings.brokers.join(","),
            after: limit,
        }),
    }
}

/// A pointer to the setting to check, for the causes that name one.
fn hint_for(error: &rskafka::client::error::Error) -> &'static str {
    let text = error.to_string().to_lowercase();
    if text.contains("sasl") {
        " (the broker refused the SASL login: check kafka.sasl.mechanism, username and password)"
    } else if ["tls", "certificate", "alert"]
        .iter()
        .any(|w| text.contains(w))
    {
        " (check kafka.tls: the CA (ca_file, or the system's trust store without one), and the client certificate and key if the broker asks for one)"
    } else {
        ""
    }
}

/// How long past the retry deadline a connection attempt may take before it is given up.
const HANDSHAKE_SLACK: Duration = Duration::from_secs(10);
