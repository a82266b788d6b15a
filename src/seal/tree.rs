//! The plaintext structures of a snapshot and their canonical encodings.
//!
//! A snapshot is a manifest naming inode pages; pages hold inode records;
//! a file's record names its chunks (inline, or through a chunk-list
//! object), a directory's record names its directory-node object. Every
//! object is named by a keyed hash of its plaintext, so unchanged parts are
//! shared between snapshots and a commit rewrites only what changed.
//! `docs/FORMAT.md` describes every byte; encodings are canonical (sorted
//! maps, fixed widths) so equal trees give equal bytes.

use super::codec::{Reader, Writer as Writer_};
use crate::seal::keys::AgentId;
use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Format version of the encodings in this module (manifests, inode
/// pages, directory nodes, chunk lists) that this build writes. Version 2
/// added directory index nodes (large directories split into bounded
/// nodes) and the page map (in place of the manifest's page list);
/// version 3 counts the inodes under each page-map child, so a writer
/// finds free inode numbers without reading pages. Versions 1 and 2 still
/// decode. Version 4 adds provenance to the manifest: who changed which
/// inode, and the agent's note ([`Provenance`]). Version 5 bounds the
/// provenance ([`WRITERS_MAX`], [`CHANGES_MAX`]) and says when it is
/// incomplete. Version 6 gives every reference to a metadata object its
/// home ([`ObjRef`]): the snapshot whose commit stored it, through which
/// it is found. Version 7 splits a long file's chunk references into a
/// tree of chunk lists under chunk-index nodes ([`Chunks::Tree`]), so a
/// commit re-seals the one list a write changed and the path above it,
/// not every reference of the file. The envelope and AAD format is
/// `crate::seal::envelope::FORMAT`, versioned on its own.
pub const FORMAT_VERSION: u32 = 8;
/// First tree format whose manifests may name a delta chain ([`Delta`]).
pub const DELTA_FORMAT: u32 = 8;
/// Longest delta chain a reader follows: a writer folds far sooner
/// (`engine::commit`); a longer one is corruption.
pub const DELTA_CHAIN_MAX: u32 = 1 << 16;
/// First tree format whose metadata references carry their home
/// ([`ObjRef`]); a snapshot of this format or later stores its metadata
/// objects at home (found through its commit, not by id).
pub const HOMED_FORMAT: u32 = 6;
/// Oldest tree format this build reads.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Bytes per file chunk of a new agent. Each manifest records its agent's
/// chunk size and readers take it from there: agents created before this
/// build keep [`CHUNK_SIZE_V1`]. A commit re-seals every chunk a write
/// touched, so the chunk is what a small overwrite costs: measured on
/// SQLite with `synchronous = FULL`, 64 KiB chunks took its run from
/// 1.19 s to 0.79 s, and sequential writes stayed ahead of gocryptfs
/// (docs/PERFORMANCE.md, session 10).
pub const CHUNK_SIZE: u32 = 1 << 16;
/// Bytes per file chunk of agents created before [`CHUNK_SIZE`] shrank.
pub const CHUNK_SIZE_V1: u32 = 1 << 20;
/// Inode numbers per page of a new agent (tree format 3; each snapshot
/// records its own, and an agent keeps the one it was created with). With
/// numbers reused, pages stay full, and a commit re-seals whole pages:
/// smaller pages cost less per change. (Agents created by tree-format-2
/// builds keep 32, older ones [`INODES_PER_PAGE_V1`].)
pub const INODES_PER_PAGE: u32 = 16;
/// Inode numbers per page of agents created before tree format 2.
pub const INODES_PER_PAGE_V1: u32 = 128;
/// Children per page-map node: one per hexadecimal digit of a page number.
pub const PAGE_MAP_FANOUT: usize = 16;
/// Highest page-map level: page numbers are `u64`, 16 hex digits.
pub const PAGE_MAP_MAX_LEVEL: u8 = 15;
/// The flag in a page-map node's level byte that says it counts inodes
/// (tree format 3).
const PAGE_MAP_COUNTED: u8 = 0x80;
/// The flag in a page-map node's level byte, and in a directory index
/// node's depth byte, that says its references carry homes (tree format
/// 6): set exactly when one of them has a home, so that equal nodes encode
/// to equal bytes.
const HOMED: u8 = 0x40;
/// Chunk lists longer than this live in their own object.
pub const MAX_INLINE_CHUNKS: usize = 8;
/// References per chunk list in a chunk tree (tree format 7): a file of
/// more chunks keeps them in lists of exactly this many (the last one
/// shorter) under chunk-index nodes ([`Chunks::Tree`]). 128 references
/// (~4.2 KiB) are 8 MiB of a file at 64 KiB chunks.
pub const CHUNK_LIST_LEAF: usize = 128;
/// Children per chunk-index node (~4 KiB of ids): one node of height 1
/// covers 1 GiB of a file at 64 KiB chunks, height 2 128 GiB.
pub const CHUNK_INDEX_FANOUT: usize = 128;
/// Highest chunk-index node: at height 9 one tree covers every count a
/// `u64` holds.
pub const CHUNK_INDEX_MAX_HEIGHT: u8 = 9;
/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// A directory (or part of one, below an index node) with at most this
/// many entries is one directory node; a larger one is split by name hash
/// under a directory index node.
pub const DIR_LEAF_MAX: u64 = 64;
/// Children per directory index node: one per value of a 4-bit digit of
/// the name hash.
pub const DIR_FANOUT: usize = 16;
/// Depth at which directory index nodes stop splitting (every digit of the
/// 256-bit name hash used): a node there is a leaf whatever its size.
pub const DIR_MAX_DEPTH: u8 = 64;

/// A content object id: a keyed BLAKE3 hash of the object's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

/// A reference to a metadata object (inode page, directory node or index,
/// page-map node): its id and its home, the sequence number of the
/// snapshot whose commit stored it (tree format 6). The home says where
/// the object is: the index lists each commit's metadata objects in one
/// row, so a reference is resolved through its home's row and a commit
/// writes one row instead of one per object. Home 0: the object is found
/// by its id alone (formats 1-5, whose objects each have an index row).
/// Chunks, chunk lists and chunk-index nodes are always found by id
/// (content deduplication and redaction need the lookup by id).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    /// The object's id.
    pub id: ObjectId,
    /// The snapshot whose commit stored it; 0: found by id.
    pub home: u64,
}

