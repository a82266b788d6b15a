//! Sealed content on local disk: append-only pack files.
//!
//! Architecture Invariant: the store handles sealed bytes only. It holds no
//! key, decrypts nothing, and never sees plaintext.
//!
//! A pack is `packs/NNNNNNNN.pack`: the 8-byte magic `SOVPACK1`, then records
//! (see [`super::pack`]): each snapshot's new objects, then its commit
//! record (the envelope). Appends go through the page cache and are not
//! synced one by one: [`Store::sync`] (one `fdatasync` per pack appended to)
//! is the power-loss barrier, and a pack synced up to a commit record holds
//! everything needed to rebuild that snapshot's index rows. The index
//! records each pack's committed length; bytes past it are either commit
//! records the index has not yet synced (recovery reads them back, see
//! `repo::agent`) or leftovers of a process that died before committing,
//! which the next writer cuts off.

use super::pack::{self, PACK_MAGIC, RECORD_HEADER};
use crate::fsutil::Dir;
use crate::seal::envelope::Envelope;
use crate::seal::tree::{ObjectId, ObjectKind};
use crate::{Error, Result};
use nix::fcntl::OFlag;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A pack is closed once it grows past this size.
pub const PACK_TARGET: u64 = 256 << 20;

/// Where a sealed object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack number.
    pub pack: u32,
    /// Offset of the sealed bytes (after the record header).
    pub offset: u64,
    /// Length of the sealed bytes.
    pub len: u32,
}

/// The pack files of one agent.
pub struct Store {
    dir: PathBuf,
    /// The checked packs directory of a writer: every pack it creates,
    /// opens or removes goes through this descriptor (see [`Dir`]).
    wdir: Option<Dir>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
    writer: Option<Mutex<Writer>>,
    /// Held through a [`Store::sync`]: a second sync waits for the first's
    /// disk work instead of finding nothing left to sync and returning
    /// while that is still under way.
    syncing: Mutex<()>,
    /// Unit tests: a slow disk under [`Store::sync`].
    #[cfg(test)]
    pub(crate) slow: SlowSync,
}

/// A slow disk for unit tests: every [`Store::sync`] waits `delay_ms`
/// before it takes the packs it syncs, and `in_sync` counts the syncs
/// waiting.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct SlowSync {
    pub delay_ms: std::sync::atomic::AtomicU64,
    pub in_sync: std::sync::atomic::AtomicU64,
}

struct Writer {
    pack: u32,
    file: Arc<File>,
    len: u64,
    /// Packs appended to since the index last recorded their length:
    /// (file, length now).
    unrecorded: BTreeMap<u32, (Arc<File>, u64)>,
    /// Packs appended to since the last [`Store::sync`].
    unsynced: BTreeMap<u32, Arc<File>>,
}

fn pack_name(pack: u32) -> String {
    format!("{pack:08}.pack")
}

fn pack_path(dir: &Path, pack: u32) -> PathBuf {
    dir.join(pack_name(pack))
}

