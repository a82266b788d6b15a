//! Keys: the master key, its custody, and every working key derived from it.
//!
//! Architecture Invariant: this module is the only place that holds key bytes.
//! Working keys are derived by HKDF-SHA256 from the master under the versioned
//! labels below, separated per agent (the agent id is part of every agent
//! label), held in [`Zeroizing`] buffers, and never printed: every key type
//! has a redacted `Debug`.
//!
//! Derivation tree (all HKDF-SHA256, PRK = HKDF-Extract(salt = none, master)):
//!
//! ```text
//! agent_id        = HMAC-SHA256(Expand(PRK, "sovseal/agent-id/v1"), agent name)
//! k_sync[agent]   = Expand(PRK, "sovseal/sync/v1"    || 0x00 || agent_id)
//! k_rest[agent]   = Expand(PRK, "sovseal/at-rest/v1" || 0x00 || agent_id)
//! object-id key   = Expand(k_sync, "sovseal/object-id/v1")           (BLAKE3 keyed hash)
//! object key(id)  = Expand(k_sync, "sovseal/object-key/v1"   || id)  (one key per object)
//! manifest key(n) = Expand(k_sync, "sovseal/manifest-key/v1" || n)   (one key per snapshot)
//! seen-head key   = Expand(k_rest, "sovseal/seen-head/v1")           (HMAC of the rollback record)
//! journal root    = Expand(k_rest, "sovseal/journal/v1")
//! journal key(h)  = Expand(journal root, "sovseal/journal-key/v1" || seq || hash)
//!                                                                    (one key per head the journal extends)
//! ```
//!
//! Per-object and per-snapshot keys keep every AES-GCM key far below 2^32
//! messages whatever the volume written. Changing any label is a key-version
//! bump and a migration, never a refactor.

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;
/// The first key version (the master key `init` creates). Later versions
/// come from `sovseal key rotate`; each has the same derivation tree under
/// its own master key.
pub const KEY_VERSION: u32 = 1;

/// HKDF label: keyed agent ids.
pub const LABEL_AGENT_ID: &str = "sovseal/agent-id/v1";
/// HKDF label: keys for everything that replicates (seed 003 `k_sync`).
pub const LABEL_SYNC: &str = "sovseal/sync/v1";
/// HKDF label: keys for local-only records (seed 003 `k_rest`).
pub const LABEL_AT_REST: &str = "sovseal/at-rest/v1";
/// HKDF label: the BLAKE3 key that names content objects.
pub const LABEL_OBJECT_ID: &str = "sovseal/object-id/v1";
/// HKDF label prefix: the AES key of one content object.
pub const LABEL_OBJECT_KEY: &str = "sovseal/object-key/v1";
/// HKDF label prefix: the AES key of one snapshot manifest.
pub const LABEL_MANIFEST_KEY: &str = "sovseal/manifest-key/v1";
/// HKDF label: the seed of the agent's Ed25519 checkpoint signing key.
pub const LABEL_CHECKPOINT: &str = "sovseal/checkpoint-key/v1";
/// HKDF label: the public fingerprint of a master key (8 bytes shown as hex).
pub const LABEL_FINGERPRINT: &str = "sovseal/key-fingerprint/v1";
/// HKDF label: the HMAC key of the local seen-head record.
pub const LABEL_SEEN_HEAD: &str = "sovseal/seen-head/v1";
/// Label of the root key of the operation journal (at rest, never replicated).
pub const LABEL_JOURNAL: &str = "sovseal/journal/v1";
/// Label of the key that seals the journal records made on top of one head.
pub const LABEL_JOURNAL_KEY: &str = "sovseal/journal-key/v1";
/// HKDF label: the key of the hash that places names in large directories
/// (from key version 1's sync key, whatever the current version).
pub const LABEL_DIR_HASH: &str = "sovseal/dir-hash/v1";

/// A 32-byte secret that is wiped on drop and never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> crate::Result<Self> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut k[..])
            .map_err(|e| crate::Error::Custody(format!("the OS random source failed: {e}")))?;
        Ok(SecretKey(k))
    }

    /// The key bytes, for the cipher and KDF only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        let mut d = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            d |= a ^ b;
        }
        d == 0
    }
}

/// The master key of one installation: version 1, created by `init`, and
/// the versions `sovseal key rotate` added, each 256 random bits. New data
/// is sealed and signed under the newest version; every version opens what
/// it sealed. Agent ids, the seen-head record and the journal stay on
/// version 1 (the identity, and local at-rest keys).
#[derive(Clone, Debug, PartialEq)]
pub struct MasterKey {
    v1: SecretKey,
    later: std::collections::BTreeMap<u32, SecretKey>,
}

