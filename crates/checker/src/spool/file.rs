//! [`FileSpool`]: the on-disk FIFO where reports wait while Kafka cannot take them.
//!
//! Append-only segment files (`<sequence>.seg`, rolled at [`SEGMENT_BYTES`]) of records framed
//! as `magic, version, key length, value length, CRC32(key ‖ value), key, value`. The
//! delivered position lives in the file `cursor`, replaced atomically (write, then rename) on
//! each commit; a fully delivered segment is deleted. A restarted checker finds the segments
//! and the cursor, writes to a new segment, and replays from the cursor, so at most the last
//! unacknowledged batch is sent twice.
//!
//! Damage is contained: a truncated tail or a flipped bit loses the damaged record only (it is
//! logged and counted), and reading resumes at the next record whose frame and checksum hold.
//! When the spool outgrows its bound, whole segments are dropped, oldest first, with the count
//! of lost reports logged.
//!
//! The spool is the write-ahead log of every report: each [`Spool::append`] is one `write(2)`
//! straight into the file (no buffer inside the process), so a report appended is in the
//! kernel's page cache and survives a kill of the process; [`Spool::flush`] (an `fsync`, which
//! the publisher calls once a second) makes it survive a power loss as well. A segment is
//! fsynced when it is finished, and the directory after a segment is created or deleted; the
//! cursor's renames reach the disk with the next flush (a cursor older than the truth only
//! means reports sent twice). An append is all or nothing: a write that fails (a full disk, an
//! I/O error) is cut back off the file and reported to the caller, which counts the reports.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use super::frame::{count, decode, encode, resync, MAX_RECORD_BYTES};
use super::message::{Message, Spool};
use super::metrics::SpoolMetrics;

/// A segment is rolled past this size (an append is never split: a segment can end up to one
/// append larger).
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

const CURSOR_FILE: &str = "cursor";
/// The start-up backfill's heartbeat, kept in the spool directory (and left alone by the
/// spool).
pub const HEARTBEAT_FILE: &str = "heartbeat";
/// The ids of the targets the last run checked, a JSON array beside the heartbeat (and left
/// alone by the spool).
pub const TARGETS_FILE: &str = "targets.json";

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    size: u64,
}

/// The spool directory.
#[derive(Debug)]
pub struct FileSpool {
    dir: PathBuf,
    max_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    file: File,
    /// The cursor's file, overwritten in place (see [`FileSpool::save_cursor`]).
    cursor_file: File,
    /// Delivered up to here: (segment, byte offset).
    cursor: (u64, u64),
    /// Positions after each record of the last peek, and where that scan ended.
    peeked: Vec<(u64, u64)>,
    scan_end: Option<(u64, u64)>,
    reported: HashSet<(u64, u64)>,
    metrics: SpoolMetrics,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

/// Makes the directory's entries (created, renamed, deleted files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_segment(dir: &Path, seq: u64) -> io::Result<(PathBuf, File)> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    sync_dir(dir)?;
    Ok((path, file))
}

fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

