//! The pack record format: one encoder and one decoder.
//!
//! A pack (a local pack file, or a part of one snapshot on the remote) is
//! `PACK_MAGIC` followed by records `id (32) || kind (1) || len u32 LE ||
//! sealed bytes (len)`. The local store appends records to pack files; the
//! replicator and redaction build remote parts; restore and redaction
//! decode them. Sealed bytes only: nothing here holds a key.

use crate::seal::tree::{ObjectId, ObjectKind};
use crate::{Error, Result};

/// Pack magic.
pub const PACK_MAGIC: &[u8; 8] = b"SOVPACK1";
/// Bytes of a record header: id (32), kind (1), length (4).
pub const RECORD_HEADER: u64 = 32 + 1 + 4;

/// Appends one record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, id: &ObjectId, kind: ObjectKind, sealed: &[u8]) {
    buf.extend_from_slice(&id.0);
    buf.push(kind as u8);
    buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    buf.extend_from_slice(sealed);
}

/// Decodes a record header: (id, raw kind byte, sealed length).
pub fn decode_header(h: &[u8; RECORD_HEADER as usize]) -> (ObjectId, u8, u32) {
    let id = ObjectId(h[..32].try_into().expect("32"));
    let len = u32::from_le_bytes(h[33..37].try_into().expect("4"));
    (id, h[32], len)
}

/// The records of one remote pack part of snapshot `seq`: (id, kind,
/// sealed bytes). A bad magic, an unknown kind or a truncated record is a
/// corruption error naming the snapshot.
pub fn decode_part(seq: u64, part: &[u8]) -> Result<Vec<(ObjectId, ObjectKind, &[u8])>> {
    let bad = |d: &str| Error::corrupt(format!("remote pack of snapshot {seq}"), d.to_owned());
    let mut rest = part
        .strip_prefix(&PACK_MAGIC[..])
        .ok_or_else(|| bad("bad magic"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some(h) = rest.first_chunk::<{ RECORD_HEADER as usize }>() else {
            return Err(bad("truncated record header"));
        };
        let (id, kind, len) = decode_header(h);
        let kind = ObjectKind::from_u8(kind).ok_or_else(|| bad("unknown object kind"))?;
        rest = &rest[RECORD_HEADER as usize..];
        let len = len as usize;
        if rest.len() < len {
            return Err(bad("truncated record"));
        }
        out.push((id, kind, &rest[..len]));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut p = PACK_MAGIC.to_vec();
        encode_record(&mut p, &ObjectId([7; 32]), ObjectKind::Chunk, b"sealed");
        encode_record(&mut p, &ObjectId([9; 32]), ObjectKind::DirNode, b"");
        let recs = decode_part(1, &p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].0, recs[0].1, recs[0].2),
            (ObjectId([7; 32]), ObjectKind::Chunk, &b"sealed"[..])
        );
        assert_eq!(recs[1].2, b"");
        for cut in 1..p.len() {
            if cut == PACK_MAGIC.len() || cut == p.len() - RECORD_HEADER as usize {
                continue; // whole records
            }
            assert!(decode_part(1, &p[..cut]).is_err(), "cut at {cut} decoded");
        }
    }
}
