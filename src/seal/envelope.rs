//! The versioned wire format: sealed objects and snapshot envelopes.
//!
//! Architecture Invariant: this module does no I/O, reads no clock and looks
//! up no key; callers pass the [`AgentKeys`] and get bytes back.
//!
//! Every sealed blob is `IV (12) || ciphertext || tag (16)` with an AAD that
//! binds it to its context:
//!
//! ```text
//! AAD (format 2) = "sovseal\0" || 2 u32 BE || agent_id (32) || kind u8
//!                  || key_version u32 BE || context
//! AAD (format 1) = "sovseal\0" || 1 u32 BE || agent_id (32) || kind u8 || context
//! context = object id (32)            for content objects
//!         = sequence number u64 BE    for manifests
//! ```
//!
//! so the server (or the disk) cannot swap, replay or move a blob between
//! agents, kinds, ids, positions or key versions. Format 2 (this build
//! writes it) binds the key version; format 1 data still opens: a format-1
//! envelope under the format-1 AAD, a content object under either (objects
//! carry no format mark; whichever verifies is checked by re-deriving the
//! object id under the version that opened it). Along a chain the key
//! version never decreases: the first envelope under a new version is the
//! rotation point, after which the old version is refused.
//!
//! A snapshot envelope carries the sealed
//! manifest plus blind metadata (seed 004's fields, format and key version,
//! timestamp); its hash chains it to its parent.

use crate::seal::aead;
use crate::seal::keys::{AgentId, AgentKeys, KEY_VERSION};
use crate::seal::tree::{self, Manifest, ObjectId, ObjectKind};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The all-zero parent hash of the first snapshot.
pub const GENESIS_PARENT: [u8; 32] = [0; 32];

/// The envelope and AAD format this build writes.
pub const FORMAT: u32 = 2;
/// The first format: no key version in the AAD. Still read.
pub const FORMAT_V1: u32 = 1;
/// Bytes of [`Envelope::to_record`]'s form before the sealed manifest.
const RECORD_FIXED: usize = 4 + 4 + 32 + 8 + 32 + 32 + 8;

/// The AAD of format `format`; `key_version` is bound from format 2 on.
fn aad(format: u32, agent: &AgentId, kind: u8, key_version: u32, context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(8 + 4 + 32 + 1 + 4 + 48);
    a.extend_from_slice(b"sovseal\0");
    a.extend_from_slice(&format.to_be_bytes());
    a.extend_from_slice(&agent.0);
    a.push(kind);
    if format >= 2 {
        a.extend_from_slice(&key_version.to_be_bytes());
    }
    a.extend_from_slice(context);
    a
}

/// The format-1 AAD (journal records, which are local and keyed by key
/// version 1's at-rest key, keep it).
fn aad_raw(agent: &AgentId, kind: u8, context: &[u8]) -> Vec<u8> {
    aad(FORMAT_V1, agent, kind, 1, context)
}

/// The AAD kind byte of journal records (not an object kind: journal
/// records never enter a pack or the remote).
pub const JOURNAL_KIND: u8 = 0x4a;

fn journal_context(seq: u64, hash: &[u8; 32], n: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(48);
    c.extend_from_slice(&seq.to_be_bytes());
    c.extend_from_slice(hash);
    c.extend_from_slice(&n.to_be_bytes());
    c
}

/// Seals record `n` of the journal on top of head `(seq, hash)`: the AAD
/// binds the agent, the head and the position, so a record cannot be
/// replayed on another head, reordered, or moved between agents.
pub fn seal_journal(keys: &AgentKeys, seq: u64, hash: &[u8; 32], n: u64, plain: &[u8]) -> Vec<u8> {
    let key = keys.journal_key(seq, hash);
    let aad = aad_raw(
        &keys.agent_id(),
        JOURNAL_KIND,
        &journal_context(seq, hash, n),
    );
    aead::seal(key.expose(), &aad, plain)
}

