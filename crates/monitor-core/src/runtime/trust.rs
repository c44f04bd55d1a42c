//! The roots of trust every TLS client of the process starts from: the operating system's
//! store, as curl, blackbox_exporter and Gatus use it, so that a company's CA installed in the
//! image (`ca-certificates`, `update-ca-certificates`) is trusted without a `ca_file` on every
//! target.
//!
//! `rustls-native-certs` reads the store: on Linux the bundle and directory OpenSSL would
//! read, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set. It was picked over
//! `rustls-platform-verifier` because every client here needs a root store, not a verifier:
//! the probes wrap their verifier to record the leaf certificate and add a target's `ca_file`
//! to the roots, the Kafka client's `ca_file` replaces them, the compiled-in fallback is a root
//! store too, and sqlx's `tls-rustls-ring-native-roots` reads the same store with the same
//! crate, so the probes, Kafka and PostgreSQL trust the same roots. It brings no crypto
//! provider of its own: `ring` stays the only one.
//!
//! The store is read once per process ([`roots`]), at first use, never per check or per
//! connection. Where the system has none (a scratch image without `ca-certificates`), the
//! Mozilla roots compiled into the binary (`webpki-roots`) stand in. Which of the two is used,
//! and how many roots it holds, is logged once.

use std::sync::OnceLock;

use rustls::RootCertStore;
use rustls_native_certs::CertificateResult;
use tracing::{info, warn};

/// Where the process's trust roots come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsSource {
    /// The operating system's store (or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    System,
    /// The Mozilla roots compiled in (`webpki-roots`): the system has none.
    Compiled,
}

impl RootsSource {
    /// The word the log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RootsSource::System => "system",
            RootsSource::Compiled => "compiled-in webpki-roots",
        }
    }
}

/// The trust roots of the process.
#[derive(Debug)]
pub struct Roots {
    store: RootCertStore,
    source: RootsSource,
    /// Certificates of the system's store that rustls could not use.
    skipped: usize,
}

impl Roots {
    /// The roots from what the system's store gave: its usable certificates, or the compiled-in
    /// roots when it gave none.
    pub fn from_loaded(loaded: CertificateResult) -> Roots {
        let mut store = RootCertStore::empty();
        let (_, skipped) = store.add_parsable_certificates(loaded.certs);
        if store.is_empty() {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Roots {
                store,
                source: RootsSource::Compiled,
                skipped,
            };
        }
        Roots {
            store,
            source: RootsSource::System,
            skipped,
        }
    }

    /// A copy of the roots, for a client to build on (add a CA file to).
    pub fn store(&self) -> RootCertStore {
        self.store.clone()
    }

    /// Where the roots come from.
    pub fn source(&self) -> RootsSource {
        self.source
    }

    /// How many roots there are.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are none (never: the compiled-in roots are not empty).
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

/// The trust roots of the process: the system's store, read at the first call only.
pub fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        if let Some(first) = loaded.errors.first() {
            warn!(
                errors = loaded.errors.len(),
                first = %first,
                "parts of the system's trust store could not be read"
            );
        }
        let roots = Roots::from_loaded(loaded);
        info!(
            source = roots.source.as_str(),
            roots = roots.len(),
            skipped = roots.skipped,
            "TLS trust roots loaded"
        );
        roots
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    fn loaded(certs: Vec<CertificateDer<'static>>) -> CertificateResult {
        let mut result = CertificateResult::default();
        result.certs = certs;
        result
    }

    #[test]
    fn a_system_without_roots_falls_back_to_the_compiled_ones() {
        let roots = Roots::from_loaded(loaded(Vec::new()));
        assert_eq!(roots.source(), RootsSource::Compiled);
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
    }

    #[test]
    fn unusable_system_certificates_count_as_none() {
        let roots = Roots::from_loaded(loaded(vec![CertificateDer::from(vec![0x30, 0x03, 1])]));
        assert_eq!(roots.source(), RootsSource::Compiled);
        assert_eq!(roots.skipped, 1);
    }

    #[test]
    fn the_process_reads_its_roots_once() {
        assert!(std::ptr::eq(roots(), roots()));
        assert!(!roots().is_empty());
    }
}
