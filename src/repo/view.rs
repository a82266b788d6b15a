//! A read-only view of one committed snapshot.
//!
//! Loads inode pages, directory nodes, chunk lists (and trees) and chunks
//! lazily through the repository, each verified by its tag on first access
//! and cached. In a lazily restored data dir, a delta chain's deltas are
//! asked for together before the walk down it (`fetch_chain_ahead`).

use crate::repo::delta::Merged;
use crate::repo::{Repo, chunktree, dirtree, pagemap};
use crate::seal::tree::{
    ChunkRef, Chunks, Content, DirEntry, DirRef, Entries, FileType, Inode, Manifest, ObjRef,
    ObjectKind,
};
use crate::{Error, Result};
use std::sync::Arc;

/// One committed snapshot, readable from many threads.
pub struct SnapshotView {
    repo: Arc<Repo>,
    hash: [u8; 32],
    manifest: Arc<Manifest>,
    /// The manifest's delta chain applied (tree format 8), read on first
    /// use.
    merged: std::sync::OnceLock<Arc<Merged>>,
}

impl SnapshotView {
    /// A view over an opened manifest whose envelope hashes to `hash`.
    pub fn new(repo: Arc<Repo>, hash: [u8; 32], manifest: Manifest) -> Self {
        SnapshotView {
            repo,
            hash,
            manifest: Arc::new(manifest),
            merged: std::sync::OnceLock::new(),
        }
    }

    /// Gives a view made by [`SnapshotView::new`], that nothing has read
    /// yet, its delta chain as the caller applied it (`merged` must be the
    /// manifest's chain: the writer's own new head).
    pub fn supply_merged(&self, merged: Arc<Merged>) {
        debug_assert_eq!(self.manifest.delta.is_some(), merged.depth > 0);
        let supplied = self.merged.set(merged).is_ok();
        debug_assert!(supplied, "a view's chain is supplied before it is read");
    }

    /// The manifest's delta chain applied, `None` when it names none (the
    /// tree is the pages').
    pub fn merged(&self) -> Result<Option<&Arc<Merged>>> {
        let Some(newest) = &self.manifest.delta else {
            return Ok(None);
        };
        if let Some(m) = self.merged.get() {
            return Ok(Some(m));
        }
        self.fetch_chain_ahead(newest);
        let m = Merged::load(&self.repo, newest).map_err(|e| match e {
            // (What the chain lacks, named with the snapshot it serves.)
            Error::MissingObject { id, kind, seq: 0 } => Error::MissingObject {
                id,
                kind,
                seq: self.seq(),
            },
            e => e,
        })?;
        m.check_numbers(self.manifest.next_ino)?;
        let m = Arc::new(m);
        Ok(Some(self.merged.get_or_init(|| m)))
    }

    /// Before the walk down the delta chain of a lazily restored data
    /// dir, when its newest delta is not here: the deltas that the
    /// snapshots before the newest's stored, back to the chain's fold,
    /// asked for together. Each delta names only the one before it, so the
    /// walk alone waited for a round trip per delta (up to 256 at the
    /// default fold: PERFORMANCE "Session 47"). A chain is the run of
    /// snapshots since its fold unless a rollback started it: a delta that
    /// is not the chain's costs a fetch, and the walk fetches what this
    /// missed.
    fn fetch_chain_ahead(&self, newest: &ObjRef) {
        if !self.repo.waits_for_remote(ObjectKind::Delta, newest) {
            return;
        }
        // (One round trip, which tells the chain's length; an error is
        // the walk's to report.)
        let Ok(d) = self.repo.delta(newest) else {
            return;
        };
        // (A chain whose next delta is here: fetched with a walk before,
        // or the writer's own.)
        if !d
            .prev
            .is_some_and(|prev| self.repo.waits_for_remote(ObjectKind::Delta, &prev))
        {
            return;
        }
        let from = newest
            .home
            .saturating_sub(u64::from(d.depth).saturating_sub(1))
            .max(1);
        self.repo.fetch_deltas_ahead(from..newest.home);
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.manifest.seq
    }

    /// Envelope hash.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Commit time, ms since the epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.manifest.timestamp_ms
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// The decoded page holding `page_no`, if the snapshot has one.
    pub(crate) fn page(&self, page_no: u64) -> Result<Option<Arc<crate::repo::Page>>> {
        match pagemap::get(&self.repo, &self.manifest.pages, page_no)? {
            None => Ok(None),
            Some((id, count)) => Ok(Some(self.counted_page(&id, page_no, count)?)),
        }
    }