/// Opens record `n` of the journal on top of head `(seq, hash)`.
pub fn open_journal(
    keys: &AgentKeys,
    seq: u64,
    hash: &[u8; 32],
    n: u64,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let key = keys.journal_key(seq, hash);
    let aad = aad_raw(
        &keys.agent_id(),
        JOURNAL_KIND,
        &journal_context(seq, hash, n),
    );
    aead::open(key.expose(), &aad, sealed).map_err(|_| Error::Tag {
        what: format!("journal record {n} on snapshot {seq}"),
    })
}

/// Names a content object: the keyed hash of `kind || plaintext`.
pub fn object_id(keys: &AgentKeys, kind: ObjectKind, plaintext: &[u8]) -> ObjectId {
    ObjectId(keys.object_id(kind as u8, plaintext))
}

/// Seals a content object whose id was computed by [`object_id`], under
/// the newest key version, with the format-2 AAD.
pub fn seal_object(keys: &AgentKeys, kind: ObjectKind, id: &ObjectId, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(aead::OVERHEAD + plaintext.len());
    seal_object_into(keys, kind, id, plaintext, &mut out);
    out
}

/// Like [`seal_object`], appending the sealed bytes (`aead::OVERHEAD`
/// more than the plaintext) to `out`.
pub fn seal_object_into(
    keys: &AgentKeys,
    kind: ObjectKind,
    id: &ObjectId,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) {
    let v = keys.key_version();
    let key = keys.object_key_v(v, &id.0);
    let aad = aad(FORMAT, &keys.agent_id(), kind as u8, v, &id.0);
    aead::seal_into(key.expose(), &aad, plaintext, out);
}

/// Opens a content object; fails closed on any tag mismatch.
pub fn open_object(
    keys: &AgentKeys,
    kind: ObjectKind,
    id: &ObjectId,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    open_object_versioned(keys, kind, id, sealed).map(|(p, _)| p)
}

/// Opens a content object and tells which key version sealed it. Objects
/// do not record their version or format: each version held is tried,
/// newest first, under the format-2 AAD (which binds that version) and then
/// the format-1 AAD, and only a verifying tag is accepted. The caller must
/// re-derive the id under the returned version ([`object_id_v`]): that is
/// what ties the plaintext to the name a manifest references.
pub fn open_object_versioned(
    keys: &AgentKeys,
    kind: ObjectKind,
    id: &ObjectId,
    sealed: &[u8],
) -> Result<(Vec<u8>, u32)> {
    let mut out = vec![0u8; aead::plaintext_len(sealed.len()).unwrap_or(0)];
    let v = open_object_into(keys, kind, id, sealed, &mut out)?;
    Ok((out, v))
}

/// Like [`open_object_versioned`], with the plaintext written into `out`,
/// which must be exactly as long ([`aead::plaintext_len`]); `out` holds
/// plaintext only once a tag has verified, zeros when none does. What a
/// read of a whole chunk uses to open it straight into the reply.
pub fn open_object_into(
    keys: &AgentKeys,
    kind: ObjectKind,
    id: &ObjectId,
    sealed: &[u8],
    out: &mut [u8],
) -> Result<u32> {
    let agent = keys.agent_id();
    for v in keys.versions_newest_first() {
        let key = keys.object_key_v(v, &id.0);
        for format in [FORMAT, FORMAT_V1] {
            let aad = aad(format, &agent, kind as u8, v, &id.0);
            if aead::open_into(key.expose(), &aad, sealed, out).is_ok() {
                return Ok(v);
            }
        }
    }
    Err(Error::Tag {
        what: format!("{} {}", kind.name(), id.to_hex()),
    })
}

/// [`object_id`] under key version `v` (to check an opened object's name).
pub fn object_id_v(keys: &AgentKeys, v: u32, kind: ObjectKind, plaintext: &[u8]) -> ObjectId {
    ObjectId(keys.object_id_v(v, kind as u8, plaintext))
}

