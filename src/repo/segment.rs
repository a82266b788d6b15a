//! Chain segments: the envelopes and part indexes of [`SEGMENT_LEN`]
//! consecutive snapshots in one remote object.
//!
//! A lazy restore reads every snapshot's envelope (to check the chain) and
//! part index (to know where its objects are): two requests a snapshot,
//! which bound the time to a mount once histories are long. A writer's
//! replicator bundles both, once every snapshot of an aligned range
//! (`1..=256`, `257..=512`, ...) is on the remote, into one segment
//! (`src/replication/backfill.rs`), and a lazy restore reads one object
//! per 256 snapshots where one is present.
//!
//! A segment holds nothing the remote does not already show: envelopes
//! (checked in order like any other: parent links, tags, payload hashes)
//! and part indexes (which only say where to look: a lazy reader checks
//! every record it fetches). So it is not sealed, and a wrong, stale or
//! missing segment costs requests, never wrong bytes: a restore reads
//! around one that does not decode, and takes a snapshot whose envelope
//! there does not check from its files. A redaction or a remote prune
//! deletes the segment of a snapshot before it changes that snapshot's
//! parts or part index, and the writer writes it again.
//!
//! The snapshots after the last complete range are in the **tail
//! segment** (one object, replaced as they grow by [`TAIL_STEP`] or more),
//! so that what a restore reads one by one stays short.
//!
//! Also here: the **forget record bundle**, the remote's forget record
//! files in one object (one per forgotten snapshot: thousands for an agent
//! that keeps its last few), rewritten by a remote prune after it uploads
//! new ones, so that a restore fetches only the records it does not hold
//! (each record is signed, and verified like a file's).
//!
//! Encoding: `"SOVSEG01" || u64 first LE || u32 count LE`, then per
//! snapshot, ascending from `first`: `u32 len LE || envelope JSON || u8
//! state`, where state 1 is followed by `u32 len LE || part index` and
//! state 0 means the remote held neither a part index nor a part of that
//! snapshot (a forgotten snapshot pruned there). No trailing bytes. The
//! bundle: `"SOVFGB01" || u32 count LE`, then per record, sequence numbers
//! strictly ascending: `u64 seq LE || u32 len LE || record JSON`.

use crate::{Error, Result};

/// Snapshots per segment.
pub const SEGMENT_LEN: u64 = 256;
/// How many more snapshots than the tail segment holds make the writer
/// write it again.
pub const TAIL_STEP: u64 = 64;
/// Segment magic.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SOVSEG01";

/// The first snapshot of the segment holding `seq` (sequence numbers start
/// at 1).
pub fn first_of(seq: u64) -> u64 {
    (seq.max(1) - 1) / SEGMENT_LEN * SEGMENT_LEN + 1
}

/// Whether `first` starts a segment.
pub fn is_first(first: u64) -> bool {
    first >= 1 && first_of(first) == first
}

/// One snapshot in a segment, as the remote held it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its envelope file, byte for byte.
    pub envelope: Vec<u8>,
    /// Its part index file; `None`: the remote held no index and no part.
    pub index: Option<Vec<u8>>,
}

/// Encodes the segment starting at `first` (`members` in order).
pub fn encode(first: u64, members: &[Member]) -> Vec<u8> {
    let size: usize = members
        .iter()
        .map(|m| 9 + m.envelope.len() + m.index.as_ref().map_or(0, |i| 4 + i.len()))
        .sum();
    let mut b = Vec::with_capacity(SEGMENT_MAGIC.len() + 12 + size);
    b.extend_from_slice(SEGMENT_MAGIC);
    b.extend_from_slice(&first.to_le_bytes());
    b.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        b.extend_from_slice(&(m.envelope.len() as u32).to_le_bytes());
        b.extend_from_slice(&m.envelope);
        match &m.index {
            Some(i) => {
                b.push(1);
                b.extend_from_slice(&(i.len() as u32).to_le_bytes());
                b.extend_from_slice(i);
            }
            None => b.push(0),
        }
    }
    b
}

/// Decodes the segment starting at `first`: exactly [`SEGMENT_LEN`]
/// members. Anything else is a corruption error naming it.
pub fn decode(first: u64, bytes: &[u8]) -> Result<Vec<Member>> {
    let bad = |d: &str| Error::corrupt(format!("remote segment {first}"), d.to_owned());
    let (named, members) = decode_any(bytes).map_err(&bad)?;
    if named != first {
        return Err(bad("names another first snapshot"));
    }
    if members.len() as u64 != SEGMENT_LEN {
        return Err(bad("wrong number of snapshots"));
    }
    Ok(members)
}

/// Decodes the tail segment: the first snapshot it names (one that starts
/// a range) and its 1 to [`SEGMENT_LEN`] members.
pub fn decode_tail(bytes: &[u8]) -> Result<(u64, Vec<Member>)> {
    decode_any(bytes).map_err(|d| Error::corrupt("remote tail segment", d.to_owned()))
}

/// A segment's first snapshot and members, checked for shape only: the
/// first starts a range, 1 to [`SEGMENT_LEN`] members, no trailing bytes.
fn decode_any(bytes: &[u8]) -> std::result::Result<(u64, Vec<Member>), &'static str> {
    let body = bytes.strip_prefix(&SEGMENT_MAGIC[..]).ok_or("bad magic")?;
    let mut r = Reader(body);
    let first = u64::from_le_bytes(r.take(8).ok_or("truncated")?.try_into().expect("8"));
    if !is_first(first) {
        return Err("names a first snapshot that starts no range");
    }
    let count = r.u32().ok_or("truncated")? as u64;
    if count == 0 || count > SEGMENT_LEN {
        return Err("wrong number of snapshots");
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let member = (|| {
            let n = r.u32()?;
            let envelope = r.take(n)?.to_vec();
            let index = match r.take(1)?[0] {
                0 => Some(None),
                1 => {
                    let n = r.u32()?;
                    Some(Some(r.take(n)?.to_vec()))
                }
                _ => None,
            }?;
            Some(Member { envelope, index })
        })()
        .ok_or("truncated or an unknown state")?;
        out.push(member);
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok((first, out))
}