impl ObjRef {
    /// A reference found by id alone (tree formats 1-5, chunks, chunk
    /// lists, chunk-index nodes).
    pub fn by_id(id: ObjectId) -> Self {
        ObjRef { id, home: 0 }
    }
}

impl fmt::Debug for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.id, self.home)
    }
}

/// What a sealed blob is; part of its AAD and of its object id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    /// Up to the manifest's `chunk_size` bytes of file content.
    Chunk = 1,
    /// A long file's list of chunk references.
    ChunkList = 2,
    /// A directory's sorted entries.
    DirNode = 3,
    /// Up to [`INODES_PER_PAGE`] inode records.
    InodePage = 4,
    /// A snapshot manifest (sealed in the envelope, not stored as an object).
    Manifest = 5,
    /// An interior node of a large directory (tree format 2).
    DirIndex = 6,
    /// A node of a snapshot's page map (tree format 2).
    PageMap = 7,
    /// An interior node of a file's chunk tree (tree format 7).
    ChunkIndex = 8,
    /// One commit's changes on top of the previous delta or the fold's
    /// tree (tree format 8, [`Delta`]).
    Delta = 9,
}

impl ObjectKind {
    /// From the stored byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectKind::Chunk,
            2 => ObjectKind::ChunkList,
            3 => ObjectKind::DirNode,
            4 => ObjectKind::InodePage,
            5 => ObjectKind::Manifest,
            6 => ObjectKind::DirIndex,
            7 => ObjectKind::PageMap,
            8 => ObjectKind::ChunkIndex,
            9 => ObjectKind::Delta,
            _ => return None,
        })
    }
    /// Whether objects of this kind are metadata stored at home when a
    /// snapshot of [`HOMED_FORMAT`] or later commits them ([`ObjRef`]).
    pub fn homed(self) -> bool {
        matches!(
            self,
            ObjectKind::DirNode
                | ObjectKind::InodePage
                | ObjectKind::DirIndex
                | ObjectKind::PageMap
                | ObjectKind::Delta
        )
    }

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Chunk => "chunk",
            ObjectKind::ChunkList => "chunk list",
            ObjectKind::DirNode => "directory node",
            ObjectKind::InodePage => "inode page",
            ObjectKind::Manifest => "manifest",
            ObjectKind::DirIndex => "directory index",
            ObjectKind::PageMap => "page map",
            ObjectKind::ChunkIndex => "chunk index",
            ObjectKind::Delta => "delta",
        }
    }
}

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileType {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
    /// Symbolic link.
    Symlink = 3,
    /// Named pipe (FIFO).
    Fifo = 4,
    /// Unix domain socket.
    Socket = 5,
    /// Character device.
    CharDev = 6,
    /// Block device.
    BlockDev = 7,
}

impl FileType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => FileType::File,
            2 => FileType::Dir,
            3 => FileType::Symlink,
            4 => FileType::Fifo,
            5 => FileType::Socket,
            6 => FileType::CharDev,
            7 => FileType::BlockDev,
            _ => return None,
        })
    }

    /// A FIFO, socket or device node: no content, only (for devices) a
    /// device number.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileType::Fifo | FileType::Socket | FileType::CharDev | FileType::BlockDev
        )
    }
}

/// One chunk slot of a file: sealed content, or a hole that reads as zeros.
pub type ChunkRef = Option<ObjectId>;

/// Where a file's chunk references are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// Up to [`MAX_INLINE_CHUNKS`] references in the inode record.
    Inline(Vec<ChunkRef>),
    /// A chunk-list object holding `count` references (up to
    /// [`CHUNK_LIST_LEAF`] in tree format 7; any number before).
    List {
        /// The chunk-list object.
        id: ObjectId,
        /// Number of references in it.
        count: u64,
    },
    /// Tree format 7: more than [`CHUNK_LIST_LEAF`] references, in chunk
    /// lists of that many under a tree of chunk-index nodes whose shape
    /// `count` fixes ([`chunk_tree_height`]).
    Tree {
        /// The root chunk-index node.
        id: ObjectId,
        /// Number of references in the tree.
        count: u64,
    },
}

/// An interior node of a chunk tree (kind [`ObjectKind::ChunkIndex`]).
/// At height 1 its children are chunk lists, above that chunk-index nodes
/// of the height below. Every child but the last is full (it covers
/// [`chunk_tree_span`] of the height below); the node holds at least one
/// and at most [`CHUNK_INDEX_FANOUT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndexNode {
    /// 1 to [`CHUNK_INDEX_MAX_HEIGHT`].
    pub height: u8,
    /// Children in file order, found by id.
    pub children: Vec<ObjectId>,
}

/// The references one full node of `height` covers (a chunk list at 0),
/// saturating at `u64::MAX`.
pub fn chunk_tree_span(height: u8) -> u64 {
    (0..height).fold(CHUNK_LIST_LEAF as u64, |s, _| {
        s.saturating_mul(CHUNK_INDEX_FANOUT as u64)
    })
}

/// The height of the root of a chunk tree of `count` references: the
/// lowest (at least 1) whose node covers them. `None` for a count that
/// fits one chunk list (not a tree).
pub fn chunk_tree_height(count: u64) -> Option<u8> {
    if count <= CHUNK_LIST_LEAF as u64 {
        return None;
    }
    (1..=CHUNK_INDEX_MAX_HEIGHT).find(|h| chunk_tree_span(*h) >= count)
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A regular file's chunks.
    File(Chunks),
    /// A directory's entries (`None` when empty).
    Dir(Option<DirRef>),
    /// A symlink's target.
    Symlink(Vec<u8>),
    /// A FIFO, socket or device node (`FileType::is_special`) and its
    /// device number (0 for FIFOs and sockets).
    Special(FileType, u64),
}