/// A snapshot envelope: what is stored per snapshot locally and remotely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Format version of the envelope and its AAD ([`FORMAT`]; format 1
    /// is still read).
    pub format_version: u32,
    /// Master key version the snapshot was sealed under.
    pub key_version: u32,
    /// Keyed hash of the agent name.
    pub agent_id: AgentId,
    /// Dense, strictly increasing from 1.
    pub sequence_number: u64,
    /// Hash of the parent envelope ([`GENESIS_PARENT`] for the first).
    pub parent_snapshot: [u8; 32],
    /// SHA-256 of the canonical plaintext manifest.
    pub client_payload_hash: [u8; 32],
    /// The sealed manifest, `IV || ciphertext || tag`.
    pub sealed: Vec<u8>,
    /// Length of `sealed`.
    pub byte_size: u64,
    /// Commit time, ms since the epoch.
    pub timestamp: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    agent_id: String,
    sequence_number: u64,
    parent_snapshot: String,
    client_payload_hash: String,
    ciphertext_b64: String,
    byte_size: u64,
    format_version: u32,
    key_version: u32,
    timestamp: i64,
}

impl Envelope {
    /// The snapshot hash: SHA-256 over every field in a fixed binary layout.
    /// It is what the child's `parent_snapshot` names.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"sovseal-envelope\0");
        h.update(self.format_version.to_be_bytes());
        h.update(self.key_version.to_be_bytes());
        h.update(self.agent_id.0);
        h.update(self.sequence_number.to_be_bytes());
        h.update(self.parent_snapshot);
        h.update(self.client_payload_hash);
        h.update(self.timestamp.to_be_bytes());
        h.update(self.byte_size.to_be_bytes());
        h.update(&self.sealed);
        h.finalize().into()
    }

    /// The JSON wire form (seed 004 plus version and timestamp fields).
    /// Written out by hand, byte for byte what serde_json writes of
    /// `EnvelopeJson` (hex and base64 need no escaping; the test compares
    /// both): a re-upload must find the same bytes on the remote as an
    /// earlier build put there, and this runs for every snapshot a restore
    /// commits (serde's string escaping was a sixth of a lazy restore's
    /// local work).
    pub fn to_json(&self) -> Vec<u8> {
        use std::io::Write as _;
        let b64_len = self.sealed.len().div_ceil(3) * 4;
        let mut out = Vec::with_capacity(400 + b64_len);
        let hex = crate::hex::encode_into;
        out.extend_from_slice(b"{\"agent_id\":\"");
        hex(&mut out, &self.agent_id.0);
        write!(
            out,
            "\",\"sequence_number\":{},\"parent_snapshot\":\"",
            self.sequence_number
        )
        .expect("to a Vec");
        hex(&mut out, &self.parent_snapshot);
        out.extend_from_slice(b"\",\"client_payload_hash\":\"");
        hex(&mut out, &self.client_payload_hash);
        out.extend_from_slice(b"\",\"ciphertext_b64\":\"");
        let at = out.len();
        out.resize(at + b64_len, 0);
        let n = B64
            .encode_slice(&self.sealed, &mut out[at..])
            .expect("sized for it");
        out.truncate(at + n);
        write!(
            out,
            "\",\"byte_size\":{},\"format_version\":{},\"key_version\":{},\"timestamp\":{}}}",
            self.byte_size, self.format_version, self.key_version, self.timestamp
        )
        .expect("to a Vec");
        out
    }

    /// The binary form a local pack's commit record holds (since tree
    /// format 8's build): `u32 format_version || u32 key_version ||
    /// agent_id || u64 sequence_number || parent_snapshot ||
    /// client_payload_hash || i64 timestamp || sealed`, big-endian;
    /// `byte_size` is the length of `sealed`. It starts with a zero byte
    /// (a format version below 2^24), the JSON form with `{`. About half
    /// the JSON form's size: the hex and base64 there spell out nothing
    /// the pack's reader needs.
    pub fn to_record(&self) -> Vec<u8> {
        debug_assert_eq!(self.byte_size, self.sealed.len() as u64);
        let mut out = Vec::with_capacity(RECORD_FIXED + self.sealed.len());
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.agent_id.0);
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.parent_snapshot);
        out.extend_from_slice(&self.client_payload_hash);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses [`Envelope::to_record`]'s form; unknown versions, a version
    /// of 2^24 or more and bytes too short for the fixed part are errors.
    pub fn from_record(b: &[u8]) -> Result<Self> {
        let bad = || Error::corrupt("envelope record", "shorter than its fixed part");
        let (fixed, sealed) = b.split_at_checked(RECORD_FIXED).ok_or_else(bad)?;
        if fixed[0] != 0 {
            return Err(Error::corrupt(
                "envelope record",
                "does not start with a zero byte",
            ));
        }
        let u32_at = |at: usize| u32::from_be_bytes(fixed[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_be_bytes(fixed[at..at + 8].try_into().expect("8"));
        let id_at = |at: usize| -> [u8; 32] { fixed[at..at + 32].try_into().expect("32") };
        let env = Envelope {
            format_version: u32_at(0),
            key_version: u32_at(4),
            agent_id: AgentId(id_at(8)),
            sequence_number: u64_at(40),
            parent_snapshot: id_at(48),
            client_payload_hash: id_at(80),
            timestamp: u64_at(112) as i64,
            byte_size: sealed.len() as u64,
            sealed: sealed.to_vec(),
        };
        env.check_versions()?;
        Ok(env)
    }

    /// [`Envelope::to_json`] through serde (what it must equal).
    #[cfg(test)]
    fn to_json_serde(&self) -> Vec<u8> {
        serde_json::to_vec(&EnvelopeJson {
            agent_id: self.agent_id.to_hex(),
            sequence_number: self.sequence_number,
            parent_snapshot: crate::hex::encode(&self.parent_snapshot),
            client_payload_hash: crate::hex::encode(&self.client_payload_hash),
            ciphertext_b64: B64.encode(&self.sealed),
            byte_size: self.byte_size,
            format_version: self.format_version,
            key_version: self.key_version,
            timestamp: self.timestamp,
        })
        .expect("envelope encodes")
    }

    /// Parses the JSON wire form; unknown versions and malformed fields are errors.
    pub fn from_json(b: &[u8]) -> Result<Self> {
        let j: EnvelopeJson = serde_json::from_slice(b)
            .map_err(|e| Error::corrupt("envelope JSON", e.to_string()))?;
        let bad = |f: &str| Error::corrupt("envelope JSON", format!("bad {f}"));
        let env = Envelope {
            format_version: j.format_version,
            key_version: j.key_version,
            agent_id: AgentId(crate::hex::decode32(&j.agent_id).ok_or_else(|| bad("agent_id"))?),
            sequence_number: j.sequence_number,
            parent_snapshot: crate::hex::decode32(&j.parent_snapshot)
                .ok_or_else(|| bad("parent_snapshot"))?,
            client_payload_hash: crate::hex::decode32(&j.client_payload_hash)
                .ok_or_else(|| bad("client_payload_hash"))?,
            sealed: B64
                .decode(j.ciphertext_b64.as_bytes())
                .map_err(|_| bad("ciphertext_b64"))?,
            byte_size: j.byte_size,
            timestamp: j.timestamp,
        };
        env.check_versions()?;
        Ok(env)
    }

    /// Refuses format versions this build does not know, and key versions
    /// that cannot exist (the key itself is checked when opening).
    pub fn check_versions(&self) -> Result<()> {
        if !(FORMAT_V1..=FORMAT).contains(&self.format_version) {
            return Err(Error::UnknownFormatVersion(self.format_version, FORMAT));
        }
        if self.key_version < KEY_VERSION {
            return Err(Error::UnknownKeyVersion(self.key_version, KEY_VERSION));
        }
        Ok(())
    }
}

/// Checks that `env` may follow a snapshot sealed under `prev_key_version`
/// in format `prev_format`: neither may decrease along a chain. The first
/// envelope under a newer key version is the rotation point; from there on
/// an envelope under an older version (what a holder of a leaked old key
/// could still seal) is refused.
pub fn check_succession(prev_key_version: u32, prev_format: u32, env: &Envelope) -> Result<()> {
    if env.key_version < prev_key_version {
        return Err(Error::ChainBroken {
            seq: env.sequence_number,
            detail: format!(
                "sealed under key version {} after snapshot {} was sealed under version {prev_key_version}: the old key version was retired by the rotation and is refused for new snapshots",
                env.key_version,
                env.sequence_number.saturating_sub(1)
            ),
        });
    }
    if env.format_version < prev_format {
        return Err(Error::ChainBroken {
            seq: env.sequence_number,
            detail: format!(
                "format {} after format {prev_format}: formats never go back",
                env.format_version
            ),
        });
    }
    Ok(())
}

/// Seals a manifest into an envelope.
pub fn seal_manifest(keys: &AgentKeys, m: &Manifest) -> Envelope {
    let plain = tree::encode_manifest(m);
    let v = keys.key_version();
    let key = keys.manifest_key_v(v, m.seq);
    let aad = aad(
        FORMAT,
        &keys.agent_id(),
        ObjectKind::Manifest as u8,
        v,
        &m.seq.to_be_bytes(),
    );
    let sealed = aead::seal(key.expose(), &aad, &plain);
    Envelope {
        format_version: FORMAT,
        key_version: v,
        agent_id: keys.agent_id(),
        sequence_number: m.seq,
        parent_snapshot: m.parent,
        client_payload_hash: Sha256::digest(&plain).into(),
        byte_size: sealed.len() as u64,
        sealed,
        timestamp: m.timestamp_ms,
    }
}

/// Opens an envelope: versions, size, tag, payload hash (`vsr_hash_mismatch`),
/// and agreement between the manifest and the envelope's blind fields.
pub fn open_manifest(keys: &AgentKeys, env: &Envelope) -> Result<Manifest> {
    env.check_versions()?;
    if !keys.has_version(env.key_version) {
        return Err(Error::UnknownKeyVersion(
            env.key_version,
            keys.key_version(),
        ));
    }
    let seq = env.sequence_number;
    if env.agent_id != keys.agent_id() {
        return Err(Error::ChainBroken {
            seq,
            detail: "envelope belongs to another agent".into(),
        });
    }
    if env.byte_size != env.sealed.len() as u64 {
        return Err(Error::ChainBroken {
            seq,
            detail: format!(
                "byte_size {} but {} sealed bytes",
                env.byte_size,
                env.sealed.len()
            ),
        });
    }
    let key = keys.manifest_key_v(env.key_version, seq);
    let aad = aad(
        env.format_version,
        &env.agent_id,
        ObjectKind::Manifest as u8,
        env.key_version,
        &seq.to_be_bytes(),
    );
    let plain = aead::open(key.expose(), &aad, &env.sealed).map_err(|_| Error::Tag {
        what: format!("manifest of snapshot {seq}"),
    })?;
    let hash: [u8; 32] = Sha256::digest(&plain).into();
    if hash != env.client_payload_hash {
        return Err(Error::VsrHashMismatch { seq });
    }
    let m = tree::decode_manifest(&plain)?;
    if m.seq != seq
        || m.parent != env.parent_snapshot
        || m.agent_id != env.agent_id
        || m.timestamp_ms != env.timestamp
    {
        return Err(Error::ChainBroken {
            seq,
            detail: "envelope fields disagree with the sealed manifest".into(),
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::keys::MasterKey;

    fn manifest(keys: &AgentKeys, seq: u64) -> Manifest {
        Manifest {
            format: tree::FORMAT_VERSION,
            agent_id: keys.agent_id(),
            seq,
            parent: [seq as u8; 32],
            timestamp_ms: 1_700_000_000_000,
            chunk_size: tree::CHUNK_SIZE,
            inodes_per_page: tree::INODES_PER_PAGE,
            next_ino: 2,
            pages: tree::Pages::Counted(Some(tree::ObjRef::by_id(ObjectId([5; 32])))),
            provenance: Some(tree::Provenance {
                note: Some(b"tool call 42".to_vec()),
                writers: vec![tree::Writer {
                    pid: 4242,
                    uid: 1000,
                    gid: 1000,
                    comm: b"python3".to_vec(),
                    exe: b"/usr/bin/python3.11".to_vec(),
                }],
                changes: [(7, 0), (9, 0)].into(),
                removed: [(3, 0)].into(),
                incomplete: false,
            }),
            delta: None,
        }
    }

    #[test]
    fn the_record_form_round_trips_and_refuses_what_it_would_not_write() {
        let keys = MasterKey::from_bytes([1; 32]).agent_keys("a");
        let env = seal_manifest(&keys, &manifest(&keys, 3));
        let rec = env.to_record();
        assert_eq!(rec.len(), RECORD_FIXED + env.sealed.len());
        let back = Envelope::from_record(&rec).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.hash(), env.hash());
        assert!(rec.len() < env.to_json().len() * 2 / 3, "smaller than JSON");
        // Too short, a first byte not zero, an unknown format version.
        assert!(Envelope::from_record(&rec[..RECORD_FIXED - 1]).is_err());
        let mut high = rec.clone();
        high[0] = 1;
        assert!(Envelope::from_record(&high).is_err());
        let mut unknown = rec.clone();
        unknown[3] = 9;
        assert!(Envelope::from_record(&unknown).is_err());
        // The manifest is the rest, whatever its length.
        let mut cut = rec;
        cut.pop();
        let short = Envelope::from_record(&cut).unwrap();
        assert_eq!(short.byte_size, env.byte_size - 1);
        assert_ne!(short.hash(), env.hash());
    }

    #[test]
    fn the_wire_form_is_byte_for_byte_what_serde_writes() {
        let keys = MasterKey::from_bytes([1; 32]).agent_keys("a");
        let mut env = seal_manifest(&keys, &manifest(&keys, 3));
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2_000 {
            let len = (next() % 700) as usize;
            env.sealed = (0..len).map(|_| next() as u8).collect();
            env.byte_size = next() >> (next() % 64);
            env.sequence_number = next() >> (next() % 64);
            env.timestamp = next() as i64 >> (next() % 64);
            env.format_version = next() as u32;
            env.key_version = next() as u32 >> (next() % 32);
            env.agent_id = AgentId(std::array::from_fn(|_| next() as u8));
            env.parent_snapshot = std::array::from_fn(|_| next() as u8);
            env.client_payload_hash = std::array::from_fn(|_| next() as u8);
            if round == 0 {
                (env.sealed, env.timestamp, env.sequence_number) = (Vec::new(), i64::MIN, u64::MAX);
            }
            assert_eq!(
                String::from_utf8(env.to_json()).unwrap(),
                String::from_utf8(env.to_json_serde()).unwrap()
            );
        }
    }

    #[test]
    fn envelope_roundtrip_json() {
        let keys = MasterKey::from_bytes([1; 32]).agent_keys("a");
        let env = seal_manifest(&keys, &manifest(&keys, 3));
        let back = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(back, env);
        assert_eq!(open_manifest(&keys, &back).unwrap(), manifest(&keys, 3));
    }

    #[test]
    fn objects_are_bound_to_kind_id_and_agent() {
        let m = MasterKey::from_bytes([1; 32]);
        let (a, b) = (m.agent_keys("a"), m.agent_keys("b"));
        let id = object_id(&a, ObjectKind::Chunk, b"data");
        let s = seal_object(&a, ObjectKind::Chunk, &id, b"data");
        assert_eq!(
            open_object(&a, ObjectKind::Chunk, &id, &s).unwrap(),
            b"data"
        );
        assert!(open_object(&a, ObjectKind::DirNode, &id, &s).is_err());
        assert!(open_object(&a, ObjectKind::Chunk, &ObjectId([0; 32]), &s).is_err());
        assert!(open_object(&b, ObjectKind::Chunk, &id, &s).is_err());
    }

    #[test]
    fn manifest_swap_and_payload_hash() {
        let keys = MasterKey::from_bytes([1; 32]).agent_keys("a");
        let e1 = seal_manifest(&keys, &manifest(&keys, 1));
        let e2 = seal_manifest(&keys, &manifest(&keys, 2));
        let mut swapped = e1.clone();
        swapped.sealed = e2.sealed.clone();
        assert!(matches!(
            open_manifest(&keys, &swapped),
            Err(Error::Tag { .. })
        ));
        let mut h = e1.clone();
        h.client_payload_hash[0] ^= 1;
        assert!(matches!(
            open_manifest(&keys, &h),
            Err(Error::VsrHashMismatch { seq: 1 })
        ));
        let mut v = e1.clone();
        v.format_version = 3;
        assert!(matches!(
            open_manifest(&keys, &v),
            Err(Error::UnknownFormatVersion(3, 2))
        ));
        // Format 2 binds the format: relabelled as format 1 it fails.
        let mut f = e1.clone();
        f.format_version = 1;
        assert!(matches!(open_manifest(&keys, &f), Err(Error::Tag { .. })));
        let mut k = e1;
        k.key_version = 7;
        assert!(matches!(
            open_manifest(&keys, &k),
            Err(Error::UnknownKeyVersion(7, 1))
        ));
    }

    #[test]
    fn the_key_version_is_bound_into_the_aad() {
        let mut master = MasterKey::from_bytes([1; 32]);
        master.add_version(2, [2; 32]);
        let keys = master.agent_keys("a");
        // A manifest sealed under version 2 and relabelled as version 1
        // fails, and one sealed under version 1 cannot pass as version 2.
        let e = seal_manifest(&keys, &manifest(&keys, 4));
        assert_eq!(e.key_version, 2);
        let mut down = e.clone();
        down.key_version = 1;
        assert!(matches!(
            open_manifest(&keys, &down),
            Err(Error::Tag { .. })
        ));
        // An object sealed under version 1 with the version-2 AAD (what a
        // holder of version 1 could try) does not open as version 2.
        let id = object_id(&keys, ObjectKind::Chunk, b"data");
        let key1 = keys.object_key_v(1, &id.0);
        let forged = aead::seal(
            key1.expose(),
            &aad(FORMAT, &keys.agent_id(), ObjectKind::Chunk as u8, 2, &id.0),
            b"data",
        );
        assert!(open_object(&keys, ObjectKind::Chunk, &id, &forged).is_err());
        // Each version's own seal opens, and says which version it was.
        let sealed = seal_object(&keys, ObjectKind::Chunk, &id, b"data");
        assert_eq!(
            open_object_versioned(&keys, ObjectKind::Chunk, &id, &sealed).unwrap(),
            (b"data".to_vec(), 2)
        );
    }

    #[test]
    fn format_1_envelopes_and_objects_still_open() {
        let keys = MasterKey::from_bytes([1; 32]).agent_keys("a");
        let m = manifest(&keys, 2);
        let plain = tree::encode_manifest(&m);
        let key = keys.manifest_key_v(1, 2);
        let sealed = aead::seal(
            key.expose(),
            &aad(
                FORMAT_V1,
                &keys.agent_id(),
                ObjectKind::Manifest as u8,
                1,
                &2u64.to_be_bytes(),
            ),
            &plain,
        );
        let mut env = seal_manifest(&keys, &m);
        env.format_version = FORMAT_V1;
        env.byte_size = sealed.len() as u64;
        env.sealed = sealed;
        assert_eq!(open_manifest(&keys, &env).unwrap(), m);
        let id = object_id(&keys, ObjectKind::Chunk, b"old");
        let old = aead::seal(
            keys.object_key_v(1, &id.0).expose(),
            &aad(
                FORMAT_V1,
                &keys.agent_id(),
                ObjectKind::Chunk as u8,
                1,
                &id.0,
            ),
            b"old",
        );
        assert_eq!(
            open_object(&keys, ObjectKind::Chunk, &id, &old).unwrap(),
            b"old"
        );
    }
}
