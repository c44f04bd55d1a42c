//! What the status page reads from the store, kept in memory and brought up to date by small
//! reads: the per-day verdict counts of the last [`DAYS`] days (`verdict_days`), the hours of
//! the last day with their response-time histograms (`verdict_hours`), each target's state
//! with its current hour's counts (`target_states`), the open incidents and the newest closed
//! ones. A full read happens at the first refresh, when the UTC day turns and every
//! [`RELOAD_EVERY`]; between them a refresh reads only the rows that can have changed: the
//! sink adds an hour to the rollups once a slot of a later hour is final, so per target from
//! the current hour the last refresh saw in its state (or the last [`RECENT_HOURS`], when
//! that is later), and refreshing costs the same whatever the page's 90 days hold. Every
//! refresh reads in one repeatable-read transaction, so the current hours and the rollups
//! never count an hour twice.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDate, NaiveTime, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool, Row};

use crate::verdicts::latency::BUCKETS;

/// Days of uptime bars.
pub const DAYS: usize = 90;
/// How often everything is read again, even within a day.
pub const RELOAD_EVERY: Duration = Duration::from_secs(3600);
/// Hours read again by every refresh: an hour is added to `verdict_hours` once a slot of a
/// later one is final, a grace period after it ends, so the hour before the current one
/// fills during the current one.
pub const RECENT_HOURS: i64 = 2;
/// Most closed incidents kept for the history.
pub const MAX_HISTORY: i64 = 200;

/// Final slots by verdict: up, degraded, down, unknown, and in maintenance.
pub type Counts = [i64; 5];

/// One hour: its counts and its up checks' response times by bucket.
#[derive(Debug, Clone, Default)]
pub struct Hour {
    /// Its verdict counts.
    pub counts: Counts,
    /// Response times by bucket ([`crate::verdicts::latency`]).
    pub response: Vec<u64>,
}

/// A target's state as stored.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// `up`, `down`, `degraded` or `unknown`.
    pub state: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// The certificate's expiry.
    pub cert_not_after: Option<DateTime<Utc>>,
    /// The current hour, not in `verdict_hours` yet, and its counts.
    pub hour: Option<(DateTime<Utc>, Counts)>,
}

/// An incident as the page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentRow {
    /// Its target.
    pub target_id: String,
    /// `down` or `degraded`.
    pub kind: String,
    /// Its first failing slot.
    pub opened_at: DateTime<Utc>,
    /// Its first good slot, once closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Whether it opened in a maintenance window.
    pub maintenance: bool,
    /// The failure class seen most.
    pub cause: Option<String>,
}

/// The store's rows the page is made of.
#[derive(Debug, Default)]
pub struct Rollups {
    /// When and for which day everything was last read.
    full: Option<(Instant, NaiveDate)>,
    /// Per target, the counts of each day.
    pub days: HashMap<String, BTreeMap<NaiveDate, Counts>>,
    /// Per target, the hours of the last day.
    pub hours: HashMap<String, BTreeMap<DateTime<Utc>, Hour>>,
    /// Per target, its state.
    pub states: HashMap<String, StateRow>,
    /// Open incidents, newest first.
    pub open: Vec<IncidentRow>,
    /// Closed incidents, newest first, at most [`MAX_HISTORY`].
    pub history: Vec<IncidentRow>,
}

/// The start of `now`'s hour.
pub fn hour_of(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now)
}

impl Rollups {
    /// Brings the rows of `targets` up to date at `now`.
    pub async fn refresh(
        &mut self,
        pool: &PgPool,
        targets: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let today = now.date_naive();
        let first_day = today - TimeDelta::days(DAYS as i64 - 1);
        let first_hour = hour_of(now) - TimeDelta::hours(23);
        let full = self
            .full
            .is_none_or(|(at, day)| day != today || at.elapsed() >= RELOAD_EVERY);
        if full {
            self.days.clear();
            self.hours.clear();
        }
        // Hours are added to the rollups from each target's current hour on (when a later one
        // is final), so what can have changed since the last refresh starts at the current
        // hour it read, or sooner when recent.
        let recent = hour_of(now) - TimeDelta::hours(RECENT_HOURS);
        let oldest = first_day.and_time(NaiveTime::MIN).and_utc();
        let from: Vec<DateTime<Utc>> = targets
            .iter()
            .map(|id| {
                let current = self.states.get(id).and_then(|s| s.hour).map(|(h, _)| h);
                match current {
                    Some(h) if !full => h.min(recent).max(oldest),
                    _ => oldest,
                }
            })
            .collect();
        // One snapshot of the database, so the current hours and the rollups agree.
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        self.read_days(&mut tx, targets, &from).await?;
        self.read_hours(&mut tx, targets, &from).await?;
        self.forget_before(first_day, first_hour);
        self.read_states(&mut tx, targets).await?;
        self.read_incidents(&mut tx, targets, now).await?;
        tx.commit().await?;
        if full {
            self.full = Some((Instant::now(), today));
        }
        Ok(())
    }

