//! The caches hold to their budgets in real bytes (#18): every decoded
//! object a cache keeps is charged at least the memory it holds, so the
//! configured budgets bound the daemon's memory however much history is
//! browsed. A counting allocator (each allocation counted as glibc's
//! malloc spends it) measures what reading a snapshot leaves allocated;
//! the caches' charge must cover it, and not overstate it threefold
//! either (a cache that charges too much holds too little).
//!
//! One test in this binary: the allocator counts every thread.
#![allow(unsafe_code)] // the counting allocator below, and nothing else

mod support;
use sovseal::engine::XattrFlags;
use sovseal::repo::agent::Agent;
use sovseal::seal::tree::{CHUNK_SIZE, MAX_INLINE_CHUNKS, ROOT_INO};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// What malloc spends on an allocation of `size` bytes.
fn cost(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

// SAFETY: every call is passed to the system allocator unchanged; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(cost(l.size()), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(cost(l.size()), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(cost(l.size()), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(cost(new) - cost(l.size()), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What SQLite may add while the walk looks objects up in the index (its
/// page cache, 2 MB by default, and prepared statements).
const SQLITE_SLACK: isize = 3 << 20;

/// A tree of every shape the caches hold: small files (inline chunk
/// references), a file with a chunk list, extended attributes, symlinks,
/// one directory large enough to split under index nodes and many small
/// ones; then a walk of all of it through a snapshot view, as browsing
/// `.snapshots/` does.
#[test]
fn what_the_caches_hold_is_what_they_charge() {
    let env = support::home::Env::new();
    let mut e = env.open();
    let big = e.mkdir(ROOT_INO, b"notes", 0o755, 0, 0).unwrap().ino;
    let mut files = Vec::new();
    for k in 0..12_000u64 {
        let name = format!("note-{k:06}-{}.md", "x".repeat((k % 23) as usize));
        let f = e.create(big, name.as_bytes(), 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, &support::home::bytes(k, 1 + (k as usize * 37) % 300))
            .unwrap();
        if k % 3 == 0 {
            let flags = XattrFlags::default();
            e.setxattr(f, b"user.tag", format!("tag {k}").as_bytes(), flags)
                .unwrap();
        }
        files.push((big, name));
    }
    for d in 0..40u64 {
        let dir = e
            .mkdir(ROOT_INO, format!("d{d:02}").as_bytes(), 0o755, 0, 0)
            .unwrap()
            .ino;
        for k in 0..50u64 {
            let name = format!("f{k:02}");
            let f = e.create(dir, name.as_bytes(), 0o644, 0, 0).unwrap().ino;
            e.write(f, 0, &support::home::bytes(d * 100 + k, 64))
                .unwrap();
            files.push((dir, name));
        }
        e.symlink(dir, b"up", b"../notes", 0, 0).unwrap();
    }
    let long = e.create(ROOT_INO, b"long", 0o644, 0, 0).unwrap().ino;
    let chunks = MAX_INLINE_CHUNKS as u64 + 3;
    e.write(
        long,
        0,
        &support::home::bytes(7, (chunks * u64::from(CHUNK_SIZE)) as usize),
    )
    .unwrap();
    e.commit().unwrap();
    drop(e);

    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    let v = a.head().unwrap();
    // Warm what is not a cache: the index connection's statements.
    v.getattr(ROOT_INO).unwrap();
    let (meta0, chunks0) = a.cache_bytes();
    let live0 = LIVE.load(Ordering::Relaxed);
    let mut read = 0usize;
    for (dir, name) in &files {
        let ent = v.lookup(*dir, name.as_bytes()).unwrap().unwrap();
        let i = v.getattr(ent.ino).unwrap();
        read += v.read(ent.ino, 0, i.size as usize).unwrap().len();
        v.inode(ent.ino).unwrap();
    }
    for d in 0..40u64 {
        let dir = v
            .lookup(ROOT_INO, format!("d{d:02}").as_bytes())
            .unwrap()
            .unwrap();
        let up = v.lookup(dir.ino, b"up").unwrap().unwrap();
        assert_eq!(v.readlink(up.ino).unwrap(), b"../notes");
        assert_eq!(v.entries(dir.ino).unwrap().len(), 51);
    }
    // Each chunk but its first byte: a read that covers a chunk whole
    // opens it past the chunk cache, and this walk is to fill the caches.
    let c = u64::from(CHUNK_SIZE);
    for k in 0..chunks {
        read += v.read(long, k * c + 1, (c - 1) as usize).unwrap().len();
    }
    assert!(read > 1 << 20);
    let held = LIVE.load(Ordering::Relaxed) - live0;
    let (meta1, chunks1) = a.cache_bytes();
    let charged = (meta1 - meta0 + chunks1 - chunks0) as isize;
    eprintln!(
        "held {held} bytes, charged {charged} (metadata {}, chunks {})",
        meta1 - meta0,
        chunks1 - chunks0
    );
    assert!(
        charged > 8 << 20,
        "the walk fills the caches well past the slack: {charged}"
    );
    assert!(
        held <= charged + SQLITE_SLACK,
        "the caches hold {held} bytes but charge {charged}: their budgets do not bound memory"
    );
    assert!(
        charged <= 3 * held,
        "the caches charge {charged} bytes for {held} held: they keep far less than their budgets allow"
    );
}
