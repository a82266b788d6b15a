//! Upload batches: the pack parts and part indexes of a run of consecutive
//! small snapshots in two remote objects.
//!
//! Uploaded one by one, every snapshot costs the remote three new objects
//! (its pack part, its part index, its envelope). A writer that commits
//! faster than it uploads (an agent saving state in a loop, an untar)
//! would pay for three object creates a snapshot; on a `file://` remote
//! that is three new files, and on a cloud store three PUTs. The
//! replicator therefore uploads a run of snapshots `first..=last` (inside
//! one aligned range of [`crate::repo::segment::SEGMENT_LEN`]) as one
//! batch part and one batch index, then their envelopes one by one (each
//! still the conditional create that fences a second writer): `k + 2`
//! objects for `k` snapshots.
//!
//! The batch part is `PACK_MAGIC` followed by each member's records in
//! order, exactly as the member's own part 0 would hold them. Each member
//! therefore has a *view*: `PACK_MAGIC || part[start..start + len]`, byte
//! for byte the part the member would have had alone, and its part index
//! (stored in the batch index) is in that view's coordinates. Readers ask
//! [`crate::repo::remote::Remote`] for a snapshot's part or index as
//! before and get the view; nothing above the storage driver knows about
//! batches.
//!
//! Like a part index, the batch index holds nothing the part does not
//! (record headers carry ids, kinds and lengths) besides the members'
//! envelope hashes, which their envelope files show: it is not sealed. A
//! lazy reader checks every record it fetches, so a wrong batch index costs
//! requests, never wrong bytes.
//!
//! Encoding of the batch index: `"SOVBIX01" || u64 first LE || u32 count
//! LE`, then per member, ascending from `first`: `envelope hash (32) || u8
//! state`, where state 1 is followed by `u64 start LE || u64 len LE || u32
//! index len LE || part index` and state 0 means the member's records left
//! the batch (its snapshot was pruned there, or its parts were rewritten
//! under its own names by a redaction). No trailing bytes.

use crate::repo::pack::PACK_MAGIC;
use crate::repo::segment;
use crate::{Error, Result};

/// Batch index magic.
pub const BATCH_MAGIC: &[u8; 8] = b"SOVBIX01";

/// Where one member's records are in the batch part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Offset of its first record in the batch part.
    pub start: u64,
    /// Bytes of its records.
    pub len: u64,
    /// Its part index (`pack::encode_index`), in the coordinates of its
    /// view (`PACK_MAGIC` then its records).
    pub index: Vec<u8>,
}

impl Place {
    /// Size of the member's view: its part 0 as it would be alone.
    pub fn view_len(&self) -> u64 {
        PACK_MAGIC.len() as u64 + self.len
    }

    /// The batch part's bytes for bytes `range` of the view, when the
    /// range starts past the magic (what a ranged read of records asks
    /// for); `None` for a range the view does not hold.
    pub fn to_batch(&self, range: &std::ops::Range<u64>) -> Option<std::ops::Range<u64>> {
        let magic = PACK_MAGIC.len() as u64;
        (range.start >= magic && range.start <= range.end && range.end <= self.view_len())
            .then(|| self.start + range.start - magic..self.start + range.end - magic)
    }
}

/// One member of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its envelope's hash.
    pub hash: [u8; 32],
    /// Where its records are; `None`: they left the batch.
    pub place: Option<Place>,
}

/// A batch index: the members of `first..first + members.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Its first snapshot.
    pub first: u64,
    /// Its members, ascending.
    pub members: Vec<Member>,
}

impl Batch {
    /// Its last snapshot.
    pub fn last(&self) -> u64 {
        self.first + self.members.len() as u64 - 1
    }

    /// Member `seq`, if the batch holds its records.
    pub fn place(&self, seq: u64, hash: &[u8; 32]) -> Option<&Place> {
        let m = self
            .members
            .get(usize::try_from(seq.checked_sub(self.first)?).ok()?)?;
        (m.hash == *hash).then_some(m.place.as_ref()).flatten()
    }

    /// Whether any member's records are still in the batch.
    pub fn holds_any(&self) -> bool {
        self.members.iter().any(|m| m.place.is_some())
    }

