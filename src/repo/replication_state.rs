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
/// `meta` key: the remote URL the replicator last started with, any
/// password left out (`remote::shown`).
pub const META_REMOTE: &str = "remote_url";
/// `meta` key: the last checkpoint error (cleared by the next checkpoint).
pub const META_CHECKPOINT_ERROR: &str = "checkpoint_error";
/// `meta` key: `<seq> <remote URL, password left out>`: every snapshot up to `seq` replicated
/// to that remote had its part index there when the replicator last looked
/// (`replication::backfill`), so the next look starts after it.
pub const META_INDEXED: &str = "remote_indexed";
/// `meta` key: `<count> <last seq> <remote URL, password left out>` of the
/// forget record bundle last written there (`history::retention`).
pub const META_BUNDLED: &str = "forgotten_bundled";

/// What the forget record bundle last written holds, as
/// `<count> <last seq> <url>`, if one was.
pub fn forgotten_bundled(agent: &Agent) -> Result<Option<String>> {
    meta_string(agent, META_BUNDLED)
}

/// Records the forget record bundle just written (`stamp` as
/// [`forgotten_bundled`] reads it).
pub fn set_forgotten_bundled(agent: &Agent, stamp: &str) -> Result<()> {
    agent
        .repo()
        .index()?
        .set_meta_lazy(&[(META_BUNDLED, Some(stamp.as_bytes()))])
}

/// The snapshot up to which the part indexes on `url` were complete when
/// last looked at (0: never looked, or at another remote).
pub fn indexed_seq(agent: &Agent, url: &str) -> Result<u64> {
    Ok(meta_string(agent, META_INDEXED)?
        .and_then(|v| {
            let (seq, at) = v.split_once(' ')?;
            (at == url).then(|| seq.parse().ok()).flatten()
        })
        .unwrap_or(0))
}

/// Records that the part indexes on `url` are complete up to `seq`.
pub fn set_indexed_seq(agent: &Agent, url: &str, seq: u64) -> Result<()> {
    agent
        .repo()
        .index()?
        .set_meta_lazy(&[(META_INDEXED, Some(format!("{seq} {url}").as_bytes()))])
}

fn meta_string(agent: &Agent, key: &str) -> Result<Option<String>> {
    Ok(agent
        .repo()
        .index()?
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

/// `meta` key: how many forgotten snapshots a follower's data dir had when
/// it last pruned their content (forget records only accumulate): a prune
/// is due while the count differs, whatever stopped the last one.
pub const META_PRUNED_FORGOTTEN: &str = "pruned_forgotten";

/// `meta` key: a follower's view of the writer's remote ([`FollowState`]).
pub const META_FOLLOW: &str = "follow_state";

/// What a follower last saw of the remote it follows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FollowState {
    /// The newest snapshot the remote listed at the last poll.
    pub remote_head: u64,
    /// When the last poll answered (ms since the epoch).
    pub polled_at_ms: i64,
    /// The last error, cleared by the next good poll.
    pub error: Option<String>,
    /// The remote failed verification: the follower no longer advances.
    pub stalled: bool,
    /// The remote followed, as shown (credentials left out).
    #[serde(default)]
    pub remote: Option<String>,
}

impl FollowState {
    /// The state recorded by a follower of `agent`, if it ever followed.
    pub fn read(agent: &Agent) -> Result<Option<Self>> {
        Ok(agent
            .repo()
            .index()?
            .meta(META_FOLLOW)?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Records this state for `agent`.
    pub fn write(&self, agent: &Agent) -> Result<()> {
        let v = serde_json::to_vec(self).expect("plain struct serializes");
        agent.repo().index()?.set_meta(META_FOLLOW, Some(&v))
    }
}