    /// Page `page_no`, sealed as `id`, which must hold `count` inodes when
    /// its page map counts them (tree format 3).
    fn counted_page(
        &self,
        r: &ObjRef,
        page_no: u64,
        count: Option<u64>,
    ) -> Result<Arc<crate::repo::Page>> {
        let page = self.repo.page(r, self.manifest.inodes_per_page, page_no)?;
        if count.is_some_and(|n| n != page.len() as u64) {
            return Err(Error::corrupt(
                format!("inode page {}", r.id.to_hex()),
                "holds another number of inodes than its page map counts",
            ));
        }
        Ok(page)
    }

    /// An inode, if it exists in this snapshot.
    pub fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        if let Some(decided) = self.merged()?.and_then(|m| m.inode(ino)) {
            return Ok(decided.cloned());
        }
        self.fold_inode(ino)
    }

    /// Inode `ino` as the fold's pages hold it (the chain not applied).
    pub fn fold_inode(&self, ino: u64) -> Result<Option<Inode>> {
        let page_no = ino / u64::from(self.manifest.inodes_per_page);
        Ok(self.page(page_no)?.and_then(|p| p.get(&ino).cloned()))
    }

    /// An inode, or `ENOENT`.
    pub fn getattr(&self, ino: u64) -> Result<Inode> {
        self.inode(ino)?
            .ok_or_else(|| Error::fs("getattr", libc::ENOENT))
    }

    /// A directory's entries (`ENOTDIR` for other types).
    pub fn entries(&self, ino: u64) -> Result<Arc<Entries>> {
        let i = self.getattr(ino)?;
        match self.merged()? {
            Some(m) => m.entries(ino, || entries_of(&self.repo, &i)),
            None => entries_of(&self.repo, &i),
        }
    }

    /// Looks up `name` in directory `parent` (reads one path of a large
    /// directory, not all of it).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<DirEntry>> {
        let i = self.getattr(parent)?;
        let base = || dirtree::lookup(&self.repo, dir_root(&i)?, name);
        match self.merged()? {
            Some(m) => {
                dir_root(&i)?;
                m.lookup(parent, name, base)
            }
            None => base(),
        }
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
        let chunks = file_chunks(&i)?;
        read_range(
            &self.repo,
            &|idx| chunktree::get(&self.repo, chunks, idx),
            None,
            i.size,
            u64::from(self.manifest.chunk_size),
            off,
            len,
            reuse,
        )
    }

    /// A symlink's target (`EINVAL` for other types).
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.getattr(ino)?.content {
            Content::Symlink(t) => Ok(t),
            _ => Err(Error::fs("readlink", libc::EINVAL)),
        }
    }

    /// Visits every object this snapshot references, parents before
    /// children. Objects for which `skip` is true are not visited, and
    /// neither is anything below them (a skipped page's chunks, a skipped
    /// chunk list's chunks): callers skip what they have already handled.
    pub fn walk_objects(
        &self,
        skip: &dyn Fn(&ObjRef) -> bool,
        visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
    ) -> Result<()> {
        // The chain is read whatever `skip` says: which of the fold's
        // records it replaced decides what the fold's pages contribute.
        let merged = self.merged()?;
        // The deltas, newest first, up to one skipped (what is below it
        // was handled with it).
        let mut next = self.manifest.delta;
        while let Some(r) = next.filter(|r| !skip(r)) {
            visit(ObjectKind::Delta, &r)?;
            next = self.repo.delta(&r)?.prev;
        }
        let content = |i: &Inode, visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>| match &i
            .content
        {
            Content::File(c) => chunktree::walk(&self.repo, c, skip, visit),
            Content::Dir(Some(root)) => dirtree::walk(&self.repo, root, skip, visit),
            _ => Ok(()),
        };
        // What the chain's records reference (then the fold's, below).
        if let Some(m) = merged {
            let mut live: Vec<&Inode> = m.inodes.values().flatten().collect();
            live.sort_by_key(|i| i.ino);
            for i in live {
                content(i, visit)?;
            }
        }
        pagemap::walk(&self.repo, &self.manifest.pages, skip, &mut |item| {
            let (no, pid, count) = match item {
                pagemap::Item::Node(r) => return visit(ObjectKind::PageMap, &r),
                pagemap::Item::Page(_, pid, _) if skip(&pid) => return Ok(()),
                pagemap::Item::Page(no, pid, count) => (no, pid, count),
            };
            visit(ObjectKind::InodePage, &pid)?;
            // (Also the records the chain replaced or removed: a caller
            // that skips this page later, as walked, must have reached
            // everything below it, whatever chain the snapshot that
            // reached it first had. What they reference stays live while
            // a snapshot reads their fold.)
            let page = self.counted_page(&pid, no, count)?;
            for i in page.values() {
                content(i, visit)?;
            }
            Ok(())
        })
    }

    /// Fetches this snapshot's metadata that is neither stored nor kept
    /// here (a lazily restored data dir whose handle keeps what it
    /// fetches): its page map, inode pages, directory nodes, chunk lists
    /// and chunk trees, level by level, each level's objects together
    /// ([`Repo::prefetch_metadata`]), so that browsing it (a listing, a
    /// lookup, a `stat`) waits for no round trip; a lazy read otherwise
    /// fetches the objects on a path one at a time. File content is left
    /// for its first read. `stop` ends it between batches. Returns how many
    /// objects were fetched.
    pub fn fetch_metadata(&self, stop: &std::sync::atomic::AtomicBool) -> Result<u64> {
        let Some(lazy) = self.repo.lazy().filter(|l| l.keeps()) else {
            return Ok(0);
        };
        let mut fetched = 0;
        // Asked for once each: one that failed, or was fetched but could
        // not be kept (a full disk), is not asked for again (a read
        // fetches it when it needs it), so every pass asks for new ones.
        let mut asked = std::collections::HashSet::new();
        // Found here once, here for good (objects are immutable, and a
        // redaction, which removes kept copies, does not run beside this):
        // each pass walks the whole tree, but looks each object up once.
        let here_ids = std::cell::RefCell::new(std::collections::HashSet::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // What the walk reaches through what is here: the next level.
            let level = std::cell::RefCell::new(Vec::new());
            self.walk_objects(
                &|r| match lazy.kind_of(&r.id) {
                    // Not on the remote: written here (or missing, which
                    // the walk reports).
                    None => false,
                    Some(ObjectKind::Chunk) => true,
                    Some(_) if here_ids.borrow().contains(&r.id) => false,
                    Some(kind) => {
                        let here = lazy.is_kept(&r.id) || self.repo.is_here(kind, r);
                        if here {
                            here_ids.borrow_mut().insert(r.id);
                        } else if !asked.contains(&r.id) {
                            level.borrow_mut().push((kind, *r));
                        }
                        !here
                    }
                },
                &mut |_, _| Ok(()),
            )?;
            let level = level.into_inner();
            if level.is_empty() {
                break;
            }
            asked.extend(level.iter().map(|(_, r)| r.id));
            fetched += self.repo.prefetch_metadata(&level, stop)?;
        }
        Ok(fetched)
    }

    /// Visits the objects of one directory of this snapshot (its root
    /// `root`), parents before children, with the checks of a listing.
    pub fn walk_dir(
        &self,
        root: &DirRef,
        visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
    ) -> Result<()> {
        dirtree::walk(&self.repo, root, &|_| false, visit)
    }

    /// The chunk references of a file inode (its chunk list or chunk tree
    /// read if it has one).
    pub fn chunk_refs_of(&self, i: &Inode) -> Result<Arc<Vec<ChunkRef>>> {
        chunk_refs(&self.repo, i)
    }

    /// Bytes of a file inode that lie in stored chunks (for `st_blocks`);
    /// the size for anything else.
    pub fn stored_bytes(&self, i: &Inode) -> Result<u64> {
        if i.file_type() != FileType::File {
            return Ok(i.size);
        }
        stored_bytes(
            &self.repo,
            file_chunks(i)?,
            i.size,
            u64::from(self.manifest.chunk_size),
        )
    }

    /// `lseek(SEEK_DATA/SEEK_HOLE)` in a file inode ([`DataMap::seek`]).
    pub fn seek(&self, i: &Inode, off: u64, data: bool) -> Result<Option<u64>> {
        let refs = self.chunk_refs_of(i)?;
        Ok(self.data_map(&refs, i.size).seek(off, data))
    }

    fn data_map<'a>(&self, refs: &'a [ChunkRef], size: u64) -> DataMap<impl Fn(u64) -> bool + 'a> {
        DataMap {
            stored: move |idx| matches!(refs.get(idx as usize), Some(Some(_))),
            slots: refs.len() as u64,
            size,
            chunk: u64::from(self.manifest.chunk_size),
        }
    }

    /// Every inode number in this snapshot.
    pub fn inode_numbers(&self) -> Result<std::collections::BTreeSet<u64>> {
        let mut out = std::collections::BTreeSet::new();
        pagemap::walk(&self.repo, &self.manifest.pages, &|_| false, &mut |item| {
            if let pagemap::Item::Page(no, r, count) = item {
                out.extend(self.counted_page(&r, no, count)?.keys());
            }
            Ok(())
        })?;
        if let Some(m) = self.merged()? {
            for (ino, i) in &m.inodes {
                match i {
                    Some(_) => out.insert(*ino),
                    None => out.remove(ino),
                };
            }
        }
        Ok(out)
    }

    /// Resolves a `/`-separated path from the root without following symlinks.
    pub fn resolve(&self, path: &[u8]) -> Result<u64> {
        resolve_with(path, |parent, name| self.lookup(parent, name))
    }
}

