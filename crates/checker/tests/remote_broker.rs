//! The publisher against a broker that is not on loopback: tens of milliseconds away behind a
//! latency proxy, with a topic of many partitions, in plain text and over mutual TLS; and a
//! broker whose `message.max.bytes` is lower than a round, or than one report.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use checker::publish::{run, Drained, PublishMetrics};
use monitor_core::report::Report;
use monitor_core::settings::{CheckerSettings, KafkaSettings, SettingsSource};
use monitor_core::testing::{create_topic, sample_report, OwnBroker, Proxy};
use rskafka::client::Client;
use tokio::sync::mpsc;

mod support;
use support::{partition_records, MemorySpool};

/// One way of a cross-region link: 120 ms round trips.
const ONE_WAY: Duration = Duration::from_millis(60);

/// Checker settings with every default but the brokers, the topic and `kafka_extra` (TOML
/// lines of the `kafka` table, paths relative to `dir`).
fn settings(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    kafka_extra: &str,
) -> CheckerSettings {
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "monitored_urls = [\"http://127.0.0.1:9/\"]\n[kafka]\nbrokers = [\"{brokers}\"]\n\
             topic = \"{topic}\"\n{kafka_extra}"
        ),
    )
    .expect("write");
    CheckerSettings::load(
        &SettingsSource {
            file: Some(file),
            env: Some(HashMap::new()),
            base_dir: Some(dir.to_path_buf()),
        },
        true,
    )
    .expect("valid settings")
}

/// A client of the brokers of `kafka` (through the same proxies, TLS and relay).
async fn client_of(kafka: &KafkaSettings) -> Arc<Client> {
    Arc::new(
        monitor_core::runtime::broker::connect(kafka, "test-admin", Duration::from_secs(30))
            .await
            .expect("a client of the test broker"),
    )
}

/// The distinct `report_id`s in the topic, every partition read up to its high watermark as
/// the fetch answer gives it (all partitions at once).
async fn report_ids(client: &Arc<Client>, topic: &str, partitions: i32) -> BTreeSet<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let (client, topic) = (Arc::clone(client), topic.to_string());
        tasks.spawn(async move {
            partition_records(&client, &topic, p)
                .await
                .into_iter()
                .map(|r| {
                    let value = r.record.value.as_deref().expect("value");
                    Report::from_json(value)
                        .expect("a report")
                        .report_id
                        .to_string()
                })
                .collect::<Vec<_>>()
        });
    }
    let mut all = BTreeSet::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.expect("reader task"));
    }
    all
}

