//! The publisher against a real broker: keys, partitions, headers and JSON; and an outage of
//! the broker's link in the middle of a run, after which every report has arrived, in order
//! per target.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::time::Duration;

use checker::publish::partitioner::partition_for;
use checker::publish::{run, Drained, PublishMetrics};
use monitor_core::report::Report;
use monitor_core::settings::{CheckerSettings, KafkaSettings, ProducerSettings, SettingsSource};
use monitor_core::testing::{
    create_topic, kafka_brokers, kafka_client, sample_report, OwnBroker, Proxy,
};
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::mpsc;

mod support;
use support::{partition_records, MemorySpool};

fn settings(brokers: &str, topic: &str) -> (KafkaSettings, ProducerSettings) {
    let env = HashMap::from([
        ("WEBMON__KAFKA__BROKERS".to_string(), brokers.to_string()),
        ("WEBMON__KAFKA__TOPIC".to_string(), topic.to_string()),
        ("WEBMON__KAFKA__PARTITIONS".to_string(), "3".to_string()),
        ("WEBMON__CHECKER__LINGER".to_string(), "20ms".to_string()),
        (
            "WEBMON__CHECKER__PRODUCE_TIMEOUT".to_string(),
            "1s".to_string(),
        ),
    ]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "monitored_urls = [\"http://127.0.0.1:9/\"]\n").expect("write");
    let s = CheckerSettings::load(
        &SettingsSource {
            file: Some(file),
            env: Some(env),
            base_dir: Some(dir.path().to_path_buf()),
        },
        true,
    )
    .expect("valid settings");
    (s.kafka.expect("kafka"), s.checker.producer)
}

