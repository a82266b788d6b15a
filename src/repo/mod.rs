//! The repository layer: one agent's data dir, sealed bytes only below it.
//!
//! Architecture Invariant: `repo/` never holds the master key (it is handed
//! an agent's derived keys) and never imports the engine, history,
//! replication, the mount or the CLI.
//!
//! - [`store`]: append-only pack files, durability of appends.
//! - [`journal`]: the sealed operation journal file (operations since head).
//! - [`index`]: SQLite: envelopes, object locations, pack lengths, metadata.
//! - [`agent`]: opening a data dir: lock, head check, seen-head record,
//!   replication metadata.
//! - [`view`]: a read-only, verified view of one snapshot.
//! - [`dirtree`]: directories of any size, split by name hash into
//!   bounded nodes (lookups, listings, incremental commits).
//! - [`pagemap`]: where a snapshot's inode pages are, as a radix tree.
//! - [`delta`]: a snapshot's delta chain merged (what it changed on top
//!   of its fold's tree).
//! - [`pack`]: the pack record format, one encoder and one decoder.
//! - [`lazy`]: objects of a lazily restored data dir, fetched on first use.
//! - [`repack`]: packs rewritten without some objects (prune, redaction).
//! - [`replication_state`]: what the index records about replication.
//! - [`remote`]: the storage driver seam (seed 000) over `object_store`.
//! - [`segment`]: envelopes and part indexes of 256 snapshots in one
//!   remote object, for a lazy restore.
//! - [`Repo`] (this file): objects named, sealed and deduplicated in,
//!   verified plaintext out, through bounded caches.
//!
//! ## The object repository
//!
//! Joins the store (sealed bytes), the index (locations, envelopes) and the
//! agent's keys. `put` names, seals and appends an object (deduplicated by
//! id); `get_*` reads, opens and decodes one, through a bounded cache of
//! verified plaintext. Objects appended but not yet committed are kept in
//! `pending` so that the writer can read them back before they are indexed.
//!
//! A commit appends the snapshot's commit record to the packs and returns:
//! its index rows wait in `unindexed` (with its objects, which stay
//! readable from there) for the next flush, which writes every waiting
//! snapshot in one SQLite transaction. Anything that takes the index
//! ([`Repo::index`]) flushes first, so no reader of the index misses a
//! committed snapshot; the power-loss barrier ([`Repo::sync`]) flushes
//! together with the durable point; a commit flushes when too many wait.
//! A crash before the flush loses nothing: the next open catches the index
//! up from the commit records in the packs (`agent`'s recovery).

pub mod agent;
pub mod batch;
pub mod chunktree;
pub mod delta;
pub mod dirtree;
pub mod index;
pub mod journal;
pub mod lazy;
pub mod pack;
pub mod pagemap;
pub mod postgres;
pub mod remote;
pub mod repack;
pub mod replication_state;
pub mod segment;
pub mod store;
pub mod view;
pub mod weight;

use crate::cache::Lru;
use crate::repo::index::{Index, NewObject};
use crate::repo::store::{Location, Store};
use crate::repo::view::Reuse;
use crate::seal::aead;
use crate::seal::envelope::{self, Envelope};
use crate::seal::keys::AgentKeys;
use crate::seal::tree::{
    self, ChunkIndexNode, ChunkRef, DirIndex, Entries, Inode, ObjRef, ObjectId, ObjectKind,
    PageMapNode,
};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Byte budget of the metadata cache (pages, directories, chunk lists,
/// chunk-index nodes and chunk trees' whole lists).
pub const META_CACHE_BYTES: usize = 64 << 20;
/// The smallest chunk a read that covers it whole opens straight into its
/// reply, bypassing the chunk cache ([`Repo::read_chunk_into`]). Smaller
/// chunks (small files) stay cached: they cost little to keep, and re-reads
/// of many small files hit them.
pub const STREAM_CHUNK_MIN: usize = 16 << 10;

/// Byte budget of the decrypted chunk cache.
pub const CHUNK_CACHE_BYTES: usize = 64 << 20;

/// A decoded, verified inode page: its records sorted by inode number in
/// one slice (a page is read far more often than it is built, and a slice
/// holds a record in half the memory of a map's nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page(Box<[Inode]>);

impl Page {
    /// The record of inode `ino`.
    pub fn get(&self, ino: &u64) -> Option<&Inode> {
        let k = self.0.binary_search_by_key(ino, |i| i.ino).ok()?;
        Some(&self.0[k])
    }

    /// Whether the page holds inode `ino`.
    pub fn contains_key(&self, ino: &u64) -> bool {
        self.get(ino).is_some()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inode numbers, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|i| i.ino)
    }

    /// The records, ascending.
    pub fn values(&self) -> std::slice::Iter<'_, Inode> {
        self.0.iter()
    }

    /// The records as a map, to change and seal again.
    pub fn to_map(&self) -> BTreeMap<u64, Inode> {
        self.0.iter().map(|i| (i.ino, i.clone())).collect()
    }
}

impl From<BTreeMap<u64, Inode>> for Page {
    fn from(records: BTreeMap<u64, Inode>) -> Self {
        Page(records.into_values().collect())
    }
}

enum Meta {
    Page(Arc<Page>),
    Dir(Arc<Entries>),
    DirIndex(Arc<DirIndex>),
    PageMap(Arc<PageMapNode>),
    List(Arc<Vec<ChunkRef>>),
    ChunkIndex(Arc<ChunkIndexNode>),
    Delta(Arc<tree::Delta>),
    /// A chunk tree's whole list, under [`whole_tree_key`] of its root.
    WholeTree(Arc<Vec<ChunkRef>>),
    /// A chunk tree's count of stored references and whether its last one
    /// is stored, under [`stored_key`] of its root.
    Stored(u64, bool),
}

/// A snapshot in the packs whose index rows are not written yet.
struct Unflushed {
    objects: Vec<NewObject>,
    packs: Vec<(u32, u64)>,
    env: Envelope,
}

