//! Who changed what since the last snapshot, and the agent's note for the
//! next one: gathered as operations are applied, sealed into the next
//! snapshot's manifest (tree format 4, `seal::tree::Provenance`), and
//! cleared when that snapshot is committed.
//!
//! In memory only: operations replayed from the journal after a crash
//! carry no writer, and a note set before a crash is lost with it.

use crate::seal::tree::{NOTE_MAX, Provenance, Writer};
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
    /// removed a name of it).
    pub(crate) fn attribute(&mut self, ino: u64, writer: &Writer, removed: bool) {
        let n = match self.index.get(writer) {
            Some(n) => *n,
            None => {
                let n = u32::try_from(self.record.writers.len()).unwrap_or(u32::MAX);
                self.record.writers.push(writer.clone());
                self.index.insert(writer.clone(), n);
                n
            }
        };
        if removed {
            self.record.removed.insert((ino, n));
        } else {
            self.record.changes.insert((ino, n));
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
}
