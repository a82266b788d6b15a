//! Forget records: the signed statement that a snapshot was forgotten by
//! retention. A forgotten snapshot keeps its envelope row; the record is
//! what lets it be hidden from `.snapshots`, `snapshots` and `cat`, and
//! every reader checks its signature before hiding anything.

use crate::seal::keys::AgentKeys;
use crate::seal::record::{self, Signed};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The signed statement that snapshot `seq` (hash `hash`) was forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// `sovseal-forget`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// The agent's keyed id, hex.
    pub agent_id: String,
    /// The key version whose signing key signed it (left out, meaning 1,
    /// in version-1 records).
    #[serde(
        default = "record::key_version_1",
        skip_serializing_if = "record::is_key_version_1"
    )]
    pub key_version: u32,
    /// The forgotten snapshot.
    pub seq: u64,
    /// Its envelope hash, hex.
    pub hash: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Ed25519 signature (the checkpoint key) over [`ForgetRecord::message`], hex.
    pub signature: String,
}

/// `format` of forget records.
const FORGET_FORMAT: &str = "sovseal-forget";

impl Signed for ForgetRecord {
    const FORMAT: &'static str = FORGET_FORMAT;
    const VERSION: u32 = 2;
    const KIND: &'static str = "forget record";

    fn format(&self) -> &str {
        &self.format
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn key_version(&self) -> u32 {
        self.key_version
    }
    fn set_versions(&mut self, version: u32, key_version: u32) {
        self.version = version;
        self.key_version = key_version;
    }
    fn agent_id(&self) -> &str {
        &self.agent_id
    }
    fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.seq, self.hash, self.at_ms)
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn set_signature(&mut self, _public_key: String, signature: String) {
        self.signature = signature;
    }
    fn label(&self) -> String {
        format!(" of snapshot {}", self.seq)
    }
}

impl ForgetRecord {
    /// The signed bytes: every field but the signature.
    pub fn message(&self) -> Vec<u8> {
        record::message(self)
    }

    /// Signs a forget record.
    pub fn sign(keys: &AgentKeys, seq: u64, hash: &[u8; 32], at_ms: i64) -> Self {
        let mut r = ForgetRecord {
            format: FORGET_FORMAT.into(),
            version: 1,
            agent_id: keys.agent_id().to_hex(),
            key_version: 1,
            seq,
            hash: crate::hex::encode(hash),
            at_ms,
            signature: String::new(),
        };
        record::sign(keys, &mut r);
        r
    }

    /// Parses and verifies a record for snapshot `seq` with envelope hash
    /// `hash` (None: not known yet).
    pub fn parse(raw: &[u8], keys: &AgentKeys, seq: u64, hash: Option<&[u8; 32]>) -> Result<Self> {
        let r: ForgetRecord = record::parse(raw, keys)?;
        if r.seq != seq {
            return Err(Error::corrupt(
                format!("forget record of snapshot {seq}"),
                format!("it is signed for snapshot {}", r.seq),
            ));
        }
        if hash.is_some_and(|h| crate::hex::encode(h) != r.hash) {
            return Err(Error::corrupt(
                format!("forget record of snapshot {seq}"),
                "it names another snapshot",
            ));
        }
        Ok(r)
    }
}
