//! The `database` section (the original service called it `db`): a PostgreSQL URL, or host,
//! port, database name, user and password, with `sslmode` and `sslrootcert`.

use std::path::{Path, PathBuf};

use url::Url;

use super::problems::{Problem, Problems};
use super::secret::{read_password, Secret};
use super::walk::Section;

/// PostgreSQL's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS only if the server insists.
    Allow,
    /// TLS when the server offers it (libpq's default).
    #[default]
    Prefer,
    /// TLS, without checking the certificate.
    Require,
    /// TLS, with a certificate signed by a CA of the system's trust store or `sslrootcert`.
    VerifyCa,
    /// TLS, with a certificate signed by a CA of the system's trust store or `sslrootcert`,
    /// and naming the host.
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSettings {
    /// A full `postgres://` URL; when set it wins over the separate keys (which may still
    /// add `sslmode` and `sslrootcert`).
    pub url: Option<Secret>,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// User name.
    pub user: String,
    /// Password, from `password`, `password_file` or `WEBMON__DATABASE__PASSWORD`.
    pub password: Option<Secret>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// CA certificates (PEM) trusted for `verify-ca` and `verify-full`, besides the system's
    /// trust store.
    pub sslrootcert: Option<PathBuf>,
    /// Connections in the pool.
    pub max_connections: u32,
}

/// Reads the `database` section (or the original `db`); `None` when it is absent or has
/// problems.
pub(crate) fn read_database(
    root: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<DatabaseSettings> {
    let key = section_key(root, problems)?;
    let mut s = root.section(key, problems);
    let before = problems.len();

    let url = read_url(&mut s, problems);
    // With a URL, the separate keys are optional: it names the server, database and user.
    let need = url.is_none();
    let host = if need {
        s.required_string("host", "the PostgreSQL server's host name", problems)
    } else {
        s.string("host", problems)
    };
    let port = s.integer("port", 5432, 1, 65535, problems) as u16;
    let name = read_name(&mut s, need, problems);
    let user = if need {
        s.required_string("user", "the database user", problems)
    } else {
        s.string("user", problems)
    };
    let password = read_password(&mut s, base_dir, false, problems);
    let (sslmode, sslrootcert) = read_tls(&mut s, base_dir, problems);
    let max_connections = s.integer("max_connections", 8, 1, 1000, problems) as u32;
    s.finish(problems);

    (problems.len() == before).then(|| DatabaseSettings {
        url: url.map(Secret::new),
        host: host.unwrap_or_default(),
        port,
        name: name.unwrap_or_default(),
        user: user.unwrap_or_default(),
        password,
        sslmode,
        sslrootcert,
        max_connections,
    })
}

/// Which key holds the section: `database`, or the original service's `db`. `None` when
/// neither (or both, which is a problem) is there.
fn section_key(root: &mut Section<'_>, problems: &mut Problems) -> Option<&'static str> {
    match (root.has("database"), root.has("db")) {
        (true, true) => {
            problems.push(Problem::new(
                "db",
                "give either `database` or the original `db` section, not both",
            ));
            None
        }
        (false, true) => Some("db"),
        (true, false) => Some("database"),
        (false, false) => {
            root.raw("database");
            root.raw("db");
            None
        }
    }
}

/// The `url`, when set: a `postgres://` or `postgresql://` URL. Never echoed in a problem, as
/// it may hold the password.
fn read_url(s: &mut Section<'_>, problems: &mut Problems) -> Option<String> {
    let url = s.string("url", problems).filter(|u| !u.trim().is_empty())?;
    match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {}
        Ok(_) => problems.push(Problem::new(
            &s.path_of("url"),
            "must start with postgres:// or postgresql://",
        )),
        Err(e) => problems.push(Problem::new(
            &s.path_of("url"),
            format!("is not a valid URL ({e})"),
        )),
    }
    Some(url)
}

/// The database name, from `name` or the original service's `db_name`; required when `need`.
fn read_name(s: &mut Section<'_>, need: bool, problems: &mut Problems) -> Option<String> {
    let key = if s.has("db_name") { "db_name" } else { "name" };
    let name = if need {
        s.required_string(key, "the database name", problems)
    } else {
        s.string(key, problems)
    };
    s.raw("db_name");
    s.raw("name");
    name
}

/// `sslmode` and `sslrootcert`. `verify-ca` and `verify-full` work without `sslrootcert` when
/// the server's CA is in the system's trust store.
fn read_tls(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> (SslMode, Option<PathBuf>) {
    let sslmode = match s.string("sslmode", problems) {
        None => SslMode::default(),
        Some(text) => SslMode::parse(text.trim()).unwrap_or_else(|| {
            problems.push(Problem::new(
                &s.path_of("sslmode"),
                format!("{text:?} is not an sslmode: use disable, allow, prefer, require, verify-ca or verify-full"),
            ));
            SslMode::default()
        }),
    };
    let sslrootcert = s.readable_file("sslrootcert", base_dir, problems);
    (sslmode, sslrootcert)
}