/// One inode record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Inode number, stable across snapshots.
    pub ino: u64,
    /// Permission bits incl. setuid, setgid, sticky (`mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Size in bytes (symlink: target length; directory: 0).
    pub size: u64,
    /// Access time, ns since the epoch.
    pub atime: i64,
    /// Modification time, ns.
    pub mtime: i64,
    /// Change time, ns.
    pub ctime: i64,
    /// Parent directory (directories only; the root is its own parent).
    pub parent: u64,
    /// Extended attributes, by full name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Content.
    pub content: Content,
}

impl Inode {
    /// The type.
    pub fn file_type(&self) -> FileType {
        match self.content {
            Content::File(_) => FileType::File,
            Content::Dir(_) => FileType::Dir,
            Content::Symlink(_) => FileType::Symlink,
            Content::Special(t, _) => t,
        }
    }

    /// The device number of a device node (0 for anything else).
    pub fn rdev(&self) -> u64 {
        match self.content {
            Content::Special(FileType::CharDev | FileType::BlockDev, rdev) => rdev,
            _ => 0,
        }
    }
}

/// A directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Target inode.
    pub ino: u64,
    /// Its type (for readdir without a lookup).
    pub file_type: FileType,
}

/// Sorted directory entries.
pub type Entries = BTreeMap<Vec<u8>, DirEntry>;

/// Where a directory's entries are (or those of one part of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirRef {
    /// One directory node holding all of them.
    Leaf(ObjRef),
    /// A directory index node splitting them by name hash.
    Index(ObjRef),
}

impl DirRef {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.obj().id
    }
    /// The reference to the object.
    pub fn obj(&self) -> &ObjRef {
        match self {
            DirRef::Leaf(r) | DirRef::Index(r) => r,
        }
    }
    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            DirRef::Leaf(_) => ObjectKind::DirNode,
            DirRef::Index(_) => ObjectKind::DirIndex,
        }
    }
}

/// One child of a directory index node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirChild {
    /// The node holding the entries whose name hash continues with this
    /// child's digit.
    pub node: DirRef,
    /// How many entries are below it (at least 1).
    pub count: u64,
}

/// An interior node of a large directory: its entries split by the digit
/// at `depth` of their name hash
/// ([`AgentKeys::dir_name_hash`](crate::seal::keys::AgentKeys::dir_name_hash)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirIndex {
    /// Which 4-bit digit of the name hash this node branches on (the
    /// directory's own index node is depth 0).
    pub depth: u8,
    /// Children by digit; absent digits have no entries.
    pub children: [Option<DirChild>; DIR_FANOUT],
}

impl DirIndex {
    /// Entries below this node.
    pub fn count(&self) -> u64 {
        self.children
            .iter()
            .flatten()
            .fold(0u64, |a, c| a.saturating_add(c.count))
    }
}

/// Digit `depth` (0..64) of a name hash: high nibble first.
pub fn dir_digit(hash: &[u8; 32], depth: u8) -> usize {
    let b = hash[usize::from(depth / 2)];
    usize::from(if depth.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0x0f
    })
}

/// Whether `count` entries at `depth` form a leaf (a directory node) rather
/// than an index node: the one rule that makes a directory's shape a
/// function of its entries alone.
pub fn dir_is_leaf(count: u64, depth: u8) -> bool {
    count <= DIR_LEAF_MAX || depth >= DIR_MAX_DEPTH
}
/// Where a snapshot's inode pages are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pages {
    /// Tree format 1: every page, by page number, in the manifest.
    List(BTreeMap<u64, ObjectId>),
    /// Tree format 2: the root of a page map (`None`: no pages), a radix
    /// tree of [`PageMapNode`]s over the page numbers' hex digits.
    Map(Option<ObjRef>),
    /// Tree format 3: the root of a page map whose nodes also count the
    /// inodes below each child (from format 6 its references carry homes).
    Counted(Option<ObjRef>),
}

/// A node of a page map: its children by one hex digit of the page number.
/// At level 0 the children are inode pages (the lowest digit); at level
/// `l > 0`, page-map nodes of level `l - 1` (digit `l`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageMapNode {
    /// Which digit this node branches on (0: the lowest).
    pub level: u8,
    /// Children by digit; at least one is present.
    pub children: [Option<ObjRef>; PAGE_MAP_FANOUT],
    /// Tree format 3: the inodes below each child (at least 1 for a
    /// present child, 0 for an absent one). `None` in format 2.
    pub counts: Option<[u64; PAGE_MAP_FANOUT]>,
}

impl PageMapNode {
    /// The inodes below this node (format 3), saturating.
    pub fn total(&self) -> Option<u64> {
        self.counts
            .map(|c| c.iter().fold(0u64, |a, n| a.saturating_add(*n)))
    }
}

/// Digit `level` of a page number.
pub fn page_digit(page_no: u64, level: u8) -> usize {
    ((page_no >> (4 * u32::from(level))) & 0xf) as usize
}

/// Encodes a page-map node.
pub fn encode_page_map(n: &PageMapNode) -> Vec<u8> {
    let mut w = Writer_::default();
    let homed = n.children.iter().flatten().any(|c| c.home != 0);
    w.u8(n.level
        | if homed { HOMED } else { 0 }
        | if n.counts.is_some() {
            PAGE_MAP_COUNTED
        } else {
            0
        });
    put_bitmap(&mut w, &n.children);
    for (d, c) in n.children.iter().enumerate() {
        let Some(c) = c else { continue };
        if let Some(counts) = &n.counts {
            w.u64(counts[d]);
        }
        put_obj(&mut w, c, homed);
    }
    w.0
}

