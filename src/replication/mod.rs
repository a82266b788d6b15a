//! Replication: committed snapshots out to the remote, in order; the
//! writer's heartbeat there, and the takeover by a follower.
//!
//! Sits above history (it signs a checkpoint when the queue drains) and is
//! used by the mount and the CLI.

pub mod backfill;
pub mod replicator;
pub mod takeover;