impl MasterKey {
    /// Wraps version-1 master key bytes (from custody or a test).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey {
            v1: SecretKey::from_bytes(bytes),
            later: std::collections::BTreeMap::new(),
        }
    }

    /// A new random master key (version 1).
    pub fn generate() -> crate::Result<Self> {
        Ok(MasterKey {
            v1: SecretKey::generate()?,
            later: std::collections::BTreeMap::new(),
        })
    }

    /// Adds version `v` (at least 2).
    pub fn add_version(&mut self, v: u32, bytes: [u8; KEY_LEN]) {
        assert!(v >= 2, "version 1 is the base key");
        self.later.insert(v, SecretKey::from_bytes(bytes));
    }

    /// The versions held, ascending (always starting at 1).
    pub fn versions(&self) -> Vec<u32> {
        std::iter::once(1)
            .chain(self.later.keys().copied())
            .collect()
    }

    /// The newest version: new data is sealed under it.
    pub fn current_version(&self) -> u32 {
        self.later.keys().last().copied().unwrap_or(1)
    }

    /// The raw bytes of version 1, for custody only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        self.v1.expose()
    }

    /// The raw bytes of version `v`, for custody only.
    pub fn expose_version(&self, v: u32) -> Option<&[u8; KEY_LEN]> {
        match v {
            1 => Some(self.v1.expose()),
            _ => self.later.get(&v).map(SecretKey::expose),
        }
    }

    fn prk(&self) -> Hkdf<Sha256> {
        Hkdf::<Sha256>::new(None, self.v1.expose())
    }

    /// The fingerprint of version `v`.
    pub fn fingerprint_of(&self, v: u32) -> Option<String> {
        let bytes = self.expose_version(v)?;
        let k = expand(
            &Hkdf::<Sha256>::new(None, bytes),
            &[LABEL_FINGERPRINT.as_bytes()],
        );
        Some(crate::hex::encode(&k.expose()[..8]))
    }

    /// A short public name of this key (16 hex digits), derived one-way: it
    /// tells keys and exports apart and reveals nothing of the key.
    pub fn fingerprint(&self) -> String {
        let k = expand(&self.prk(), &[LABEL_FINGERPRINT.as_bytes()]);
        crate::hex::encode(&k.expose()[..8])
    }

    /// The keyed id of an agent name: HMAC-SHA256 under a key derived for
    /// that purpose. The server sees only this id, never the name.
    pub fn agent_id(&self, agent_name: &str) -> AgentId {
        let k = expand(&self.prk(), &[LABEL_AGENT_ID.as_bytes()]);
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(k.expose())
            .expect("HMAC accepts any key length");
        mac.update(agent_name.as_bytes());
        AgentId(mac.finalize().into_bytes().into())
    }

    /// All working keys of one agent, for every version.
    pub fn agent_keys(&self, agent_name: &str) -> AgentKeys {
        let id = self.agent_id(agent_name);
        let prk = self.prk();
        let rest = expand(&prk, &[LABEL_AT_REST.as_bytes(), &[0], &id.0]);
        let seen_head = expand(&from_prk(&rest), &[LABEL_SEEN_HEAD.as_bytes()]);
        let journal = expand(&from_prk(&rest), &[LABEL_JOURNAL.as_bytes()]);
        // Directory shapes must not change with a rotation: version 1.
        let sync1 = expand(&prk, &[LABEL_SYNC.as_bytes(), &[0], &id.0]);
        let dir_hash = expand(&from_prk(&sync1), &[LABEL_DIR_HASH.as_bytes()]);
        let mut versions = std::collections::BTreeMap::new();
        for v in self.versions() {
            let bytes = self.expose_version(v).expect("listed version");
            let prk_v = Hkdf::<Sha256>::new(None, bytes);
            let sync = expand(&prk_v, &[LABEL_SYNC.as_bytes(), &[0], &id.0]);
            let object_id = expand(&from_prk(&sync), &[LABEL_OBJECT_ID.as_bytes()]);
            versions.insert(v, VersionKeys { sync, object_id });
        }
        AgentKeys {
            agent_id: id,
            current: self.current_version(),
            versions,
            seen_head,
            journal,
            dir_hash,
        }
    }
}

fn from_prk(k: &SecretKey) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::from_prk(k.expose()).expect("32 bytes is a valid PRK")
}

fn expand(prk: &Hkdf<Sha256>, info: &[&[u8]]) -> SecretKey {
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    prk.expand_multi_info(info, &mut okm[..])
        .expect("32 bytes is a valid HKDF output length");
    SecretKey(okm)
}

/// The keyed id of an agent (32 bytes, shown as 64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentId(pub [u8; 32]);

