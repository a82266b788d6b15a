//! History: everything that reads, checks, prunes or recalls whole chains.
//!
//! Sits above the engine and the repository; nothing below imports it.
//!
//! - [`verify`]: the full chain and every object, with a report.
//! - [`checkpoint`]: signed (agent, seq, hash) statements and chain checks.
//! - [`audit`]: the remote's chain held against this machine's.
//! - [`retention`]: forget by policy (signed records) and prune.
//! - [`redact`]: erase one path's content from every snapshot.
//! - [`restore`]: verified recall of a chain from the remote; trees out.
//! - [`older`]: the history before a flat start (a lazy restore from a
//!   signed checkpoint), fetched and checked after the mount serves.
//! - [`diff`]: what changed between two snapshots.
//! - [`rollback`]: a new head with an older, verified snapshot's tree.

pub mod audit;
pub mod checkpoint;
pub mod diff;
pub mod log;
pub mod older;
pub mod redact;
pub mod restore;
pub mod retention;
pub mod rollback;
pub mod verify;
