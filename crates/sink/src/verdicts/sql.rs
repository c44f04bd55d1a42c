//! The statements of the fold inside a batch's transaction: the batch's targets' states read
//! `FOR UPDATE` (in target order, so two transactions cannot deadlock) and written back, the
//! incidents that changed, and the verdicts counted per target and hour.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tracing::warn;
use uuid::Uuid;

use super::state::{to_time, Incident, TargetState};
use crate::error::SinkError;

/// The stored states of `targets` (sorted), locked until the transaction ends. A state this
/// sink cannot read is logged and started afresh rather than stopping the partition.
pub(super) async fn load_states(
    conn: &mut PgConnection,
    targets: &[&str],
) -> Result<BTreeMap<String, TargetState>, SinkError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT target_id, fold FROM target_states WHERE target_id = ANY($1) \
         ORDER BY target_id FOR UPDATE",
    )
    .bind(targets)
    .fetch_all(&mut *conn)
    .await?;
    let mut states = BTreeMap::new();
    for (target_id, fold) in rows {
        let state = serde_json::from_str(&fold).unwrap_or_else(|e| {
            warn!(target_id, error = %e, "the stored state of this target cannot be read; starting it afresh");
            TargetState::default()
        });
        states.insert(target_id, state);
    }
    Ok(states)
}

/// Writes `states` back: the fold as JSON text and its current values as columns.
pub(super) async fn save_states(
    conn: &mut PgConnection,
    states: &BTreeMap<String, TargetState>,
) -> Result<(), SinkError> {
    let n = states.len();
    let mut c = StateColumns::with_capacity(n);
    for (target_id, s) in states {
        c.push(target_id, s)?;
    }
    sqlx::query(
        "INSERT INTO target_states (target_id, state, since, watermark, last_final, \
           open_incident, cert_not_after, cert_warning, silent_regions, hour, hour_up, \
           hour_degraded, hour_down, hour_unknown, fold) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
           $5::timestamptz[], $6::uuid[], $7::timestamptz[], $8::bool[], $9::int4[], \
           $10::timestamptz[], $11::int4[], $12::int4[], $13::int4[], $14::int4[], $15::text[]) \
         ON CONFLICT (target_id) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since, \
           watermark = EXCLUDED.watermark, last_final = EXCLUDED.last_final, \
           open_incident = EXCLUDED.open_incident, cert_not_after = EXCLUDED.cert_not_after, \
           cert_warning = EXCLUDED.cert_warning, silent_regions = EXCLUDED.silent_regions, \
           hour = EXCLUDED.hour, hour_up = EXCLUDED.hour_up, \
           hour_degraded = EXCLUDED.hour_degraded, hour_down = EXCLUDED.hour_down, \
           hour_unknown = EXCLUDED.hour_unknown, fold = EXCLUDED.fold, updated_at = now()",
    )
    .bind(&c.target_id)
    .bind(&c.state)
    .bind(&c.since)
    .bind(&c.watermark)
    .bind(&c.last_final)
    .bind(&c.open_incident)
    .bind(&c.cert_not_after)
    .bind(&c.cert_warning)
    .bind(&c.silent_regions)
    .bind(&c.hour)
    .bind(&c.hour_counts[0])
    .bind(&c.hour_counts[1])
    .bind(&c.hour_counts[2])
    .bind(&c.hour_counts[3])
    .bind(&c.fold)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The states as one array per column, for `UNNEST`.
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
    /// The current hour's counts: up, degraded, down, unknown.
    hour_counts: [Vec<i32>; 4],
    fold: Vec<String>,
}