/// Snapshots committed to the packs and not yet to the index, in order,
/// and their objects by (home, id) as the index will find them (readable
/// meanwhile, and deduplicated against).
#[derive(Default)]
struct Unindexed {
    commits: Vec<Unflushed>,
    objects: HashMap<(u64, ObjectId), NewObject>,
}

/// A commit flushes the snapshots waiting for the index once this many
/// wait, or once their objects reach [`MAX_UNINDEXED_OBJECTS`] (a bound on
/// memory, and on what a recovery after a crash reads back).
const MAX_UNINDEXED: usize = 256;
/// See [`MAX_UNINDEXED`].
const MAX_UNINDEXED_OBJECTS: usize = 1 << 16;

/// The local repository of one agent.
pub struct Repo {
    keys: AgentKeys,
    store: Store,
    index: Mutex<Index>,
    pending: Mutex<HashMap<ObjectId, NewObject>>,
    /// Held by [`Repo::append`] from its last look at `pending` to the
    /// object's entry there: two threads sealing equal content (the
    /// engine seals dirty chunks on several) append it once, and neither
    /// returns before it is appended. Appends are one at a time at the
    /// pack writer anyway; readers of `pending` are not held up.
    appending: Mutex<()>,
    /// Committed snapshots whose index rows wait for [`Repo::flush`]. Taken
    /// before the index's lock, never after it.
    unindexed: Mutex<Unindexed>,
    meta: Lru<ObjectId, Meta>,
    chunks: Lru<ObjectId, Vec<u8>>,
    /// Objects erased while this handle serves (a follower carrying out a
    /// redaction): not read or cached, whatever the packs still hold,
    /// until a snapshot that references them again arrives
    /// ([`Repo::unerase`]). Held for reading across a cache insert, so that an erasure
    /// (which takes it for writing, then empties the caches of those
    /// objects) never races a reader putting one back.
    erased: RwLock<HashSet<ObjectId>>,
    sealed_bytes: std::sync::atomic::AtomicU64,
    /// A lazily restored data dir's fetcher: objects the index does not
    /// hold are fetched from the remote ([`lazy`]).
    lazy: std::sync::OnceLock<Arc<lazy::Lazy>>,
}

impl Repo {
    /// Joins the parts.
    pub fn new(keys: AgentKeys, store: Store, index: Index) -> Self {
        Repo {
            keys,
            store,
            index: Mutex::new(index),
            pending: Mutex::new(HashMap::new()),
            appending: Mutex::new(()),
            unindexed: Mutex::new(Unindexed::default()),
            meta: Lru::new(META_CACHE_BYTES),
            chunks: Lru::new(CHUNK_CACHE_BYTES),
            erased: RwLock::new(HashSet::new()),
            sealed_bytes: std::sync::atomic::AtomicU64::new(0),
            lazy: std::sync::OnceLock::new(),
        }
    }

    /// Serves objects the index does not hold through `lazy` (a lazily
    /// restored data dir).
    pub fn set_lazy(&self, lazy: lazy::Lazy) {
        let _ = self.lazy.set(Arc::new(lazy));
    }

    /// The fetcher of a lazily restored data dir.
    pub fn lazy(&self) -> Option<&Arc<lazy::Lazy>> {
        self.lazy.get()
    }

    /// The fetcher, for an object the index lacks, unless `r` is erased
    /// for this thread (an erased object is never fetched again).
    fn lazy_for(&self, r: &ObjRef) -> Option<&lazy::Lazy> {
        let l = self.lazy.get()?;
        if !READING_ERASED.get() && self.erased.read().expect("erased").contains(&r.id) {
            return None;
        }
        Some(l)
    }

    /// The agent's keys.
    pub fn keys(&self) -> &AgentKeys {
        &self.keys
    }