impl FileSpool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes`, counting in `metrics`.
    pub fn open(dir: &Path, max_bytes: u64, metrics: SpoolMetrics) -> io::Result<FileSpool> {
        fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name == CURSOR_FILE
                || name.ends_with(".tmp")
                || name.starts_with(HEARTBEAT_FILE)
                || name.starts_with(TARGETS_FILE)
            {
                continue;
            }
            match name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(seq) => {
                    let size = fs::metadata(&path)?.len();
                    segments.insert(seq, Segment { path, size });
                }
                None => warn!(file = %path.display(), "not a spool segment: ignored"),
            }
        }
        let cursor = fs::read_to_string(dir.join(CURSOR_FILE))
            .ok()
            .and_then(|text| {
                let mut parts = text.split_whitespace().map(str::parse::<u64>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(seq)), Some(Ok(off))) => Some((seq, off)),
                    _ => None,
                }
            })
            .unwrap_or((segments.keys().next().copied().unwrap_or(0), 0));
        let cursor_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(CURSOR_FILE))?;
        let active = segments.keys().next_back().map_or(1, |last| last + 1);
        let (path, file) = open_segment(dir, active)?;
        segments.insert(active, Segment { path, size: 0 });
        let mut spool = FileSpool {
            dir: dir.to_path_buf(),
            max_bytes,
            segments,
            active,
            file,
            cursor_file,
            cursor,
            peeked: Vec::new(),
            scan_end: None,
            reported: HashSet::new(),
            metrics,
        };
        spool.drop_delivered()?;
        spool.save_cursor()?;
        sync_dir(dir)?;
        spool.update_bytes();
        Ok(spool)
    }

    /// Its metrics.
    pub fn metrics(&self) -> &SpoolMetrics {
        &self.metrics
    }

    fn update_bytes(&self) {
        let bytes: u64 = self.segments.values().map(|s| s.size).sum();
        self.metrics
            .bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Finishes the active segment (fsynced) and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let (path, file) = open_segment(&self.dir, self.active + 1)?;
        self.active += 1;
        self.file = file;
        self.segments.insert(self.active, Segment { path, size: 0 });
        Ok(())
    }

    /// Deletes a segment file, and makes the deletion durable.
    fn remove_segment(&mut self, seq: u64) {
        if let Some(seg) = self.segments.remove(&seq) {
            if let Err(e) = fs::remove_file(&seg.path).and_then(|()| sync_dir(&self.dir)) {
                warn!(segment = %seg.path.display(), error = %e, "cannot delete a spool segment");
            }
        }
    }

    /// Writes `frames` at the end of the active segment in one write, or not at all.
    fn write_frames(&mut self, frames: &[u8]) -> io::Result<()> {
        let before = self.segments.get(&self.active).map_or(0, |s| s.size);
        match self.file.write_all(frames) {
            Ok(()) => {
                if let Some(seg) = self.segments.get_mut(&self.active) {
                    seg.size += frames.len() as u64;
                }
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back off, so that no half record is left behind.
                if let Err(cut) = self.file.set_len(before) {
                    warn!(error = %cut, "cannot cut a failed spool write back: its bytes will be skipped as damage");
                    let size = self.file.metadata().map_or(before, |m| m.len());
                    if let Some(seg) = self.segments.get_mut(&self.active) {
                        seg.size = size;
                    }
                }
                Err(e)
            }
        }
    }

    /// Deletes segments wholly before the cursor, and moves the cursor off a finished one.
    fn drop_delivered(&mut self) -> io::Result<()> {
        while let Some((&first, seg)) = self.segments.iter().next() {
            let finished = first < self.cursor.0
                || (first == self.cursor.0 && first != self.active && self.cursor.1 >= seg.size);
            if !finished || first == self.active {
                break;
            }
            self.remove_segment(first);
            if self.cursor.0 <= first {
                self.cursor = (
                    self.segments.keys().next().copied().unwrap_or(self.active),
                    0,
                );
            }
        }
        if !self.segments.contains_key(&self.cursor.0) {
            self.cursor = (
                self.segments.keys().next().copied().unwrap_or(self.active),
                0,
            );
        }
        Ok(())
    }

    /// Overwrites the cursor in place, in one write of a fixed size: a kill leaves the old or
    /// the new one, it needs no free space (a full disk cannot stop deliveries being marked),
    /// and an unreadable one (a power loss mid-sector) only sends everything again.
    fn save_cursor(&mut self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let text = format!("{:020} {:020}\n", self.cursor.0, self.cursor.1);
        self.cursor_file.write_all_at(text.as_bytes(), 0)?;
        self.cursor_file.set_len(text.len() as u64)
    }

    /// Drops the oldest segments until the spool fits its bound again.
    fn enforce_bound(&mut self) -> io::Result<()> {
        while self.segments.values().map(|s| s.size).sum::<u64>() > self.max_bytes {
            let Some((&first, seg)) = self.segments.iter().next() else {
                break;
            };
            if first == self.active {
                break;
            }
            let from = if first == self.cursor.0 {
                self.cursor.1
            } else {
                0
            };
            let lost = read_from(&seg.path, from).map(|d| count(&d)).unwrap_or(0);
            self.remove_segment(first);
            self.metrics.dropped.inc_by(lost);
            error!(
                reports = lost,
                max_bytes = self.max_bytes,
                "spool full: the oldest reports were dropped"
            );
            if self.cursor.0 <= first {
                self.cursor = (
                    self.segments.keys().next().copied().unwrap_or(self.active),
                    0,
                );
                self.save_cursor()?;
            }
        }
        Ok(())
    }
}

impl Spool for FileSpool {
    fn append(&mut self, messages: &[Message]) -> io::Result<()> {
        let mut frames = Vec::new();
        for m in messages {
            if m.key.len() + m.value.len() > MAX_RECORD_BYTES {
                error!(
                    bytes = m.value.len(),
                    "report too large for the spool: dropped"
                );
                self.metrics.dropped.inc();
                continue;
            }
            encode(&m.key, &m.value, &mut frames);
        }
        if frames.is_empty() {
            return Ok(());
        }
        if self
            .segments
            .get(&self.active)
            .is_some_and(|s| s.size > 0 && s.size + frames.len() as u64 > SEGMENT_BYTES)
        {
            self.roll()?;
            self.enforce_bound()?;
        }
        if let Err(e) = self.write_frames(&frames) {
            if !self.is_empty() || self.segments.get(&self.active).is_none_or(|s| s.size == 0) {
                return Err(e);
            }
            // A full disk while everything written is delivered: start a new segment so the
            // delivered one can go, and try once more.
            self.roll()?;
            self.drop_delivered()?;
            self.save_cursor()?;
            self.write_frames(&frames)?;
        }
        self.enforce_bound()?;
        self.update_bytes();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.cursor_file.sync_data()
    }

    fn peek(&mut self, max: usize) -> io::Result<Vec<Message>> {
        self.peeked.clear();
        self.scan_end = None;
        let mut out = Vec::new();
        let seqs: Vec<u64> = self
            .segments
            .range(self.cursor.0..)
            .map(|(s, _)| *s)
            .collect();
        for seq in seqs {
            let Some(seg) = self.segments.get(&seq) else {
                continue;
            };
            let start = if seq == self.cursor.0 {
                self.cursor.1
            } else {
                0
            };
            let data = read_from(&seg.path, start)?;
            let mut at = 0usize;
            while at < data.len() {
                if out.len() >= max {
                    return Ok(out);
                }
                match decode(&data, at) {
                    Some((key, value, len)) => {
                        out.push(Message {
                            key: key.to_vec(),
                            value: value.to_vec(),
                        });
                        at += len;
                        self.peeked.push((seq, start + at as u64));
                    }
                    None => {
                        let next = resync(&data, at + 1);
                        if self.reported.insert((seq, start + at as u64)) {
                            self.metrics.corrupt.inc();
                            error!(
                                segment = %seg.path.display(),
                                offset = start + at as u64,
                                skipped_bytes = next - at,
                                "damaged spool record skipped"
                            );
                        }
                        at = next;
                    }
                }
            }
            self.scan_end = Some((seq, start + data.len() as u64));
        }
        if out.is_empty() && self.scan_end.is_some_and(|end| end > self.cursor) {
            // Only damage was left (counted above): step past it, or every later peek would
            // find the same nothing and the spool would never be empty.
            self.commit(usize::MAX)?;
        }
        Ok(out)
    }

    fn commit(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let position = if n >= self.peeked.len() {
            // Everything peeked is delivered: skip any damage scanned past as well.
            self.scan_end
                .filter(|end| Some(end) >= self.peeked.last())
                .or(self.peeked.last().copied())
        } else {
            self.peeked.get(n - 1).copied()
        };
        if let Some(position) = position {
            self.cursor = position;
        }
        self.peeked.clear();
        self.scan_end = None;
        self.drop_delivered()?;
        self.save_cursor()?;
        self.update_bytes();
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.segments.range(self.cursor.0..).all(|(seq, seg)| {
            seg.size
                <= if *seq == self.cursor.0 {
                    self.cursor.1
                } else {
                    0
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{HEADER, MAGIC, VERSION};
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            key: format!("target-{}", i % 7).into_bytes(),
            value: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)).into_bytes(),
        }
    }

    fn drain(spool: &mut FileSpool, batch: usize) -> Vec<Message> {
        let mut all = Vec::new();
        loop {
            let got = spool.peek(batch).expect("peek");
            if got.is_empty() {
                break;
            }
            spool.commit(got.len()).expect("commit");
            all.extend(got);
        }
        all
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_come_back_in_order_and_delivered_segments_are_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
        assert!(spool.is_empty());
        let sent: Vec<Message> = (0..1000).map(msg).collect();
        spool.append(&sent).expect("append");
        spool.flush().expect("flush");
        assert!(!spool.is_empty());
        assert_eq!(drain(&mut spool, 64), sent);
        assert!(spool.is_empty());
        assert_eq!(
            segment_files(dir.path()).len(),
            1,
            "only the active segment is left"
        );
    }

    #[test]
    fn a_restart_keeps_undelivered_records_and_resends_at_most_the_open_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let sent: Vec<Message> = (0..300).map(msg).collect();
        {
            let mut spool =
                FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
            spool.append(&sent).expect("append");
            spool.flush().expect("flush");
            let first = spool.peek(100).expect("peek");
            spool.commit(first.len()).expect("commit");
            // A batch peeked but never acknowledged when the process dies.
            let _ = spool.peek(50).expect("peek");
        }
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("reopen");
        spool.append(&[msg(300)]).expect("append after restart");
        spool.flush().expect("flush");
        let mut expected: Vec<Message> = sent[100..].to_vec();
        expected.push(msg(300));
        assert_eq!(drain(&mut spool, 64), expected);
    }

    #[test]
    fn the_size_bound_drops_the_oldest_segments_and_counts_them() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool =
            FileSpool::open(dir.path(), 40 * 1024 * 1024, SpoolMetrics::default()).expect("open");
        let big = |i: usize| Message {
            key: b"k".to_vec(),
            value: format!("{i:08}{}", "y".repeat(100_000)).into_bytes(),
        };
        // ~60 MiB into a 40 MiB spool of 16 MiB segments.
        for i in 0..600 {
            spool.append(&[big(i)]).expect("append");
        }
        spool.flush().expect("flush");
        let dropped = spool.metrics().dropped.get();
        assert!(dropped > 0, "something must be dropped");
        let left = drain(&mut spool, 100);
        assert_eq!(
            left.len() as u64 + dropped,
            600,
            "every report is delivered or counted as dropped"
        );
        assert_eq!(
            left.last().map(|m| m.value[..8].to_vec()),
            Some(b"00000599".to_vec()),
            "the newest are kept"
        );
        assert!(spool.metrics().bytes.get() <= 40 * 1024 * 1024);
    }

    #[test]
    fn a_truncated_tail_loses_only_the_last_record() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut spool =
                FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
            spool
                .append(&(0..10).map(msg).collect::<Vec<_>>())
                .expect("append");
            spool.flush().expect("flush");
        }
        let seg = segment_files(dir.path()).remove(0);
        let len = fs::metadata(&seg).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len - 5)
            .expect("truncate");
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("reopen");
        let got = drain(&mut spool, 4);
        assert_eq!(got, (0..9).map(msg).collect::<Vec<_>>());
        assert_eq!(spool.metrics().corrupt.get(), 1);
        assert!(spool.is_empty());
    }

    #[test]
    fn a_flipped_bit_loses_only_the_damaged_record() {
        let dir = tempfile::tempdir().expect("dir");
        let sent: Vec<Message> = (0..20).map(msg).collect();
        {
            let mut spool =
                FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
            spool.append(&sent).expect("append");
            spool.flush().expect("flush");
        }
        let seg = segment_files(dir.path()).remove(0);
        let mut data = fs::read(&seg).expect("read");
        // Flip a bit inside record 5's value.
        let at: usize = sent[..5]
            .iter()
            .map(|m| HEADER + m.key.len() + m.value.len())
            .sum();
        data[at + HEADER + sent[5].key.len() + 2] ^= 0x10;
        fs::write(&seg, &data).expect("write");
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("reopen");
        let got = drain(&mut spool, 7);
        let mut expected = sent.clone();
        expected.remove(5);
        assert_eq!(got, expected);
        assert_eq!(spool.metrics().corrupt.get(), 1);
    }

    #[test]
    fn a_damaged_length_field_cannot_make_the_reader_allocate_or_loop() {
        let dir = tempfile::tempdir().expect("dir");
        let sent: Vec<Message> = (0..5).map(msg).collect();
        {
            let mut spool =
                FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
            spool.append(&sent).expect("append");
            spool.flush().expect("flush");
        }
        let seg = segment_files(dir.path()).remove(0);
        let mut data = fs::read(&seg).expect("read");
        data[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&seg, &data).expect("write");
        fs::write(dir.path().join("notes.txt"), "not a segment").expect("write");
        fs::write(dir.path().join("00000000000000000000.seg"), b"").expect("empty segment");
        let mut spool = FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default())
            .expect("reopen despite strangers");
        assert_eq!(drain(&mut spool, 10), sent[1..].to_vec());
    }

    #[test]
    fn an_append_is_in_the_file_at_once_without_a_flush() {
        // What a kill of the process leaves: the file as the kernel has it, no flush.
        let dir = tempfile::tempdir().expect("dir");
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
        let sent: Vec<Message> = (0..3).map(msg).collect();
        spool.append(&sent).expect("append");
        let mut other =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open beside it");
        assert_eq!(drain(&mut other, 10), sent);
    }

    #[test]
    fn a_tail_of_only_damage_is_skipped_counted_and_left_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let sent: Vec<Message> = (0..4).map(msg).collect();
        {
            let mut spool =
                FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("open");
            spool.append(&sent).expect("append");
            let got = spool.peek(10).expect("peek");
            spool.commit(got.len()).expect("commit");
        }
        // Garbage after the delivered records, starting with the frame's magic byte.
        let seg = segment_files(dir.path()).remove(0);
        let mut data = fs::read(&seg).expect("read");
        data.extend_from_slice(&[MAGIC, VERSION, 9, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        data.extend_from_slice(&[0xA7; 40]);
        fs::write(&seg, &data).expect("write");
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("reopen");
        assert!(!spool.is_empty(), "the damage is waiting");
        assert!(spool.peek(10).expect("peek").is_empty());
        assert!(
            spool.is_empty(),
            "one peek steps past damage with nothing behind it"
        );
        assert_eq!(spool.metrics().corrupt.get(), 1);
        spool.append(&[msg(9)]).expect("append");
        assert_eq!(drain(&mut spool, 10), vec![msg(9)]);
        drop(spool);
        let mut spool =
            FileSpool::open(dir.path(), u64::MAX, SpoolMetrics::default()).expect("reopen");
        assert!(spool.is_empty(), "the step past the damage was saved");
        assert!(drain(&mut spool, 10).is_empty());
    }

    /// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn mount(size: &str) -> SmallDisk {
            let dir = tempfile::tempdir().expect("dir");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .expect("mount runs")
                .success();
            assert!(ok, "mount a tmpfs (needs root)");
            SmallDisk(dir)
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    #[ignore = "needs root: mounts a tmpfs"]
    fn a_full_disk_fails_whole_appends_and_leaves_every_written_record_readable() {
        let disk = SmallDisk::mount("256k");
        let dir = disk.0.path().join("spool");
        let mut spool = FileSpool::open(&dir, u64::MAX, SpoolMetrics::default()).expect("open");
        let mut written = Vec::new();
        let mut failed = 0;
        for i in 0..200 {
            let batch: Vec<Message> = (i * 5..i * 5 + 5)
                .map(|n| Message {
                    key: b"k".to_vec(),
                    value: format!("{n:06}{}", "z".repeat(600)).into_bytes(),
                })
                .collect();
            match spool.append(&batch) {
                Ok(()) => written.extend(batch),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
                    failed += 1;
                }
            }
        }
        assert!(failed > 0, "the disk must fill up");
        assert!(!written.is_empty());
        assert_eq!(
            drain(&mut spool, 64),
            written,
            "every append that succeeded is there, whole; nothing of the failed ones"
        );
        assert_eq!(spool.metrics().corrupt.get(), 0);
        // Delivered segments are deleted, which makes room again.
        spool.append(&[msg(1)]).expect("room again");
        assert_eq!(drain(&mut spool, 64), vec![msg(1)]);
    }
}
