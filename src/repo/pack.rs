//! The pack record format: one encoder and one decoder.
//!
//! A pack (a local pack file, or a part of one snapshot on the remote) is
//! `PACK_MAGIC` followed by records `id (32) || kind (1) || len u32 LE ||
//! sealed bytes (len)`. The local store appends records to pack files; the
//! replicator and redaction build remote parts; restore and redaction
//! decode them. Sealed bytes only: nothing here holds a key.
//!
//! Local packs also hold commit records (kind [`COMMIT_KIND`]): after a
//! snapshot's objects, its envelope (`id` = the envelope hash, body = the
//! envelope's binary form, or its JSON wire form in older packs; the
//! manifest in it is sealed). They make a pack the commit
//! record of the snapshots it holds: a pack synced up to a commit record
//! lets recovery rebuild what the index had not yet synced. Remote parts
//! never hold one (the envelope travels beside them).

use crate::seal::envelope::Envelope;
use crate::seal::tree::{ObjectId, ObjectKind};
use crate::{Error, Result};

/// Pack magic.
pub const PACK_MAGIC: &[u8; 8] = b"SOVPACK1";
/// Bytes of a record header: id (32), kind (1), length (4).
pub const RECORD_HEADER: u64 = 32 + 1 + 4;

/// Appends one record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, id: &ObjectId, kind: ObjectKind, sealed: &[u8]) {
    encode_record_header(buf, id, kind, sealed.len());
    buf.extend_from_slice(sealed);
}

/// Appends the header of a record whose sealed bytes, `sealed_len` of
/// them, the caller appends next.
pub fn encode_record_header(buf: &mut Vec<u8>, id: &ObjectId, kind: ObjectKind, sealed_len: usize) {
    buf.extend_from_slice(&id.0);
    buf.push(kind as u8);
    buf.extend_from_slice(&(sealed_len as u32).to_le_bytes());
}

/// Record kind of a commit record (local packs only): `'C'`, outside the
/// object kinds.
pub const COMMIT_KIND: u8 = 0x43;

/// Appends the commit record of the snapshot `env` seals to `buf` (the
/// envelope's binary form, [`Envelope::to_record`]).
pub fn encode_commit(buf: &mut Vec<u8>, env: &Envelope) {
    let body = env.to_record();
    buf.extend_from_slice(&env.hash());
    buf.push(COMMIT_KIND);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
}

/// Decodes the body of a commit record whose header named `id`: the
/// envelope, which must parse and hash to `id`. Nothing is opened here: the
/// caller checks it extends the chain and that its manifest opens.
pub fn decode_commit(id: &ObjectId, body: &[u8]) -> Result<Envelope> {
    let env = commit_envelope(body)?;
    if env.hash() != id.0 {
        return Err(Error::corrupt(
            format!("commit record of snapshot {}", env.sequence_number),
            "the envelope does not hash to the record's id",
        ));
    }
    Ok(env)
}

/// The envelope a commit record's body holds: its binary form, or the JSON
/// wire form builds before tree format 8 wrote (it starts with `{`).
/// Nothing is checked but the encoding and the versions.
pub fn commit_envelope(body: &[u8]) -> Result<Envelope> {
    match body.first() {
        Some(b'{') => Envelope::from_json(body),
        _ => Envelope::from_record(body),
    }
}

/// One record of a local pack, decoded.
#[derive(Debug)]
pub enum Record<'a> {
    /// A sealed object.
    Object(ObjectId, ObjectKind, &'a [u8]),
    /// A commit record: the envelope of the snapshot whose objects precede it.
    Commit(Envelope),
}

/// Decodes one local record from its header fields and body.
pub fn decode_record<'a>(id: ObjectId, kind: u8, body: &'a [u8]) -> Result<Record<'a>> {
    if kind == COMMIT_KIND {
        return decode_commit(&id, body).map(Record::Commit);
    }
    let kind = ObjectKind::from_u8(kind)
        .ok_or_else(|| Error::corrupt("pack record", format!("unknown kind {kind}")))?;
    Ok(Record::Object(id, kind, body))
}

/// The records of a whole local pack file's bytes. A bad magic, an unknown
/// kind, a commit record that does not decode or a truncated record is an
/// error.
pub fn decode_local(pack: &[u8]) -> Result<Vec<Record<'_>>> {
    split(pack)
        .map_err(|d| Error::corrupt("local pack", d))?
        .into_iter()
        .map(|(id, kind, body)| decode_record(id, kind, body))
        .collect()
}

/// One raw record: id, kind byte, body.
type RawRecord<'a> = (ObjectId, u8, &'a [u8]);

