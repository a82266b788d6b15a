//! The snapshot engine: a working tree over the head snapshot, and commit.
//!
//! [`Engine`] is the single writer of one agent. It shows the head snapshot
//! plus an in-memory overlay of uncommitted changes (new and changed inodes,
//! changed directories, dirty file chunks). Operations are addressed by
//! inode number, as a filesystem adapter needs them, and fail with the errno
//! Linux programs expect, leaving the overlay unchanged on error.
//! [`Engine::commit`] seals the overlay into the next snapshot (see
//! `commit.rs`). Dirty chunk data beyond the dirty budget is sealed early
//! into content objects: plaintext never spills to disk.
//!
//! Every namespace and attribute operation is sealed into the operation
//! journal (`journal.rs`, `repo/journal.rs`) before it returns, so that a
//! crash of the process loses none; the next open applies the journal on
//! top of head again and commits it.
//!
//! Architecture Invariant: the engine knows nothing of FUSE; time, uid and
//! gid come in from the caller or the clock here.

pub mod acl;
mod commit;
mod dirty;
mod inodes;
mod provenance;
// Public (hidden from the docs) only so that tests/fuzz.rs reaches `Entry::decode`.
#[doc(hidden)]
pub mod journal;

use crate::config::{AgentName, Home};
use crate::repo::agent::{Agent, WriteLock};
use crate::repo::delta::Merged;
use crate::repo::journal::Journal;
use crate::repo::view::{self, ChunkOverlay, Reuse, SnapshotView};
use crate::repo::{chunktree, dirtree};
use crate::seal::envelope;
use crate::seal::keys::MasterKey;
use crate::seal::tree::{
    ChunkRef, Chunks, Content, DirEntry, DirRef, FileType, Inode, ObjectKind, ROOT_INO,
};
use crate::time::now_ns;
use crate::{Error, Result};
pub use commit::{CommitInfo, FOLD_EVERY, FOLD_WEIGHT};
use dirty::DirtyChunk;
use journal::{Entry, Op};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest extended attribute name, in bytes.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value, in bytes.
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// Default budget of dirty chunk bytes held in memory before sealing early.
pub const DEFAULT_DIRTY_BUDGET: usize = 64 << 20;
/// Largest file size a file may grow to, in bytes (`EFBIG` past it, as
/// for `write`, `truncate` and `fallocate` past ext4's 16 TiB; a write
/// that crosses it is cut short there). A file's chunk references are
/// held whole in memory while it changes and is committed, up to its last
/// stored chunk, holes included (33 bytes per 64 KiB chunk): at this
/// offset 16M references, about 1 GiB at the commit's peak. Without it,
/// one byte written far into a sparse file took memory in proportion to
/// its offset (the OOM killer at 64 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Attributes to change; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (`& 0o7777`).
    pub perm: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time, ns.
    pub atime: Option<i64>,
    /// New modification time, ns.
    pub mtime: Option<i64>,
}

/// The set-user-ID bit.
pub const SETUID: u32 = 0o4000;
/// The set-group-ID bit.
pub const SETGID: u32 = 0o2000;
/// The extended attribute holding a file capability.
pub const CAPABILITY: &[u8] = b"security.capability";

/// The privileges an inode carries that a change may take away: see
/// [`Engine::privileges`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    /// Group.
    pub gid: u32,
    /// True if it has a file capability ([`CAPABILITY`]).
    pub capability: bool,
}

/// Flags of `rename`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with `EEXIST` if the target exists.
    pub noreplace: bool,
    /// Atomically swap source and target (both must exist).
    pub exchange: bool,
}

/// Flags of `setxattr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrFlags {
    /// Fail with `EEXIST` if the attribute exists.
    pub create: bool,
    /// Fail with `ENODATA` if the attribute does not exist.
    pub replace: bool,
}

#[derive(Default)]
struct DirtyFile {
    refs: Vec<ChunkRef>,
    dirty: BTreeMap<u64, DirtyChunk>,
    /// Chunks a write covering them whole sealed since the last commit
    /// ([`Engine::seal_whole_chunk`]): a second such write is held as
    /// dirty data, so that rewriting a chunk between commits does not
    /// append an object each time.
    sealed_whole: BTreeSet<u64>,
}

impl DirtyFile {
    fn held(&self) -> usize {
        self.dirty.values().map(DirtyChunk::held).sum()
    }

    /// Points chunk `idx` at `r`, growing the list with holes as needed.
    fn set_ref(&mut self, idx: u64, r: ChunkRef) {
        let i = idx as usize;
        if self.refs.len() <= i {
            self.refs.resize(i + 1, None);
        }
        self.refs[i] = r;
    }
}

/// A chunk's bytes sealed as a content object: `None` (a hole, nothing
/// stored) when they are all zeros.
fn seal_chunk(repo: &crate::repo::Repo, data: &[u8]) -> Result<ChunkRef> {
    if data.iter().all(|b| *b == 0) {
        Ok(None)
    } else {
        repo.put(ObjectKind::Chunk, data).map(Some)
    }
}

#[derive(Default)]
struct Overlay {
    /// Changed inodes; `None` is a deletion. An inode with `nlink == 0` is an
    /// orphan: unlinked while pinned (open), readable and writable, never
    /// written into a snapshot.
    inodes: HashMap<u64, Option<Inode>>,
    dirs: HashMap<u64, DirDelta>,
    files: HashMap<u64, DirtyFile>,
    next_ino: u64,
    dirty_bytes: usize,
    changed: bool,
    /// Names changed since the last commit, by directory: a delta
    /// compares only these with the chain ([`crate::repo::delta::Since`]).
    named: HashMap<u64, HashSet<Vec<u8>>>,
    /// Directories whose changes started over since the last commit while
    /// the chain has names for them (a new directory under the number).
    restarted: HashSet<u64>,
    /// Inodes whose records may have changed since the last commit (a
    /// superset: every record handed out to change is listed, and after a
    /// fold the orphans it removed and still holds): a delta
    /// compares only these, and the written files', with the chain, not
    /// everything changed since the fold.
    touched: HashSet<u64>,
}

/// A changed directory: where its entries are at head, and the names this
/// overlay changed. A commit re-seals only the parts of a large directory
/// that hold a changed name (`repo::dirtree`).
struct DirDelta {
    base: Option<DirRef>,
    /// A name's new entry; `None`: removed.
    changes: BTreeMap<Vec<u8>, Option<DirEntry>>,
    /// Entries now.
    count: u64,
}

/// The inode an operation created (0 for one that creates none).
fn created_by(op: &Op, made: Option<&Inode>) -> u64 {
    match (op, made) {
        (Op::Create { .. } | Op::Mkdir { .. } | Op::Symlink { .. } | Op::Mknod { .. }, Some(i)) => {
            i.ino
        }
        _ => 0,
    }
}

fn check_name(name: &[u8], op: &'static str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::fs(op, libc::ENOENT));
    }
    if name.len() > NAME_MAX {
        return Err(Error::fs(op, libc::ENAMETOOLONG));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(Error::fs(op, libc::EINVAL));
    }
    if name == b"." || name == b".." {
        return Err(Error::fs(op, libc::EEXIST));
    }
    Ok(())
}

/// The single writer of one agent.
pub struct Engine {
    agent: Arc<Agent>,
    head: Arc<SnapshotView>,
    ov: Overlay,
    /// Open counts of inodes held by the caller (open file handles).
    pins: HashMap<u64, u32>,
    dirty_budget: usize,
    /// The operation journal (None while replaying it).
    journal: Option<OpJournal>,
    /// The time of the operation being applied (replay), else the clock.
    clock: Option<i64>,
    /// Applying the journal: operations acknowledged before, by builds
    /// that may have allowed larger files ([`MAX_FILE_SIZE`]).
    replaying: bool,
    /// Largest size a file may grow to ([`MAX_FILE_SIZE`]).
    max_file_size: u64,
    /// Free inode numbers.
    ialloc: inodes::Allocator,
    /// Writers and note for the next snapshot.
    provenance: provenance::Pending,
    lock: WriteLock,
    /// Head's delta chain applied (empty after a fold): what the overlay
    /// holds that is committed already (`commit`).
    committed: Arc<Merged>,
    /// Whether the fold's records head's chain replaced or removed
    /// reference only objects stored here (`None`: not yet asked since the
    /// chain was loaded; see `Engine::fold_clean`).
    fold_clean: Option<bool>,
    /// Longest delta chain before a fold ([`FOLD_EVERY`]).
    fold_every: u32,
}

