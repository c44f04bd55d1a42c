//! The Slack, PagerDuty and e-mail channels against real receivers on local sockets: an HTTP
//! server playing Slack's webhook and PagerDuty's Events API, and an SMTP server speaking
//! EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA and QUIT (both in `support`). No broker or database is needed.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::DateTime;
use monitor_core::settings::{
    EmailSettings, PagerDutySettings, PagerDutySeverity, Secret, SlackSettings, SmtpTls,
};
use monitor_core::testing::tls_server_config;
use serde_json::Value;
use sink::notify::channels::email::Email;
use sink::notify::channels::pagerduty::PagerDuty;
use sink::notify::channels::slack::Slack;
use sink::notify::delivery::DeliveryError;
use sink::notify::message::{Event, Message, Transition};
use support::http::Receiver;
use support::smtp::{Front, Mail, SmtpServer};
use tokio::net::TcpListener;
use uuid::Uuid;

// ---- what is sent ----

fn event(target: &str, transition: Transition, incident: Option<Uuid>) -> Event {
    Event {
        key: format!("{}:{}", incident.unwrap_or_default(), transition.key_part()),
        transition,
        target_id: target.into(),
        target_name: format!("{target} shop"),
        url: format!("https://{target}.example/"),
        labels: BTreeMap::from([("team".to_string(), "web".to_string())]),
        state: if transition.is_problem() {
            "down"
        } else {
            "up"
        }
        .into(),
        since: DateTime::from_timestamp(1_764_331_200, 0).unwrap_or_default(),
        incident_id: incident,
        regions: vec!["eu".into(), "us".into()],
        cause_class: Some("timeout".into()),
        cause_error: Some("no answer within 10s".into()),
        duration_seconds: (!transition.is_problem()).then_some(3900),
        certificate_not_after: None,
        link: Some("https://status.example/".into()),
    }
}

fn message(events: Vec<Event>) -> Message {
    Message {
        key: events.first().map(|e| e.key.clone()).unwrap_or_default(),
        events,
    }
}

/// Delivers three times against answers 500, 429 and 400: retry, retry, refused.
async fn assert_answers_are_sorted<F, Fut>(receiver: &Receiver, deliver: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<sink::notify::delivery::Answer, DeliveryError>>,
{
    receiver.answer_next(&[500, 429, 400]);
    for (status, retry) in [(500, true), (429, true), (400, false)] {
        let error = deliver().await.expect_err("not delivered");
        let sorted = (error.status(), matches!(error, DeliveryError::Retry { .. }));
        assert_eq!(sorted, (Some(status), retry), "{error:?}");
    }
}

// ---- Slack ----

fn slack(receiver: &Receiver) -> Slack {
    Slack::new(&SlackSettings {
        url: Secret::new(receiver.url.clone()),
    })
}

#[tokio::test]
async fn slack_gets_a_text_fallback_a_header_and_fields_for_one_event() {
    let receiver = Receiver::start().await;
    let opened = event("shop", Transition::Opened, Some(Uuid::new_v4()));
    let answer = slack(&receiver)
        .deliver(&message(vec![opened.clone()]))
        .await
        .expect("delivered");
    assert_eq!(answer.status, 202);

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].content_type, "application/json");
    let json = &received[0].json;
    assert!(json["text"]
        .as_str()
        .expect("text")
        .contains(&opened.headline()));
    let blocks = json["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .expect("header")
            .chars()
            .count()
            <= 150
    );
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "*Regions*\neu, us",
            "*Cause*\ntimeout: no answer within 10s",
            "*Since*\n2025-11-28T12:00:00Z"
        ]
    );
    assert_eq!(blocks[2]["type"], "context");
    assert!(blocks[2]["elements"][0]["text"]
        .as_str()
        .expect("link")
        .contains("https://status.example/"));
}

#[tokio::test]
async fn slack_gets_one_bounded_list_for_a_storm_of_targets_and_no_markup_from_them() {
    let receiver = Receiver::start().await;
    let mut events: Vec<Event> = (0..400)
        .map(|i| event(&format!("t{i}"), Transition::Opened, Some(Uuid::new_v4())))
        .collect();
    events[0].cause_error = Some("<!channel> & friends".into());
    slack(&receiver)
        .deliver(&message(events))
        .await
        .expect("delivered");

    let json = &receiver.received()[0].json;
    let blocks = json["blocks"].as_array().expect("blocks");
    assert!(blocks.len() <= 50);
    assert_eq!(
        blocks[0]["text"]["text"],
        "400 targets DOWN: t0 shop, t1 shop, t2 shop and 397 more"
    );
    let list = blocks[1]["text"]["text"].as_str().expect("list");
    assert!(list.chars().count() <= 3000, "{}", list.chars().count());
    assert!(list.starts_with("• DOWN t0 shop"), "{list}");
    assert!(list.contains("&lt;!channel&gt; &amp; friends"), "{list}");
    assert!(list.ends_with("more"), "{list}");
    assert!(json["text"].as_str().expect("text").chars().count() <= 4000);
}

