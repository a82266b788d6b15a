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
/// Objects waiting for a commit are copied out of the old packs too.
/// Returns the number of packs rewritten. Runs alone: the writer lock keeps
/// commits and fetches of other handles out, and its callers make none
/// meanwhile.
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
    // Objects waiting for their snapshot's commit (a pull that stopped
    // part-way, retried at the next poll, reuses them) must neither stay in
    // a pack that goes nor lie inside a length recorded now (a recovery
    // after a crash reads the packs past the recorded lengths for what the
    // index lacks). A pack that keeps some is not recorded now (the commit
    // that takes them records it); those in a pack that goes are copied
    // past the lengths recorded now. Before the index moves: should this
    // fail, nothing has changed but where they wait.
    let waiting = repo.pending_packs();
    let lengths: Vec<(u32, u64)> = store
        .lengths()
        .into_iter()
        .filter(|(p, _)| !dropped.contains(p) && !waiting.contains(p))
        .collect();
    repo.move_pending(&|loc| dropped.contains(&loc.pack))?;
    let dropped_v: Vec<u32> = dropped.iter().copied().collect();
    repo.index()?.relocate(&moved, dead, &dropped_v, &lengths)?;
    store.mark_committed(&lengths);
    for p in &dropped_v {
        store.remove_pack(*p)?;
    }
    Ok(dropped.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::envelope;
    use crate::seal::tree::{self, ObjectKind};

    /// A snapshot committed with no tree after `parent` (its envelope's
    /// hash): what a commit record needs. Returns its envelope's hash.
    fn commit(repo: &Repo, seq: u64, parent: [u8; 32]) -> [u8; 32] {
        let m = tree::Manifest {
            format: tree::FORMAT_VERSION,
            agent_id: repo.keys().agent_id(),
            seq,
            parent,
            timestamp_ms: 0,
            chunk_size: tree::CHUNK_SIZE,
            inodes_per_page: 32,
            next_ino: 2,
            pages: tree::Pages::Counted(None),
            provenance: None,
            delta: None,
        };
        let env = envelope::seal_manifest(repo.keys(), &m);
        repo.commit(&env).unwrap();
        env.hash()
    }

    /// A follower's pull that stopped part-way leaves the snapshot's
    /// fetched objects waiting for the retry; a repack (the writer's
    /// redaction or forget records carried out meanwhile) must take them
    /// out of a pack it drops, or the retry commits places in a pack that
    /// is gone and the data dir no longer opens; and must not record a
    /// length that covers them, or a recovery after a crash, which reads
    /// the packs past the recorded lengths, would not find them for the
    /// retry's snapshot. Those in a pack that stays are not copied (the
    /// old bytes would stay where nothing removes them). Each case ends
    /// with the retry's commit and a crash before its index rows.
    #[test]
    fn objects_waiting_for_a_commit_survive_a_repack_and_a_crash_after_it() {
        for same_pack in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let waiting_bytes = b"fetched; its snapshot is not whole yet".to_vec();
            let waiting;
            {
                let (agent, lock) = crate::repo::agent::scratch(tmp.path());
                let repo = agent.repo();
                let dead = repo.put(ObjectKind::Chunk, b"erased by a record").unwrap();
                let first = commit(repo, 1, [0; 32]);
                if !same_pack {
                    repo.store().roll().unwrap();
                }
                waiting = repo.put(ObjectKind::Chunk, &waiting_bytes).unwrap();
                let (_, loc) = repo.index().unwrap().object(&dead).unwrap().unwrap();
                let waits_at = |repo: &Repo| repo.pending.lock().unwrap()[&waiting].loc;
                let before = waits_at(repo);
                assert_eq!(before.pack == loc.pack, same_pack);
                let dead = NewObject {
                    id: dead,
                    kind: ObjectKind::Chunk,
                    loc,
                    home: 0,
                };
                assert_eq!(remove_objects(repo, &[dead]).unwrap(), 1);
                let at = waits_at(repo);
                if same_pack {
                    assert_ne!(at.pack, loc.pack);
                } else {
                    assert_eq!(at, before, "copied out of a pack that stays");
                }
                let recorded = repo.index().unwrap().packs().unwrap();
                assert!(
                    recorded.get(&at.pack).is_none_or(|&len| at.offset >= len),
                    "waiting at {at:?}, inside the recorded {recorded:?}"
                );
                assert_eq!(*repo.chunk(&waiting).unwrap(), waiting_bytes);
                commit(repo, 2, first);
                // The process dies here: snapshot 2's rows are never
                // written (its packs reached the page cache).
                std::mem::forget(agent);
                drop(lock);
            }
            let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
            let head = agent.repo().index().unwrap().head_seq().unwrap();
            assert_eq!(head, Some(2), "same pack: {same_pack}");
            assert_eq!(*agent.repo().chunk(&waiting).unwrap(), waiting_bytes);
        }
    }
}
