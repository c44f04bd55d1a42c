use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::*;
use crate::notify::message::Event;

fn claimed(n: u128, channel: &str, at_s: i64, message_key: Option<&str>) -> Claimed {
    let event = Event {
        key: format!("incident/{n}/opened"),
        transition: Transition::Opened,
        target_id: format!("t{n}"),
        target_name: format!("t{n}"),
        url: "https://t.example/".into(),
        labels: BTreeMap::new(),
        state: "down".into(),
        since: DateTime::<Utc>::from_timestamp(at_s, 0).unwrap_or_default(),
        incident_id: None,
        regions: Vec::new(),
        cause_class: None,
        cause_error: None,
        duration_seconds: None,
        certificate_not_after: None,
        link: None,
    };
    Claimed {
        id: Uuid::from_u128(n),
        seq: n as i64,
        channel: channel.into(),
        group_key: format!("{channel}/opened"),
        message_key: message_key.map(str::to_string),
        event,
        attempts: 0,
        created_at: DateTime::<Utc>::from_timestamp(at_s, 0).unwrap_or_default(),
    }
}

#[test]
fn a_storm_within_the_window_is_one_message_and_stragglers_go_alone() {
    let mut rows: Vec<Claimed> = (0..6)
        .map(|n| claimed(n, "ops", 1000 + n as i64, None))
        .collect();
    rows.push(claimed(99, "ops", 2000, None));
    rows.push(claimed(100, "web", 1000, None));
    let mut rate = Rate::new(30);
    let planned = plan(rows, 5, Duration::from_secs(30), &mut rate, Instant::now());
    assert!(planned.defer.is_empty());
    let sizes: Vec<(String, usize)> = planned
        .send
        .iter()
        .map(|(k, m)| (k.clone(), m.len()))
        .collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    let group = sizes.iter().find(|(_, n)| *n == 6).expect("one group of 6");
    assert!(group.0.starts_with("group/"));
    let again: Vec<Claimed> = (0..6)
        .rev()
        .map(|n| claimed(n, "ops", 1000 + n as i64, None))
        .collect();
    let replanned = plan(
        again,
        5,
        Duration::from_secs(30),
        &mut Rate::new(30),
        Instant::now(),
    );
    assert_eq!(replanned.send[0].0, group.0, "the group key is stable");
}

#[test]
fn a_kept_message_key_holds_its_members_together() {
    let rows = vec![
        claimed(1, "ops", 1000, Some("group/x")),
        claimed(2, "ops", 5000, Some("group/x")),
    ];
    let planned = plan(
        rows,
        5,
        Duration::from_secs(30),
        &mut Rate::new(30),
        Instant::now(),
    );
    assert_eq!(planned.send.len(), 1);
    assert_eq!(planned.send[0].0, "group/x");
}

#[test]
fn a_channel_over_its_rate_waits() {
    let now = Instant::now();
    let mut rate = Rate::new(2);
    assert!(rate.take("ops", now).is_ok());
    assert!(rate.take("ops", now).is_ok());
    let wait = rate.take("ops", now).expect_err("over the rate");
    assert!(wait <= Duration::from_secs(60) && wait >= Duration::from_secs(1));
    assert!(
        rate.take("web", now).is_ok(),
        "each channel has its own rate"
    );
    assert!(rate.take("ops", now + Duration::from_secs(61)).is_ok());
}

#[test]
fn backoff_doubles_up_to_the_maximum_with_bounded_jitter() {
    let settings = NotifySettings {
        retry_initial: Duration::from_secs(5),
        retry_max: Duration::from_secs(60),
        ..NotifySettings::default()
    };
    for n in 0..50u128 {
        let id = Uuid::from_u128(n * 7919);
        let first = backoff(&settings, 0, id);
        assert!(
            first >= Duration::from_secs(4) && first <= Duration::from_secs(6),
            "{first:?}"
        );
        let late = backoff(&settings, 30, id);
        assert!(
            late >= Duration::from_secs(48) && late <= Duration::from_secs(72),
            "{late:?}"
        );
    }
}

#[test]
fn the_lease_covers_the_attempts_begun_and_follows_the_longest_timeout() {
    let short = Lease::of(Duration::from_secs(3));
    assert_eq!(short.begin_within, Duration::from_secs(9));
    assert_eq!(short.hold, Duration::from_secs(14));
    // Long timeouts: messages begin within BEGIN_WITHIN, the lease still covers the last.
    let long = Lease::of(Duration::from_secs(60));
    assert_eq!(long.begin_within, BEGIN_WITHIN);
    assert_eq!(
        long.hold,
        BEGIN_WITHIN + Duration::from_secs(60) + LEASE_MARGIN
    );
}