#[tokio::test]
async fn slack_answers_are_sorted_into_retry_and_refused() {
    let receiver = Receiver::start().await;
    let channel = slack(&receiver);
    let m = message(vec![event("shop", Transition::Opened, None)]);
    assert_answers_are_sorted(&receiver, || channel.deliver(&m)).await;
}

// ---- PagerDuty ----

fn pagerduty(receiver: &Receiver) -> PagerDuty {
    PagerDuty::new(&PagerDutySettings {
        routing_key: Secret::new("R0UT1NGKEY".into()),
        url: receiver.url.parse().expect("url"),
        severity: PagerDutySeverity::Error,
    })
}

#[tokio::test]
async fn pagerduty_trigger_and_resolve_of_one_incident_share_their_dedup_key() {
    let receiver = Receiver::start().await;
    let channel = pagerduty(&receiver);
    let incident = Uuid::new_v4();
    let mut opened = event("shop", Transition::Opened, Some(incident));
    opened.cause_error = Some("x".repeat(5000));
    let resolved = event("shop", Transition::Resolved, Some(incident));
    channel
        .deliver(&message(vec![opened]))
        .await
        .expect("trigger");
    channel
        .deliver(&message(vec![resolved]))
        .await
        .expect("resolve");

    let received = receiver.received();
    let (trigger, resolve) = (&received[0].json, &received[1].json);
    assert_eq!(received[0].content_type, "application/json");
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["dedup_key"], incident.to_string());
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);

    let payload = &trigger["payload"];
    let summary = payload["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("DOWN shop shop (https://shop.example/)"),
        "{summary}"
    );
    assert_eq!(summary.chars().count(), 1024);
    assert_eq!(payload["source"], "https://shop.example/");
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["timestamp"], "2025-11-28T12:00:00Z");
    assert_eq!(payload["component"], "shop");
    assert_eq!(payload["group"], "team=web");
    assert_eq!(
        payload["custom_details"]["regions"],
        serde_json::json!(["eu", "us"])
    );
    assert!(payload["custom_details"]["cause"]
        .as_str()
        .expect("cause")
        .starts_with("timeout: xxx"));
    assert_eq!(trigger["links"][0]["href"], "https://status.example/");
}

#[tokio::test]
async fn pagerduty_gets_one_event_per_incident_of_a_group() {
    let receiver = Receiver::start().await;
    let incidents: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let events = incidents
        .iter()
        .enumerate()
        .map(|(i, id)| event(&format!("t{i}"), Transition::Opened, Some(*id)))
        .collect();
    pagerduty(&receiver)
        .deliver(&message(events))
        .await
        .expect("delivered");

    let keys: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| r.json["dedup_key"].clone())
        .collect();
    let expected: Vec<Value> = incidents
        .iter()
        .map(|id| Value::from(id.to_string()))
        .collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn pagerduty_without_an_incident_pairs_on_the_key_without_its_transition() {
    let receiver = Receiver::start().await;
    let channel = pagerduty(&receiver);
    let mut degraded = event("shop", Transition::Degraded, None);
    degraded.key = "shop:degraded-since-12:degraded".into();
    let mut ended = event("shop", Transition::DegradedEnded, None);
    ended.key = "shop:degraded-since-12:degraded-ended".into();
    channel
        .deliver(&message(vec![degraded]))
        .await
        .expect("trigger");
    channel
        .deliver(&message(vec![ended]))
        .await
        .expect("resolve");
    let received = receiver.received();
    assert_eq!(received[0].json["dedup_key"], "shop:degraded-since-12");
    assert_eq!(received[1].json["dedup_key"], "shop:degraded-since-12");
}

#[tokio::test]
async fn pagerduty_answers_are_sorted_into_retry_and_refused() {
    let receiver = Receiver::start().await;
    let channel = pagerduty(&receiver);
    let m = message(vec![event("shop", Transition::Opened, None)]);
    assert_answers_are_sorted(&receiver, || channel.deliver(&m)).await;
}

fn email_settings(port: u16, tls: SmtpTls) -> EmailSettings {
    EmailSettings {
        host: "localhost".into(),
        port,
        tls,
        username: None,
        password: None,
        from: "Web monitor <alerts@example.com>".into(),
        to: vec!["oncall@example.com".into(), "Ops <ops@example.org>".into()],
        timeout: Duration::from_secs(5),
        ca_file: None,
    }
}

