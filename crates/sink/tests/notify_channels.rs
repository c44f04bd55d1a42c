//! Every channel kind through the dispatcher, end to end: crafted reports of one all-region
//! outage through a real broker into a real PostgreSQL, its incident written to the outbox
//! for four channels at once, and the dispatcher delivering it to a webhook, a Slack
//! receiver and a PagerDuty receiver (local HTTP servers on port 0, each channel's `url`
//! pointing at one) and an SMTP listener (`tls = "none"`). Secrets come as an operator would
//! give them: the Slack URL and the PagerDuty routing key through `WEBMON__` variables, the
//! webhook's secret from a file.
//!
//! And a real SIGKILL between storing and delivering: the `sink` binary claims a message for
//! a webhook receiver that hangs, is killed mid-attempt, and a new process delivers each key
//! once after the claim's lease, which follows the channel's 3 s timeout (14 s, see
//! `dispatch::Lease`) so the test ends within about 20 s.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::http::{Received, Receiver};
use support::notify::{notifications, outage, Fixture, WITHIN};
use support::smtp::{Front, Mail, SmtpServer};
use support::{count, text_rows};
use tokio::time::Instant;

const ROUTING_KEY: &str = "test-routing-key";

/// Polls `got` until it holds `n` items, for at most [`WITHIN`]; returns them.
async fn wait_for_n<T: std::fmt::Debug>(what: &str, n: usize, got: impl Fn() -> Vec<T>) -> Vec<T> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let now = got();
        if now.len() >= n {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: {now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The four channels: the webhook's URL and the PagerDuty URL inline, the webhook's secret
/// from `secret_file`, the mail server at `smtp_port`.
fn channels(hook: &Receiver, pager: &Receiver, secret_file: &str, smtp_port: u16) -> String {
    let defaults = "default_channels = [\"hook\", \"chat\", \"pager\", \"mail\"]";
    notifications(defaults)
        + &format!(
            "[sink.notifications.channels.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret_file = \"{secret_file}\"\n\
             [sink.notifications.channels.chat]\nkind = \"slack\"\n\
             [sink.notifications.channels.pager]\nkind = \"pagerduty\"\nurl = \"{}\"\nseverity = \"error\"\n\
             [sink.notifications.channels.mail]\nkind = \"email\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
             from = \"Web monitor <alerts@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\"\n",
            hook.url, pager.url
        )
}

/// The event keys of `channel`'s notifications, in the order written, each delivered at the
/// first attempt.
async fn delivered_keys(f: &Fixture, channel: &str) -> Vec<String> {
    text_rows(
        &f.pool,
        &format!(
            "SELECT event_key FROM notifications \
             WHERE channel = '{channel}' AND status = 'delivered' AND attempts = 1 ORDER BY seq"
        ),
    )
    .await
}

/// The value of header `name` in the mail `data`.
fn mail_header(mail: &Mail, name: &str) -> String {
    let data = mail.data.replace("\r\n ", " ");
    data.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .unwrap_or_default()
}

fn transition(r: &Received) -> String {
    r.json["events"][0]["transition"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn one_outage_reaches_webhook_slack_pagerduty_and_email_once_opened_and_once_resolved() {
    let (hook, chat, pager) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let smtp = SmtpServer::start(Front::Plain, "250 ok").await;
    let secrets = tempfile::tempdir().expect("dir");
    let secret_file = secrets.path().join("hook-secret");
    std::fs::write(&secret_file, "hook-secret\n").expect("write");

    let mut f = Fixture::new(outage(&["shop".into()], 12)).await;
    let prefix = "WEBMON__SINK__NOTIFICATIONS__CHANNELS__";
    f.env.insert(format!("{prefix}CHAT__URL"), chat.url.clone());
    f.env
        .insert(format!("{prefix}PAGER__ROUTING_KEY"), ROUTING_KEY.into());
    let toml = channels(&hook, &pager, &secret_file.to_string_lossy(), smtp.port);
    let sink = f.start(&toml).await;
    f.stored().await;
    f.notifications("status = 'delivered' AND attempts = 1", 8)
        .await;

    let opened = delivered_keys(&f, "hook").await;
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert!(opened[0].ends_with("/opened") && opened[1].ends_with("/resolved"));
    for channel in ["chat", "pager", "mail"] {
        assert_eq!(delivered_keys(&f, channel).await, opened, "{channel}");
    }

    let got = hook.answered();
    assert_eq!(got.len(), 2, "the webhook: {got:#?}");
    let keys: Vec<&str> = got.iter().map(|(r, _)| r.key.as_str()).collect();
    assert_eq!(keys, opened, "the webhook: X-Webmon-Key of each, once");
    let kinds: Vec<String> = got.iter().map(|(r, _)| transition(r)).collect();
    assert_eq!(kinds, ["opened", "resolved"]);

    let got = chat.answered();
    assert_eq!(got.len(), 2, "Slack: {got:#?}");
    for ((r, _), word) in got.iter().zip(["DOWN shop", "RESOLVED shop"]) {
        let text = r.json["text"].as_str().unwrap_or_default();
        assert!(text.starts_with(word), "Slack's headline: {text}");
        assert_eq!(r.content_type, "application/json");
    }

    let got = pager.answered();
    assert_eq!(got.len(), 2, "PagerDuty: {got:#?}");
    let (trigger, resolve) = (&got[0].0.json, &got[1].0.json);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(
        trigger["routing_key"], ROUTING_KEY,
        "the key from the environment"
    );
    assert_eq!(trigger["payload"]["severity"], "error");
    let incident = opened[0].split('/').nth(1).unwrap_or_default();
    assert_eq!(trigger["dedup_key"], Value::from(incident));
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);

    let mails = wait_for_n("two mails", 2, || smtp.mails()).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    for (mail, (word, key)) in mails
        .iter()
        .zip([("DOWN shop", &opened[0]), ("RESOLVED shop", &opened[1])])
    {
        let subject = mail_header(mail, "Subject");
        assert!(subject.starts_with(word), "the subject: {subject}");
        assert_eq!(&mail_header(mail, "X-Webmon-Key"), key);
        assert_eq!(mail.to, ["RCPT TO:<oncall@example.com>"]);
    }
    f.end(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and PostgreSQL: run scripts/test.sh"]
async fn a_sink_killed_while_a_receiver_hangs_leaves_each_key_to_its_successor_to_deliver_once() {
    let hook = Receiver::start().await;
    hook.hold(true);
    let mut f = Fixture::new(outage(&["shop".into()], 12)).await;
    let toml = notifications("default_channels = [\"hook\"]")
        + &format!(
            "[sink.notifications.channels.hook]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"s\"\ntimeout = \"3s\"\n",
            hook.url
        );
    let mut first = f.process(&toml);
    wait_for_n("a request held", 1, || hook.received()).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let held = hook.received()[0].key.clone();
    let claimed = format!(
        "SELECT count(*) FROM notifications WHERE event_key = '{held}' AND status = 'pending' \
         AND attempts = 0 AND message_key IS NOT NULL AND next_attempt_at > now()"
    );
    assert_eq!(
        count(&f.pool, &claimed).await,
        1,
        "the held message is stored, claimed, not delivered"
    );
    assert!(hook.answered().is_empty());

    hook.hold(false);
    let restarted = Instant::now();
    let _second = f.process(&toml);
    f.notifications("status = 'delivered' AND attempts = 1", 2)
        .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(25),
        "the lease held the rows {:?}",
        restarted.elapsed()
    );
    let mut answered: HashMap<String, usize> = HashMap::new();
    for (r, status) in hook.answered() {
        assert!((200..300).contains(&status));
        *answered.entry(r.key).or_default() += 1;
    }
    let keys = text_rows(&f.pool, "SELECT event_key FROM notifications ORDER BY seq").await;
    let once: HashMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(answered, once, "each key answered once after the restart");
    assert_eq!(held, keys[0], "the opening was held");
    let sent = hook.received().iter().filter(|r| r.key == held).count();
    assert_eq!(sent, 2, "held, then sent again under the same key");
    f.end(Vec::new()).await;
}
