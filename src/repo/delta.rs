//! Delta chains (tree format 8): what a snapshot's deltas change on top of
//! the tree of its fold.
//!
//! A commit that changes little seals one [`Delta`] (the inode records it
//! wrote, the inodes it removed, the directory names it changed) linked
//! to the delta before it, instead of re-sealing inode pages, page-map
//! paths and directory-tree paths; every so often a commit **folds**: it
//! writes the pages and trees as before and starts a new chain
//! (`engine::commit`). A snapshot's tree is its fold's tree with the
//! chain's deltas applied oldest first: [`Merged`] is that chain applied,
//! what readers ([`crate::repo::view::SnapshotView`]) and the writer
//! consult before the fold's pages.
//!
//! A directory's record in a delta keeps the root of its tree in the fold
//! (a delta re-seals no tree): its entries are that tree's with the
//! chain's name edits applied, unless an edit is `fresh` (the directory's
//! number was freed and given to a new directory: the earlier names are
//! gone).

use crate::repo::Repo;
use crate::seal::tree::{Delta, DirEdits, DirEntry, Entries, FileType, Inode, ObjRef};
use crate::{Error, Result};
use std::collections::HashMap;

/// A delta chain applied: for each inode the chain wrote or removed, its
/// record now (`None`: removed); for each directory whose names it
/// changed, the changes against the directory's tree in the fold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Records the chain decides.
    pub inodes: HashMap<u64, Option<Inode>>,
    /// Name edits, by directory.
    pub dirs: HashMap<u64, DirEdits>,
    /// Length of the chain (0: none).
    pub depth: u32,
}

/// A name and its new entry (`None`: removed).
type NameEdit<'a> = (&'a Vec<u8>, &'a Option<DirEntry>);

/// What changed since the previous commit, as the engine records it: lets
/// [`Merged::delta_to`] compare only that with the chain.
#[derive(Clone, Copy)]
pub struct Since<'a> {
    /// Names changed, by directory.
    pub named: &'a HashMap<u64, std::collections::HashSet<Vec<u8>>>,
    /// Directories whose changes started over while the chain has names
    /// for them (their number was freed and given to a new directory).
    pub restarted: &'a std::collections::HashSet<u64>,
}

impl Merged {
    /// The chain whose newest delta is `newest`, read back to its fold and
    /// applied. Every delta is checked as it is read (its tag, its
    /// encoding), and each must sit one below the delta after it.
    pub fn load(repo: &Repo, newest: &ObjRef) -> Result<Merged> {
        let mut chain = Vec::new();
        let mut next = Some(*newest);
        while let Some(r) = next {
            let d = repo.delta(&r)?;
            if chain
                .last()
                .is_some_and(|after: &std::sync::Arc<Delta>| after.depth != d.depth + 1)
            {
                return Err(Error::corrupt(
                    format!("delta {}", r.id.to_hex()),
                    "its depth does not follow the chain",
                ));
            }
            next = d.prev;
            chain.push(d);
        }
        let mut m = Merged::default();
        for d in chain.iter().rev() {
            m.apply(d);
        }
        Ok(m)
    }

    /// Refuses a chain naming inode 0 or a number at or above `next_ino`
    /// (the manifest's: no commit allocates one), as a record, a removal,
    /// a directory or an entry.
    pub fn check_numbers(&self, next_ino: u64) -> Result<()> {
        let entries = self
            .dirs
            .values()
            .flat_map(|e| e.names.values().flatten().map(|e| e.ino));
        let bad = self
            .inodes
            .keys()
            .chain(self.dirs.keys())
            .copied()
            .chain(entries)
            .find(|&ino| ino == 0 || ino >= next_ino);
        match bad {
            Some(ino) => Err(Error::corrupt(
                "delta chain",
                format!("names inode {ino}, outside 1..{next_ino}"),
            )),
            None => Ok(()),
        }
    }

    /// Applies the next delta of the chain.
    pub fn apply(&mut self, d: &Delta) {
        for ino in &d.removed {
            self.inodes.insert(*ino, None);
            self.dirs.remove(ino);
        }
        for (ino, i) in &d.inodes {
            // (A number that held a directory, now something else: its
            // names went with it.)
            if i.file_type() != FileType::Dir {
                self.dirs.remove(ino);
            }
            self.inodes.insert(*ino, Some(i.clone()));
        }
        for (dir, e) in &d.dirs {
            if e.fresh {
                self.dirs.insert(*dir, e.clone());
            } else {
                let to = self.dirs.entry(*dir).or_default();
                for (name, entry) in &e.names {
                    to.names.insert(name.clone(), *entry);
                }
            }
        }
        self.depth = d.depth;
    }

    /// What the chain says of inode `ino`: `Some(None)` removed,
    /// `Some(Some(_))` its record, `None` the fold's record stands.
    pub fn inode(&self, ino: u64) -> Option<Option<&Inode>> {
        self.inodes.get(&ino).map(Option::as_ref)
    }

    /// The chain's name edits of directory `ino`.
    pub fn dir(&self, ino: u64) -> Option<&DirEdits> {
        self.dirs.get(&ino)
    }

