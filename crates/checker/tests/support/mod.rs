//! What the publisher's test files share: a spool in memory and certificates made on the spot.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;

use checker::publish::{Message, Spool};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

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
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` signed by `ca`: DER, PEM, key DER, key PEM.
pub fn leaf(
    ca: &Ca,
    names: &[&str],
) -> (
    CertificateDer<'static>,
    String,
    PrivateKeyDer<'static>,
    String,
) {
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    (
        cert.der().clone(),
        cert.pem(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        key.serialize_pem(),
    )
}