/// The numbers of the pack files in `dir`.
pub fn pack_numbers(dir: &Dir) -> Result<BTreeSet<u32>> {
    Ok(dir
        .names()?
        .iter()
        .filter_map(|name| {
            name.to_str()
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .collect())
}

/// Opens a pack by path for reading, never through a symlink.
fn open_pack_readonly(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

impl Store {
    /// Opens the packs for reading only.
    pub fn open_readonly(dir: &Path) -> Self {
        Store {
            dir: dir.to_owned(),
            wdir: None,
            readers: RwLock::new(HashMap::new()),
            writer: None,
            syncing: Mutex::new(()),
            #[cfg(test)]
            slow: SlowSync::default(),
        }
    }

    /// Opens the packs for reading only, through a checked directory (every
    /// pack opened through it, never through a symlink): recovery, before
    /// the writer opens them.
    pub fn open_checked_readonly(dir: Dir) -> Self {
        Store {
            dir: dir.path().to_owned(),
            wdir: Some(dir),
            readers: RwLock::new(HashMap::new()),
            writer: None,
            syncing: Mutex::new(()),
            #[cfg(test)]
            slow: SlowSync::default(),
        }
    }

    /// Opens the packs for appending. `committed` is each pack's committed
    /// length from the index: longer packs are cut back to it, packs the
    /// index does not know are removed, shorter packs are an error.
    pub fn open_writer(dir: Dir, committed: &BTreeMap<u32, u64>) -> Result<Self> {
        let present = pack_numbers(&dir)?;
        for (&pack, &len) in committed {
            if !present.contains(&pack) {
                return Err(Error::MissingObject {
                    id: format!("pack {pack:08}"),
                    kind: "pack file",
                    seq: 0,
                });
            }
            let path = dir.join(pack_name(pack));
            let f = dir.open_file(pack_name(pack), OFlag::O_WRONLY, 0)?;
            let actual = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            if actual < len {
                return Err(Error::corrupt(
                    format!("pack {}", path.display()),
                    format!("{actual} bytes, but {len} were committed"),
                ));
            }
            if actual > len {
                f.set_len(len).map_err(|e| Error::io(&path, e))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }
        for pack in present.difference(&committed.keys().copied().collect()) {
            dir.remove_file(pack_name(*pack))?;
        }
        let store = Store {
            dir: dir.path().to_owned(),
            wdir: Some(dir),
            readers: RwLock::new(HashMap::new()),
            writer: None,
            syncing: Mutex::new(()),
            #[cfg(test)]
            slow: SlowSync::default(),
        };
        let (pack, len) = match committed.last_key_value() {
            Some((&p, &l)) if l < PACK_TARGET => (p, l),
            Some((&p, _)) => (p + 1, 0),
            None => (1, 0),
        };
        let (file, len) = if len == 0 {
            (store.create_pack(pack)?, PACK_MAGIC.len() as u64)
        } else {
            (store.open_for_append(pack)?, len)
        };
        Ok(Store {
            writer: Some(Mutex::new(Writer {
                pack,
                file,
                len,
                unrecorded: BTreeMap::new(),
                unsynced: BTreeMap::new(),
            })),
            ..store
        })
    }

    fn wdir(&self) -> &Dir {
        self.wdir
            .as_ref()
            .expect("a writer's store has its checked dir")
    }

    fn open_for_append(&self, pack: u32) -> Result<Arc<File>> {
        let f = self.wdir().open_file(pack_name(pack), OFlag::O_RDWR, 0)?;
        let f = Arc::new(f);
        self.readers
            .write()
            .expect("readers")
            .insert(pack, f.clone());
        Ok(f)
    }

    /// Creates a pack durably (file and directory entry) before any commit
    /// can reference it.
    fn create_pack(&self, pack: u32) -> Result<Arc<File>> {
        let path = pack_path(&self.dir, pack);
        let f = self.wdir().create_new(pack_name(pack), 0o600)?;
        f.write_all_at(PACK_MAGIC, 0)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        self.wdir().sync()?;
        let f = Arc::new(f);
        self.readers
            .write()
            .expect("readers")
            .insert(pack, f.clone());
        Ok(f)
    }

    /// Appends one sealed object (not yet durable: see [`Store::sync`]).
    pub fn append(&self, id: &ObjectId, kind: ObjectKind, sealed: &[u8]) -> Result<Location> {
        let len = RECORD_HEADER as usize + sealed.len();
        self.append_with(len, |buf| pack::encode_record(buf, id, kind, sealed))
    }

    /// Appends an object record the caller encoded whole (header, then
    /// sealed bytes: an object sealed straight into its record, without a
    /// copy of its sealed bytes). Refuses one whose header does not give
    /// its length.
    pub fn append_record(&self, record: &[u8]) -> Result<Location> {
        let whole = record
            .first_chunk::<{ RECORD_HEADER as usize }>()
            .is_some_and(|h| {
                RECORD_HEADER as usize + pack::decode_header(h).2 as usize == record.len()
            });
        if !whole {
            return Err(Error::Invalid("a pack record of the wrong length".into()));
        }
        self.write_record(record)
    }

    /// Appends the commit record of `env`, after the objects of its
    /// snapshot (not yet durable: see [`Store::sync`]).
    pub fn append_commit(&self, env: &Envelope) -> Result<()> {
        self.append_with(0, |buf| pack::encode_commit(buf, env))
            .map(|_| ())
    }

    /// Appends the record `encode` writes (about `len` bytes), starting a
    /// new pack first when this one would grow past [`PACK_TARGET`].
    /// Returns where its body is.
    fn append_with(&self, len: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Result<Location> {
        let mut buf = Vec::with_capacity(len);
        encode(&mut buf);
        self.write_record(&buf)
    }

    /// Writes one encoded record at the end of the pack being appended to
    /// (see [`Store::append_with`]).
    fn write_record(&self, buf: &[u8]) -> Result<Location> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| Error::Invalid("store opened read-only".into()))?;
        let mut w = w.lock().expect("pack writer");
        let rec = buf.len() as u64;
        if w.len > PACK_MAGIC.len() as u64 && w.len + rec > PACK_TARGET {
            self.start_next_pack(&mut w)?;
        }
        let at = w.len;
        w.file
            .write_all_at(buf, at)
            .map_err(|e| Error::io(pack_path(&self.dir, w.pack), e))?;
        w.len += rec;
        let (pack, file, len) = (w.pack, w.file.clone(), w.len);
        w.unrecorded.insert(pack, (file.clone(), len));
        w.unsynced.insert(pack, file);
        Ok(Location {
            pack,
            offset: at + RECORD_HEADER,
            len: (rec - RECORD_HEADER) as u32,
        })
    }

    /// Leaves the pack `w` appends to (its length kept for the next index
    /// commit and sync) for a new one. The new pack is made first: if it
    /// cannot be, appends go on into this one, under this one's number.
    fn start_next_pack(&self, w: &mut Writer) -> Result<()> {
        let next = self.create_pack(w.pack + 1)?;
        let (old, len, file) = (w.pack, w.len, w.file.clone());
        w.unrecorded.insert(old, (file.clone(), len));
        w.unsynced.insert(old, file);
        w.pack += 1;
        w.file = next;
        w.len = PACK_MAGIC.len() as u64;
        Ok(())
    }

    /// Closes the pack being appended to and starts a new one, so that every
    /// existing pack can be rewritten (prune). Returns the new pack number.
    pub fn roll(&self) -> Result<u32> {
        let w = self
            .writer
            .as_ref()
            .ok_or_else(|| Error::Invalid("store opened read-only".into()))?;
        let mut w = w.lock().expect("pack writer");
        if w.len > PACK_MAGIC.len() as u64 {
            self.start_next_pack(&mut w)?;
        }
        Ok(w.pack)
    }

    /// Removes a pack file the index no longer references (after prune).
    /// A pack this writer appended to and the index has not recorded since
    /// is forgotten too: the next commit must not record its length again
    /// (the index would then name a pack that is gone, and the next open
    /// refuse the data dir).
    pub fn remove_pack(&self, pack: u32) -> Result<()> {
        if let Some(w) = self.writer.as_ref() {
            let mut w = w.lock().expect("pack writer");
            w.unrecorded.remove(&pack);
            w.unsynced.remove(&pack);
        }
        self.readers.write().expect("readers").remove(&pack);
        self.wdir().remove_file(pack_name(pack))
    }

    /// Each pack appended to since the index last recorded its length, with
    /// its length now: what the next index commit records. Nothing is
    /// synced here: a commit reaches the page cache, which survives a crash
    /// of the process; [`Store::sync`] is the power-loss barrier.
    pub fn lengths(&self) -> Vec<(u32, u64)> {
        let Some(w) = self.writer.as_ref() else {
            return Vec::new();
        };
        let w = w.lock().expect("pack writer");
        w.unrecorded.iter().map(|(p, (_, l))| (*p, *l)).collect()
    }

    /// Makes every append so far durable (`fdatasync` of each pack appended
    /// to since the last sync). Appends may go on meanwhile: the pack
    /// writer's lock is not held while the disk works. Syncs run one at a
    /// time, so that each returns only once everything appended before it
    /// is on stable storage, also what another sync had taken.
    pub fn sync(&self) -> Result<()> {
        let Some(w) = self.writer.as_ref() else {
            return Ok(());
        };
        let _one_at_a_time = self.syncing.lock().expect("store sync");
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let delay = self.slow.delay_ms.load(SeqCst);
            if delay > 0 {
                self.slow.in_sync.fetch_add(1, SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(delay));
                self.slow.in_sync.fetch_sub(1, SeqCst);
            }
        }
        let files = std::mem::take(&mut w.lock().expect("pack writer").unsynced);
        for (pack, file) in &files {
            if let Err(e) = file.sync_data() {
                // Not synced: keep it for the next attempt.
                let mut w = w.lock().expect("pack writer");
                for (p, f) in &files {
                    w.unsynced.entry(*p).or_insert_with(|| f.clone());
                }
                return Err(Error::io(pack_path(&self.dir, *pack), e));
            }
        }
        Ok(())
    }

    /// Forgets packs whose length the index has now recorded. Until then
    /// [`Store::lengths`] keeps reporting them, so a failed index commit
    /// cannot lose a pack length.
    pub fn mark_committed(&self, packs: &[(u32, u64)]) {
        if let Some(w) = self.writer.as_ref() {
            let mut w = w.lock().expect("pack writer");
            for (pack, len) in packs {
                if w.unrecorded.get(pack).is_some_and(|(_, l)| l == len) {
                    w.unrecorded.remove(pack);
                }
            }
        }
    }

    /// The length of a pack file on disk, read through the store's own
    /// descriptor (so never through a symlink).
    pub fn file_len(&self, pack: u32) -> Result<u64> {
        let cached = self.readers.read().expect("readers").get(&pack).cloned();
        // Not kept open: recovery asks this of every pack, however many.
        let f = match cached {
            Some(f) => f,
            None => Arc::new(self.open_reader(pack)?),
        };
        Ok(f.metadata()
            .map_err(|e| Error::io(pack_path(&self.dir, pack), e))?
            .len())
    }

    /// Makes `pack` hold `records` at `at` (recovery, under the write
    /// lock, before any store is opened for writing: see
    /// `fit_short_packs`): when the bytes there differ, writes them, cuts
    /// the pack after them and syncs it before returning (the index then
    /// records the new length synchronously). Returns the end of the
    /// records and whether anything was written.
    pub fn rewrite_tail(dir: &Dir, pack: u32, at: u64, records: &[u8]) -> Result<(u64, bool)> {
        let path = pack_path(dir.path(), pack);
        let f = dir.open_file(pack_name(pack), OFlag::O_RDWR, 0)?;
        let end = at + records.len() as u64;
        let mut there = vec![0; records.len()];
        if f.read_exact_at(&mut there, at).is_ok() && there == records {
            return Ok((end, false));
        }
        f.write_all_at(records, at)
            .and_then(|_| f.set_len(end))
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        Ok((end, true))
    }

    /// Syncs the given packs (recovery after an unclean stop, when the
    /// writer does not know which packs hold unsynced bytes).
    pub fn sync_packs(dir: &Path, packs: &BTreeSet<u32>) -> Result<()> {
        for p in packs {
            let path = pack_path(dir, *p);
            match open_pack_readonly(&path) {
                Ok(f) => f.sync_data().map_err(|e| Error::io(&path, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(())
    }

    /// Opens a pack for reading: through the checked directory when there
    /// is one, never through a symlink.
    fn open_reader(&self, pack: u32) -> Result<File> {
        let path = pack_path(&self.dir, pack);
        match &self.wdir {
            Some(d) => d.open_read(pack_name(pack)),
            None => open_pack_readonly(&path).map_err(|e| Error::io(&path, e)),
        }
    }

    fn reader(&self, pack: u32) -> Result<Arc<File>> {
        if let Some(f) = self.readers.read().expect("readers").get(&pack) {
            return Ok(f.clone());
        }
        let f = Arc::new(self.open_reader(pack)?);
        self.readers
            .write()
            .expect("readers")
            .insert(pack, f.clone());
        Ok(f)
    }

    /// Reads the sealed bytes at `loc`.
    pub fn read(&self, loc: &Location) -> Result<Vec<u8>> {
        let f = self.reader(loc.pack)?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact_at(&mut buf, loc.offset)
            .map_err(|e| Error::io(pack_path(&self.dir, loc.pack), e))?;
        Ok(buf)
    }

    /// Reads the whole record that starts at `at` in `pack`, whose file is
    /// `size` bytes long: header fields and body. `None` when the file ends
    /// before the record does (a torn tail, or the end of the pack).
    pub fn read_record(
        &self,
        pack: u32,
        at: u64,
        size: u64,
    ) -> Result<Option<(ObjectId, u8, Vec<u8>)>> {
        if at + RECORD_HEADER > size {
            return Ok(None);
        }
        let f = self.reader(pack)?;
        let path = || pack_path(&self.dir, pack);
        let mut h = [0u8; RECORD_HEADER as usize];
        f.read_exact_at(&mut h, at)
            .map_err(|e| Error::io(path(), e))?;
        let (id, kind, len) = pack::decode_header(&h);
        if at + RECORD_HEADER + u64::from(len) > size {
            return Ok(None);
        }
        let mut body = vec![0u8; len as usize];
        f.read_exact_at(&mut body, at + RECORD_HEADER)
            .map_err(|e| Error::io(path(), e))?;
        Ok(Some((id, kind, body)))
    }

    /// The end of the last commit record that starts at or after `at` in
    /// `pack`, whose file is `size` bytes long, walking record headers only
    /// (bodies are skipped, so a long run of sealed chunks costs one small
    /// read each); `None` when there is none. Stops at a record the file
    /// does not hold whole.
    pub fn last_commit_end(&self, pack: u32, mut at: u64, size: u64) -> Result<Option<u64>> {
        let f = self.reader(pack)?;
        let mut last = None;
        let mut h = [0u8; RECORD_HEADER as usize];
        while at + RECORD_HEADER <= size {
            f.read_exact_at(&mut h, at)
                .map_err(|e| Error::io(pack_path(&self.dir, pack), e))?;
            let (_, kind, len) = pack::decode_header(&h);
            let end = at + RECORD_HEADER + u64::from(len);
            if end > size {
                break;
            }
            if kind == pack::COMMIT_KIND {
                last = Some(end);
            }
            at = end;
        }
        Ok(last)
    }

    /// Whether pack `pack` starts with the pack magic.
    pub fn has_magic(&self, pack: u32) -> Result<bool> {
        let f = self.reader(pack)?;
        let mut m = [0u8; PACK_MAGIC.len()];
        Ok(f.read_exact_at(&mut m, 0).is_ok() && &m == PACK_MAGIC)
    }

    /// Reads the record header before `loc`: the id and kind it was written with.
    pub fn read_header(&self, loc: &Location) -> Result<(ObjectId, u8, u32)> {
        let f = self.reader(loc.pack)?;
        let mut h = [0u8; RECORD_HEADER as usize];
        let at = loc
            .offset
            .checked_sub(RECORD_HEADER)
            .ok_or_else(|| Error::corrupt("object location", "offset inside the pack header"))?;
        f.read_exact_at(&mut h, at)
            .map_err(|e| Error::io(pack_path(&self.dir, loc.pack), e))?;
        Ok(pack::decode_header(&h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_appended_whole_or_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let store = agent.repo().store();
        let mut rec = Vec::new();
        pack::encode_record(&mut rec, &ObjectId([7; 32]), ObjectKind::Chunk, b"sealed");
        let loc = store.append_record(&rec).unwrap();
        assert_eq!(store.read(&loc).unwrap(), b"sealed");
        for bad in [&rec[..rec.len() - 1], &rec[..10], &[]] {
            assert!(store.append_record(bad).is_err(), "{} bytes", bad.len());
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(store.append_record(&long).is_err());
    }
}