    /// The delta that turns this chain's tree into the one whose changed
    /// records are `records` and whose directories' names changed since
    /// the fold are `names` (each with whether its edits start fresh at the
    /// fold: see [`DirEdits::fresh`]): what one commit wrote, linked to
    /// `prev`. `records` holds at least every record that differs from the
    /// chain, `names` everything changed since the fold; what is equal to
    /// the chain is left out. With `since`, only the names it lists are
    /// compared with the chain (the same delta, found in what changed
    /// since the previous commit instead of since the fold).
    pub fn delta_to(
        &self,
        records: &std::collections::BTreeMap<u64, Option<Inode>>,
        names: &HashMap<u64, &std::collections::BTreeMap<Vec<u8>, Option<DirEntry>>>,
        since: Option<Since<'_>>,
        prev: Option<ObjRef>,
    ) -> Delta {
        let mut d = Delta {
            prev,
            depth: self.depth + 1,
            ..Delta::default()
        };
        for (ino, rec) in records {
            let known = self.inode(*ino);
            match rec {
                Some(i) if known != Some(Some(i)) => {
                    d.inodes.insert(*ino, i.clone());
                }
                None if known != Some(None) => {
                    d.removed.insert(*ino);
                }
                _ => {}
            }
        }
        let live = |dir: &u64| {
            matches!(records.get(dir), Some(Some(_)))
                || (!records.contains_key(dir) && self.inodes.get(dir) != Some(&None))
        };
        for (dir, now) in names {
            if !live(dir) {
                continue;
            }
            let before = self.dirs.get(dir);
            // A name the chain gave the directory that it no longer has
            // among its changes: its changes started over (a new directory
            // under the number): it starts fresh. (Otherwise its changes
            // only grew since the previous commit: `since` names them.)
            let stale = |now: &std::collections::BTreeMap<Vec<u8>, Option<DirEntry>>| {
                before.is_some_and(|b| b.names.keys().any(|n| !now.contains_key(n)))
            };
            let (fresh, compared): (bool, Vec<NameEdit<'_>>) = match &since {
                Some(s) if !s.restarted.contains(dir) => match s.named.get(dir) {
                    None => continue,
                    Some(changed) => (
                        false,
                        changed
                            .iter()
                            .filter_map(|n| now.get_key_value(n))
                            .collect(),
                    ),
                },
                _ => (stale(now), now.iter().collect()),
            };
            let mut e = DirEdits {
                fresh,
                names: Default::default(),
            };
            for (name, entry) in compared {
                if fresh || before.and_then(|b| b.names.get(name)) != Some(entry) {
                    e.names.insert(name.clone(), *entry);
                }
            }
            if e.fresh || !e.names.is_empty() {
                d.dirs.insert(*dir, e);
            }
        }
        // A directory the chain has names for, whose changes are gone
        // though it lives: a new directory under its number, no name yet
        // (unless the chain says so already).
        for (dir, e) in &self.dirs {
            let is_dir =
                matches!(records.get(dir), Some(Some(i)) if i.file_type() == FileType::Dir);
            let said = e.fresh && e.names.is_empty();
            if !names.contains_key(dir) && is_dir && !said {
                d.dirs.insert(
                    *dir,
                    DirEdits {
                        fresh: true,
                        names: Default::default(),
                    },
                );
            }
        }
        d
    }

    /// Directory `base`'s entries (its tree in the fold) with the chain's
    /// edits of directory `ino` applied.
    pub fn entries(
        &self,
        ino: u64,
        base: impl FnOnce() -> Result<std::sync::Arc<Entries>>,
    ) -> Result<std::sync::Arc<Entries>> {
        match self.dirs.get(&ino) {
            None => base(),
            Some(e) => {
                let mut out = if e.fresh {
                    Entries::new()
                } else {
                    (*base()?).clone()
                };
                for (name, entry) in &e.names {
                    match entry {
                        Some(x) => out.insert(name.clone(), *x),
                        None => out.remove(name),
                    };
                }
                Ok(std::sync::Arc::new(out))
            }
        }
    }

    /// Looks up `name` in directory `ino`: the chain's edit if it has one,
    /// else `base` (the fold's tree), unless the edits start fresh.
    pub fn lookup(
        &self,
        ino: u64,
        name: &[u8],
        base: impl FnOnce() -> Result<Option<DirEntry>>,
    ) -> Result<Option<DirEntry>> {
        match self.dirs.get(&ino) {
            Some(e) => match e.names.get(name) {
                Some(x) => Ok(*x),
                None if e.fresh => Ok(None),
                None => base(),
            },
            None => base(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::tree::{DirEntry, FileType};

    fn with_entry(dir: u64, ino: u64) -> Merged {
        let mut m = Merged::default();
        let mut e = DirEdits::default();
        e.names.insert(
            b"n".to_vec(),
            Some(DirEntry {
                ino,
                file_type: FileType::File,
            }),
        );
        m.dirs.insert(dir, e);
        m
    }

    #[test]
    fn numbers_outside_the_manifests_range_are_refused() {
        assert!(with_entry(1, 9).check_numbers(10).is_ok());
        assert!(with_entry(1, 10).check_numbers(10).is_err(), "an entry");
        assert!(with_entry(10, 9).check_numbers(10).is_err(), "a directory");
        assert!(with_entry(1, 0).check_numbers(10).is_err(), "inode 0");
        let mut m = Merged::default();
        m.inodes.insert(12, None);
        assert!(m.check_numbers(10).is_err(), "a removal");
    }
}
