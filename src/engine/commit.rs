//! Commit: seal the overlay into the next snapshot.
//!
//! Write order (the atomicity argument, also in `docs/ARCHITECTURE.md`):
//! 1. dirty chunks and chunk lists (those of a chunk tree that changed,
//!    and the chunk-index nodes above them) are sealed and appended to the
//!    pack, then either one delta (a delta commit: the records and
//!    directory names changed since the previous commit, found among
//!    those the overlay marks, linked to the chain) or, at a fold, the
//!    directory nodes holding a changed name (and the index nodes above
//!    them), the inode pages holding a changed record and the page map's
//!    changed paths (only what changed: cost follows the size of the
//!    change, not of the tree or the file);
//! 2. the manifest is sealed into an envelope naming the parent's hash, and
//!    the envelope is appended after the objects as the commit record;
//! 3. its index rows (the new objects, the pack lengths and the envelope)
//!    wait for the repository's next flush, which writes those of every
//!    snapshot sealed meanwhile in one SQLite transaction (`repo`'s module
//!    doc; `synchronous = NORMAL`: nothing waits for the disk).
//!
//! The snapshot is sealed once its commit record is appended, and survives
//! a crash of the process (the page cache holds the packs; the next open
//! writes index rows it lacks from them). [`Engine::sync`] is the
//! power-loss barrier (the packs synced: one disk sync, since they hold the
//! commit records); after a power cut the next writer rebuilds from the
//! packs the snapshots whose every byte is there and the index lost, and
//! drops those that are incomplete (`repo::agent`'s recovery). A crash
//! before step 2 leaves the previous head; bytes appended after the last
//! commit record are cut off by the next writer. On error the overlay is
//! kept, so the commit can be retried.

use super::{Engine, Overlay};
use crate::Result;
use crate::repo::agent::Agent;
use crate::repo::delta::{Merged, Since};
use crate::repo::view::SnapshotView;
use crate::repo::{chunktree, dirtree, pagemap};
use crate::seal::envelope::{self, GENESIS_PARENT};
use crate::seal::tree::{
    self, CHUNK_SIZE, Chunks, Content, INODES_PER_PAGE, Inode, Manifest, ObjRef, ObjectKind, Pages,
    ROOT_INO,
};
use crate::time::now_ns;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Longest delta chain before a commit folds (writes pages and trees
/// again and starts a new chain). Longer chains write less (one big
/// directory of 20,000 one-byte files: 60.3 MB at 64, 49.5 MB at 256,
/// 44.5 MB at 1,024, docs/PERFORMANCE.md session 46) and cost readers
/// more: a view of a snapshot reads its chain back to the fold once, and a
/// lazily restored one fetches it (together: `SnapshotView::merged`).
pub const FOLD_EVERY: u32 = 256;

/// Most records and directory names changed since the fold that a commit
/// still writes as a delta: past it, it folds (the overlay holds
/// everything since the fold, in memory, and a fold writes it all).
pub const FOLD_WEIGHT: usize = 1024;

/// Most objects the check before the first delta after a redaction looks
/// up (`Engine::fold_clean`): past it, the commit folds instead.
const FOLD_CHECK_OBJECTS: usize = 65_536;

/// What a commit produced.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    /// The new head's sequence number.
    pub seq: u64,
    /// Its envelope hash.
    pub hash: [u8; 32],
    /// The inodes this commit wrote (changed, created or deleted). Empty for
    /// a rollback, which replaces the whole tree and runs unmounted.
    pub inodes: Vec<u64>,
}

/// Creates snapshot 1: an empty root directory owned by the caller.
pub(super) fn genesis(agent: &Agent) -> Result<SnapshotView> {
    let repo = agent.repo();
    let now = now_ns();
    let root = Inode {
        ino: ROOT_INO,
        perm: 0o755,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        nlink: 2,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        parent: ROOT_INO,
        xattrs: BTreeMap::new(),
        content: Content::Dir(None),
    };
    let page_no = ROOT_INO / u64::from(INODES_PER_PAGE);
    let page = tree::encode_page(page_no, &BTreeMap::from([(ROOT_INO, root)]));
    let r = repo.put_meta(ObjectKind::InodePage, &page, 1)?;
    let pages = pagemap::update(
        repo,
        &Pages::Counted(None),
        INODES_PER_PAGE,
        &BTreeMap::from([(page_no, Some((r, 1)))]),
        1,
    )?;
    let m = Manifest {
        format: tree::FORMAT_VERSION,
        agent_id: repo.keys().agent_id(),
        seq: 1,
        parent: GENESIS_PARENT,
        timestamp_ms: now / 1_000_000,
        chunk_size: CHUNK_SIZE,
        inodes_per_page: INODES_PER_PAGE,
        next_ino: ROOT_INO + 1,
        pages,
        provenance: None,
        delta: None,
    };
    let env = envelope::seal_manifest(repo.keys(), &m);
    repo.commit(&env)?;
    Ok(SnapshotView::new(repo.clone(), env.hash(), m))
}

