//! The mounted filesystem, not tied to the FUSE library.
//!
//! [`Fs`] serves the live tree (the engine's working tree) and the read-only
//! `.snapshots/` tree, keeps open handles (and pins open files so that an
//! unlinked file stays usable), and turns operations into commit requests:
//! `fsync`, `fsyncdir` and the close (`flush`) of a written handle commit
//! synchronously; metadata-only changes ask for a commit after a quiet
//! period. Operations return plain [`Attr`]s and [`crate::Error`]s; the FUSE
//! adapter (`crate::mount::fuse`) only translates.
//!
//! Inode numbers: the live tree uses the engine's (stable for an inode's
//! life, reused only after the kernel has forgotten the inode: see
//! `crate::engine`'s pins; the root is 1); `.snapshots` and everything under it live above
//! [`snapshots::DIR_INO`].

pub mod committer;
pub mod privileges;
pub mod snapshots;
mod writers;

use crate::engine::{CAPABILITY, Engine, RenameFlags, SetAttr, XattrFlags, acl};
use crate::mount::metrics::{Metrics, Sample};
use crate::replication::replicator::Replicator;
use crate::repo::view::Reuse;
use crate::seal::tree::{FileType, Inode, ROOT_INO};
use crate::{Error, Result};
use committer::Committer;
use privileges::Change;
use snapshots::Snapshots;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Takes the file capability, if any, then set-ID `bits` from `ino`, whose
/// privileges are `p`.
fn drop_privileges(
    e: &mut Engine,
    ino: u64,
    p: &crate::engine::Privileges,
    bits: u32,
) -> Result<()> {
    if p.capability {
        e.removexattr(ino, CAPABILITY)?;
    }
    if bits != 0 {
        let a = SetAttr {
            perm: Some(p.perm & !bits),
            ..SetAttr::default()
        };
        e.setattr(ino, &a)?;
    }
    Ok(())
}

/// File attributes as the mount shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number as the kernel sees it.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type.
    pub kind: FileType,
    /// Permission bits.
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time, ns since the epoch.
    pub atime: i64,
    /// Modification time, ns.
    pub mtime: i64,
    /// Change time, ns.
    pub ctime: i64,
    /// True for nodes of `.snapshots` (immutable: cache them long).
    pub immutable: bool,
    /// Bytes in stored chunks (`st_blocks` is this in 512-byte units):
    /// holes of sparse files count nothing.
    pub stored: u64,
    /// Device number of a device node (0 otherwise).
    pub rdev: u64,
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirItem {
    /// Name.
    pub name: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: FileType,
}

/// Mount behaviour.
#[derive(Clone, Debug)]
pub struct Options {
    /// Refuse every mutation with `EROFS`.
    pub read_only: bool,
    /// Quiet period after metadata-only changes before they are committed.
    pub quiet: Duration,
    /// Longest delay of a metadata-only change under continuous activity.
    pub max_delay: Duration,
    /// `fsync` and close also wait until the snapshot is on the remote.
    pub sync_replication: bool,
    /// The close of a written file also waits until its snapshot is on
    /// stable storage (the behaviour before sealing and syncing were
    /// separate steps).
    pub durable_close: bool,
    /// Longest time a sealed snapshot waits before it is made durable.
    pub sync_interval: Duration,
    /// Ask the kernel for its writeback cache (see [`Fs::enable_writeback`]).
    pub writeback_cache: bool,
    /// Set-ID programs run from this mount (`-o suid`): the kernel then
    /// keeps dropping privileges itself, under its own lock, since `exec`
    /// reads its own copy of the mode (see `privileges`).
    pub honors_setid: bool,
    /// A follower's view (read-only): the tree advances to each snapshot
    /// fetched from the writer ([`Fs::advance`]); a file opened reads the
    /// snapshot it was opened in until it is closed.
    pub follow: bool,
    /// Requests under `.snapshots/` that may wait for a flat start's older
    /// history at once ([`Snapshots::wait_older`]): at most half the FUSE
    /// workers, so that the live tree keeps some (none with one worker:
    /// `.snapshots/` then shows what is in so far).
    pub history_waiters: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_only: false,
            quiet: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            sync_replication: false,
            durable_close: false,
            sync_interval: Duration::from_secs(1),
            writeback_cache: false,
            honors_setid: false,
            follow: false,
            history_waiters: 2,
        }
    }
}

/// How the kernel may cache an opened file's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCache {
    /// Keep what it cached before (`FOPEN_KEEP_CACHE`): every change goes
    /// through this mount, which tells the kernel.
    Keep,
    /// Bypass it (`FOPEN_DIRECT_IO`): a follower's live file, read at the
    /// snapshot it was opened in while the tree moves on.
    Bypass,
}

/// An open file handle and how the kernel may cache its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The handle.
    pub fh: u64,
    /// The page cache mode.
    pub cache: PageCache,
}

/// A kernel cache entry that no longer holds after a follower advanced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// An inode's attributes and cached data.
    Inode(u64),
    /// A name in a directory (parent inode, name).
    Entry(u64, Vec<u8>),
}

/// What a follower's advance changed.
#[derive(Clone, Debug)]
pub struct Advance {
    /// The snapshot shown before.
    pub from: u64,
    /// The snapshot shown now.
    pub to: u64,
    /// What the kernel must forget of what it cached.
    pub invalidate: Vec<Invalidation>,
}

enum Handle {
    /// A live file, pinned in the engine while open.
    File {
        ino: u64,
        wrote: bool,
        /// Who opened it: writes the kernel sends on its own behalf (pid
        /// 0) are attributed to this process.
        by: Caller,
    },
    /// A file inside a snapshot (for a follower's live file, the snapshot
    /// shown when it was opened, past the kernel's page cache).
    SnapFile {
        seq: u64,
        ino: u64,
        cache: PageCache,
    },
    /// A directory listing captured at opendir (stable offsets).
    Dir { items: Vec<DirItem> },
    /// `.snapshots`, paged from the index.
    SnapRoot,
}

enum Node {
    Live(u64),
    SnapRoot,
    Latest,
    Snap { seq: u64, ino: u64 },
}

const EROFS: Error = Error::Fs {
    op: "history is read-only",
    errno: libc::EROFS,
};

fn attr_of(i: &Inode, ino: u64, immutable: bool) -> Attr {
    Attr {
        ino,
        size: i.size,
        kind: i.file_type(),
        perm: i.perm as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        atime: i.atime,
        mtime: i.mtime,
        ctime: i.ctime,
        immutable,
        stored: i.size,
        rdev: i.rdev(),
    }
}

/// [`attr_of`] for a live inode, with its stored bytes from the engine.
fn live_attr(e: &Engine, i: &Inode, ino: u64) -> Result<Attr> {
    Ok(Attr {
        stored: e.stored_bytes(ino, i)?,
        ..attr_of(i, ino, false)
    })
}

