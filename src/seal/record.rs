//! The signed-record core shared by checkpoints, forget records and
//! redaction records.
//!
//! Each record is one JSON object whose first fields are `format`,
//! `version` and `agent_id` (the agent's keyed id, hex), and whose
//! `signature` is an Ed25519 signature by the agent's checkpoint key over
//! the record's message:
//!
//! ```text
//! message = format "\n" version "\n" agent_id "\n" body                        (version 1)
//! message = format "\n" version "\n" agent_id "\n" key_version "\n" body      (version 2)
//! ```
//!
//! where `body` is the kind's own lines ([`Signed::body`]). A record is
//! signed with the signing key of the key version in force: version-1
//! records (no `key_version` field) under key version 1, version-2 records
//! under the `key_version` they name (2 or later). Parsing checks, in
//! order: the JSON, the format, the version, the agent, the key version
//! (held), the signature. Which key version a record about a snapshot
//! must at least carry is [`check_in_force`].

use crate::seal::keys::AgentKeys;
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind of signed record.
pub trait Signed: Serialize + DeserializeOwned {
    /// The `format` field of every record of this kind.
    const FORMAT: &'static str;
    /// The newest version this program reads (it writes 1 under key
    /// version 1, 2 under later ones).
    const VERSION: u32;
    /// How errors name the kind: "checkpoint", "forget record"...
    const KIND: &'static str;

    /// The record's `format` field.
    fn format(&self) -> &str;
    /// The record's `version` field.
    fn version(&self) -> u32;
    /// The record's `key_version` field (1 when absent).
    fn key_version(&self) -> u32;
    /// Sets `version` and `key_version` before signing.
    fn set_versions(&mut self, version: u32, key_version: u32);
    /// The record's `agent_id` field.
    fn agent_id(&self) -> &str;
    /// The signed lines after the common three, each ending in `\n`.
    fn body(&self) -> String;
    /// The record's `signature` field (hex).
    fn signature(&self) -> &str;
    /// Stores the signer's public key (where the kind keeps it) and the
    /// signature, both as hex.
    fn set_signature(&mut self, public_key: String, signature: String);
    /// Names this record in errors, after [`Signed::KIND`] (" 5", " of
    /// snapshot 5"...).
    fn label(&self) -> String {
        String::new()
    }
}

/// The default of an absent `key_version` field: 1.
pub fn key_version_1() -> u32 {
    1
}

/// Whether `v` is the default key version (the field is then left out, so
/// that version-1 records keep their exact bytes).
pub fn is_key_version_1(v: &u32) -> bool {
    *v == 1
}

/// The signed bytes of `r`.
pub fn message<R: Signed>(r: &R) -> Vec<u8> {
    let kv = if r.version() >= 2 {
        format!("{}\n", r.key_version())
    } else {
        String::new()
    };
    format!(
        "{}\n{}\n{}\n{kv}{}",
        r.format(),
        r.version(),
        r.agent_id(),
        r.body()
    )
    .into_bytes()
}

/// Signs `r` (whose fields are all set but the versions and the signature)
/// with `keys`, under the key version in force.
pub fn sign<R: Signed>(keys: &AgentKeys, r: &mut R) {
    let kv = keys.key_version();
    r.set_versions(if kv >= 2 { 2 } else { 1 }, kv);
    let (_, pk, sig) = keys.checkpoint_sign(&message(r));
    r.set_signature(crate::hex::encode(&pk), crate::hex::encode(&sig));
}

/// Refuses a record about a snapshot sealed under key version
/// `snapshot_key_version` that was signed under an older version: after a
/// rotation, a holder of the retired key cannot vouch for (checkpoint,
/// forget, redact) anything sealed under the new one.
pub fn check_in_force<R: Signed>(r: &R, seq: u64, snapshot_key_version: u32) -> Result<()> {
    if r.key_version() < snapshot_key_version {
        return Err(bad(
            r,
            format!(
                "it is signed under key version {}, older than the version {snapshot_key_version} snapshot {seq} is sealed under (the retired key cannot vouch for it)",
                r.key_version()
            ),
        ));
    }
    Ok(())
}

fn bad<R: Signed>(r: &R, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("{}{}", R::KIND, r.label()), detail.into())
}

/// Checks format, version, agent and signature under `keys`.
pub fn verify<R: Signed>(r: &R, keys: &AgentKeys) -> Result<()> {
    if r.format() != R::FORMAT {
        return Err(bad(
            r,
            format!("not a {} (format {:?})", R::KIND, r.format()),
        ));
    }
    if !(1..=R::VERSION).contains(&r.version()) {
        return Err(Error::UnknownFormatVersion(r.version(), R::VERSION));
    }
    // Canonical: version 1 means key version 1, version 2 a later one.
    if (r.version() == 1) != (r.key_version() == 1) {
        return Err(bad(
            r,
            format!(
                "record version {} with key version {}",
                r.version(),
                r.key_version()
            ),
        ));
    }
    if r.agent_id() != keys.agent_id().to_hex() {
        return Err(bad(r, "it belongs to another agent"));
    }
    if !keys.has_version(r.key_version()) {
        return Err(Error::UnknownKeyVersion(
            r.key_version(),
            keys.key_version(),
        ));
    }
    let sig: [u8; 64] = crate::hex::decode_n(r.signature())
        .ok_or_else(|| bad(r, "signature is not 64 hex bytes"))?;
    if !keys.checkpoint_verify(r.key_version(), &message(r), &sig) {
        return Err(bad(
            r,
            "signature does not verify under this agent's key (forged or altered)",
        ));
    }
    Ok(())
}

/// Parses record JSON and verifies it under `keys`.
pub fn parse<R: Signed>(raw: &[u8], keys: &AgentKeys) -> Result<R> {
    let r: R = serde_json::from_slice(raw)
        .map_err(|e| Error::corrupt(R::KIND, format!("not {} JSON: {e}", R::KIND)))?;
    verify(&r, keys)?;
    Ok(r)
}
