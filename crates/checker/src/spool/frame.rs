//! The frame of one spool record: `magic, version, key length, value length,
//! CRC32(key ‖ value), key, value`, and the reading that finds the next intact frame after
//! damage. Hand-written because the format is the spool's own: a record must be told apart
//! from a torn or flipped one with nothing but its bytes.

/// Largest record (key and value) the spool writes or believes when reading.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

pub(super) const MAGIC: u8 = 0xA7;
pub(super) const VERSION: u8 = 1;
pub(super) const HEADER: usize = 14;

/// One frame.
pub(super) fn encode(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(key);
    crc.update(value);
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// The record at `data[at..]`, if its frame and checksum hold: (key, value, length).
pub(super) fn decode(data: &[u8], at: usize) -> Option<(&[u8], &[u8], usize)> {
    let h = data.get(at..at + HEADER)?;
    if h[0] != MAGIC || h[1] != VERSION {
        return None;
    }
    let key_len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
    let value_len = u32::from_le_bytes([h[6], h[7], h[8], h[9]]) as usize;
    if key_len + value_len > MAX_RECORD_BYTES {
        return None;
    }
    let crc = u32::from_le_bytes([h[10], h[11], h[12], h[13]]);
    let body = data.get(at + HEADER..at + HEADER + key_len + value_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Some((
        &body[..key_len],
        &body[key_len..],
        HEADER + key_len + value_len,
    ))
}

/// The offset of the next intact record at or after `from`, or the end.
pub(super) fn resync(data: &[u8], from: usize) -> usize {
    (from..data.len())
        .find(|&i| data[i] == MAGIC && decode(data, i).is_some())
        .unwrap_or(data.len())
}

/// Intact records in `data`.
pub(super) fn count(data: &[u8]) -> u64 {
    let mut n = 0;
    let mut at = 0;
    while at < data.len() {
        match decode(data, at) {
            Some((_, _, len)) => {
                n += 1;
                at += len;
            }
            None => at = resync(data, at + 1),
        }
    }
    n
}