/// Walks `path` from the root with `lookup`.
pub(crate) fn resolve_with(
    path: &[u8],
    mut lookup: impl FnMut(u64, &[u8]) -> Result<Option<DirEntry>>,
) -> Result<u64> {
    let mut ino = crate::seal::tree::ROOT_INO;
    for part in path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
    {
        ino = lookup(ino, part)?
            .ok_or_else(|| Error::fs("lookup", libc::ENOENT))?
            .ino;
    }
    Ok(ino)
}

/// The entries of a directory inode.
pub(crate) fn entries_of(repo: &Repo, i: &Inode) -> Result<Arc<Entries>> {
    dirtree::entries(repo, dir_root(i)?)
}

/// Where a directory inode's entries are (`ENOTDIR` for other types).
pub(crate) fn dir_root(i: &Inode) -> Result<Option<&DirRef>> {
    match &i.content {
        Content::Dir(r) => Ok(r.as_ref()),
        _ => Err(Error::fs("readdir", libc::ENOTDIR)),
    }
}

/// The chunk references of a file inode (`EISDIR`/`EINVAL` for other
/// types).
pub(crate) fn chunk_refs(repo: &Repo, i: &Inode) -> Result<Arc<Vec<ChunkRef>>> {
    chunktree::refs(repo, file_chunks(i)?)
}

