//! [`Batch`]: the decoded messages of one partition between two stored offsets, as the store
//! takes them. The decoder fills it (a report, or a dead letter saying why not, per message);
//! the store writes it in one transaction, or bisects it when the database refuses its data.
//!
//! A report keeps the bytes it was decoded from until it is stored, so that a report the
//! database refuses becomes a dead letter of the original message.

use std::collections::BTreeMap;

use monitor_core::report::Report;
use tracing::warn;

use super::text::reason;
use crate::verdicts::Folded;

/// A message that is not a valid report, kept as received.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
    /// Why it is not a report.
    pub error: String,
}

/// A message as received, kept with its report until the report is stored, so that a report
/// the database refuses becomes a dead letter of the original bytes.
#[derive(Debug, Clone)]
struct Received {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// The messages of one partition between two stored offsets.
#[derive(Debug)]
pub struct Batch {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The stored next offset this batch continues from (`None`: nothing stored yet).
    pub expected_offset: Option<i64>,
    /// Where consumption resumes after this batch.
    pub next_offset: i64,
    /// Valid reports, with their offsets.
    pub reports: Vec<(i64, Report)>,
    /// Invalid messages.
    pub dead_letters: Vec<DeadLetter>,
    /// The raw messages of `reports`, by offset.
    received: BTreeMap<i64, Received>,
    /// Bytes of the keys and values pushed.
    bytes: usize,
}

impl Batch {
    /// An empty batch continuing from `expected_offset`, resuming at `next_offset`.
    pub fn new(
        topic: &str,
        partition: i32,
        expected_offset: Option<i64>,
        next_offset: i64,
    ) -> Batch {
        Batch {
            topic: topic.to_string(),
            partition,
            expected_offset,
            next_offset,
            reports: Vec::new(),
            dead_letters: Vec::new(),
            received: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// Adds the message at `offset`, decoded as `report`; its key and value are kept until
    /// the report is stored.
    pub fn push_report(
        &mut self,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        report: Report,
    ) {
        self.count(offset, key.as_deref(), value.as_deref());
        self.reports.push((offset, report));
        self.received.insert(offset, Received { key, value });
    }

    /// Adds the message at `offset` as a dead letter: it is not a report, for `error`.
    pub fn push_dead_letter(
        &mut self,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        error: String,
    ) {
        self.count(offset, key.as_deref(), value.as_deref());
        self.add_dead_letter(offset, key, value, error);
    }

    /// Counts a pushed message's bytes and moves the next offset past it.
    fn count(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.bytes += key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        self.next_offset = self.next_offset.max(offset + 1);
    }

    fn add_dead_letter(
        &mut self,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        error: String,
    ) {
        warn!(topic = %self.topic, partition = self.partition, offset, %error, "dead letter");
        self.dead_letters.push(DeadLetter {
            offset,
            key,
            payload: value,
            error,
        });
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.reports.len() + self.dead_letters.len()
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the keys and values pushed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether storing this batch still has something to do: messages, or an offset to move.
    pub(super) fn has_work(&self) -> bool {
        !self.is_empty() || self.expected_offset != Some(self.next_offset)
    }

    /// The offset that ends the first `n` messages: the offset of message `n + 1`, or the
    /// batch's next offset when there are no more.
    pub(super) fn cut_after(&self, n: usize) -> i64 {
        let mut offsets: Vec<i64> = self
            .reports
            .iter()
            .map(|(o, _)| *o)
            .chain(self.dead_letters.iter().map(|d| d.offset))
            .collect();
        offsets.sort_unstable();
        offsets.get(n).copied().unwrap_or(self.next_offset)
    }

    /// A copy of the messages before offset `cut`, as a batch of its own ending at `cut`.
    pub(super) fn front(&self, cut: i64) -> Batch {
        let mut front = Batch::new(&self.topic, self.partition, self.expected_offset, cut);
        front.reports = self
            .reports
            .iter()
            .filter(|(o, _)| *o < cut)
            .cloned()
            .collect();
        front.dead_letters = self
            .dead_letters
            .iter()
            .filter(|d| d.offset < cut)
            .cloned()
            .collect();
        front
    }

    /// Forgets the messages before `cut`, stored up to there.
    pub(super) fn drop_front(&mut self, cut: i64) {
        self.reports.retain(|(o, _)| *o >= cut);
        self.dead_letters.retain(|d| d.offset >= cut);
        self.received = self.received.split_off(&cut);
        self.expected_offset = Some(cut);
    }

    /// Turns the report at `offset` into a dead letter of its original bytes.
    pub(super) fn refuse(&mut self, offset: i64, why: &str) {
        let report = self.reports.iter().position(|(o, _)| *o == offset);
        let report = report.map(|i| self.reports.remove(i).1);
        // A report pushed without its bytes is kept as the JSON it stands for.
        let (key, value) = match self.received.remove(&offset) {
            Some(r) => (r.key, r.value),
            None => (None, report.map(|r| r.to_json())),
        };
        let error = reason(&format!("the database refused the report: {why}"));
        self.add_dead_letter(offset, key, value, error);
    }
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// New result rows.
    pub rows: u64,
    /// Reports skipped because their `report_id` was stored already.
    pub duplicates: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// What folding the new reports into verdicts did.
    pub folded: Folded,
}

impl Stored {
    /// Adds what another store did.
    pub fn add(&mut self, other: Stored) {
        self.rows += other.rows;
        self.duplicates += other.duplicates;
        self.dead_letters += other.dead_letters;
        self.folded.add(other.folded);
    }
}