impl Engine {
    /// Seals every uncommitted change into the next snapshot. Returns `None`
    /// when there is nothing to commit. The snapshot survives a crash of
    /// the process when this returns; [`Engine::sync`] makes it durable
    /// against a power cut.
    pub fn commit(&mut self) -> Result<Option<CommitInfo>> {
        if !self.ov.changed {
            return Ok(None);
        }
        self.seal_dirty()?;
        let repo = self.head.repo().clone();
        let base = self.head.manifest().clone();
        let ipp = u64::from(base.inodes_per_page);
        // The objects sealed below are stored at home in this snapshot.
        let home = base.seq + 1;

        let delta = self.delta_fits(&base) && self.fold_clean()?;
        // File contents and directory entries of the changed inodes. Orphans
        // (unlinked, still open) are absent from the snapshot. (A delta
        // needs only the records that differ from the chain, and the
        // written files'.)
        let record = |k: u64| {
            let v = self.ov.inodes.get(&k)?;
            Some((k, v.as_ref().filter(|i| i.nlink > 0)))
        };
        let mut changed: BTreeMap<u64, Option<Inode>> = if delta {
            // (Only records touched since the previous commit can differ
            // from the chain.)
            let candidates: BTreeSet<u64> = (self.ov.touched.iter())
                .chain(self.ov.files.keys())
                .copied()
                .collect();
            candidates
                .into_iter()
                .filter_map(record)
                .filter(|(k, v)| {
                    self.ov.files.contains_key(k) || self.committed.inode(*k) != Some(*v)
                })
                .map(|(k, v)| (k, v.cloned()))
                .collect()
        } else {
            (self.ov.inodes.keys())
                .filter_map(|k| record(*k))
                .map(|(k, v)| (k, v.cloned()))
                .collect()
        };
        for (ino, f) in &self.ov.files {
            let Some(Some(i)) = changed.get_mut(ino) else {
                continue;
            };
            let mut refs = f.refs.clone();
            let nchunks = i.size.div_ceil(u64::from(base.chunk_size)) as usize;
            refs.truncate(nchunks);
            while refs.last() == Some(&None) {
                refs.pop();
            }
            // What the file held: its unchanged lists are taken from there.
            let empty = Chunks::Inline(Vec::new());
            let base = match &i.content {
                Content::File(c) => c,
                _ => &empty,
            };
            i.content = Content::File(chunktree::build(&repo, refs, base)?);
        }
        if delta {
            return self.commit_delta(changed, home).map(Some);
        }
        // A fold: everything changed since the last one (the overlay holds
        // the chain's changes too) into pages and trees.
        // Directories: only the nodes holding a changed name are sealed
        // (and cached: the next lookup needs no decryption).
        for (ino, d) in &self.ov.dirs {
            if !changed.contains_key(ino) {
                // Names changed without the record (an operation that
                // failed past its first step; a delta wrote them): the
                // record as head has it takes the new tree.
                let i = self.head.inode(*ino)?;
                if let Some(i) = i.filter(|i| i.file_type() == tree::FileType::Dir) {
                    changed.insert(*ino, Some(i));
                }
            }
            let Some(Some(i)) = changed.get_mut(ino) else {
                continue;
            };
            let root = dirtree::update(&repo, d.base.as_ref(), &d.changes, home)?;
            debug_assert_eq!(dirtree::count(&repo, root.as_ref()).ok(), Some(d.count));
            i.content = Content::Dir(root);
        }

        // Only the pages that hold a changed inode are rewritten.
        let mut page_changes = BTreeMap::new();
        let pages_changed: BTreeSet<u64> = changed.keys().map(|ino| ino / ipp).collect();
        for page_no in pages_changed {
            let mut recs = match self.head.page(page_no)? {
                Some(p) => p.to_map(),
                None => BTreeMap::new(),
            };
            for (ino, i) in changed.range(page_no * ipp..(page_no + 1) * ipp) {
                match i {
                    Some(i) => recs.insert(*ino, i.clone()),
                    None => recs.remove(ino),
                };
            }
            if recs.is_empty() {
                page_changes.insert(page_no, None);
            } else {
                let encoded = tree::encode_page(page_no, &recs);
                let r = repo.put_meta(ObjectKind::InodePage, &encoded, home)?;
                debug_assert_eq!(
                    tree::decode_page(&encoded, base.inodes_per_page).ok(),
                    Some((page_no, recs.clone()))
                );
                let count = recs.len() as u64;
                repo.cache_page(r.id, recs);
                page_changes.insert(page_no, Some((r, count)));
            }
        }
        let pages = pagemap::update(
            &repo,
            &base.pages,
            base.inodes_per_page,
            &page_changes,
            home,
        )?;

        let m = self.next_manifest(&base, pages, None);
        let env = envelope::seal_manifest(repo.keys(), &m);
        repo.commit(&env)?;
        self.provenance.clear();
        self.committed = Arc::new(Merged::default());
        self.fold_clean = None;
        let head = SnapshotView::new(repo.clone(), env.hash(), m);
        let info = CommitInfo {
            seq: head.seq(),
            hash: head.hash(),
            inodes: changed.keys().copied().collect(),
        };
        // Orphans outlive the commit: they stay readable until unpinned.
        let mut next = Overlay {
            next_ino: head.manifest().next_ino,
            ..Overlay::default()
        };
        let orphans: Vec<u64> = self
            .ov
            .inodes
            .iter()
            .filter(|(_, i)| matches!(i, Some(i) if i.nlink == 0))
            .map(|(k, _)| *k)
            .collect();
        for ino in orphans {
            next.inodes
                .insert(ino, self.ov.inodes.remove(&ino).flatten());
            // (The fold removed it: the next delta says so too.)
            next.touched.insert(ino);
            if let Some(mut f) = self.ov.files.remove(&ino) {
                next.dirty_bytes += f.held();
                f.sealed_whole.clear();
                next.files.insert(ino, f);
            }
        }
        self.ov = next;
        self.head = Arc::new(head);
        self.committed_inos();
        self.journal_committed()?;
        Ok(Some(info))
    }