fn assert_mail_says(mail: &Mail, message: &Message) {
    assert_eq!(mail.from, "MAIL FROM:<alerts@example.com>");
    assert_eq!(
        mail.to,
        ["RCPT TO:<oncall@example.com>", "RCPT TO:<ops@example.org>"]
    );
    let data = mail.data.replace("\r\n ", " ");
    assert!(
        data.contains(&format!("Subject: {}", message.subject())),
        "{data}"
    );
    assert!(
        data.contains(&format!("X-Webmon-Key: {}", message.key)),
        "{data}"
    );
    assert!(data.contains("Message-ID: <"), "{data}");
    assert!(
        data.contains("To: oncall@example.com, Ops <ops@example.org>"),
        "{data}"
    );
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    // The body is quoted-printable: its soft line breaks (`=` at a line's end) removed.
    let (_, body) = mail.data.split_once("\r\n\r\n").expect("a body");
    let body = body.replace("=\r\n", "");
    assert!(body.contains(&message.events[0].headline()), "{body}");
    assert!(body.contains("https://status.example/"), "{body}");
}

// ---- e-mail ----

#[tokio::test]
async fn an_email_reaches_every_recipient_with_subject_headline_and_key() {
    let server = SmtpServer::start(Front::Plain, "250 ok").await;
    let mut settings = email_settings(server.port, SmtpTls::None);
    settings.username = Some("alerts".into());
    settings.password = Some(Secret::new("pw".into()));
    let m = message(vec![event(
        "shop",
        Transition::Opened,
        Some(Uuid::new_v4()),
    )]);
    let answer = Email::new(&settings).deliver(&m).await.expect("delivered");
    assert_eq!(answer.status, 250);

    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert_mail_says(&mails[0], &m);
    assert!(!mails[0].tls);
    // AUTH PLAIN of "\0alerts\0pw".
    assert_eq!(
        mails[0].auth.as_deref(),
        Some("AUTH PLAIN AGFsZXJ0cwBwdw==")
    );
}

#[tokio::test]
async fn an_email_goes_over_starttls_or_implicit_tls_to_a_server_trusted_through_ca_file() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let config = tls_server_config(
        vec![certified.cert.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
    );
    let server = SmtpServer::start(Front::StartTls(config.clone()), "250 ok").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).expect("write");

    let m = message(vec![event(
        "shop",
        Transition::Resolved,
        Some(Uuid::new_v4()),
    )]);
    let untrusted = Email::new(&email_settings(server.port, SmtpTls::StartTls))
        .deliver(&m)
        .await;
    assert!(
        matches!(untrusted, Err(DeliveryError::Retry { .. })),
        "{untrusted:?}"
    );

    let mut settings = email_settings(server.port, SmtpTls::StartTls);
    settings.ca_file = Some(ca_file.clone());
    Email::new(&settings).deliver(&m).await.expect("delivered");
    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls);
    assert_mail_says(&mails[0], &m);

    let implicit = SmtpServer::start(Front::Implicit(config), "250 ok").await;
    let mut settings = email_settings(implicit.port, SmtpTls::Tls);
    settings.ca_file = Some(ca_file);
    Email::new(&settings)
        .deliver(&m)
        .await
        .expect("delivered over implicit TLS");
    let mails = implicit.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls);
    assert_mail_says(&mails[0], &m);
}

#[tokio::test]
async fn an_smtp_5xx_is_refused_and_a_4xx_retried() {
    let m = message(vec![event("shop", Transition::Opened, None)]);
    let refusing = SmtpServer::start(Front::Plain, "550 5.1.1 no such user").await;
    let refused = Email::new(&email_settings(refusing.port, SmtpTls::None))
        .deliver(&m)
        .await;
    assert!(
        matches!(
            refused,
            Err(DeliveryError::Refused {
                status: Some(550),
                ..
            })
        ),
        "{refused:?}"
    );

    let busy = SmtpServer::start(Front::Plain, "451 4.3.0 try again later").await;
    let retried = Email::new(&email_settings(busy.port, SmtpTls::None))
        .deliver(&m)
        .await;
    assert!(
        matches!(
            retried,
            Err(DeliveryError::Retry {
                status: Some(451),
                ..
            })
        ),
        "{retried:?}"
    );
    assert!(refusing.mails().is_empty() && busy.mails().is_empty());
}

#[tokio::test]
async fn an_smtp_server_that_is_not_there_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let m = message(vec![event("shop", Transition::Opened, None)]);
    let result = Email::new(&email_settings(port, SmtpTls::None))
        .deliver(&m)
        .await;
    assert!(
        matches!(result, Err(DeliveryError::Retry { status: None, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_smtp_server_that_never_greets_is_retried_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let accepted = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(accepted);
    });
    let mut settings = email_settings(port, SmtpTls::None);
    settings.timeout = Duration::from_millis(300);
    let m = message(vec![event("shop", Transition::Opened, None)]);
    let started = std::time::Instant::now();
    let result = Email::new(&settings).deliver(&m).await;
    assert!(
        matches!(result, Err(DeliveryError::Retry { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    silent.abort();
}
