//! The `database` section (the original service called it `db`): a PostgreSQL URL, or host,
//! port, database name, user and password, with `sslmode` and `sslrootcert`.

use std::path::{Path, PathBuf};

use url::Url;

use super::kafka::read_password;
use super::walk::Section;
use super::{Problem, Problems, Secret};

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
    /// TLS, with a certificate signed by `sslrootcert`.
    VerifyCa,
    /// TLS, with a certificate signed by `sslrootcert` and naming the host.
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
    /// CA certificate (PEM) for `verify-ca` and `verify-full`.
    pub sslrootcert: Option<PathBuf>,
    /// Connections in the pool.
    pub max_connections: u32,
}

pub(crate) fn read_database(
    root: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<DatabaseSettings> {
    let key = match (root.has("database"), root.has("db")) {
        (true, true) => {
            problems.push(Problem::new(
                "db",
                "give either `database` or the original `db` section, not both",
            ));
            return None;
        }
        (false, true) => "db",
        (true, false) => "database",
        (false, false) => {
            root.raw("database");
            root.raw("db");
            return None;
        }
    };
    let mut s = root.section(key, problems);
    let before = problems.len();

    let url = s.string("url", problems).filter(|u| !u.trim().is_empty());
    if let Some(text) = &url {
        match Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {}
            // Never echo the URL: it may hold the password.
            Ok(_) => problems.push(Problem::new(
                &s.path_of("url"),
                "must start with postgres:// or postgresql://",
            )),
            Err(e) => problems.push(Problem::new(
                &s.path_of("url"),
                format!("is not a valid URL ({e})"),
            )),
        }
    }
    let need = url.is_none();
    let host = if need {
        s.required_string("host", "the PostgreSQL server's host name", problems)
    } else {
        s.string("host", problems)
    };
    let port = s.integer("port", 5432, 1, 65535, problems) as u16;
    let name = if s.has("db_name") {
        if need {
            s.required_string("db_name", "the database name", problems)
        } else {
            s.string("db_name", problems)
        }
    } else if need {
        s.required_string("name", "the database name", problems)
    } else {
        s.string("name", problems)
    };
    s.raw("db_name");
    s.raw("name");
    let user = if need {
        s.required_string("user", "the database user", problems)
    } else {
        s.string("user", problems)
    };
    let password = read_password(&mut s, base_dir, false, problems);
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
    if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        && sslrootcert.is_none()
        && !s.has("sslrootcert")
    {
        problems.push(Problem::new(
            &s.path_of("sslrootcert"),
            format!(
                "is missing: sslmode {} needs the CA certificate that signs the server's",
                sslmode.as_str()
            ),
        ));
    }
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
