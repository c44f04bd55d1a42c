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
//!
//! A series' key ([`SeriesFields::key`]) is computed here and stored as given: the bytes
//! `series_key()` in the database would digest, so a series stored before the sink computed
//! it has the same key. PostgreSQL computing it again for every new series (a generated
//! column) and matching the ids back by it cost more than the row itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use monitor_core::report::Report;
use sha2::{Digest as _, Sha256};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

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

    /// The key of this series: the first 16 bytes of the SHA-256 that the database's
    /// `series_key()` computes from the same values (each text after its length as 8 bytes
    /// big-endian; a pattern or a certificate expiry after a byte 1, or a byte 0 when there is
    /// none; the numbers as PostgreSQL sends them: float8 bits, and the expiry in microseconds
    /// since 2000-01-01, as bound).
    fn key(&self) -> Key {
        let mut hash = Sha256::new();
        for text in [&self.target_id, &self.url, &self.checker_id, &self.topic] {
            update_text(&mut hash, text);
        }
        match &self.regexp {
            Some(r) => {
                hash.update([1]);
                update_text(&mut hash, r);
            }
            None => hash.update([0]),
        }
        hash.update(self.timeout_bits.to_be_bytes());
        hash.update(self.period_bits.to_be_bytes());
        match self.tls_cert_not_after.and_then(postgres_micros) {
            Some(us) => {
                hash.update([1]);
                hash.update(us.to_be_bytes());
            }
            None => hash.update([0]),
        }
        first_16(hash)
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

/// What series and targets are known by: the first 16 bytes of a SHA-256 of their fields.
type Key = [u8; 16];

/// `text` as `series_key()` digests it: its length in bytes (8 bytes big-endian), then it.
fn update_text(hash: &mut Sha256, text: &str) {
    hash.update((text.len() as u64).to_be_bytes());
    hash.update(text.as_bytes());
}

fn first_16(hash: Sha256) -> Key {
    let mut key = [0; 16];
    key.copy_from_slice(&hash.finalize()[..16]);
    key
}

/// `at` as PostgreSQL stores a bound timestamptz: microseconds since 2000-01-01 UTC, the
/// nanoseconds truncated as the driver truncates them. `None` past ±292,000 years, which the
/// driver refuses to bind anyway.
fn postgres_micros(at: DateTime<Utc>) -> Option<i64> {
    let epoch = DateTime::<Utc>::from_timestamp(POSTGRES_EPOCH_UNIX_S, 0)?;
    (at - epoch).num_microseconds()
}

/// 2000-01-01T00:00:00Z in Unix seconds.
const POSTGRES_EPOCH_UNIX_S: i64 = 946_684_800;

/// The key of a target id.
fn target_key(target_id: &str) -> Key {
    let mut hash = Sha256::new();
    update_text(&mut hash, target_id);
    first_16(hash)
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
    // The key computed above, from the first report naming the series.
    let series_keys: Vec<Key> = missing.values().map(|at| keys[at[0]]).collect();
    let found = insert_series(tx, &series, &series_keys).await?;
    let mut new = NewSeries {
        series: Vec::with_capacity(series.len()),
        targets: urls.keys().map(|t| target_key(t)).collect(),
    };
    for ((at, key), id) in missing.values().zip(series_keys).zip(found) {
        for i in at {
            ids[*i] = id;
        }
        new.series.push((key, id));
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

/// Inserts `series` (skipping stored ones) and returns their ids, in the order given. `keys`
/// are their keys, in the same order. A series stored before, or by a transaction that
/// committed while the insert ran, is looked up by its key after it.
async fn insert_series(
    tx: &mut Transaction<'_, Postgres>,
    series: &[&SeriesFields],
    keys: &[Key],
) -> Result<Vec<i32>, SinkError> {
    let c = SeriesColumns::of(series, keys);
    let position: HashMap<Key, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut ids = vec![None; series.len()];
    let inserted: Vec<(Uuid, i32)> = bind(&c).fetch_all(&mut **tx).await?;
    place(&mut ids, &position, inserted);
    let stored: Vec<Uuid> = (ids.iter().zip(&c.key))
        .filter(|(id, _)| id.is_none())
        .map(|(_, key)| *key)
        .collect();
    if !stored.is_empty() {
        let found: Vec<(Uuid, i32)> = sqlx::query_as(FIND_SERIES)
            .bind(&stored)
            .fetch_all(&mut **tx)
            .await?;
        place(&mut ids, &position, found);
    }
    // Every series was inserted or found just above, in this transaction.
    ids.into_iter()
        .collect::<Option<Vec<i32>>>()
        .ok_or_else(|| SinkError::Database(sqlx::Error::RowNotFound))
}

/// Inserts the series not stored yet, in the order given; returns each inserted one's key and
/// id.
const INSERT_SERIES: &str = "INSERT INTO series (target_id, url, checker_id, kafka_topic, \
       regexp, timeout_s, period_s, tls_cert_not_after, key) \
     SELECT t, u, c, k, r, o, p, e, key \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
       $6::float8[], $7::float8[], $8::timestamptz[], $9::uuid[]) WITH ORDINALITY \
       AS u(t, u, c, k, r, o, p, e, key, n) \
     ORDER BY n \
     ON CONFLICT (key) DO NOTHING RETURNING key, series_id";

/// The key and id of each stored series among the keys $1.
const FIND_SERIES: &str = "SELECT key, series_id FROM series WHERE key = ANY($1::uuid[])";

/// The insert with the series' columns bound as $1..$9.
fn bind<'q>(
    c: &'q SeriesColumns<'q>,
) -> sqlx::query::QueryAs<'q, Postgres, (Uuid, i32), sqlx::postgres::PgArguments> {
    sqlx::query_as(INSERT_SERIES)
        .bind(&c.target_id)
        .bind(&c.url)
        .bind(&c.checker_id)
        .bind(&c.topic)
        .bind(&c.regexp)
        .bind(&c.timeout_s)
        .bind(&c.period_s)
        .bind(&c.cert)
        .bind(&c.key)
}

/// Puts each found id at its series' position.
fn place(ids: &mut [Option<i32>], position: &HashMap<Key, usize>, rows: Vec<(Uuid, i32)>) {
    for (key, id) in rows {
        if let Some(slot) = position.get(key.as_bytes()).and_then(|i| ids.get_mut(*i)) {
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
    key: Vec<Uuid>,
}

impl<'a> SeriesColumns<'a> {
    fn of(series: &[&'a SeriesFields], keys: &[Key]) -> SeriesColumns<'a> {
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
            key: keys.iter().map(|k| Uuid::from_bytes(*k)).collect(),
        }
    }
}
