//! Rollback: a new snapshot whose tree is an older snapshot's, after that
//! snapshot has been verified in full. The commit itself is the engine's
//! ([`Engine::rollback_to`]); the verification is history's.

use super::verify::verify_snapshot;
use crate::engine::{CommitInfo, Engine};
use crate::{Error, Result};

/// Refuses a target that references content a redaction erased and that
/// no later snapshot holds again ([`crate::history::redact::erasable`]:
/// whether or not a crash left it in the packs): verification lets it be
/// missing there, but a new head over that tree could not be read, and a
/// follower that still holds the objects would take the new head as
/// content written again and serve it.
fn refuse_erased(e: &Engine, target: &crate::repo::view::SnapshotView) -> Result<()> {
    let allowed = crate::history::redact::allowances(e.agent())?;
    if allowed.is_empty() {
        return Ok(());
    }
    let erasable = crate::history::redact::erasable(e.agent(), &allowed)?;
    let erased = std::cell::RefCell::new(std::collections::HashSet::new());
    target.walk_objects(
        &|r| {
            let gone = erasable.contains(&r.id);
            if gone {
                erased.borrow_mut().insert(r.id);
            }
            gone
        },
        &mut |_, _| Ok(()),
    )?;
    match erased.into_inner().len() {
        0 => Ok(()),
        n => Err(Error::Invalid(format!(
            "snapshot {} references {n} objects a redaction erased: rolling back to it would make a head that cannot be read",
            target.seq()
        ))),
    }
}

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
    refuse_erased(e, &target)?;
    let info = e.rollback_to(&target)?;
    e.sync()?;
    Ok(info)
}