/// A chain applied, its records and its directories' changes
/// ([`chain_overlay`]).
type Chain = (
    Arc<Merged>,
    HashMap<u64, Option<Inode>>,
    HashMap<u64, DirDelta>,
);

/// `head`'s delta chain as an overlay (see [`Engine::load_chain`]): the
/// chain applied, its records, and each directory whose names it changed
/// with those changes over the directory's tree in the fold.
fn chain_overlay(head: &SnapshotView) -> Result<Chain> {
    let merged = match head.merged()? {
        Some(m) => m.clone(),
        None => Arc::new(Merged::default()),
    };
    let inodes = merged.inodes.clone();
    let repo = head.repo();
    let mut dirs = HashMap::new();
    for (dir, e) in &merged.dirs {
        let base = if e.fresh {
            None
        } else {
            let i = head.getattr(*dir)?;
            view::dir_root(&i)?.copied()
        };
        let mut count = dirtree::count(repo, base.as_ref())?;
        for (name, entry) in &e.names {
            let was = dirtree::lookup(repo, base.as_ref(), name)?.is_some();
            count = (count + u64::from(entry.is_some()))
                .checked_sub(u64::from(was))
                .ok_or_else(|| Error::corrupt("delta chain", "entry count below zero"))?;
        }
        dirs.insert(
            *dir,
            DirDelta {
                base,
                changes: e.names.clone(),
                count,
            },
        );
    }
    Ok((merged, inodes, dirs))
}

impl Drop for Engine {
    /// Writes the index rows of the snapshots committed since the last
    /// flush while the writer's lock is still held (a crash instead leaves
    /// them to the next open's recovery from the packs).
    fn drop(&mut self) {
        // Unwinding: a lock may be poisoned; the next open recovers.
        if std::thread::panicking() {
            return;
        }
        self.agent.repo().flush_at_end();
    }
}

/// The journal file and the position of its next record.
struct OpJournal {
    file: Journal,
    next: u64,
}

impl Engine {
    /// Opens an agent for writing, creating its data dir and first snapshot
    /// (an empty root directory) if it has none.
    pub fn open(home: &Home, name: &AgentName, master: &MasterKey) -> Result<Self> {
        Self::open_with(home, name, master, true)
    }

    /// Opens for writing; with `create = false` an unknown agent is an error.
    pub fn open_with(
        home: &Home,
        name: &AgentName,
        master: &MasterKey,
        create: bool,
    ) -> Result<Self> {
        let (agent, lock) = Agent::open_writer(home, name, master, create)?;
        let existing = agent.repo().index()?.head_seq()?;
        let head = match existing {
            Some(_) => agent.head()?,
            None => {
                agent.refuse_start_over()?;
                commit::genesis(&agent)?
            }
        };
        let (file, records) = Journal::open(&agent.data_dir())?;
        let next_ino = head.manifest().next_ino;
        let mut e = Engine {
            agent: Arc::new(agent),
            head: Arc::new(head),
            ov: Overlay {
                next_ino,
                ..Overlay::default()
            },
            pins: HashMap::new(),
            dirty_budget: DEFAULT_DIRTY_BUDGET,
            journal: None,
            clock: None,
            replaying: false,
            max_file_size: MAX_FILE_SIZE,
            ialloc: inodes::Allocator::default(),
            provenance: provenance::Pending::default(),
            lock,
            committed: Arc::new(Merged::default()),
            fold_clean: None,
            fold_every: commit::FOLD_EVERY,
        };
        e.load_chain()?;
        e.replay(&records)?;
        e.journal = Some(OpJournal { file, next: 0 });
        if let Some(j) = e.journal.as_mut() {
            j.file.reset()?;
        }
        e.agent.make_durable(&e.head)?;
        Ok(e)
    }

    /// Applies the journal's operations recorded on top of head, in order
    /// and at their recorded times, then commits them: what was
    /// acknowledged before a crash of the process is in the tree again.
    /// Records on top of another head are stale (already committed, or made
    /// on a head a power cut took) and skipped. A record that does not
    /// open ends the replay (a power cut can tear unsynced writes); one
    /// that opens but does not apply is an error, never skipped.
    fn replay(&mut self, records: &[crate::repo::journal::Record]) -> Result<()> {
        let (seq, hash) = (self.head.seq(), self.head.hash());
        let keys = self.agent.repo().keys().clone();
        let mut n = 0u64;
        self.replaying = true;
        let done = self.replay_records(records, seq, hash, &keys, &mut n);
        self.replaying = false;
        done?;
        if n > 0 {
            let info = self.commit()?;
            tracing::info!(
                "journal: {n} operations acknowledged before the last stop are in snapshot {}",
                info.map_or(seq, |i| i.seq)
            );
        }
        Ok(())
    }