    /// Commits a new snapshot whose tree is exactly `target`'s; the
    /// history in between is kept (the new head's parent is the current
    /// head). Nothing new is sealed but the manifest (and, for a target of
    /// tree format 1 or 2, the counted page map its pages become): the
    /// tree's objects are shared. Refuses while there are uncommitted changes or open
    /// unlinked files, and a target outside `1..=head`.
    ///
    /// `target` must already be verified (every object it references):
    /// verification lives above the engine, in
    /// `crate::history::rollback::rollback`, which is what callers use.
    pub fn rollback_to(&mut self, target: &SnapshotView) -> Result<CommitInfo> {
        let seq = target.seq();
        let head_seq = self.head.seq();
        if seq == 0 || seq > head_seq {
            return Err(crate::Error::Invalid(format!(
                "snapshot {seq} is out of range: this agent has snapshots 1..={head_seq}"
            )));
        }
        // (The overlay also holds head's delta chain: not a change.)
        let orphans = self
            .ov
            .inodes
            .values()
            .any(|i| matches!(i, Some(i) if i.nlink == 0));
        if self.ov.changed || !self.ov.files.is_empty() || orphans {
            return Err(crate::Error::Invalid(
                "uncommitted changes: commit them before rolling back".into(),
            ));
        }
        let base = self.head.manifest();
        let t = target.manifest();
        let m = Manifest {
            format: tree::FORMAT_VERSION,
            agent_id: base.agent_id,
            seq: head_seq + 1,
            parent: self.head.hash(),
            timestamp_ms: crate::time::now_ms().max(base.timestamp_ms),
            chunk_size: t.chunk_size,
            inodes_per_page: t.inodes_per_page,
            // Numbers born after `seq` are free again, below `next_ino`.
            next_ino: base.next_ino.max(t.next_ino),
            // A format-1 or -2 target's pages become a counted page map.
            pages: pagemap::update(
                self.head.repo(),
                &t.pages,
                t.inodes_per_page,
                &BTreeMap::new(),
                head_seq + 1,
            )?,
            provenance: None,
            // The target's chain, on top of its pages.
            delta: t.delta,
        };
        let repo = self.head.repo().clone();
        let env = envelope::seal_manifest(repo.keys(), &m);
        let head = SnapshotView::new(repo.clone(), env.hash(), m);
        // The target's chain (what it changed on top of its pages), read
        // before the commit: an unreadable chain leaves head as it was.
        let chain = super::chain_overlay(&head)?;
        repo.commit(&env)?;
        self.install_chain(head.manifest().next_ino, chain);
        self.reset_inos();
        let info = CommitInfo {
            seq: head.seq(),
            hash: head.hash(),
            inodes: Vec::new(),
        };
        self.head = Arc::new(head);
        Ok(info)
    }
}