/// Decodes a page-map node: a known level, at least one child, and (when
/// it counts) at least one inode below each child.
pub fn decode_page_map(b: &[u8]) -> Result<PageMapNode> {
    let mut r = Reader::new(b, "page map");
    let byte = r.u8()?;
    let counted = byte & PAGE_MAP_COUNTED != 0;
    let homed = byte & HOMED != 0;
    let level = byte & !(PAGE_MAP_COUNTED | HOMED);
    if level > PAGE_MAP_MAX_LEVEL {
        return Err(r.err("level beyond the page numbers' digits"));
    }
    let bitmap = get_bitmap(&mut r)?;
    if bitmap == 0 {
        return Err(r.err("a node without children"));
    }
    let mut children = [None; PAGE_MAP_FANOUT];
    let mut counts = [0u64; PAGE_MAP_FANOUT];
    for (d, slot) in children.iter_mut().enumerate() {
        if bitmap & (1 << d) != 0 {
            if counted {
                counts[d] = r.u64()?;
                if counts[d] == 0 {
                    return Err(r.err("a child without inodes"));
                }
            }
            *slot = Some(get_obj(&mut r, homed)?);
        }
    }
    if homed && children.iter().flatten().all(|c| c.home == 0) {
        return Err(r.err("homes flagged, none given"));
    }
    r.finish()?;
    Ok(PageMapNode {
        level,
        children,
        counts: counted.then_some(counts),
    })
}

/// The plaintext of a snapshot: what the envelope seals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Tree format version ([`FORMAT_VERSION`] for new snapshots; an older
    /// one for snapshots written by older builds).
    pub format: u32,
    /// Keyed agent id (repeated from the envelope and checked).
    pub agent_id: AgentId,
    /// Sequence number.
    pub seq: u64,
    /// Hash of the parent snapshot's envelope (zeros for the first).
    pub parent: [u8; 32],
    /// Commit time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Chunk size used by this snapshot's files.
    pub chunk_size: u32,
    /// Inode numbers per page in this snapshot.
    pub inodes_per_page: u32,
    /// One above the highest inode number ever allocated; a writer
    /// allocates the lowest number free below it first (tree format 3
    /// reuses the numbers of deleted inodes), and this one after.
    pub next_ino: u64,
    /// Where the non-empty inode pages are.
    pub pages: Pages,
    /// Who made this snapshot's changes, and the agent's note for it (tree
    /// format 4, bounded from format 5; `None` before, and for snapshots
    /// no process made: the first one, rollbacks, restores).
    pub provenance: Option<Provenance>,
    /// The newest delta of the chain on top of `pages` (tree format 8):
    /// the snapshot's tree is the fold's, with the chain's deltas applied
    /// oldest first. `None`: the tree is `pages` alone (a fold).
    pub delta: Option<ObjRef>,
}

/// Longest note an agent can set for a snapshot, in bytes.
pub const NOTE_MAX: usize = 4096;
/// Most processes one snapshot's provenance names (tree format 5): a
/// change by a process beyond these is not attributed, and the record
/// says it is incomplete.
pub const WRITERS_MAX: usize = 256;
/// Most (inode, writer) pairs in each of a provenance's two lists (tree
/// format 5): about 200 KB each. What a burst of metadata changes (an
/// `rm -rf` of a large tree within one quiet period) attributes beyond
/// this is left out (the record says it is incomplete), so neither the
/// manifest nor the mount's memory grows with the size of a burst.
pub const CHANGES_MAX: usize = 16_384;

/// A process that changed the tree, as the kernel named it to the mount.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Writer {
    /// Process id (0: the kernel, with no process to attribute to).
    pub pid: u32,
    /// Effective user and group id of the request.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process name (`/proc/PID/comm`, at most 16 bytes; empty if unknown).
    pub comm: Vec<u8>,
    /// Executable path (`/proc/PID/exe`; empty if unknown).
    pub exe: Vec<u8>,
}

/// What a snapshot says about its own making (tree format 4; bounded in
/// format 5): the agent's note, the processes that made its changes, and
/// which inode each changed. Inode numbers, not paths: a reader joins them with the
/// paths a comparison with the parent snapshot finds (`history::log`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The note set through the mount for this snapshot.
    pub note: Option<Vec<u8>>,
    /// Every process that changed something, in order of first change.
    pub writers: Vec<Writer>,
    /// (inode, index into `writers`): inodes created or changed.
    pub changes: std::collections::BTreeSet<(u64, u32)>,
    /// (inode, index into `writers`): names removed from inodes (unlink,
    /// rmdir, a rename over a name). Apart from `changes`, since a number
    /// freed by a removal can be given to a new inode before the commit.
    pub removed: std::collections::BTreeSet<(u64, u32)>,
    /// Whether attributions were left out because the record was full
    /// (tree format 5): a change by a writer beyond [`WRITERS_MAX`], or
    /// beyond [`CHANGES_MAX`] in its list. Paths they changed may show no
    /// writer, or not all of theirs.
    pub incomplete: bool,
}

impl Provenance {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.note.is_none() && self.writers.is_empty() && !self.incomplete
    }

    /// Indices of the writers that created or changed `ino` (`removed`:
    /// that removed a name of it).
    pub fn writers_of(&self, ino: u64, removed: bool) -> impl Iterator<Item = u32> + '_ {
        let set = if removed {
            &self.removed
        } else {
            &self.changes
        };
        set.range((ino, 0)..=(ino, u32::MAX)).map(|(_, w)| *w)
    }
}

fn put_provenance(w: &mut Writer_, p: &Provenance, format: u32) {
    match &p.note {
        None => w.u8(0),
        Some(n) => {
            w.u8(1);
            w.bytes(n);
        }
    }
    w.u32(u32::try_from(p.writers.len()).expect("writers below 2^32"));
    for x in &p.writers {
        w.u32(x.pid);
        w.u32(x.uid);
        w.u32(x.gid);
        w.bytes(&x.comm);
        w.bytes(&x.exe);
    }
    for set in [&p.changes, &p.removed] {
        w.u32(u32::try_from(set.len()).expect("changes below 2^32"));
        for (ino, x) in set {
            w.u64(*ino);
            w.u32(*x);
        }
    }
    if format >= 5 {
        w.u8(u8::from(p.incomplete));
    } else {
        assert!(!p.incomplete, "an incomplete record needs tree format 5");
    }
}