    /// Applies the journal records made on head (`seq`, `hash`), counting
    /// them in `n` ([`Engine::replay`]).
    fn replay_records(
        &mut self,
        records: &[crate::repo::journal::Record],
        seq: u64,
        hash: [u8; 32],
        keys: &crate::seal::keys::AgentKeys,
        n: &mut u64,
    ) -> Result<()> {
        for r in records.iter().filter(|r| r.seq == seq && r.hash == hash) {
            let plain = match envelope::open_journal(keys, seq, &hash, *n, &r.sealed) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("journal: replay ends at record {n}: {e}");
                    break;
                }
            };
            let entry = Entry::decode(&plain)?;
            self.clock = Some(entry.time_ns);
            // A created inode gets the number it was given then (which
            // depended on what was free in memory, orphans included).
            self.replay_ino((entry.created != 0).then_some(entry.created));
            let res = self.apply(&entry.op);
            self.replay_ino(None);
            self.clock = None;
            let made = res.map_err(|e| {
                Error::corrupt(
                    format!("journal record {n} on snapshot {seq}"),
                    format!("does not apply to the head it was made on: {e}"),
                )
            })?;
            let got = created_by(&entry.op, made.as_ref());
            if got != entry.created {
                return Err(Error::corrupt(
                    format!("journal record {n} on snapshot {seq}"),
                    format!("created inode {got} where {} was recorded", entry.created),
                ));
            }
            *n += 1;
        }
        Ok(())
    }

    /// A follower's step: shows the agent's head as the index has it now
    /// (snapshots fetched from the writer's remote) instead of the one
    /// shown so far, which is returned. Refused while this engine holds
    /// changes of its own: a follower makes none.
    pub fn advance_to_stored_head(&mut self) -> Result<Arc<SnapshotView>> {
        if self.is_dirty() || !self.ov.files.is_empty() {
            return Err(Error::Invalid(
                "the working tree holds changes: only a follower's unchanged tree advances".into(),
            ));
        }
        let new = Arc::new(self.agent.head()?);
        // (Its chain first: on an error the follower keeps what it shows.)
        let chain = chain_overlay(&new)?;
        self.install_chain(new.manifest().next_ino, chain);
        Ok(std::mem::replace(&mut self.head, new))
    }

    /// Fills the overlay with head's delta chain (tree format 8): every
    /// record and directory name it changed since its fold, as if they
    /// had been made here and not committed, so that this engine's reads
    /// see them and its next fold writes them into pages and trees. The
    /// overlay must hold nothing else. Nothing changes on error.
    fn load_chain(&mut self) -> Result<()> {
        let chain = chain_overlay(&self.head)?;
        self.install_chain(self.head.manifest().next_ino, chain);
        Ok(())
    }

    /// Replaces the overlay with a chain read by [`chain_overlay`] (of
    /// the snapshot about to be head, whose `next_ino` is given) and makes
    /// it the committed state.
    fn install_chain(&mut self, next_ino: u64, chain: Chain) {
        let (merged, inodes, dirs) = chain;
        self.ov = Overlay {
            next_ino,
            inodes,
            dirs,
            ..Overlay::default()
        };
        self.committed = merged;
        self.fold_clean = None;
    }

    /// Tells waiting writers that this one is finishing (its mount is
    /// gone): a new mount of the agent waits for it instead of refusing.
    pub fn mark_stopping(&self) {
        self.lock.mark_stopping();
    }

    /// Records in the lock that this writer serves `mountpoint`: once that
    /// is unmounted, a new mount waits for this one's last commit.
    pub fn mark_serving(&self, mountpoint: &std::path::Path) {
        self.lock.mark_serving(mountpoint);
    }

    /// The time of the operation being applied.
    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(now_ns)
    }

    /// Applies one operation; returns the inode it created or changed,
    /// where the operation has one.
    fn apply(&mut self, op: &Op) -> Result<Option<Inode>> {
        Ok(match op {
            Op::Create {
                parent,
                name,
                perm,
                uid,
                gid,
            } => Some(self.create_op(*parent, name, *perm, *uid, *gid)?),
            Op::Mkdir {
                parent,
                name,
                perm,
                uid,
                gid,
            } => Some(self.mkdir_op(*parent, name, *perm, *uid, *gid)?),
            Op::Symlink {
                parent,
                name,
                target,
                uid,
                gid,
            } => Some(self.symlink_op(*parent, name, target, *uid, *gid)?),
            Op::Mknod {
                parent,
                name,
                kind,
                perm,
                rdev,
                uid,
                gid,
            } => Some(self.mknod_op(*parent, name, *kind, *rdev, (*perm, *uid, *gid))?),
            Op::Link {
                ino,
                newparent,
                newname,
            } => Some(self.link_op(*ino, *newparent, newname)?),
            Op::Unlink { parent, name } => {
                self.unlink_op(*parent, name)?;
                None
            }
            Op::Rmdir { parent, name } => {
                self.rmdir_op(*parent, name)?;
                None
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            } => {
                self.rename_op(*parent, name, *newparent, newname, *flags)?;
                None
            }
            Op::Setattr { ino, attrs } => Some(self.setattr_op(*ino, attrs)?),
            Op::Setxattr {
                ino,
                name,
                value,
                flags,
            } => {
                self.setxattr_op(*ino, name, value, *flags)?;
                None
            }
            Op::Removexattr { ino, name } => {
                self.removexattr_op(*ino, name)?;
                None
            }
        })
    }

    /// Applies `op` now and seals it into the journal before returning.
    fn run(&mut self, op: Op) -> Result<Option<Inode>> {
        let t = now_ns();
        self.clock = Some(t);
        let res = self.apply(&op);
        self.clock = None;
        let made = res?;
        // An orphan (unlinked, still open) is in no snapshot: what is done
        // to it has no lasting effect, and after a restart it is gone.
        let target = match &op {
            Op::Setattr { ino, .. } | Op::Setxattr { ino, .. } | Op::Removexattr { ino, .. } => {
                Some(*ino)
            }
            _ => None,
        };
        if target
            .is_some_and(|ino| matches!(self.ov.inodes.get(&ino), Some(Some(i)) if i.nlink == 0))
        {
            return Ok(made);
        }
        let created = created_by(&op, made.as_ref());
        self.log(Entry {
            op,
            time_ns: t,
            created,
        })?;
        Ok(made)
    }

    fn log(&mut self, entry: Entry) -> Result<()> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        let (seq, hash) = (self.head.seq(), self.head.hash());
        let sealed = envelope::seal_journal(
            self.agent.repo().keys(),
            seq,
            &hash,
            j.next,
            &entry.encode(),
        );
        j.file.append(seq, &hash, &sealed)?;
        j.next += 1;
        Ok(())
    }

    /// Empties the journal after a commit that holds its operations.
    fn journal_committed(&mut self) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            j.file.reset()?;
            j.next = 0;
        }
        Ok(())
    }

    /// Makes every snapshot committed so far durable against a power cut
    /// (see [`Agent::make_durable`]); returns the durable head's sequence
    /// number.
    pub fn sync(&self) -> Result<u64> {
        self.agent.make_durable(&self.head)?;
        Ok(self.head.seq())
    }

    /// The agent and the head committed so far: what a power-loss barrier
    /// needs, so that it can run without holding the engine while the disk
    /// works (`agent.make_durable(&head)`).
    pub fn durability_point(&self) -> (Arc<Agent>, Arc<SnapshotView>) {
        (self.agent.clone(), self.head.clone())
    }

    /// Whether inode `ino` has changes not yet committed (the overlay
    /// also holds what head's delta chain committed: that is not a change).
    pub fn is_dirty_inode(&self, ino: u64) -> bool {
        if self.ov.files.contains_key(&ino) {
            return true;
        }
        if let Some(rec) = self.ov.inodes.get(&ino) {
            let now = rec.as_ref().filter(|i| i.nlink > 0);
            if self.committed.inode(ino) != Some(now) {
                return true;
            }
        }
        self.ov.dirs.get(&ino).is_some_and(|d| {
            let before = self.committed.dir(ino);
            d.changes
                .iter()
                .any(|(n, e)| before.and_then(|b| b.names.get(n)) != Some(e))
        })
    }

    /// Sets the dirty budget (bytes of unsealed chunk data kept in memory).
    pub fn set_dirty_budget(&mut self, bytes: usize) {
        self.dirty_budget = bytes;
    }

    /// Sets the longest delta chain before a commit folds
    /// ([`FOLD_EVERY`] by default; 0: every commit folds).
    pub fn set_fold_every(&mut self, n: u32) {
        // (A reader refuses a longer chain.)
        self.fold_every = n.min(crate::seal::tree::DELTA_CHAIN_MAX);
    }

    /// Sets the largest size a file may grow to (tests: what a journal
    /// written under a larger limit replays; [`MAX_FILE_SIZE`] by default).
    #[doc(hidden)]
    pub fn set_max_file_size(&mut self, bytes: u64) {
        self.max_file_size = bytes;
    }

    /// The read side of this agent (history, listings, verification).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The read side, shareable with readers of history.
    pub fn shared_agent(&self) -> Arc<Agent> {
        self.agent.clone()
    }

    /// The head snapshot (without uncommitted changes).
    pub fn head(&self) -> &Arc<SnapshotView> {
        &self.head
    }

    /// True if there are uncommitted changes.
    pub fn is_dirty(&self) -> bool {
        self.ov.changed
    }

    /// Bytes of dirty chunk data held in memory now.
    pub fn dirty_bytes(&self) -> usize {
        self.ov.dirty_bytes
    }

    /// Records that `writer` created or changed inode `ino`, for the next
    /// snapshot's provenance (`seal::tree::Provenance`).
    pub fn attribute(&mut self, ino: u64, writer: &crate::seal::tree::Writer) {
        self.provenance.attribute(ino, writer, false);
    }

    /// Records that `writer` created inode `ino` (a number reused within
    /// the commit starts a new history).
    pub fn attribute_new(&mut self, ino: u64, writer: &crate::seal::tree::Writer) {
        self.provenance.attribute_new(ino, writer);
    }

    /// Records that `writer` removed a name of inode `ino` (unlink, rmdir,
    /// a rename over it).
    pub fn attribute_removal(&mut self, ino: u64, writer: &crate::seal::tree::Writer) {
        self.provenance.attribute(ino, writer, true);
    }

    /// Sets (or with `None` clears) the note sealed with the next snapshot.
    /// Not a change: it waits for the next snapshot that holds one. At
    /// most [`crate::seal::tree::NOTE_MAX`] bytes (else `E2BIG`).
    pub fn set_note(&mut self, note: Option<Vec<u8>>) -> Result<()> {
        self.provenance.set_note(note)
    }

    /// The note waiting for the next snapshot.
    pub fn note(&self) -> Option<&[u8]> {
        self.provenance.note()
    }

    fn chunk_size(&self) -> u64 {
        u64::from(self.head.manifest().chunk_size)
    }

    // ----- reads through the overlay -----

    fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        match self.ov.inodes.get(&ino) {
            Some(i) => Ok(i.clone()),
            None => self.head.inode(ino),
        }
    }

    /// What a write, truncate or chown may take from an inode that is not
    /// a directory: its set-ID bits and group, and whether it has a file
    /// capability. `None` when it has neither (the common case), or is a
    /// directory. An inode already changed in this commit window is read
    /// in place; one that is not yet is read from head (the write that
    /// follows reads it again to take it into the window: once per file
    /// per window). The mount decides what goes (`mount::fs::privileges`).
    pub fn privileges(&self, ino: u64) -> Result<Option<Privileges>> {
        let of = |i: &Inode| {
            let setid = i.perm & (SETUID | SETGID);
            let capability = i.xattrs.contains_key(CAPABILITY);
            let dir = i.file_type() == FileType::Dir;
            (!dir && (setid != 0 || capability)).then_some(Privileges {
                perm: i.perm,
                gid: i.gid,
                capability,
            })
        };
        match self.ov.inodes.get(&ino) {
            Some(Some(i)) => Ok(of(i)),
            Some(None) => Err(Error::fs("privileges", libc::ENOENT)),
            None => match self.head.inode(ino)? {
                Some(i) => Ok(of(&i)),
                None => Err(Error::fs("privileges", libc::ENOENT)),
            },
        }
    }

    /// An inode's current attributes, or `ENOENT`.
    pub fn getattr(&self, ino: u64) -> Result<Inode> {
        self.inode(ino)?
            .ok_or_else(|| Error::fs("getattr", libc::ENOENT))
    }

    /// A directory's entries, sorted by name.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(Vec<u8>, DirEntry)>> {
        let repo = self.head.repo();
        let Some(d) = self.ov.dirs.get(&ino) else {
            let e = view::entries_of(repo, &self.getattr(ino)?)?;
            return Ok(e.iter().map(|(k, v)| (k.clone(), *v)).collect());
        };
        let mut e = (*dirtree::entries(repo, d.base.as_ref())?).clone();
        for (name, c) in &d.changes {
            match c {
                Some(c) => e.insert(name.clone(), *c),
                None => e.remove(name),
            };
        }
        Ok(e.into_iter().collect())
    }

    /// Looks up `name` in `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<DirEntry>> {
        if name.len() > NAME_MAX {
            return Err(Error::fs("lookup", libc::ENAMETOOLONG));
        }
        let repo = self.head.repo();
        match self.ov.dirs.get(&parent) {
            Some(d) => match d.changes.get(name) {
                Some(c) => Ok(*c),
                None => dirtree::lookup(repo, d.base.as_ref(), name),
            },
            None => dirtree::lookup(repo, view::dir_root(&self.getattr(parent)?)?, name),
        }
    }

    /// Whether a directory has no entries.
    fn dir_is_empty(&self, ino: u64) -> Result<bool> {
        match self.ov.dirs.get(&ino) {
            Some(d) => Ok(d.count == 0),
            None => Ok(view::dir_root(&self.getattr(ino)?)?.is_none()),
        }
    }

    /// Resolves a `/`-separated path from the root (no symlinks followed).
    pub fn resolve(&self, path: &[u8]) -> Result<u64> {
        view::resolve_with(path, |p, n| self.lookup(p, n))
    }

    fn refs_of(&self, i: &Inode) -> Result<Arc<Vec<ChunkRef>>> {
        view::chunk_refs(self.head.repo(), i)
    }

    /// Reads up to `len` bytes at `off`, for a reader that does not come
    /// back for them ([`Reuse::Once`]).
    pub fn read(&self, ino: u64, off: u64, len: usize) -> Result<Vec<u8>> {
        self.read_for(ino, off, len, Reuse::Once)
    }

    /// Reads up to `len` bytes at `off` for a reader that `reuse` says
    /// may or may not ask again.
    pub fn read_for(&self, ino: u64, off: u64, len: usize, reuse: Reuse) -> Result<Vec<u8>> {
        let i = self.getattr(ino)?;
        let repo = self.head.repo();
        match self.ov.files.get(&ino) {
            Some(f) => view::read_range(
                repo,
                &|idx| Ok(f.refs.get(idx as usize).copied().flatten()),
                Some(&f.dirty as &dyn ChunkOverlay),
                i.size,
                self.chunk_size(),
                off,
                len,
                reuse,
            ),
            None => {
                let chunks = view::file_chunks(&i)?;
                view::read_range(
                    repo,
                    &|idx| chunktree::get(repo, chunks, idx),
                    None,
                    i.size,
                    self.chunk_size(),
                    off,
                    len,
                    reuse,
                )
            }
        }
    }

    /// Where file `ino` (inode `i`) holds data, through the overlay.
    fn data_map<'a>(
        &'a self,
        ino: u64,
        i: &Inode,
        base: &'a Option<Arc<Vec<ChunkRef>>>,
    ) -> view::DataMap<impl Fn(u64) -> bool + 'a> {
        let f = self.ov.files.get(&ino);
        let slots = match f {
            Some(f) => {
                let dirty = f.dirty.last_key_value().map_or(0, |(k, _)| k + 1);
                dirty.max(f.refs.len() as u64)
            }
            None => base.as_ref().map_or(0, |r| r.len() as u64),
        };
        view::DataMap {
            slots,
            stored: move |idx: u64| match f {
                Some(f) => {
                    f.dirty.contains_key(&idx) || matches!(f.refs.get(idx as usize), Some(Some(_)))
                }
                None => base
                    .as_ref()
                    .is_some_and(|r| matches!(r.get(idx as usize), Some(Some(_)))),
            },
            size: i.size,
            chunk: self.chunk_size(),
        }
    }

    /// Bytes of `ino` that lie in stored chunks, holes excluded (what
    /// `st_blocks` counts); the size for anything but a regular file.
    pub fn stored_bytes(&self, ino: u64, i: &Inode) -> Result<u64> {
        if i.file_type() != FileType::File {
            return Ok(i.size);
        }
        if !self.ov.files.contains_key(&ino) {
            let chunks = view::file_chunks(i)?;
            return view::stored_bytes(self.head.repo(), chunks, i.size, self.chunk_size());
        }
        Ok(self.data_map(ino, i, &None).stored_bytes())
    }

    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` at chunk
    /// granularity; `ENXIO` at or past the end, or with no data after `off`.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> Result<u64> {
        let i = self.getattr(ino)?;
        if i.file_type() != FileType::File {
            return Err(Error::fs("lseek", libc::EINVAL));
        }
        let base = match self.ov.files.contains_key(&ino) {
            true => None,
            false => Some(self.refs_of(&i)?),
        };
        self.data_map(ino, &i, &base)
            .seek(off, data)
            .ok_or_else(|| Error::fs("lseek", libc::ENXIO))
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.getattr(ino)?.content {
            Content::Symlink(t) => Ok(t),
            _ => Err(Error::fs("readlink", libc::EINVAL)),
        }
    }

    /// One extended attribute (`ENODATA` if absent).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.getattr(ino)?
            .xattrs
            .remove(name)
            .ok_or_else(|| Error::fs("getxattr", libc::ENODATA))
    }

    /// Names of all extended attributes.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        Ok(self.getattr(ino)?.xattrs.into_keys().collect())
    }

    // ----- overlay plumbing -----

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode> {
        self.ov.touched.insert(ino);
        if !self.ov.inodes.contains_key(&ino) {
            let i = self.head.inode(ino)?;
            self.ov.inodes.insert(ino, i);
        }
        self.ov
            .inodes
            .get_mut(&ino)
            .and_then(|i| i.as_mut())
            .ok_or_else(|| Error::fs("inode", libc::ENOENT))
    }

    /// Sets (`Some`) or removes (`None`) the entry `name` of directory
    /// `dir`.
    fn set_entry(&mut self, dir: u64, name: &[u8], entry: Option<DirEntry>) -> Result<()> {
        let old = self.lookup(dir, name)?;
        if !self.ov.dirs.contains_key(&dir) {
            let base = view::dir_root(&self.getattr(dir)?)?.copied();
            let count = dirtree::count(self.head.repo(), base.as_ref())?;
            // (The overlay keeps a directory's changes since the fold: the
            // chain has names for one it lacks only when they started over.)
            if self.committed.dir(dir).is_some() {
                self.ov.restarted.insert(dir);
            }
            self.ov.dirs.insert(
                dir,
                DirDelta {
                    base,
                    changes: BTreeMap::new(),
                    count,
                },
            );
        }
        let d = self.ov.dirs.get_mut(&dir).expect("just inserted");
        d.count = (d.count + u64::from(entry.is_some()))
            .checked_sub(u64::from(old.is_some()))
            .ok_or_else(|| Error::corrupt("directory", "entry count below zero"))?;
        d.changes.insert(name.to_vec(), entry);
        self.ov.named.entry(dir).or_default().insert(name.to_vec());
        Ok(())
    }

    fn dir_inode(&self, ino: u64, op: &'static str) -> Result<Inode> {
        let i = self.getattr(ino)?;
        if i.file_type() != FileType::Dir {
            return Err(Error::fs(op, libc::ENOTDIR));
        }
        Ok(i)
    }

    /// [`Self::dir_inode`] for a directory that gains an entry: a removed
    /// one (still referenced, [`Self::drop_link`]) takes none.
    fn linkable_dir(&self, ino: u64, op: &'static str) -> Result<Inode> {
        let i = self.dir_inode(ino, op)?;
        if i.nlink == 0 {
            return Err(Error::fs(op, libc::ENOENT));
        }
        Ok(i)
    }

    fn touch_dir(&mut self, ino: u64, now: i64, nlink_delta: i32) -> Result<()> {
        let d = self.inode_mut(ino)?;
        d.mtime = now;
        d.ctime = now;
        d.nlink = d.nlink.saturating_add_signed(nlink_delta);
        Ok(())
    }

    fn new_child(
        &mut self,
        op: &'static str,
        parent: u64,
        name: &[u8],
        (perm, uid, gid): (u32, u32, u32),
        content: Content,
    ) -> Result<Inode> {
        check_name(name, op)?;
        let dir = self.linkable_dir(parent, op)?;
        if self.lookup(parent, name)?.is_some() {
            return Err(Error::fs(op, libc::EEXIST));
        }
        let now = self.now();
        let is_dir = matches!(content, Content::Dir(_));
        // A set-group-ID directory hands its group to what is made in it,
        // and its set-group-ID bit to subdirectories (as ext4 does; FUSE
        // leaves this to the file system).
        let (perm, gid) = if dir.perm & 0o2000 != 0 {
            (if is_dir { perm | 0o2000 } else { perm }, dir.gid)
        } else {
            (perm, gid)
        };
        let size = match &content {
            Content::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        // A directory's default ACL is inherited (symlinks take none).
        let mut xattrs = BTreeMap::new();
        let mut perm = perm;
        if let Some(default) = dir.xattrs.get(acl::DEFAULT)
            && !matches!(content, Content::Symlink(_))
        {
            let mut access = acl::Acl::decode(default)?;
            let (masked, store) = access.create_masq(perm);
            perm = masked;
            if store {
                xattrs.insert(acl::ACCESS.to_vec(), access.encode());
            }
            if is_dir {
                xattrs.insert(acl::DEFAULT.to_vec(), default.clone());
            }
        }
        let ino = self.allocate_ino()?;
        let inode = Inode {
            ino,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            size,
            atime: now,
            mtime: now,
            ctime: now,
            parent: if is_dir { parent } else { 0 },
            xattrs,
            content,
        };
        let file_type = inode.file_type();
        if let Err(e) = self.set_entry(parent, name, Some(DirEntry { ino, file_type })) {
            // Nothing holds the number: it stays free.
            self.free_ino(ino);
            return Err(e);
        }
        self.touch_dir(parent, now, if is_dir { 1 } else { 0 })?;
        self.ov.inodes.insert(ino, Some(inode.clone()));
        self.ov.touched.insert(ino);
        self.ov.changed = true;
        Ok(inode)
    }

    /// Pins an inode while the caller has it open or the kernel references
    /// it: unlinking its last name then keeps it readable and writable (as
    /// an orphan) until [`Engine::unpin`].
    pub fn pin(&mut self, ino: u64) {
        *self.pins.entry(ino).or_default() += 1;
    }

    /// Releases one pin; an orphan whose last pin goes away is deleted.
    pub fn unpin(&mut self, ino: u64) {
        let Some(n) = self.pins.get_mut(&ino) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.pins.remove(&ino);
        let orphan = matches!(self.ov.inodes.get(&ino), Some(Some(i)) if i.nlink == 0);
        if orphan {
            self.forget_inode(ino);
        }
    }

    /// Deletes `ino` for good (no pin holds it); its number is free.
    fn forget_inode(&mut self, ino: u64) {
        self.ov.inodes.insert(ino, None);
        self.ov.touched.insert(ino);
        self.ov.dirs.remove(&ino);
        if let Some(f) = self.ov.files.remove(&ino) {
            self.ov.dirty_bytes -= f.held();
        }
        self.free_ino(ino);
    }

    /// Drops one link to `ino` (already removed from its directory).
    fn drop_link(&mut self, ino: u64, now: i64) -> Result<()> {
        let pinned = self.pins.contains_key(&ino);
        let i = self.inode_mut(ino)?;
        let is_dir = i.file_type() == FileType::Dir;
        if !is_dir && (i.nlink > 1 || pinned) {
            i.nlink -= 1;
            i.ctime = now;
            if i.nlink == 0 && i.file_type() == FileType::File {
                // An orphan: its content must stay readable through the
                // open handle or the kernel's reference.
                self.dirty_file(ino, "unlink")?;
            }
            return Ok(());
        }
        if is_dir && pinned {
            // A removed directory the kernel still references (a process's
            // working directory): stat-able, empty, nothing can be made in
            // it (ENOENT), until the kernel forgets it.
            i.nlink = 0;
            i.ctime = now;
            i.content = Content::Dir(None);
            self.ov.dirs.remove(&ino);
            return Ok(());
        }
        self.forget_inode(ino);
        Ok(())
    }

    /// The permission bits a node made in `parent` asks for: `perm` with
    /// `umask` applied, unless `parent` has a default ACL, which then
    /// masks `perm` instead (at creation, [`acl`]).
    pub fn creation_perm(&self, parent: u64, perm: u32, umask: u32) -> Result<u32> {
        let dir = self.getattr(parent)?;
        Ok(if dir.xattrs.contains_key(acl::DEFAULT) {
            perm
        } else {
            perm & !umask
        })
    }

    // ----- operations, each journaled before it returns -----

    /// Creates an empty regular file.
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        let op = Op::Create {
            parent,
            name: name.to_vec(),
            perm,
            uid,
            gid,
        };
        Ok(self.run(op)?.expect("create makes an inode"))
    }

    /// Creates a directory.
    pub fn mkdir(
        &mut self,
        parent: u64,
        name: &[u8],
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        let op = Op::Mkdir {
            parent,
            name: name.to_vec(),
            perm,
            uid,
            gid,
        };
        Ok(self.run(op)?.expect("mkdir makes an inode"))
    }

    /// Creates a FIFO, socket or device node (`kind`; `rdev` for devices;
    /// the kernel checked who may create a device).
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: FileType,
        perm: u32,
        rdev: u64,
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        // Only devices have a number (mknod(2) ignores it for the others);
        // the journal's encoding is canonical on that.
        let rdev = match kind {
            FileType::CharDev | FileType::BlockDev => rdev,
            _ => 0,
        };
        let op = Op::Mknod {
            parent,
            name: name.to_vec(),
            kind,
            perm,
            rdev,
            uid,
            gid,
        };
        Ok(self.run(op)?.expect("mknod makes an inode"))
    }

    /// Creates a symlink.
    pub fn symlink(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        let op = Op::Symlink {
            parent,
            name: name.to_vec(),
            target: target.to_vec(),
            uid,
            gid,
        };
        Ok(self.run(op)?.expect("symlink makes an inode"))
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&mut self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Inode> {
        let op = Op::Link {
            ino,
            newparent,
            newname: newname.to_vec(),
        };
        Ok(self.run(op)?.expect("link returns the inode"))
    }

    /// Removes a non-directory entry.
    pub fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.run(Op::Unlink {
            parent,
            name: name.to_vec(),
        })
        .map(drop)
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.run(Op::Rmdir {
            parent,
            name: name.to_vec(),
        })
        .map(drop)
    }

    /// Renames `parent/name` to `newparent/newname` (see [`RenameFlags`]).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        self.run(Op::Rename {
            parent,
            name: name.to_vec(),
            newparent,
            newname: newname.to_vec(),
            flags,
        })
        .map(drop)
    }

    /// Changes attributes; a size change truncates or extends the file.
    pub fn setattr(&mut self, ino: u64, a: &SetAttr) -> Result<Inode> {
        let op = Op::Setattr {
            ino,
            attrs: a.clone(),
        };
        Ok(self.run(op)?.expect("setattr returns the inode"))
    }

    /// Sets an extended attribute.
    pub fn setxattr(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        self.run(Op::Setxattr {
            ino,
            name: name.to_vec(),
            value: value.to_vec(),
            flags,
        })
        .map(drop)
    }

    /// Removes an extended attribute.
    pub fn removexattr(&mut self, ino: u64, name: &[u8]) -> Result<()> {
        self.run(Op::Removexattr {
            ino,
            name: name.to_vec(),
        })
        .map(drop)
    }

    // ----- namespace operations -----

    /// Creates an empty regular file.
    fn create_op(
        &mut self,
        parent: u64,
        name: &[u8],
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        self.new_child(
            "create",
            parent,
            name,
            (perm, uid, gid),
            Content::File(Chunks::Inline(vec![])),
        )
    }

    /// Creates a directory.
    fn mkdir_op(
        &mut self,
        parent: u64,
        name: &[u8],
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        self.new_child("mkdir", parent, name, (perm, uid, gid), Content::Dir(None))
    }

    /// Creates a symlink.
    fn symlink_op(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Inode> {
        if target.is_empty() {
            return Err(Error::fs("symlink", libc::ENOENT));
        }
        if target.len() > libc::PATH_MAX as usize {
            return Err(Error::fs("symlink", libc::ENAMETOOLONG));
        }
        self.new_child(
            "symlink",
            parent,
            name,
            (0o777, uid, gid),
            Content::Symlink(target.to_vec()),
        )
    }

    /// Creates a FIFO, socket or device node.
    fn mknod_op(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: FileType,
        rdev: u64,
        owner: (u32, u32, u32),
    ) -> Result<Inode> {
        if !kind.is_special() {
            return Err(Error::fs("mknod", libc::EINVAL));
        }
        let rdev = match kind {
            FileType::CharDev | FileType::BlockDev => rdev,
            _ => 0,
        };
        self.new_child("mknod", parent, name, owner, Content::Special(kind, rdev))
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    fn link_op(&mut self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Inode> {
        check_name(newname, "link")?;
        let i = self.getattr(ino)?;
        if i.file_type() == FileType::Dir {
            return Err(Error::fs("link", libc::EPERM));
        }
        if i.nlink == 0 {
            return Err(Error::fs("link", libc::ENOENT));
        }
        self.linkable_dir(newparent, "link")?;
        if self.lookup(newparent, newname)?.is_some() {
            return Err(Error::fs("link", libc::EEXIST));
        }
        let now = self.now();
        self.set_entry(
            newparent,
            newname,
            Some(DirEntry {
                ino,
                file_type: i.file_type(),
            }),
        )?;
        self.touch_dir(newparent, now, 0)?;
        let i = self.inode_mut(ino)?;
        i.nlink += 1;
        i.ctime = now;
        let out = i.clone();
        self.ov.changed = true;
        Ok(out)
    }

    /// Removes a non-directory entry.
    fn unlink_op(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.dir_inode(parent, "unlink")?;
        let e = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::fs("unlink", libc::ENOENT))?;
        if e.file_type == FileType::Dir {
            return Err(Error::fs("unlink", libc::EISDIR));
        }
        let now = self.now();
        self.set_entry(parent, name, None)?;
        self.touch_dir(parent, now, 0)?;
        self.drop_link(e.ino, now)?;
        self.ov.changed = true;
        Ok(())
    }

    /// Removes an empty directory.
    fn rmdir_op(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.dir_inode(parent, "rmdir")?;
        if name == b"." {
            return Err(Error::fs("rmdir", libc::EINVAL));
        }
        if name == b".." {
            return Err(Error::fs("rmdir", libc::ENOTEMPTY));
        }
        let e = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::fs("rmdir", libc::ENOENT))?;
        if e.file_type != FileType::Dir {
            return Err(Error::fs("rmdir", libc::ENOTDIR));
        }
        if !self.dir_is_empty(e.ino)? {
            return Err(Error::fs("rmdir", libc::ENOTEMPTY));
        }
        let now = self.now();
        self.set_entry(parent, name, None)?;
        self.touch_dir(parent, now, -1)?;
        self.drop_link(e.ino, now)?;
        self.ov.changed = true;
        Ok(())
    }

    /// True if `dir` is `ancestor` or lies below it.
    fn is_within(&self, mut dir: u64, ancestor: u64) -> Result<bool> {
        loop {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.getattr(dir)?.parent;
        }
    }

    /// Renames `parent/name` to `newparent/newname`, atomically replacing
    /// the target (or swapping with it under `exchange`).
    fn rename_op(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        const OP: &str = "rename";
        check_name(newname, OP)?;
        if name == b"." || name == b".." {
            return Err(Error::fs(OP, libc::EINVAL));
        }
        if flags.noreplace && flags.exchange {
            return Err(Error::fs(OP, libc::EINVAL));
        }
        self.dir_inode(parent, OP)?;
        self.linkable_dir(newparent, OP)?;
        let src = self
            .lookup(parent, name)?
            .ok_or_else(|| Error::fs(OP, libc::ENOENT))?;
        let dst = self.lookup(newparent, newname)?;
        let now = self.now();
        if flags.exchange {
            let dst = dst.ok_or_else(|| Error::fs(OP, libc::ENOENT))?;
            if src.ino == dst.ino {
                return Ok(());
            }
            if src.file_type == FileType::Dir && self.is_within(newparent, src.ino)?
                || dst.file_type == FileType::Dir && self.is_within(parent, dst.ino)?
            {
                return Err(Error::fs(OP, libc::EINVAL));
            }
            self.set_entry(parent, name, Some(dst))?;
            self.set_entry(newparent, newname, Some(src))?;
            for (moved, from, to) in [(src, parent, newparent), (dst, newparent, parent)] {
                self.moved(moved, from, to, now)?;
            }
            self.touch_dir(parent, now, 0)?;
            self.touch_dir(newparent, now, 0)?;
            self.ov.changed = true;
            return Ok(());
        }
        if let Some(d) = dst {
            if flags.noreplace {
                return Err(Error::fs(OP, libc::EEXIST));
            }
            if d.ino == src.ino {
                return Ok(());
            }
            match (src.file_type == FileType::Dir, d.file_type == FileType::Dir) {
                (true, false) => return Err(Error::fs(OP, libc::ENOTDIR)),
                (false, true) => return Err(Error::fs(OP, libc::EISDIR)),
                (true, true) if !self.dir_is_empty(d.ino)? => {
                    return Err(Error::fs(OP, libc::ENOTEMPTY));
                }
                _ => {}
            }
        }
        if src.file_type == FileType::Dir && self.is_within(newparent, src.ino)? {
            return Err(Error::fs(OP, libc::EINVAL));
        }
        // All checks passed: mutate.
        if let Some(d) = dst {
            self.set_entry(newparent, newname, None)?;
            if d.file_type == FileType::Dir {
                self.touch_dir(newparent, now, -1)?;
            }
            self.drop_link(d.ino, now)?;
        }
        self.set_entry(parent, name, None)?;
        self.set_entry(newparent, newname, Some(src))?;
        self.moved(src, parent, newparent, now)?;
        self.touch_dir(parent, now, 0)?;
        self.touch_dir(newparent, now, 0)?;
        self.ov.changed = true;
        Ok(())
    }

    /// Updates an inode that moved from directory `from` to `to`.
    fn moved(&mut self, e: DirEntry, from: u64, to: u64, now: i64) -> Result<()> {
        let dir_move = e.file_type == FileType::Dir && from != to;
        let i = self.inode_mut(e.ino)?;
        i.ctime = now;
        if dir_move {
            i.parent = to;
            self.touch_dir(from, now, -1)?;
            self.touch_dir(to, now, 1)?;
        }
        Ok(())
    }

    // ----- attributes -----

    /// Changes attributes; a size change truncates or extends the file.
    fn setattr_op(&mut self, ino: u64, a: &SetAttr) -> Result<Inode> {
        let now = self.now();
        if let Some(size) = a.size {
            self.truncate(ino, size, now)?;
        } else {
            self.getattr(ino)?;
        }
        let i = self.inode_mut(ino)?;
        if let Some(p) = a.perm {
            i.perm = p & 0o7777;
            if let Some(bytes) = i.xattrs.get_mut(acl::ACCESS) {
                let mut access = acl::Acl::decode(bytes)?;
                access.chmod(i.perm);
                *bytes = access.encode();
            }
        }
        if let Some(u) = a.uid {
            i.uid = u;
        }
        if let Some(g) = a.gid {
            i.gid = g;
        }
        if let Some(t) = a.atime {
            i.atime = t;
        }
        if let Some(t) = a.mtime {
            i.mtime = t;
        }
        i.ctime = now;
        let out = i.clone();
        self.ov.changed |= out.nlink > 0;
        Ok(out)
    }

    /// Sets an extended attribute.
    fn setxattr_op(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Error::fs("setxattr", libc::ERANGE));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::fs("setxattr", libc::E2BIG));
        }
        let exists = self.getattr(ino)?.xattrs.contains_key(name);
        if flags.create && exists {
            return Err(Error::fs("setxattr", libc::EEXIST));
        }
        if flags.replace && !exists {
            return Err(Error::fs("setxattr", libc::ENODATA));
        }
        let parsed = if acl::is_acl(name) {
            if name == acl::DEFAULT && self.getattr(ino)?.file_type() != FileType::Dir {
                return Err(Error::fs("setxattr", libc::EACCES));
            }
            Some(acl::Acl::decode(value)?)
        } else {
            None
        };
        let now = self.now();
        let i = self.inode_mut(ino)?;
        if let (Some(access), true) = (&parsed, name == acl::ACCESS) {
            // The mode follows the ACL; one that says no more than the
            // mode is not kept (as ext4 does).
            let (perm, extended) = access.equiv_mode(i.perm);
            i.perm = perm;
            if !extended {
                i.xattrs.remove(name);
                i.ctime = now;
                self.ov.changed = true;
                return Ok(());
            }
        }
        i.xattrs.insert(name.to_vec(), value.to_vec());
        i.ctime = now;
        self.ov.changed = true;
        Ok(())
    }

    /// Removes an extended attribute.
    fn removexattr_op(&mut self, ino: u64, name: &[u8]) -> Result<()> {
        if !self.getattr(ino)?.xattrs.contains_key(name) {
            // Removing an ACL that is not there succeeds, as on ext4.
            if acl::is_acl(name) {
                return Ok(());
            }
            return Err(Error::fs("removexattr", libc::ENODATA));
        }
        let now = self.now();
        let i = self.inode_mut(ino)?;
        i.xattrs.remove(name);
        i.ctime = now;
        self.ov.changed = true;
        Ok(())
    }

    // ----- file content -----

    fn dirty_file(&mut self, ino: u64, op: &'static str) -> Result<&mut DirtyFile> {
        if !self.ov.files.contains_key(&ino) {
            let i = self.getattr(ino)?;
            match i.file_type() {
                FileType::File => {}
                FileType::Dir => return Err(Error::fs(op, libc::EISDIR)),
                _ => return Err(Error::fs(op, libc::EINVAL)),
            }
            let refs = (*self.refs_of(&i)?).clone();
            self.inode_mut(ino)?;
            self.ov.files.insert(
                ino,
                DirtyFile {
                    refs,
                    ..DirtyFile::default()
                },
            );
        }
        Ok(self.ov.files.get_mut(&ino).expect("just inserted"))
    }

    /// The dirty chunk `idx` of a file whose size is `size`, created over
    /// its sealed chunk if absent (a write covering a chunk whole is sealed
    /// at once instead: [`Engine::seal_whole_chunk`]).
    fn dirty_chunk(&mut self, ino: u64, idx: u64, size: u64) -> &mut DirtyChunk {
        let chunk = self.chunk_size();
        let f = self
            .ov
            .files
            .get_mut(&ino)
            .expect("dirty_file called first");
        f.dirty.entry(idx).or_insert_with(|| {
            let base = f.refs.get(idx as usize).copied().flatten();
            let visible = size.saturating_sub(idx * chunk).min(chunk) as usize;
            DirtyChunk::new(base, visible)
        })
    }

    /// Seals a write that covers chunk `idx` of `ino` whole straight from
    /// the request, as [`Engine::seal_dirty`] would seal it later, without
    /// first copying it into a dirty chunk: the sequential writer's path.
    /// A dirty chunk it overwrites is dropped. The plaintext is not kept in
    /// the chunk cache (a copy): a later read opens it from the pack, or
    /// the kernel's page cache serves it. Changes nothing when it fails.
    fn seal_whole_chunk(&mut self, ino: u64, idx: u64, data: &[u8]) -> Result<()> {
        let r = seal_chunk(self.head.repo(), data)?;
        let f = self
            .ov
            .files
            .get_mut(&ino)
            .expect("dirty_file called first");
        if let Some(c) = f.dirty.remove(&idx) {
            self.ov.dirty_bytes -= c.held();
        }
        f.sealed_whole.insert(idx);
        f.set_ref(idx, r);
        Ok(())
    }

    fn charge(&mut self, delta: isize) {
        self.ov.dirty_bytes = self.ov.dirty_bytes.wrapping_add_signed(delta);
    }

    /// Writes `data` at `off`; returns the bytes written.
    /// Nothing for an empty `data`; `EFBIG` at or past [`MAX_FILE_SIZE`],
    /// and a write that crosses it is cut short there (as Linux does at a
    /// file system's largest file).
    pub fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let max = self.max_file_size;
        if off >= max {
            return Err(Error::fs("write", libc::EFBIG));
        }
        let data = &data[..data.len().min((max - off) as usize)];
        let end = off + data.len() as u64;
        // Past the budget, the dirty data is sealed before this write
        // lands: a failure then leaves the write undone, not half reported.
        if self.ov.dirty_bytes > self.dirty_budget {
            self.seal_dirty()?;
        }
        self.dirty_file(ino, "write")?;
        // In the overlay since `dirty_file`: no clone of the inode per write.
        let size = self.inode_mut(ino)?.size;
        let chunk = self.chunk_size();
        let (mut pos, mut src) = (off, 0usize);
        while pos < end {
            let idx = pos / chunk;
            let within = (pos - idx * chunk) as usize;
            let n = ((chunk as usize) - within).min((end - pos) as usize);
            let f = self.ov.files.get(&ino).expect("dirty_file called first");
            if within == 0 && n == chunk as usize && !f.sealed_whole.contains(&idx) {
                match self.seal_whole_chunk(ino, idx, &data[src..src + n]) {
                    Ok(()) => {}
                    Err(e) if src == 0 => return Err(e),
                    // What was written so far stays written: a short write,
                    // as a file system full partway answers.
                    Err(e) => {
                        tracing::warn!("write of inode {ino} cut short at {src} bytes: {e}");
                        break;
                    }
                }
            } else {
                let c = self.dirty_chunk(ino, idx, size);
                let delta = c.write(within, &data[src..src + n]);
                self.charge(delta);
            }
            pos += n as u64;
            src += n;
        }
        let end = pos;
        let now = self.now();
        let i = self.inode_mut(ino)?;
        i.size = i.size.max(end);
        i.mtime = now;
        i.ctime = now;
        self.ov.changed |= i.nlink > 0;
        Ok(src)
    }

    /// `fallocate(2)`. Allocation is logical (nothing is reserved on disk):
    /// mode 0 extends the size (zeros read back), `KEEP_SIZE` changes
    /// nothing, `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` (with or without
    /// `KEEP_SIZE`) make the range read as zeros, whole chunks becoming
    /// holes that are not stored. Other modes are `EOPNOTSUPP`, as ext4
    /// answers for the ones it lacks; `PUNCH_HOLE` without `KEEP_SIZE` is
    /// `EOPNOTSUPP` as the kernel requires.
    pub fn fallocate(&mut self, ino: u64, off: u64, len: u64, mode: i32) -> Result<()> {
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        if len == 0 {
            return Err(Error::fs("fallocate", libc::EINVAL));
        }
        let end = off
            .checked_add(len)
            .filter(|e| *e <= self.max_file_size)
            .ok_or_else(|| Error::fs("fallocate", libc::EFBIG))?;
        let i = self.getattr(ino)?;
        match i.file_type() {
            FileType::File => {}
            FileType::Dir => return Err(Error::fs("fallocate", libc::EISDIR)),
            _ => return Err(Error::fs("fallocate", libc::ENODEV)),
        }
        let (zero, keep) = match mode {
            0 => (false, false),
            KEEP => (false, true),
            m if m == PUNCH | KEEP => (true, true),
            ZERO => (true, false),
            m if m == ZERO | KEEP => (true, true),
            _ => return Err(Error::fs("fallocate", libc::EOPNOTSUPP)),
        };
        let now = self.now();
        if zero {
            self.zero_range(ino, off, end.min(i.size))?;
        }
        if !keep && end > i.size {
            self.truncate(ino, end, now)?;
        } else if zero {
            let i = self.inode_mut(ino)?;
            i.mtime = now;
            i.ctime = now;
            self.ov.changed |= i.nlink > 0;
        }
        Ok(())
    }

    /// Makes `[start, end)` read as zeros: whole chunks become holes (their
    /// reference and dirty data dropped), partial ones get zeros written.
    fn zero_range(&mut self, ino: u64, start: u64, end: u64) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        self.dirty_file(ino, "fallocate")?;
        let size = self.inode_mut(ino)?.size;
        let chunk = self.chunk_size();
        let mut pos = start;
        while pos < end {
            let idx = pos / chunk;
            let cstart = idx * chunk;
            let cend = (cstart + chunk).min(end);
            // A whole chunk, or the whole stored tail of the last one.
            let whole = pos == cstart && (cend == cstart + chunk || cend == size);
            if whole {
                let f = self.ov.files.get_mut(&ino).expect("dirty file");
                if let Some(r) = f.refs.get_mut(idx as usize) {
                    *r = None;
                }
                let freed = f.dirty.remove(&idx).map_or(0, |c| c.held());
                self.ov.dirty_bytes -= freed;
            } else {
                let zeros = vec![0u8; (cend - pos) as usize];
                let c = self.dirty_chunk(ino, idx, size);
                let delta = c.write((pos - cstart) as usize, &zeros);
                self.charge(delta);
            }
            pos = cend;
        }
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64, now: i64) -> Result<()> {
        let old = self.getattr(ino)?.size;
        // Only growth is limited (a larger file of an earlier build may
        // shrink), and not what the journal acknowledged before.
        let limit = if self.replaying {
            i64::MAX as u64
        } else {
            self.max_file_size
        };
        if size > old && size > limit {
            return Err(Error::fs("truncate", libc::EFBIG));
        }
        self.dirty_file(ino, "truncate")?;
        if size < old {
            let chunk = self.chunk_size();
            let keep_chunks = size.div_ceil(chunk);
            let tail = (size % chunk) as usize;
            let f = self.ov.files.get_mut(&ino).expect("dirty file");
            let dropped: usize = f
                .dirty
                .split_off(&keep_chunks)
                .values()
                .map(DirtyChunk::held)
                .sum();
            f.refs.truncate(keep_chunks as usize);
            self.ov.dirty_bytes -= dropped;
            if tail != 0 {
                let delta = self.dirty_chunk(ino, keep_chunks - 1, old).truncate(tail);
                self.charge(delta);
            }
        }
        let i = self.inode_mut(ino)?;
        i.size = size;
        i.mtime = now;
        i.ctime = now;
        self.ov.changed |= i.nlink > 0;
        Ok(())
    }

    /// Seals every dirty chunk into a content object now (not yet committed),
    /// releasing its plaintext from memory. Many at once are sealed on
    /// several threads (`seal_dirty_together`).
    pub fn seal_dirty(&mut self) -> Result<()> {
        let count: usize = self.ov.files.values().map(|f| f.dirty.len()).sum();
        let threads = seal_threads(count);
        if threads > 1 {
            return self.seal_dirty_together(threads);
        }
        let repo = self.head.repo().clone();
        let held = &mut self.ov.dirty_bytes;
        for f in self.ov.files.values_mut() {
            // One chunk at a time, so that an error leaves the overlay whole.
            while let Some(mut entry) = f.dirty.first_entry() {
                let idx = *entry.key();
                let before = entry.get().held();
                let made = entry.get_mut().materialize(&repo);
                *held = (*held - before) + entry.get().held();
                made?;
                // Removed only once sealed: an error leaves it dirty.
                let r = seal_chunk(&repo, entry.get().bytes())?;
                let c = entry.remove();
                *held -= c.held();
                if let Some(id) = r {
                    repo.cache_chunk(id, c.into_bytes());
                }
                f.set_ref(idx, r);
            }
        }
        Ok(())
    }

    /// [`Engine::seal_dirty`] on `threads` threads: every dirty chunk is
    /// taken out of the overlay, read whole (its base opened where writes
    /// left parts of it) and sealed, then put back as its reference, or
    /// dirty again if that failed (the first error is returned, and the
    /// chunks no thread had taken yet go back untouched), so that an error
    /// leaves the overlay whole, as one chunk at a time does.
    /// Sealing is the CPU of an `fsync` after scattered writes (each
    /// written chunk is opened and sealed again whole), while the program
    /// waiting for it leaves the other cores idle.
    fn seal_dirty_together(&mut self, threads: usize) -> Result<()> {
        let repo = self.head.repo().clone();
        let mut work = Vec::new();
        for (ino, f) in &mut self.ov.files {
            work.extend(
                std::mem::take(&mut f.dirty)
                    .into_iter()
                    .map(|(idx, c)| (*ino, idx, c)),
            );
        }
        // Taken from one queue by this thread and up to `threads - 1`
        // helpers (none if they cannot start: this thread seals it all),
        // until it is empty or one fails; from its end, so reversed first:
        // each file's chunks go into the packs about in file order, as one
        // at a time puts them (what a later sequential read reads ahead
        // in). A chunk's plaintext leaves memory (for the bounded chunk
        // cache) as soon as it is sealed: one chunk a thread is whole at a
        // time.
        work.reverse();
        let queue = std::sync::Mutex::new(work);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let seal_queued = || {
            let mut done = Vec::new();
            while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                // Popped before the work: the queue is not held meanwhile.
                let next = queue.lock().expect("seal queue").pop();
                let Some((ino, idx, mut c)) = next else {
                    break;
                };
                let before = c.held();
                let sealed = c
                    .materialize(&repo)
                    .and_then(|()| seal_chunk(&repo, c.bytes()));
                done.push(match sealed {
                    Ok(r) => {
                        if let Some(id) = r {
                            repo.cache_chunk(id, c.into_bytes());
                        }
                        (ino, idx, before, Ok(r))
                    }
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        (ino, idx, before, Err((e, c)))
                    }
                });
            }
            done
        };
        let done: Vec<_> = std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("sovseal-seal".into())
                        .spawn_scoped(s, seal_queued)
                        .ok()
                })
                .collect();
            let mut done = seal_queued();
            for h in helpers {
                done.extend(h.join().expect("a sealing thread panicked"));
            }
            done
        });
        let mut first_error = None;
        for (ino, idx, before, sealed) in done {
            let f = self.ov.files.get_mut(&ino).expect("taken from this file");
            match sealed {
                Ok(r) => {
                    self.ov.dirty_bytes -= before;
                    f.set_ref(idx, r);
                }
                Err((e, c)) => {
                    self.ov.dirty_bytes = self.ov.dirty_bytes - before + c.held();
                    f.dirty.insert(idx, c);
                    first_error.get_or_insert(e);
                }
            }
        }
        // What no thread took after a failure goes back as it was.
        for (ino, idx, c) in queue.into_inner().expect("seal queue") {
            let f = self.ov.files.get_mut(&ino).expect("taken from this file");
            f.dirty.insert(idx, c);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Fewest dirty chunks [`Engine::seal_dirty`] seals on several threads:
/// below it (an `fsync` of a database page or two, a small file's close),
/// starting a thread costs more than sealing on this one.
const PARALLEL_SEAL_MIN: usize = 16;

/// Threads that seal `count` dirty chunks: the cores there are (asked
/// once), at most four, and one below [`PARALLEL_SEAL_MIN`].
fn seal_threads(count: usize) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if count < PARALLEL_SEAL_MIN {
        return 1;
    }
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}
