//! The in-process relay every broker connection goes through, so that small produce requests
//! are not held back by Nagle's algorithm.
//!
//! rskafka never sets `TCP_NODELAY` and writes each request as two writes (its 4-byte length,
//! then the body). With Nagle's algorithm on, the body waits until the length is
//! acknowledged, and a receiver that delays its acknowledgement (Linux: ~40 ms) delays the
//! request by as much: measured here, produce requests of ~10–64 KiB took linger + ~48 ms
//! instead of linger + ~6 ms. rskafka can reach its brokers through a SOCKS5 proxy, which is
//! the one hook it offers into its connections; this relay is that proxy, on loopback, in the
//! same process. It acknowledges what rskafka writes at once (`TCP_QUICKACK` after every read,
//! so the second write is never held) and talks to the brokers with `TCP_NODELAY`.
//!
//! The relay serves this process only: a connection from another process's socket is closed
//! before the SOCKS5 exchange, so other local users cannot use it as a proxy. Telling whose a
//! socket is reads the system's TCP table and this process's open files, which costs
//! milliseconds on a busy host; connections that arrive together (one per partition when a
//! topic connects) share one reading taken after they were all accepted. It speaks the
//! part of SOCKS5 rskafka uses: no authentication, `CONNECT` to an IPv4, IPv6 or domain
//! address.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// How long a connection may take to ask for its broker, and to reach it.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read at once in each direction.
const BUFFER: usize = 256 * 1024;

static RELAY: OnceLock<Result<SocketAddr, String>> = OnceLock::new();

/// The relay's address, starting it on first use. It runs on a thread of its own, so it
/// outlives whichever runtime asked first.
pub fn address() -> io::Result<SocketAddr> {
    RELAY
        .get_or_init(|| start().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn start() -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("kafka-relay".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(e) => warn!(error = %e, "broker connection relay cannot listen"),
                }
            })
        })?;
    debug!(%addr, "broker connection relay listening");
    Ok(addr)
}

async fn serve(listener: TcpListener) {
    let owners = Arc::new(Owners::default());
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let accepted = Instant::now();
                let owners = Arc::clone(&owners);
                tokio::spawn(async move {
                    if let Err(e) = relay(client, peer, accepted, &owners).await {
                        debug!(error = %e, "broker connection relay: connection ended");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "broker connection relay cannot accept; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    owners: &Owners,
) -> io::Result<()> {
    let relay_port = client.local_addr()?.port();
    if !owners.is_own_socket(peer, relay_port, accepted).await {
        warn!(%peer, "broker connection relay: refused a connection from another process");
        return Ok(());
    }
    let upstream = tokio::time::timeout(SETUP_TIMEOUT, handshake(&mut client))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "SOCKS5 set-up timed out"))??;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_upstream, mut to_upstream) = upstream.into_split();
    let outbound = async move {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_upstream.shutdown().await;
            }
            // Acknowledge the next segment at once, so rskafka's second write is not held.
            quickack(from_client.as_ref());
            to_upstream.write_all(&buf[..n]).await?;
        }
    };
    let inbound = async move {
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = from_upstream.read(&mut buf).await?;
            if n == 0 {
                return to_client.shutdown().await;
            }
            to_client.write_all(&buf[..n]).await?;
            // Sending re-enters delayed-ACK mode; leave it again.
            quickack(to_client.as_ref());
        }
    };
    let (a, b): (io::Result<()>, io::Result<()>) = tokio::join!(outbound, inbound);
    a.and(b)
}

fn quickack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// The SOCKS5 exchange: no authentication, one `CONNECT`. Returns the connection to the broker.
async fn handshake(client: &mut TcpStream) -> io::Result<TcpStream> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let [version, methods] = head;
    if version != 5 {
        return Err(invalid("not SOCKS5"));
    }
    let mut offered = vec![0u8; usize::from(methods)];
    client.read_exact(&mut offered).await?;
    if !offered.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        return Err(invalid(
            "the client offers no method without authentication",
        ));
    }
    client.write_all(&[5, 0]).await?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let [version, command, _, address_type] = request;
    if version != 5 || command != 1 {
        client.write_all(&reply(7)).await?;
        return Err(invalid("only CONNECT is relayed"));
    }
    let target = match address_type {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            Target::Ip(IpAddr::V4(Ipv4Addr::from(ip)))
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            Target::Ip(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        3 => {
            let len = client.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            client.read_exact(&mut name).await?;
            Target::Name(String::from_utf8(name).map_err(|_| invalid("host name not UTF-8"))?)
        }
        _ => {
            client.write_all(&reply(8)).await?;
            return Err(invalid("unknown address type"));
        }
    };
    let port = client.read_u16().await?;
    let connected = match &target {
        Target::Ip(ip) => TcpStream::connect((*ip, port)).await,
        Target::Name(name) => TcpStream::connect((name.as_str(), port)).await,
    };
    match connected {
        Ok(upstream) => {
            client.write_all(&reply(0)).await?;
            Ok(upstream)
        }
        Err(e) => {
            let code = match e.kind() {
                io::ErrorKind::ConnectionRefused => 5,
                _ => 4,
            };
            client.write_all(&reply(code)).await?;
            Err(e)
        }
    }
}

