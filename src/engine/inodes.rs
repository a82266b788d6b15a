//! Inode numbers: the lowest free one first.
//!
//! A deleted inode's number is free once the kernel has forgotten it (the
//! engine deletes an inode only when no pin holds it: no open handle, no
//! kernel reference, see [`Engine::pin`]), and a new inode takes the lowest
//! free number below the manifest's `next_ino` before a fresh one. So a
//! tree that churns through many files keeps its inodes in few, full
//! pages instead of spreading them over every page it ever used.
//!
//! Free numbers are found in two places: numbers this engine freed, and
//! the pages of head whose page-map count says they have room (tree format
//! 3, [`pagemap::first_open_page`]), scanned page by page from the lowest
//! up as allocation reaches them. The set of known free numbers is bounded
//! ([`FREE_MAX`]): past it the highest are dropped and the scan cursor is
//! moved back to their page, and moved back again after the next commit
//! (a page whose numbers were freed since head still looks full in head's
//! counts until then), so they are found again. Within one commit window
//! an allocation can therefore miss a dropped number and take a higher
//! one; it never takes a number in use. None of this is persisted: the
//! journal records each created inode's number, and a replay creates the
//! inode under that number (which must be free), so what was acknowledged
//! keeps its number whatever this state was when it ran.

use super::Engine;
use crate::repo::pagemap;
use crate::seal::tree::ROOT_INO;
use crate::{Error, Result};
use std::collections::BTreeSet;

/// Free numbers held in memory at most.
const FREE_MAX: usize = 1 << 16;

/// Where the engine looks for free inode numbers.
pub(super) struct Allocator {
    /// Known free numbers below `next_ino`: every free number of the pages
    /// below `cursor`, and numbers freed since (anywhere).
    free: BTreeSet<u64>,
    /// The first page of head not yet scanned.
    cursor: u64,
    /// The lowest page of a number dropped from `free`: scanned again once
    /// a commit has made head's counts show it.
    dropped: Option<u64>,
    /// During a journal replay: the number the next created inode had.
    replayed: Option<u64>,
    /// At most this many numbers in `free`.
    max: usize,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator {
            free: BTreeSet::new(),
            cursor: 0,
            dropped: None,
            replayed: None,
            max: FREE_MAX,
        }
    }
}

impl Engine {
    /// The number for a new inode: the recorded one during a replay, else
    /// the lowest free one below `next_ino`, else `next_ino`.
    pub(super) fn allocate_ino(&mut self) -> Result<u64> {
        if let Some(ino) = self.ialloc.replayed.take() {
            if ino <= ROOT_INO || self.inode(ino)?.is_some() {
                return Err(Error::corrupt(
                    "journal",
                    format!("inode {ino}, recorded as created, is in use or reserved"),
                ));
            }
            self.ialloc.free.remove(&ino);
            self.ov.next_ino = self.ov.next_ino.max(ino + 1);
            return Ok(ino);
        }
        self.scan_below_free()?;
        while let Some(ino) = self.ialloc.free.pop_first() {
            // Known free; checked, so that a stale entry can never hand out
            // a live inode's number.
            if self.inode(ino)?.is_none() {
                return Ok(ino);
            }
            tracing::error!("inode {ino} was listed as free but is in use; skipped");
        }
        let ino = self.ov.next_ino;
        self.ov.next_ino += 1;
        Ok(ino)
    }

    /// The number to use for the next create of a journal replay.
    pub(super) fn replay_ino(&mut self, ino: Option<u64>) {
        self.ialloc.replayed = ino;
    }

    /// `ino` was deleted for good (no pin holds it): its number is free.
    pub(super) fn free_ino(&mut self, ino: u64) {
        if ino > ROOT_INO {
            self.remember_free(ino);
        }
    }

    /// Forgets what is known about free numbers (head was replaced).
    pub(super) fn reset_inos(&mut self) {
        let max = self.ialloc.max;
        self.ialloc = Allocator {
            max,
            ..Allocator::default()
        };
    }

    /// This engine committed its overlay: head's counts now show every
    /// number freed before, including those dropped from the set.
    pub(super) fn committed_inos(&mut self) {
        if let Some(page) = self.ialloc.dropped.take() {
            self.ialloc.cursor = self.ialloc.cursor.min(page);
        }
    }

    /// Sets how many free numbers are held in memory at most (tests and
    /// benchmarks; [`FREE_MAX`] by default).
    #[doc(hidden)]
    pub fn set_free_inode_budget(&mut self, n: usize) {
        self.ialloc.max = n.max(1);
    }

    /// Scans head's pages with room, lowest first, while one of them starts
    /// below the lowest known free number: the set's first entry is then
    /// the lowest free number there is.
    fn scan_below_free(&mut self) -> Result<()> {
        let ipp = u64::from(self.head.manifest().inodes_per_page);
        let next = self.ov.next_ino;
        let last = next.saturating_sub(1) / ipp;
        loop {
            let lowest = self.ialloc.free.first().copied();
            if lowest.is_some_and(|lo| lo < self.ialloc.cursor.saturating_mul(ipp)) {
                // No unscanned page starts below it: no page-map descent.
                return Ok(());
            }
            let Some(page) = pagemap::first_open_page(
                self.head.repo(),
                &self.head.manifest().pages,
                self.head.manifest().inodes_per_page,
                self.ialloc.cursor,
                last,
            )?
            else {
                return Ok(());
            };
            if lowest.is_some_and(|lo| lo < page * ipp) {
                return Ok(());
            }
            self.ialloc.cursor = page + 1;
            let at_head = self.head.page(page)?;
            let first = (page * ipp).max(ROOT_INO + 1);
            let end = ((page + 1) * ipp).min(next);
            for ino in first..end {
                let free = match self.ov.inodes.get(&ino) {
                    Some(i) => i.is_none(),
                    None => !at_head.as_ref().is_some_and(|p| p.contains_key(&ino)),
                };
                if free {
                    self.remember_free(ino);
                }
            }
            if self.ialloc.cursor <= page {
                // The set filled up with this page's numbers and dropped
                // its highest: what it holds is lower than anything not
                // scanned, so its first entry is the lowest free number.
                return Ok(());
            }
        }
    }

    fn remember_free(&mut self, ino: u64) {
        let a = &mut self.ialloc;
        a.free.insert(ino);
        if a.free.len() > a.max
            && let Some(high) = a.free.pop_last()
        {
            let page = high / u64::from(self.head.manifest().inodes_per_page);
            a.cursor = a.cursor.min(page);
            a.dropped = Some(a.dropped.map_or(page, |d| d.min(page)));
        }
    }
}
