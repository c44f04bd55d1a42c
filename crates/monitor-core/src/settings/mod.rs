//! Settings of both services, loaded once and validated before anything starts.
//!
//! A settings file (TOML, YAML or JSON, by extension) is merged with environment overrides
//! under the prefix [`ENV_PREFIX`] with `__` between levels: `WEBMON__KAFKA__TOPIC=reports`
//! sets `kafka.topic`. Both services can read one shared file holding every section; each
//! ignores the sections it does not use. The original Python service's `configs/config.json`
//! loads unchanged (JSON files are read as JSON5, which also accepts its trailing comma).
//!
//! Loading never stops at the first problem: every problem comes back at once, each naming
//! its path (`monitored_urls[2].timeout: 12s is not less than period 10s`).
//!
//! Children, in the order they build on each other: [`Problem`]s (what is wrong, and where),
//! units (durations and sizes), the walker over the merged tree, secrets and the source of the
//! tree, then one module per section (`kafka`, `database`, labels and selectors, maintenance
//! windows, how reports become verdicts, targets, the notification channels and where
//! notifications go) and each service's settings made of them (`checker`, `sink`).

mod problems;
mod units;
mod walk;

mod secret;
mod source;

mod api;
mod database;
mod kafka;
mod labels;
mod maintenance;
mod notify;
mod status;
mod verdicts;

mod target;

mod channels;

mod checker;
mod sink;

pub use api::{ApiSettings, ApiToken, Role, DEFAULT_HTTP_LISTEN, MAX_TOKENS, MIN_TOKEN_LEN};
pub use channels::{
    EmailSettings, PagerDutySettings, PagerDutySeverity, SlackSettings, SmtpTls,
    DEFAULT_SMTP_TIMEOUT, MAX_RECIPIENTS, MAX_SMTP_TIMEOUT, PAGERDUTY_EVENTS_URL,
};
pub use checker::{
    CheckerSection, CheckerSettings, ProducerSettings, Shard, DEFAULT_MAX_BODY_MEMORY,
};
pub use database::{DatabaseSettings, SslMode};
pub use kafka::{
    Compression, KafkaSettings, SaslMechanism, SaslSettings, TlsSettings, DEFAULT_PARTITIONS,
};
pub use labels::{LabelSelector, Labels, MAX_LABELS, MAX_LABEL_LEN};
pub use maintenance::{MaintenanceWindow, WindowTimes, MAX_ONE_OFF, MAX_WINDOWS};
pub use notify::{
    ChannelSettings, NotifySettings, Route, WebhookSettings, CHANNEL_KINDS,
    DEFAULT_CERTIFICATE_DAYS, DEFAULT_GIVE_UP_AFTER, DEFAULT_GROUP_MIN, DEFAULT_GROUP_WINDOW,
    DEFAULT_RATE_PER_MINUTE, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX, DEFAULT_WEBHOOK_TIMEOUT,
};
pub use problems::{ConfigError, Problem, Problems};
pub use secret::Secret;
pub use sink::{SinkSection, SinkSettings};
pub use source::{SettingsSource, ENV_PREFIX};
pub use status::{
    StatusSettings, DEFAULT_PAGE_REFRESH, DEFAULT_STATUS_TITLE, MAX_PAGE_REFRESH,
    MAX_STATUS_TITLE_CHARS, MIN_PAGE_REFRESH,
};
pub use target::{
    read_definition, Pattern, StatusSet, TargetSettings, ALWAYS_SECRET_HEADERS, DEFAULT_BODY_LIMIT,
    DEFAULT_MAX_REDIRECTS, DEFAULT_PERIOD, DEFAULT_TIMEOUT, MAX_BODY_LIMIT, MAX_NAME_LEN,
    MAX_PERIOD, MAX_TIMEOUT,
};
pub use units::{format_duration, format_size, parse_duration, parse_size, MAX_DURATION};
pub use verdicts::{
    Quorum, TargetVerdicts, VerdictSettings, DEFAULT_CERT_WARNING, DEFAULT_DOWN_AFTER,
    DEFAULT_GRACE_PERIODS, DEFAULT_REGION_WINDOW_PERIODS, DEFAULT_UP_AFTER,
    DEFAULT_VERDICT_RETENTION, MAX_REGIONS, MIN_VERDICT_RETENTION,
};
