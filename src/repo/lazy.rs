//! Objects of a lazily restored data dir, fetched from the remote on first
//! use (#16).
//!
//! A lazy restore (`crate::history::restore::restore_lazy`) fetches and
//! checks every envelope of the chain but no pack part: it keeps each
//! snapshot's part index instead (where each object of its remote pack
//! parts is: `pack::PartEntry`), in `<data dir>/lazy/remote-index`. A read
//! of an object the local index does not hold comes here ([`Lazy::fetch`]):
//! a ranged GET of its record, the record header checked, the object's tag
//! and id checked (the same checks as `Repo::put_sealed`), and only then
//! is it kept, sealed as it came, under `<data dir>/lazy/objects/` and
//! returned. A wrong index entry or a rewritten part costs a fetch of the
//! whole part; an object that does not verify, is not on the remote, or
//! does not arrive within the timeout is an error (EIO through the mount,
//! with a log line), never other bytes.
//!
//! Architecture Invariant: sealed bytes only, as in the rest of `repo/`;
//! the keys are the agent's, handed in for the check.

use super::pack::{self, PartEntry, RECORD_HEADER};
use super::remote::Remote;
use crate::fsutil::Dir;
use crate::seal::envelope;
use crate::seal::keys::{AgentId, AgentKeys};
use crate::seal::tree::{ObjectId, ObjectKind};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The directory of a lazily restored data dir's fetch state.
pub const LAZY_DIR: &str = "lazy";
/// The part indexes of every snapshot the restore took, in one file.
pub const REMOTE_INDEX: &str = "remote-index";
/// The URL of the remote the restore took the data dir from (what the
/// command line tools fetch from when not told otherwise).
pub const REMOTE_URL: &str = "remote-url";
/// Present while a lazy restore runs (removed once it is whole).
pub const RESTORING: &str = "restoring";
/// Fetched objects, one file each: kind byte, then the sealed bytes.
const OBJECTS: &str = "objects";
/// Magic of [`REMOTE_INDEX`].
const MAGIC: &[u8; 8] = b"SOVLAZY1";

/// How long a read waits for an object from the remote by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one object is on the remote.
#[derive(Clone, Copy, Debug)]
struct Place {
    seq: u64,
    entry: PartEntry,
}

/// One snapshot's part index as the restore fetched it.
#[derive(Clone, Debug)]
pub struct SnapshotIndex {
    /// The snapshot.
    pub seq: u64,
    /// Its envelope hash (names its parts on the remote).
    pub hash: [u8; 32],
    /// Where each object of its parts is.
    pub entries: Vec<PartEntry>,
}

/// Writes the remote index of a lazy restore into `data`'s lazy dir
/// (durably: the data dir is useless without it).
pub fn write_remote_index(data: &Dir, remote: &Remote, indexes: &[SnapshotIndex]) -> Result<()> {
    let dir = data.ensure_sub(LAZY_DIR)?;
    dir.ensure_sub(OBJECTS)?;
    // Kept only when it holds no password (one in config.json, or given
    // on the command line, stays there).
    if super::remote::shown(remote.url()) == remote.url() {
        dir.write_atomic(REMOTE_URL, remote.url().as_bytes(), 0o600, true)?;
    }
    store_remote_index(&dir, indexes)
}