fn get_provenance(r: &mut Reader, format: u32) -> Result<Provenance> {
    let note = match r.u8()? {
        0 => None,
        1 => {
            let n = r.bytes()?;
            if n.len() > NOTE_MAX {
                return Err(r.err("note too long"));
            }
            Some(n.to_vec())
        }
        t => return Err(r.err(format!("bad note tag {t}"))),
    };
    let n = r.count(20)?;
    if format >= 5 && n > WRITERS_MAX {
        return Err(r.err("too many writers"));
    }
    let mut writers = Vec::with_capacity(n);
    for _ in 0..n {
        writers.push(Writer {
            pid: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            comm: r.bytes()?.to_vec(),
            exe: r.bytes()?.to_vec(),
        });
    }
    let mut sets = [
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    ];
    for set in &mut sets {
        let n = r.count(12)?;
        if format >= 5 && n > CHANGES_MAX {
            return Err(r.err("too many changes"));
        }
        for _ in 0..n {
            let c = (r.u64()?, r.u32()?);
            if c.1 as usize >= writers.len() {
                return Err(r.err("change names no writer"));
            }
            if set.last().is_some_and(|l| *l >= c) {
                return Err(r.err("changes not sorted"));
            }
            set.insert(c);
        }
    }
    let [changes, removed] = sets;
    let incomplete = format >= 5
        && match r.u8()? {
            0 => false,
            1 => true,
            t => return Err(r.err(format!("bad completeness flag {t}"))),
        };
    Ok(Provenance {
        note,
        writers,
        changes,
        removed,
        incomplete,
    })
}

fn put_ref(w: &mut Writer_, r: &ChunkRef) {
    match r {
        None => w.u8(0),
        Some(id) => {
            w.u8(1);
            w.id(&id.0);
        }
    }
}

fn get_ref(r: &mut Reader<'_>) -> Result<ChunkRef> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(ObjectId(r.id()?))),
        t => Err(r.err(format!("bad chunk ref tag {t}"))),
    }
}

/// A metadata reference, with its home when its node carries homes.
fn put_obj(w: &mut Writer_, o: &ObjRef, homed: bool) {
    w.id(&o.id.0);
    if homed {
        w.u64(o.home);
    } else {
        debug_assert_eq!(o.home, 0, "a home in a node without homes");
    }
}

/// A metadata reference: with its home when the node says `homed`, else
/// found by id.
fn get_obj(r: &mut Reader<'_>, homed: bool) -> Result<ObjRef> {
    let id = ObjectId(r.id()?);
    Ok(ObjRef {
        id,
        home: if homed { r.u64()? } else { 0 },
    })
}

/// A metadata reference that must have a home (0 is written without one).
fn get_homed(r: &mut Reader<'_>) -> Result<ObjRef> {
    let o = get_obj(r, true)?;
    if o.home == 0 {
        return Err(r.err("a home of 0"));
    }
    Ok(o)
}

/// Encodes a chunk list object.
pub fn encode_chunk_list(refs: &[ChunkRef]) -> Vec<u8> {
    let mut w = Writer_::default();
    w.u32(u32::try_from(refs.len()).expect("chunk count below 2^32"));
    for r in refs {
        put_ref(&mut w, r);
    }
    w.0
}

/// Decodes a chunk list object.
pub fn decode_chunk_list(b: &[u8]) -> Result<Vec<ChunkRef>> {
    let mut r = Reader::new(b, "chunk list");
    let n = r.count(1)?;
    let refs = (0..n).map(|_| get_ref(&mut r)).collect::<Result<_>>()?;
    r.finish()?;
    Ok(refs)
}

/// Encodes a chunk-index node: its height, then its children's ids.
pub fn encode_chunk_index(n: &ChunkIndexNode) -> Vec<u8> {
    let mut w = Writer_::default();
    w.u8(n.height);
    w.u32(u32::try_from(n.children.len()).expect("children below 2^32"));
    for c in &n.children {
        w.id(&c.0);
    }
    w.0
}

/// Decodes a chunk-index node: a height of 1 to
/// [`CHUNK_INDEX_MAX_HEIGHT`], 1 to [`CHUNK_INDEX_FANOUT`] children. (That
/// the children fit the file's count is checked where the tree is read:
/// a node alone does not know it.)
pub fn decode_chunk_index(b: &[u8]) -> Result<ChunkIndexNode> {
    let mut r = Reader::new(b, "chunk index");
    let height = r.u8()?;
    if !(1..=CHUNK_INDEX_MAX_HEIGHT).contains(&height) {
        return Err(r.err(format!("height {height}")));
    }
    let n = r.count(32)?;
    if n == 0 || n > CHUNK_INDEX_FANOUT {
        return Err(r.err(format!("{n} children")));
    }
    let children = (0..n)
        .map(|_| Ok(ObjectId(r.id()?)))
        .collect::<Result<_>>()?;
    r.finish()?;
    Ok(ChunkIndexNode { height, children })
}

/// Encodes a directory node.
pub fn encode_dir(entries: &Entries) -> Vec<u8> {
    let mut w = Writer_::default();
    w.u32(u32::try_from(entries.len()).expect("entries below 2^32"));
    for (name, e) in entries {
        w.bytes(name);
        w.u64(e.ino);
        w.u8(e.file_type as u8);
    }
    w.0
}

/// Decodes a directory node; names must be valid and strictly sorted.
pub fn decode_dir(b: &[u8]) -> Result<Entries> {
    let mut r = Reader::new(b, "directory node");
    let n = r.count(13)?;
    let mut out = Entries::new();
    let mut last: Option<&[u8]> = None;
    for _ in 0..n {
        let name = r.bytes()?;
        let ino = r.u64()?;
        let ft = r.u8()?;
        let file_type = FileType::from_u8(ft).ok_or_else(|| r.err("bad entry type"))?;
        if !valid_name(name) {
            return Err(r.err("bad entry name"));
        }
        if last.is_some_and(|l| l >= name) {
            return Err(r.err("entries not sorted"));
        }
        last = Some(name);
        out.insert(name.to_vec(), DirEntry { ino, file_type });
    }
    r.finish()?;
    Ok(out)
}

