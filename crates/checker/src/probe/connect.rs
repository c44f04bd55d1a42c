//! A fresh connection for one hop, phase by phase: the name looked up (unless it is an
//! address), TCP connected address by address, and for https the TLS handshake, each phase
//! timed into the [`Outcome`] and bounded by the check's deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monitor_core::report::FailureClass;
use monitor_core::settings::TargetSettings;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::deadline::within;
use super::outcome::{add, Failure, Outcome};
use super::tls::{self, TrustStore};

/// Where a hop connects: the URL's host as written and bare (without an IPv6 address's
/// brackets), and the port.
pub(super) struct Endpoint {
    pub host: String,
    pub bare_host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn of(url: &url::Url) -> Endpoint {
        let host = url.host_str().unwrap_or_default().to_string();
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Endpoint {
            port: url.port_or_known_default().unwrap_or(80),
            host,
            bare_host,
        }
    }
}

/// The addresses of the endpoint: the host itself when it is an address, else a lookup.
pub(super) async fn resolve(
    at: &Endpoint,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(ip) = at.bare_host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, at.port)]);
    }
    let host = &at.host;
    let t = Instant::now();
    let resolved = within(
        deadline,
        tokio::net::lookup_host((at.bare_host.as_str(), at.port)),
        || {
            (
                FailureClass::Dns,
                format!("resolving {host} did not finish within the timeout"),
            )
        },
    )
    .await;
    add(&mut out.dns, t.elapsed());
    let addrs: Vec<SocketAddr> = resolved?
        .map_err(|e| (FailureClass::Dns, format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err((FailureClass::Dns, format!("{host} has no address")));
    }
    Ok(addrs)
}

/// A TCP connection to the first of `addrs` that takes one.
pub(super) async fn tcp(
    addrs: &[SocketAddr],
    host: &str,
    timeout: Duration,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<TcpStream, Failure> {
    let t = Instant::now();
    let mut last_error = None;
    let mut stream = None;
    for addr in addrs {
        let connected = within(deadline, TcpStream::connect(addr), || {
            (
                FailureClass::ConnectTimeout,
                format!("no answer from {addr} within the {timeout:?} timeout"),
            )
        })
        .await;
        match connected {
            Err(failure) => {
                add(&mut out.connect, t.elapsed());
                return Err(failure);
            }
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last_error = Some((*addr, e)),
        }
    }
    add(&mut out.connect, t.elapsed());
    let tcp = match (stream, last_error) {
        (Some(s), _) => s,
        (None, Some((addr, e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err((
                FailureClass::ConnectRefused,
                format!("connection refused by {addr}"),
            ))
        }
        (None, Some((addr, e))) => {
            return Err((FailureClass::Io, format!("cannot connect to {addr}: {e}")))
        }
        (None, None) => return Err((FailureClass::Dns, format!("{host} has no address"))),
    };
    Ok(tcp)
}

/// The TLS handshake on `tcp`, trusting the system's roots and the target's CA file. The server's
/// certificate expiry goes into `out` even when the handshake fails.
pub(super) async fn tls(
    trust: &TrustStore,
    target: &TargetSettings,
    at: &Endpoint,
    tcp: TcpStream,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<TlsStream<TcpStream>, Failure> {
    let verifier = trust
        .verifier(target.ca_file.as_deref())
        .map_err(|e| (FailureClass::Tls, e))?;
    let leaf = Arc::new(Mutex::new(None));
    let config = trust
        .client_config(verifier, leaf.clone())
        .map_err(|e| (FailureClass::Tls, e))?;
    let server_name = ServerName::try_from(at.bare_host.clone()).map_err(|e| {
        (
            FailureClass::Tls,
            format!("{} cannot be a TLS server name: {e}", at.host),
        )
    })?;
    let t = Instant::now();
    let handshake = within(
        deadline,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
        || {
            (
                FailureClass::Timeout,
                "TLS handshake did not finish within the timeout".into(),
            )
        },
    )
    .await;
    add(&mut out.tls, t.elapsed());
    let recorded = leaf.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(der) = recorded {
        out.cert_not_after = tls::not_after(&der);
    }
    handshake?.map_err(|e| {
        (
            FailureClass::Tls,
            tls::describe_failure(&e, &at.bare_host, out.cert_not_after),
        )
    })
}