/// Magic of the forget record bundle.
pub const FORGOTTEN_MAGIC: &[u8; 8] = b"SOVFGB01";

/// Encodes the forget record bundle: the remote's forget record files
/// (sequence number, file bytes), ascending.
pub fn encode_forgotten(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let size: usize = records.iter().map(|(_, r)| 12 + r.len()).sum();
    let mut b = Vec::with_capacity(FORGOTTEN_MAGIC.len() + 4 + size);
    b.extend_from_slice(FORGOTTEN_MAGIC);
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (seq, r) in records {
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&(r.len() as u32).to_le_bytes());
        b.extend_from_slice(r);
    }
    b
}

/// Decodes the forget record bundle: sequence numbers strictly ascending,
/// from 1, no trailing bytes. Anything else is a corruption error. (The
/// records themselves are verified where they are used, as files are.)
pub fn decode_forgotten(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
    let bad = |d: &str| Error::corrupt("remote forget record bundle", d.to_owned());
    let body = bytes
        .strip_prefix(&FORGOTTEN_MAGIC[..])
        .ok_or_else(|| bad("bad magic"))?;
    let mut r = Reader(body);
    let count = r.u32().ok_or_else(|| bad("truncated"))?;
    // (At least 12 bytes each: a count the bytes cannot hold is refused
    // before anything is allocated for it.)
    if count > body.len() / 12 {
        return Err(bad("truncated"));
    }
    let mut out: Vec<(u64, Vec<u8>)> = Vec::with_capacity(count);
    for _ in 0..count {
        let (seq, record) = (|| {
            let seq = u64::from_le_bytes(r.take(8)?.try_into().expect("8"));
            let n = r.u32()?;
            Some((seq, r.take(n)?.to_vec()))
        })()
        .ok_or_else(|| bad("truncated"))?;
        if seq == 0 || out.last().is_some_and(|(s, _)| *s >= seq) {
            return Err(bad("sequence numbers not strictly ascending from 1"));
        }
        out.push((seq, record));
    }
    if !r.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

/// Reads a segment front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().expect("4")) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        (0..SEGMENT_LEN)
            .map(|i| Member {
                envelope: format!("{{\"n\":{i}}}").into_bytes(),
                index: (i % 3 != 0).then(|| vec![i as u8; (i % 5) as usize]),
            })
            .collect()
    }

    #[test]
    fn segments_round_trip_and_refuse_any_other_shape() {
        let m = members();
        let b = encode(257, &m);
        assert_eq!(decode(257, &b).unwrap(), m);
        // Another place, a cut, a byte more, one member less: refused.
        assert!(decode(1, &b).is_err());
        assert!(decode(257, &b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(257, &longer).is_err());
        assert!(decode(257, &encode(257, &m[1..])).is_err());
        let mut state = b.clone();
        state[SEGMENT_MAGIC.len() + 12 + 4 + m[0].envelope.len()] = 2;
        assert!(decode(257, &state).is_err());
    }

    #[test]
    fn a_tail_segment_holds_the_start_of_a_range() {
        let m = members();
        let b = encode(257, &m[..40]);
        assert_eq!(decode_tail(&b).unwrap(), (257, m[..40].to_vec()));
        // Not a full segment; a tail of no member, or starting mid-range,
        // is refused.
        assert!(decode(257, &b).is_err());
        assert!(decode_tail(&encode(257, &[])).is_err());
        assert!(decode_tail(&encode(258, &m[..3])).is_err());
        assert_eq!(decode_tail(&encode(1, &m)).unwrap().1.len(), m.len());
    }

    #[test]
    fn forget_record_bundles_round_trip_and_refuse_any_other_shape() {
        let r: Vec<(u64, Vec<u8>)> = [3u64, 4, 90]
            .iter()
            .map(|s| (*s, format!("{{\"seq\":{s}}}").into_bytes()))
            .collect();
        let b = encode_forgotten(&r);
        assert_eq!(decode_forgotten(&b).unwrap(), r);
        assert_eq!(
            decode_forgotten(&encode_forgotten(&[])).unwrap(),
            Vec::new()
        );
        assert!(decode_forgotten(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode_forgotten(&longer).is_err());
        let mut magic = b.clone();
        magic[0] ^= 1;
        assert!(decode_forgotten(&magic).is_err());
        // Out of order, repeated, or snapshot 0.
        for seqs in [[4u64, 3], [4, 4], [0, 1]] {
            let r: Vec<(u64, Vec<u8>)> = seqs.iter().map(|s| (*s, b"{}".to_vec())).collect();
            assert!(decode_forgotten(&encode_forgotten(&r)).is_err(), "{seqs:?}");
        }
        // A count the bytes cannot hold.
        let mut count = encode_forgotten(&r[..1]);
        count[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_forgotten(&count).is_err());
    }

    #[test]
    fn segments_are_aligned_from_one() {
        assert_eq!(first_of(1), 1);
        assert_eq!(first_of(256), 1);
        assert_eq!(first_of(257), 257);
        assert_eq!(first_of(3000), 2817);
        assert!(is_first(1) && is_first(2817) && !is_first(0) && !is_first(2));
    }
}
