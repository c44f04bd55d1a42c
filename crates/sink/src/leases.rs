//! Partition ownership without consumer groups: a replica owns a partition while it holds a
//! PostgreSQL advisory lock on it, on one dedicated connection. If the replica dies, its
//! connection closes and PostgreSQL releases the locks, so the survivors take the partitions
//! over. Each replica also holds a membership lock in a numbered slot, so every replica can
//! count the live ones and take only its fair share. Advisory locks belong to one database, so
//! only the members in this database (and of this topic) are counted: several deployments may
//! share one PostgreSQL server.
//!
//! A replica that dies without closing its connection (a node crash, a network partition)
//! would keep its locks until the server noticed. The lock session therefore asks the server
//! to end it after [`lease_timeout`] without a query (`idle_session_timeout`; the coordinator
//! pings once per rebalance interval), with TCP keepalives and `tcp_user_timeout` for a
//! session cut mid-query. On the replica's side every lock operation is bounded by half that
//! time: a replica that cannot reach its lock session gives its partitions up before the
//! server hands them to another.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::db::{bound_session, tcp_bounds};
use crate::error::SinkError;

/// Most replicas sharing one topic.
pub const MAX_MEMBERS: i32 = 1024;

/// The shortest [`lease_timeout`].
pub const MIN_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// [`lease_timeout`] is at least this many rebalance intervals, so a live replica pings its
/// lock session several times within it.
pub const LEASE_TIMEOUT_INTERVALS: u32 = 4;

/// How long the server keeps the lock session (and so the partitions) of a replica that has
/// stopped talking to it: `max(10 s, 4 × rebalance_interval)`. Another replica takes the
/// partitions over at its next rebalance after that.
pub fn lease_timeout(rebalance_interval: Duration) -> Duration {
    rebalance_interval
        .saturating_mul(LEASE_TIMEOUT_INTERVALS)
        .max(MIN_LEASE_TIMEOUT)
}

/// The advisory locks of one replica for one topic.
#[derive(Debug)]
pub struct Leases {
    conn: PgConnection,
    partition_space: i32,
    member_space: i32,
    slot: Option<i32>,
    owned: BTreeSet<i32>,
    /// Bound on each operation of the lock connection.
    io_timeout: Duration,
}

/// `operation`, or [`SinkError::LeaseUnresponsive`] after `limit`.
async fn bounded<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SinkError::LeaseUnresponsive(limit)),
    }
}

/// A lock space for `what` of `topic`: the first of the two keys of a two-key advisory lock.
fn space(what: &str, topic: &str) -> i32 {
    let digest = Sha256::digest(format!("web-monitor:{what}:{topic}").as_bytes());
    i32::from_be_bytes([digest[0] & 0x7f, digest[1], digest[2], digest[3]])
}

impl Leases {
    /// Connects the dedicated lock connection, bounds its session (see the module docs) and
    /// takes a membership slot. `rebalance_interval` is how often the caller will ping.
    pub async fn join(
        options: &PgConnectOptions,
        topic: &str,
        rebalance_interval: Duration,
    ) -> Result<Leases, SinkError> {
        let timeout = lease_timeout(rebalance_interval);
        let io_timeout = timeout / 2;
        let options = options.clone().application_name("web-monitor-sink-leases");
        let mut conn = bounded(io_timeout, PgConnection::connect_with(&options)).await?;
        let mut bounds = tcp_bounds();
        bounds.push(("idle_session_timeout", format!("{}ms", timeout.as_millis())));
        bounded(io_timeout, bound_session(&mut conn, &bounds)).await?;
        let mut leases = Leases {
            conn,
            partition_space: space("partition", topic),
            member_space: space("member", topic),
            slot: None,
            owned: BTreeSet::new(),
            io_timeout,
        };
        for slot in 0..MAX_MEMBERS {
            if leases.try_lock(leases.member_space, slot).await? {
                leases.slot = Some(slot);
                break;
            }
        }
        Ok(leases)
    }

    async fn try_lock(&mut self, space: i32, key: i32) -> Result<bool, SinkError> {
        let query = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
            .bind(space)
            .bind(key)
            .fetch_one(&mut self.conn);
        let (locked,): (bool,) = bounded(self.io_timeout, query).await?;
        Ok(locked)
    }

    /// This replica's membership slot.
    pub fn slot(&self) -> Option<i32> {
        self.slot
    }

    /// Live replicas of this topic in this database (this one included).
    pub async fn members(&mut self) -> Result<usize, SinkError> {
        let query = sqlx::query_as(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND objsubid = 2 AND classid::int8 = $1 AND objid::int8 < $2",
        )
        .bind(i64::from(self.member_space))
        .bind(i64::from(MAX_MEMBERS))
        .fetch_one(&mut self.conn);
        let (count,): (i64,) = bounded(self.io_timeout, query).await?;
        Ok(usize::try_from(count).unwrap_or(1).max(1))
    }

    /// Partitions this replica owns.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// Takes `partition` if no other replica holds it.
    pub async fn try_acquire(&mut self, partition: i32) -> Result<bool, SinkError> {
        if self.owned.contains(&partition) {
            return Ok(true);
        }
        let locked = self.try_lock(self.partition_space, partition).await?;
        if locked {
            self.owned.insert(partition);
        }
        Ok(locked)
    }

    /// Gives `partition` back.
    pub async fn release(&mut self, partition: i32) -> Result<(), SinkError> {
        if self.owned.remove(&partition) {
            let query = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(self.partition_space)
                .bind(partition)
                .execute(&mut self.conn);
            bounded(self.io_timeout, query).await?;
        }
        Ok(())
    }

    /// Checks that the lock connection is alive, within half the lease timeout: if it is not,
    /// every lease is (or is about to be) gone.
    pub async fn ping(&mut self) -> Result<(), SinkError> {
        bounded(self.io_timeout, self.conn.ping()).await
    }

    /// Closes the connection, which releases every lock (bounded: a connection that does not
    /// answer is dropped, and the server ends the session within the lease timeout).
    pub async fn leave(self) {
        let _ = tokio::time::timeout(self.io_timeout, self.conn.close()).await;
    }
}