/// Splits a pack's bytes into raw records, or says what is wrong with them
/// (bad magic, a truncated header or record).
fn split(pack: &[u8]) -> std::result::Result<Vec<RawRecord<'_>>, &'static str> {
    let mut rest = pack.strip_prefix(&PACK_MAGIC[..]).ok_or("bad magic")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let h = rest
            .first_chunk::<{ RECORD_HEADER as usize }>()
            .ok_or("truncated record header")?;
        let (id, kind, len) = decode_header(h);
        rest = &rest[RECORD_HEADER as usize..];
        let len = len as usize;
        if rest.len() < len {
            return Err("truncated record");
        }
        out.push((id, kind, &rest[..len]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Decodes a record header: (id, raw kind byte, sealed length).
pub fn decode_header(h: &[u8; RECORD_HEADER as usize]) -> (ObjectId, u8, u32) {
    let id = ObjectId(h[..32].try_into().expect("32"));
    let len = u32::from_le_bytes(h[33..37].try_into().expect("4"));
    (id, h[32], len)
}

/// The records of one remote pack part of snapshot `seq`: (id, kind,
/// sealed bytes). A bad magic, an unknown kind (a commit record included:
/// remote parts never carry one) or a truncated record is a corruption
/// error naming the snapshot.
pub fn decode_part(seq: u64, part: &[u8]) -> Result<Vec<(ObjectId, ObjectKind, &[u8])>> {
    let bad = |d: &str| Error::corrupt(format!("remote pack of snapshot {seq}"), d.to_owned());
    split(part)
        .map_err(bad)?
        .into_iter()
        .map(|(id, kind, body)| {
            let kind = ObjectKind::from_u8(kind).ok_or_else(|| bad("unknown object kind"))?;
            Ok((id, kind, body))
        })
        .collect()
}

/// Magic of a remote part index (`indexes/` on the remote).
pub const INDEX_MAGIC: &[u8; 8] = b"SOVIDX01";
/// Bytes of one part index entry: id (32), kind (1), part, offset, length
/// (u32 LE each).
const INDEX_ENTRY: usize = 32 + 1 + 4 + 4 + 4;

/// Where one object of a snapshot's remote pack parts is: the part and the
/// offset of its sealed bytes (after the record header) in it. An index
/// only says where to look: a reader checks the record header found there
/// and the object's tag and id, so a wrong entry costs a fetch, never
/// wrong bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartEntry {
    /// The object's id.
    pub id: ObjectId,
    /// Its kind.
    pub kind: ObjectKind,
    /// The part it is in.
    pub part: u32,
    /// Offset of its sealed bytes in that part.
    pub offset: u32,
    /// Length of its sealed bytes.
    pub len: u32,
}

/// The entries of remote part `part` of snapshot `seq`, from its bytes.
pub fn part_entries(seq: u64, part: u32, bytes: &[u8]) -> Result<Vec<PartEntry>> {
    let base = bytes.as_ptr() as usize;
    Ok(decode_part(seq, bytes)?
        .into_iter()
        .map(|(id, kind, sealed)| PartEntry {
            id,
            kind,
            part,
            offset: (sealed.as_ptr() as usize - base) as u32,
            len: sealed.len() as u32,
        })
        .collect())
}

/// Encodes a snapshot's part index: the magic, then the entries.
pub fn encode_index(entries: &[PartEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(INDEX_MAGIC.len() + entries.len() * INDEX_ENTRY);
    b.extend_from_slice(INDEX_MAGIC);
    for e in entries {
        b.extend_from_slice(&e.id.0);
        b.push(e.kind as u8);
        b.extend_from_slice(&e.part.to_le_bytes());
        b.extend_from_slice(&e.offset.to_le_bytes());
        b.extend_from_slice(&e.len.to_le_bytes());
    }
    b
}

/// Decodes the part index of snapshot `seq`; a bad magic, a cut entry or
/// an unknown kind is a corruption error naming the snapshot.
pub fn decode_index(seq: u64, bytes: &[u8]) -> Result<Vec<PartEntry>> {
    let bad =
        |d: &str| Error::corrupt(format!("remote part index of snapshot {seq}"), d.to_owned());
    let rest = bytes
        .strip_prefix(&INDEX_MAGIC[..])
        .ok_or_else(|| bad("bad magic"))?;
    if rest.len() % INDEX_ENTRY != 0 {
        return Err(bad("truncated entry"));
    }
    rest.chunks_exact(INDEX_ENTRY)
        .map(|e| {
            let u = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4"));
            Ok(PartEntry {
                id: ObjectId(e[..32].try_into().expect("32")),
                kind: ObjectKind::from_u8(e[32]).ok_or_else(|| bad("unknown object kind"))?,
                part: u(33),
                offset: u(37),
                len: u(41),
            })
        })
        .collect()
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

    /// A part's entries point at each record's sealed bytes, and the
    /// index round-trips; a cut or a bad kind is refused.
    #[test]
    fn part_index_points_at_each_record() {
        let mut p = PACK_MAGIC.to_vec();
        encode_record(&mut p, &ObjectId([7; 32]), ObjectKind::Chunk, b"sealed");
        encode_record(&mut p, &ObjectId([9; 32]), ObjectKind::DirNode, b"xy");
        let e = part_entries(4, 3, &p).unwrap();
        assert_eq!(e.len(), 2);
        for (e, body) in e.iter().zip([&b"sealed"[..], b"xy"]) {
            assert_eq!(e.part, 3);
            assert_eq!(&p[e.offset as usize..(e.offset + e.len) as usize], body);
            let h = (e.offset as usize) - RECORD_HEADER as usize;
            let (id, kind, len) = decode_header(p[h..e.offset as usize].try_into().unwrap());
            assert_eq!((id, kind, len), (e.id, e.kind as u8, e.len));
        }
        let b = encode_index(&e);
        assert_eq!(decode_index(4, &b).unwrap(), e);
        assert!(decode_index(4, &b[..b.len() - 1]).is_err());
        assert!(decode_index(4, &b[1..]).is_err());
        let mut bad = b.clone();
        bad[8 + 32] = 0xEE;
        assert!(decode_index(4, &bad).is_err());
    }
}
