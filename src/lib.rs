//! sovseal: an encrypted, snapshotting state store for AI agents.
//!
//! An agent's files are kept as a chain of sealed snapshots: every change
//! set committed through the [`engine::Engine`] becomes the next snapshot,
//! AES-256-GCM sealed under keys derived from a master key in the OS
//! keychain, hash-chained to its parent, indexed in SQLite, stored as
//! ciphertext only. See `docs/ARCHITECTURE.md` for the code map and the
//! invariants, `docs/FORMAT.md` for every byte.

pub mod agent;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod engine;
pub mod envelope;
mod error;
pub mod exit;
pub mod fs;
pub mod fsutil;
pub mod fuse;
pub mod hex;
pub mod history;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod mount;
pub mod notify;
pub mod redact;
pub mod remote;
pub mod replicator;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod store;
pub mod sys;
pub mod verify;

pub use error::{Error, Result};