/// What the kernel must drop of what it caches of `referenced` (live
/// inode numbers) when the tree moves from `old` to `new`: each inode whose
/// record changed, and each changed name in such a directory.
fn changes(
    old: &crate::repo::view::SnapshotView,
    new: &crate::repo::view::SnapshotView,
    referenced: &[u64],
) -> Result<Vec<Invalidation>> {
    let mut out = Vec::new();
    for &ino in referenced {
        let (a, b) = (old.inode(ino)?, new.inode(ino)?);
        // A directory's record keeps its fold's tree while a delta chain
        // changes its names: equal records say nothing then.
        let edits = |v: &crate::repo::view::SnapshotView| -> Result<_> {
            Ok(v.merged()?.and_then(|m| m.dir(ino)).cloned())
        };
        if a == b && edits(old)? == edits(new)? {
            continue;
        }
        out.push(Invalidation::Inode(ino));
        let entries = |v: &crate::repo::view::SnapshotView, i: &Option<Inode>| match i {
            Some(i) if i.file_type() == FileType::Dir => v.entries(i.ino).map(Some),
            _ => Ok(None),
        };
        let (ea, eb) = (entries(old, &a)?, entries(new, &b)?);
        let empty = Default::default();
        let (ea, eb) = (
            ea.as_deref().unwrap_or(&empty),
            eb.as_deref().unwrap_or(&empty),
        );
        for (name, e) in ea {
            if eb.get(name) != Some(e) {
                out.push(Invalidation::Entry(ino, name.clone()));
            }
        }
        for name in eb.keys().filter(|n| !ea.contains_key(*n)) {
            out.push(Invalidation::Entry(ino, name.clone()));
        }
    }
    Ok(out)
}

/// The mounted filesystem.
pub struct Fs {
    engine: Arc<RwLock<Engine>>,
    snaps: Snapshots,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    committer: Committer,
    replicator: Option<Arc<Replicator>>,
    opts: Options,
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
    /// Inode -> the snapshot that last wrote it, for inodes written since
    /// the mount started; older inodes date from `mount_head` or before.
    committed_at: Arc<Mutex<HashMap<u64, u64>>>,
    mount_head: u64,
    /// The kernel's lookup count per inode number (FUSE's `nlookup`): each
    /// entry reply adds one, FORGET takes them back. A live inode the
    /// kernel still references is pinned in the engine, so that losing its
    /// last name (unlink, a rename over it) keeps it readable and
    /// stat-able until the kernel forgets it, as on a local file system; a
    /// history inode leaves the `.snapshots` table when forgotten.
    kernel_refs: Mutex<HashMap<u64, u64>>,
    /// Whether the kernel enforces POSIX ACLs on this mount (negotiated at
    /// FUSE init); without it ACLs are refused rather than kept unenforced.
    acls: AtomicBool,
    /// Whether the kernel caches writes (FUSE writeback cache, negotiated
    /// at init). It then sends a file's cached writes through any handle
    /// open for writing on it, not necessarily the one they were written
    /// through, so a close commits when its file was written through any
    /// handle since: `written` holds those files.
    writeback: AtomicBool,
    written: Mutex<HashSet<u64>>,
    /// Whether this file system drops set-ID bits and file capabilities on
    /// a write, truncate or chown (`FUSE_HANDLE_KILLPRIV_V2`, negotiated at
    /// init), so that the kernel need not ask for `security.capability`
    /// before every write: see `privileges`.
    killpriv: AtomicBool,
    /// Names of the processes that change the tree (provenance).
    writers: writers::Writers,
    /// A follower's snapshot as `latest` names it: set once the kernel has
    /// dropped what it cached of the one before (0: not a follower).
    published: AtomicU64,
}

/// The `.snapshots` inode table is swept of inodes the kernel does not
/// reference (numbers handed out by `readdir` alone) above this size.
const HISTORY_TABLE_SWEEP: usize = 1 << 16;

/// The virtual attribute that tells whether a file's latest content is
/// committed and replicated: `dirty`, `committed:SEQ` or `replicated:SEQ`.
/// Not listed (copy tools do not carry it along) and not settable.
pub const STATE_XATTR: &[u8] = b"user.sovseal.state";

/// The attribute of the mount root that sets the note sealed with the next
/// snapshot (`setfattr -n user.sovseal.note -v TEXT MOUNT`): not stored on
/// the root, readable until that snapshot is sealed, removable to drop it.
pub const NOTE_XATTR: &[u8] = b"user.sovseal.note";

/// Attribute names reserved on the mount root for the mount's own use.
const CONTROL_PREFIX: &[u8] = b"user.sovseal.";

/// The extended attribute namespaces that are stored (sealed like
/// everything else), besides the two POSIX ACL names.
const XATTR_NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// The caller of a request, as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id (0 when the kernel itself asks).
    pub pid: u32,
    /// The caller's umask, which the kernel leaves to the file system
    /// (`FUSE_DONT_MASK`): a directory's default ACL replaces it.
    pub umask: u32,
}

impl Caller {
    /// True if the caller may keep a set-group-ID bit for group `gid`:
    /// root, or a member of `gid` (primary or supplementary group).
    fn in_group_or_root(&self, gid: u32) -> bool {
        self.uid == 0 || self.in_group(gid)
    }

    /// True if the caller is a member of `gid` (primary or supplementary).
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || crate::sys::in_group(self.pid, gid)
    }
}

impl Fs {
    /// Serves `engine` with `opts`; every new snapshot is handed to the
    /// replicator, if there is one.
    pub fn new(engine: Engine, opts: Options, replicator: Option<Arc<Replicator>>) -> Self {
        let agent = engine.shared_agent();
        let data_dir = agent.data_dir();
        let engine = Arc::new(RwLock::new(engine));
        let mount_head = engine.read().expect("engine lock").head().seq();
        let committed_at: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
        let on_commit: committer::OnCommit = {
            let committed_at = committed_at.clone();
            Arc::new(move |info| {
                let mut at = committed_at.lock().expect("committed_at");
                for ino in &info.inodes {
                    at.insert(*ino, info.seq);
                }
            })
        };
        // Only durable snapshots are replicated: a power cut can never
        // leave the remote ahead of the local disk.
        let on_durable: Option<committer::OnDurable> = replicator
            .clone()
            .map(|r| Arc::new(move |seq| r.notify(seq)) as committer::OnDurable);
        let metrics = Arc::new(Metrics::default());
        let opts_follow = opts.follow;
        let committer = Committer::start(
            engine.clone(),
            committer::Config {
                quiet: opts.quiet,
                max_delay: opts.max_delay,
                interval: opts.sync_interval,
                release_at_sync: !opts.sync_replication,
            },
            Some(on_commit),
            on_durable,
            metrics.clone(),
        );
        Fs {
            engine,
            snaps: Snapshots::new(agent, opts.history_waiters),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            committer,
            replicator,
            opts,
            data_dir,
            metrics,
            committed_at,
            mount_head,
            kernel_refs: Mutex::new(HashMap::new()),
            acls: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            killpriv: AtomicBool::new(false),
            written: Mutex::new(HashSet::new()),
            writers: writers::Writers::default(),
            published: AtomicU64::new(if opts_follow { mount_head } else { 0 }),
        }
    }