/// The `u16` bitmap of a 16-way node: bit `d` set when child `d` exists.
fn put_bitmap<T>(w: &mut Writer_, children: &[Option<T>; 16]) {
    let bitmap = (0..16).fold(0u16, |b, d| b | (u16::from(children[d].is_some()) << d));
    w.0.extend_from_slice(&bitmap.to_le_bytes());
}

fn get_bitmap(r: &mut Reader<'_>) -> Result<u16> {
    Ok(u16::from_le_bytes([r.u8()?, r.u8()?]))
}

/// Encodes a directory index node.
pub fn encode_dir_index(n: &DirIndex) -> Vec<u8> {
    let mut w = Writer_::default();
    let homed = n.children.iter().flatten().any(|c| c.node.obj().home != 0);
    w.u8(n.depth | if homed { HOMED } else { 0 });
    put_bitmap(&mut w, &n.children);
    for c in n.children.iter().flatten() {
        w.u8(c.node.kind() as u8);
        w.u64(c.count);
        put_obj(&mut w, c.node.obj(), homed);
    }
    w.0
}

/// Decodes a directory index node. Beyond the encoding, the shape rules
/// are checked: every child holds entries, a child is a leaf exactly when
/// [`dir_is_leaf`] says so, and the node itself is too large to be one.
pub fn decode_dir_index(b: &[u8]) -> Result<DirIndex> {
    let mut r = Reader::new(b, "directory index");
    let byte = r.u8()?;
    let homed = byte & HOMED != 0;
    let depth = byte & !HOMED;
    if depth >= DIR_MAX_DEPTH {
        return Err(r.err("index node below the deepest level"));
    }
    let bitmap = get_bitmap(&mut r)?;
    let mut children = [None; DIR_FANOUT];
    for (d, slot) in children.iter_mut().enumerate() {
        if bitmap & (1 << d) == 0 {
            continue;
        }
        let kind = r.u8()?;
        let count = r.u64()?;
        let id = get_obj(&mut r, homed)?;
        let leaf = dir_is_leaf(count, depth + 1);
        let node = match kind {
            3 if leaf => DirRef::Leaf(id),
            6 if !leaf => DirRef::Index(id),
            _ => return Err(r.err("child kind does not match its size")),
        };
        if count == 0 {
            return Err(r.err("empty child"));
        }
        *slot = Some(DirChild { node, count });
    }
    if homed && children.iter().flatten().all(|c| c.node.obj().home == 0) {
        return Err(r.err("homes flagged, none given"));
    }
    r.finish()?;
    let n = DirIndex { depth, children };
    if dir_is_leaf(n.count(), depth) {
        return Err(Error::corrupt(
            "directory index",
            "small enough to be one directory node",
        ));
    }
    Ok(n)
}

fn put_inode(w: &mut Writer_, i: &Inode) {
    w.u64(i.ino);
    w.u8(i.file_type() as u8);
    w.u32(i.perm);
    w.u32(i.uid);
    w.u32(i.gid);
    w.u32(i.nlink);
    w.u64(i.size);
    w.i64(i.atime);
    w.i64(i.mtime);
    w.i64(i.ctime);
    w.u64(i.parent);
    w.u32(i.xattrs.len() as u32);
    for (k, v) in &i.xattrs {
        w.bytes(k);
        w.bytes(v);
    }
    match &i.content {
        Content::File(Chunks::Inline(refs)) => {
            w.u8(0);
            w.u32(refs.len() as u32);
            for r in refs {
                put_ref(w, r);
            }
        }
        Content::File(Chunks::List { id, count }) => {
            w.u8(1);
            w.id(&id.0);
            w.u64(*count);
        }
        Content::File(Chunks::Tree { id, count }) => {
            w.u8(2);
            w.id(&id.0);
            w.u64(*count);
        }
        Content::Dir(None) => w.u8(0),
        // Tags 3 and 4 (tree format 6): the reference has a home.
        Content::Dir(Some(r)) => {
            let homed = r.obj().home != 0;
            let tag = match r {
                DirRef::Leaf(_) => 1,
                DirRef::Index(_) => 2,
            };
            w.u8(if homed { tag + 2 } else { tag });
            put_obj(w, r.obj(), homed);
        }
        Content::Symlink(t) => w.bytes(t),
        Content::Special(FileType::CharDev | FileType::BlockDev, rdev) => w.u64(*rdev),
        Content::Special(..) => {}
    }
}