    /// Reads each target's days from the day of its `from`.
    async fn read_days(
        &mut self,
        conn: &mut PgConnection,
        targets: &[String],
        from: &[DateTime<Utc>],
    ) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT target_id, day, {COUNTS} FROM verdict_days {PUBLIC_FROM} \
             WHERE day >= (public.since AT TIME ZONE 'UTC')::date"
        ))
        .bind(targets)
        .bind(from)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let counts = counts_of(&r)?;
            let days = self.days.entry(r.try_get("target_id")?).or_default();
            days.insert(r.try_get("day")?, counts);
        }
        Ok(())
    }

    /// Reads each target's hours from its `from`.
    async fn read_hours(
        &mut self,
        conn: &mut PgConnection,
        targets: &[String],
        from: &[DateTime<Utc>],
    ) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT target_id, hour, {COUNTS}, response::text AS response FROM verdict_hours \
             {PUBLIC_FROM} WHERE hour >= public.since"
        ))
        .bind(targets)
        .bind(from)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let counts = counts_of(&r)?;
            let response: Option<String> = r.try_get("response")?;
            let response = buckets(response.as_deref().unwrap_or_default());
            let hours = self.hours.entry(r.try_get("target_id")?).or_default();
            hours.insert(r.try_get("hour")?, Hour { counts, response });
        }
        Ok(())
    }

    /// Drops the days and hours that fell out of the page's windows.
    fn forget_before(&mut self, first_day: NaiveDate, first_hour: DateTime<Utc>) {
        for days in self.days.values_mut() {
            days.retain(|day, _| *day >= first_day);
        }
        for hours in self.hours.values_mut() {
            hours.retain(|hour, _| *hour >= first_hour);
        }
    }

    async fn read_states(
        &mut self,
        conn: &mut PgConnection,
        targets: &[String],
    ) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT target_id, state, since, cert_not_after, hour, hour_up::int8 AS up, \
               hour_degraded::int8 AS degraded, hour_down::int8 AS down, \
               hour_unknown::int8 AS unknown, hour_maintenance::int8 AS maintenance \
             FROM target_states {PUBLIC}"
        ))
        .bind(targets)
        .fetch_all(&mut *conn)
        .await?;
        self.states.clear();
        for r in rows {
            let hour: Option<DateTime<Utc>> = r.try_get("hour")?;
            let counts = counts_of(&r)?;
            let state = StateRow {
                state: r.try_get("state")?,
                since: r.try_get("since")?,
                cert_not_after: r.try_get("cert_not_after")?,
                hour: hour.map(|h| (h, counts)),
            };
            self.states.insert(r.try_get("target_id")?, state);
        }
        Ok(())
    }

    async fn read_incidents(
        &mut self,
        conn: &mut PgConnection,
        targets: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        const COLUMNS: &str = "SELECT target_id, kind, opened_at, closed_at, maintenance, \
            cause_class FROM incidents JOIN UNNEST($1::text[]) AS public(target_id) \
            USING (target_id)";
        let open = sqlx::query(&format!(
            "{COLUMNS} WHERE closed_at IS NULL ORDER BY opened_at DESC"
        ))
        .bind(targets)
        .fetch_all(&mut *conn)
        .await?;
        let history = sqlx::query(&format!(
            "{COLUMNS} WHERE closed_at >= $2 ORDER BY opened_at DESC LIMIT $3"
        ))
        .bind(targets)
        .bind(now - TimeDelta::days(DAYS as i64))
        .bind(MAX_HISTORY)
        .fetch_all(&mut *conn)
        .await?;
        self.open = open.iter().map(incident_of).collect::<Result<_, _>>()?;
        self.history = history.iter().map(incident_of).collect::<Result<_, _>>()?;
        Ok(())
    }
}

/// The counts of an `int4[]` read as text (`{0,3,1}`), at most [`BUCKETS`]: read as text,
/// since decoding arrays element by element was most of what reading a day of hours cost.
fn buckets(text: &str) -> Vec<u64> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .take(BUCKETS)
        .map(|n| n.trim().parse().unwrap_or(0))
        .collect()
}

/// The public targets as a relation to join (`$1`): a hash join, where `target_id = ANY($1)`
/// would compare every row with every public target.
const PUBLIC: &str = "JOIN UNNEST($1::text[]) AS public(target_id) USING (target_id)";

/// The public targets with the time each one's rows are read from (`$1`, `$2`), as the
/// relation `public(target_id, since)`.
const PUBLIC_FROM: &str = "JOIN UNNEST($1::text[], $2::timestamptz[]) AS public(target_id, since) \
    USING (target_id)";

/// The count columns as read, as `int8`.
const COUNTS: &str = "up::int8 AS up, degraded::int8 AS degraded, down::int8 AS down, \
    unknown::int8 AS unknown, maintenance::int8 AS maintenance";

/// The five count columns of a row read with [`COUNTS`].
fn counts_of(r: &sqlx::postgres::PgRow) -> Result<Counts, sqlx::Error> {
    let mut counts = Counts::default();
    for (n, column) in counts
        .iter_mut()
        .zip(["up", "degraded", "down", "unknown", "maintenance"])
    {
        *n = r.try_get(column)?;
    }
    Ok(counts)
}

fn incident_of(r: &sqlx::postgres::PgRow) -> Result<IncidentRow, sqlx::Error> {
    Ok(IncidentRow {
        target_id: r.try_get("target_id")?,
        kind: r.try_get("kind")?,
        opened_at: r.try_get("opened_at")?,
        closed_at: r.try_get("closed_at")?,
        maintenance: r.try_get("maintenance")?,
        cause: r.try_get("cause_class")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_read_as_text_keep_their_buckets() {
        assert_eq!(buckets("{0,3,1}"), vec![0, 3, 1]);
        assert_eq!(buckets("{}"), vec![0]);
        assert_eq!(buckets(""), vec![0]);
        assert_eq!(
            buckets(&format!("{{{}}}", vec!["1"; 100].join(","))).len(),
            BUCKETS
        );
    }
}