    /// Encodes the batch index.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(BATCH_MAGIC);
        b.extend_from_slice(&self.first.to_le_bytes());
        b.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            b.extend_from_slice(&m.hash);
            match &m.place {
                Some(p) => {
                    b.push(1);
                    b.extend_from_slice(&p.start.to_le_bytes());
                    b.extend_from_slice(&p.len.to_le_bytes());
                    b.extend_from_slice(&(p.index.len() as u32).to_le_bytes());
                    b.extend_from_slice(&p.index);
                }
                None => b.push(0),
            }
        }
        b
    }

    /// Decodes the batch index of `first..=last` (as its name says): the
    /// members must be exactly those, inside one aligned range, with
    /// places in order inside a part. Anything else is a corruption error
    /// naming it.
    pub fn decode(first: u64, last: u64, bytes: &[u8]) -> Result<Batch> {
        let bad = |d: &str| Error::corrupt(format!("remote batch {first}-{last}"), d.to_owned());
        let mut r = bytes
            .strip_prefix(&BATCH_MAGIC[..])
            .ok_or(bad("bad magic"))?;
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                return Err(bad("truncated"));
            }
            let (h, t) = r.split_at(n);
            r = t;
            Ok(h)
        };
        let named = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4")) as u64;
        if named != first || count == 0 || first.checked_add(count - 1) != Some(last) {
            return Err(bad("names other snapshots"));
        }
        if first == 0 || segment::first_of(first) != segment::first_of(last) {
            return Err(bad("crosses a range"));
        }
        let mut members = Vec::with_capacity(count as usize);
        let mut end = PACK_MAGIC.len() as u64;
        for _ in 0..count {
            let hash: [u8; 32] = take(32)?.try_into().expect("32");
            let place = match take(1)?[0] {
                0 => None,
                1 => {
                    let start = u64::from_le_bytes(take(8)?.try_into().expect("8"));
                    let len = u64::from_le_bytes(take(8)?.try_into().expect("8"));
                    let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
                    let index = take(n)?.to_vec();
                    if start < end || start.checked_add(len).is_none() {
                        return Err(bad("members out of order"));
                    }
                    end = start + len;
                    Some(Place { start, len, index })
                }
                _ => return Err(bad("bad member state")),
            };
            members.push(Member { hash, place });
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Batch { first, members })
    }
}

/// A batch part and its index being built, member by member.
pub struct Builder {
    part: Vec<u8>,
    batch: Batch,
}

impl Builder {
    /// An empty batch starting at `first`.
    pub fn new(first: u64) -> Self {
        Builder {
            part: PACK_MAGIC.to_vec(),
            batch: Batch {
                first,
                members: Vec::new(),
            },
        }
    }

    /// Adds the next member: its envelope hash, its part 0 as it would be
    /// uploaded alone (`PACK_MAGIC` then records) and that part's index.
    pub fn push(&mut self, hash: [u8; 32], part: &[u8], index: Vec<u8>) -> Result<()> {
        let records = part
            .strip_prefix(&PACK_MAGIC[..])
            .ok_or_else(|| Error::Invalid("a batch member's part has no pack magic".into()))?;
        let start = self.part.len() as u64;
        self.part.extend_from_slice(records);
        self.batch.members.push(Member {
            hash,
            place: Some(Place {
                start,
                len: records.len() as u64,
                index,
            }),
        });
        Ok(())
    }

    /// Bytes of the part so far.
    pub fn part_len(&self) -> usize {
        self.part.len()
    }

    /// The part and the index.
    pub fn finish(self) -> (Vec<u8>, Batch) {
        (self.part, self.batch)
    }
}