enum Target {
    Ip(IpAddr),
    Name(String),
}

/// A SOCKS5 reply with `code` and an unspecified bound address.
fn reply(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The latest reading of which sockets connected to the relay belong to this process.
#[derive(Default)]
struct Owners {
    latest: tokio::sync::Mutex<Option<Arc<Reading>>>,
}

/// One reading of the TCP table and of this process's open sockets.
struct Reading {
    /// When the reading started: it knows every socket connected before.
    started: Instant,
    /// The socket inode of each local port connected to the relay's port.
    inode_by_port: HashMap<u16, u64>,
    /// The socket inodes this process has open.
    own: HashSet<u64>,
}

impl Owners {
    /// Whether the socket at `peer`, connected to the relay's port and accepted at
    /// `accepted`, belongs to this process: its inode, found in /proc/net/tcp, is among this
    /// process's open files. A reading that started after `accepted` answers; otherwise one is
    /// taken, and the connections waiting meanwhile use it too.
    async fn is_own_socket(&self, peer: SocketAddr, relay_port: u16, accepted: Instant) -> bool {
        let mut latest = self.latest.lock().await;
        let reading = match latest.as_ref() {
            Some(r) if r.started >= accepted => Arc::clone(r),
            _ => {
                let ipv6 = peer.is_ipv6();
                let Ok(r) =
                    tokio::task::spawn_blocking(move || read_owners(relay_port, ipv6)).await
                else {
                    return false;
                };
                let r = Arc::new(r);
                *latest = Some(Arc::clone(&r));
                r
            }
        };
        drop(latest);
        reading
            .inode_by_port
            .get(&peer.port())
            .is_some_and(|inode| reading.own.contains(inode))
    }
}

fn read_owners(relay_port: u16, ipv6: bool) -> Reading {
    let started = Instant::now();
    Reading {
        started,
        inode_by_port: socket_inodes(relay_port, ipv6),
        own: own_socket_inodes(),
    }
}

fn own_socket_inodes() -> HashSet<u64> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inode| inode.parse().ok())
        })
        .collect()
}

/// The inode of every TCP socket whose remote port is `relay_port`, by its local port, from
/// /proc/net/tcp or tcp6.
fn socket_inodes(relay_port: u16, ipv6: bool) -> HashMap<u16, u64> {
    let table = if ipv6 {
        "/proc/net/tcp6"
    } else {
        "/proc/net/tcp"
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return HashMap::new();
    };
    let remote_port = format!(":{relay_port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2)?.ends_with(&remote_port) {
                return None;
            }
            let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
            Some((
                u16::from_str_radix(local_port, 16).ok()?,
                fields.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_a_connection_of_this_process_to_its_target() {
        let target = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let target_port = target.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = target.accept().await {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&buf.to_ascii_uppercase()).await;
                }
            }
        });
        let relay = address().expect("relay");
        let mut c = TcpStream::connect(relay).await.expect("connect");
        c.write_all(&[5, 1, 0]).await.expect("greet");
        let mut choice = [0u8; 2];
        c.read_exact(&mut choice).await.expect("method");
        assert_eq!(choice, [5, 0]);
        let mut request = vec![5, 1, 0, 3, 9];
        request.extend(b"localhost");
        request.extend(target_port.to_be_bytes());
        c.write_all(&request).await.expect("connect request");
        let mut answer = [0u8; 10];
        c.read_exact(&mut answer).await.expect("reply");
        assert_eq!(answer[1], 0, "connected");
        c.write_all(b"hello").await.expect("write");
        let mut answer = [0u8; 5];
        c.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HELLO", "the target's answer, not our own bytes");
    }

    #[tokio::test]
    async fn refuses_connections_from_other_processes() {
        let relay = address().expect("relay");
        // Another process connects, greets, and reports what it got back.
        let out = tokio::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import socket\n\
                     s = socket.create_connection(('127.0.0.1', {}))\n\
                     s.settimeout(5)\n\
                     try:\n    s.sendall(bytes([5, 1, 0])); print(len(s.recv(2)))\n\
                     except ConnectionResetError:\n    print(0)",
                    relay.port()
                ),
            ])
            .output()
            .await
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "the relay closes the connection without answering"
        );
    }
}