fn get_inode(r: &mut Reader<'_>) -> Result<Inode> {
    let ino = r.u64()?;
    let ft = FileType::from_u8(r.u8()?).ok_or_else(|| r.err("bad inode type"))?;
    let perm = r.u32()?;
    if perm & !0o7777 != 0 {
        return Err(r.err("bad permission bits"));
    }
    let (uid, gid, nlink, size) = (r.u32()?, r.u32()?, r.u32()?, r.u64()?);
    let (atime, mtime, ctime, parent) = (r.i64()?, r.i64()?, r.i64()?, r.u64()?);
    let nx = r.count(8)?;
    let mut xattrs = BTreeMap::new();
    for _ in 0..nx {
        let k = r.bytes()?.to_vec();
        let v = r.bytes()?.to_vec();
        if xattrs.last_key_value().is_some_and(|(last, _)| *last >= k) {
            return Err(r.err("xattrs not sorted"));
        }
        xattrs.insert(k, v);
    }
    let content = match ft {
        FileType::File => match r.u8()? {
            0 => {
                let n = r.count(1)?;
                if n > MAX_INLINE_CHUNKS {
                    return Err(r.err("too many inline chunks"));
                }
                Content::File(Chunks::Inline(
                    (0..n).map(|_| get_ref(r)).collect::<Result<_>>()?,
                ))
            }
            1 => Content::File(Chunks::List {
                id: ObjectId(r.id()?),
                count: r.u64()?,
            }),
            2 => {
                let (id, count) = (ObjectId(r.id()?), r.u64()?);
                if chunk_tree_height(count).is_none() {
                    return Err(r.err("a chunk tree short enough to be one list"));
                }
                Content::File(Chunks::Tree { id, count })
            }
            t => return Err(r.err(format!("bad chunks tag {t}"))),
        },
        FileType::Dir => Content::Dir(match r.u8()? {
            0 => None,
            1 => Some(DirRef::Leaf(get_obj(r, false)?)),
            2 => Some(DirRef::Index(get_obj(r, false)?)),
            3 => Some(DirRef::Leaf(get_homed(r)?)),
            4 => Some(DirRef::Index(get_homed(r)?)),
            t => return Err(r.err(format!("bad directory ref tag {t}"))),
        }),
        FileType::Symlink => Content::Symlink(r.bytes()?.to_vec()),
        FileType::CharDev | FileType::BlockDev => Content::Special(ft, r.u64()?),
        FileType::Fifo | FileType::Socket => Content::Special(ft, 0),
    };
    Ok(Inode {
        ino,
        perm,
        uid,
        gid,
        nlink,
        size,
        atime,
        mtime,
        ctime,
        parent,
        xattrs,
        content,
    })
}

/// Encodes an inode page (records sorted by inode number).
pub fn encode_page(page_no: u64, inodes: &BTreeMap<u64, Inode>) -> Vec<u8> {
    let mut w = Writer_::default();
    w.u64(page_no);
    w.u32(inodes.len() as u32);
    for i in inodes.values() {
        put_inode(&mut w, i);
    }
    w.0
}

/// Decodes an inode page; every record must belong to `page_no`.
pub fn decode_page(b: &[u8], inodes_per_page: u32) -> Result<(u64, BTreeMap<u64, Inode>)> {
    let mut r = Reader::new(b, "inode page");
    let page_no = r.u64()?;
    let n = r.count(60)?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let i = get_inode(&mut r)?;
        if i.ino.checked_div(u64::from(inodes_per_page)) != Some(page_no) {
            return Err(r.err("inode outside its page"));
        }
        if out.last_key_value().is_some_and(|(last, _)| *last >= i.ino) {
            return Err(r.err("inodes not sorted"));
        }
        out.insert(i.ino, i);
    }
    r.finish()?;
    Ok((page_no, out))
}

/// One commit's changes to the tree (tree format 8): the inode records it
/// wrote, the inodes it removed and the directory names it changed, on
/// top of the previous delta of the chain (`prev`), or of the fold's tree
/// (the manifest's pages) for the first delta after a fold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// The delta before this one; `None` for the first after a fold.
    pub prev: Option<ObjRef>,
    /// Position in the chain: 1 for the first after a fold.
    pub depth: u32,
    /// Inode records written (created or changed), by number.
    pub inodes: BTreeMap<u64, Inode>,
    /// Inodes removed (disjoint from `inodes`).
    pub removed: BTreeSet<u64>,
    /// Directory names changed, by directory inode.
    pub dirs: BTreeMap<u64, DirEdits>,
}

/// The names a delta changes in one directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirEdits {
    /// The directory's entries start empty here: every name an earlier
    /// delta gave it, and its base tree, are gone (its inode number was
    /// freed and given to a new directory since the previous commit).
    pub fresh: bool,
    /// A name's new entry; `None`: removed.
    pub names: BTreeMap<Vec<u8>, Option<DirEntry>>,
}

/// Encodes a delta.
pub fn encode_delta(d: &Delta) -> Vec<u8> {
    let mut w = Writer_::default();
    match &d.prev {
        None => w.u8(0),
        Some(o) => {
            w.u8(1);
            put_obj(&mut w, o, true);
        }
    }
    w.u32(d.depth);
    w.u32(u32::try_from(d.inodes.len()).expect("inodes below 2^32"));
    for i in d.inodes.values() {
        put_inode(&mut w, i);
    }
    w.u32(u32::try_from(d.removed.len()).expect("inodes below 2^32"));
    for ino in &d.removed {
        w.u64(*ino);
    }
    w.u32(u32::try_from(d.dirs.len()).expect("directories below 2^32"));
    for (dir, e) in &d.dirs {
        w.u64(*dir);
        w.u8(u8::from(e.fresh));
        w.u32(u32::try_from(e.names.len()).expect("names below 2^32"));
        for (name, entry) in &e.names {
            w.bytes(name);
            match entry {
                None => w.u8(0),
                Some(x) => {
                    w.u8(1);
                    w.u64(x.ino);
                    w.u8(x.file_type as u8);
                }
            }
        }
    }
    w.0
}

