//! Rewriting packs without some objects, in one index transaction: the
//! common step of prune (dead objects of forgotten snapshots) and redaction
//! (one path's content erased from every snapshot).

use super::Repo;
use super::index::NewObject;
use crate::Result;
use crate::seal::tree::ObjectId;
use std::collections::{BTreeSet, HashSet};

/// Removes `dead` objects from the local store: the packs holding them are
/// rewritten (their other objects copied to a new pack), one index
/// transaction switches every location, then the old packs are deleted. A
/// crash before the transaction leaves the old state (the new pack is
/// unknown to the index and removed on the next open), after it the new.
/// Returns the number of packs rewritten.
pub fn remove_objects(repo: &Repo, dead: &[NewObject]) -> Result<u64> {
    if dead.is_empty() {
        return Ok(0);
    }
    let all = repo.index()?.all_objects()?;
    let dead_set: HashSet<(u64, ObjectId)> = dead.iter().map(|o| (o.home, o.id)).collect();
    let store = repo.store();
    let dropped: BTreeSet<u32> = dead.iter().map(|o| o.loc.pack).collect();
    store.roll()?;
    let mut moved = Vec::new();
    for o in all
        .iter()
        .filter(|o| !dead_set.contains(&(o.home, o.id)) && dropped.contains(&o.loc.pack))
    {
        let sealed = store.read(&o.loc)?;
        moved.push(NewObject {
            loc: store.append(&o.id, o.kind, &sealed)?,
            ..*o
        });
    }
    // Durable before the index moves any location to it (the transaction
    // below is synchronous), then the old packs go.
    store.sync()?;
    let lengths: Vec<(u32, u64)> = store
        .lengths()
        .into_iter()
        .filter(|(p, _)| !dropped.contains(p))
        .collect();
    let dropped_v: Vec<u32> = dropped.iter().copied().collect();
    repo.index()?.relocate(&moved, dead, &dropped_v, &lengths)?;
    store.mark_committed(&lengths);
    for p in &dropped_v {
        store.remove_pack(*p)?;
    }
    Ok(dropped.len() as u64)
}