    /// The kernel enforces POSIX ACLs: accept them.
    pub fn enable_acls(&self) {
        self.acls.store(true, Ordering::Relaxed);
    }

    /// Whether to ask the kernel to leave dropping privileges to this file
    /// system (`FUSE_HANDLE_KILLPRIV_V2`): unless set-ID programs run from
    /// this mount.
    pub fn wants_killpriv(&self) -> bool {
        !self.opts.honors_setid
    }

    /// The kernel leaves dropping privileges on a write, truncate or chown
    /// to this file system (`FUSE_HANDLE_KILLPRIV_V2`).
    pub fn enable_killpriv(&self) {
        self.killpriv.store(true, Ordering::Relaxed);
    }

    /// Whether the mount asks the kernel for its writeback cache.
    pub fn wants_writeback(&self) -> bool {
        self.opts.writeback_cache && !self.opts.read_only
    }

    /// The kernel caches writes (FUSE writeback cache): it flushes a file's
    /// cached writes before it sends the close (FLUSH) or the fsync, so
    /// those still commit exactly what was written before them.
    pub fn enable_writeback(&self) {
        self.writeback.store(true, Ordering::Relaxed);
    }

    /// One more kernel reference to live inode `ino`; the first pins it.
    /// Called under the engine's write lock `e` (lock order: engine, then
    /// the reference table).
    fn hold_live(&self, e: &mut Engine, ino: u64) {
        let mut refs = self.kernel_refs.lock().expect("kernel refs");
        let n = refs.entry(ino).or_insert(0);
        if *n == 0 {
            e.pin(ino);
        }
        *n += 1;
    }

    /// One more kernel reference to an inode the engine does not own
    /// (history, `.snapshots`).
    fn hold_history(&self, ino: u64) {
        *self
            .kernel_refs
            .lock()
            .expect("kernel refs")
            .entry(ino)
            .or_insert(0) += 1;
    }

