//! [`Policy`]: a target's verdict settings as the fold uses them, and [`Policies`], every
//! target's, from the sink's settings: the `[sink.verdicts]` defaults, overridden by what a
//! `monitored_urls` entry of the same file sets for its target, and the maintenance windows
//! ([`Windows`]) that apply to it by id or by its labels.

use std::collections::HashMap;
use std::sync::Arc;

use monitor_core::settings::{
    Labels, MaintenanceWindow, Quorum, SinkSettings, TargetSettings, TargetVerdicts,
    VerdictSettings,
};

use super::state::{to_time, Micros};

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

/// The maintenance windows that apply to one target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Windows<'a>(&'a [Arc<MaintenanceWindow>]);

impl Windows<'_> {
    /// No window.
    pub const NONE: Windows<'static> = Windows(&[]);

    /// These windows.
    pub fn new(windows: &[Arc<MaintenanceWindow>]) -> Windows<'_> {
        Windows(windows)
    }

    /// Whether the slot starting at `slot` is in one of the windows.
    pub fn covers(&self, slot: Micros) -> bool {
        !self.0.is_empty() && self.0.iter().any(|w| w.covers(to_time(slot)))
    }
}

/// Every target's policy: the default, and those of targets with settings of their own; and
/// every target's maintenance windows.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    default: Policy,
    by_target: HashMap<String, Policy>,
    /// Windows of the targets the settings name (in `monitored_urls` or a window's `targets`).
    windows: HashMap<String, Vec<Arc<MaintenanceWindow>>>,
    /// Windows of any other target: those whose selector matches a target without labels.
    windows_of_others: Vec<Arc<MaintenanceWindow>>,
}

impl Policies {
    /// The policies of the sink's settings.
    pub fn from_settings(settings: &SinkSettings) -> Policies {
        Policies::of_targets(settings, &settings.targets)
    }

    /// The policies of the sink's settings for `targets`.
    pub fn of_targets(settings: &SinkSettings, targets: &[TargetSettings]) -> Policies {
        let default = Policy::from_settings(&settings.sink.verdicts);
        let by_target = targets
            .iter()
            .filter(|t| t.verdicts != TargetVerdicts::default())
            .map(|t| (t.id.clone(), default.overridden(&t.verdicts)))
            .collect();
        let all: Vec<Arc<MaintenanceWindow>> = settings
            .sink
            .maintenance
            .iter()
            .cloned()
            .map(Arc::new)
            .collect();
        let no_labels = Labels::new();
        let mut labels: HashMap<&str, &Labels> =
            targets.iter().map(|t| (t.id.as_str(), &t.labels)).collect();
        for id in all.iter().flat_map(|w| &w.targets) {
            labels.entry(id.as_str()).or_insert(&no_labels);
        }
        let windows = labels
            .into_iter()
            .map(|(id, l)| (id.to_string(), windows_of(&all, id, l)))
            .filter(|(_, w)| !w.is_empty())
            .collect();
        let windows_of_others = windows_of(&all, "", &no_labels);
        Policies {
            default,
            by_target,
            windows,
            windows_of_others,
        }
    }

    /// Every target under `default`.
    pub fn uniform(default: Policy) -> Policies {
        Policies {
            default,
            ..Policies::default()
        }
    }

    /// The policy of `target_id`.
    pub fn of(&self, target_id: &str) -> &Policy {
        self.by_target.get(target_id).unwrap_or(&self.default)
    }

    /// The maintenance windows of `target_id`.
    pub fn windows_of(&self, target_id: &str) -> Windows<'_> {
        Windows(
            self.windows
                .get(target_id)
                .unwrap_or(&self.windows_of_others),
        )
    }
}

/// The windows of `all` that apply to the target `id` with `labels`.
fn windows_of(
    all: &[Arc<MaintenanceWindow>],
    id: &str,
    labels: &Labels,
) -> Vec<Arc<MaintenanceWindow>> {
    all.iter()
        .filter(|w| w.applies_to(id, labels))
        .cloned()
        .collect()
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
