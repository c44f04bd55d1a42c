//! Verdicts, state and incidents: what the reports of every region say about a target. The
//! store hands each transaction's newly inserted reports to [`Verdicts::fold`], which reads
//! their targets' states (locked), folds the reports in offset order, and writes the states,
//! the incidents and the verdict counts back in the same transaction as the rows and the
//! offset. Verdicts are counted per hour in the state and added to `verdict_hours` once per
//! target and hour, so a batch writes one row per target, not two. A duplicate report (a producer's retry) is not inserted, so it is not folded; a
//! transaction that does not commit (SIGKILL, a lost lease) leaves the states as they were.
//! With the fold a pure function of the reports ([`fold::apply`]), a restart, a partition
//! moved to another replica or a replay into an empty database give the same incidents.
//!
//! Notifications are written here too, as outbox rows in the same transaction (see
//! [`crate::notify`]): an incident opened or closed, and a certificate crossing a threshold of
//! `certificate_days` (remembered in the state, so each is written once per expiry). The
//! thresholds are measured from the check's slot, never the wall clock, so a replay writes
//! the same rows, and the outbox drops them as written already.
//!
//! ## Layout
//! - [`policy`]: each target's quorum and thresholds, from the settings.
//! - [`state`]: what the fold keeps per target, reads of a report, and says changed.
//! - [`fold`]: the fold itself, pure.
//! - [`latency`]: the up checks' response times per hour, as histograms.
//! - [`cache`]: the states this replica wrote last, so a batch need not read them again.
//! - [`notices`]: the notifications of what changed, as outbox rows.
//! - `sql`: the statements inside the batch's transaction.
//! - [`gauges`]: the state of every target as metrics, read from the tables.

pub mod fold;
pub mod latency;
pub mod policy;
pub mod state;

pub mod cache;
pub mod notices;
mod sql;

pub mod gauges;

use std::collections::BTreeMap;
use std::sync::Arc;

use monitor_core::report::Report;
use monitor_core::settings::{SinkSettings, TargetSettings};
use sqlx::PgConnection;
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use self::cache::{StateCache, Versioned};
use self::fold::apply;
use self::notices::notices;
use self::policy::Policies;
use self::sql::VerdictCounts;
pub use self::sql::{prune_before, Pruned, PRUNE_BATCH};
use self::state::{to_time, Change, Incident, ReportFacts, TargetState};
use crate::error::SinkError;
use crate::notify::outbox;
use crate::notify::routing::{OutboxRow, Routing};

/// What folding a transaction's reports did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Reports of slots already final: stored, and changing nothing.
    pub late: u64,
    /// Slots made final.
    pub verdicts: u64,
    /// Incidents and degraded periods opened.
    pub opened: u64,
    /// Incidents and degraded periods closed.
    pub closed: u64,
}

impl Folded {
    /// Adds what another fold did.
    pub fn add(&mut self, other: Folded) {
        self.late += other.late;
        self.verdicts += other.verdicts;
        self.opened += other.opened;
        self.closed += other.closed;
    }
}

/// What the fold judges and notifies by: each target's policy and maintenance windows, and
/// where its notifications go. Built from the settings file's targets and those made through
/// the API, and replaced when those change.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Each target's policy and windows.
    pub policies: Policies,
    /// Each target's name, labels and routes.
    pub routing: Routing,
}

impl Rules {
    /// The rules of the sink's settings for `targets` (the settings file's and the API's).
    pub fn of(settings: &SinkSettings, targets: &[TargetSettings]) -> Rules {
        Rules {
            policies: Policies::of_targets(settings, targets),
            routing: Routing::of_targets(settings, targets),
        }
    }
}

/// The fold of reports into verdicts, state and incidents, under each target's policy.
#[derive(Debug, Clone)]
pub struct Verdicts {
    /// The rules, as they stand when a batch is folded.
    rules: watch::Receiver<Arc<Rules>>,
    /// The states written by this replica's committed transactions.
    cache: Arc<StateCache>,
}

impl Default for Verdicts {
    /// The fold under the default policy, notifying nothing.
    fn default() -> Verdicts {
        Verdicts::new(Policies::default())
    }
}

/// The states a transaction wrote: handed back to [`Verdicts::remember`] once it committed.
#[derive(Debug, Default)]
pub struct Written(BTreeMap<String, Versioned>);

