//! The versioned wire format: sealed objects and snapshot envelopes.
//!
//! Architecture Invariant: this module does no I/O, reads no clock and looks
//! up no key; callers pass the [`AgentKeys`] and get bytes back.
//!
//! Every sealed blob is `IV (12) || ciphertext || tag (16)` with an AAD that
//! binds it to its context:
//!
//! ```text
//! AAD = "sovseal\0" || format_version u32 BE || agent_id (32) || kind u8 || context
//! context = object id (32)            for content objects
//!         = sequence number u64 BE    for manifests
//! ```
//!
//! so the server (or the disk) cannot swap, replay or move a blob between
//! agents, kinds, ids or positions. A snapshot envelope carries the sealed
//! manifest plus blind metadata (seed 004's fields, format and key version,
//! timestamp); its hash chains it to its parent.

use crate::seal::aead;
use crate::seal::keys::{AgentId, AgentKeys, KEY_VERSION};
use crate::seal::tree::{self, FORMAT_VERSION, Manifest, ObjectId, ObjectKind};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The all-zero parent hash of the first snapshot.
pub const GENESIS_PARENT: [u8; 32] = [0; 32];

fn aad(agent: &AgentId, kind: ObjectKind, context: &[u8]) -> Vec<u8> {
    aad_raw(agent, kind as u8, context)
}

fn aad_raw(agent: &AgentId, kind: u8, context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(8 + 4 + 32 + 1 + 48);
    a.extend_from_slice(b"sovseal\0");
    a.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    a.extend_from_slice(&agent.0);
    a.push(kind);
    a.extend_from_slice(context);
    a
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

/// Seals a content object whose id was computed by [`object_id`].
pub fn seal_object(keys: &AgentKeys, kind: ObjectKind, id: &ObjectId, plaintext: &[u8]) -> Vec<u8> {
    let key = keys.object_key(&id.0);
    aead::seal(key.expose(), &aad(&keys.agent_id(), kind, &id.0), plaintext)
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
/// do not record their version: each version held is tried, newest first,
/// and only a verifying tag is accepted (one try while only version 1
/// exists).
pub fn open_object_versioned(
    keys: &AgentKeys,
    kind: ObjectKind,
    id: &ObjectId,
    sealed: &[u8],
) -> Result<(Vec<u8>, u32)> {
    let aad = aad(&keys.agent_id(), kind, &id.0);
    for v in keys.versions_newest_first() {
        if let Ok(p) = aead::open(keys.object_key_v(v, &id.0).expose(), &aad, sealed) {
            return Ok((p, v));
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
    /// Format version of the envelope and everything it references.
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
    pub fn to_json(&self) -> Vec<u8> {
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
        if self.format_version != FORMAT_VERSION {
            return Err(Error::UnknownFormatVersion(
                self.format_version,
                FORMAT_VERSION,
            ));
        }
        if self.key_version < KEY_VERSION {
            return Err(Error::UnknownKeyVersion(self.key_version, KEY_VERSION));
        }
        Ok(())
    }
}

/// Seals a manifest into an envelope.
pub fn seal_manifest(keys: &AgentKeys, m: &Manifest) -> Envelope {
    let plain = tree::encode_manifest(m);
    let key = keys.manifest_key_v(keys.key_version(), m.seq);
    let sealed = aead::seal(
        key.expose(),
        &aad(&keys.agent_id(), ObjectKind::Manifest, &m.seq.to_be_bytes()),
        &plain,
    );
    Envelope {
        format_version: FORMAT_VERSION,
        key_version: keys.key_version(),
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
    let plain = aead::open(
        key.expose(),
        &aad(&env.agent_id, ObjectKind::Manifest, &seq.to_be_bytes()),
        &env.sealed,
    )
    .map_err(|_| Error::Tag {
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
    use std::collections::BTreeMap;

    fn manifest(keys: &AgentKeys, seq: u64) -> Manifest {
        Manifest {
            agent_id: keys.agent_id(),
            seq,
            parent: [seq as u8; 32],
            timestamp_ms: 1_700_000_000_000,
            chunk_size: tree::CHUNK_SIZE,
            inodes_per_page: tree::INODES_PER_PAGE,
            next_ino: 2,
            pages: BTreeMap::from([(0, ObjectId([5; 32]))]),
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
        v.format_version = 2;
        assert!(matches!(
            open_manifest(&keys, &v),
            Err(Error::UnknownFormatVersion(2, 1))
        ));
        let mut k = e1;
        k.key_version = 7;
        assert!(matches!(
            open_manifest(&keys, &k),
            Err(Error::UnknownKeyVersion(7, 1))
        ));
    }
}