impl Engine {
    /// The manifest of the snapshot after head (`base`, its manifest),
    /// naming `pages` and the newest delta `delta`.
    fn next_manifest(&self, base: &Manifest, pages: Pages, delta: Option<ObjRef>) -> Manifest {
        Manifest {
            format: tree::FORMAT_VERSION,
            agent_id: self.head.repo().keys().agent_id(),
            seq: base.seq + 1,
            parent: self.head.hash(),
            timestamp_ms: crate::time::now_ms().max(base.timestamp_ms),
            chunk_size: base.chunk_size,
            inodes_per_page: base.inodes_per_page,
            next_ino: self.ov.next_ino,
            pages,
            provenance: self.provenance.record(),
            delta,
        }
    }

    /// Whether the next commit may be a delta instead of a fold: head is of
    /// tree format 8 (the first commit after an upgrade folds), its chain
    /// is shorter than [`FOLD_EVERY`], and the overlay (everything changed
    /// since the fold) holds at most [`FOLD_WEIGHT`] records and names.
    fn delta_fits(&self, base: &Manifest) -> bool {
        let weight = self.ov.inodes.len()
            + self
                .ov
                .dirs
                .values()
                .map(|d| d.changes.len())
                .sum::<usize>();
        base.format >= tree::DELTA_FORMAT
            && self.committed.depth < self.fold_every
            && weight <= FOLD_WEIGHT
    }

    /// Whether head's fold holds no record its chain replaced or removed
    /// that references an object no longer stored here. A redaction erases
    /// content a chain removed while the fold's pages still hold it (and
    /// lists the snapshots whose pages do): a delta on those pages would
    /// reach it again in a snapshot no record lists, so the next commit
    /// folds instead (it writes those records' pages again). Asked once
    /// per chain loaded (open, a follower's advance, a rollback; no
    /// redaction runs while this engine holds the writer's lock), and
    /// only where a redaction record exists: then every object below each
    /// such record is looked up (a chunk a redaction erased may sit below
    /// a list it kept). One that cannot be told (a lazily restored data
    /// dir offline) folds, which is always right.
    fn fold_clean(&mut self) -> Result<bool> {
        if let Some(clean) = self.fold_clean {
            return Ok(clean);
        }
        let clean = self.committed.inodes.is_empty()
            || !self.agent.holds_redaction_records().unwrap_or(true)
            || self.fold_records_stored().unwrap_or(false);
        self.fold_clean = Some(clean);
        Ok(clean)
    }