impl Verdicts {
    /// The fold under `policies`, notifying nothing.
    pub fn new(policies: Policies) -> Verdicts {
        Verdicts::following(
            watch::channel(Arc::new(Rules {
                policies,
                routing: Routing::default(),
            }))
            .1,
        )
    }

    /// The fold under the rules `rules` holds at each batch.
    pub fn following(rules: watch::Receiver<Arc<Rules>>) -> Verdicts {
        Verdicts {
            rules,
            cache: Arc::default(),
        }
    }

    /// Folds `reports` (newly inserted in this transaction, in offset order) into their
    /// targets' states, and writes what changed, in the transaction of `conn`. Once the
    /// transaction commits, hand the [`Written`] states to [`Verdicts::remember`].
    pub async fn fold(
        &self,
        conn: &mut PgConnection,
        reports: &[&Report],
    ) -> Result<(Folded, Written), SinkError> {
        if reports.is_empty() {
            return Ok((Folded::default(), Written::default()));
        }
        let mut targets: Vec<&str> = reports.iter().map(|r| r.target_id.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        let (mut states, missing) = self.cache.take(&targets);
        if !missing.is_empty() {
            states.extend(sql::load_states(conn, &missing).await?);
        }
        let rules = self.rules.borrow().clone();
        let mut effects = Effects::default();
        for report in reports {
            let facts = ReportFacts::of(report);
            let state = &mut states.entry(report.target_id.clone()).or_default().state;
            let policy = rules.policies.of(&report.target_id);
            let windows = rules.policies.windows_of(&report.target_id);
            let changes = apply(state, &facts, policy, windows);
            if rules.routing.is_active() {
                notices(&rules.routing, report, state, &changes, &mut effects.outbox);
            }
            effects.record(&report.target_id, changes);
        }
        sql::save_states(conn, &mut states).await?;
        sql::upsert_incidents(conn, &effects.incidents).await?;
        sql::add_verdicts(conn, &effects.counts).await?;
        outbox::insert(conn, &effects.outbox).await?;
        Ok((effects.folded, Written(states)))
    }

    /// Keeps the states of a committed transaction for the next batches of their targets.
    pub fn remember(&self, written: Written) {
        self.cache.put(written.0);
    }
}

/// What a transaction's changes come to: the incidents as they stand after it, the verdicts
/// counted, and the counts of [`Folded`].
#[derive(Debug, Default)]
struct Effects {
    incidents: BTreeMap<Uuid, Incident>,
    counts: VerdictCounts,
    folded: Folded,
    outbox: Vec<OutboxRow>,
}

impl Effects {
    fn record(&mut self, target_id: &str, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Verdict { .. } => self.folded.verdicts += 1,
                Change::HourCounted(done) => {
                    let row = self.counts.entry((target_id.to_string(), done.hour));
                    row.or_default().add(&done);
                }
                Change::Opened(i) => {
                    self.folded.opened += 1;
                    self.incidents.insert(i.id, i);
                }
                Change::Updated(i) => {
                    self.incidents.insert(i.id, i);
                }
                Change::Closed(i) => {
                    self.folded.closed += 1;
                    self.incidents.insert(i.id, i);
                }
                Change::MaintenanceOver(i) => {
                    info!(target_id, incident = %i.id, "an incident opened in a maintenance window outlasted it");
                    self.incidents.insert(i.id, i);
                }
                Change::Late { .. } => self.folded.late += 1,
                other => log(target_id, &other),
            }
        }
    }
}

/// Logs a change people watch for: state, regions, certificates.
fn log(target_id: &str, change: &Change) {
    match change {
        Change::State { from, to, at } => {
            info!(target_id, from = from.as_str(), to = to.as_str(), at = %to_time(*at), "target state changed");
        }
        Change::RegionSilent { region } => {
            warn!(
                target_id,
                region, "a region stopped reporting this target: no longer expected"
            );
        }
        Change::RegionBack { region } => {
            info!(
                target_id,
                region, "a silent region reports this target again"
            );
        }
        Change::CertWarning { not_after, warning } => {
            info!(target_id, warning, not_after = %to_time(*not_after), "certificate warning");
        }
        _ => {}
    }
}

/// The state of `target_id` as stored, for tests and tools.
pub async fn stored_state(
    conn: &mut PgConnection,
    target_id: &str,
) -> Result<Option<TargetState>, SinkError> {
    Ok(sql::load_states(conn, &[target_id])
        .await?
        .remove(target_id)
        .map(|v| v.state))
}