/// Every record of the topic, by partition, in offset order.
async fn read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Vec<rskafka::record::RecordAndOffset>> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        out.insert(p, partition_records(client, topic, p).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn reports_arrive_keyed_by_target_on_the_default_partition_with_a_version_header() {
    let client = kafka_client().await;
    let topic = create_topic(&client, 3).await;
    let (kafka, producer) = settings(&kafka_brokers().join(","), &topic);
    let (tx, rx) = mpsc::channel(1000);
    let metrics = PublishMetrics::default();
    let publisher = tokio::spawn(run(
        rx,
        kafka,
        producer,
        Box::new(MemorySpool::default()),
        metrics.clone(),
        Drained::default(),
    ));
    let mut sent: Vec<Report> = Vec::new();
    for n in 0..50 {
        for target in ["alpha", "bravo", "charlie", "delta"] {
            let r = sample_report(target, n);
            tx.send(r.clone()).await.expect("publisher listening");
            sent.push(r);
        }
    }
    drop(tx);
    publisher.await.expect("publisher ends");
    assert_eq!(metrics.produced.get(), 200);

    let all = read_all(&client, &topic, 3).await;
    let mut received = 0;
    for (partition, records) in &all {
        for r in records {
            let key = r.record.key.clone().expect("key");
            assert_eq!(partition_for(&key, 3), *partition, "murmur2 partition");
            assert_eq!(
                r.record.headers.get("schema_version").map(Vec::as_slice),
                Some(&b"1"[..])
            );
            let report =
                Report::from_json(r.record.value.as_deref().expect("value")).expect("report");
            assert_eq!(report.target_id.as_bytes(), key.as_slice());
            assert!(sent.contains(&report));
            received += 1;
        }
    }
    assert_eq!(received, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_cut_broker_link_loses_nothing_and_keeps_each_targets_order() {
    let (proxy, listener) = Proxy::bind().await;
    let broker = OwnBroker::start(Some(proxy.port)).await;
    proxy.forward_to(listener, broker.port);
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let client = ClientBuilder::new(vec![brokers.clone()])
        .build()
        .await
        .expect("client");
    let topic = create_topic(&client, 3).await;
    let (kafka, producer) = settings(&brokers, &topic);
    let (tx, rx) = mpsc::channel(100_000);
    let metrics = PublishMetrics::default();
    let publisher = tokio::spawn(run(
        rx,
        kafka,
        producer,
        Box::new(MemorySpool::default()),
        metrics.clone(),
        Drained::default(),
    ));

    let targets = ["a", "b", "c", "d", "e", "f"];
    let mut n = 0;
    for tick in 0..60 {
        if tick == 15 {
            proxy.cut();
        }
        if tick == 40 {
            proxy.restore();
        }
        for t in targets {
            tx.send(sample_report(t, n))
                .await
                .expect("publisher listening");
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publisher drains within a minute")
        .expect("publisher ends");
    assert!(
        metrics.spooled.get() > 0,
        "the outage must have spooled reports"
    );

    let all = read_all(&client, &topic, 3).await;
    let mut per_target: HashMap<String, Vec<i64>> = HashMap::new();
    for records in all.values() {
        for r in records {
            let report =
                Report::from_json(r.record.value.as_deref().expect("value")).expect("report");
            let seq = (report.scheduled_at.timestamp() - 1_790_000_000) / 60;
            per_target.entry(report.target_id).or_default().push(seq);
        }
    }
    for t in targets {
        let seqs = per_target.remove(t).unwrap_or_default();
        // In order, none missing. At least once: a round that timed out may arrive again
        // from the spool, so a report already seen may come back; a new one never comes early.
        let mut next = 0;
        for &seq in &seqs {
            assert!(
                seq <= next,
                "target {t}: {seq} arrived before {next}: {seqs:?}"
            );
            if seq == next {
                next += 1;
            }
        }
        assert_eq!(next, n, "target {t}: every report, in order: {seqs:?}");
    }
    drop(broker);
}

mod tls {
    //! A TLS terminator in front of the test broker (its command line cannot enable TLS), with
    //! certificates made here: the checker must reach the broker over mutual TLS.

    use super::support::{ca, leaf, loopback_listener, tls_terminator};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn reports_reach_the_broker_over_mutual_tls_and_not_without_a_client_certificate() {
        let ca = ca();
        // The broker advertises the terminator's port, which is only known once bound.
        let (listener, tls_port) = loopback_listener().await;
        let broker = OwnBroker::start(Some(tls_port)).await;
        tls_terminator(&ca, listener, broker.port);

        let dir = tempfile::tempdir().expect("dir");
        let (_, client_pem, _, client_key_pem) = leaf(&ca, &["checker.test"]);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write");
        std::fs::write(dir.path().join("client.pem"), client_pem).expect("write");
        std::fs::write(dir.path().join("client.key"), client_key_pem).expect("write");
        let brokers = format!("127.0.0.1:{tls_port}");
        let load = |extra: &str| {
            super::sasl::load(
                dir.path(),
                &brokers,
                "secure",
                &format!("[kafka.tls]\nca_file = \"ca.pem\"\n{extra}"),
                &[],
            )
        };

        // Without a client certificate the terminator refuses the handshake. (The client
        // retries for 5 s before it gives up; the bound is that of `sasl::refused`, which
        // leaves room for slow handshakes on a busy machine.)
        let no_cert = load("");
        let refused = tokio::time::timeout(
            Duration::from_secs(30),
            checker::publish::ReportTopic::connect(no_cert.kafka.as_ref().expect("kafka")),
        )
        .await;
        match refused {
            Ok(Ok(_)) => panic!("a client without a certificate must not get in"),
            Ok(Err(e)) => assert!(
                e.to_string().contains("check kafka.tls"),
                "the refusal says what to check: {e}"
            ),
            Err(_) => panic!("a refused client must get an error, not hang"),
        }

        let settings = load("cert_file = \"client.pem\"\nkey_file = \"client.key\"\n");
        assert_eq!(
            super::sasl::publish_and_count(&settings, "secure-target", 20).await,
            20,
            "every report arrived over TLS"
        );
        drop(broker);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn scram_over_mutual_tls_reaches_a_broker_that_requires_both() {
        let ca = ca();
        let (listener, tls_port) = loopback_listener().await;
        let state = tempfile::tempdir().expect("dir");
        let broker = super::sasl::scram_broker(state.path(), Some(tls_port)).await;
        tls_terminator(&ca, listener, broker.port);

        let dir = tempfile::tempdir().expect("dir");
        let (_, client_pem, _, client_key_pem) = leaf(&ca, &["checker.test"]);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write");
        std::fs::write(dir.path().join("client.pem"), client_pem).expect("write");
        std::fs::write(dir.path().join("client.key"), client_key_pem).expect("write");
        let settings = super::sasl::load(
            dir.path(),
            &format!("127.0.0.1:{tls_port}"),
            "sasl-ssl",
            &format!(
                "[kafka.tls]\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\n\
                 key_file = \"client.key\"\n{}",
                super::sasl::login("SCRAM-SHA-512", "checker512")
            ),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-512")],
        );
        assert_eq!(
            super::sasl::publish_and_count(&settings, "sasl-ssl-target", 15).await,
            15
        );
        drop(broker);
    }
}

/// SASL against a broker that requires it. tansu checks SCRAM users against the credentials it
/// stores (users made with `tansu user create`); it offers no PLAIN, so PLAIN is checked by a
/// terminator in front of it that speaks the Kafka SASL exchange and verifies the password.
mod sasl {
    use super::*;

    /// A broker that requires authentication and knows `checker256` (SCRAM-SHA-256, password
    /// `pw-256`) and `checker512` (SCRAM-SHA-512, password `pw-512`).
    pub(super) async fn scram_broker(
        state: &std::path::Path,
        advertised_port: Option<u16>,
    ) -> OwnBroker {
        OwnBroker::start_with_scram_users(
            state,
            advertised_port,
            &[("checker256", "pw-256", 256), ("checker512", "pw-512", 512)],
        )
        .await
    }

    /// Checker settings for `brokers` and `topic`, with `kafka_extra` (TOML lines: the
    /// `[kafka.tls]` and `[kafka.sasl]` tables) and the environment `env`.
    pub(super) fn load(
        dir: &std::path::Path,
        brokers: &str,
        topic: &str,
        kafka_extra: &str,
        env: &[(&str, &str)],
    ) -> CheckerSettings {
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!(
                "monitored_urls = [\"http://127.0.0.1:9/\"]\n[checker]\nlinger = \"20ms\"\n\
                 produce_timeout = \"10s\"\n[kafka]\nbrokers = [\"{brokers}\"]\ntopic = \"{topic}\"\n\
                 partitions = 2\n{kafka_extra}"
            ),
        )
        .expect("write");
        CheckerSettings::load(
            &SettingsSource {
                file: Some(file),
                env: Some(
                    env.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                base_dir: Some(dir.to_path_buf()),
            },
            true,
        )
        .expect("settings")
    }

    /// The `[kafka.sasl]` table for `mechanism` and `user` (the password comes separately).
    pub(super) fn login(mechanism: &str, user: &str) -> String {
        format!("[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"{user}\"\n")
    }

    /// Publishes `n` reports of `target` with `settings`, then reads the topic back with the
    /// same credentials and returns how many distinct reports it holds. (Delivery is at least
    /// once: a round that outlives `produce_timeout`, as the first one may while it logs in
    /// over TLS, is sent again from the spool and can leave a duplicate with the same
    /// `report_id`.)
    pub(super) async fn publish_and_count(
        settings: &CheckerSettings,
        target: &str,
        n: i64,
    ) -> usize {
        let kafka = settings.kafka.clone().expect("kafka");
        let (tx, rx) = mpsc::channel(100);
        let metrics = PublishMetrics::default();
        let publisher = tokio::spawn(run(
            rx,
            kafka.clone(),
            settings.checker.producer.clone(),
            Box::new(MemorySpool::default()),
            metrics.clone(),
            Drained::default(),
        ));
        for i in 0..n {
            tx.send(sample_report(target, i)).await.expect("send");
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(60), publisher)
            .await
            .expect("the publisher ends within 60 s")
            .expect("publisher ends");
        assert_eq!(
            metrics.produced.get(),
            n as u64,
            "every report was produced, none left in the spool"
        );
        let client =
            monitor_core::runtime::broker::connect(&kafka, "reader", Duration::from_secs(10))
                .await
                .expect("an authenticated reader");
        let ids: std::collections::BTreeSet<String> = read_all(&client, &kafka.topic, 2)
            .await
            .values()
            .flatten()
            .map(|r| {
                let report =
                    Report::from_json(r.record.value.as_deref().expect("value")).expect("a report");
                assert_eq!(report.target_id, target);
                report.report_id.to_string()
            })
            .collect();
        ids.len()
    }

    /// Connecting with `settings` fails, with an error that says why, within 30 s.
    async fn refused(case: &str, settings: &CheckerSettings) -> String {
        let kafka = settings.kafka.as_ref().expect("kafka");
        match tokio::time::timeout(
            Duration::from_secs(30),
            checker::publish::ReportTopic::connect(kafka),
        )
        .await
        {
            Ok(Ok(_)) => panic!("{case}: the broker let in a client it must refuse"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => panic!("{case}: a refused client must get an error, not hang"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn reports_reach_a_broker_that_requires_scram_sha_256_or_sha_512() {
        let state = tempfile::tempdir().expect("dir");
        let broker = scram_broker(state.path(), None).await;
        let brokers = format!("127.0.0.1:{}", broker.port);
        let dir = tempfile::tempdir().expect("dir");

        // SCRAM-SHA-256, the password from the environment.
        let sha256 = load(
            dir.path(),
            &brokers,
            "scram-256",
            &login("SCRAM-SHA-256", "checker256"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-256")],
        );
        assert_eq!(publish_and_count(&sha256, "scram-256-target", 25).await, 25);

        // SCRAM-SHA-512, the password from a file (with the newline editors leave).
        std::fs::write(dir.path().join("kafka-password"), "pw-512\n").expect("write");
        let sha512 = load(
            dir.path(),
            &brokers,
            "scram-512",
            &format!(
                "{}password_file = \"kafka-password\"\n",
                login("SCRAM-SHA-512", "checker512")
            ),
            &[],
        );
        assert_eq!(publish_and_count(&sha512, "scram-512-target", 25).await, 25);

        drop(broker);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn a_wrong_password_an_unknown_user_or_no_credentials_are_refused() {
        let state = tempfile::tempdir().expect("dir");
        let broker = scram_broker(state.path(), None).await;
        let brokers = format!("127.0.0.1:{}", broker.port);
        let dir = tempfile::tempdir().expect("dir");

        let wrong_password = load(
            dir.path(),
            &brokers,
            "t",
            &login("SCRAM-SHA-256", "checker256"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-512")],
        );
        let why = refused("wrong password", &wrong_password).await;
        assert!(why.contains(&brokers), "the error names the brokers: {why}");
        assert!(
            why.contains("kafka.sasl"),
            "the error says what to check: {why}"
        );

        // The right password for the other mechanism's user is still wrong for this one.
        let wrong_mechanism = load(
            dir.path(),
            &brokers,
            "t",
            &login("SCRAM-SHA-256", "checker512"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-512")],
        );
        refused("other mechanism's user", &wrong_mechanism).await;

        let unknown_user = load(
            dir.path(),
            &brokers,
            "t",
            &login("SCRAM-SHA-512", "nobody"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-512")],
        );
        refused("unknown user", &unknown_user).await;

        let anonymous = load(dir.path(), &brokers, "t", "", &[]);
        refused("no credentials", &anonymous).await;

        // The broker is still up and lets the right user in after all that.
        let right = load(
            dir.path(),
            &brokers,
            "after-refusals",
            &login("SCRAM-SHA-256", "checker256"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "pw-256")],
        );
        assert_eq!(publish_and_count(&right, "after-target", 5).await, 5);
        drop(broker);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn sasl_plain_sends_the_configured_user_and_password() {
        let (listener, plain_port) = super::support::loopback_listener().await;
        let broker = OwnBroker::start(Some(plain_port)).await;
        plain_terminator_on(listener, broker.port, "plain-user", "plain-pw");
        let brokers = format!("127.0.0.1:{plain_port}");
        let dir = tempfile::tempdir().expect("dir");

        let right = load(
            dir.path(),
            &brokers,
            "plain",
            &login("PLAIN", "plain-user"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "plain-pw")],
        );
        assert_eq!(publish_and_count(&right, "plain-target", 12).await, 12);

        let wrong = load(
            dir.path(),
            &brokers,
            "plain",
            &login("PLAIN", "plain-user"),
            &[("WEBMON__KAFKA__SASL__PASSWORD", "plain-pw2")],
        );
        let why = refused("wrong PLAIN password", &wrong).await;
        // rskafka retries a refused login until its retry deadline; on a loaded host the last
        // attempt can outlast the connect's handshake bound, whose error names kafka.sasl too.
        let login_refused = why.contains("SaslAuthenticationFailed");
        let bound_hit = why.contains("did not finish the connection handshake");
        assert!(
            (login_refused || bound_hit) && why.contains("kafka.sasl"),
            "the error says the login was refused and what to check: {why}"
        );
        let anonymous = load(dir.path(), &brokers, "plain", "", &[]);
        refused("no credentials", &anonymous).await;
        drop(broker);
    }

    /// Listens on `port` and requires SASL/PLAIN as `user`/`password` before it forwards a
    /// connection to the broker on `upstream`: the Kafka exchange (ApiVersions passed through,
    /// SaslHandshake v1, SaslAuthenticate v0 to v2) as a broker with PLAIN enabled runs it. A
    /// wrong password gets SASL_AUTHENTICATION_FAILED (58); any other request before
    /// authenticating closes the connection.
    fn plain_terminator_on(
        listener: tokio::net::TcpListener,
        upstream: u16,
        user: &'static str,
        password: &'static str,
    ) {
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(plain_session(client, upstream, user, password));
            }
        });
    }

    async fn plain_session(
        mut client: tokio::net::TcpStream,
        upstream: u16,
        user: &str,
        password: &str,
    ) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
        loop {
            let len = client.read_u32().await? as usize;
            let mut frame = vec![0; len];
            client.read_exact(&mut frame).await?;
            let mut r = Reader(&frame);
            let (api_key, version, correlation) = (r.i16(), r.i16(), r.i32());
            let _client_id = r.bytes16();
            match api_key {
                // ApiVersions: the broker answers (it lists SaslHandshake and SaslAuthenticate).
                18 => {
                    server.write_u32(len as u32).await?;
                    server.write_all(&frame).await?;
                    let back = server.read_u32().await? as usize;
                    let mut answer = vec![0; back];
                    server.read_exact(&mut answer).await?;
                    client.write_u32(back as u32).await?;
                    client.write_all(&answer).await?;
                }
                17 => {
                    let mut out = correlation.to_be_bytes().to_vec();
                    out.extend(0i16.to_be_bytes());
                    out.extend(1i32.to_be_bytes());
                    out.extend(5i16.to_be_bytes());
                    out.extend(b"PLAIN");
                    send(&mut client, &out).await?;
                }
                36 => {
                    let flexible = version >= 2;
                    let token = if flexible {
                        let _header_tags = r.uvarint();
                        let n = r.uvarint().saturating_sub(1) as usize;
                        r.take(n).to_vec()
                    } else {
                        let n = r.i32().max(0) as usize;
                        r.take(n).to_vec()
                    };
                    // authzid NUL authcid NUL passwd
                    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
                    let ok = parts.len() == 3
                        && parts[1] == user.as_bytes()
                        && parts[2] == password.as_bytes();
                    let mut out = correlation.to_be_bytes().to_vec();
                    if flexible {
                        out.push(0); // response header tags
                    }
                    out.extend(if ok { 0i16 } else { 58i16 }.to_be_bytes());
                    let message: &[u8] = if ok {
                        b""
                    } else {
                        b"Authentication failed: invalid credentials"
                    };
                    if flexible {
                        out.push(message.len() as u8 + 1);
                        out.extend(message);
                        out.push(1); // empty auth_bytes
                    } else {
                        out.extend((message.len() as i16).to_be_bytes());
                        out.extend(message);
                        out.extend(0i32.to_be_bytes());
                    }
                    if version >= 1 {
                        out.extend(0i64.to_be_bytes()); // session_lifetime_ms
                    }
                    if flexible {
                        out.push(0); // body tags
                    }
                    send(&mut client, &out).await?;
                    if !ok {
                        return Ok(());
                    }
                    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                    return Ok(());
                }
                _ => return Ok(()),
            }
        }
    }

    async fn send(stream: &mut tokio::net::TcpStream, body: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        stream.write_u32(body.len() as u32).await?;
        stream.write_all(body).await
    }

    /// Reads Kafka's big-endian fields off a request; short input reads as zeros.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> &'a [u8] {
            let n = n.min(self.0.len());
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            head
        }
        fn array<const N: usize>(&mut self) -> [u8; N] {
            let mut a = [0; N];
            let got = self.take(N);
            a[..got.len()].copy_from_slice(got);
            a
        }
        fn i16(&mut self) -> i16 {
            i16::from_be_bytes(self.array())
        }
        fn i32(&mut self) -> i32 {
            i32::from_be_bytes(self.array())
        }
        fn bytes16(&mut self) -> &'a [u8] {
            let n = self.i16();
            self.take(n.max(0) as usize)
        }
        fn uvarint(&mut self) -> u64 {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let [b] = self.array::<1>();
                value |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            value
        }
    }
}
