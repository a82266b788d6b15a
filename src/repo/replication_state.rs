//! Replication state as the index records it: the one home of the `meta`
//! keys the replicator writes and everyone else reads.
//!
//! The durable replication queue is the index itself (snapshots above
//! `replicated_seq`), so this is repository metadata, not replicator state:
//! restore, retention and redaction read it without importing the
//! replicator.

use super::agent::Agent;
use crate::Result;

/// `meta` key: highest replicated sequence number.
pub const META_REPLICATED: &str = "replicated_seq";
/// `meta` key: the fork, if one was detected.
pub const META_FORK: &str = "replication_fork";
/// `meta` key: the last replication error.
pub const META_ERROR: &str = "replication_error";
/// `meta` key: the remote URL in use.
pub const META_REMOTE: &str = "remote_url";
/// `meta` key: the last checkpoint error (cleared by the next checkpoint).
pub const META_CHECKPOINT_ERROR: &str = "checkpoint_error";

fn meta_string(agent: &Agent, key: &str) -> Result<Option<String>> {
    Ok(agent
        .repo()
        .index()
        .meta(key)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Highest replicated sequence number recorded in the index (0: none).
pub fn replicated_seq(agent: &Agent) -> Result<u64> {
    Ok(meta_string(agent, META_REPLICATED)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The sequence number at which a fork was detected, if any.
pub fn fork_seq(agent: &Agent) -> Result<Option<u64>> {
    Ok(meta_string(agent, META_FORK)?.and_then(|s| s.parse().ok()))
}

/// Everything the index says about replication, read at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationState {
    /// Highest replicated sequence number.
    pub replicated: u64,
    /// Where a fork was detected, if one was.
    pub fork: Option<u64>,
    /// The remote URL the replicator last used.
    pub remote: Option<String>,
    /// The last replication error, cleared by the next success.
    pub error: Option<String>,
    /// The last checkpoint error, cleared by the next checkpoint.
    pub checkpoint_error: Option<String>,
}

impl ReplicationState {
    /// Reads the state of `agent`.
    pub fn read(agent: &Agent) -> Result<Self> {
        Ok(ReplicationState {
            replicated: replicated_seq(agent)?,
            fork: fork_seq(agent)?,
            remote: meta_string(agent, META_REMOTE)?,
            error: meta_string(agent, META_ERROR)?,
            checkpoint_error: meta_string(agent, META_CHECKPOINT_ERROR)?,
        })
    }
}