impl AgentId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.to_hex())
    }
}

/// The keys of one key version of one agent.
#[derive(Clone)]
struct VersionKeys {
    sync: SecretKey,
    object_id: SecretKey,
}

/// The working keys of one agent. Cloning is cheap enough; all bytes are wiped on drop.
#[derive(Clone)]
pub struct AgentKeys {
    agent_id: AgentId,
    current: u32,
    versions: std::collections::BTreeMap<u32, VersionKeys>,
    seen_head: SecretKey,
    journal: SecretKey,
    dir_hash: SecretKey,
}

impl fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKeys")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl AgentKeys {
    /// The agent's keyed id.
    pub fn agent_id(&self) -> AgentId {
        self.agent_id
    }

    /// The key version new data is sealed under.
    pub fn key_version(&self) -> u32 {
        self.current
    }

    /// The versions held, newest first (the order to try when opening).
    pub fn versions_newest_first(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions.keys().rev().copied()
    }

    /// Whether version `v` is held.
    pub fn has_version(&self, v: u32) -> bool {
        self.versions.contains_key(&v)
    }

    fn v(&self, v: u32) -> &VersionKeys {
        self.versions
            .get(&v)
            .expect("key version held (checked by the caller)")
    }

    /// The hash that places a name in a large directory
    /// (`crate::seal::tree::DirIndex`): BLAKE3 keyed with the dir-hash key
    /// (key version 1, so that shapes survive a rotation). Keyed, so that
    /// names cannot be chosen to pile up on one path, and a directory's
    /// shape cannot be predicted from guessed names.
    pub fn dir_name_hash(&self, name: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(self.dir_hash.expose(), name).as_bytes()
    }

    /// The keyed hash that names a content object: BLAKE3 keyed with the
    /// current version's object-id key, over `kind || plaintext`.
    pub fn object_id(&self, kind: u8, plaintext: &[u8]) -> [u8; 32] {
        self.object_id_v(self.current, kind, plaintext)
    }

    /// [`AgentKeys::object_id`] under version `v`.
    pub fn object_id_v(&self, v: u32, kind: u8, plaintext: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(self.v(v).object_id.expose());
        h.update(&[kind]);
        h.update(plaintext);
        *h.finalize().as_bytes()
    }

    /// The AES-256-GCM key that seals exactly one content object (current
    /// version).
    pub fn object_key(&self, id: &[u8; 32]) -> SecretKey {
        self.object_key_v(self.current, id)
    }

    /// [`AgentKeys::object_key`] under version `v`.
    pub fn object_key_v(&self, v: u32, id: &[u8; 32]) -> SecretKey {
        expand(
            &from_prk(&self.v(v).sync),
            &[LABEL_OBJECT_KEY.as_bytes(), id],
        )
    }

    /// The AES-256-GCM key that seals exactly one snapshot manifest (current
    /// version).
    pub fn manifest_key(&self, seq: u64) -> SecretKey {
        self.manifest_key_v(self.current, seq)
    }

    /// [`AgentKeys::manifest_key`] under version `v`.
    pub fn manifest_key_v(&self, v: u32, seq: u64) -> SecretKey {
        expand(
            &from_prk(&self.v(v).sync),
            &[LABEL_MANIFEST_KEY.as_bytes(), &seq.to_be_bytes()],
        )
    }

    fn signing_key(&self, v: u32) -> ed25519_dalek::SigningKey {
        let seed = expand(&from_prk(&self.v(v).sync), &[LABEL_CHECKPOINT.as_bytes()]);
        ed25519_dalek::SigningKey::from_bytes(seed.expose())
    }

    /// Signs `msg` with the agent's Ed25519 signing key of the key version
    /// in force (the newest; seed `Expand(k_sync[v],
    /// "sovseal/checkpoint-key/v1")`): the same key on every machine that
    /// holds that version. Returns (version, public key, signature).
    pub fn checkpoint_sign(&self, msg: &[u8]) -> (u32, [u8; 32], [u8; 64]) {
        use ed25519_dalek::ed25519::signature::Signer;
        let sk = self.signing_key(self.current);
        let sig = sk.sign(msg);
        (self.current, sk.verifying_key().to_bytes(), sig.to_bytes())
    }

    /// The agent's signing public key of key version `v` (held).
    pub fn checkpoint_public_key_v(&self, v: u32) -> [u8; 32] {
        self.signing_key(v).verifying_key().to_bytes()
    }

    /// The agent's signing public key of the key version in force.
    pub fn checkpoint_public_key(&self) -> [u8; 32] {
        self.checkpoint_public_key_v(self.current)
    }

    /// Verifies a signature made with key version `v`'s signing key (strict
    /// verification: no malleable or small-order encodings). False when
    /// `v` is not held.
    pub fn checkpoint_verify(&self, v: u32, msg: &[u8], sig: &[u8; 64]) -> bool {
        if !self.has_version(v) {
            return false;
        }
        let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&self.checkpoint_public_key_v(v))
        else {
            return false;
        };
        vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// The AES-256-GCM key of the journal records made on top of the head
    /// `(seq, hash)`: one key per head, so no key seals more than the
    /// operations between two snapshots.
    pub fn journal_key(&self, seq: u64, hash: &[u8; 32]) -> SecretKey {
        expand(
            &from_prk(&self.journal),
            &[LABEL_JOURNAL_KEY.as_bytes(), &seq.to_be_bytes(), hash],
        )
    }

    /// Checks a seen-head record's MAC in constant time.
    pub fn seen_head_verify(&self, record: &[u8], mac: &[u8; 32]) -> bool {
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.seen_head.expose())
            .expect("HMAC accepts any key length");
        m.update(record);
        m.verify_slice(mac).is_ok()
    }

    /// HMAC-SHA256 of the local seen-head record.
    pub fn seen_head_mac(&self, record: &[u8]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.seen_head.expose())
            .expect("HMAC accepts any key length");
        mac.update(record);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_separated() {
        let m = MasterKey::from_bytes([7; 32]);
        let a = m.agent_keys("alpha");
        let b = m.agent_keys("beta");
        assert_ne!(a.agent_id(), b.agent_id());
        assert_ne!(a.object_id(1, b"x"), b.object_id(1, b"x"));
        assert_ne!(
            a.object_key(&[1; 32]).expose(),
            b.object_key(&[1; 32]).expose()
        );
        assert_ne!(a.manifest_key(1).expose(), b.manifest_key(1).expose());
        // Same inputs, same keys: derivation is deterministic.
        assert_eq!(
            a.manifest_key(9).expose(),
            m.agent_keys("alpha").manifest_key(9).expose()
        );
        assert_ne!(a.manifest_key(1).expose(), a.manifest_key(2).expose());
        assert_ne!(a.dir_name_hash(b"n"), b.dir_name_hash(b"n"));
        assert_ne!(
            a.dir_name_hash(b"n"),
            MasterKey::from_bytes([8; 32])
                .agent_keys("alpha")
                .dir_name_hash(b"n")
        );
    }

    #[test]
    fn key_versions_separate_new_data_and_keep_the_identity() {
        let mut m = MasterKey::from_bytes([1; 32]);
        let old = m.agent_keys("x");
        m.add_version(2, [2; 32]);
        let new = m.agent_keys("x");
        assert_eq!(new.key_version(), 2);
        assert_eq!(new.versions_newest_first().collect::<Vec<_>>(), [2, 1]);
        assert_eq!(old.agent_id(), new.agent_id());
        // Directory shapes do not change with a rotation.
        assert_eq!(old.dir_name_hash(b"n"), new.dir_name_hash(b"n"));
        assert_ne!(
            old.object_key(&[3; 32]).expose(),
            new.object_key(&[3; 32]).expose()
        );
        assert_eq!(
            old.object_key(&[3; 32]).expose(),
            new.object_key_v(1, &[3; 32]).expose()
        );
        // Signatures follow the version in force; version 1's key stays
        // what it was.
        assert_ne!(old.checkpoint_public_key(), new.checkpoint_public_key());
        assert_eq!(old.checkpoint_public_key(), new.checkpoint_public_key_v(1));
        assert_ne!(m.fingerprint_of(1), m.fingerprint_of(2));
        assert_eq!(m.fingerprint_of(1).unwrap(), m.fingerprint());
    }

    #[test]
    fn masters_are_separated() {
        let a = MasterKey::from_bytes([1; 32]).agent_keys("x");
        let b = MasterKey::from_bytes([2; 32]).agent_keys("x");
        assert_ne!(a.agent_id(), b.agent_id());
    }

    #[test]
    fn secret_keyed_hash_states_wipe_themselves() {
        // HMAC-SHA256 and HKDF-SHA256 hold their keyed state in SHA-256
        // cores and block buffers; with the `zeroize` features of sha2 and
        // hmac (Cargo.toml) those wipe themselves on drop.
        fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wipes_on_drop::<Sha256>();
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let m = MasterKey::from_bytes([0xAB; 32]);
        let s = format!("{m:?} {:?}", m.agent_keys("x"));
        assert!(s.contains("redacted"));
        assert!(!s.to_lowercase().contains("abab"));
        assert!(!s.contains("171"));
    }
}
