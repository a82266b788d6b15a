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
//! - [`pack`]: the pack record format, one encoder and one decoder.
//! - [`repack`]: packs rewritten without some objects (prune, redaction).
//! - [`replication_state`]: what the index records about replication.
//! - [`remote`]: the storage driver seam (seed 000) over `object_store`.
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

pub mod agent;
pub mod dirtree;
pub mod index;
pub mod journal;
pub mod pack;
pub mod pagemap;
pub mod postgres;
pub mod remote;
pub mod repack;
pub mod replication_state;
pub mod store;
pub mod view;

use crate::cache::Lru;
use crate::repo::index::{Index, NewObject};
use crate::repo::store::{Location, Store};
use crate::seal::envelope::{self, Envelope};
use crate::seal::keys::AgentKeys;
use crate::seal::tree::{
    self, ChunkRef, DirIndex, Entries, Inode, ObjectId, ObjectKind, PageMapNode,
};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Byte budget of the metadata cache (pages, directories, chunk lists).
pub const META_CACHE_BYTES: usize = 64 << 20;
/// Byte budget of the decrypted chunk cache.
pub const CHUNK_CACHE_BYTES: usize = 64 << 20;

/// A decoded, verified inode page.
pub type Page = BTreeMap<u64, Inode>;

enum Meta {
    Page(Arc<Page>),
    Dir(Arc<Entries>),
    DirIndex(Arc<DirIndex>),
    PageMap(Arc<PageMapNode>),
    List(Arc<Vec<ChunkRef>>),
}

/// The local repository of one agent.
pub struct Repo {
    keys: AgentKeys,
    store: Store,
    index: Mutex<Index>,
    pending: Mutex<HashMap<ObjectId, NewObject>>,
    meta: Lru<ObjectId, Meta>,
    chunks: Lru<ObjectId, Vec<u8>>,
    sealed_bytes: std::sync::atomic::AtomicU64,
}