    /// The index (locked), with every committed snapshot in it: snapshots
    /// waiting for their rows are flushed first, and a flush that fails is
    /// the caller's error (an index without them must not be read as whole,
    /// for a prune least of all).
    pub fn index(&self) -> Result<MutexGuard<'_, Index>> {
        self.flushed(None)
    }

    /// The index (locked) once the snapshots waiting for their rows are
    /// written, with `durable` as the durable point when given.
    fn flushed(&self, durable: Option<u64>) -> Result<MutexGuard<'_, Index>> {
        let mut u = self.unindexed.lock().expect("unindexed");
        let mut index = self.index.lock().expect("index lock");
        flush_into(&mut index, &mut u, durable)?;
        Ok(index)
    }

    /// The index as flushed so far, without flushing: for lookups that
    /// consult the unindexed objects first.
    fn index_as_flushed(&self) -> MutexGuard<'_, Index> {
        self.index.lock().expect("index lock")
    }

    /// Writes the index rows of every committed snapshot still waiting for
    /// them, in one transaction.
    pub fn flush(&self) -> Result<()> {
        self.flushed(None).map(drop)
    }

    /// [`Repo::flush`] for a writer that ends (a `Drop`): unless a thread
    /// panicked holding one of the locks, and logging what fails; the
    /// next open's recovery writes from the packs whatever is left.
    pub fn flush_at_end(&self) {
        let (Ok(mut u), Ok(mut index)) = (self.unindexed.lock(), self.index.lock()) else {
            return;
        };
        if let Err(e) = flush_into(&mut index, &mut u, None) {
            tracing::warn!(
                "index rows of the last snapshots not written (the next open recovers them from the packs): {e}"
            );
        }
    }

    /// The object `r` names, from a committed snapshot whose index rows
    /// are not written yet: found as the index will find it (at its home,
    /// or by id for home 0).
    fn unindexed_object(&self, r: &ObjRef) -> Option<NewObject> {
        self.unindexed
            .lock()
            .expect("unindexed")
            .objects
            .get(&(r.home, r.id))
            .copied()
    }

    /// Sealed bytes appended to the packs through this handle.
    pub fn sealed_bytes(&self) -> u64 {
        self.sealed_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_sealed(&self, n: usize) {
        self.sealed_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Names, seals and appends an object unless one with the same id exists
    /// (chunks, chunk lists and chunk-index nodes: found by id, deduplicated
    /// by content).
    pub fn put(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<ObjectId> {
        debug_assert!(!kind.homed(), "{} is stored at home", kind.name());
        let id = envelope::object_id(&self.keys, kind, plaintext);
        if self.pending.lock().expect("pending").contains_key(&id)
            || self.has(&ObjRef::by_id(id))?
        {
            return Ok(id);
        }
        self.append(kind, id, plaintext, 0)?;
        Ok(id)
    }

    /// Names, seals and appends a metadata object at home `home`: the
    /// snapshot being built, whose commit will list it
    /// ([`ObjRef`]). Deduplicated within that commit only: an object equal
    /// to one an earlier snapshot stored is stored again, which spares the
    /// commit a lookup and a row per object (a changed page or node rarely
    /// equals an old one).
    pub fn put_meta(&self, kind: ObjectKind, plaintext: &[u8], home: u64) -> Result<ObjRef> {
        debug_assert!(kind.homed(), "{} is found by id", kind.name());
        let id = envelope::object_id(&self.keys, kind, plaintext);
        if self.pending_at(&id, home) {
            return Ok(ObjRef { id, home });
        }
        self.append(kind, id, plaintext, home)?;
        Ok(ObjRef { id, home })
    }

    /// Whether object `id` is appended and waiting for a commit at home
    /// `home` (0: found by id).
    fn pending_at(&self, id: &ObjectId, home: u64) -> bool {
        self.pending
            .lock()
            .expect("pending")
            .get(id)
            .is_some_and(|o| o.home == home)
    }

    fn append(&self, kind: ObjectKind, id: ObjectId, plaintext: &[u8], home: u64) -> Result<()> {
        // Sealed straight into its record: one copy of the plaintext.
        let sealed_len = aead::OVERHEAD + plaintext.len();
        let mut record = Vec::with_capacity(pack::RECORD_HEADER as usize + sealed_len);
        pack::encode_record_header(&mut record, &id, kind, sealed_len);
        envelope::seal_object_into(&self.keys, kind, &id, plaintext, &mut record);
        // Not appended if another thread sealing the same object did so
        // meanwhile (`Engine::seal_dirty` seals on several): an object
        // sealed here is stored once, and a caller that finds it pending
        // finds it appended.
        let _one_at_a_time = self.appending.lock().expect("appending");
        if self.pending_at(&id, home) {
            return Ok(());
        }
        let loc = self.store.append_record(&record)?;
        self.count_sealed(sealed_len);
        self.pending.lock().expect("pending").insert(
            id,
            NewObject {
                id,
                kind,
                loc,
                home,
            },
        );
        Ok(())
    }

    /// Adds an already sealed object (from a remote pack), after checking
    /// that it opens under its id and hashes to it. Nothing unverified is
    /// stored. `home`: the snapshot the object arrived with when that
    /// snapshot stores its metadata at home (tree format 6), else 0.
    pub fn put_sealed(
        &self,
        kind: ObjectKind,
        id: &ObjectId,
        sealed: &[u8],
        home: u64,
    ) -> Result<()> {
        let (plain, v) = envelope::open_object_versioned(&self.keys, kind, id, sealed)?;
        if envelope::object_id_v(&self.keys, v, kind, &plain) != *id {
            return Err(Error::corrupt(
                format!("{} {}", kind.name(), id.to_hex()),
                "content does not hash to its id",
            ));
        }
        let home = if kind.homed() { home } else { 0 };
        if self.pending_at(id, home) || (home == 0 && self.has(&ObjRef::by_id(*id))?) {
            return Ok(());
        }
        let loc = self.store.append(id, kind, sealed)?;
        self.count_sealed(sealed.len());
        self.pending.lock().expect("pending").insert(
            *id,
            NewObject {
                id: *id,
                kind,
                loc,
                home,
            },
        );
        Ok(())
    }

    /// The packs that hold pending objects.
    fn pending_packs(&self) -> std::collections::BTreeSet<u32> {
        let pending = self.pending.lock().expect("pending");
        pending.values().map(|o| o.loc.pack).collect()
    }

    /// Copies the pending objects at places `moves` names (in a pack a
    /// repack removes) to the end of the pack being
    /// appended to, and points them there. Readers wait for `pending` only
    /// while the places change, not while the bytes are copied.
    fn move_pending(&self, moves: &dyn Fn(&Location) -> bool) -> Result<()> {
        let to_move: Vec<NewObject> = self
            .pending
            .lock()
            .expect("pending")
            .values()
            .filter(|o| moves(&o.loc))
            .copied()
            .collect();
        let mut moved = Vec::with_capacity(to_move.len());
        for o in to_move {
            let sealed = self.store.read(&o.loc)?;
            moved.push((o, self.store.append(&o.id, o.kind, &sealed)?));
        }
        let mut pending = self.pending.lock().expect("pending");
        for (old, loc) in moved {
            if let Some(o) = pending.get_mut(&old.id).filter(|o| o.loc == old.loc) {
                o.loc = loc;
            }
        }
        Ok(())
    }

    /// Commits the pending objects with `env`: appends the snapshot's
    /// commit record after them; its index rows wait for the next flush
    /// (the module's doc). Not synced: the commit survives a crash of this
    /// process (the page cache keeps the packs) and becomes durable against
    /// a power cut at the next [`Repo::sync`].
    pub fn commit(&self, env: &Envelope) -> Result<()> {
        let objects: Vec<NewObject> = self
            .pending
            .lock()
            .expect("pending")
            .values()
            .copied()
            .collect();
        // Refused before the commit record is written: a recovery would
        // otherwise commit it from the packs.
        index::check_homes(&objects, env.sequence_number)?;
        self.store.append_commit(env)?;
        let packs = self.store.lengths();
        self.store.mark_committed(&packs);
        // Moved under both locks (the order: `pending`, `unindexed`, the
        // index), so that a reader looking in one, then the other, never
        // finds an object in neither.
        let mut p = self.pending.lock().expect("pending");
        let mut u = self.unindexed.lock().expect("unindexed");
        for o in &objects {
            p.remove(&o.id);
            u.objects.insert((o.home, o.id), *o);
        }
        drop(p);
        u.commits.push(Unflushed {
            objects,
            packs,
            env: env.clone(),
        });
        if u.commits.len() >= MAX_UNINDEXED || u.objects.len() >= MAX_UNINDEXED_OBJECTS {
            // The snapshot is sealed whatever this gives: failing here would
            // have the caller seal its number again. Left for the next
            // flush (the mount's next durable-point record or barrier),
            // which reports it.
            if let Err(e) = flush_into(&mut self.index.lock().expect("index lock"), &mut u, None) {
                tracing::warn!("index rows of sealed snapshots not written yet: {e}");
            }
        }
        Ok(())
    }

    /// The power-loss barrier: one `fdatasync` of the pack being appended
    /// to (two when it filled up meanwhile), shared by every commit made
    /// since the last barrier. The packs are the commit record (each
    /// snapshot's envelope follows its objects), so the index need not
    /// sync: `seq` is recorded as durable, in the transaction that flushes
    /// the snapshots waiting for their rows, without waiting for the disk,
    /// and recovery after a power cut rebuilds from the packs whatever
    /// index rows were lost.
    pub fn sync(&self, seq: u64) -> Result<()> {
        self.sync_packs()?;
        self.record_durable(seq)
    }

    /// The first half of [`Repo::sync`]: the disk sync. Once it returns,
    /// every snapshot committed before it survives a power cut (the next
    /// open recovers from the packs what the index does not hold yet).
    pub fn sync_packs(&self) -> Result<()> {
        self.store.sync()
    }

    /// The second half of [`Repo::sync`], after [`Repo::sync_packs`]: the
    /// waiting index rows written with `seq` as the durable point, without
    /// a disk sync.
    pub fn record_durable(&self, seq: u64) -> Result<()> {
        self.flushed(Some(seq)).map(drop)
    }

    fn locate(&self, kind: ObjectKind, r: &ObjRef) -> Result<Location> {
        let missing = || Error::MissingObject {
            id: r.id.to_hex(),
            kind: kind.name(),
            seq: 0,
        };
        if !READING_ERASED.get() && self.erased.read().expect("erased").contains(&r.id) {
            return Err(missing());
        }
        if let Some(o) = self.pending.lock().expect("pending").get(&r.id) {
            return Ok(o.loc);
        }
        match self.lookup(r)? {
            Some((_, loc)) => Ok(loc),
            None => Err(missing()),
        }
    }

    /// The index entry of `r`: through its home's row, or by id; for a
    /// committed snapshot whose rows wait for the flush, its entry there.
    fn lookup(&self, r: &ObjRef) -> Result<Option<(u8, Location)>> {
        if let Some(o) = self.unindexed_object(r) {
            return Ok(Some((o.kind as u8, o.loc)));
        }
        let index = self.index_as_flushed();
        if r.home == 0 {
            index.object(&r.id)
        } else {
            index.homed_object(r.home, &r.id)
        }
    }

    /// Whether the object `r` names can be read: a committed snapshot
    /// holds it here, or (a lazily restored data dir) the remote index
    /// names a place it is fetched from.
    pub fn has_or_fetchable(&self, r: &ObjRef) -> Result<bool> {
        Ok(self.has(r)? || self.lazy.get().is_some_and(|l| l.knows(&r.id)))
    }

    /// Whether a committed snapshot holds the object `r` names (not one
    /// that is only pending).
    pub fn has(&self, r: &ObjRef) -> Result<bool> {
        Ok(self.lookup(r)?.is_some())
    }

    /// The sealed bytes of an object, followed through pack rewrites
    /// ([`follow_moves`]).
    fn read_sealed(&self, kind: ObjectKind, r: &ObjRef) -> Result<Vec<u8>> {
        match follow_moves(|| self.locate(kind, r), |loc| self.store.read(loc)) {
            Err(Error::MissingObject { .. }) if self.lazy_for(r).is_some() => {
                let l = self.lazy_for(r).expect("lazy");
                l.find_home(r.home);
                l.fetch(&self.keys, kind, &r.id)
            }
            res => res.map(|(_, b)| b),
        }
    }

    /// The index entry of `r` and where it is stored, or a missing object.
    fn indexed(&self, r: &ObjRef) -> Result<(u8, Location)> {
        self.lookup(r)?.ok_or_else(|| Error::MissingObject {
            id: r.id.to_hex(),
            kind: "object",
            seq: 0,
        })
    }

    /// The index entry of `r` (kind, location) and the pack record header
    /// stored there, followed through pack rewrites as the object reads are.
    /// An object of a lazily restored data dir that the index lacks is
    /// fetched (`kind`: what the reference expects) and described as its
    /// record would be (pack `u32::MAX`).
    pub fn stored_header(
        &self,
        kind: ObjectKind,
        r: &ObjRef,
    ) -> Result<(u8, Location, (ObjectId, u8, u32))> {
        match follow_moves(|| self.indexed(r), |(_, loc)| self.store.read_header(loc)) {
            Err(Error::MissingObject { .. }) if self.lazy_for(r).is_some() => {
                let l = self.lazy_for(r).expect("lazy");
                l.find_home(r.home);
                let len = l.fetch(&self.keys, kind, &r.id)?.len() as u32;
                let loc = Location {
                    pack: u32::MAX,
                    offset: 0,
                    len,
                };
                Ok((kind as u8, loc, (r.id, kind as u8, len)))
            }
            res => res.map(|((kind, loc), h)| (kind, loc, h)),
        }
    }

    /// The sealed bytes stored for `r` as they are in the packs (not
    /// opened, whatever its kind), followed through pack rewrites.
    pub fn stored_object(&self, r: &ObjRef) -> Result<Vec<u8>> {
        follow_moves(|| self.indexed(r), |(_, loc)| self.store.read(loc)).map(|(_, b)| b)
    }

    /// Reads and opens an object (tag verified), bypassing the caches.
    pub fn open_raw(&self, kind: ObjectKind, r: &ObjRef) -> Result<Vec<u8>> {
        let sealed = self.read_sealed(kind, r)?;
        envelope::open_object(&self.keys, kind, &r.id, &sealed)
    }

    /// Erases `ids` from what this handle serves, at once: they are not
    /// read again (a missing object) and leave the caches. The set replaces
    /// the one before: an object that a later snapshot references again
    /// (the same bytes written again) is served again. The packs are
    /// rewritten apart ([`repack::remove_objects`]). Returns whether the
    /// set changed.
    pub fn erase(&self, ids: &HashSet<ObjectId>) -> bool {
        let mut erased = self.erased.write().expect("erased");
        for id in ids {
            self.chunks.remove(id);
            self.meta.remove(id);
            self.meta.remove(&whole_tree_key(id));
            self.meta.remove(&stored_key(id));
        }
        let changed = *erased != *ids;
        *erased = ids.clone();
        changed
    }

    /// Serves `ids` again: objects erased before that a snapshot fetched
    /// since references where no redaction allows them missing.
    pub fn unerase(&self, ids: &HashSet<ObjectId>) {
        let mut erased = self.erased.write().expect("erased");
        erased.retain(|id| !ids.contains(id));
    }

    /// Runs `f` with this thread's reads not refused for objects erased
    /// (those still stored: what decides which of them stay,
    /// `crate::history::redact::erasable`, must read them). The flag is
    /// the thread's, for every handle, while `f` runs; nothing read so is
    /// cached; other threads are refused as before.
    pub fn reading_erased<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                READING_ERASED.set(self.0);
            }
        }
        let _reset = Reset(READING_ERASED.replace(true));
        f()
    }

    /// Like [`Repo::open_raw`], and also re-derives the id from the plaintext.
    pub fn open_verified(&self, kind: ObjectKind, r: &ObjRef) -> Result<Vec<u8>> {
        self.open_verified_versioned(kind, r).map(|(p, _)| p)
    }

    /// Like [`Repo::open_verified`], and tells the key version that sealed it.
    pub fn open_verified_versioned(&self, kind: ObjectKind, r: &ObjRef) -> Result<(Vec<u8>, u32)> {
        let id = &r.id;
        let sealed = self.read_sealed(kind, r)?;
        let (plain, v) = envelope::open_object_versioned(&self.keys, kind, id, &sealed)?;
        if envelope::object_id_v(&self.keys, v, kind, &plain) != *id {
            return Err(Error::corrupt(
                format!("{} {}", kind.name(), id.to_hex()),
                "content does not hash to its id",
            ));
        }
        Ok((plain, v))
    }

    // The caches. Every object read is kept after it is verified and
    // decoded, but for whole chunks opened straight into a reply
    // (`read_chunk_into`); the writer keeps the chunks it seals from dirty
    // data too (write-through: the first read after a commit needs no
    // decryption), not those a write covered whole and sealed at once. Each entry is charged
    // what its value holds in memory (`weight`) plus the cache's own cost
    // per entry, so the budgets hold in real bytes.

    /// Keeps a chunk's plaintext, sealed as `id`, in the chunk cache.
    pub fn cache_chunk(&self, id: ObjectId, plaintext: Vec<u8>) -> Arc<Vec<u8>> {
        let c = Arc::new(plaintext);
        let size = weight::chunk(&c) + weight::CACHE_ENTRY;
        let erased = self.erased.read().expect("erased");
        if !erased.contains(&id) {
            self.chunks.insert(id, c.clone(), size);
        }
        c
    }

    /// Keeps inode page `id` in the metadata cache, as one sorted slice.
    pub fn cache_page(&self, id: ObjectId, records: BTreeMap<u64, Inode>) -> Arc<Page> {
        let p = Arc::new(Page::from(records));
        let size = weight::page(&p.0);
        self.keep(id, Meta::Page(p.clone()), size);
        p
    }

    /// Keeps directory node `id` in the metadata cache, its map rebuilt
    /// from the sorted entries (full nodes: the shape [`weight::entries`]
    /// bounds).
    pub fn cache_dir(&self, id: ObjectId, entries: Entries) -> Arc<Entries> {
        let e: Arc<Entries> = Arc::new(entries.into_iter().collect());
        let size = weight::entries(&e);
        self.keep(id, Meta::Dir(e.clone()), size);
        e
    }

    /// Keeps directory index node `id` in the metadata cache.
    pub fn cache_dir_index(&self, id: ObjectId, node: DirIndex) -> Arc<DirIndex> {
        let n = Arc::new(node);
        self.keep(id, Meta::DirIndex(n.clone()), weight::dir_index(&n));
        n
    }

    /// Keeps page-map node `id` in the metadata cache.
    pub fn cache_page_map(&self, id: ObjectId, node: PageMapNode) -> Arc<PageMapNode> {
        let n = Arc::new(node);
        self.keep(id, Meta::PageMap(n.clone()), weight::page_map(&n));
        n
    }

    /// Keeps chunk list `id` in the metadata cache.
    pub fn cache_chunk_list(&self, id: ObjectId, list: Vec<ChunkRef>) -> Arc<Vec<ChunkRef>> {
        let l = Arc::new(list);
        self.keep(id, Meta::List(l.clone()), weight::chunk_list(&l));
        l
    }

    /// Keeps the whole reference list of the chunk tree whose root is
    /// `root` in the metadata cache (what a read of the file needs at once).
    pub fn cache_chunk_tree(&self, root: ObjectId, list: Vec<ChunkRef>) -> Arc<Vec<ChunkRef>> {
        let l = Arc::new(list);
        self.keep_as(
            whole_tree_key(&root),
            &root,
            Meta::WholeTree(l.clone()),
            weight::chunk_list(&l),
        );
        l
    }

    /// The whole reference list of chunk tree `root`, if cached.
    pub fn cached_chunk_tree(&self, root: &ObjectId) -> Option<Arc<Vec<ChunkRef>>> {
        match self.meta.get(&whole_tree_key(root)).as_deref() {
            Some(Meta::WholeTree(l)) => Some(l.clone()),
            _ => None,
        }
    }

    fn keep(&self, id: ObjectId, meta: Meta, size: usize) {
        self.keep_as(id, &id, meta, size);
    }

    /// Caches `meta` under `key` unless object `id` is erased.
    fn keep_as(&self, key: ObjectId, id: &ObjectId, meta: Meta, size: usize) {
        let erased = self.erased.read().expect("erased");
        if !erased.contains(id) {
            self.meta
                .insert(key, Arc::new(meta), size + weight::CACHE_ENTRY);
        }
    }

    /// The bytes the metadata cache and the chunk cache charge now, each
    /// within its budget ([`META_CACHE_BYTES`], [`CHUNK_CACHE_BYTES`]).
    pub fn cache_bytes(&self) -> (usize, usize) {
        (self.meta.used(), self.chunks.used())
    }

    /// A file chunk's plaintext.
    pub fn chunk(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.chunks.get(id) {
            return Ok(c);
        }
        Ok(self.cache_chunk(*id, self.open_raw(ObjectKind::Chunk, &ObjRef::by_id(*id))?))
    }

    /// Bytes `[from, from + dst.len())` of chunk `id`'s plaintext, written
    /// into `dst`; bytes past the chunk's end are left as they are (zeros
    /// in a read's buffer). For a reader that will not ask again
    /// ([`Reuse::Once`]), a chunk of at least [`STREAM_CHUNK_MIN`] bytes
    /// that the chunk cache does not hold and that `dst` covers whole is
    /// opened straight into `dst` and not cached: the copy of the
    /// ciphertext and the copy out of the cache both go, and a streaming
    /// reader does not push what others cached out of the cache. Any other
    /// read goes through the cache, as [`Repo::chunk`].
    pub fn read_chunk_into(
        &self,
        id: &ObjectId,
        from: usize,
        dst: &mut [u8],
        reuse: Reuse,
    ) -> Result<()> {
        let data = match self.chunks.get(id) {
            Some(c) => c,
            None => {
                let sealed = self.read_sealed(ObjectKind::Chunk, &ObjRef::by_id(*id))?;
                let n = aead::plaintext_len(sealed.len()).unwrap_or(0);
                if reuse == Reuse::Once && from == 0 && n >= STREAM_CHUNK_MIN && dst.len() >= n {
                    envelope::open_object_into(
                        &self.keys,
                        ObjectKind::Chunk,
                        id,
                        &sealed,
                        &mut dst[..n],
                    )?;
                    return Ok(());
                }
                let plain = envelope::open_object(&self.keys, ObjectKind::Chunk, id, &sealed)?;
                self.cache_chunk(*id, plain)
            }
        };
        if from < data.len() {
            let n = (data.len() - from).min(dst.len());
            dst[..n].copy_from_slice(&data[from..from + n]);
        }
        Ok(())
    }

    /// Chunks `ids` of a lazily restored data dir that neither the chunk
    /// cache nor the packs hold, fetched from the remote together
    /// ([`lazy::Lazy::fetch_many`]: one ranged GET per run of neighbouring
    /// records), opened and cached, so that a read of many such chunks
    /// waits about one round trip rather than one per chunk. Nothing for
    /// another data dir, or fewer than two such chunks. The first failure
    /// is returned: the read needs every chunk it names.
    pub fn prefetch_chunks(&self, ids: &[ObjectId]) -> Result<()> {
        let Some(lazy) = self.lazy.get() else {
            return Ok(());
        };
        let mut want: Vec<ObjectId> = Vec::new();
        for id in ids {
            let r = ObjRef::by_id(*id);
            // Cheapest first: a chunk written here has no remote place, so
            // it costs no index lookup.
            if lazy.knows(id)
                && !want.contains(id)
                && self.chunks.get(id).is_none()
                && self.lazy_for(&r).is_some()
                && matches!(
                    self.locate(ObjectKind::Chunk, &r),
                    Err(Error::MissingObject { .. })
                )
            {
                want.push(*id);
            }
        }
        if want.len() < 2 {
            return Ok(());
        }
        for (id, sealed) in want
            .iter()
            .zip(lazy.fetch_many(&self.keys, ObjectKind::Chunk, &want))
        {
            let plain = envelope::open_object(&self.keys, ObjectKind::Chunk, id, &sealed?)?;
            self.cache_chunk(*id, plain);
        }
        Ok(())
    }

    /// Metadata objects `wanted` (kind and reference) of a lazily restored
    /// data dir, fetched from the remote together as
    /// [`Repo::prefetch_chunks`] fetches chunks (one ranged GET per run of
    /// neighbouring records, 16 runs in flight), each verified and kept
    /// sealed under `lazy/objects/`, so that reading them later waits for
    /// no round trip. Those the packs hold or a copy is kept of are left.
    /// Returns how many were fetched; one that fails is left (logged: a
    /// read fetches it when it needs it), and only when all fail is the
    /// first failure an error. At most [`PREFETCH_BATCH`] objects' bytes
    /// are held at once; `stop` ends it between batches.
    pub fn prefetch_metadata(
        &self,
        wanted: &[(ObjectKind, ObjRef)],
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<u64> {
        let Some(lazy) = self.lazy.get() else {
            return Ok(0);
        };
        let mut by_kind: BTreeMap<u8, (ObjectKind, Vec<ObjectId>)> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (kind, r) in wanted {
            if seen.insert(r.id) && self.remote_only(*kind, r) {
                lazy.find_home(r.home);
                by_kind
                    .entry(*kind as u8)
                    .or_insert((*kind, Vec::new()))
                    .1
                    .push(r.id);
            }
        }
        let (mut n, mut first_error) = (0, None);
        for (kind, ids) in by_kind.into_values() {
            for batch in ids.chunks(PREFETCH_BATCH) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                for res in lazy.fetch_ahead(&self.keys, kind, batch) {
                    match res {
                        Ok(_) => n += 1,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }

    /// Whether object `r` of `kind` is read from the remote: a lazily
    /// restored data dir's object that neither the packs nor a copy kept
    /// from an earlier fetch hold.
    pub(crate) fn remote_only(&self, kind: ObjectKind, r: &ObjRef) -> bool {
        self.lazy_for(r).is_some_and(|l| !l.is_kept(&r.id))
            && matches!(self.locate(kind, r), Err(Error::MissingObject { .. }))
    }

    /// Whether a read of object `r` of `kind` waits for the remote: a
    /// lazily restored data dir's object the metadata cache, the packs
    /// and the copies kept from earlier fetches all lack.
    pub(crate) fn waits_for_remote(&self, kind: ObjectKind, r: &ObjRef) -> bool {
        self.meta.get(&r.id).is_none() && self.remote_only(kind, r)
    }

    /// The deltas stored by snapshots `homes` (the newest
    /// [`CHAIN_AHEAD`] of them) that a lazily restored data dir would wait
    /// for, asked for together ([`lazy::Lazy::fetch_all_at_once`]) and
    /// decoded into the metadata cache, so that a walk down a chain (each
    /// delta names only the one before it) waits for a few rounds of
    /// requests instead of a round trip per delta (PERFORMANCE "Session
    /// 47"). First the part indexes of `homes` not here yet (a flat
    /// start's older history): a range's chain segment once, the snapshots
    /// of a range without one together. It stops at the first request
    /// the remote does not answer in time (the walk then waits as it
    /// would); an object that fails is left: the read that needs it
    /// fetches it again and reports what is wrong.
    pub(crate) fn fetch_deltas_ahead(&self, homes: std::ops::Range<u64>) {
        let Some(lazy) = self.lazy.get() else {
            return;
        };
        let homes = homes.start.max(homes.end.saturating_sub(CHAIN_AHEAD))..homes.end;
        let mut range = None;
        for home in homes.clone() {
            let first = segment::first_of(home);
            if range != Some(first) {
                range = Some(first);
                if !lazy.find_home(home) {
                    return;
                }
            }
        }
        if !lazy.find_homes(&homes.clone().collect::<Vec<_>>()) {
            return;
        }
        let ids: Vec<ObjectId> = lazy
            .placed(ObjectKind::Delta, homes)
            .into_iter()
            .filter(|&(id, home)| self.waits_for_remote(ObjectKind::Delta, &ObjRef { id, home }))
            .map(|(id, _)| id)
            .collect();
        for (id, sealed) in
            ids.iter()
                .zip(lazy.fetch_all_at_once(&self.keys, ObjectKind::Delta, &ids))
        {
            let decoded = sealed
                .and_then(|s| envelope::open_object(&self.keys, ObjectKind::Delta, id, &s))
                .and_then(|raw| Ok((tree::decode_delta(&raw)?, raw.len())));
            if let Ok((d, len)) = decoded {
                self.keep(*id, Meta::Delta(Arc::new(d)), weight::alloc(len) * 2);
            }
        }
    }

    /// Whether object `r` of `kind` is readable here without the remote:
    /// committed, or pending in the commit being sealed.
    pub fn is_here(&self, kind: ObjectKind, r: &ObjRef) -> bool {
        self.locate(kind, r).is_ok()
    }

    /// A decoded inode page, which must be page `page_no` (a page reached
    /// at another number is an integrity error, not a misread).
    pub fn page(&self, r: &ObjRef, inodes_per_page: u32, page_no: u64) -> Result<Arc<Page>> {
        let id = &r.id;
        let p = match self.meta.get(id).as_deref() {
            Some(Meta::Page(p)) => p.clone(),
            _ => {
                let raw = self.open_raw(ObjectKind::InodePage, r)?;
                self.cache_page(*id, tree::decode_page(&raw, inodes_per_page)?.1)
            }
        };
        // A stored page is never empty, and its records all belong to it.
        let first = p.keys().next();
        match first {
            Some(ino) if ino / u64::from(inodes_per_page) == page_no => Ok(p),
            _ => Err(Error::corrupt(
                format!("inode page {}", id.to_hex()),
                format!("not page {page_no}"),
            )),
        }
    }

    /// A decoded directory node.
    pub fn dir(&self, r: &ObjRef) -> Result<Arc<Entries>> {
        if let Some(Meta::Dir(v)) = self.meta.get(&r.id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::DirNode, r)?;
        Ok(self.cache_dir(r.id, tree::decode_dir(&raw)?))
    }

    /// A decoded directory index node.
    pub fn dir_index(&self, r: &ObjRef) -> Result<Arc<DirIndex>> {
        if let Some(Meta::DirIndex(v)) = self.meta.get(&r.id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::DirIndex, r)?;
        Ok(self.cache_dir_index(r.id, tree::decode_dir_index(&raw)?))
    }

    /// A decoded page-map node.
    pub fn page_map(&self, r: &ObjRef) -> Result<Arc<PageMapNode>> {
        if let Some(Meta::PageMap(v)) = self.meta.get(&r.id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::PageMap, r)?;
        Ok(self.cache_page_map(r.id, tree::decode_page_map(&raw)?))
    }

    /// A decoded delta (tree format 8).
    pub fn delta(&self, r: &ObjRef) -> Result<Arc<tree::Delta>> {
        if let Some(Meta::Delta(v)) = self.meta.get(&r.id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::Delta, r)?;
        let d = Arc::new(tree::decode_delta(&raw)?);
        self.keep(r.id, Meta::Delta(d.clone()), weight::alloc(raw.len()) * 2);
        Ok(d)
    }

    /// A decoded chunk-index node (tree format 7).
    pub fn chunk_index(&self, id: &ObjectId) -> Result<Arc<ChunkIndexNode>> {
        if let Some(Meta::ChunkIndex(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::ChunkIndex, &ObjRef::by_id(*id))?;
        let n = Arc::new(tree::decode_chunk_index(&raw)?);
        self.keep(*id, Meta::ChunkIndex(n.clone()), weight::chunk_index(&n));
        Ok(n)
    }

    /// A decoded chunk list.
    pub fn chunk_list(&self, id: &ObjectId) -> Result<Arc<Vec<ChunkRef>>> {
        if let Some(Meta::List(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::ChunkList, &ObjRef::by_id(*id))?;
        Ok(self.cache_chunk_list(*id, tree::decode_chunk_list(&raw)?))
    }

    /// Chunk list `id`, from the cache or read without being kept there
    /// (a walk over more lists than the cache holds must not push out
    /// everything else).
    pub fn chunk_list_passing(&self, id: &ObjectId) -> Result<Arc<Vec<ChunkRef>>> {
        if let Some(Meta::List(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::ChunkList, &ObjRef::by_id(*id))?;
        Ok(Arc::new(tree::decode_chunk_list(&raw)?))
    }

    /// Caches what [`chunktree::stored`] counted of chunk tree `root`: its
    /// stored references, and whether its last one is stored.
    pub fn cache_stored_count(&self, root: ObjectId, count: u64, last: bool) {
        self.keep_as(stored_key(&root), &root, Meta::Stored(count, last), 16);
    }

    /// The count [`Repo::cache_stored_count`] kept for `root`, if cached.
    pub fn cached_stored_count(&self, root: &ObjectId) -> Option<(u64, bool)> {
        match self.meta.get(&stored_key(root)).as_deref() {
            Some(Meta::Stored(c, l)) => Some((*c, *l)),
            _ => None,
        }
    }
}

thread_local! {
    /// Set while [`Repo::reading_erased`] runs on this thread.
    static READING_ERASED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The metadata cache's key for the whole list of the chunk tree whose
/// root is `root` (the root node itself is cached under its id): the id
/// with its first byte inverted. Ids are keyed hashes, so no stored object
/// has it.
fn whole_tree_key(root: &ObjectId) -> ObjectId {
    let mut k = *root;
    k.0[0] ^= 0xff;
    k
}

/// Where a chunk tree's count of stored references is cached: its root's
/// id with the first byte changed otherwise than [`whole_tree_key`]'s.
fn stored_key(root: &ObjectId) -> ObjectId {
    let mut k = *root;
    k.0[0] ^= 0x5a;
    k
}

impl Drop for Repo {
    /// Writes the rows of snapshots still waiting (a writer that ends
    /// without a barrier, such as a restore; the engine flushes before it
    /// lets go of the agent's lock). Unwinding, or failing, it leaves them
    /// to the next open's recovery from the packs.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.flush_at_end();
        }
    }
}

/// Writes the index rows of the snapshots in `u`, with `durable` as the
/// durable point when given, in one transaction; on success `u` is empty.
/// Nothing to write and no durable point: no transaction.
fn flush_into(index: &mut Index, u: &mut Unindexed, durable: Option<u64>) -> Result<()> {
    if u.commits.is_empty() && durable.is_none() {
        return Ok(());
    }
    let batch: Vec<_> = u
        .commits
        .iter()
        .map(|c| index::SnapshotRows {
            objects: &c.objects,
            packs: &c.packs,
            env: &c.env,
        })
        .collect();
    index.commit_batch(&batch, durable)?;
    u.commits.clear();
    u.objects.clear();
    Ok(())
}

/// The deltas of a chain `Repo::fetch_deltas_ahead` asks for at most
/// (the newest; the walk fetches older ones one by one): 16 times the
/// default fold's chain, a few MiB of the metadata cache's 64.
pub const CHAIN_AHEAD: u64 = 4096;

/// Objects [`Repo::prefetch_metadata`] fetches in one go (inode pages of
/// 16 inodes and directory nodes: typically a few MiB; more when inodes
/// carry large extended attributes).
pub const PREFETCH_BATCH: usize = 512;

/// How many pack rewrites a read follows an object through before it gives
/// up (each move is a whole pack rewrite, so more means a store rewritten
/// in a loop).
const MAX_MOVES: usize = 8;

/// Reads with `read` at the place `locate` gives. A pack rewritten
/// meanwhile (a prune, or an erasure while this handle serves) moves the
/// object or removes it, so a read that fails is retried at the new place,
/// as long as it keeps moving; one that fails where the object still is
/// fails. Gives the place read and what was read there.
fn follow_moves<L: PartialEq, T>(
    locate: impl Fn() -> Result<L>,
    read: impl Fn(&L) -> Result<T>,
) -> Result<(L, T)> {
    let mut at = locate()?;
    let mut moves = 0;
    loop {
        match read(&at) {
            Ok(v) => return Ok((at, v)),
            Err(e) => match locate()? {
                moved if moved != at && moves < MAX_MOVES => {
                    at = moved;
                    moves += 1;
                }
                _ => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_read_follows_an_object_that_moves_and_fails_where_it_stays() {
        // Moved once: the read at the old place fails, the new one serves.
        let place = Cell::new(0u32);
        let got = follow_moves(
            || Ok(place.get()),
            |&at| {
                if at == 0 {
                    place.set(1);
                    Err(Error::NoSuchSnapshot(0))
                } else {
                    Ok(at * 10)
                }
            },
        );
        assert_eq!(got.unwrap(), (1, 10));
        // Still where it was: the read's own error, no retry.
        let tries = Cell::new(0);
        let got = follow_moves(
            || Ok(7u32),
            |_| -> Result<()> {
                tries.set(tries.get() + 1);
                Err(Error::NoSuchSnapshot(7))
            },
        );
        assert!(matches!(got, Err(Error::NoSuchSnapshot(7))));
        assert_eq!(tries.get(), 1);
        // Moving every time: gives up after MAX_MOVES moves.
        let place = Cell::new(0u32);
        let got = follow_moves(
            || {
                place.set(place.get() + 1);
                Ok(place.get())
            },
            |&at| -> Result<()> { Err(Error::NoSuchSnapshot(at as u64)) },
        );
        assert!(got.is_err());
        assert_eq!(place.get() as usize, MAX_MOVES + 2);
    }
}