/// Bytes of a file of `size` made of `chunks` that lie in stored chunks
/// (each counts whole, the last up to the size): `st_blocks`.
pub(crate) fn stored_bytes(repo: &Repo, chunks: &Chunks, size: u64, chunk: u64) -> Result<u64> {
    let n = size.div_ceil(chunk);
    let (count, last) = chunktree::stored(repo, chunks, n)?;
    // The last chunk counts only up to the size.
    let short = if last { n * chunk - size } else { 0 };
    Ok(count * chunk - short)
}

/// Where a file inode's chunk references are (`EISDIR`/`EINVAL` for other
/// types).
pub(crate) fn file_chunks(i: &Inode) -> Result<&Chunks> {
    match &i.content {
        Content::File(c) => Ok(c),
        _ if i.file_type() == FileType::Dir => Err(Error::fs("read", libc::EISDIR)),
        _ => Err(Error::fs("read", libc::EINVAL)),
    }
}

/// Chunks that take precedence over a file's sealed chunks when reading: the
/// engine's dirty chunks. Defined here so that the read path lives in one
/// place while the repository knows nothing of the engine.
pub(crate) trait ChunkOverlay {
    /// Fills `dst` from chunk `idx` starting at byte `from` of that chunk,
    /// or returns `None` when the overlay does not hold chunk `idx`.
    fn read_chunk(&self, repo: &Repo, idx: u64, from: usize, dst: &mut [u8]) -> Option<Result<()>>;
    /// Whether the overlay holds chunk `idx`.
    fn holds(&self, idx: u64) -> bool;
}