impl Repo {
    /// Joins the parts.
    pub fn new(keys: AgentKeys, store: Store, index: Index) -> Self {
        Repo {
            keys,
            store,
            index: Mutex::new(index),
            pending: Mutex::new(HashMap::new()),
            meta: Lru::new(META_CACHE_BYTES),
            chunks: Lru::new(CHUNK_CACHE_BYTES),
            sealed_bytes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The agent's keys.
    pub fn keys(&self) -> &AgentKeys {
        &self.keys
    }

    /// The index (locked).
    pub fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().expect("index lock")
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

    /// Names, seals and appends an object unless one with the same id exists.
    pub fn put(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<ObjectId> {
        let id = envelope::object_id(&self.keys, kind, plaintext);
        if self.pending.lock().expect("pending").contains_key(&id) {
            return Ok(id);
        }
        if self.index().object(&id)?.is_some() {
            return Ok(id);
        }
        let sealed = envelope::seal_object(&self.keys, kind, &id, plaintext);
        let loc = self.store.append(&id, kind, &sealed)?;
        self.count_sealed(sealed.len());
        self.pending
            .lock()
            .expect("pending")
            .insert(id, NewObject { id, kind, loc });
        Ok(id)
    }

    /// Adds an already sealed object (from a remote pack), after checking
    /// that it opens under its id and hashes to it. Nothing unverified is
    /// stored.
    pub fn put_sealed(&self, kind: ObjectKind, id: &ObjectId, sealed: &[u8]) -> Result<()> {
        let (plain, v) = envelope::open_object_versioned(&self.keys, kind, id, sealed)?;
        if envelope::object_id_v(&self.keys, v, kind, &plain) != *id {
            return Err(Error::corrupt(
                format!("{} {}", kind.name(), id.to_hex()),
                "content does not hash to its id",
            ));
        }
        if self.pending.lock().expect("pending").contains_key(id)
            || self.index().object(id)?.is_some()
        {
            return Ok(());
        }
        let loc = self.store.append(id, kind, sealed)?;
        self.count_sealed(sealed.len());
        self.pending
            .lock()
            .expect("pending")
            .insert(*id, NewObject { id: *id, kind, loc });
        Ok(())
    }

    /// Commits the pending objects with `env`: appends the snapshot's
    /// commit record after them, then records all of it in one index
    /// transaction. Not synced: the commit survives a crash of this process
    /// (the page cache keeps the packs and the WAL) and becomes durable
    /// against a power cut at the next [`Repo::sync`].
    pub fn commit(&self, env: &Envelope) -> Result<()> {
        let objects: Vec<NewObject> = self
            .pending
            .lock()
            .expect("pending")
            .values()
            .copied()
            .collect();
        self.store.append_commit(env)?;
        let packs = self.store.lengths();
        self.index().commit(&objects, &packs, env)?;
        self.store.mark_committed(&packs);
        let mut p = self.pending.lock().expect("pending");
        for o in &objects {
            p.remove(&o.id);
        }
        Ok(())
    }

    /// The power-loss barrier: one `fdatasync` of the pack being appended
    /// to (two when it filled up meanwhile), shared by every commit made
    /// since the last barrier. The packs are the commit record (each
    /// snapshot's envelope follows its objects), so the index need not
    /// sync: `seq` is recorded as durable without waiting for the disk, and
    /// recovery after a power cut rebuilds from the packs whatever index
    /// rows were lost.
    pub fn sync(&self, seq: u64) -> Result<()> {
        self.store.sync()?;
        self.index().mark_durable_lazy(seq)
    }

    fn locate(&self, kind: ObjectKind, id: &ObjectId) -> Result<Location> {
        if let Some(o) = self.pending.lock().expect("pending").get(id) {
            return Ok(o.loc);
        }
        match self.index().object(id)? {
            Some((_, loc)) => Ok(loc),
            None => Err(Error::MissingObject {
                id: id.to_hex(),
                kind: kind.name(),
                seq: 0,
            }),
        }
    }

    /// Reads and opens an object (tag verified), bypassing the caches.
    pub fn open_raw(&self, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
        let loc = self.locate(kind, id)?;
        let sealed = self.store.read(&loc)?;
        envelope::open_object(&self.keys, kind, id, &sealed)
    }

    /// Like [`Repo::open_raw`], and also re-derives the id from the plaintext.
    pub fn open_verified(&self, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
        self.open_verified_versioned(kind, id).map(|(p, _)| p)
    }

    /// Like [`Repo::open_verified`], and tells the key version that sealed it.
    pub fn open_verified_versioned(
        &self,
        kind: ObjectKind,
        id: &ObjectId,
    ) -> Result<(Vec<u8>, u32)> {
        let loc = self.locate(kind, id)?;
        let sealed = self.store.read(&loc)?;
        let (plain, v) = envelope::open_object_versioned(&self.keys, kind, id, &sealed)?;
        if envelope::object_id_v(&self.keys, v, kind, &plain) != *id {
            return Err(Error::corrupt(
                format!("{} {}", kind.name(), id.to_hex()),
                "content does not hash to its id",
            ));
        }
        Ok((plain, v))
    }

    /// Keeps a chunk just sealed as `id` in the read cache (write-through:
    /// the next read-modify-write of it needs no decryption).
    pub fn cache_chunk(&self, id: ObjectId, plaintext: Vec<u8>) {
        let size = plaintext.len() + 64;
        self.chunks.insert(id, Arc::new(plaintext), size);
    }

    /// Keeps an inode page just sealed as `id` in the metadata cache
    /// (write-through, as [`Repo::cache_chunk`]: the first lookup after a
    /// commit needs no decryption). `encoded` is its plaintext length.
    pub fn cache_page(&self, id: ObjectId, page: Page, encoded: usize) {
        self.keep(id, Meta::Page(Arc::new(page)), encoded * 2);
    }

    /// Keeps a directory node just sealed as `id` in the metadata cache.
    pub fn cache_dir(&self, id: ObjectId, entries: Entries, encoded: usize) {
        self.keep(id, Meta::Dir(Arc::new(entries)), encoded * 3);
    }

    /// Keeps a directory index node just sealed as `id` in the metadata
    /// cache.
    pub fn cache_dir_index(&self, id: ObjectId, node: DirIndex, encoded: usize) {
        self.keep(id, Meta::DirIndex(Arc::new(node)), encoded * 2);
    }

    /// Keeps a page-map node just sealed as `id` in the metadata cache.
    pub fn cache_page_map(&self, id: ObjectId, node: PageMapNode, encoded: usize) {
        self.keep(id, Meta::PageMap(Arc::new(node)), encoded * 2);
    }

    /// Keeps a chunk list just sealed as `id` in the metadata cache.
    pub fn cache_chunk_list(&self, id: ObjectId, list: Vec<ChunkRef>, encoded: usize) {
        self.keep(id, Meta::List(Arc::new(list)), encoded * 2);
    }

    /// One metadata cache entry, weighed at `bytes` plus a fixed overhead.
    fn keep(&self, id: ObjectId, meta: Meta, bytes: usize) {
        self.meta.insert(id, Arc::new(meta), bytes + 256);
    }

    /// A file chunk's plaintext.
    pub fn chunk(&self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.chunks.get(id) {
            return Ok(c);
        }
        let c = Arc::new(self.open_raw(ObjectKind::Chunk, id)?);
        self.chunks.insert(*id, c.clone(), c.len() + 64);
        Ok(c)
    }

    /// A decoded inode page, which must be page `page_no` (a page reached
    /// at another number is an integrity error, not a misread).
    pub fn page(&self, id: &ObjectId, inodes_per_page: u32, page_no: u64) -> Result<Arc<Page>> {
        let p = match self.meta.get(id).as_deref() {
            Some(Meta::Page(p)) => p.clone(),
            _ => {
                let raw = self.open_raw(ObjectKind::InodePage, id)?;
                let p = Arc::new(tree::decode_page(&raw, inodes_per_page)?.1);
                self.keep(*id, Meta::Page(p.clone()), raw.len() * 2);
                p
            }
        };
        // A stored page is never empty, and its records all belong to it.
        match p.keys().next() {
            Some(ino) if ino / u64::from(inodes_per_page) == page_no => Ok(p),
            _ => Err(Error::corrupt(
                format!("inode page {}", id.to_hex()),
                format!("not page {page_no}"),
            )),
        }
    }

    /// A decoded directory node.
    pub fn dir(&self, id: &ObjectId) -> Result<Arc<Entries>> {
        if let Some(Meta::Dir(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::DirNode, id)?;
        let v = Arc::new(tree::decode_dir(&raw)?);
        self.keep(*id, Meta::Dir(v.clone()), raw.len() * 3);
        Ok(v)
    }

    /// A decoded directory index node.
    pub fn dir_index(&self, id: &ObjectId) -> Result<Arc<DirIndex>> {
        if let Some(Meta::DirIndex(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::DirIndex, id)?;
        let v = Arc::new(tree::decode_dir_index(&raw)?);
        self.keep(*id, Meta::DirIndex(v.clone()), raw.len() * 2);
        Ok(v)
    }

    /// A decoded page-map node.
    pub fn page_map(&self, id: &ObjectId) -> Result<Arc<PageMapNode>> {
        if let Some(Meta::PageMap(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::PageMap, id)?;
        let v = Arc::new(tree::decode_page_map(&raw)?);
        self.keep(*id, Meta::PageMap(v.clone()), raw.len() * 2);
        Ok(v)
    }

    /// A decoded chunk list.
    pub fn chunk_list(&self, id: &ObjectId) -> Result<Arc<Vec<ChunkRef>>> {
        if let Some(Meta::List(v)) = self.meta.get(id).as_deref() {
            return Ok(v.clone());
        }
        let raw = self.open_raw(ObjectKind::ChunkList, id)?;
        let v = Arc::new(tree::decode_chunk_list(&raw)?);
        self.keep(*id, Meta::List(v.clone()), raw.len() * 2);
        Ok(v)
    }
}
