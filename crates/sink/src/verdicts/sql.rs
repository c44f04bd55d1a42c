//! The statements of the fold inside a batch's transaction: the states of the batch's targets
//! that this replica does not hold in memory read, every state written back where its stored
//! version is still the one it was read or written with, the incidents that changed, and the
//! verdicts counted per target and hour.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tracing::warn;
use uuid::Uuid;

use super::cache::Versioned;
use super::latency::Histogram;
use super::state::{to_time, HourCounts, Incident, TargetState};
use crate::db::delete_in_batches;
use crate::error::SinkError;

/// The stored states of `targets`, with their versions. A state this sink cannot read is
/// logged and started afresh (keeping its version) rather than stopping the partition. Not
/// locked: the write checks the version instead.
pub(super) async fn load_states(
    conn: &mut PgConnection,
    targets: &[&str],
) -> Result<BTreeMap<String, Versioned>, SinkError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT target_id, fold, version FROM target_states WHERE target_id = ANY($1)",
    )
    .bind(targets)
    .fetch_all(&mut *conn)
    .await?;
    let mut states = BTreeMap::new();
    for (target_id, fold, version) in rows {
        let state = serde_json::from_str(&fold).unwrap_or_else(|e| {
            warn!(target_id, error = %e, "the stored state of this target cannot be read; starting it afresh");
            TargetState::default()
        });
        let version = Some(version);
        states.insert(target_id, Versioned { state, version });
    }
    Ok(states)
}

/// Writes `states` back, the fold as JSON text and its current values as columns: stored
/// ones where their version is unchanged, new ones where no row exists yet; each written
/// state's version is raised. Any state that was written by someone else meanwhile fails the
/// whole write with [`SinkError::StateConflict`].
pub(super) async fn save_states(
    conn: &mut PgConnection,
    states: &mut BTreeMap<String, Versioned>,
) -> Result<(), SinkError> {
    let (mut stored, mut new) = (StateColumns::default(), StateColumns::default());
    for (target_id, v) in states.iter() {
        match v.version {
            Some(version) => stored.push(target_id, &v.state, version)?,
            None => new.push(target_id, &v.state, 0)?,
        }
    }
    let mut written = 0;
    for (columns, statement) in [(stored, UPDATE_STATES), (new, INSERT_STATES)] {
        if !columns.target_id.is_empty() {
            let done = columns
                .bind(sqlx::query(statement))
                .execute(&mut *conn)
                .await?;
            written += done.rows_affected();
        }
    }
    if written != states.len() as u64 {
        return Err(SinkError::StateConflict {
            expected: states.len() as u64,
            written,
        });
    }
    for v in states.values_mut() {
        v.version = Some(v.version.map_or(1, |n| n + 1));
    }
    Ok(())
}

/// The states' columns as bound by [`StateColumns::bind`], as the relation `u`.
macro_rules! states_unnest {
    () => {
        " FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
           $5::timestamptz[], $6::uuid[], $7::timestamptz[], $8::bool[], $9::int4[], \
           $10::timestamptz[], $11::int4[], $12::int4[], $13::int4[], $14::int4[], \
           $15::int4[], $16::text[], $17::int8[]) AS u(target_id, state, since, watermark, \
           last_final, open_incident, cert_not_after, cert_warning, silent_regions, hour, \
           hour_up, hour_degraded, hour_down, hour_unknown, hour_maintenance, fold, version) "
    };
}

/// Updates stored states whose version is still `$17`.
const UPDATE_STATES: &str = concat!(
    "UPDATE target_states t SET (state, since, watermark, last_final, \
       open_incident, cert_not_after, cert_warning, silent_regions, hour, hour_up, \
       hour_degraded, hour_down, hour_unknown, hour_maintenance, fold, version, updated_at) = \
       (u.state, u.since, u.watermark, u.last_final, u.open_incident, u.cert_not_after, \
       u.cert_warning, u.silent_regions, u.hour, u.hour_up, u.hour_degraded, u.hour_down, \
       u.hour_unknown, u.hour_maintenance, u.fold, t.version + 1, now())",
    states_unnest!(),
    "WHERE t.target_id = u.target_id AND t.version = u.version"
);

