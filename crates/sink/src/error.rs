//! The sink's error type.

/// What can go wrong in the sink (never because of a message's content: bad messages become
/// dead letters).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A database operation failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Kafka could not be reached.
    #[error(transparent)]
    KafkaConnect(#[from] monitor_core::runtime::broker::KafkaConnectError),
    /// A Kafka request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rskafka::client::error::Error),
    /// The admin endpoint cannot listen on its address.
    #[error("cannot serve the admin endpoint on {addr} (set --admin-listen): {source}")]
    Admin {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A Kafka request took longer than its bound.
    #[error("{0} took too long")]
    Timeout(&'static str),
    /// The targets API and status page cannot listen on their address.
    #[error("cannot serve the API and status page on {addr} (set sink.http_listen, or \"off\"): {source}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another replica stored this partition since our batch started: we no longer own it.
    #[error("partition {partition} of {topic}: stored offset is {found:?}, expected {expected:?}: another replica owns it")]
    OffsetMoved {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset the batch started from.
        expected: Option<i64>,
        /// The offset found.
        found: Option<i64>,
    },
    /// A batch needs more new day partitions than one call creates; the rest follow on the
    /// next attempts.
    #[error("{missing} day partitions of reports are missing; {created} were created, the rest follow on the next attempt")]
    TooManyNewDays {
        /// Days missing before this call.
        missing: usize,
        /// Days created by this call.
        created: usize,
    },
    /// A target's state could not be written.
    #[error("the state of target {target_id:?} cannot be written: {reason}")]
    State {
        /// The target.
        target_id: String,
        /// Why.
        reason: String,
    },
    /// Target states were written by someone else since this replica read or wrote them (a
    /// partition moved, or the topic's partition count changed): the transaction is rolled
    /// back and the batch folded again from the stored states.
    #[error("{written} of {expected} target states could be written: another replica wrote the others meanwhile")]
    StateConflict {
        /// States the batch had to write.
        expected: u64,
        /// States whose stored version was still the expected one.
        written: u64,
    },
    /// The lease connection did not answer in time: its leases are treated as lost.
    #[error("the lease connection did not answer within {0:?}; its partitions are given up")]
    LeaseUnresponsive(std::time::Duration),
}
