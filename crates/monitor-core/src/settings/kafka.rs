//! The `kafka` section: brokers, topic, TLS and SASL. Accepts the original service's keys
//! (`host`, `port` as a string, `ssl_cafile`, `ssl_certfile`, `ssl_keyfile`) as well.

use std::path::{Path, PathBuf};

use super::problems::{Problem, Problems};
use super::secret::{read_password, Secret};
use super::walk::Section;

/// Partitions given to the topic when the service creates it.
pub const DEFAULT_PARTITIONS: i64 = 6;

/// Default bound of one produce request's records, in bytes (`kafka.max_request_bytes`):
/// below Kafka's default `message.max.bytes` (1 MiB + 12 bytes), with room for the request's
/// own framing.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_000_000;
/// Least `kafka.max_request_bytes` accepted: a request must hold at least a typical report.
pub const MIN_MAX_REQUEST_BYTES: u64 = 16 * 1024;
/// Most `kafka.max_request_bytes` accepted: Kafka's own default `socket.request.max.bytes`.
pub const MAX_MAX_REQUEST_BYTES: u64 = 100 * 1024 * 1024;

/// How to reach Kafka and which topic carries the reports.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// The topic of reports.
    pub topic: String,
    /// The compacted topic of target definitions made through the sink's API (key = target
    /// id, a tombstone on delete): `{topic}-targets` unless set.
    pub targets_topic: String,
    /// The topic of "check now" requests made through the sink's API: `{topic}-checks`
    /// unless set.
    pub checks_topic: String,
    /// Create the topic when it is missing.
    pub create_topic: bool,
    /// Partitions of a topic the service creates.
    pub partitions: i32,
    /// Replication factor of a topic the service creates.
    pub replication_factor: i16,
    /// TLS to the brokers; `None` for plaintext.
    pub tls: Option<TlsSettings>,
    /// SASL authentication; `None` for none.
    pub sasl: Option<SaslSettings>,
    /// Compression of produced batches.
    pub compression: Compression,
    /// Route broker connections through the in-process relay that turns off Nagle's
    /// algorithm and delayed acknowledgements (`kafka.nodelay_relay`, default true); false
    /// connects directly.
    pub nodelay_relay: bool,
    /// Bound of one produce request's records in bytes, before compression
    /// (`kafka.max_request_bytes`): a round is split into requests of at most this much per
    /// partition. Keep it below the brokers' `message.max.bytes`.
    pub max_request_bytes: u64,
}

/// Compression of produced record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// LZ4.
    #[default]
    Lz4,
    /// Snappy.
    Snappy,
    /// Zstandard.
    Zstd,
}

/// TLS to the brokers. A CA file replaces the trust roots; without one the system's trust store
/// is used (the compiled-in web roots where the system has none).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// CA certificates (PEM) that sign the brokers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// SASL mechanisms the services speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (use it over TLS only).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct SaslSettings {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password, from `password` (best set by the environment override
    /// `WEBMON__KAFKA__SASL__PASSWORD`) or read from `password_file`.
    pub password: Secret,
}

