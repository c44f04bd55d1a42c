//! A fresh connection for one hop, phase by phase: the name looked up (unless it is an
//! address), TCP connected address by address, and for https the TLS handshake, each phase
//! timed into the [`Outcome`] and bounded by the check's deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use monitor_core::report::FailureClass;
use monitor_core::settings::TargetSettings;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use url::Host;

use super::deadline::within;
use super::outcome::{add, Failure, Outcome};
use super::tls::{self, TrustStore};

/// Where a hop connects: the URL's host as written and bare (without an IPv6 address's
/// brackets), the address when the host is one (parsed once, with the URL), and the port.
pub(super) struct Endpoint<'u> {
    pub host: &'u str,
    pub bare_host: &'u str,
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Endpoint<'_> {
    pub fn of(url: &url::Url) -> Endpoint<'_> {
        let host = url.host_str().unwrap_or_default();
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        Endpoint {
            port: url.port_or_known_default().unwrap_or(80),
            host,
            bare_host: host.trim_start_matches('[').trim_end_matches(']'),
            ip,
        }
    }
}

/// The addresses of a hop: the host's own, or those its name resolved to.
pub(super) enum Addrs {
    One(SocketAddr),
    Resolved(Vec<SocketAddr>),
}

impl Addrs {
    pub fn as_slice(&self) -> &[SocketAddr] {
        match self {
            Addrs::One(addr) => std::slice::from_ref(addr),
            Addrs::Resolved(addrs) => addrs,
        }
    }
}

/// The addresses of the endpoint: the host itself when it is an address, else a lookup.
pub(super) async fn resolve(
    at: &Endpoint<'_>,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<Addrs, Failure> {
    if let Some(ip) = at.ip {
        return Ok(Addrs::One(SocketAddr::new(ip, at.port)));
    }
    let host = at.host;
    let t = Instant::now();
    let resolved = within(
        deadline,
        tokio::net::lookup_host((at.bare_host, at.port)),
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
    Ok(Addrs::Resolved(addrs))
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
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The TLS handshake on `tcp`, trusting the system's roots and the target's CA file. The server's
/// certificate expiry goes into `out` even when the handshake fails.
pub(super) async fn tls(
    trust: &TrustStore,
    target: &TargetSettings,
    at: &Endpoint<'_>,
    tcp: TcpStream,
    deadline: Instant,
    out: &mut Outcome,
) -> Result<TlsStream<TcpStream>, Failure> {
    let config = trust
        .client_config(target.ca_file.as_deref())
        .map_err(|e| (FailureClass::Tls, e))?;
    let server_name = ServerName::try_from(at.bare_host.to_string()).map_err(|e| {
        (
            FailureClass::Tls,
            format!("{} cannot be a TLS server name: {e}", at.host),
        )
    })?;
    let t = Instant::now();
    let connecting = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp);
    let (handshake, leaf) =
        TrustStore::handshake_recording_leaf(within(deadline, connecting, || {
            (
                FailureClass::Timeout,
                "TLS handshake did not finish within the timeout".into(),
            )
        }))
        .await;
    add(&mut out.tls, t.elapsed());
    if let Some(der) = leaf {
        out.cert_not_after = trust.not_after(&der);
    }
    handshake?.map_err(|e| {
        (
            FailureClass::Tls,
            tls::describe_failure(&e, at.bare_host, out.cert_not_after),
        )
    })
}
