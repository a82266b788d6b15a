//! Who changed what since the last snapshot, and the agent's note for the
//! next one: gathered as operations are applied, sealed into the next
//! snapshot's manifest (tree format 4, `seal::tree::Provenance`), and
//! cleared when that snapshot is committed. Bounded: at most
//! [`WRITERS_MAX`] writers and [`CHANGES_MAX`] pairs per list; what does
//! not fit is left out and the record marked incomplete (tree format 5,
//! `Provenance::incomplete`), so a burst of a million metadata changes
//! costs neither memory nor manifest bytes in proportion.
//!
//! In memory only: operations replayed from the journal after a crash
//! carry no writer, and a note set before a crash is lost with it.

use crate::seal::tree::{CHANGES_MAX, NOTE_MAX, Provenance, WRITERS_MAX, Writer};
use crate::{Error, Result};
use std::collections::HashMap;

/// The provenance of the changes not yet committed.
#[derive(Default)]
pub(crate) struct Pending {
    record: Provenance,
    /// Index of each writer in `record.writers`.
    index: HashMap<Writer, u32>,
}

impl Pending {
    /// Records that `writer` created or changed inode `ino` (`removed`:
    /// removed a name of it). Left out, and the record marked incomplete,
    /// when the record is full.
    pub(crate) fn attribute(&mut self, ino: u64, writer: &Writer, removed: bool) {
        let n = match self.index.get(writer) {
            Some(n) => *n,
            None if self.record.writers.len() >= WRITERS_MAX => {
                self.record.incomplete = true;
                return;
            }
            None => {
                let n = u32::try_from(self.record.writers.len()).expect("below WRITERS_MAX");
                self.record.writers.push(writer.clone());
                self.index.insert(writer.clone(), n);
                n
            }
        };
        let set = if removed {
            &mut self.record.removed
        } else {
            &mut self.record.changes
        };
        if set.len() < CHANGES_MAX {
            set.insert((ino, n));
        } else if !set.contains(&(ino, n)) {
            self.record.incomplete = true;
        }
    }

    /// Records that `writer` created inode `ino`. What was recorded as
    /// changing an earlier inode under the same number (freed and reused
    /// before the commit) is dropped: it is not this inode's history. Its
    /// removal stays recorded.
    pub(crate) fn attribute_new(&mut self, ino: u64, writer: &Writer) {
        let stale: Vec<(u64, u32)> = self
            .record
            .changes
            .range((ino, 0)..=(ino, u32::MAX))
            .copied()
            .collect();
        for c in stale {
            self.record.changes.remove(&c);
        }
        self.attribute(ino, writer, false);
    }

    /// Sets (or with `None` clears) the note for the next snapshot.
    pub(crate) fn set_note(&mut self, note: Option<Vec<u8>>) -> Result<()> {
        if note.as_ref().is_some_and(|n| n.len() > NOTE_MAX) {
            return Err(Error::fs("note", libc::E2BIG));
        }
        self.record.note = note;
        Ok(())
    }

    /// The note set for the next snapshot.
    pub(crate) fn note(&self) -> Option<&[u8]> {
        self.record.note.as_deref()
    }

    /// What the next snapshot records (`None`: nothing).
    pub(crate) fn record(&self) -> Option<Provenance> {
        (!self.record.is_empty()).then(|| self.record.clone())
    }

    /// Forgets everything: the snapshot that holds it is committed.
    pub(crate) fn clear(&mut self) {
        *self = Pending::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pid: u32) -> Writer {
        Writer {
            pid,
            uid: 0,
            gid: 0,
            comm: format!("p{pid}").into_bytes(),
            exe: Vec::new(),
        }
    }

    /// A number freed and reused before the commit: the new inode's
    /// history starts at its creation, the old one's removal stays.
    #[test]
    fn a_reused_number_starts_a_new_history() {
        let mut p = Pending::default();
        p.attribute(7, &w(1), false);
        p.attribute(7, &w(2), true);
        p.attribute_new(7, &w(3));
        p.attribute(8, &w(1), false);
        let r = p.record().unwrap();
        let names = |removed| {
            r.writers_of(7, removed)
                .map(|i| r.writers[i as usize].pid)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(false), [3]);
        assert_eq!(names(true), [2]);
        assert_eq!(r.writers_of(8, false).count(), 1);
        p.clear();
        assert!(p.record().is_none());
    }

    /// Writers past the first WRITERS_MAX, and pairs past CHANGES_MAX in
    /// a list, are left out and make the record incomplete; a pair
    /// already kept does not.
    #[test]
    fn a_full_record_leaves_the_rest_out_and_says_so() {
        let mut p = Pending::default();
        for pid in 1..=WRITERS_MAX as u32 + 10 {
            p.attribute(u64::from(pid), &w(pid), false);
        }
        let r = p.record().unwrap();
        assert_eq!(r.writers.len(), WRITERS_MAX);
        assert_eq!(r.changes.len(), WRITERS_MAX);
        assert!(r.incomplete);
        p.clear();
        for ino in 0..CHANGES_MAX as u64 {
            p.attribute(ino, &w(1), true);
        }
        p.attribute(3, &w(1), true);
        p.attribute(CHANGES_MAX as u64 + 1, &w(1), false);
        assert!(
            !p.record().unwrap().incomplete,
            "a full list, nothing left out"
        );
        p.attribute(CHANGES_MAX as u64, &w(1), true);
        let r = p.record().unwrap();
        assert_eq!(r.removed.len(), CHANGES_MAX);
        assert_eq!(r.changes.len(), 1);
        assert!(r.incomplete);
    }
}
