//! The read-only `.snapshots/` tree: names, inode numbers, cached views.
//!
//! `.snapshots/` lists one directory per retained snapshot, named by its
//! zero-padded sequence number so that `ls` sorts them in order, plus a
//! `latest` symlink to the head. Listing pages through the index and decrypts
//! nothing; a snapshot's manifest is opened (and verified) on first access.
//! Inode numbers above every live one: a snapshot's root directory has
//! one computed from its sequence number (listing `.snapshots/` allocates
//! nothing, however many snapshots there are); nodes inside snapshots get
//! theirs from a table, keyed by (sequence, inode), that holds only what
//! the kernel references (`Fs::forget`, and a sweep).

use crate::repo::agent::Agent;
use crate::repo::view::SnapshotView;
use crate::seal::tree::ROOT_INO;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Inode number of `.snapshots` itself.
pub const DIR_INO: u64 = 0x7fff_ffff_ffff_fff0;
/// Inode number of `.snapshots/latest`.
pub const LATEST_INO: u64 = DIR_INO + 1;
/// Inode number of snapshot 0's root directory (no such snapshot: seq `s`
/// has `FIRST_ROOT_INO + s`).
const FIRST_ROOT_INO: u64 = 1 << 63;
/// First inode number handed to other nodes inside snapshots.
const FIRST_NODE_INO: u64 = FIRST_ROOT_INO + (1 << 62);
/// Snapshot views kept open.
const VIEW_CACHE: usize = 64;

/// The name of `.snapshots` at the mount root.
pub const NAME: &[u8] = b".snapshots";
/// The name of the head link.
pub const LATEST: &[u8] = b"latest";

/// The directory name of snapshot `seq`.
pub fn dir_name(seq: u64) -> String {
    format!("{seq:010}")
}

/// The sequence number a directory name stands for.
pub fn parse_name(name: &[u8]) -> Option<u64> {
    if name.len() != 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

#[derive(Default)]
struct Table {
    by_node: HashMap<(u64, u64), u64>,
    by_ino: HashMap<u64, (u64, u64)>,
    next: u64,
}

impl Table {
    /// Shrinks both maps once mostly empty.
    fn shrink(&mut self) {
        crate::sys::shrink_sparse(&mut self.by_node);
        crate::sys::shrink_sparse(&mut self.by_ino);
    }
}

/// State of the `.snapshots` tree.
pub struct Snapshots {
    agent: Arc<Agent>,
    table: Mutex<Table>,
    views: Mutex<HashMap<u64, Arc<SnapshotView>>>,
    /// Requests waiting for the older history ([`Snapshots::wait_older`]),
    /// and how many may.
    waiting: AtomicUsize,
    waiters: usize,
}

impl Snapshots {
    /// Over an agent's history; `waiters` requests may wait for a flat
    /// start's older history at once.
    pub fn new(agent: Arc<Agent>, waiters: usize) -> Self {
        Snapshots {
            agent,
            table: Mutex::new(Table {
                next: FIRST_NODE_INO,
                ..Table::default()
            }),
            views: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            waiters,
        }
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The inode number of node `ino` of snapshot `seq`.
    pub fn ino_for(&self, seq: u64, ino: u64) -> u64 {
        if ino == ROOT_INO && seq < FIRST_NODE_INO - FIRST_ROOT_INO {
            return FIRST_ROOT_INO + seq;
        }
        let mut t = self.table.lock().expect("snapshot inodes");
        if let Some(i) = t.by_node.get(&(seq, ino)) {
            return *i;
        }
        let i = t.next;
        t.next += 1;
        t.by_node.insert((seq, ino), i);
        t.by_ino.insert(i, (seq, ino));
        i
    }

    /// Drops inode number `fuse_ino` from the table (the kernel forgot it).
    pub fn release(&self, fuse_ino: u64) {
        let mut t = self.table.lock().expect("snapshot inodes");
        if let Some(node) = t.by_ino.remove(&fuse_ino) {
            t.by_node.remove(&node);
        }
        t.shrink();
    }

    /// Keeps only the inode numbers `keep` says to keep.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        let mut t = self.table.lock().expect("snapshot inodes");
        t.by_ino.retain(|ino, _| keep(*ino));
        let Table {
            by_ino, by_node, ..
        } = &mut *t;
        by_node.retain(|_, ino| by_ino.contains_key(ino));
        t.shrink();
    }

    /// How many inode numbers the table holds.
    pub fn table_len(&self) -> usize {
        self.table.lock().expect("snapshot inodes").by_ino.len()
    }

    /// The (sequence, inode) an inode number stands for.
    pub fn node(&self, fuse_ino: u64) -> Option<(u64, u64)> {
        if (FIRST_ROOT_INO..FIRST_NODE_INO).contains(&fuse_ino) {
            return Some((fuse_ino - FIRST_ROOT_INO, ROOT_INO));
        }
        self.table
            .lock()
            .expect("snapshot inodes")
            .by_ino
            .get(&fuse_ino)
            .copied()
    }

    /// True for inode numbers of the `.snapshots` tree.
    pub fn owns(ino: u64) -> bool {
        ino >= DIR_INO
    }

    /// While a flat start's older history is coming
    /// ([`crate::history::older`]), waits until snapshot `seq` is in
    /// (`None`: all of it), as long as batches keep coming (up to the fetch
    /// timeout without one), as a read of content stored before the flat
    /// start waits for its part index: so `.snapshots/` lists the whole
    /// history, and an older snapshot's name is found, once fetched, not
    /// missing meanwhile. No wait (and no index read) unless the older
    /// history is being fetched here; none for a snapshot already in, nor
    /// in more requests at once than allowed (the others answer with what
    /// is in, leaving FUSE workers to the live tree).
    pub fn wait_older(&self, seq: Option<u64>) {
        let want = seq.unwrap_or(1);
        let Some(lazy) = self.agent.repo().lazy() else {
            return;
        };
        if want == 0 || !lazy.is_filling() || lazy.older_from() <= want {
            return;
        }
        match crate::history::older::pending(&self.agent) {
            Ok(Some((from, None))) if want < from => {}
            _ => return,
        }
        let taken = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.waiters).then_some(n + 1)
            });
        if taken.is_err() {
            return;
        }
        /// Gives the place back however the wait ends.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _waiting = Waiting(&self.waiting);
        lazy.wait_for_older(|| lazy.older_from() <= want);
    }

    /// The opened, verified view of snapshot `seq`.
    pub fn view(&self, seq: u64) -> Result<Arc<SnapshotView>> {
        if let Some(v) = self.views.lock().expect("views").get(&seq) {
            return Ok(v.clone());
        }
        let v = Arc::new(self.agent.snapshot(seq)?);
        let mut views = self.views.lock().expect("views");
        if views.len() >= VIEW_CACHE {
            let victim = *views.keys().next().expect("non-empty");
            views.remove(&victim);
        }
        views.insert(seq, v.clone());
        Ok(v)
    }

    /// Commit time of snapshot `seq` (ms), from the index: nothing decrypted.
    pub fn timestamp_ms(&self, seq: u64) -> Result<i64> {
        let page = self.agent.list(seq.saturating_sub(1), 1)?;
        match page.first() {
            Some(m) if m.seq == seq => Ok(m.timestamp_ms),
            _ => Err(Error::fs("lookup", libc::ENOENT)),
        }
    }
}
