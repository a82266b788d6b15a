//! The signed-record core shared by checkpoints, forget records and
//! redaction records.
//!
//! Each record is one JSON object whose first fields are `format`,
//! `version` and `agent_id` (the agent's keyed id, hex), and whose
//! `signature` is an Ed25519 signature by the agent's checkpoint key over
//! the record's message:
//!
//! ```text
//! message = format "\n" version "\n" agent_id "\n" body
//! ```
//!
//! where `body` is the kind's own lines ([`Signed::body`]). Parsing checks,
//! in order: the JSON, the format, the version, the agent, the signature.

use crate::seal::keys::AgentKeys;
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind of signed record.
pub trait Signed: Serialize + DeserializeOwned {
    /// The `format` field of every record of this kind.
    const FORMAT: &'static str;
    /// The version this program writes and reads.
    const VERSION: u32;
    /// How errors name the kind: "checkpoint", "forget record"...
    const KIND: &'static str;

    /// The record's `format` field.
    fn format(&self) -> &str;
    /// The record's `version` field.
    fn version(&self) -> u32;
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

/// The signed bytes of `r`.
pub fn message<R: Signed>(r: &R) -> Vec<u8> {
    format!(
        "{}\n{}\n{}\n{}",
        r.format(),
        r.version(),
        r.agent_id(),
        r.body()
    )
    .into_bytes()
}

/// Signs `r` (whose fields are all set but the signature) with `keys`.
pub fn sign<R: Signed>(keys: &AgentKeys, r: &mut R) {
    let (pk, sig) = keys.checkpoint_sign(&message(r));
    r.set_signature(crate::hex::encode(&pk), crate::hex::encode(&sig));
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
    if r.version() != R::VERSION {
        return Err(Error::UnknownFormatVersion(r.version(), R::VERSION));
    }
    if r.agent_id() != keys.agent_id().to_hex() {
        return Err(bad(r, "it belongs to another agent"));
    }
    let sig: [u8; 64] = crate::hex::decode_n(r.signature())
        .ok_or_else(|| bad(r, "signature is not 64 hex bytes"))?;
    if !keys.checkpoint_verify(&message(r), &sig) {
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