/// Reads the `kafka` section; `None` when it is absent or has problems.
pub(crate) fn read_kafka(
    root: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<KafkaSettings> {
    if !root.has("kafka") {
        root.raw("kafka");
        return None;
    }
    let mut s = root.section("kafka", problems);
    let before = problems.len();

    let brokers = read_brokers(&mut s, problems);
    let topic = read_topic(&mut s, problems);
    let targets_topic = read_named_topic(&mut s, "targets_topic", &topic, "targets", problems);
    let checks_topic = read_named_topic(&mut s, "checks_topic", &topic, "checks", problems);
    let create_topic = s.bool("create_topic", true, problems);
    let partitions = s.integer("partitions", DEFAULT_PARTITIONS, 1, 10_000, problems) as i32;
    let replication_factor = s.integer("replication_factor", 1, 1, 100, problems) as i16;
    let tls = read_tls(&mut s, base_dir, problems);
    let sasl = read_sasl(&mut s, base_dir, problems);
    let compression = read_compression(&mut s, problems);
    let nodelay_relay = s.bool("nodelay_relay", true, problems);
    let max_request_bytes = read_max_request_bytes(&mut s, problems);
    s.finish(problems);

    (problems.len() == before).then_some(KafkaSettings {
        brokers,
        topic,
        targets_topic,
        checks_topic,
        create_topic,
        partitions,
        replication_factor,
        tls,
        sasl,
        compression,
        nodelay_relay,
        max_request_bytes,
    })
}

/// The bootstrap brokers: `brokers`, or the original service's `host` and `port`.
fn read_brokers(s: &mut Section<'_>, problems: &mut Problems) -> Vec<String> {
    let brokers = if s.has("brokers") {
        if s.has("host") {
            problems.push(Problem::new(
                &s.path_of("host"),
                "give either `brokers` or the original `host`/`port`, not both",
            ));
        }
        s.string_list("brokers", problems).unwrap_or_default()
    } else if s.has("host") {
        let host = s.required_string("host", "the Kafka broker's host name", problems);
        let port = s.integer("port", 9092, 1, 65535, problems);
        host.map(|h| vec![format!("{}:{port}", h.trim())])
            .unwrap_or_default()
    } else {
        problems.push(Problem::new(
            &s.path_of("brokers"),
            "is missing: list the bootstrap brokers, e.g. brokers = [\"kafka-1:9092\"]",
        ));
        Vec::new()
    };
    let brokers_path = s.path_of("brokers");
    if s.has("brokers") && brokers.is_empty() {
        problems.push(Problem::new(
            &brokers_path,
            "is empty: list at least one broker",
        ));
    }
    for broker in &brokers {
        if let Err(why) = check_broker(broker) {
            problems.push(Problem::new(&brokers_path, format!("{broker:?}: {why}")));
        }
    }
    brokers
}

/// The topic of reports, which must be a valid Kafka topic name.
fn read_topic(s: &mut Section<'_>, problems: &mut Problems) -> String {
    let topic = s
        .required_string(
            "topic",
            "the Kafka topic that carries the reports",
            problems,
        )
        .unwrap_or_default();
    if !topic.is_empty() && !valid_topic(&topic) {
        problems.push(Problem::new(
            &s.path_of("topic"),
            format!("{topic:?} is not a valid topic name: use up to 249 of a-z A-Z 0-9 . _ -"),
        ));
    }
    topic
}

/// A topic beside the reports' (`key`), `{topic}-{suffix}` when not set.
fn read_named_topic(
    s: &mut Section<'_>,
    key: &str,
    topic: &str,
    suffix: &str,
    problems: &mut Problems,
) -> String {
    let name = s
        .string(key, problems)
        .unwrap_or_else(|| format!("{topic}-{suffix}"));
    if !valid_topic(&name) || name == topic {
        problems.push(Problem::new(
            &s.path_of(key),
            format!("{name:?} is not a valid topic name of its own: use up to 249 of a-z A-Z 0-9 . _ -, other than kafka.topic"),
        ));
    }
    name
}

/// TLS: the `tls` table, or the original service's flat keys (`ssl_cafile`, `ssl_certfile`,
/// `ssl_keyfile`). `None` for plaintext.
fn read_tls(s: &mut Section<'_>, base_dir: &Path, problems: &mut Problems) -> Option<TlsSettings> {
    let mut tls_section = s.section("tls", problems);
    let tls_enabled = tls_section.bool("enabled", tls_section.exists(), problems);
    let ca_file = tls_section
        .readable_file("ca_file", base_dir, problems)
        .or_else(|| s.readable_file("ssl_cafile", base_dir, problems));
    let cert_file = tls_section
        .readable_file("cert_file", base_dir, problems)
        .or_else(|| s.readable_file("ssl_certfile", base_dir, problems));
    let key_file = tls_section
        .readable_file("key_file", base_dir, problems)
        .or_else(|| s.readable_file("ssl_keyfile", base_dir, problems));
    if cert_file.is_some() != key_file.is_some() {
        problems.push(Problem::new(
            &s.path_of("tls"),
            "a client certificate needs its key and a key its certificate: set both cert_file and key_file, or neither",
        ));
    }
    let tls_path = tls_section.path().to_string();
    tls_section.finish(problems);
    let tls = (tls_enabled || ca_file.is_some() || cert_file.is_some()).then_some(TlsSettings {
        ca_file,
        cert_file,
        key_file,
    });
    if !tls_enabled && s.has("tls") && tls.is_some() {
        problems.push(Problem::new(
            &tls_path,
            "enabled is false but certificate files are set: remove them or enable TLS",
        ));
    }
    tls
}

/// The compression of produced batches (default LZ4).
fn read_compression(s: &mut Section<'_>, problems: &mut Problems) -> Compression {
    let Some(name) = s
        .string("compression", problems)
        .map(|c| c.to_ascii_lowercase())
    else {
        return Compression::default();
    };
    match name.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "lz4" => Compression::Lz4,
        "snappy" => Compression::Snappy,
        "zstd" => Compression::Zstd,
        other => {
            problems.push(Problem::new(
                &s.path_of("compression"),
                format!("{other:?} is not a compression: use none, gzip, lz4, snappy or zstd"),
            ));
            Compression::default()
        }
    }
}

/// The bound of one produce request, between [`MIN_MAX_REQUEST_BYTES`] and
/// [`MAX_MAX_REQUEST_BYTES`].
fn read_max_request_bytes(s: &mut Section<'_>, problems: &mut Problems) -> u64 {
    let max_request_bytes = s.size(
        "max_request_bytes",
        DEFAULT_MAX_REQUEST_BYTES,
        MAX_MAX_REQUEST_BYTES,
        problems,
    );
    if max_request_bytes < MIN_MAX_REQUEST_BYTES {
        problems.push(Problem::new(
            &s.path_of("max_request_bytes"),
            format!(
                "{max_request_bytes} bytes is less than the minimum of {MIN_MAX_REQUEST_BYTES} \
                 bytes: a produce request must hold at least one typical report"
            ),
        ));
    }
    max_request_bytes
}

fn read_sasl(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<SaslSettings> {
    if !s.has("sasl") {
        s.raw("sasl");
        return None;
    }
    let mut sasl = s.section("sasl", problems);
    let mechanism = match sasl
        .string("mechanism", problems)
        .unwrap_or_else(|| "PLAIN".into())
        .to_ascii_uppercase()
        .as_str()
    {
        "PLAIN" => Some(SaslMechanism::Plain),
        "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
        "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
        other => {
            problems.push(Problem::new(
                &sasl.path_of("mechanism"),
                format!("{other:?} is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            ));
            None
        }
    };
    let username = sasl.required_string("username", "the SASL user name", problems);
    let password = read_password(&mut sasl, base_dir, true, problems);
    sasl.finish(problems);
    Some(SaslSettings {
        mechanism: mechanism?,
        username: username?,
        password: password?,
    })
}

fn check_broker(broker: &str) -> Result<(), String> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. kafka-1:9092")?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port number from 1 to 65535")),
    }
}

fn valid_topic(topic: &str) -> bool {
    topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