/// Whether a reader may ask for the same bytes again, which decides what a
/// read does with a chunk it covers whole ([`Repo::read_chunk_into`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// It will not: the kernel's page cache keeps what the reply carries,
    /// or a restore or `cat` streams through once. A chunk of at least
    /// [`crate::repo::STREAM_CHUNK_MIN`] that the read covers whole is
    /// opened straight into the reply and left out of the chunk cache.
    Once,
    /// It may: a handle past the kernel's page cache (a follower's live
    /// file, an `O_DIRECT` open), whose re-reads come back here. Every
    /// chunk goes through the chunk cache.
    Again,
}

/// Most bytes of chunks a read of a lazily restored data dir fetches at
/// once ([`Repo::prefetch_chunks`]).
const PREFETCH_BYTES: u64 = 8 << 20;

/// Reads `[off, off+len)` of a file of `size` bytes whose chunk `idx` is
/// `chunk_at(idx)`, with the `dirty` overlay's chunks taking precedence.
/// Holes and bytes past a chunk's stored length read as zeros.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_range(
    repo: &Repo,
    chunk_at: &dyn Fn(u64) -> Result<ChunkRef>,
    dirty: Option<&dyn ChunkOverlay>,
    size: u64,
    chunk: u64,
    off: u64,
    len: usize,
    reuse: Reuse,
) -> Result<Vec<u8>> {
    if off >= size || len == 0 {
        return Ok(Vec::new());
    }
    let end = size.min(off.saturating_add(len as u64));
    // A lazily restored data dir fetches the chunks of each window of the
    // read together, not one by one.
    let window = (PREFETCH_BYTES / chunk).max(2);
    let mut prefetched = off / chunk;
    let mut out = vec![0u8; (end - off) as usize];
    let mut pos = off;
    while pos < end {
        let idx = pos / chunk;
        if repo.lazy().is_some() && idx >= prefetched {
            prefetched = (idx + window).min(end.div_ceil(chunk));
            let mut ids = Vec::new();
            for i in idx..prefetched {
                if !dirty.is_some_and(|d| d.holds(i))
                    && let Some(id) = chunk_at(i)?
                {
                    ids.push(id);
                }
            }
            repo.prefetch_chunks(&ids)?;
        }
        let cstart = idx * chunk;
        let cend = (cstart + chunk).min(end);
        let from = (pos - cstart) as usize;
        let dst = &mut out[(pos - off) as usize..(cend - off) as usize];
        if let Some(r) = dirty.and_then(|d| d.read_chunk(repo, idx, from, dst)) {
            r?;
        } else if let Some(id) = chunk_at(idx)? {
            repo.read_chunk_into(&id, from, dst, reuse)?;
        }
        pos = cend;
    }
    Ok(out)
}

/// Where a file holds stored data, at chunk granularity: chunk `idx` is
/// data when `stored(idx)` (a sealed chunk, or one the overlay holds), a
/// hole otherwise. What `st_blocks` and `lseek(SEEK_DATA/SEEK_HOLE)`
/// report.
pub struct DataMap<F: Fn(u64) -> bool> {
    /// Whether chunk `idx` holds data.
    pub stored: F,
    /// Chunks at or past this index are holes: what `stored` is asked
    /// stays below it (a file's references end at its last stored chunk,
    /// however far its size reaches past it).
    pub slots: u64,
    /// File size.
    pub size: u64,
    /// Chunk size.
    pub chunk: u64,
}

impl<F: Fn(u64) -> bool> DataMap<F> {
    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk)
    }

    /// The chunks that may hold data.
    fn asked(&self) -> u64 {
        self.chunks().min(self.slots)
    }

    /// Bytes of the file that lie in stored chunks (holes count nothing).
    pub fn stored_bytes(&self) -> u64 {
        (0..self.asked())
            .filter(|i| (self.stored)(*i))
            .map(|i| (self.size - i * self.chunk).min(self.chunk))
            .sum()
    }

    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` from `off`: the
    /// first offset at or after `off` in data (or in a hole; the end of
    /// the file counts as a hole). `None` (ENXIO) at or past the end, or
    /// when no data follows.
    pub fn seek(&self, off: u64, data: bool) -> Option<u64> {
        if off >= self.size {
            return None;
        }
        let first = off / self.chunk;
        let asked = self.asked();
        match (first..asked).find(|i| (self.stored)(*i) == data) {
            Some(i) => Some(off.max(i * self.chunk)),
            None if data => None,
            // Past the slots, a hole up to the end.
            None if asked < self.chunks() => Some(off.max(asked * self.chunk)),
            None => Some(self.size),
        }
    }
}