/// Publishes `ticks` rounds of reports of `targets` targets, one tick every 100 ms, with the
/// settings' defaults; returns the reports sent and the publisher's counters once it stopped.
async fn publish(
    settings: &CheckerSettings,
    targets: usize,
    ticks: i64,
) -> (Vec<Report>, PublishMetrics) {
    let (tx, rx) = mpsc::channel(100_000);
    let metrics = PublishMetrics::default();
    let publisher = tokio::spawn(run(
        rx,
        settings.kafka.clone().expect("kafka"),
        settings.checker.producer.clone(),
        Box::new(MemorySpool::default()),
        metrics.clone(),
        Drained::default(),
    ));
    let mut sent = Vec::new();
    for tick in 0..ticks {
        for t in 0..targets {
            let r = sample_report(&format!("target-{t}"), tick);
            tx.send(r.clone()).await.expect("publisher listening");
            sent.push(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the publisher stops within its shutdown_timeout")
        .expect("publisher ends");
    (sent, metrics)
}

/// How long connecting to every partition takes (printed, for docs/benchmarks.md).
async fn time_connect(kafka: &KafkaSettings) {
    let started = std::time::Instant::now();
    let topic = checker::publish::ReportTopic::connect(kafka)
        .await
        .expect("the topic connects");
    eprintln!(
        "connected to {} partitions in {} ms",
        topic.partition_count(),
        started.elapsed().as_millis()
    );
}

/// Every report sent is in the topic, found by its `report_id`.
fn assert_all_arrived(sent: &[Report], ids: &BTreeSet<String>, metrics: &PublishMetrics) {
    let missing = sent
        .iter()
        .filter(|r| !ids.contains(&r.report_id.to_string()))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} reports did not reach the topic (produced {}, spooled {}, failed rounds {})",
        sent.len(),
        metrics.produced.get(),
        metrics.spooled.get(),
        metrics.produce_errors.get(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn every_report_reaches_a_broker_120ms_away_with_64_partitions_and_default_settings() {
    let (proxy, listener) = Proxy::bind().await;
    let proxy = proxy.with_latency(ONE_WAY);
    let broker = OwnBroker::start(Some(proxy.port)).await;
    proxy.forward_to(listener, broker.port);
    let dir = tempfile::tempdir().expect("dir");
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let admin = client_of(
        &settings(dir.path(), &brokers, "x", "")
            .kafka
            .expect("kafka"),
    )
    .await;
    let topic = create_topic(&admin, 64).await;
    let settings = settings(dir.path(), &brokers, &topic, "");
    time_connect(settings.kafka.as_ref().expect("kafka")).await;

    let (sent, metrics) = publish(&settings, 64, 40).await;
    assert_all_arrived(&sent, &report_ids(&admin, &topic, 64).await, &metrics);
    drop(broker);
}

/// A broker whose every round takes longer than `produce_timeout` (200 ms round trips against
/// 150 ms): the rounds' bound grows until they fit, so every report is acknowledged and the
/// spool drains, instead of the same round timing out and being sent again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn rounds_slower_than_produce_timeout_are_still_acknowledged() {
    let (proxy, listener) = Proxy::bind().await;
    let proxy = proxy.with_latency(Duration::from_millis(100));
    let broker = OwnBroker::start(Some(proxy.port)).await;
    proxy.forward_to(listener, broker.port);
    let dir = tempfile::tempdir().expect("dir");
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let admin = client_of(
        &settings(dir.path(), &brokers, "x", "")
            .kafka
            .expect("kafka"),
    )
    .await;
    let topic = create_topic(&admin, 4).await;
    // The [checker] table follows the [kafka] lines.
    let settings = settings(
        dir.path(),
        &brokers,
        &topic,
        "[checker]\nproduce_timeout = \"150ms\"\n",
    );
    let (sent, metrics) = publish(&settings, 20, 20).await;
    assert_all_arrived(&sent, &report_ids(&admin, &topic, 4).await, &metrics);
    let acknowledged = metrics.produced.get();
    assert!(
        acknowledged >= sent.len() as u64,
        "every report is acknowledged, not only written: {acknowledged} of {}",
        sent.len()
    );
    drop(broker);
}

mod tls {
    //! The same over mutual TLS: a TLS terminator in front of the broker (its command line
    //! cannot enable TLS), behind the latency proxy, so every handshake crosses the link.

    use super::support::{ca, leaf, loopback_listener, tls_terminator};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn every_report_reaches_a_broker_120ms_away_over_mutual_tls_with_32_partitions() {
        let ca = ca();
        let (proxy, listener) = Proxy::bind().await;
        let proxy = proxy.with_latency(ONE_WAY);
        let broker = OwnBroker::start(Some(proxy.port)).await;
        let (terminator, tls_port) = loopback_listener().await;
        tls_terminator(&ca, terminator, broker.port);
        proxy.forward_to(listener, tls_port);

        let dir = tempfile::tempdir().expect("dir");
        let (_, client_pem, _, client_key_pem) = leaf(&ca, &["checker.test"]);
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write");
        std::fs::write(dir.path().join("client.pem"), client_pem).expect("write");
        std::fs::write(dir.path().join("client.key"), client_key_pem).expect("write");
        let tls = "[kafka.tls]\nca_file = \"ca.pem\"\ncert_file = \"client.pem\"\nkey_file = \"client.key\"\n";
        let brokers = format!("127.0.0.1:{}", proxy.port);
        let admin = client_of(
            &settings(dir.path(), &brokers, "x", tls)
                .kafka
                .expect("kafka"),
        )
        .await;
        let topic = create_topic(&admin, 32).await;
        let settings = settings(dir.path(), &brokers, &topic, tls);
        time_connect(settings.kafka.as_ref().expect("kafka")).await;

        let (sent, metrics) = publish(&settings, 32, 40).await;
        assert_all_arrived(&sent, &report_ids(&admin, &topic, 32).await, &metrics);
        drop(broker);
    }
}

mod too_large {
    //! A broker whose `message.max.bytes` is `LIMIT`. tansu 0.6 has no such bound, so a
    //! terminator in front of it that speaks the Kafka framing answers every produce request
    //! larger than `LIMIT` with MESSAGE_TOO_LARGE, as Kafka does, and forwards the rest.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The terminator's bound on a produce request, in bytes.
    const LIMIT: usize = 64 * 1024;

    /// What the terminator saw.
    #[derive(Debug, Default)]
    struct Seen {
        refused: AtomicU64,
        largest_forwarded: AtomicU64,
    }

    /// Serves the terminator on `listener`, forwarding to the broker on `upstream`.
    fn terminator_on(listener: tokio::net::TcpListener, upstream: u16) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        let counters = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(session(client, upstream, Arc::clone(&counters)));
            }
        });
        seen
    }

    /// Requests one at a time: a produce request above `LIMIT` is answered here, every other
    /// request goes to the broker and its answer back.
    async fn session(
        mut client: tokio::net::TcpStream,
        upstream: u16,
        seen: Arc<Seen>,
    ) -> io::Result<()> {
        let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
        loop {
            let len = client.read_u32().await? as usize;
            let mut frame = vec![0; len];
            client.read_exact(&mut frame).await?;
            let api_key = i16::from_be_bytes([frame[0], frame[1]]);
            if api_key == 0 && len > LIMIT {
                seen.refused.fetch_add(1, Ordering::Relaxed);
                let answer = too_large_answer(&frame);
                client.write_u32(answer.len() as u32).await?;
                client.write_all(&answer).await?;
                continue;
            }
            if api_key == 0 {
                seen.largest_forwarded
                    .fetch_max(len as u64 + 4, Ordering::Relaxed);
            }
            server.write_u32(len as u32).await?;
            server.write_all(&frame).await?;
            let back = server.read_u32().await? as usize;
            let mut answer = vec![0; back];
            server.read_exact(&mut answer).await?;
            client.write_u32(back as u32).await?;
            client.write_all(&answer).await?;
        }
    }

    /// The produce response (versions 3 to 7, the ones rskafka speaks) that refuses every
    /// partition of `request` with MESSAGE_TOO_LARGE (10).
    fn too_large_answer(request: &[u8]) -> Vec<u8> {
        let mut r = Reader(request);
        let (_api_key, version, correlation) = (r.i16(), r.i16(), r.i32());
        let _client_id = r.string();
        let _transactional_id = r.string();
        let (_acks, _timeout) = (r.i16(), r.i32());
        let mut out = correlation.to_be_bytes().to_vec();
        let topics = r.i32();
        out.extend(topics.to_be_bytes());
        for _ in 0..topics {
            let name = r.string().to_vec();
            out.extend((name.len() as i16).to_be_bytes());
            out.extend(&name);
            let partitions = r.i32();
            out.extend(partitions.to_be_bytes());
            for _ in 0..partitions {
                let index = r.i32();
                let records = r.i32().max(0) as usize;
                r.take(records);
                out.extend(index.to_be_bytes());
                out.extend(10i16.to_be_bytes());
                out.extend((-1i64).to_be_bytes()); // base_offset
                out.extend((-1i64).to_be_bytes()); // log_append_time_ms
                if version >= 5 {
                    out.extend((-1i64).to_be_bytes()); // log_start_offset
                }
            }
        }
        out.extend(0i32.to_be_bytes()); // throttle_time_ms
        out
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
        /// A (nullable) string: i16 length, -1 for null.
        fn string(&mut self) -> &'a [u8] {
            let n = self.i16();
            self.take(n.max(0) as usize)
        }
    }

    /// A report of `target` whose error text is `bytes` of letters that do not compress.
    fn huge_report(target: &str, bytes: usize) -> Report {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let text: String = (0..bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        let mut r = sample_report(target, 0);
        r.error = Some(text);
        r
    }

    /// Publishes 30 ticks of 40 targets' reports with the huge report of `huge-target` in the
    /// middle; every other report must arrive, the huge one must be counted too large, and the
    /// publisher must end with nothing left behind.
    async fn publish_with_one_huge_report(kafka_extra: &str) -> Arc<Seen> {
        // The broker advertises the terminator's port, bound first.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the terminator's port");
        let port = listener.local_addr().expect("terminator port").port();
        let broker = OwnBroker::start(Some(port)).await;
        let seen = terminator_on(listener, broker.port);
        let dir = tempfile::tempdir().expect("dir");
        let brokers = format!("127.0.0.1:{port}");
        let admin = client_of(
            &settings(dir.path(), &brokers, "x", "")
                .kafka
                .expect("kafka"),
        )
        .await;
        let topic = create_topic(&admin, 3).await;
        let settings = settings(dir.path(), &brokers, &topic, kafka_extra);

        let (tx, rx) = mpsc::channel(100_000);
        let metrics = PublishMetrics::default();
        let publisher = tokio::spawn(run(
            rx,
            settings.kafka.clone().expect("kafka"),
            settings.checker.producer.clone(),
            Box::new(MemorySpool::default()),
            metrics.clone(),
            Drained::default(),
        ));
        let mut sent = Vec::new();
        for tick in 0..30 {
            if tick == 15 {
                tx.send(huge_report("huge-target", 3 * LIMIT))
                    .await
                    .expect("send");
            }
            for t in 0..40 {
                let r = sample_report(&format!("target-{t}"), tick);
                tx.send(r.clone()).await.expect("publisher listening");
                sent.push(r);
            }
            // Enough at once that a linger's round is larger than LIMIT.
            if tick % 10 != 9 {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(60), publisher)
            .await
            .expect("the publisher stops within its shutdown_timeout: nothing stalls")
            .expect("publisher ends");

        let ids = report_ids(&admin, &topic, 3).await;
        assert_all_arrived(&sent, &ids, &metrics);
        assert_eq!(ids.len(), sent.len(), "the huge report is not in the topic");
        // Once per round that carried it: a round that failed for another reason after it
        // was refused is sent again from the spool, and it is refused again.
        assert!(
            metrics.too_large.get() >= 1,
            "the huge report is counted as too large"
        );
        assert!(
            seen.refused.load(Ordering::Relaxed) >= 1,
            "the broker refused it"
        );
        drop(broker);
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn rounds_refused_as_too_large_are_split_and_a_report_that_never_fits_is_dropped_and_counted(
    ) {
        // The default kafka.max_request_bytes is above this broker's bound: rounds are refused
        // and split until they fit. (Uncompressed, so that a round is larger than the bound.)
        let seen = publish_with_one_huge_report("compression = \"none\"\n").await;
        assert!(
            seen.refused.load(Ordering::Relaxed) > 1,
            "rounds larger than the broker's bound were refused and split, not only the huge report"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
    async fn produce_requests_stay_within_max_request_bytes() {
        let seen =
            publish_with_one_huge_report("compression = \"none\"\nmax_request_bytes = \"32KiB\"\n")
                .await;
        let largest = seen.largest_forwarded.load(Ordering::Relaxed);
        assert!(
            largest > 0 && largest <= 32 * 1024,
            "every produce request the broker took is within kafka.max_request_bytes: {largest} bytes"
        );
    }
}
