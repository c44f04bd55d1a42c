//! The series of the reports: what every report of a target from one checker repeats (URL,
//! checker, topic, pattern, timeout, period, certificate expiry), stored once in `series` and
//! named in each stored report by a 4-byte id.
//!
//! The store keeps the ids it has written in a [`SeriesCache`], so a batch of known series
//! costs no statement at all; a new series (and its target) is inserted in the transaction of
//! its first report. Its id joins the cache only once that transaction commits, so a rolled
//! back batch never leaves the cache naming a series the database does not hold. The foreign
//! key to `targets` is checked once per series, not once per report. The cache holds a 16-byte
//! digest of each series and target, not their texts (a URL may be 8 KiB), and forgets
//! everything past [`MAX_KNOWN`] entries, so its memory is bounded whatever the reports say;
//! what it forgot costs one statement per batch until it is known again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use sha2::{Digest as _, Sha256};
use sqlx::{Postgres, Transaction};

use super::text::storable_text;
use crate::error::SinkError;

/// A series as stored: its fields, text as PostgreSQL holds it, numbers as their bits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SeriesFields {
    target_id: String,
    url: String,
    checker_id: String,
    topic: String,
    regexp: Option<String>,
    timeout_bits: u64,
    period_bits: u64,
    tls_cert_not_after: Option<DateTime<Utc>>,
}

impl SeriesFields {
    /// The series of `report`, read from `topic`.
    pub fn of(report: &Report, topic: &str) -> SeriesFields {
        SeriesFields {
            target_id: storable_text(&report.target_id).into_owned(),
            url: storable_text(&report.url).into_owned(),
            checker_id: storable_text(&report.checker_id).into_owned(),
            topic: storable_text(topic).into_owned(),
            regexp: report
                .regexp
                .as_deref()
                .map(|t| storable_text(t).into_owned()),
            timeout_bits: report.timeout_s.to_bits(),
            period_bits: report.period_s.to_bits(),
            tls_cert_not_after: report.tls_cert_not_after,
        }
    }

    /// The cache's key of this series.
    fn key(&self) -> Key {
        let cert = self
            .tls_cert_not_after
            .map(|t| t.timestamp_micros().to_be_bytes());
        key_of(&[
            Some(self.target_id.as_bytes()),
            Some(self.url.as_bytes()),
            Some(self.checker_id.as_bytes()),
            Some(self.topic.as_bytes()),
            self.regexp.as_deref().map(str::as_bytes),
            Some(&self.timeout_bits.to_be_bytes()),
            Some(&self.period_bits.to_be_bytes()),
            cert.as_ref().map(|c| c.as_slice()),
        ])
    }

    /// The checker id as stored.
    pub fn checker_id(&self) -> &str {
        &self.checker_id
    }

    /// The target id as stored.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }
}

/// Most series and targets the cache holds (each ~30 bytes with the map's overhead: ~30 MiB
/// at most); past it, it starts again empty.
pub const MAX_KNOWN: usize = 1 << 20;

/// What the cache keys series and targets by: the first 16 bytes of the SHA-256 of their
/// fields, each text after its length.
type Key = [u8; 16];

