//! [`Policy`]: a target's verdict settings as the fold uses them, and [`Policies`], every
//! target's, from the sink's settings: the `[sink.verdicts]` defaults, overridden by what a
//! `monitored_urls` entry of the same file sets for its target.

use std::collections::HashMap;

use monitor_core::settings::{Quorum, SinkSettings, TargetVerdicts, VerdictSettings};

/// How one target's reports become verdicts, state and incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Regions that must report a slot down for it to be down.
    pub quorum: Quorum,
    /// Consecutive down verdicts before the target is down.
    pub down_after: u32,
    /// Consecutive up verdicts before it is up again.
    pub up_after: u32,
    /// A slot is final once a report this many periods newer has arrived.
    pub grace_periods: u32,
    /// A region silent this many periods is no longer expected.
    pub region_window_periods: u32,
    /// A certificate expiring within this many microseconds of a check is a warning.
    pub cert_warning_us: i64,
}

impl Policy {
    /// The defaults of `[sink.verdicts]`.
    pub fn from_settings(settings: &VerdictSettings) -> Policy {
        Policy {
            quorum: settings.quorum,
            down_after: settings.down_after,
            up_after: settings.up_after,
            grace_periods: settings.grace_periods,
            region_window_periods: settings.region_window_periods,
            cert_warning_us: i64::try_from(settings.cert_warning.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// This policy with a target's own settings over it.
    pub fn overridden(mut self, target: &TargetVerdicts) -> Policy {
        self.quorum = target.quorum.unwrap_or(self.quorum);
        self.down_after = target.down_after.unwrap_or(self.down_after);
        self.up_after = target.up_after.unwrap_or(self.up_after);
        self
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_settings(&VerdictSettings::default())
    }
}

/// Every target's policy: the default, and those of targets with settings of their own.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    default: Policy,
    by_target: HashMap<String, Policy>,
}

impl Policies {
    /// The policies of the sink's settings.
    pub fn from_settings(settings: &SinkSettings) -> Policies {
        let default = Policy::from_settings(&settings.sink.verdicts);
        let by_target = settings
            .targets
            .iter()
            .filter(|t| t.verdicts != TargetVerdicts::default())
            .map(|t| (t.id.clone(), default.overridden(&t.verdicts)))
            .collect();
        Policies { default, by_target }
    }

    /// Every target under `default`.
    pub fn uniform(default: Policy) -> Policies {
        Policies {
            default,
            by_target: HashMap::new(),
        }
    }

    /// The policy of `target_id`.
    pub fn of(&self, target_id: &str) -> &Policy {
        self.by_target.get(target_id).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use monitor_core::settings::SettingsSource;

    use super::*;

    #[test]
    fn a_target_of_the_shared_file_takes_its_own_thresholds_and_the_rest_the_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("shared.toml");
        std::fs::write(
            &file,
            r#"
            [kafka]
            brokers = ["k:9092"]
            topic = "t"
            [database]
            url = "postgres://u@h/db"
            [sink.verdicts]
            quorum = "all"
            down_after = 5
            [[monitored_urls]]
            id = "shop"
            url = "https://shop.example/"
            quorum = 2
            up_after = 4
            # The checker's CA file: the sink never opens it.
            ca_file = "/nowhere/ca.pem"
            [[monitored_urls]]
            url = "https://plain.example/"
            "#,
        )
        .expect("write");
        let settings = SinkSettings::load(&SettingsSource {
            file: Some(file),
            env: Some(Default::default()),
            base_dir: Some(dir.path().to_path_buf()),
        })
        .expect("valid");
        let policies = Policies::from_settings(&settings);
        let shop = policies.of("shop");
        assert_eq!(shop.quorum, Quorum::AtLeast(2));
        assert_eq!((shop.down_after, shop.up_after), (5, 4));
        let other = policies.of("anything-else");
        assert_eq!(other.quorum, Quorum::All);
        assert_eq!((other.down_after, other.up_after), (5, 2));
    }

    #[test]
    fn bad_verdict_settings_are_reported_together_with_their_paths() {
        let env = [
            ("WEBMON__KAFKA__BROKERS", "k:9092"),
            ("WEBMON__KAFKA__TOPIC", "t"),
            ("WEBMON__DATABASE__URL", "postgres://u@h/db"),
            ("WEBMON__SINK__VERDICTS__QUORUM", "most"),
            ("WEBMON__SINK__VERDICTS__DOWN_AFTER", "0"),
            ("WEBMON__SINK__VERDICTS__REGION_WINDOW", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let err = SinkSettings::load(&SettingsSource {
            file: None,
            env: Some(env),
            base_dir: None,
        })
        .expect_err("invalid")
        .to_string();
        for path in [
            "sink.verdicts.quorum",
            "sink.verdicts.down_after",
            "sink.verdicts.region_window",
        ] {
            assert!(err.contains(path), "{path}: {err}");
        }
    }
}
