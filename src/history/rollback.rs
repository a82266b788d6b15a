//! Rollback: a new snapshot whose tree is an older snapshot's, after that
//! snapshot has been verified in full. The commit itself is the engine's
//! ([`Engine::rollback_to`]); the verification is history's.

use super::verify::verify_snapshot;
use crate::engine::{CommitInfo, Engine};
use crate::{Error, Result};

/// Verifies snapshot `seq` (every object it references) and commits a new
/// head with its tree. `seq` outside `1..=head` is refused before anything
/// is read.
pub fn rollback(e: &mut Engine, seq: u64) -> Result<CommitInfo> {
    let head_seq = e.head().seq();
    if seq == 0 || seq > head_seq {
        return Err(Error::Invalid(format!(
            "snapshot {seq} is out of range: this agent has snapshots 1..={head_seq}"
        )));
    }
    let target = e.agent().snapshot(seq)?;
    verify_snapshot(e.agent(), &target)?;
    let info = e.rollback_to(&target)?;
    e.sync()?;
    Ok(info)
}