/// The batch part without the records of members `leaving` (their places
/// become `None`), the others moved up: the part and index a prune or a
/// redaction writes in place of `batch`'s, from `part`, its part.
pub fn without(batch: &Batch, part: &[u8], leaving: &[u64]) -> Result<(Vec<u8>, Batch)> {
    let mut b = Builder::new(batch.first);
    for (seq, m) in (batch.first..).zip(&batch.members) {
        let kept = m.place.as_ref().filter(|_| !leaving.contains(&seq));
        match kept {
            Some(p) => {
                let records = usize::try_from(p.start)
                    .ok()
                    .zip(usize::try_from(p.start + p.len).ok())
                    .and_then(|(s, e)| part.get(s..e))
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("remote batch {}-{}", batch.first, batch.last()),
                            "a member lies past the part's end",
                        )
                    })?;
                let start = b.part.len() as u64;
                b.part.extend_from_slice(records);
                b.batch.members.push(Member {
                    hash: m.hash,
                    place: Some(Place {
                        start,
                        len: p.len,
                        index: p.index.clone(),
                    }),
                });
            }
            None => b.batch.members.push(Member {
                hash: m.hash,
                place: None,
            }),
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack;
    use crate::seal::tree::{ObjectId, ObjectKind};

    /// A member's view: its part 0 as it would be alone.
    fn view(place: &Place, part: &[u8]) -> Option<Vec<u8>> {
        let records = part.get(
            usize::try_from(place.start).ok()?..usize::try_from(place.start + place.len).ok()?,
        )?;
        let mut v = Vec::with_capacity(PACK_MAGIC.len() + records.len());
        v.extend_from_slice(PACK_MAGIC);
        v.extend_from_slice(records);
        Some(v)
    }

    fn part(ids: &[u8]) -> Vec<u8> {
        let mut p = PACK_MAGIC.to_vec();
        for &i in ids {
            pack::encode_record(&mut p, &ObjectId([i; 32]), ObjectKind::Chunk, &[i; 20]);
        }
        p
    }

    fn built(parts: &[Vec<u8>]) -> (Vec<u8>, Batch) {
        let mut b = Builder::new(257);
        for (n, p) in parts.iter().enumerate() {
            let idx = pack::encode_index(&pack::part_entries(257 + n as u64, 0, p).unwrap());
            b.push([n as u8; 32], p, idx).unwrap();
        }
        b.finish()
    }

    #[test]
    fn each_members_view_is_the_part_it_would_have_had_alone() {
        let parts = [part(&[1, 2]), part(&[]), part(&[3])];
        let (whole, batch) = built(&parts);
        let batch = Batch::decode(257, 259, &batch.encode()).unwrap();
        for (n, p) in parts.iter().enumerate() {
            let seq = 257 + n as u64;
            let place = batch.place(seq, &[n as u8; 32]).unwrap();
            assert_eq!(&view(place, &whole).unwrap(), p);
            assert_eq!(place.view_len(), p.len() as u64);
            // The index's entries, read through the view's coordinates,
            // are the records' bytes.
            for e in pack::decode_index(seq, &place.index).unwrap() {
                let r = place
                    .to_batch(&(u64::from(e.offset)..u64::from(e.offset) + u64::from(e.len)))
                    .unwrap();
                assert_eq!(
                    &whole[r.start as usize..r.end as usize],
                    &p[e.offset as usize..(e.offset + e.len) as usize]
                );
            }
        }
        assert!(
            batch.place(258, &[9; 32]).is_none(),
            "another history's snapshot 258"
        );
        assert!(batch.place(260, &[3; 32]).is_none());
    }

    #[test]
    fn a_member_that_leaves_takes_its_records_and_the_others_keep_their_views() {
        let parts = [part(&[1, 2]), part(&[4]), part(&[3])];
        let (whole, batch) = built(&parts);
        let (smaller, after) = without(&batch, &whole, &[257]).unwrap();
        assert!(after.place(257, &[0; 32]).is_none());
        assert!(
            !smaller.windows(20).any(|w| w == [1u8; 20]),
            "its sealed bytes are gone"
        );
        for (n, p) in parts.iter().enumerate().skip(1) {
            let place = after.place(257 + n as u64, &[n as u8; 32]).unwrap();
            assert_eq!(&view(place, &smaller).unwrap(), p);
        }
        let (_, none) = without(&after, &smaller, &[258, 259]).unwrap();
        assert!(!none.holds_any());
        assert_eq!(Batch::decode(257, 259, &none.encode()).unwrap(), none);
    }

    #[test]
    fn a_batch_index_that_names_other_snapshots_or_does_not_decode_is_refused() {
        let (_, batch) = built(&[part(&[1]), part(&[2])]);
        let bytes = batch.encode();
        assert!(Batch::decode(257, 258, &bytes).is_ok());
        assert!(Batch::decode(257, 259, &bytes).is_err(), "another count");
        assert!(Batch::decode(1, 2, &bytes).is_err(), "another first");
        assert!(Batch::decode(257, 258, &bytes[..bytes.len() - 1]).is_err());
        let mut more = bytes.clone();
        more.push(0);
        assert!(Batch::decode(257, 258, &more).is_err());
        let crossing = Batch {
            first: 256,
            members: batch.members.clone(),
        };
        assert!(
            Batch::decode(256, 257, &crossing.encode()).is_err(),
            "crosses a range"
        );
    }
}