/// The URL of the remote `data` was lazily restored from, if it was.
pub fn remote_url(data: &Dir) -> Result<Option<String>> {
    let Some(dir) = data.sub_if_exists(LAZY_DIR)? else {
        return Ok(None);
    };
    Ok(dir
        .read(REMOTE_URL)?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// [`MAGIC`], then per snapshot: seq u64 LE, envelope hash, the length
/// (u32 LE) of its part index, the part index.
fn store_remote_index(dir: &Dir, indexes: &[SnapshotIndex]) -> Result<()> {
    let mut b = MAGIC.to_vec();
    for s in indexes {
        let index = pack::encode_index(&s.entries);
        b.extend_from_slice(&s.seq.to_le_bytes());
        b.extend_from_slice(&s.hash);
        b.extend_from_slice(&(index.len() as u32).to_le_bytes());
        b.extend_from_slice(&index);
    }
    dir.write_atomic(REMOTE_INDEX, &b, 0o600, true)
}

/// Reads back what [`write_remote_index`] wrote.
fn read_remote_index(raw: &[u8]) -> Result<Vec<SnapshotIndex>> {
    let bad = |d: &str| Error::corrupt(format!("{LAZY_DIR}/{REMOTE_INDEX}"), d.to_owned());
    let mut rest = raw
        .strip_prefix(&MAGIC[..])
        .ok_or_else(|| bad("bad magic"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 44 {
            return Err(bad("truncated"));
        }
        let seq = u64::from_le_bytes(rest[..8].try_into().expect("8"));
        let hash: [u8; 32] = rest[8..40].try_into().expect("32");
        let len = u32::from_le_bytes(rest[40..44].try_into().expect("4")) as usize;
        rest = &rest[44..];
        if rest.len() < len {
            return Err(bad("truncated"));
        }
        let entries = pack::decode_index(seq, &rest[..len])?;
        out.push(SnapshotIndex { seq, hash, entries });
        rest = &rest[len..];
    }
    Ok(out)
}

/// Drops from `indexes` the places of objects a redaction erased from the
/// snapshots it lists (`erased(seq, id)`): those are never fetched, while
/// the same bytes stored again by a later snapshot still are.
pub fn drop_erased(indexes: &mut [SnapshotIndex], erased: impl Fn(u64, &ObjectId) -> bool) {
    for s in indexes {
        let seq = s.seq;
        s.entries.retain(|e| !erased(seq, &e.id));
    }
}

/// The places (the first of each object), the envelope hashes, and the
/// snapshots with any entry, of a remote index.
type Places = (
    HashMap<ObjectId, Place>,
    HashMap<u64, [u8; 32]>,
    std::collections::HashSet<u64>,
);

fn places_of(indexes: &[SnapshotIndex]) -> Places {
    let mut places = HashMap::new();
    let mut hashes = HashMap::new();
    let mut held = std::collections::HashSet::new();
    for s in indexes {
        for &entry in &s.entries {
            places
                .entry(entry.id)
                .or_insert(Place { seq: s.seq, entry });
        }
        hashes.insert(s.seq, s.hash);
        if !s.entries.is_empty() {
            held.insert(s.seq);
        }
    }
    (places, hashes, held)
}

/// What [`Lazy`] did so far (`sovseal status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Objects the remote index names.
    pub remote_objects: u64,
    /// Objects fetched from the remote by this handle.
    pub fetched: u64,
    /// Their sealed bytes.
    pub fetched_bytes: u64,
    /// Fetches that failed (not there, did not verify, timed out).
    pub failed: u64,
}

/// The remote a [`Lazy`] fetches from, with the thread that drives it.
struct Driver {
    remote: Remote,
    handle: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    timeout: Duration,
}

impl Driver {
    fn start(remote: Remote, timeout: Duration) -> Result<Driver> {
        let rt = super::remote::runtime()?;
        let handle = rt.handle().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("sovseal-fetch".into())
            .spawn(move || {
                // Drives the fetches spawned on `handle` until the driver
                // is dropped.
                rt.block_on(async move {
                    while !stopping.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            })
            .map_err(|e| Error::io("fetch thread", e))?;
        Ok(Driver {
            remote,
            handle,
            stop,
            timeout,
        })
    }
}

/// The remote every lazily restored data dir this process opens fetches
/// from.
static PROCESS_REMOTE: std::sync::RwLock<Option<Arc<Driver>>> = std::sync::RwLock::new(None);

/// Whether this process has a remote for lazily restored data dirs.
pub fn has_process_remote() -> bool {
    PROCESS_REMOTE.read().expect("process remote").is_some()
}

/// Makes `remote` the one lazily restored data dirs opened by this process
/// fetch from, each object waited for at most `timeout` (a mount sets it
/// before it opens the agent; the command line tools before they open
/// one).
pub fn use_remote(remote: Remote, timeout: Duration) -> Result<()> {
    let d = Arc::new(Driver::start(remote, timeout)?);
    *PROCESS_REMOTE.write().expect("process remote") = Some(d);
    Ok(())
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The fetcher of one lazily restored data dir.
pub struct Lazy {
    dir: Dir,
    objects: Dir,
    /// Whether fetched objects are kept here (a writer's handle; a
    /// reader's writes nothing, so it never leaves a copy behind a
    /// redaction another process runs meanwhile).
    keeps: bool,
    places: std::sync::RwLock<Places>,
    agent: AgentId,
    fetched: AtomicU64,
    fetched_bytes: AtomicU64,
    failed: AtomicU64,
}

impl Lazy {
    /// Opens the lazy state of `data`, if it was restored lazily; `keeps`:
    /// fetched objects are kept (a writer's handle).
    pub fn open(data: &Dir, agent: AgentId, keeps: bool) -> Result<Option<Lazy>> {
        let Some(dir) = data.sub_if_exists(LAZY_DIR)? else {
            return Ok(None);
        };
        let Some(raw) = dir.read(REMOTE_INDEX)? else {
            return Ok(None);
        };
        let places = places_of(&read_remote_index(&raw)?);
        Ok(Some(Lazy {
            objects: if keeps {
                dir.ensure_sub(OBJECTS)?
            } else {
                dir.sub(OBJECTS)?
            },
            keeps,
            dir,
            places: std::sync::RwLock::new(places),
            agent,
            fetched: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }))
    }

    /// What this handle did so far.
    pub fn stats(&self) -> LazyStats {
        LazyStats {
            remote_objects: self.places.read().expect("places").0.len() as u64,
            fetched: self.fetched.load(Ordering::Relaxed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// How many fetched objects are kept here.
    pub fn kept(&self) -> Result<u64> {
        let mut n = 0;
        for sub in self.objects.names()? {
            // A crash's leftover temp files (`.<name>.tmp.<random>`) are
            // not objects.
            n += self
                .objects
                .sub(&sub)?
                .names()?
                .iter()
                .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
                .count() as u64;
        }
        Ok(n)
    }

    /// The newest snapshot the restore took: the content of it and of
    /// every one before it is on the remote, not here.
    pub fn restored_head(&self) -> u64 {
        let places = self.places.read().expect("places");
        places.1.keys().copied().max().unwrap_or(0)
    }

    /// Whether the remote index names a place of `id` (one a redaction
    /// did not drop).
    pub fn knows(&self, id: &ObjectId) -> bool {
        self.places.read().expect("places").0.contains_key(id)
    }

    /// Whether the remote index names an object in snapshot `seq`'s parts
    /// (they must stay on the remote).
    pub fn holds(&self, seq: u64) -> bool {
        self.places.read().expect("places").2.contains(&seq)
    }

    /// The sealed bytes of object `id` of `kind`, verified (tag and id):
    /// kept here from an earlier fetch, or fetched now.
    pub fn fetch(&self, keys: &AgentKeys, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
        let name = crate::hex::encode(&id.0);
        let sub = &name[..2];
        let missing = || Error::MissingObject {
            id: id.to_hex(),
            kind: kind.name(),
            seq: 0,
        };
        // Only an object with a place is served, kept or not (a redaction
        // drops the place first).
        let place = self.places.read().expect("places").0.get(id).copied();
        let Some(place) = place else {
            return Err(missing());
        };
        if let Some(b) = self
            .objects
            .sub_if_exists(sub)?
            .and_then(|d| d.read(&name).ok().flatten())
        {
            if b.first() == Some(&(kind as u8)) && check(keys, kind, id, &b[1..]).is_ok() {
                return Ok(b[1..].to_vec());
            }
            // Cut by a crash, or not what it claims: fetched again.
            if let Some(d) = self.objects.sub_if_exists(sub)? {
                let _ = d.remove_file(&name);
            }
        }
        let driver = PROCESS_REMOTE.read().expect("process remote").clone();
        let Some(driver) = driver else {
            return Err(Error::Remote {
                op: "fetch".into(),
                detail: format!(
                    "{} {} is not fetched yet (this data dir was restored lazily) and no remote is attached: mount the agent with its remote",
                    kind.name(),
                    id.to_hex()
                ),
            });
        };
        let res = self.fetch_remote(&driver, keys, kind, id, place);
        match &res {
            Ok(sealed) => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                self.fetched_bytes
                    .fetch_add(sealed.len() as u64, Ordering::Relaxed);
                let mut b = Vec::with_capacity(1 + sealed.len());
                b.push(kind as u8);
                b.extend_from_slice(sealed);
                // Kept without a sync: one lost to a power cut is fetched
                // again.
                if self.keeps
                    && let Err(e) = self
                        .objects
                        .ensure_sub(sub)
                        .and_then(|d| d.write_atomic(&name, &b, 0o600, false))
                {
                    tracing::warn!("lazy restore: {} {name} not kept: {e}", kind.name());
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "lazy restore: {} {name} of snapshot {}: {e}",
                    kind.name(),
                    place.seq
                );
            }
        }
        res
    }

    fn fetch_remote(
        &self,
        driver: &Driver,
        keys: &AgentKeys,
        kind: ObjectKind,
        id: &ObjectId,
        place: Place,
    ) -> Result<Vec<u8>> {
        let hash = *self
            .places
            .read()
            .expect("places")
            .1
            .get(&place.seq)
            .expect("every place's snapshot");
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (remote, agent, id_owned) = (driver.remote.clone(), self.agent, *id);
        let timeout = driver.timeout;
        driver.handle.spawn(async move {
            // Bounded here too (a little later than the reader gives up),
            // so that a stalled remote does not pile up fetches.
            let fetched = tokio::time::timeout(
                timeout + Duration::from_secs(1),
                fetch_record(&remote, &agent, place, &hash, kind, &id_owned),
            )
            .await;
            if let Ok(r) = fetched {
                let _ = tx.send(r);
            }
        });
        let sealed = match rx.recv_timeout(timeout) {
            Ok(r) => r?,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                return Err(Error::Remote {
                    op: "fetch".into(),
                    detail: format!("no answer within {} s", timeout.as_secs_f64()),
                });
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(Error::Remote {
                    op: "fetch".into(),
                    detail: "the fetch was dropped (the process is stopping)".into(),
                });
            }
        };
        check(keys, kind, id, &sealed)?;
        Ok(sealed)
    }

    /// A redaction: the places `erased(seq, id)` names are never fetched
    /// from again (the remote index is rewritten without them, durably),
    /// and the kept copy of an object left with no place goes. A kept copy
    /// is served only while its object has a place, so a crash between
    /// the two steps serves nothing erased.
    /// Without `persist`, only this handle stops serving them.
    pub fn redact(&self, erased: &dyn Fn(u64, &ObjectId) -> bool, persist: bool) -> Result<()> {
        let mut places = self.places.write().expect("places");
        let raw = self.dir.read(REMOTE_INDEX)?.unwrap_or_default();
        let mut indexes = read_remote_index(&raw)?;
        let mut dropped = std::collections::BTreeSet::new();
        for s in &mut indexes {
            let seq = s.seq;
            s.entries.retain(|e| {
                let drop = erased(seq, &e.id);
                if drop {
                    dropped.insert(e.id);
                }
                !drop
            });
        }
        if dropped.is_empty() {
            return Ok(());
        }
        if !persist {
            *places = places_of(&indexes);
            return Ok(());
        }
        store_remote_index(&self.dir, &indexes)?;
        *places = places_of(&indexes);
        for id in dropped.iter().filter(|id| !places.0.contains_key(id)) {
            let name = crate::hex::encode(&id.0);
            if let Some(d) = self.objects.sub_if_exists(&name[..2])?
                && d.exists(&name)
            {
                d.remove_file(&name)?;
            }
        }
        Ok(())
    }
}

/// Checks that `sealed` opens as `id` of `kind` and hashes to it.
fn check(keys: &AgentKeys, kind: ObjectKind, id: &ObjectId, sealed: &[u8]) -> Result<()> {
    let (plain, v) = envelope::open_object_versioned(keys, kind, id, sealed)?;
    if envelope::object_id_v(keys, v, kind, &plain) != *id {
        return Err(Error::corrupt(
            format!("{} {}", kind.name(), id.to_hex()),
            "content does not hash to its id",
        ));
    }
    Ok(())
}

/// The sealed bytes of one object at `place`: its record by a ranged GET,
/// or, when the header there is not the object's (the part was rewritten
/// since the index was made), the whole part searched. Not verified here.
async fn fetch_record(
    remote: &Remote,
    agent: &AgentId,
    place: Place,
    hash: &[u8; 32],
    kind: ObjectKind,
    id: &ObjectId,
) -> Result<Vec<u8>> {
    let e = place.entry;
    let missing = || Error::MissingObject {
        id: id.to_hex(),
        kind: kind.name(),
        seq: place.seq,
    };
    if let Some(start) = u64::from(e.offset).checked_sub(RECORD_HEADER) {
        let end = u64::from(e.offset) + u64::from(e.len);
        if let Ok(Some(b)) = remote
            .get_pack_range(agent, place.seq, hash, e.part, start..end)
            .await
            && let Some(h) = b.first_chunk::<{ RECORD_HEADER as usize }>()
        {
            let (hid, hkind, hlen) = pack::decode_header(h);
            if hid == *id && hkind == kind as u8 && hlen as usize == b.len() - h.len() {
                return Ok(b[h.len()..].to_vec());
            }
        }
    }
    let mut part = 0;
    while let Some(bytes) = remote.get_pack(agent, place.seq, hash, part).await? {
        if let Some((_, _, sealed)) = pack::decode_part(place.seq, &bytes)?
            .into_iter()
            .find(|(oid, k, _)| oid == id && *k == kind)
        {
            return Ok(sealed.to_vec());
        }
        part += 1;
    }
    Err(missing())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(seq: u64, part: u32, bytes: &[u8], i: usize) -> Place {
        Place {
            seq,
            entry: pack::part_entries(seq, part, bytes).unwrap()[i],
        }
    }

    /// A fetch reads the record an entry points at; a wrong entry (a part
    /// rewritten since) costs a fetch of the whole part, never other
    /// bytes; an object the part does not hold is missing.
    #[test]
    fn a_fetch_checks_the_header_and_falls_back_to_the_part() {
        let rt = super::super::remote::runtime().unwrap();
        let remote = Remote::open("memory://").unwrap();
        let agent = crate::seal::keys::MasterKey::from_bytes([3; 32]).agent_id("a");
        let hash = [5; 32];
        let (a, b) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let mut p = pack::PACK_MAGIC.to_vec();
        pack::encode_record(&mut p, &a, ObjectKind::Chunk, b"first");
        pack::encode_record(&mut p, &b, ObjectKind::Chunk, b"second!");
        rt.block_on(remote.put_pack(&agent, 7, &hash, 0, p.clone()))
            .unwrap();
        let get = |place: Place, id: &ObjectId| {
            rt.block_on(fetch_record(
                &remote,
                &agent,
                place,
                &hash,
                ObjectKind::Chunk,
                id,
            ))
        };
        assert_eq!(get(place(7, 0, &p, 1), &b).unwrap(), b"second!");
        // The entry of `a` asked for `b`: the header there is not `b`'s.
        assert_eq!(get(place(7, 0, &p, 0), &b).unwrap(), b"second!");
        // A kind that does not match is not that object.
        let wrong_kind = rt.block_on(fetch_record(
            &remote,
            &agent,
            place(7, 0, &p, 0),
            &hash,
            ObjectKind::DirNode,
            &a,
        ));
        assert!(matches!(wrong_kind, Err(Error::MissingObject { .. })));
        let absent = ObjectId([9; 32]);
        assert!(matches!(
            get(place(7, 0, &p, 0), &absent),
            Err(Error::MissingObject { .. })
        ));
    }

    /// The remote index reads back what was written; a redaction drops
    /// the places of the objects it erases from the snapshots it lists only.
    #[test]
    fn the_remote_index_round_trips_and_a_redaction_drops_places() {
        let e = |id: u8| PartEntry {
            id: ObjectId([id; 32]),
            kind: ObjectKind::Chunk,
            part: 0,
            offset: 45,
            len: 3,
        };
        let mut idx = vec![
            SnapshotIndex {
                seq: 1,
                hash: [1; 32],
                entries: vec![e(1), e(2)],
            },
            SnapshotIndex {
                seq: 2,
                hash: [2; 32],
                entries: vec![e(1)],
            },
        ];
        let tmp = tempfile::tempdir().unwrap();
        let data = Dir::create_root(tmp.path()).unwrap();
        let remote = Remote::open("memory://").unwrap();
        write_remote_index(&data, &remote, &idx).unwrap();
        let agent = crate::seal::keys::MasterKey::from_bytes([3; 32]).agent_id("a");
        let l = Lazy::open(&data, agent, true).unwrap().unwrap();
        assert_eq!(l.stats().remote_objects, 2);
        assert!(l.holds(1) && l.holds(2), "any entry holds the parts");
        assert_eq!(remote_url(&data).unwrap().as_deref(), Some("memory://"));
        drop_erased(&mut idx, |seq, id| seq == 1 && *id == ObjectId([1; 32]));
        assert_eq!(idx[0].entries, vec![e(2)]);
        assert_eq!(idx[1].entries, vec![e(1)], "written again later: kept");
        let l2 = Lazy::open(&data, agent, true).unwrap().unwrap();
        l2.redact(&|seq, id| seq == 1 && *id == ObjectId([1; 32]), true)
            .unwrap();
        assert!(l2.holds(2), "the later place serves");
        let raw = data
            .sub(LAZY_DIR)
            .unwrap()
            .read(REMOTE_INDEX)
            .unwrap()
            .unwrap();
        let back = read_remote_index(&raw).unwrap();
        assert_eq!(back[0].entries, vec![e(2)]);
        assert_eq!(back[1].entries, vec![e(1)]);
        assert!(read_remote_index(&raw[..raw.len() - 1]).is_err());
    }
}
