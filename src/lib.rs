//! sovseal: an encrypted, snapshotting state store for AI agents.
//!
//! An agent's files are kept as a chain of sealed snapshots: every change
//! set committed through the [`engine::Engine`] becomes the next snapshot,
//! AES-256-GCM sealed under keys derived from a master key in the OS
//! keychain, hash-chained to its parent, indexed in SQLite, stored as
//! ciphertext only. See `docs/ARCHITECTURE.md` for the code map and the
//! invariants, `docs/FORMAT.md` for every byte.

// Layers, each importing only those below it (docs/ARCHITECTURE.md):
pub mod cli;
pub mod custody;
pub mod engine;
pub mod history;
pub mod mount;
pub mod replication;
pub mod repo;
pub mod seal;

// Shared by every layer.
pub mod cache;
pub mod config;
mod error;
pub mod exit;
pub mod fsutil;
pub mod hex;
pub mod sys;
pub mod time;

pub use error::{Error, Result};