/// The key of `parts` (`None` marked apart from every text).
fn key_of(parts: &[Option<&[u8]>]) -> Key {
    let mut hash = Sha256::new();
    for part in parts {
        match part {
            Some(bytes) => {
                hash.update([1]);
                hash.update((bytes.len() as u64).to_be_bytes());
                hash.update(bytes);
            }
            None => hash.update([0]),
        }
    }
    let mut key = [0; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    key
}

/// The key of a target id.
fn target_key(target_id: &str) -> Key {
    key_of(&[Some(target_id.as_bytes())])
}

/// The series ids and targets this replica knows to be stored.
#[derive(Debug, Default)]
pub(super) struct SeriesCache {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    series: HashMap<Key, i32>,
    targets: HashSet<Key>,
}

/// Series and targets a transaction inserted (or found), to remember once it commits.
#[derive(Debug, Default)]
pub(super) struct NewSeries {
    series: Vec<(Key, i32)>,
    targets: Vec<Key>,
}

impl SeriesCache {
    /// Remembers what a committed transaction stored.
    pub fn remember(&self, new: NewSeries) {
        let mut known = self.lock();
        if known.series.len() + new.series.len() > MAX_KNOWN
            || known.targets.len() + new.targets.len() > MAX_KNOWN
        {
            *known = Known::default();
        }
        known.targets.extend(new.targets);
        known.series.extend(new.series);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The series id of each of `fields`, inserting the series (and targets) not known yet.
/// Returns the ids, in the order of `fields`, and what to remember after the commit.
pub(super) async fn resolve(
    tx: &mut Transaction<'_, Postgres>,
    cache: &SeriesCache,
    fields: &[SeriesFields],
) -> Result<(Vec<i32>, NewSeries), SinkError> {
    let mut ids = vec![0; fields.len()];
    // Unknown series, in a fixed order (two replicas inserting the same ones cannot deadlock),
    // with the reports that name them.
    let mut missing: BTreeMap<&SeriesFields, Vec<usize>> = BTreeMap::new();
    let keys: Vec<Key> = fields.iter().map(SeriesFields::key).collect();
    let new_targets: BTreeSet<&str> = {
        let known = cache.lock();
        for (i, (f, key)) in fields.iter().zip(&keys).enumerate() {
            match known.series.get(key) {
                Some(id) => ids[i] = *id,
                None => missing.entry(f).or_default().push(i),
            }
        }
        missing
            .keys()
            .map(|f| f.target_id.as_str())
            .filter(|t| !known.targets.contains(&target_key(t)))
            .collect()
    };
    if missing.is_empty() {
        return Ok((ids, NewSeries::default()));
    }
    let urls: BTreeMap<&str, &str> = missing
        .keys()
        .map(|f| (f.target_id.as_str(), f.url.as_str()))
        .filter(|(t, _)| new_targets.contains(t))
        .collect();
    insert_targets(tx, &urls).await?;
    let series: Vec<&SeriesFields> = missing.keys().copied().collect();
    let found = insert_series(tx, &series).await?;
    let mut new = NewSeries {
        series: Vec::with_capacity(series.len()),
        targets: urls.keys().map(|t| target_key(t)).collect(),
    };
    for (f, id) in series.iter().zip(found) {
        for i in &missing[f] {
            ids[*i] = id;
        }
        // The key computed above, from the first report naming the series.
        new.series.push((keys[missing[f][0]], id));
    }
    Ok((ids, new))
}

/// Inserts targets (id → URL), skipping stored ones, in the map's order.
async fn insert_targets(
    tx: &mut Transaction<'_, Postgres>,
    targets: &BTreeMap<&str, &str>,
) -> Result<(), SinkError> {
    if targets.is_empty() {
        return Ok(());
    }
    let (ids, urls): (Vec<&str>, Vec<&str>) = targets.iter().map(|(t, u)| (*t, *u)).unzip();
    sqlx::query(
        "INSERT INTO targets (target_id, url) SELECT * FROM UNNEST($1::text[], $2::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&urls)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts `series` (skipping stored ones) and returns their ids, in the order given. One
/// statement inserts the new ones and returns their ids with those of the stored ones (rather
/// than an insert, then a select computing every key again); a series another transaction
/// committed while it ran is not in that statement's snapshot, and is looked up again after it.
async fn insert_series(
    tx: &mut Transaction<'_, Postgres>,
    series: &[&SeriesFields],
) -> Result<Vec<i32>, SinkError> {
    let c = SeriesColumns::of(series);
    let rows: Vec<(i64, Option<i32>)> = bind(&c, INSERT_SERIES).fetch_all(&mut **tx).await?;
    let mut ids = vec![None; series.len()];
    place(&mut ids, rows);
    if ids.iter().any(Option::is_none) {
        let rows: Vec<(i64, Option<i32>)> = bind(&c, FIND_SERIES).fetch_all(&mut **tx).await?;
        place(&mut ids, rows);
    }
    // Every series was inserted or found just above, in this transaction.
    ids.into_iter()
        .collect::<Option<Vec<i32>>>()
        .ok_or_else(|| SinkError::Database(sqlx::Error::RowNotFound))
}

/// Inserts the series not stored yet; returns each one's position (from 1) and id, the id
/// NULL for a series stored by a transaction that committed while the statement ran.
const INSERT_SERIES: &str = "WITH u AS ( \
       SELECT u.*, series_key(u.t, u.u, u.c, u.k, u.r, u.o, u.p, u.e) AS key \
       FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::float8[], $7::float8[], $8::timestamptz[]) WITH ORDINALITY \
         AS u(t, u, c, k, r, o, p, e, n)), \
     ins AS ( \
       INSERT INTO series (target_id, url, checker_id, kafka_topic, regexp, timeout_s, \
         period_s, tls_cert_not_after) \
       SELECT t, u, c, k, r, o, p, e FROM u ORDER BY n \
       ON CONFLICT (key) DO NOTHING RETURNING series_id, key) \
     SELECT u.n, COALESCE(ins.series_id, s.series_id) FROM u \
     LEFT JOIN ins ON ins.key = u.key \
     LEFT JOIN series s ON s.key = u.key";

/// Each series' position (from 1) and id, for the series stored.
const FIND_SERIES: &str = "SELECT u.n, s.series_id \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
       $6::float8[], $7::float8[], $8::timestamptz[]) WITH ORDINALITY \
       AS u(t, u, c, k, r, o, p, e, n) \
     JOIN series s ON s.key = series_key(u.t, u.u, u.c, u.k, u.r, u.o, u.p, u.e)";

/// `statement` with the series' columns bound as $1..$8.
fn bind<'q>(
    c: &'q SeriesColumns<'q>,
    statement: &'q str,
) -> sqlx::query::QueryAs<'q, Postgres, (i64, Option<i32>), sqlx::postgres::PgArguments> {
    sqlx::query_as(statement)
        .bind(&c.target_id)
        .bind(&c.url)
        .bind(&c.checker_id)
        .bind(&c.topic)
        .bind(&c.regexp)
        .bind(&c.timeout_s)
        .bind(&c.period_s)
        .bind(&c.cert)
}

/// Puts each found id at its position (from 1).
fn place(ids: &mut [Option<i32>], rows: Vec<(i64, Option<i32>)>) {
    for (n, id) in rows {
        let slot = usize::try_from(n - 1).ok().and_then(|i| ids.get_mut(i));
        if let (Some(slot), Some(id)) = (slot, id) {
            *slot = Some(id);
        }
    }
}

/// The series as one array per column.
struct SeriesColumns<'a> {
    target_id: Vec<&'a str>,
    url: Vec<&'a str>,
    checker_id: Vec<&'a str>,
    topic: Vec<&'a str>,
    regexp: Vec<Option<&'a str>>,
    timeout_s: Vec<f64>,
    period_s: Vec<f64>,
    cert: Vec<Option<DateTime<Utc>>>,
}

impl<'a> SeriesColumns<'a> {
    fn of(series: &[&'a SeriesFields]) -> SeriesColumns<'a> {
        SeriesColumns {
            target_id: series.iter().map(|f| f.target_id.as_str()).collect(),
            url: series.iter().map(|f| f.url.as_str()).collect(),
            checker_id: series.iter().map(|f| f.checker_id.as_str()).collect(),
            topic: series.iter().map(|f| f.topic.as_str()).collect(),
            regexp: series.iter().map(|f| f.regexp.as_deref()).collect(),
            timeout_s: series
                .iter()
                .map(|f| f64::from_bits(f.timeout_bits))
                .collect(),
            period_s: series
                .iter()
                .map(|f| f64::from_bits(f.period_bits))
                .collect(),
            cert: series.iter().map(|f| f.tls_cert_not_after).collect(),
        }
    }
}