/// Inserts states not stored yet, at version 1; a row that exists already is left alone
/// (and counted missing).
const INSERT_STATES: &str = concat!(
    "INSERT INTO target_states (target_id, state, since, watermark, \
       last_final, open_incident, cert_not_after, cert_warning, silent_regions, hour, hour_up, \
       hour_degraded, hour_down, hour_unknown, hour_maintenance, fold, version) \
     SELECT u.target_id, u.state, u.since, u.watermark, u.last_final, u.open_incident, \
       u.cert_not_after, u.cert_warning, u.silent_regions, u.hour, u.hour_up, \
       u.hour_degraded, u.hour_down, u.hour_unknown, u.hour_maintenance, u.fold, 1",
    states_unnest!(),
    "ON CONFLICT (target_id) DO NOTHING"
);

/// The states as one array per column, for `UNNEST`.
#[derive(Default)]
struct StateColumns {
    target_id: Vec<String>,
    state: Vec<&'static str>,
    since: Vec<Option<DateTime<Utc>>>,
    watermark: Vec<Option<DateTime<Utc>>>,
    last_final: Vec<Option<DateTime<Utc>>>,
    open_incident: Vec<Option<Uuid>>,
    cert_not_after: Vec<Option<DateTime<Utc>>>,
    cert_warning: Vec<bool>,
    silent_regions: Vec<i32>,
    hour: Vec<Option<DateTime<Utc>>>,
    /// The current hour's counts: up, degraded, down, unknown, maintenance.
    hour_counts: [Vec<i32>; 5],
    fold: Vec<String>,
    /// The version the state is stored with.
    version: Vec<i64>,
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl StateColumns {
    fn push(&mut self, target_id: &str, s: &TargetState, version: i64) -> Result<(), SinkError> {
        let fold = serde_json::to_string(s).map_err(|e| SinkError::State {
            target_id: target_id.to_string(),
            reason: e.to_string(),
        })?;
        self.target_id.push(target_id.to_string());
        self.state.push(s.state.as_str());
        self.since.push(s.since.map(to_time));
        self.watermark.push(s.watermark.map(to_time));
        self.last_final.push(s.last_final.map(to_time));
        self.open_incident.push(s.open.as_ref().map(|i| i.id));
        self.cert_not_after
            .push(s.cert.map(|c| to_time(c.not_after)));
        self.cert_warning.push(s.cert.is_some_and(|c| c.warning));
        self.silent_regions
            .push(i32::try_from(s.silent.len()).unwrap_or(i32::MAX));
        self.hour.push(s.hour.as_ref().map(|h| to_time(h.hour)));
        let counts = s.hour.as_ref().map_or([0; 5], |h| {
            let [u, g, d, k] = h.counts;
            [u, g, d, k, h.maintenance]
        });
        for (column, n) in self.hour_counts.iter_mut().zip(counts) {
            column.push(i32::try_from(n).unwrap_or(i32::MAX));
        }
        self.fold.push(fold);
        self.version.push(version);
        Ok(())
    }

    /// Binds the columns as `$1` to `$17`.
    fn bind(self, query: Query<'_>) -> Query<'_> {
        let [up, degraded, down, unknown, maintenance] = self.hour_counts;
        query
            .bind(self.target_id)
            .bind(self.state)
            .bind(self.since)
            .bind(self.watermark)
            .bind(self.last_final)
            .bind(self.open_incident)
            .bind(self.cert_not_after)
            .bind(self.cert_warning)
            .bind(self.silent_regions)
            .bind(self.hour)
            .bind(up)
            .bind(degraded)
            .bind(down)
            .bind(unknown)
            .bind(maintenance)
            .bind(self.fold)
            .bind(self.version)
    }
}

/// Writes `incidents` (each as it stands after the batch): new ones are inserted, known ones
/// take their new tally and closing time.
pub(super) async fn upsert_incidents(
    conn: &mut PgConnection,
    incidents: &BTreeMap<Uuid, Incident>,
) -> Result<(), SinkError> {
    if incidents.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = incidents.values().map(incident_row).collect();
    sqlx::query(
        "INSERT INTO incidents (incident_id, target_id, kind, opened_at, detected_at, closed_at, \
           cause_class, cause_error, regions, checks_failed, maintenance) \
         SELECT x.incident_id, x.target_id, x.kind, x.opened_at, x.detected_at, x.closed_at, \
           x.cause_class, x.cause_error, \
           ARRAY(SELECT jsonb_array_elements_text(x.regions)), x.checks_failed, x.maintenance \
         FROM jsonb_to_recordset($1::jsonb) AS x(incident_id uuid, target_id text, kind text, \
           opened_at timestamptz, detected_at timestamptz, closed_at timestamptz, \
           cause_class text, cause_error text, regions jsonb, checks_failed int4, \
           maintenance bool) \
         ON CONFLICT (incident_id) DO UPDATE SET closed_at = EXCLUDED.closed_at, \
           cause_class = EXCLUDED.cause_class, cause_error = EXCLUDED.cause_error, \
           regions = EXCLUDED.regions, checks_failed = EXCLUDED.checks_failed, \
           maintenance = EXCLUDED.maintenance",
    )
    .bind(serde_json::Value::Array(rows))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One incident as a row of `jsonb_to_recordset`.
fn incident_row(i: &Incident) -> serde_json::Value {
    let (class, error) = i.tally.dominant().unzip();
    serde_json::json!({
        "incident_id": i.id,
        "target_id": i.target_id,
        "kind": i.kind.as_str(),
        "opened_at": to_time(i.opened_at),
        "detected_at": to_time(i.detected_at),
        "closed_at": i.closed_at.map(to_time),
        "cause_class": class,
        "cause_error": error.flatten(),
        "regions": i.tally.regions,
        "checks_failed": i.tally.checks_failed,
        "maintenance": i.maintenance,
    })
}

/// One row of `verdict_hours` to add: final slots by verdict (up, degraded, down, unknown)
/// and in maintenance, and the up checks' response times.
#[derive(Debug, Default)]
pub(super) struct HourRow {
    counts: [i32; 5],
    response: Histogram,
}

impl HourRow {
    /// Adds an hour's counts.
    pub(super) fn add(&mut self, done: &HourCounts) {
        let all = done.counts.into_iter().chain([done.maintenance]);
        for (sum, n) in self.counts.iter_mut().zip(all) {
            *sum = sum.saturating_add(i32::try_from(n).unwrap_or(i32::MAX));
        }
        self.response.merge(&done.response);
    }
}

/// The rows of `verdict_hours` to add, per target and hour.
pub(super) type VerdictCounts = BTreeMap<(String, i64), HourRow>;

/// Adds `counts` to `verdict_hours`, and to `verdict_days` (the status page's per-day
/// rollups) in the same statement: both written only when an hour turns.
pub(super) async fn add_verdicts(
    conn: &mut PgConnection,
    counts: &VerdictCounts,
) -> Result<(), SinkError> {
    if counts.is_empty() {
        return Ok(());
    }
    let n = counts.len();
    let (mut targets, mut hours) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut responses = Vec::with_capacity(n);
    let mut by_verdict: [Vec<i32>; 5] = Default::default();
    for ((target, hour), row) in counts {
        targets.push(target.as_str());
        hours.push(to_time(*hour));
        for (column, count) in by_verdict.iter_mut().zip(row.counts) {
            column.push(count);
        }
        responses.push(array_literal(&row.response.to_dense()));
    }
    let [up, degraded, down, unknown, maintenance] = by_verdict;
    sqlx::query(ADD_VERDICTS)
        .bind(&targets)
        .bind(&hours)
        .bind(&up)
        .bind(&degraded)
        .bind(&down)
        .bind(&unknown)
        .bind(&maintenance)
        .bind(&responses)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Adds hours to `verdict_hours` (response histograms added bucket by bucket) and their
/// counts to their days in `verdict_days`.
const ADD_VERDICTS: &str = "WITH u AS (SELECT * FROM UNNEST($1::text[], $2::timestamptz[], \
       $3::int4[], $4::int4[], $5::int4[], $6::int4[], $7::int4[], $8::text[]) \
       AS u(target_id, hour, up, degraded, down, unknown, maintenance, response)), \
     h AS (INSERT INTO verdict_hours (target_id, hour, up, degraded, down, unknown, \
         maintenance, response) \
       SELECT target_id, hour, up, degraded, down, unknown, maintenance, \
         NULLIF(response, '{}')::int4[] FROM u \
       ON CONFLICT (target_id, hour) DO UPDATE SET up = verdict_hours.up + EXCLUDED.up, \
         degraded = verdict_hours.degraded + EXCLUDED.degraded, \
         down = verdict_hours.down + EXCLUDED.down, \
         unknown = verdict_hours.unknown + EXCLUDED.unknown, \
         maintenance = verdict_hours.maintenance + EXCLUDED.maintenance, \
         response = CASE WHEN verdict_hours.response IS NULL THEN EXCLUDED.response \
           WHEN EXCLUDED.response IS NULL THEN verdict_hours.response \
           ELSE ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) \
             FROM unnest(verdict_hours.response, EXCLUDED.response) AS x(a, b)) END) \
     INSERT INTO verdict_days (target_id, day, up, degraded, down, unknown, maintenance) \
     SELECT target_id, (hour AT TIME ZONE 'UTC')::date, sum(up), sum(degraded), sum(down), \
       sum(unknown), sum(maintenance) FROM u GROUP BY 1, 2 \
     ON CONFLICT (target_id, day) DO UPDATE SET up = verdict_days.up + EXCLUDED.up, \
       degraded = verdict_days.degraded + EXCLUDED.degraded, \
       down = verdict_days.down + EXCLUDED.down, \
       unknown = verdict_days.unknown + EXCLUDED.unknown, \
       maintenance = verdict_days.maintenance + EXCLUDED.maintenance";

/// An array of integers as PostgreSQL's literal (`{1,2,3}`).
fn array_literal(values: &[i32]) -> String {
    let items: Vec<String> = values.iter().map(i32::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// Most rows one `DELETE` of [`prune_before`] removes, so pruning a year of 100,000 targets
/// never holds locks or a transaction for long.
pub const PRUNE_BATCH: i64 = 10_000;

/// What [`prune_before`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of `verdict_hours`.
    pub hours: u64,
    /// Rows of `verdict_days` (days wholly before the cutoff).
    pub days: u64,
    /// Closed incidents and degraded periods.
    pub incidents: u64,
}

/// Deletes the verdict hours and days before `cutoff` and the incidents closed before it, in
/// statements of at most [`PRUNE_BATCH`] rows. Open incidents are kept however old.
pub async fn prune_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<Pruned, SinkError> {
    const HOURS: &str = "DELETE FROM verdict_hours WHERE ctid = ANY(ARRAY(\
        SELECT ctid FROM verdict_hours WHERE hour < $1 LIMIT $2))";
    const DAYS: &str = "DELETE FROM verdict_days WHERE ctid = ANY(ARRAY(\
        SELECT ctid FROM verdict_days WHERE day < ($1 AT TIME ZONE 'UTC')::date LIMIT $2))";
    const CLOSED: &str = "DELETE FROM incidents WHERE ctid = ANY(ARRAY(\
        SELECT ctid FROM incidents WHERE closed_at < $1 LIMIT $2))";
    Ok(Pruned {
        hours: delete_in_batches(pool, HOURS, cutoff, PRUNE_BATCH).await?,
        days: delete_in_batches(pool, DAYS, cutoff, PRUNE_BATCH).await?,
        incidents: delete_in_batches(pool, CLOSED, cutoff, PRUNE_BATCH).await?,
    })
}
