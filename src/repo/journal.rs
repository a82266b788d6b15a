//! The operation journal file: sealed records of the namespace and
//! attribute operations acknowledged since the head snapshot, so that a
//! crash of the daemon loses none of them (DESIGN.md, invariants 3 and 6).
//!
//! `$DATA_DIR/journal` holds records `len u32 LE || seq u64 LE || hash (32)
//! || sealed (len)`: each sealed (by `seal::envelope::seal_journal`) on top
//! of the head `(seq, hash)` it extends. A record is appended with one
//! `pwrite` before the operation is acknowledged: it is then in the page
//! cache, which outlives the process. It is never synced: a power cut may
//! lose it, as it may lose any write no fsync covered (an fsync commits a
//! snapshot, which holds the operations). Each append also writes a zero
//! length after its record, so the records end there; after each commit
//! the journal is emptied by a zero length at its start (one small write,
//! not a truncate: no metadata change on the commit path), and the next
//! record overwrites it. Records whose head is not the current head are
//! stale and ignored. Nothing here holds a key or sees plaintext.

use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The journal's file name in the data dir.
pub const JOURNAL_FILE: &str = "journal";
/// Bytes before each record's sealed bytes.
const FRAME: usize = 4 + 8 + 32;
/// The end of the records: a zero length.
const END: [u8; 4] = [0; 4];
/// Largest record accepted when reading (an operation is far smaller).
const MAX_RECORD: usize = 1 << 20;

/// One record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The head it extends: sequence number.
    pub seq: u64,
    /// The head it extends: envelope hash.
    pub hash: [u8; 32],
    /// Sealed bytes.
    pub sealed: Vec<u8>,
}

/// The open journal of one agent (the writer's).
pub struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Journal {
    /// Opens (creating, mode 0600, never through a symlink) the journal in
    /// `data_dir`; returns it with the records it holds, in order. A torn
    /// or malformed tail ends the list (a power cut can tear unsynced
    /// writes); the next append overwrites it.
    pub fn open(data_dir: &Path) -> Result<(Self, Vec<Record>)> {
        let path = data_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut bytes = vec![0u8; size as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io(&path, e))?;
        let (records, len) = parse(&bytes);
        if (len as u64) < size {
            file.set_len(len as u64).map_err(|e| Error::io(&path, e))?;
        }
        Ok((
            Journal {
                file,
                path,
                len: len as u64,
            },
            records,
        ))
    }

    /// Appends one record with a single write: once this returns, the
    /// record outlives a crash of the process.
    pub fn append(&mut self, seq: u64, hash: &[u8; 32], sealed: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(FRAME + sealed.len() + END.len());
        buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(hash);
        buf.extend_from_slice(sealed);
        // The end marker, in the same write: what an earlier, longer run of
        // records left after this one is never read as part of it.
        buf.extend_from_slice(&END);
        self.file
            .write_all_at(&buf, self.len)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += (buf.len() - END.len()) as u64;
        Ok(())
    }

    /// Empties the journal (its operations are in a snapshot now): an end
    /// marker at its start, one small write.
    pub fn reset(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.file
            .write_all_at(&END, 0)
            .map_err(|e| Error::io(&self.path, e))?;
        self.len = 0;
        Ok(())
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The whole records at the start of `bytes`, and where they end.
fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(frame) = bytes.get(at..at + FRAME) {
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4")) as usize;
        if len == 0 || len > MAX_RECORD {
            break;
        }
        let Some(sealed) = bytes.get(at + FRAME..at + FRAME + len) else {
            break;
        };
        out.push(Record {
            seq: u64::from_le_bytes(frame[4..12].try_into().expect("8")),
            hash: frame[12..44].try_into().expect("32"),
            sealed: sealed.to_vec(),
        });
        at += FRAME + len;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, recs) = Journal::open(dir.path()).unwrap();
        assert!(recs.is_empty());
        j.append(3, &[7; 32], b"one").unwrap();
        j.append(3, &[7; 32], b"two!").unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let full = std::fs::read(&path).unwrap();
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[1].seq, recs[1].hash, &recs[1].sealed[..]),
            (3, [7; 32], &b"two!"[..])
        );
        // Every cut inside the second record keeps only the first (the
        // file ends with the end marker after it).
        assert_eq!(full[full.len() - END.len()..], END);
        for cut in FRAME + 3 + 1..full.len() - END.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (mut j, recs) = Journal::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 1, "cut at {cut}");
            // The next append goes right after the last whole record.
            j.append(4, &[8; 32], b"x").unwrap();
            let (_, recs) = Journal::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 2);
            assert_eq!(recs[1].seq, 4);
        }
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    /// A reset empties the journal with one write at its start (the file
    /// is not truncated); records appended after it read back alone, never
    /// followed by what the longer run before the reset left behind.
    #[test]
    fn a_reset_empties_without_a_truncate_and_later_records_stand_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for n in 0..5u8 {
            j.append(3, &[7; 32], &[n; 40]).unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        j.reset().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "no truncate");
        // As long as the old ones, so that an old record starts right
        // where it ends.
        j.append(4, &[8; 32], &[9; 40]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        drop(j);
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs.len(), 1, "the old records after it are not read");
        assert_eq!((recs[0].seq, &recs[0].sealed[..]), (4, &[9; 40][..]));
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        drop(j);
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    #[test]
    fn a_symlink_in_its_place_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(JOURNAL_FILE)).unwrap();
        assert!(Journal::open(dir.path()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}