/// Decodes a delta; refuses any encoding [`encode_delta`] would not write
/// (unsorted or repeated numbers and names, a removed inode that is also
/// written or has names, an empty directory edit, a depth that does not
/// match the link).
pub fn decode_delta(b: &[u8]) -> Result<Delta> {
    let mut r = Reader::new(b, "delta");
    let prev = match r.u8()? {
        0 => None,
        1 => Some(get_homed(&mut r)?),
        t => return Err(r.err(format!("bad link tag {t}"))),
    };
    let depth = r.u32()?;
    if depth == 0 || depth > DELTA_CHAIN_MAX || (depth == 1) != prev.is_none() {
        return Err(r.err("a depth that does not match the link"));
    }
    let n = r.count(60)?;
    let mut inodes = BTreeMap::new();
    for _ in 0..n {
        let i = get_inode(&mut r)?;
        if inodes
            .last_key_value()
            .is_some_and(|(last, _)| *last >= i.ino)
        {
            return Err(r.err("inodes not sorted"));
        }
        inodes.insert(i.ino, i);
    }
    let n = r.count(8)?;
    let mut removed = BTreeSet::new();
    for _ in 0..n {
        let ino = r.u64()?;
        if removed.last().is_some_and(|last| *last >= ino) || inodes.contains_key(&ino) {
            return Err(r.err("removed inodes not sorted, or also written"));
        }
        removed.insert(ino);
    }
    let n = r.count(13)?;
    let mut dirs = BTreeMap::new();
    for _ in 0..n {
        let dir = r.u64()?;
        if dirs.last_key_value().is_some_and(|(last, _)| *last >= dir) || removed.contains(&dir) {
            return Err(r.err("directories not sorted, or removed"));
        }
        let fresh = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.err("bad fresh flag")),
        };
        let k = r.count(6)?;
        if k == 0 && !fresh {
            return Err(r.err("a directory edit that changes nothing"));
        }
        let mut names = BTreeMap::new();
        for _ in 0..k {
            let name = r.bytes()?.to_vec();
            if !valid_name(&name) {
                return Err(r.err("bad entry name"));
            }
            if names
                .last_key_value()
                .is_some_and(|(last, _): (&Vec<u8>, _)| *last >= name)
            {
                return Err(r.err("names not sorted"));
            }
            let entry = match r.u8()? {
                0 => None,
                1 => {
                    let ino = r.u64()?;
                    let ft = r.u8()?;
                    let file_type = FileType::from_u8(ft).ok_or_else(|| r.err("bad entry type"))?;
                    Some(DirEntry { ino, file_type })
                }
                t => return Err(r.err(format!("bad entry tag {t}"))),
            };
            names.insert(name, entry);
        }
        dirs.insert(dir, DirEdits { fresh, names });
    }
    r.finish()?;
    Ok(Delta {
        prev,
        depth,
        inodes,
        removed,
        dirs,
    })
}

/// Whether `name` may be a directory entry's name.
fn valid_name(name: &[u8]) -> bool {
    !(name.is_empty() || name.contains(&b'/') || name.contains(&0) || name == b"." || name == b"..")
}

/// Encodes a manifest.
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut w = Writer_::default();
    w.u32(m.format);
    w.id(&m.agent_id.0);
    w.u64(m.seq);
    w.id(&m.parent);
    w.i64(m.timestamp_ms);
    w.u32(m.chunk_size);
    w.u32(m.inodes_per_page);
    w.u64(m.next_ino);
    match (&m.pages, m.format) {
        (Pages::List(pages), 1) => {
            w.u32(u32::try_from(pages.len()).expect("pages below 2^32"));
            for (no, id) in pages {
                w.u64(*no);
                w.id(&id.0);
            }
        }
        (Pages::Map(root), 2) | (Pages::Counted(root), 3..=5) => match root {
            None => w.u8(0),
            Some(o) => {
                assert_eq!(o.home, 0, "a home needs tree format {HOMED_FORMAT}");
                w.u8(1);
                w.id(&o.id.0);
            }
        },
        (Pages::Counted(root), HOMED_FORMAT..) => match root {
            None => w.u8(0),
            Some(o) => {
                w.u8(1);
                put_obj(&mut w, o, true);
            }
        },
        (_, f) => panic!("tree format {f} with the other format's page layout"),
    }
    if m.format >= DELTA_FORMAT {
        match &m.delta {
            None => w.u8(0),
            Some(o) => {
                w.u8(1);
                put_obj(&mut w, o, true);
            }
        }
    } else {
        assert!(
            m.delta.is_none(),
            "a delta needs tree format {DELTA_FORMAT}"
        );
    }
    if m.format >= 4 {
        match &m.provenance {
            None => w.u8(0),
            Some(p) => {
                w.u8(1);
                put_provenance(&mut w, p, m.format);
            }
        }
    } else {
        assert!(m.provenance.is_none(), "provenance needs tree format 4");
    }
    w.0
}

/// Decodes a manifest.
pub fn decode_manifest(b: &[u8]) -> Result<Manifest> {
    let mut r = Reader::new(b, "manifest");
    let format = r.u32()?;
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&format) {
        return Err(Error::UnknownFormatVersion(format, FORMAT_VERSION));
    }
    let agent_id = AgentId(r.id()?);
    let seq = r.u64()?;
    let parent = r.id()?;
    let timestamp_ms = r.i64()?;
    let chunk_size = r.u32()?;
    let inodes_per_page = r.u32()?;
    if chunk_size == 0 || inodes_per_page == 0 {
        return Err(r.err("zero chunk size or page size"));
    }
    let next_ino = r.u64()?;
    let pages = if format == 1 {
        let n = r.count(40)?;
        let mut pages = BTreeMap::new();
        for _ in 0..n {
            let no = r.u64()?;
            let id = ObjectId(r.id()?);
            if pages.last_key_value().is_some_and(|(last, _)| *last >= no) {
                return Err(r.err("pages not sorted"));
            }
            pages.insert(no, id);
        }
        Pages::List(pages)
    } else {
        let root = match r.u8()? {
            0 => None,
            1 => Some(get_obj(&mut r, format >= HOMED_FORMAT)?),
            t => return Err(r.err(format!("bad page map tag {t}"))),
        };
        if format == 2 {
            Pages::Map(root)
        } else {
            Pages::Counted(root)
        }
    };
    let delta = if format >= DELTA_FORMAT {
        match r.u8()? {
            0 => None,
            1 => Some(get_homed(&mut r)?),
            t => return Err(r.err(format!("bad delta tag {t}"))),
        }
    } else {
        None
    };
    let provenance = if format >= 4 {
        match r.u8()? {
            0 => None,
            1 => Some(get_provenance(&mut r, format)?),
            t => return Err(r.err(format!("bad provenance tag {t}"))),
        }
    } else {
        None
    };
    r.finish()?;
    Ok(Manifest {
        format,
        agent_id,
        seq,
        parent,
        timestamp_ms,
        chunk_size,
        inodes_per_page,
        next_ino,
        pages,
        provenance,
        delta,
    })
}
