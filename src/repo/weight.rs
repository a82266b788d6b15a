//! What a decoded object holds in memory, so that the caches hold to their
//! byte budgets in real bytes, not in encoded ones.
//!
//! A decoded object costs far more than its encoding: an inode page of
//! 60-byte records becomes 136-byte structs, a directory entry's name its
//! own allocation, a map its nodes. Each function here is an upper bound
//! of the heap a value holds as glibc's malloc spends it (8 bytes of
//! header, 16-byte steps, 32 bytes at least), for the shapes the
//! repository builds: pages as one sorted slice, directory maps built from
//! sorted input (full nodes). `tests/memory_bounds.rs` counts the real
//! allocations under a counting allocator and fails when a bound is short.

use crate::seal::tree::{
    ChunkIndexNode, ChunkRef, Chunks, Content, DirIndex, Entries, Inode, PageMapNode,
};
use std::mem::size_of;

/// What the cache spends per entry besides the value, at worst: its hash
/// map slot (57 bytes, with as few as 7 in 16 slots used just after the
/// map grew: 130), its place in the recency order (40 bytes, nodes at
/// least 5 of 11 full: 88), and the two `Arc` allocations around the
/// value (96).
pub const CACHE_ENTRY: usize = 320;

/// A heap allocation of `n` bytes as malloc spends it.
pub fn alloc(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

/// The buffer of a vector.
pub fn vec<T>(v: &Vec<T>) -> usize {
    alloc(v.capacity() * size_of::<T>())
}

/// Entries per node of the standard library's B-tree.
const CAPACITY: usize = 11;
/// Entries a node other than the root holds at least.
const MIN_LEN: usize = 5;

/// The nodes of a `BTreeMap<K, V>` with `leaves` leaves, each internal
/// node holding at least `fanout` children (the root aside).
fn btree_nodes<K, V>(leaves: usize, fanout: usize) -> usize {
    let leaf = 16 + CAPACITY * (size_of::<K>() + size_of::<V>());
    let internal = leaf + (CAPACITY + 1) * size_of::<usize>();
    let (mut level, mut internals) = (leaves, 0);
    while level > 1 {
        level = level.div_ceil(fanout);
        internals += level;
    }
    leaves * alloc(leaf) + internals * alloc(internal)
}

/// A `BTreeMap` of `len` entries after any history of inserts and removes:
/// every node but the root holds at least `MIN_LEN` entries (so fewer than
/// `2 * MIN_LEN` fit in the root alone).
fn btree_any<K, V>(len: usize) -> usize {
    match len {
        0 => 0,
        n if n < 2 * MIN_LEN => btree_nodes::<K, V>(1, MIN_LEN + 1),
        n => btree_nodes::<K, V>(n / MIN_LEN, MIN_LEN + 1),
    }
}

/// A `BTreeMap` of `len` entries built from sorted input (`collect`):
/// full nodes, the last of each level at least half full.
fn btree_sorted<K, V>(len: usize) -> usize {
    match len {
        0 => 0,
        n => btree_nodes::<K, V>(n.div_ceil(CAPACITY), CAPACITY + 1),
    }
}

/// What an inode record holds beyond its struct.
fn inode_heap(i: &Inode) -> usize {
    let xattrs = btree_any::<Vec<u8>, Vec<u8>>(i.xattrs.len())
        + i.xattrs.iter().map(|(k, v)| vec(k) + vec(v)).sum::<usize>();
    let content = match &i.content {
        Content::File(Chunks::Inline(refs)) => vec(refs),
        Content::Symlink(target) => vec(target),
        Content::File(Chunks::List { .. } | Chunks::Tree { .. })
        | Content::Dir(_)
        | Content::Special(..) => 0,
    };
    xattrs + content
}

/// An inode page held as one slice of records.
pub fn page(records: &[Inode]) -> usize {
    alloc(std::mem::size_of_val(records)) + records.iter().map(inode_heap).sum::<usize>()
}

/// A directory node's entries, in a map built from sorted input (the
/// repository builds every cached one so).
pub fn entries(e: &Entries) -> usize {
    alloc(size_of::<Entries>())
        + btree_sorted::<Vec<u8>, crate::seal::tree::DirEntry>(e.len())
        + e.keys().map(vec).sum::<usize>()
}

/// A directory index node.
pub fn dir_index(_: &DirIndex) -> usize {
    alloc(size_of::<DirIndex>())
}

/// A page-map node.
pub fn page_map(_: &PageMapNode) -> usize {
    alloc(size_of::<PageMapNode>())
}

/// A chunk list.
pub fn chunk_list(refs: &Vec<ChunkRef>) -> usize {
    alloc(size_of::<Vec<ChunkRef>>()) + vec(refs)
}

/// A chunk-index node.
pub fn chunk_index(n: &ChunkIndexNode) -> usize {
    alloc(size_of::<ChunkIndexNode>()) + vec(&n.children)
}

/// A chunk's plaintext.
pub fn chunk(plain: &Vec<u8>) -> usize {
    alloc(size_of::<Vec<u8>>()) + vec(plain)
}
