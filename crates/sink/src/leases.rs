//! Partition ownership without consumer groups: a replica owns a partition while it holds a
//! PostgreSQL advisory lock on it, on one dedicated connection. If the replica dies, its
//! connection closes and PostgreSQL releases the locks, so the survivors take the partitions
//! over. Each replica also holds a membership lock in a numbered slot, so every replica can
//! count the live ones and take only its fair share.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::SinkError;

/// Most replicas sharing one topic.
pub const MAX_MEMBERS: i32 = 1024;

/// The advisory locks of one replica for one topic.
#[derive(Debug)]
pub struct Leases {
    conn: PgConnection,
    partition_space: i32,
    member_space: i32,
    slot: Option<i32>,
    owned: BTreeSet<i32>,
}

/// A lock space for `what` of `topic`: the first of the two keys of a two-key advisory lock.
fn space(what: &str, topic: &str) -> i32 {
    let digest = Sha256::digest(format!("web-monitor:{what}:{topic}").as_bytes());
    i32::from_be_bytes([digest[0] & 0x7f, digest[1], digest[2], digest[3]])
}

impl Leases {
    /// Connects the dedicated lock connection and takes a membership slot.
    pub async fn join(options: &PgConnectOptions, topic: &str) -> Result<Leases, SinkError> {
        let conn = PgConnection::connect_with(
            &options.clone().application_name("web-monitor-sink-leases"),
        )
        .await?;
        let mut leases = Leases {
            conn,
            partition_space: space("partition", topic),
            member_space: space("member", topic),
            slot: None,
            owned: BTreeSet::new(),
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
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
            .bind(space)
            .bind(key)
            .fetch_one(&mut self.conn)
            .await?;
        Ok(locked)
    }

    /// This replica's membership slot.
    pub fn slot(&self) -> Option<i32> {
        self.slot
    }

    /// Live replicas of this topic (this one included).
    pub async fn members(&mut self) -> Result<usize, SinkError> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 2 AND classid::int8 = $1",
        )
        .bind(i64::from(self.member_space))
        .fetch_one(&mut self.conn)
        .await?;
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
            sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(self.partition_space)
                .bind(partition)
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Checks that the lock connection is alive: if it is not, every lease is gone.
    pub async fn ping(&mut self) -> Result<(), SinkError> {
        self.conn.ping().await?;
        Ok(())
    }

    /// Closes the connection, which releases every lock.
    pub async fn leave(self) {
        let _ = self.conn.close().await;
    }
}