impl StateColumns {
    fn with_capacity(n: usize) -> StateColumns {
        StateColumns {
            target_id: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            since: Vec::with_capacity(n),
            watermark: Vec::with_capacity(n),
            last_final: Vec::with_capacity(n),
            open_incident: Vec::with_capacity(n),
            cert_not_after: Vec::with_capacity(n),
            cert_warning: Vec::with_capacity(n),
            silent_regions: Vec::with_capacity(n),
            hour: Vec::with_capacity(n),
            hour_counts: std::array::from_fn(|_| Vec::with_capacity(n)),
            fold: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, target_id: &str, s: &TargetState) -> Result<(), SinkError> {
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
        self.hour.push(s.hour.map(|h| to_time(h.hour)));
        let counts = s.hour.map_or([0; 4], |h| h.counts);
        for (column, n) in self.hour_counts.iter_mut().zip(counts) {
            column.push(i32::try_from(n).unwrap_or(i32::MAX));
        }
        self.fold.push(fold);
        Ok(())
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
           cause_class, cause_error, regions, checks_failed) \
         SELECT x.incident_id, x.target_id, x.kind, x.opened_at, x.detected_at, x.closed_at, \
           x.cause_class, x.cause_error, \
           ARRAY(SELECT jsonb_array_elements_text(x.regions)), x.checks_failed \
         FROM jsonb_to_recordset($1::jsonb) AS x(incident_id uuid, target_id text, kind text, \
           opened_at timestamptz, detected_at timestamptz, closed_at timestamptz, \
           cause_class text, cause_error text, regions jsonb, checks_failed int4) \
         ON CONFLICT (incident_id) DO UPDATE SET closed_at = EXCLUDED.closed_at, \
           cause_class = EXCLUDED.cause_class, cause_error = EXCLUDED.cause_error, \
           regions = EXCLUDED.regions, checks_failed = EXCLUDED.checks_failed",
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
    })
}

/// Final slots by verdict (up, degraded, down, unknown), per target and hour.
pub(super) type VerdictCounts = BTreeMap<(String, i64), [i32; 4]>;

/// Adds `counts` to `verdict_hours`.
pub(super) async fn add_verdicts(
    conn: &mut PgConnection,
    counts: &VerdictCounts,
) -> Result<(), SinkError> {
    if counts.is_empty() {
        return Ok(());
    }
    let n = counts.len();
    let (mut targets, mut hours) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut by_verdict: [Vec<i32>; 4] = Default::default();
    for ((target, hour), c) in counts {
        targets.push(target.as_str());
        hours.push(to_time(*hour));
        for (column, count) in by_verdict.iter_mut().zip(c) {
            column.push(*count);
        }
    }
    let [up, degraded, down, unknown] = by_verdict;
    sqlx::query(
        "INSERT INTO verdict_hours (target_id, hour, up, degraded, down, unknown) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::int4[], $4::int4[], \
           $5::int4[], $6::int4[]) \
         ON CONFLICT (target_id, hour) DO UPDATE SET up = verdict_hours.up + EXCLUDED.up, \
           degraded = verdict_hours.degraded + EXCLUDED.degraded, \
           down = verdict_hours.down + EXCLUDED.down, \
           unknown = verdict_hours.unknown + EXCLUDED.unknown",
    )
    .bind(&targets)
    .bind(&hours)
    .bind(&up)
    .bind(&degraded)
    .bind(&down)
    .bind(&unknown)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Most rows one `DELETE` of [`prune_before`] removes, so pruning a year of 100,000 targets
/// never holds locks or a transaction for long.
pub const PRUNE_BATCH: i64 = 10_000;

/// What [`prune_before`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows of `verdict_hours`.
    pub hours: u64,
    /// Closed incidents and degraded periods.
    pub incidents: u64,
}

/// Deletes the verdict hours before `cutoff` and the incidents closed before it, in
/// statements of at most [`PRUNE_BATCH`] rows. Open incidents are kept however old.
pub async fn prune_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<Pruned, SinkError> {
    const HOURS: &str = "DELETE FROM verdict_hours WHERE ctid = ANY(ARRAY(\
        SELECT ctid FROM verdict_hours WHERE hour < $1 LIMIT $2))";
    const CLOSED: &str = "DELETE FROM incidents WHERE ctid = ANY(ARRAY(\
        SELECT ctid FROM incidents WHERE closed_at < $1 LIMIT $2))";
    Ok(Pruned {
        hours: delete_in_batches(pool, HOURS, cutoff).await?,
        incidents: delete_in_batches(pool, CLOSED, cutoff).await?,
    })
}

async fn delete_in_batches(
    pool: &PgPool,
    statement: &str,
    cutoff: DateTime<Utc>,
) -> Result<u64, SinkError> {
    let mut deleted = 0;
    loop {
        let n = sqlx::query(statement)
            .bind(cutoff)
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}
