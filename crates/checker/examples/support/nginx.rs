//! nginx in its own process as the benchmarks' target server: what a check costs is then the
//! checker's alone, as in production, where the targets run elsewhere. Shared by the
//! examples that need it (`#[path]`), not an example of its own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of the benchmarks' set-up.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Ports nginx listens on; targets are spread over them, so that connection tuples do not run
/// out. wrk uses the first.
pub const PORTS: usize = 16;

/// nginx serving a 3-byte 200 on [`PORTS`] loopback ports, from a generated configuration in a
/// temporary directory; stopped (SIGTERM) when dropped.
pub struct Nginx {
    child: Child,
    /// Its configuration, logs and (with https) `ca.pem`, the CA its certificate is signed by.
    pub dir: PathBuf,
    ports: Vec<u16>,
    /// Whether it serves https.
    pub https: bool,
}

impl Nginx {
    pub fn start(workers: usize, https: bool) -> BenchResult<Nginx> {
        let dir = std::env::temp_dir().join(format!("nginx-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ports = free_ports(PORTS)?;
        if https {
            write_certificates(&dir)?;
        }
        std::fs::write(
            dir.join("nginx.conf"),
            nginx_conf(&dir, &ports, workers, https),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run nginx (apt-get install nginx-light): {e}"))?;
        let nginx = Nginx {
            child,
            dir,
            ports,
            https,
        };
        nginx.wait_listening()?;
        Ok(nginx)
    }

    /// The URL of path `/{path}` on the `i`-th port (modulo [`PORTS`]).
    pub fn url(&self, i: usize, path: usize) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.ports[i % PORTS])
    }

    fn wait_listening(&self) -> BenchResult<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.ports[PORTS - 1])).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx did not start: {log}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_conf(dir: &Path, ports: &[u16], workers: usize, https: bool) -> String {
    let d = dir.display();
    let ssl = if https { " ssl" } else { "" };
    let mut listen: String = ports
        .iter()
        .map(|p| format!("    listen 127.0.0.1:{p}{ssl} backlog=4096;\n"))
        .collect();
    if https {
        listen.push_str(&format!(
            "    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             ssl_session_cache off;\n    ssl_session_tickets off;\n"
        ));
    }
    format!(
        "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         worker_rlimit_nofile 65536;\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  server {{\n{listen}\
         location / {{ default_type text/plain; return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// A CA made for the run (`ca.pem`) and nginx's certificate for 127.0.0.1 it signed
/// (`cert.pem`, `key.pem`) in `dir`.
fn write_certificates(dir: &Path) -> BenchResult<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

/// `n` loopback ports free at the time of asking.
fn free_ports(n: usize) -> BenchResult<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}
