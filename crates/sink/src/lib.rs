//! # sink
//!
//! Consumes check reports from Kafka, stores each exactly once in PostgreSQL, and folds the
//! reports of every region into verdicts, target state and incidents in the same transaction.
//!
//! ## Layout
//! The floors follow the data: a message is fetched by the consumer, decoded, stored, and
//! folded into verdicts.
//! - [`application`]: [`Application`], the sink as a library: `build` binds the admin
//!   endpoint, `run_until_stopped` connects, migrates and runs until shut down.
//! - [`coordinator`]: takes a fair share of the topic's partitions through [`leases`], runs one
//!   consumer per owned partition, and gives partitions back when more replicas join; beside
//!   it run [`housekeeping`] (day partitions ahead, retention), [`topic`] (the partition
//!   count) and the notifications' dispatcher ([`notify::dispatch`]).
//! - [`consumer`]: the loop that fetches one partition, decodes each message into a batch, and
//!   hands the batch to the store.
//! - [`decode`]: a Kafka message becomes a report or a dead letter of the batch; nothing in a
//!   message can stop the sink.
//! - [`store`]: [`store::ReportStore`], the only code that writes the results: one
//!   transaction per [`store::Batch`] holds its rows (compact `reports` rows, read through the
//!   `results` view), its dead letters and the partition's next offset;
//!   [`store::partitions`] keeps the day partitions of `reports`. Each transaction hands its
//!   newly inserted reports to [`verdicts`].
//! - [`verdicts`]: the pure fold of a target's reports into slot verdicts (a quorum of the
//!   expected regions), state (`down_after`/`up_after`) and incidents, and its tables
//!   (`target_states`, `incidents`, `verdict_hours`), written in the store's transaction.
//! - [`leases`]: partition ownership through PostgreSQL advisory locks, so replicas share a
//!   topic's partitions without consumer groups.
//! - [`notify`]: notifications of what the verdicts change, written with the change (an
//!   outbox in the same transaction) and delivered to the channels each target is routed to,
//!   at least once, under a key receivers deduplicate on.
//! - [`uptime`]: the summary of `sink report`, read from the verdicts and the stored results.
//! - [`catalog`]: every target the sink knows, the settings file's and those made through the
//!   API, followed by the fold's rules and the status page.
//! - [`http`]: the HTTP side on `sink.http_listen`, serving two rooms: [`api`] (the targets
//!   API, its audit, the outbox onto the targets topic and "check now") and [`status`] (the
//!   public status page, its JSON and badges, from per-day rollups).
//! - [`db`]: connecting to PostgreSQL and the embedded migrations.
//! - [`metrics`], [`retry`], [`error`]: the Prometheus metrics and readiness, waiting out
//!   outages, and the error type, used on every floor.
//!
//! The SQL lives in [`store`], [`store::partitions`], [`verdicts`], [`leases`], [`uptime`],
//! [`catalog`], [`api`] and [`status`].
//!
//! ## Exactly once
//! rskafka has no consumer groups and no offset commit, so offsets live in PostgreSQL, in the
//! `kafka_offsets` table, written in the same transaction as the rows. A transaction also
//! checks that the stored offset is still the one its batch started from, so a replica that
//! lost its lease cannot store a batch twice. Rows whose `report_id` is stored already are
//! skipped, which covers a producer's retries; only the reports a transaction inserted are
//! folded into verdicts, and the targets' states are written in that same transaction, so a
//! restart, a lost lease or a replay gives the same incidents.

pub mod api;
pub mod application;
pub mod catalog;
pub mod consumer;
pub mod coordinator;
pub mod db;
pub mod decode;
pub mod error;
pub mod housekeeping;
pub mod http;
pub mod leases;
pub mod metrics;
pub mod notify;
pub mod retry;
pub mod status;
pub mod store;
pub mod topic;
pub mod uptime;
pub mod verdicts;

pub use application::Application;
pub use error::SinkError;
