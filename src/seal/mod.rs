//! The sealing layer: key derivation, the one cipher, and every byte format.
//!
//! Architecture Invariant: nothing in `seal/` does I/O, reads a clock or
//! looks up a key; callers hand it keys and bytes and get keys and bytes
//! back. Custody of the master key (keychain, files) is `crate::custody`.
//!
//! - [`keys`]: the master key type, HKDF labels, per-agent working keys.
//! - [`aead`]: AES-256-GCM, `IV || ciphertext || tag`.
//! - [`codec`], [`tree`]: canonical binary encodings of manifests, inode
//!   pages, directory nodes and chunk lists.
//! - [`envelope`]: the AAD, sealing and opening of objects and manifests,
//!   the snapshot envelope JSON and its hash.
//! - [`record`]: the signed-record core shared by checkpoints, forget
//!   records and redaction records.
//! - [`forget`]: forget records (retention), checked by every reader that
//!   hides a snapshot.

pub mod aead;
pub mod codec;
pub mod envelope;
pub mod forget;
pub mod keys;
pub mod record;
pub mod tree;