    /// One more kernel reference to `ino` if it already has one (no pin
    /// needed); false when this would be the first.
    fn hold_again(&self, ino: u64) -> bool {
        match self.kernel_refs.lock().expect("kernel refs").get_mut(&ino) {
            Some(n) if *n > 0 => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// FORGET: the kernel drops `n` references to `ino`. At zero a live
    /// inode is unpinned (an orphan is then deleted) and a history inode
    /// leaves the `.snapshots` table.
    ///
    /// Tables emptied by a wave of FORGETs (the kernel dropping its caches)
    /// shrink.
    pub fn forget(&self, ino: u64, n: u64) {
        if Snapshots::owns(ino) {
            let mut refs = self.kernel_refs.lock().expect("kernel refs");
            if let Some(c) = refs.get_mut(&ino) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    refs.remove(&ino);
                    crate::sys::shrink_sparse(&mut refs);
                    drop(refs);
                    self.snaps.release(ino);
                }
            }
            return;
        }
        let mut e = self.eng_mut();
        let mut refs = self.kernel_refs.lock().expect("kernel refs");
        if let Some(c) = refs.get_mut(&ino) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                refs.remove(&ino);
                crate::sys::shrink_sparse(&mut refs);
                drop(refs);
                e.unpin(ino);
            }
        }
    }

    /// The number of inodes the kernel references, and the size of the
    /// `.snapshots` inode table (for the metrics).
    pub fn inode_counts(&self) -> (usize, usize) {
        (
            self.kernel_refs.lock().expect("kernel refs").len(),
            self.snaps.table_len(),
        )
    }

    /// Sweeps the `.snapshots` table of inodes the kernel does not
    /// reference once it is large (numbers `readdir` handed out).
    fn sweep_history(&self) {
        if self.snaps.table_len() > HISTORY_TABLE_SWEEP {
            let refs = self.kernel_refs.lock().expect("kernel refs");
            self.snaps.retain(|ino| refs.contains_key(&ino));
        }
    }

    fn eng(&self) -> std::sync::RwLockReadGuard<'_, Engine> {
        self.engine.read().expect("engine lock")
    }

    fn eng_mut(&self) -> std::sync::RwLockWriteGuard<'_, Engine> {
        self.engine.write().expect("engine lock")
    }

    fn node(&self, ino: u64) -> Result<Node> {
        if !Snapshots::owns(ino) {
            return Ok(Node::Live(ino));
        }
        match ino {
            snapshots::DIR_INO => Ok(Node::SnapRoot),
            snapshots::LATEST_INO => Ok(Node::Latest),
            _ => match self.snaps.node(ino) {
                Some((seq, ino)) => Ok(Node::Snap { seq, ino }),
                None => Err(Error::fs("inode", libc::ENOENT)),
            },
        }
    }

    /// A mutation of the live tree at `parent` is allowed (not history, not
    /// read-only, not `.snapshots` itself).
    fn writable(&self, parent: u64, name: Option<&[u8]>) -> Result<()> {
        if Snapshots::owns(parent) || self.opts.read_only {
            return Err(EROFS);
        }
        if parent == ROOT_INO && name == Some(snapshots::NAME) {
            return Err(EROFS);
        }
        Ok(())
    }

    fn changed(&self) {
        self.committer.commit_soon();
    }

    /// The commit of a `close`: sealed (survives a daemon crash); durable
    /// too with `durable_close`, replicated too with `sync_replication`.
    fn commit_close(&self) -> Result<()> {
        if self.opts.durable_close || self.opts.sync_replication {
            self.commit_durable()
        } else if self.eng().is_dirty() {
            self.committer.commit_sync()
        } else {
            // Nothing to seal: what the handle wrote is in a snapshot
            // already (a seal since its last write covered it, an fsync's
            // say), and the commit thread would find the overlay clean.
            // (A failed seal leaves it dirty.)
            Ok(())
        }
    }

    /// The commit of `fsync` and friends: sealed and on stable storage
    /// (and on the remote with `sync_replication`).
    fn commit_durable(&self) -> Result<()> {
        // Uploads wait while it syncs, and a moment after.
        let _syncing = match (&self.replicator, self.opts.sync_replication) {
            (Some(r), false) => Some(r.foreground_sync()),
            _ => None,
        };
        self.committer.commit_durable()?;
        match (&self.replicator, self.opts.sync_replication) {
            (Some(r), true) => r.wait_for(self.eng().head().seq()),
            _ => Ok(()),
        }
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().expect("handles").insert(fh, h);
        fh
    }

    // ----- attributes and names -----

    /// A read-only directory of the history tree, timed `ms`.
    fn history_dir(ino: u64, ms: i64, immutable: bool) -> Attr {
        let t = ms * 1_000_000;
        Attr {
            ino,
            size: 0,
            kind: FileType::Dir,
            perm: 0o555,
            nlink: 2,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
            immutable,
            stored: 0,
            rdev: 0,
        }
    }

    fn snap_root_attr(&self) -> Attr {
        let ms = self.eng().head().timestamp_ms();
        Self::history_dir(snapshots::DIR_INO, ms, false)
    }

    /// The snapshot `.snapshots/latest` names: the head, or a follower's
    /// last published one ([`Fs::publish`]).
    fn latest_seq(&self) -> u64 {
        match self.published.load(Ordering::Acquire) {
            0 => self.eng().head().seq(),
            seq => seq,
        }
    }

    fn latest_attr(&self) -> Attr {
        let mut a = self.snap_root_attr();
        a.ino = snapshots::LATEST_INO;
        a.kind = FileType::Symlink;
        a.perm = 0o777;
        a.nlink = 1;
        a.size = 10;
        a
    }

    fn snap_attr(&self, seq: u64, ino: u64) -> Result<Attr> {
        let fuse_ino = self.snaps.ino_for(seq, ino);
        if ino == ROOT_INO {
            // From the index alone: listing `.snapshots` with -l decrypts nothing.
            return Ok(Self::history_dir(
                fuse_ino,
                self.snaps.timestamp_ms(seq)?,
                true,
            ));
        }
        let v = self.snaps.view(seq)?;
        let i = v.getattr(ino)?;
        Ok(Attr {
            stored: v.stored_bytes(&i)?,
            ..attr_of(&i, fuse_ino, true)
        })
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        match self.node(ino)? {
            Node::Live(i) => {
                let e = self.eng();
                live_attr(&e, &e.getattr(i)?, i)
            }
            Node::SnapRoot => Ok(self.snap_root_attr()),
            Node::Latest => Ok(self.latest_attr()),
            Node::Snap { seq, ino } => self.snap_attr(seq, ino),
        }
    }

    /// Whether the kernel may remember that a name is absent from `parent`
    /// (a negative entry): true for live directories, whose every change
    /// goes through this mount, and for history, which never changes; false
    /// for `.snapshots/` itself, which grows with each commit.
    pub fn caches_absence(&self, parent: u64) -> bool {
        matches!(self.node(parent), Ok(Node::Live(_) | Node::Snap { .. }))
    }

    /// Looks up `name` in `parent`; the kernel now holds one more
    /// reference to the inode (see [`Fs::forget`]).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        match self.node(parent)? {
            Node::Live(p) => {
                if p == ROOT_INO && name == snapshots::NAME {
                    let a = self.snap_root_attr();
                    self.hold_history(a.ino);
                    return Ok(a);
                }
                {
                    // The reference is taken while the read lock still
                    // holds the answer: a number is freed (and may be
                    // reused) only under the write lock.
                    let e = self.eng();
                    let d = e
                        .lookup(p, name)?
                        .ok_or_else(|| Error::fs("lookup", libc::ENOENT))?;
                    let a = live_attr(&e, &e.getattr(d.ino)?, d.ino)?;
                    if self.hold_again(a.ino) {
                        return Ok(a);
                    }
                }
                // The first reference pins the inode: resolve the name
                // again under the write lock, so that nothing unlinks it
                // between the answer and the pin.
                let mut e = self.eng_mut();
                let d = e
                    .lookup(p, name)?
                    .ok_or_else(|| Error::fs("lookup", libc::ENOENT))?;
                let a = live_attr(&e, &e.getattr(d.ino)?, d.ino)?;
                self.hold_live(&mut e, d.ino);
                Ok(a)
            }
            Node::SnapRoot => {
                let a = if name == snapshots::LATEST {
                    self.latest_attr()
                } else {
                    let seq = snapshots::parse_name(name)
                        .ok_or_else(|| Error::fs("lookup", libc::ENOENT))?;
                    self.snaps.wait_older(Some(seq));
                    self.snap_attr(seq, ROOT_INO)?
                };
                self.hold_history(a.ino);
                Ok(a)
            }
            Node::Latest => Err(Error::fs("lookup", libc::ENOTDIR)),
            Node::Snap { seq, ino } => {
                let d = self
                    .snaps
                    .view(seq)?
                    .lookup(ino, name)?
                    .ok_or_else(|| Error::fs("lookup", libc::ENOENT))?;
                let a = self.snap_attr(seq, d.ino)?;
                self.hold_history(a.ino);
                Ok(a)
            }
        }
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::Live(i) => self.eng().readlink(i),
            Node::Latest => Ok(snapshots::dir_name(self.latest_seq()).into_bytes()),
            Node::Snap { seq, ino } => self.snaps.view(seq)?.readlink(ino),
            Node::SnapRoot => Err(Error::fs("readlink", libc::EINVAL)),
        }
    }

    // ----- directories -----

    /// Opens a directory, capturing its listing for stable offsets.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let h = match self.node(ino)? {
            Node::SnapRoot => {
                self.snaps.wait_older(None);
                Handle::SnapRoot
            }
            Node::Latest => return Err(Error::fs("opendir", libc::ENOTDIR)),
            Node::Live(i) => {
                let e = self.eng();
                let parent = e.getattr(i)?.parent;
                let mut items = vec![
                    DirItem {
                        name: b".".to_vec(),
                        ino: i,
                        kind: FileType::Dir,
                    },
                    DirItem {
                        name: b"..".to_vec(),
                        ino: parent,
                        kind: FileType::Dir,
                    },
                ];
                if i == ROOT_INO {
                    items.push(DirItem {
                        name: snapshots::NAME.to_vec(),
                        ino: snapshots::DIR_INO,
                        kind: FileType::Dir,
                    });
                }
                items.extend(e.readdir(i)?.into_iter().map(|(name, d)| DirItem {
                    name,
                    ino: d.ino,
                    kind: d.file_type,
                }));
                Handle::Dir { items }
            }
            Node::Snap { seq, ino: i } => {
                let v = self.snaps.view(seq)?;
                let mut items = vec![DirItem {
                    name: b".".to_vec(),
                    ino,
                    kind: FileType::Dir,
                }];
                let parent = v.getattr(i)?.parent;
                let pino = if i == ROOT_INO {
                    snapshots::DIR_INO
                } else {
                    self.snaps.ino_for(seq, parent)
                };
                items.push(DirItem {
                    name: b"..".to_vec(),
                    ino: pino,
                    kind: FileType::Dir,
                });
                self.sweep_history();
                for (n, d) in v.entries(i)?.iter() {
                    items.push(DirItem {
                        name: n.clone(),
                        ino: self.snaps.ino_for(seq, d.ino),
                        kind: d.file_type,
                    });
                }
                Handle::Dir { items }
            }
        };
        Ok(self.new_fh(h))
    }

    /// Entries of an open directory from `offset`, each with the offset of
    /// the entry after it. At most `max` entries.
    pub fn readdir(&self, fh: u64, offset: u64, max: usize) -> Result<Vec<(u64, DirItem)>> {
        let hs = self.handles.lock().expect("handles");
        match hs.get(&fh) {
            Some(Handle::Dir { items }) => Ok(items
                .iter()
                .enumerate()
                .skip(offset as usize)
                .take(max)
                .map(|(i, d)| (i as u64 + 1, d.clone()))
                .collect()),
            Some(Handle::SnapRoot) => {
                drop(hs);
                // Offsets: 1 ".", 2 "..", 3 "latest", then seq + 3.
                let mut out = Vec::new();
                let fixed = [
                    (b".".to_vec(), snapshots::DIR_INO, FileType::Dir),
                    (b"..".to_vec(), ROOT_INO, FileType::Dir),
                    (
                        snapshots::LATEST.to_vec(),
                        snapshots::LATEST_INO,
                        FileType::Symlink,
                    ),
                ];
                for (i, (name, ino, kind)) in fixed.into_iter().enumerate().skip(offset as usize) {
                    out.push((i as u64 + 1, DirItem { name, ino, kind }));
                }
                let after = offset.saturating_sub(3);
                let want = max.saturating_sub(out.len()) as u64;
                for m in self.snaps.agent().list(after, want)? {
                    let ino = self.snaps.ino_for(m.seq, ROOT_INO);
                    out.push((
                        m.seq + 3,
                        DirItem {
                            name: snapshots::dir_name(m.seq).into_bytes(),
                            ino,
                            kind: FileType::Dir,
                        },
                    ));
                }
                Ok(out)
            }
            _ => Err(Error::fs("readdir", libc::EBADF)),
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.handles.lock().expect("handles").remove(&fh);
    }

    /// `fsyncdir`: commits, durably.
    pub fn fsyncdir(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        self.commit_durable()
    }

    // ----- files -----

    /// Opens a file; `write` if opened for writing.
    pub fn open(&self, ino: u64, write: bool, who: Caller) -> Result<Opened> {
        let keep = |fh| Opened {
            fh,
            cache: PageCache::Keep,
        };
        match self.node(ino)? {
            Node::Live(i) => {
                if write && self.opts.read_only {
                    return Err(EROFS);
                }
                if self.opts.follow {
                    // The snapshot shown now, until the close: a reader
                    // never sees half of one as the follower advances.
                    let e = self.eng();
                    if e.getattr(i)?.file_type() == FileType::Dir {
                        return Err(Error::fs("open", libc::EISDIR));
                    }
                    let seq = e.head().seq();
                    drop(e);
                    // Past the kernel's page cache: it is one per inode,
                    // shared by opens of different snapshots, and a read
                    // that ends early (an older, shorter snapshot) shrinks
                    // the inode's size, which would cut cached reads short.
                    let cache = PageCache::Bypass;
                    let fh = self.new_fh(Handle::SnapFile { seq, ino: i, cache });
                    return Ok(Opened { fh, cache });
                }
                let mut e = self.eng_mut();
                if e.getattr(i)?.file_type() == FileType::Dir {
                    return Err(Error::fs("open", libc::EISDIR));
                }
                e.pin(i);
                drop(e);
                Ok(keep(self.new_fh(Handle::File {
                    ino: i,
                    wrote: false,
                    by: who,
                })))
            }
            Node::Snap { seq, ino: i } => {
                if write {
                    return Err(EROFS);
                }
                self.snaps.view(seq)?.getattr(i)?;
                Ok(keep(self.new_fh(Handle::SnapFile {
                    seq,
                    ino: i,
                    cache: PageCache::Keep,
                })))
            }
            Node::SnapRoot | Node::Latest => Err(Error::fs("open", libc::EISDIR)),
        }
    }

    /// Creates and opens a file.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32, who: Caller) -> Result<(Attr, u64)> {
        if parent == ROOT_INO && name == snapshots::NAME {
            return Err(Error::fs("create", libc::EEXIST));
        }
        self.writable(parent, Some(name))?;
        let w = self.writer(&who);
        let mut e = self.eng_mut();
        let perm = e.creation_perm(parent, mode, who.umask)?;
        let i = e.create(parent, name, perm, who.uid, who.gid)?;
        e.pin(i.ino);
        self.hold_live(&mut e, i.ino);
        e.attribute_new(i.ino, &w);
        drop(e);
        self.changed();
        let fh = self.new_fh(Handle::File {
            ino: i.ino,
            wrote: false,
            by: who,
        });
        Ok((attr_of(&i, i.ino, false), fh))
    }

    /// Reads from an open file; `direct` for a handle opened `O_DIRECT`.
    /// Whole chunks skip the chunk cache only where the kernel's page cache
    /// keeps what the reply carries ([`Reuse`]).
    pub fn read(&self, fh: u64, off: u64, size: usize, direct: bool) -> Result<Vec<u8>> {
        let (h, cache) = {
            let hs = self.handles.lock().expect("handles");
            match hs.get(&fh) {
                Some(Handle::File { ino, .. }) => (Node::Live(*ino), PageCache::Keep),
                Some(Handle::SnapFile { seq, ino, cache }) => (
                    Node::Snap {
                        seq: *seq,
                        ino: *ino,
                    },
                    *cache,
                ),
                _ => return Err(Error::fs("read", libc::EBADF)),
            }
        };
        let reuse = match cache {
            PageCache::Keep if !direct => Reuse::Once,
            _ => Reuse::Again,
        };
        match h {
            Node::Live(i) => self.eng().read_for(i, off, size, reuse),
            Node::Snap { seq, ino } => self.snaps.view(seq)?.read_for(ino, off, size, reuse),
            _ => unreachable!("only file handles above"),
        }
    }

    /// Writes to an open file. `change` says what the write may drop
    /// (`privileges`; `None` for the kernel's writeback of cached pages,
    /// which drops nothing); it is dropped before the bytes land, as Linux
    /// does.
    pub fn write(
        &self,
        fh: u64,
        off: u64,
        data: &[u8],
        who: Caller,
        change: Option<Change>,
    ) -> Result<usize> {
        let (ino, w) = self.written_file(fh, "write", who)?;
        let mut e = self.eng_mut();
        if let Some(c) = change
            && let Some((p, bits)) = self.dropped(&e, ino, c, &who)?
        {
            drop_privileges(&mut e, ino, &p, bits)?;
        }
        let n = e.write(ino, off, data)?;
        e.attribute(ino, &w);
        Ok(n)
    }

    /// What `change` by `who` takes from `ino` when this file system, not
    /// the kernel, drops privileges (`privileges`): the inode's privileges
    /// and the set-ID bits that go. `None` when it has none (one look at
    /// the inode) or the kernel drops them itself.
    fn dropped(
        &self,
        e: &Engine,
        ino: u64,
        change: Change,
        who: &Caller,
    ) -> Result<Option<(crate::engine::Privileges, u32)>> {
        if !self.killpriv.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(p) = e.privileges(ino)? else {
            return Ok(None);
        };
        // `/proc` shows a process's own credentials; a kernel thread
        // serving a client (nfsd, ksmbd) may act under others, with
        // CAP_FSETID dropped for all but root: so root only, and only
        // when `/proc` agrees.
        let bits = privileges::setid_dropped(
            &p,
            change,
            |gid| who.in_group(gid),
            || who.uid == 0 && crate::sys::has_cap_fsetid(who.pid),
        );
        Ok(Some((p, bits)))
    }

    /// The live file an open handle writes, marking it written (its close
    /// seals a snapshot), and who writes it: the caller, or the process
    /// that opened the handle when the kernel writes on its own (pid 0).
    fn written_file(
        &self,
        fh: u64,
        op: &'static str,
        who: Caller,
    ) -> Result<(u64, crate::seal::tree::Writer)> {
        let (ino, who) = {
            let mut hs = self.handles.lock().expect("handles");
            match hs.get_mut(&fh) {
                Some(Handle::File { ino, wrote, by }) => {
                    *wrote = true;
                    if self.writeback.load(Ordering::Relaxed) {
                        self.written.lock().expect("written").insert(*ino);
                    }
                    (*ino, if who.pid == 0 { *by } else { who })
                }
                Some(Handle::SnapFile { .. }) => return Err(EROFS),
                _ => return Err(Error::fs(op, libc::EBADF)),
            }
        };
        if self.opts.read_only {
            return Err(EROFS);
        }
        Ok((ino, self.writer(&who)))
    }

    /// The provenance writer a caller is.
    fn writer(&self, who: &Caller) -> crate::seal::tree::Writer {
        self.writers.writer(who.pid, who.uid, who.gid)
    }

    /// `fallocate` through an open handle (see `Engine::fallocate`).
    pub fn fallocate(&self, fh: u64, off: u64, len: u64, mode: i32, who: Caller) -> Result<()> {
        let (ino, w) = self.written_file(fh, "fallocate", who)?;
        let mut e = self.eng_mut();
        if let Some((p, bits)) = self.dropped(&e, ino, Change::Truncate, &who)? {
            drop_privileges(&mut e, ino, &p, bits)?;
        }
        e.fallocate(ino, off, len, mode)?;
        e.attribute(ino, &w);
        Ok(())
    }

    /// `lseek` with `SEEK_DATA` (`data`) or `SEEK_HOLE`, at chunk
    /// granularity, live or in history.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> Result<u64> {
        match self.node(ino)? {
            Node::Live(i) => self.eng().seek(i, off, data),
            Node::Snap { seq, ino } => {
                let v = self.snaps.view(seq)?;
                let i = v.getattr(ino)?;
                if i.file_type() != FileType::File {
                    return Err(Error::fs("lseek", libc::EINVAL));
                }
                v.seek(&i, off, data)?
                    .ok_or_else(|| Error::fs("lseek", libc::ENXIO))
            }
            Node::SnapRoot | Node::Latest => Err(Error::fs("lseek", libc::EINVAL)),
        }
    }

    /// `close` of a file descriptor: seals a snapshot if the handle wrote
    /// since the last flush, and returns when it would survive a crash of
    /// the daemon (on stable storage too with `durable_close`).
    pub fn flush(&self, fh: u64) -> Result<()> {
        let wrote = match self.handles.lock().expect("handles").get_mut(&fh) {
            Some(Handle::File { ino, wrote, .. }) => self.was_written(*ino, std::mem::take(wrote)),
            _ => false,
        };
        if wrote { self.commit_close() } else { Ok(()) }
    }

    /// Last close of a handle.
    pub fn release(&self, fh: u64) -> Result<()> {
        let h = self.handles.lock().expect("handles").remove(&fh);
        if let Some(Handle::File { ino, wrote, .. }) = h {
            self.eng_mut().unpin(ino);
            if self.was_written(ino, wrote) {
                return self.commit_close();
            }
        }
        Ok(())
    }

    /// Whether a close of a handle on `ino` seals a snapshot: the handle
    /// wrote (`wrote`), or, under the writeback cache, the kernel sent the
    /// file's writes through another handle since the file's last close.
    fn was_written(&self, ino: u64, wrote: bool) -> bool {
        let elsewhere = self.writeback.load(Ordering::Relaxed)
            && self.written.lock().expect("written").remove(&ino);
        wrote || elsewhere
    }

    /// `fsync` / `fdatasync`: commits everything and returns once it is on
    /// stable storage (one barrier shared by every waiter meanwhile).
    pub fn fsync(&self) -> Result<()> {
        if self.opts.read_only {
            return Ok(());
        }
        self.commit_durable()
    }

    // ----- namespace -----

    /// Changes attributes.
    pub fn setattr(&self, ino: u64, a: &SetAttr, who: Caller) -> Result<Attr> {
        match self.node(ino)? {
            Node::Live(i) => {
                if self.opts.read_only {
                    return Err(EROFS);
                }
                let w = self.writer(&who);
                let attr = {
                    let mut e = self.eng_mut();
                    // A chown or a truncate drops privileges: the
                    // capability first, as Linux does, then the set-ID bits
                    // in the same change.
                    let change = if a.uid.is_some() || a.gid.is_some() {
                        Some(Change::Chown { gid: a.gid })
                    } else {
                        a.size.map(|_| Change::Truncate)
                    };
                    let dropped = match change {
                        Some(c) => self.dropped(&e, i, c, &who)?,
                        None => None,
                    };
                    let r = match dropped {
                        Some((p, bits)) => {
                            drop_privileges(&mut e, i, &p, 0)?;
                            let mut a = a.clone();
                            if bits != 0 {
                                a.perm = Some(a.perm.unwrap_or(p.perm) & !bits);
                            }
                            e.setattr(i, &a)?
                        }
                        None => e.setattr(i, a)?,
                    };
                    e.attribute(i, &w);
                    live_attr(&e, &r, i)?
                };
                self.changed();
                Ok(attr)
            }
            _ => Err(EROFS),
        }
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, who: Caller) -> Result<Attr> {
        if parent == ROOT_INO && name == snapshots::NAME {
            return Err(Error::fs("mkdir", libc::EEXIST));
        }
        self.writable(parent, Some(name))?;
        let w = self.writer(&who);
        let i = {
            let mut e = self.eng_mut();
            let perm = e.creation_perm(parent, mode, who.umask)?;
            let i = e.mkdir(parent, name, perm, who.uid, who.gid)?;
            self.hold_live(&mut e, i.ino);
            e.attribute_new(i.ino, &w);
            i
        };
        self.changed();
        Ok(attr_of(&i, i.ino, false))
    }

    /// Creates a FIFO, socket or device node (the kernel checked that the
    /// caller may: `CAP_MKNOD` for devices).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        (kind, mode, rdev): (FileType, u32, u64),
        who: Caller,
    ) -> Result<Attr> {
        if parent == ROOT_INO && name == snapshots::NAME {
            return Err(Error::fs("mknod", libc::EEXIST));
        }
        self.writable(parent, Some(name))?;
        let w = self.writer(&who);
        let a = {
            let mut e = self.eng_mut();
            let perm = e.creation_perm(parent, mode, who.umask)?;
            let i = e.mknod(parent, name, kind, perm, rdev, who.uid, who.gid)?;
            self.hold_live(&mut e, i.ino);
            e.attribute_new(i.ino, &w);
            attr_of(&i, i.ino, false)
        };
        self.changed();
        Ok(a)
    }

    /// Creates a symlink.
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], who: Caller) -> Result<Attr> {
        if parent == ROOT_INO && name == snapshots::NAME {
            return Err(Error::fs("symlink", libc::EEXIST));
        }
        self.writable(parent, Some(name))?;
        let w = self.writer(&who);
        let i = {
            let mut e = self.eng_mut();
            let i = e.symlink(parent, name, target, who.uid, who.gid)?;
            self.hold_live(&mut e, i.ino);
            e.attribute_new(i.ino, &w);
            i
        };
        self.changed();
        Ok(attr_of(&i, i.ino, false))
    }

    /// Creates a hard link.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8], who: Caller) -> Result<Attr> {
        if newparent == ROOT_INO && newname == snapshots::NAME {
            return Err(Error::fs("link", libc::EEXIST));
        }
        if Snapshots::owns(ino) {
            return Err(EROFS);
        }
        self.writable(newparent, Some(newname))?;
        let w = self.writer(&who);
        let a = {
            let mut e = self.eng_mut();
            let i = e.link(ino, newparent, newname)?;
            self.hold_live(&mut e, i.ino);
            e.attribute(i.ino, &w);
            live_attr(&e, &i, i.ino)?
        };
        self.changed();
        Ok(a)
    }

    /// Removes a file.
    pub fn unlink(&self, parent: u64, name: &[u8], who: Caller) -> Result<()> {
        self.remove(parent, name, who, false)
    }

    /// Removes a directory.
    pub fn rmdir(&self, parent: u64, name: &[u8], who: Caller) -> Result<()> {
        self.remove(parent, name, who, true)
    }

    fn remove(&self, parent: u64, name: &[u8], who: Caller, dir: bool) -> Result<()> {
        self.writable(parent, Some(name))?;
        let w = self.writer(&who);
        {
            let mut e = self.eng_mut();
            let gone = e.lookup(parent, name)?.map(|d| d.ino);
            if dir {
                e.rmdir(parent, name)?;
            } else {
                e.unlink(parent, name)?;
            }
            if let Some(ino) = gone {
                e.attribute_removal(ino, &w);
            }
        }
        self.changed();
        Ok(())
    }

    /// Renames.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
        who: Caller,
    ) -> Result<()> {
        self.writable(parent, Some(name))?;
        self.writable(newparent, Some(newname))?;
        let w = self.writer(&who);
        {
            let mut e = self.eng_mut();
            let moved = e.lookup(parent, name)?.map(|d| d.ino);
            let over = e.lookup(newparent, newname)?.map(|d| d.ino);
            e.rename(parent, name, newparent, newname, flags)?;
            // The moved inode lost its old name and has a new one; what it
            // replaced lost its name, or with an exchange moved too.
            for ino in moved.into_iter().chain(over.filter(|_| flags.exchange)) {
                e.attribute(ino, &w);
                e.attribute_removal(ino, &w);
            }
            if let Some(ino) = over.filter(|_| !flags.exchange) {
                e.attribute_removal(ino, &w);
            }
        }
        self.changed();
        Ok(())
    }

    // ----- extended attributes -----

    /// Sets an attribute in the namespaces Linux local file systems store:
    /// `user.*`, `trusted.*` and `security.*` (the kernel checks who may:
    /// `CAP_SYS_ADMIN` for `trusted.*`, the security modules for
    /// `security.*`, e.g. `CAP_SETFCAP` for `security.capability`, which a
    /// write, truncate or chown removes: sovseal itself on a `nosuid`
    /// mount, see `privileges`, the kernel through `removexattr` on a
    /// `suid` one), and the POSIX ACLs (`system.posix_acl_access`,
    /// `system.posix_acl_default`; the kernel enforces them, the engine
    /// keeps the mode in step). Other `system.*` names and names without
    /// a namespace get `EOPNOTSUPP`.
    pub fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
        who: Caller,
    ) -> Result<()> {
        let acl_ok = acl::is_acl(name) && self.acls.load(Ordering::Relaxed);
        if !XATTR_NAMESPACES.iter().any(|p| name.starts_with(p)) && !acl_ok {
            return Err(Error::fs("setxattr", libc::EOPNOTSUPP));
        }
        if name == STATE_XATTR {
            return Err(Error::fs("setxattr", libc::EPERM));
        }
        if ino == ROOT_INO && name.starts_with(CONTROL_PREFIX) {
            return self.set_note(name, Some(value));
        }
        let w = self.writer(&who);
        match self.node(ino)? {
            Node::Live(i) if !self.opts.read_only => {
                let mut e = self.eng_mut();
                let cur = e.getattr(i)?;
                if name == acl::ACCESS && cur.perm & 0o2000 != 0 && !who.in_group_or_root(cur.gid) {
                    // Setting an access ACL drops the set-group-ID bit of
                    // a caller outside the file's group, as chmod does
                    // (the kernel asks for this only through
                    // FUSE_SETXATTR_EXT, which fuser does not parse).
                    let a = SetAttr {
                        perm: Some(cur.perm & !0o2000),
                        ..SetAttr::default()
                    };
                    e.setattr(i, &a)?;
                }
                e.setxattr(i, name, value, flags)?;
                e.attribute(i, &w);
                drop(e);
                self.changed();
                Ok(())
            }
            _ => Err(EROFS),
        }
    }

    /// Reads an attribute.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if ino == ROOT_INO && name == NOTE_XATTR {
            return self
                .eng()
                .note()
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::fs("getxattr", libc::ENODATA));
        }
        match self.node(ino)? {
            Node::Live(i) if name == STATE_XATTR => Ok(self.state_of(i).into_bytes()),
            Node::Live(i) => self.eng().getxattr(i, name),
            Node::Snap { seq, ino } => self
                .snaps
                .view(seq)?
                .getattr(ino)?
                .xattrs
                .remove(name)
                .ok_or_else(|| Error::fs("getxattr", libc::ENODATA)),
            _ => Err(Error::fs("getxattr", libc::ENODATA)),
        }
    }

    /// Lists attribute names.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        match self.node(ino)? {
            Node::Live(i) => self.eng().listxattr(i),
            Node::Snap { seq, ino } => Ok(self
                .snaps
                .view(seq)?
                .getattr(ino)?
                .xattrs
                .into_keys()
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// Removes an attribute.
    pub fn removexattr(&self, ino: u64, name: &[u8], who: Caller) -> Result<()> {
        if name == STATE_XATTR {
            return Err(Error::fs("removexattr", libc::EPERM));
        }
        if ino == ROOT_INO && name.starts_with(CONTROL_PREFIX) {
            return self.set_note(name, None);
        }
        let w = self.writer(&who);
        match self.node(ino)? {
            Node::Live(i) if !self.opts.read_only => {
                let mut e = self.eng_mut();
                e.removexattr(i, name)?;
                e.attribute(i, &w);
                drop(e);
                self.changed();
                Ok(())
            }
            _ => Err(EROFS),
        }
    }

    /// Sets (`Some`) or drops the note for the next snapshot through
    /// [`NOTE_XATTR`] on the root; other names under [`CONTROL_PREFIX`] there
    /// are reserved.
    fn set_note(&self, name: &[u8], value: Option<&[u8]>) -> Result<()> {
        if name != NOTE_XATTR {
            return Err(Error::fs("setxattr", libc::EOPNOTSUPP));
        }
        if self.opts.read_only {
            return Err(EROFS);
        }
        let mut e = self.eng_mut();
        if value.is_none() && e.note().is_none() {
            return Err(Error::fs("removexattr", libc::ENODATA));
        }
        e.set_note(value.map(<[u8]>::to_vec))
    }

    /// The value of [`STATE_XATTR`] for live inode `ino`.
    fn state_of(&self, ino: u64) -> String {
        if self.eng().is_dirty_inode(ino) {
            return "dirty".into();
        }
        let seq = self
            .committed_at
            .lock()
            .expect("committed_at")
            .get(&ino)
            .copied()
            .unwrap_or(self.mount_head);
        match &self.replicator {
            Some(r) if r.status().replicated >= seq => format!("replicated:{seq}"),
            _ => format!("committed:{seq}"),
        }
    }

    /// The Prometheus text exposition of this mount's metrics.
    pub fn render_metrics(&self) -> String {
        let (agent, head, sealed, dirty, caches, follow) = {
            let e = self.eng();
            let follow = match self.opts.follow {
                true => crate::repo::replication_state::FollowState::read(e.agent())
                    .ok()
                    .flatten()
                    .map(|f| (f.remote_head, f.stalled)),
                false => None,
            };
            (
                e.agent().name().to_string(),
                e.head().seq(),
                e.agent().repo().sealed_bytes(),
                e.dirty_bytes() as u64,
                e.agent().repo().cache_bytes(),
                follow,
            )
        };
        let rs = self.replicator.as_ref().map(|r| r.status());
        let (kernel_inodes, history_inodes) = self.inode_counts();
        self.metrics.render(&Sample {
            kernel_inodes: kernel_inodes as u64,
            history_inodes: history_inodes as u64,
            cache_bytes: (caches.0 as u64, caches.1 as u64),
            agent,
            head_seq: head,
            replicated_seq: rs.as_ref().map(|s| s.replicated),
            replication_errors: rs.as_ref().map_or(0, |s| s.errors_total),
            checkpointed_seq: rs.as_ref().map_or(0, |s| s.checkpointed),
            checkpoint_errors: rs.as_ref().map_or(0, |s| s.checkpoint_errors_total),
            sealed_bytes: sealed,
            dirty_bytes: dirty,
            follow,
        })
    }

    /// A follower's step: shows the head the agent's index holds now (the
    /// snapshots fetched since the last step) and says what the kernel must
    /// drop of what it cached: every inode it references whose record
    /// changed, and every changed name in such a directory. `None` if the
    /// head did not move. Files open keep reading the snapshot they were
    /// opened in. `latest` moves once the caller has told the kernel
    /// ([`Fs::publish`]).
    pub fn advance(&self) -> Result<Option<Advance>> {
        let (old, new) = {
            let mut e = self.eng_mut();
            let old = e.advance_to_stored_head()?;
            (old, e.head().clone())
        };
        if old.seq() == new.seq() {
            return Ok(None);
        }
        let referenced: Vec<u64> = self
            .kernel_refs
            .lock()
            .expect("kernel refs")
            .keys()
            .copied()
            .filter(|i| !Snapshots::owns(*i))
            .collect();
        let mut invalidate = match changes(&old, &new, &referenced) {
            Ok(v) => v,
            Err(e) => {
                // The new head is shown already: tell the kernel to drop
                // everything it holds rather than nothing (names then
                // expire with their entry lifetime).
                tracing::warn!("following: what changed in snapshot {}: {e}", new.seq());
                referenced.into_iter().map(Invalidation::Inode).collect()
            }
        };
        // `.snapshots` grew and `latest` points elsewhere.
        invalidate.push(Invalidation::Inode(snapshots::DIR_INO));
        invalidate.push(Invalidation::Inode(snapshots::LATEST_INO));
        Ok(Some(Advance {
            from: old.seq(),
            to: new.seq(),
            invalidate,
        }))
    }

    /// Every inode the kernel may hold cached pages or attributes of, live
    /// and history: what it must drop when content is erased under it.
    pub fn everything_cached(&self) -> Vec<Invalidation> {
        self.kernel_refs
            .lock()
            .expect("kernel refs")
            .keys()
            .map(|i| Invalidation::Inode(*i))
            .collect()
    }

    /// A follower's step is complete (the kernel dropped what it cached of
    /// the snapshot before): `.snapshots/latest` names `seq`.
    pub fn publish(&self, seq: u64) {
        self.published.store(seq, Ordering::Release);
    }

    /// Space of the file system holding the data dir.
    pub fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.data_dir).map_err(|e| Error::io(&self.data_dir, e.into()))
    }

    /// Commits pending changes durably and stops the commit thread
    /// (unmount). A new mount of the agent meanwhile waits for it.
    pub fn shutdown(&self) -> Result<()> {
        self.eng().mark_stopping();
        self.committer.shutdown()
    }

    /// Whether every snapshot is on the remote (waits up to 2 s for the
    /// last ones to get there); false without a replicator.
    pub fn all_replicated(&self) -> bool {
        let Some(r) = &self.replicator else {
            return false;
        };
        let head = self.eng().head().seq();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            let s = r.status();
            if s.replicated >= head {
                return true;
            }
            if s.fork.is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Commits pending changes now, durably.
    pub fn sync(&self) -> Result<()> {
        self.commit_durable()
    }

    /// The last commit error, if the latest commit failed.
    pub fn last_commit_error(&self) -> Option<String> {
        self.committer.last_error()
    }
}