    /// Whether every object below the fold's records that head's chain
    /// replaced or removed is stored here. Only what the packs hold counts
    /// (a lazily restored data dir's remote index may still name an object
    /// a redaction that stopped half-way erased), and at most
    /// [`FOLD_CHECK_OBJECTS`] are looked up: past that, or on an error,
    /// the answer is no (the next commit folds).
    fn fold_records_stored(&self) -> Result<bool> {
        let repo = self.head.repo();
        let seen = std::cell::RefCell::new(std::collections::HashSet::new());
        let missing = std::cell::Cell::new(false);
        let failed = std::cell::RefCell::new(None);
        for ino in self.committed.inodes.keys() {
            let Some(old) = self.head.fold_inode(*ino)? else {
                continue;
            };
            let Content::File(c) = &old.content else {
                continue;
            };
            chunktree::walk(
                repo,
                c,
                &|r| {
                    let mut seen = seen.borrow_mut();
                    // (Below an object looked up before: done.)
                    if missing.get() || !seen.insert(r.id) {
                        return true;
                    }
                    if seen.len() > FOLD_CHECK_OBJECTS {
                        missing.set(true);
                        return true;
                    }
                    match repo.has(r) {
                        Ok(true) => false,
                        Ok(false) => {
                            missing.set(true);
                            true
                        }
                        Err(e) => {
                            failed.borrow_mut().get_or_insert(e);
                            true
                        }
                    }
                },
                &mut |_, _| Ok(()),
            )?;
            if let Some(e) = failed.take() {
                return Err(e);
            }
            if missing.get() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits `changed` (the records that differ from head's chain and
    /// those of written files, their contents built) as one delta on top
    /// of head's chain: what changed since the previous commit, one sealed
    /// object. The overlay keeps
    /// everything since the fold (the next fold writes it), less the
    /// files' dirty state, whose contents now live in their records.
    fn commit_delta(
        &mut self,
        changed: BTreeMap<u64, Option<Inode>>,
        home: u64,
    ) -> Result<CommitInfo> {
        let repo = self.head.repo().clone();
        let base = self.head.manifest().clone();
        let names: std::collections::HashMap<u64, &BTreeMap<Vec<u8>, Option<tree::DirEntry>>> =
            self.ov.dirs.iter().map(|(k, d)| (*k, &d.changes)).collect();
        let since = Since {
            named: &self.ov.named,
            restarted: &self.ov.restarted,
        };
        let delta = self
            .committed
            .delta_to(&changed, &names, Some(since), base.delta);
        // (The same as from everything changed since the fold.)
        #[cfg(debug_assertions)]
        {
            let mut all: BTreeMap<u64, Option<Inode>> = self
                .ov
                .inodes
                .iter()
                .map(|(k, v)| (*k, v.clone().filter(|i| i.nlink > 0)))
                .collect();
            all.extend(changed.iter().map(|(k, v)| (*k, v.clone())));
            let reference = self.committed.delta_to(&all, &names, None, base.delta);
            debug_assert_eq!(
                delta, reference,
                "a delta from what changed since the commit"
            );
        }
        let encoded = tree::encode_delta(&delta);
        debug_assert_eq!(tree::decode_delta(&encoded).ok().as_ref(), Some(&delta));
        let r = repo.put_meta(ObjectKind::Delta, &encoded, home)?;
        let m = self.next_manifest(&base, base.pages.clone(), Some(r));
        let env = envelope::seal_manifest(repo.keys(), &m);
        repo.commit(&env)?;
        self.provenance.clear();
        // The chain with this delta applied, in place: the previous head's
        // view shares it, so that view goes first; only when a reader
        // still holds it (a barrier syncing it, say) is the chain copied.
        self.head = Arc::new(SnapshotView::new(repo, env.hash(), m));
        let mut merged = Arc::unwrap_or_clone(std::mem::take(&mut self.committed));
        merged.apply(&delta);
        let merged = Arc::new(merged);
        self.head.supply_merged(merged.clone());
        let mut inodes: BTreeSet<u64> = delta.inodes.keys().copied().collect();
        inodes.extend(&delta.removed);
        inodes.extend(delta.dirs.keys());
        // Written files: their contents are in their records now; the
        // dirty state of those still linked goes (orphans keep theirs:
        // they are in no snapshot).
        let files: Vec<u64> = self.ov.files.keys().copied().collect();
        let mut held = 0;
        for ino in files {
            match changed.get(&ino) {
                Some(Some(i)) => {
                    self.ov.inodes.insert(ino, Some(i.clone()));
                    self.ov.files.remove(&ino);
                }
                _ => {
                    let f = self.ov.files.get_mut(&ino).expect("listed");
                    f.sealed_whole.clear();
                    held += f.held();
                }
            }
        }
        self.ov.dirty_bytes = held;
        self.ov.changed = false;
        self.ov.named.clear();
        self.ov.restarted.clear();
        self.ov.touched.clear();
        self.committed = merged;
        self.journal_committed()?;
        Ok(CommitInfo {
            seq: home,
            hash: self.head.hash(),
            inodes: inodes.into_iter().collect(),
        })
    }
}
