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
//! A walk that needs many objects before it can go on asks for them
//! together: a delta chain's deltas (`Repo::fetch_deltas_ahead`: the part
//! indexes of their snapshots through [`Lazy::find_home`] and
//! [`Lazy::find_homes`], the objects [`Lazy::placed`] there through
//! [`Lazy::fetch_all_at_once`]), the head's metadata after a mount
//! ([`Lazy::fetch_ahead`]).
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
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The directory of a lazily restored data dir's fetch state.
pub const LAZY_DIR: &str = "lazy";
/// The part indexes of every snapshot the restore took, in one file.
pub const REMOTE_INDEX: &str = "remote-index";
/// The URL of the remote the restore took the data dir from (what the
/// command line tools fetch from when not told otherwise).
pub const REMOTE_URL: &str = "remote-url";
/// Fetched objects, one file each: kind byte, then the sealed bytes.
const OBJECTS: &str = "objects";
/// The part indexes of the history before a flat start
/// (`crate::history::older`), one file per batch fetched, named by its
/// oldest snapshot, each in [`REMOTE_INDEX`]'s format.
const OLDER: &str = "older";
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
    store_index_file(dir, REMOTE_INDEX, indexes)
}

/// Writes one part index file (durably).
fn store_index_file(dir: &Dir, name: &str, indexes: &[SnapshotIndex]) -> Result<()> {
    let mut b = MAGIC.to_vec();
    for s in indexes {
        let index = pack::encode_index(&s.entries);
        b.extend_from_slice(&s.seq.to_le_bytes());
        b.extend_from_slice(&s.hash);
        b.extend_from_slice(&(index.len() as u32).to_le_bytes());
        b.extend_from_slice(&index);
    }
    dir.write_atomic(name, &b, 0o600, true)
}

/// Every part index file of a lazy dir, oldest snapshots first: those of
/// the history before a flat start ([`OLDER`], by their oldest snapshot),
/// then the restore's [`REMOTE_INDEX`]. Each with the name of its
/// [`OLDER`] file (`None`: [`REMOTE_INDEX`]; a redaction rewrites the ones
/// it changes).
fn index_files(dir: &Dir) -> Result<Vec<(Option<String>, Vec<SnapshotIndex>)>> {
    let mut out = Vec::new();
    if let Some(older) = dir.sub_if_exists(OLDER)? {
        let mut names: Vec<(u64, String)> = older
            .names()?
            .into_iter()
            .filter_map(|n| {
                let n = n.into_string().ok()?;
                Some((n.parse::<u64>().ok()?, n))
            })
            .collect();
        names.sort();
        for (_, name) in names {
            let raw = older.read(&name)?.unwrap_or_default();
            let indexes = read_remote_index(&raw, &format!("{LAZY_DIR}/{OLDER}/{name}"))?;
            out.push((Some(name), indexes));
        }
    }
    let raw = dir.read(REMOTE_INDEX)?.unwrap_or_default();
    let indexes = read_remote_index(&raw, &format!("{LAZY_DIR}/{REMOTE_INDEX}"))?;
    out.push((None, indexes));
    Ok(out)
}

/// Reads back what [`store_remote_index`] wrote (`shown`: the file, for
/// errors).
fn read_remote_index(raw: &[u8], shown: &str) -> Result<Vec<SnapshotIndex>> {
    let bad = |d: &str| Error::corrupt(shown, d.to_owned());
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

/// What a redaction erased, as [`Lazy::keep_erased`] is told.
type Erased = Box<dyn Fn(u64, &ObjectId) -> bool + Send + Sync>;

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

/// The remote lazily restored data dirs opened by this process fetch
/// from, if one was given ([`use_remote`]).
pub fn process_remote() -> Option<Remote> {
    PROCESS_REMOTE
        .read()
        .expect("process remote")
        .as_ref()
        .map(|d| d.remote.clone())
}

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

/// How long a read waits for an object: the process remote's timeout.
fn wait_limit() -> Duration {
    PROCESS_REMOTE
        .read()
        .expect("process remote")
        .as_ref()
        .map_or(DEFAULT_TIMEOUT, |d| d.timeout)
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
    /// Whether the part indexes and rows of a flat start's older history
    /// are still coming ([`Lazy::set_filling`]), and a count of what came
    /// (each batch's part indexes, then its rows): an object without a
    /// place, or a `.snapshots/` request, waits for them
    /// ([`Lazy::wait_for_older`]; up to the fetch timeout without news).
    filling: Mutex<(bool, u64)>,
    /// The first snapshot held since the older history's last batch of
    /// rows came in this process (`u64::MAX`: none came).
    older_from: AtomicU64,
    /// Signalled when places or rows come in or the filling ends.
    grew: Condvar,
    /// The oldest snapshot whose part index the restore took (a flat
    /// start's first), and what [`Lazy::find_home`] asked for before the
    /// older history brought it: chain segments (their first snapshots)
    /// and snapshots asked for or answered alone (`seq | ALONE`).
    homes: Mutex<(u64, std::collections::HashSet<u64>)>,
    /// What the redaction records here erased (`erased(seq, id)`):
    /// never given a place by [`Lazy::find_home`].
    erased: std::sync::RwLock<Option<Erased>>,
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
        if !dir.exists(REMOTE_INDEX) {
            return Ok(None);
        }
        let all: Vec<SnapshotIndex> = index_files(&dir)?
            .into_iter()
            .flat_map(|(_, i)| i)
            .collect();
        let oldest = all.iter().map(|s| s.seq).min().unwrap_or(0);
        let places = places_of(&all);
        Ok(Some(Lazy {
            objects: if keeps {
                dir.ensure_sub(OBJECTS)?
            } else {
                dir.sub(OBJECTS)?
            },
            keeps,
            dir,
            places: std::sync::RwLock::new(places),
            filling: Mutex::new((false, 0)),
            older_from: AtomicU64::new(u64::MAX),
            grew: Condvar::new(),
            homes: Mutex::new((oldest, Default::default())),
            erased: std::sync::RwLock::new(None),
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

    /// Whether a flat start's older history is being fetched here (see
    /// [`Lazy::set_filling`]).
    pub fn is_filling(&self) -> bool {
        self.filling.lock().expect("filling").0
    }

    /// Whether the part indexes of older history are still coming (a
    /// flat start's, [`Lazy::add_older`]): while they are, a read of an
    /// object without a place, or a `.snapshots/` request, waits for them.
    /// Set by whoever fetches them; cleared when done or stopped, which
    /// wakes every waiter.
    pub fn set_filling(&self, filling: bool) {
        self.filling.lock().expect("filling").0 = filling;
        self.grew.notify_all();
    }

    /// Adds the part indexes of snapshots older than any held (a flat
    /// start's history, fetched in the background), in a file of their
    /// own, durably, before they serve (and before the caller inserts their
    /// index rows). Their places come first, as if the restore had taken
    /// them; waiting reads look again.
    pub fn add_older(&self, mut indexes: Vec<SnapshotIndex>) -> Result<()> {
        let Some(oldest) = indexes.iter().map(|s| s.seq).min() else {
            return Ok(());
        };
        indexes.sort_by_key(|s| s.seq);
        let older = self.dir.ensure_sub(OLDER)?;
        // (The new directory's entry too: the file inside must be found.)
        self.dir.sync()?;
        store_index_file(&older, &oldest.to_string(), &indexes)?;
        {
            let mut places = self.places.write().expect("places");
            let (p, hashes, held) = &mut *places;
            // Newest first, so that each object's oldest place stays.
            for s in indexes.iter().rev() {
                for &entry in &s.entries {
                    p.insert(entry.id, Place { seq: s.seq, entry });
                }
                hashes.insert(s.seq, s.hash);
                if !s.entries.is_empty() {
                    held.insert(s.seq);
                }
            }
        }
        // (Metadata homed from here on has its place: no segment to ask.)
        let mut homes = self.homes.lock().expect("homes");
        homes.0 = homes.0.min(oldest);
        drop(homes);
        self.filling.lock().expect("filling").1 += 1;
        self.grew.notify_all();
        Ok(())
    }

    /// Remembers what the redaction records here erase (`erased(seq,
    /// id)`), so that part indexes fetched later ([`Lazy::find_home`])
    /// give it no place either.
    pub fn keep_erased(&self, erased: impl Fn(u64, &ObjectId) -> bool + Send + Sync + 'static) {
        *self.erased.write().expect("erased") = Some(Box::new(erased));
    }

    /// Before a read of an object stored at `home` (a metadata object's
    /// snapshot, [`crate::seal::tree::ObjRef`]) older than any part index
    /// here (a flat start whose older history is still coming): fetches
    /// the part indexes of its chain segment (or its snapshot's own
    /// files), so that the read need not wait for the whole older history.
    /// Unchecked against the chain: an index only says where to look, and
    /// every object fetched through it is verified (tag and id) as any. A
    /// failure leaves the read to wait as it would.
    /// Returns false when the remote did not answer in time, or no remote
    /// is attached.
    pub fn find_home(&self, home: u64) -> bool {
        self.ask_homes(&[home], false)
    }

    /// After [`Lazy::find_home`] of one snapshot of each range `homes`
    /// fall in: the part indexes of those that did not come with it (a
    /// range without a chain segment, outside the tail segment), each from
    /// its snapshot's own files, the requests at once (at most 16 in
    /// flight). Returns false when the remote did not answer them all in
    /// time (what came is taken).
    pub fn find_homes(&self, homes: &[u64]) -> bool {
        self.ask_homes(homes, true)
    }

    /// Fetches the part indexes of `homes` not here yet: through their
    /// range's chain segment or the tail segment first unless `own_only`.
    /// Waits up to the fetch timeout without an answer.
    fn ask_homes(&self, homes: &[u64], own_only: bool) -> bool {
        let ask: Vec<u64> = {
            let mut known = self.homes.lock().expect("homes");
            homes
                .iter()
                .copied()
                .filter(|&home| {
                    // Asked for: the range (its segment brought every
                    // member's index) or the snapshot alone (a range
                    // without a segment: its own index only; another home
                    // of the range is asked for again).
                    home != 0
                        && home < known.0
                        && !known.1.contains(&super::segment::first_of(home))
                        && known.1.insert(home | ALONE)
                })
                .collect()
        };
        if ask.is_empty() {
            return true;
        }
        let Some(driver) = PROCESS_REMOTE.read().expect("process remote").clone() else {
            let mut known = self.homes.lock().expect("homes");
            for home in ask {
                known.1.remove(&(home | ALONE));
            }
            return false;
        };
        // (Answers as they come: a stalled remote leaves those that came.)
        let (tx, rx) = crossbeam_channel::unbounded();
        let (remote, agent, asked) = (driver.remote.clone(), self.agent, ask.clone());
        driver.handle.spawn(async move {
            use futures::StreamExt;
            let mut answers = futures::stream::iter(asked)
                .map(|home| {
                    let remote = remote.clone();
                    async move { (home, home_indexes(&remote, &agent, home, own_only).await) }
                })
                .buffer_unordered(AHEAD_IN_FLIGHT);
            while let Some(answer) = answers.next().await {
                if tx.send(answer).is_err() {
                    break;
                }
            }
        });
        let mut answers = Vec::new();
        while answers.len() < ask.len() {
            match rx.recv_timeout(driver.timeout) {
                Ok(answer) => answers.push(answer),
                Err(_) => break,
            }
        }
        let all_came = answers.len() == ask.len();
        let mut indexes = Vec::new();
        {
            let mut known = self.homes.lock().expect("homes");
            if !all_came {
                // (Asked again by the next read that needs one.)
                let answered: std::collections::HashSet<u64> =
                    answers.iter().map(|(home, _)| *home).collect();
                for home in ask.iter().filter(|h| !answered.contains(h)) {
                    known.1.remove(&(home | ALONE));
                }
                tracing::debug!(
                    "part indexes of {} snapshots: no answer",
                    ask.len() - answered.len()
                );
            }
            for (home, answer) in answers {
                match answer {
                    Ok((i, whole)) => {
                        if whole {
                            known.1.insert(super::segment::first_of(home));
                        }
                        // (Each snapshot whose index came: not asked for
                        // again.)
                        known.1.extend(i.iter().map(|s| s.seq | ALONE));
                        indexes.extend(i);
                    }
                    Err(e) => {
                        known.1.remove(&(home | ALONE));
                        tracing::debug!("part indexes of snapshot {home} not fetched ahead: {e}");
                    }
                }
            }
        }
        let erased = self.erased.read().expect("erased");
        let mut places = self.places.write().expect("places");
        let (p, hashes, _) = &mut *places;
        for s in indexes {
            for &entry in &s.entries {
                if !erased.as_ref().is_some_and(|f| f(s.seq, &entry.id)) {
                    p.entry(entry.id).or_insert(Place { seq: s.seq, entry });
                }
            }
            hashes.entry(s.seq).or_insert(s.hash);
        }
        drop(places);
        // (Another read waiting for a place from the same segment.)
        let _filling = self.filling.lock().expect("filling");
        self.grew.notify_all();
        all_came
    }

    /// The objects of `kind` the remote index places in snapshots `seqs`,
    /// with the snapshot of each (a scan of every place: for a walk about
    /// to read many of them, not for one read).
    pub fn placed(&self, kind: ObjectKind, seqs: std::ops::Range<u64>) -> Vec<(ObjectId, u64)> {
        self.places
            .read()
            .expect("places")
            .0
            .iter()
            .filter(|(_, p)| p.entry.kind == kind && seqs.contains(&p.seq))
            .map(|(id, p)| (*id, p.seq))
            .collect()
    }

    /// The place of `id`; while older part indexes are coming, waits for
    /// them when it has none yet: as long as they come (content stored
    /// early in a long history comes last), up to the fetch timeout
    /// without a new batch.
    fn place_of(&self, id: &ObjectId) -> Option<Place> {
        let place = || self.places.read().expect("places").0.get(id).copied();
        if let Some(p) = place() {
            return Some(p);
        }
        let mut found = None;
        self.wait_for_older(|| {
            found = place();
            found.is_some()
        });
        found
    }

    /// Waits until `done()` while a flat start's older history is coming
    /// ([`Lazy::set_filling`]): as long as batches keep coming, up to the
    /// fetch timeout without a new one. Returns whether `done()` held.
    /// `done` runs under the wait's lock: it must not call back here.
    pub fn wait_for_older(&self, mut done: impl FnMut() -> bool) -> bool {
        let limit = wait_limit();
        let mut filling = self.filling.lock().expect("filling");
        let (mut seen, mut deadline) = (filling.1, Instant::now() + limit);
        loop {
            if done() {
                return true;
            }
            if filling.1 != seen {
                (seen, deadline) = (filling.1, Instant::now() + limit);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !filling.0 || left.is_zero() {
                return false;
            }
            filling = self.grew.wait_timeout(filling, left).expect("filling").0;
        }
    }

    /// Tells the waiters that a batch of the older history's rows is in,
    /// down to snapshot `from` (after its part indexes:
    /// [`Lazy::add_older`]).
    pub fn older_rows_in(&self, from: u64) {
        let mut filling = self.filling.lock().expect("filling");
        self.older_from.fetch_min(from, Ordering::Relaxed);
        filling.1 += 1;
        self.grew.notify_all();
    }

    /// The first snapshot held since the older history's last batch of
    /// rows came in this process (`u64::MAX`: none came yet). For a
    /// [`Lazy::wait_for_older`] condition: it takes no lock.
    pub fn older_from(&self) -> u64 {
        self.older_from.load(Ordering::Relaxed)
    }

    /// Whether the remote index names a place of `id` (one a redaction
    /// did not drop).
    pub fn knows(&self, id: &ObjectId) -> bool {
        self.places.read().expect("places").0.contains_key(id)
    }

    /// The kind of object `id` as the remote index names it (`None`: no
    /// place of it on the remote).
    pub fn kind_of(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.places
            .read()
            .expect("places")
            .0
            .get(id)
            .map(|p| p.entry.kind)
    }

    /// Whether a copy of `id` is kept here (not checked: a read checks it).
    pub fn is_kept(&self, id: &ObjectId) -> bool {
        let name = crate::hex::encode(&id.0);
        self.objects
            .sub_if_exists(&name[..2])
            .ok()
            .flatten()
            .is_some_and(|d| d.exists(&name))
    }

    /// Whether fetched objects are kept here (a writer's handle).
    pub fn keeps(&self) -> bool {
        self.keeps
    }

    /// Whether the remote index names an object in snapshot `seq`'s parts
    /// (they must stay on the remote).
    pub fn holds(&self, seq: u64) -> bool {
        self.places.read().expect("places").2.contains(&seq)
    }

    /// The sealed bytes of object `id` of `kind`, verified (tag and id):
    /// kept here from an earlier fetch, or fetched now.
    pub fn fetch(&self, keys: &AgentKeys, kind: ObjectKind, id: &ObjectId) -> Result<Vec<u8>> {
        self.fetch_many(keys, kind, std::slice::from_ref(id))
            .pop()
            .expect("one result per id")
    }

    /// The sealed bytes of objects `ids` of `kind`, each as [`Lazy::fetch`]
    /// gives it, in order. Those not kept here are fetched together: one
    /// ranged GET per run of neighbouring records in one part (a file's
    /// chunks are uploaded together, so the chunks of one read are mostly
    /// one run), a few runs in flight at once; the read fails when the
    /// remote answers none of them for the timeout.
    pub fn fetch_many(
        &self,
        keys: &AgentKeys,
        kind: ObjectKind,
        ids: &[ObjectId],
    ) -> Vec<Result<Vec<u8>>> {
        self.fetch_many_with(keys, kind, ids, RUNS_IN_FLIGHT)
    }

    /// As [`Lazy::fetch_many`], for objects fetched ahead of any read
    /// (metadata spread over many snapshots' parts: a run each, mostly),
    /// more runs in flight.
    pub fn fetch_ahead(
        &self,
        keys: &AgentKeys,
        kind: ObjectKind,
        ids: &[ObjectId],
    ) -> Vec<Result<Vec<u8>>> {
        self.fetch_many_with(keys, kind, ids, AHEAD_IN_FLIGHT)
    }

    /// As [`Lazy::fetch_many`], for objects a reader waits for all of
    /// before it can go on (a delta chain's, one run each mostly): many
    /// more runs in flight.
    pub fn fetch_all_at_once(
        &self,
        keys: &AgentKeys,
        kind: ObjectKind,
        ids: &[ObjectId],
    ) -> Vec<Result<Vec<u8>>> {
        self.fetch_many_with(keys, kind, ids, ALL_IN_FLIGHT)
    }

    fn fetch_many_with(
        &self,
        keys: &AgentKeys,
        kind: ObjectKind,
        ids: &[ObjectId],
        in_flight: usize,
    ) -> Vec<Result<Vec<u8>>> {
        let mut out: Vec<Option<Result<Vec<u8>>>> = ids.iter().map(|_| None).collect();
        let mut wanted = Vec::new();
        // (Once one object waited for older part indexes in vain, the
        // others of this read do not wait again.)
        let mut wait = true;
        for (i, id) in ids.iter().enumerate() {
            match self.kept_copy(keys, kind, id, wait) {
                Ok(Some(Ok(b))) => out[i] = Some(Ok(b)),
                Ok(Some(Err(place))) => wanted.push((i, place)),
                Ok(None) => {
                    wait = false;
                    out[i] = Some(Err(Error::MissingObject {
                        id: id.to_hex(),
                        kind: kind.name(),
                        seq: 0,
                    }))
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !wanted.is_empty() {
            let fetched = match PROCESS_REMOTE.read().expect("process remote").clone() {
                Some(driver) => self.fetch_remote(&driver, kind, ids, &wanted, in_flight),
                None => wanted
                    .iter()
                    .map(|&(i, _)| {
                        Err(Error::Remote {
                            op: "fetch".into(),
                            detail: format!(
                                "{} {} is not fetched yet (this data dir was restored lazily) and no remote is attached: mount the agent with its remote",
                                kind.name(),
                                ids[i].to_hex()
                            ),
                        })
                    })
                    .collect(),
            };
            for (&(i, place), res) in wanted.iter().zip(fetched) {
                let res = res.and_then(|sealed| {
                    check(keys, kind, &ids[i], &sealed)?;
                    Ok(sealed)
                });
                self.took(kind, &ids[i], place, &res);
                out[i] = Some(res);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every id answered"))
            .collect()
    }

    /// The kept copy of `id` (`Some(Ok)`), or where to fetch it from
    /// (`Some(Err(place))`), or `None` when the remote index names no place
    /// of it (with `wait`, after waiting for older part indexes while they
    /// come: [`Lazy::place_of`]). Only an object with a place is served,
    /// kept or not (a redaction drops the place first).
    #[allow(clippy::type_complexity)]
    fn kept_copy(
        &self,
        keys: &AgentKeys,
        kind: ObjectKind,
        id: &ObjectId,
        wait: bool,
    ) -> Result<Option<std::result::Result<Vec<u8>, Place>>> {
        let name = crate::hex::encode(&id.0);
        let sub = &name[..2];
        let place = match wait {
            true => self.place_of(id),
            false => self.places.read().expect("places").0.get(id).copied(),
        };
        let Some(place) = place else {
            return Ok(None);
        };
        if let Some(b) = self
            .objects
            .sub_if_exists(sub)?
            .and_then(|d| d.read(&name).ok().flatten())
        {
            if b.first() == Some(&(kind as u8)) && check(keys, kind, id, &b[1..]).is_ok() {
                return Ok(Some(Ok(b[1..].to_vec())));
            }
            // Cut by a crash, or not what it claims: fetched again.
            if let Some(d) = self.objects.sub_if_exists(sub)? {
                let _ = d.remove_file(&name);
            }
        }
        Ok(Some(Err(place)))
    }

    /// Counts, keeps (a writer's handle) or logs one object fetched from
    /// `place`.
    fn took(&self, kind: ObjectKind, id: &ObjectId, place: Place, res: &Result<Vec<u8>>) {
        let name = crate::hex::encode(&id.0);
        match res {
            Ok(sealed) => {
                self.fetched.fetch_add(1, Ordering::Relaxed);
                self.fetched_bytes
                    .fetch_add(sealed.len() as u64, Ordering::Relaxed);
                let mut b = Vec::with_capacity(1 + sealed.len());
                b.push(kind as u8);
                b.extend_from_slice(sealed);
                // Kept without a sync (nor its directory's): one lost to a
                // power cut is fetched again.
                if self.keeps
                    && let Err(e) = self
                        .objects
                        .ensure_sub_unsynced(&name[..2])
                        .and_then(|d| d.write_atomic(&name, &b, 0o600, false))
                {
                    tracing::warn!("lazy restore: {} {name} not kept: {e}", kind.name());
                }
                // A redaction that dropped its place while it was fetched
                // may have looked for copies before this one was written:
                // it goes now (a redaction drops the place, then the
                // copies; one of the two sees it).
                if self.keeps && !self.knows(id) {
                    let _ = self
                        .objects
                        .sub_if_exists(&name[..2])
                        .ok()
                        .flatten()
                        .map(|d| d.remove_file(&name));
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
    }

    /// The sealed bytes of `wanted` (index into `ids`, place), in order,
    /// not checked yet: runs of neighbouring records fetched together, at
    /// most [`RUNS_IN_FLIGHT`] at a time. The reader gives up when no run
    /// has come back for the timeout (a stalled remote); a slow one that
    /// keeps answering is waited for.
    fn fetch_remote(
        &self,
        driver: &Driver,
        kind: ObjectKind,
        ids: &[ObjectId],
        wanted: &[(usize, Place)],
        in_flight: usize,
    ) -> Vec<Result<Vec<u8>>> {
        let runs = runs(wanted);
        let jobs: Vec<Job> = {
            let places = self.places.read().expect("places");
            runs.iter()
                .enumerate()
                .map(|(r, run)| {
                    let seq = wanted[run[0]].1.seq;
                    let members = run
                        .iter()
                        .map(|&w| (ids[wanted[w].0], wanted[w].1))
                        .collect();
                    // (A hash a redaction dropped meanwhile names no part:
                    // the fetch finds nothing.)
                    let hash = places.1.get(&seq).copied().unwrap_or_default();
                    (r, hash, members)
                })
                .collect()
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let (remote, agent, timeout) = (driver.remote.clone(), self.agent, driver.timeout);
        let no_answer = move || Error::Remote {
            op: "fetch".into(),
            detail: format!("no answer within {} s", timeout.as_secs_f64()),
        };
        driver.handle.spawn(async move {
            use futures::StreamExt;
            let remote = &remote;
            let mut done = futures::stream::iter(jobs)
                .map(|(r, hash, members)| async move {
                    // Bounded here too (a little later than the reader
                    // gives up), so that a stalled remote does not pile up
                    // fetches.
                    let fetched = tokio::time::timeout(
                        timeout + Duration::from_secs(1),
                        fetch_run(remote, &agent, &hash, kind, &members),
                    )
                    .await;
                    let results = fetched
                        .unwrap_or_else(|_| members.iter().map(|_| Err(no_answer())).collect());
                    (r, results)
                })
                .buffer_unordered(in_flight);
            while let Some(x) = done.next().await {
                if tx.send(x).is_err() {
                    break;
                }
            }
        });
        let mut out: Vec<Option<Result<Vec<u8>>>> = wanted.iter().map(|_| None).collect();
        let mut last = std::time::Instant::now();
        for _ in 0..runs.len() {
            match rx.recv_deadline(last + timeout) {
                Ok((r, results)) => {
                    for (&w, res) in runs[r].iter().zip(results) {
                        out[w] = Some(res);
                    }
                    last = std::time::Instant::now();
                }
                Err(e) => {
                    let gone = |_| match e {
                        crossbeam_channel::RecvTimeoutError::Timeout => no_answer(),
                        crossbeam_channel::RecvTimeoutError::Disconnected => Error::Remote {
                            op: "fetch".into(),
                            detail: "the fetch was dropped (the process is stopping)".into(),
                        },
                    };
                    for o in out.iter_mut().filter(|o| o.is_none()) {
                        *o = Some(Err(gone(())));
                    }
                    break;
                }
            }
        }
        out.into_iter()
            .map(|r| r.expect("every run answered"))
            .collect()
    }

    /// A redaction: the places `erased(seq, id)` names are never fetched
    /// from again (the remote index is rewritten without them, durably),
    /// and the kept copy of an object left with no place goes. A kept copy
    /// is served only while its object has a place, so a crash between
    /// the two steps serves nothing erased.
    /// Without `persist`, only this handle stops serving them.
    pub fn redact(&self, erased: &dyn Fn(u64, &ObjectId) -> bool, persist: bool) -> Result<()> {
        let mut places = self.places.write().expect("places");
        let mut files = index_files(&self.dir)?;
        let mut dropped = std::collections::BTreeSet::new();
        // The files an entry went from.
        let mut changed = Vec::new();
        for (i, (_, indexes)) in files.iter_mut().enumerate() {
            let mut any = false;
            for s in indexes.iter_mut() {
                let seq = s.seq;
                s.entries.retain(|e| {
                    let drop = erased(seq, &e.id);
                    if drop {
                        dropped.insert(e.id);
                        any = true;
                    }
                    !drop
                });
            }
            if any {
                changed.push(i);
            }
        }
        if dropped.is_empty() {
            return Ok(());
        }
        let all: Vec<SnapshotIndex> = files.iter().flat_map(|(_, i)| i.clone()).collect();
        if !persist {
            *places = places_of(&all);
            self.homes.lock().expect("homes").1.clear();
            return Ok(());
        }
        // (The places fetched for homes are not in the files: fetched
        // again when wanted.)
        self.homes.lock().expect("homes").1.clear();
        for i in changed {
            match &files[i] {
                (None, indexes) => store_remote_index(&self.dir, indexes)?,
                (Some(name), indexes) => store_index_file(&self.dir.sub(OLDER)?, name, indexes)?,
            }
        }
        *places = places_of(&all);
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

/// The part indexes of the chain segment holding snapshot `home` (every
/// member that has one and decodes), or of the tail segment's members when
/// it holds `home`, or of `home` alone from its own files when neither
/// does (at once with `own_only`: both were asked for already).
async fn home_indexes(
    remote: &Remote,
    agent: &AgentId,
    home: u64,
    own_only: bool,
) -> Result<(Vec<SnapshotIndex>, bool)> {
    let first = super::segment::first_of(home);
    if !own_only
        && let Some(b) = remote.get_segment(agent, first).await?
        && let Ok(members) = super::segment::decode(first, &b)
    {
        return Ok((member_indexes(first, members), true));
    }
    // The tail segment, when it holds `home` (the range after the last
    // chain segment: a delta chain's homes mostly lie there).
    if !own_only
        && let Some(b) = remote.get_tail(agent).await?
        && let Ok((tail_first, members)) = super::segment::decode_tail(&b)
        && (tail_first..tail_first + members.len() as u64).contains(&home)
    {
        let indexes = member_indexes(tail_first, members);
        if indexes.iter().any(|s| s.seq == home) {
            return Ok((indexes, false));
        }
    }
    let Some(raw) = remote.get_envelope(agent, home).await? else {
        return Ok((Vec::new(), false));
    };
    let hash = envelope::Envelope::from_json(&raw)?.hash();
    let Some(index) = remote.get_index(agent, home, &hash).await? else {
        return Ok((Vec::new(), false));
    };
    let indexes = vec![SnapshotIndex {
        seq: home,
        hash,
        entries: pack::decode_index(home, &index)?,
    }];
    Ok((indexes, false))
}

/// The part indexes a segment's members from `first` on hold (those whose
/// envelope and index decode: an index only says where to look).
fn member_indexes(first: u64, members: Vec<super::segment::Member>) -> Vec<SnapshotIndex> {
    members
        .into_iter()
        .zip(first..)
        .filter_map(|(m, seq)| {
            let hash = envelope::Envelope::from_json(&m.envelope).ok()?.hash();
            let entries = pack::decode_index(seq, m.index.as_deref()?).ok()?;
            Some(SnapshotIndex { seq, hash, entries })
        })
        .collect()
}

/// Marks a snapshot asked for alone in [`Lazy::find_home`]'s set, apart
/// from the ranges (their first snapshots, far below).
const ALONE: u64 = 1 << 63;

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

/// One run to fetch: its number, the envelope hash naming its snapshot's
/// parts, and its records (id, place) in part order.
type Job = (usize, [u8; 32], Vec<(ObjectId, Place)>);

/// Largest ranged GET that fetches a run of neighbouring records: two
/// 1 MiB chunks of an older agent, or a FUSE read's 16 chunks of 64 KiB
/// with their record headers and tags.
const RUN_BYTES: u64 = 2 << 20;

/// Runs fetched at once for one read.
const RUNS_IN_FLIGHT: usize = 4;
/// Runs fetched at once ahead of any read ([`Lazy::fetch_ahead`]), and
/// part indexes asked for at once ([`Lazy::find_homes`]).
const AHEAD_IN_FLIGHT: usize = 16;
/// Runs fetched at once for a reader that waits for them all
/// ([`Lazy::fetch_all_at_once`]).
const ALL_IN_FLIGHT: usize = 64;

/// `wanted` (places) grouped into runs: records of one part that follow
/// one another (no byte between them), together at most [`RUN_BYTES`].
/// Each run lists indexes into `wanted`, in part order.
fn runs(wanted: &[(usize, Place)]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    let key = |w: usize| {
        let p = wanted[w].1;
        (p.seq, p.entry.part, p.entry.offset)
    };
    order.sort_by_key(|&w| key(w));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut run_end = (0u64, 0u32, 0u64, 0u64); // seq, part, start, end
    for w in order {
        let (seq, part, offset) = key(w);
        let e = wanted[w].1.entry;
        let start = u64::from(offset).saturating_sub(RECORD_HEADER);
        let end = u64::from(offset) + u64::from(e.len);
        match out.last_mut() {
            Some(run)
                if (run_end.0, run_end.1) == (seq, part)
                    && start == run_end.3
                    && end - run_end.2 <= RUN_BYTES =>
            {
                run.push(w);
                run_end.3 = end;
            }
            _ => {
                out.push(vec![w]);
                run_end = (seq, part, start, end);
            }
        }
    }
    out
}

/// The sealed bytes of each of `members` (neighbouring records of one part,
/// in part order): one ranged GET of them all, each record's header
/// checked. Those not where their entries say (the part was rewritten
/// since the index was made), or all of them when the range cannot be read
/// (a rewritten part may now end before it), are searched for in the
/// snapshot's parts, once for all ([`search_parts`]). Not verified here.
async fn fetch_run(
    remote: &Remote,
    agent: &AgentId,
    hash: &[u8; 32],
    kind: ObjectKind,
    members: &[(ObjectId, Place)],
) -> Vec<Result<Vec<u8>>> {
    if let [(id, place)] = members {
        return vec![fetch_record(remote, agent, *place, hash, kind, id).await];
    }
    let first = members[0].1;
    let last = members[members.len() - 1].1.entry;
    let end = u64::from(last.offset) + u64::from(last.len);
    let bytes = match u64::from(first.entry.offset).checked_sub(RECORD_HEADER) {
        None => None,
        Some(start) => remote
            .get_pack_range(agent, first.seq, hash, first.entry.part, start..end)
            .await
            .ok()
            .flatten()
            .map(|b| (start, b)),
    };
    let mut out: Vec<Option<Result<Vec<u8>>>> = members
        .iter()
        .map(|(id, place)| {
            let (start, b) = bytes.as_ref()?;
            record_at(b, *start, place.entry, id, kind).map(Ok)
        })
        .collect();
    let stale: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
    if !stale.is_empty() {
        let ids: Vec<ObjectId> = stale.iter().map(|&i| members[i].0).collect();
        let found = search_parts(remote, agent, first.seq, hash, kind, &ids).await;
        for (i, r) in stale.into_iter().zip(found) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.expect("every member answered"))
        .collect()
}

/// The sealed bytes of the record of `id` and `kind` that `entry` places
/// in `b` (bytes of a part from offset `start`), if its header says so.
fn record_at(
    b: &[u8],
    start: u64,
    entry: PartEntry,
    id: &ObjectId,
    kind: ObjectKind,
) -> Option<Vec<u8>> {
    let at = usize::try_from(u64::from(entry.offset).checked_sub(RECORD_HEADER + start)?).ok()?;
    let h = b.get(at..)?.first_chunk::<{ RECORD_HEADER as usize }>()?;
    let body = b.get(at + h.len()..at + h.len() + entry.len as usize)?;
    let (hid, hkind, hlen) = pack::decode_header(h);
    (hid == *id && hkind == kind as u8 && hlen == entry.len).then(|| body.to_vec())
}

/// The sealed bytes of one object at `place`: its record by a ranged GET,
/// or, when the header there is not the object's (the part was rewritten
/// since the index was made), found by [`search_parts`]. Not verified here.
async fn fetch_record(
    remote: &Remote,
    agent: &AgentId,
    place: Place,
    hash: &[u8; 32],
    kind: ObjectKind,
    id: &ObjectId,
) -> Result<Vec<u8>> {
    let e = place.entry;
    if let Some(start) = u64::from(e.offset).checked_sub(RECORD_HEADER) {
        let end = u64::from(e.offset) + u64::from(e.len);
        if let Ok(Some(b)) = remote
            .get_pack_range(agent, place.seq, hash, e.part, start..end)
            .await
            && let Some(body) = record_at(&b, start, e, id, kind)
        {
            return Ok(body);
        }
    }
    search_parts(
        remote,
        agent,
        place.seq,
        hash,
        kind,
        std::slice::from_ref(id),
    )
    .await
    .pop()
    .expect("one result")
}

/// The sealed bytes of each of `ids` (of `kind`) in the pack parts of
/// snapshot `seq`, read in order until all are found: one pass, whatever
/// the number of ids. One not there is missing; when a part cannot be read
/// or decoded, the first id still wanted gets that error and the others
/// an error pointing at it.
async fn search_parts(
    remote: &Remote,
    agent: &AgentId,
    seq: u64,
    hash: &[u8; 32],
    kind: ObjectKind,
    ids: &[ObjectId],
) -> Vec<Result<Vec<u8>>> {
    let mut out: Vec<Option<Result<Vec<u8>>>> = ids.iter().map(|_| None).collect();
    let mut part = 0;
    while out.iter().any(Option::is_none) {
        let recs = match remote.get_pack(agent, seq, hash, part).await {
            Ok(Some(bytes)) => pack::decode_part(seq, &bytes).map(|recs| {
                recs.into_iter()
                    .filter(|(_, k, _)| *k == kind)
                    .map(|(id, _, sealed)| (id, sealed.to_vec()))
                    .collect::<HashMap<_, _>>()
            }),
            Ok(None) => break,
            Err(e) => Err(e),
        };
        match recs {
            Ok(recs) => {
                for (o, id) in out.iter_mut().zip(ids).filter(|(o, _)| o.is_none()) {
                    if let Some(sealed) = recs.get(id) {
                        *o = Some(Ok(sealed.clone()));
                    }
                }
            }
            Err(e) => {
                let detail = format!("part {part} of snapshot {seq} could not be read: {e}");
                let mut first = Some(e);
                for o in out.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(Err(first.take().unwrap_or_else(|| Error::Remote {
                        op: "fetch".into(),
                        detail: detail.clone(),
                    })));
                }
            }
        }
        part += 1;
    }
    out.into_iter()
        .zip(ids)
        .map(|(o, id)| {
            o.unwrap_or_else(|| {
                Err(Error::MissingObject {
                    id: id.to_hex(),
                    kind: kind.name(),
                    seq,
                })
            })
        })
        .collect()
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

    /// An in-memory store that counts the reads asked of it.
    #[derive(Debug, Default)]
    struct Counting {
        inner: object_store::memory::InMemory,
        gets: AtomicU64,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// Neighbouring records of one part are fetched as one run, up to
    /// [`RUN_BYTES`]; a gap, another part or another snapshot starts a new
    /// run. A run's records come out as their own bytes, also when an
    /// entry is wrong or the part was rewritten shorter (the snapshot's
    /// parts are then searched once for all that were not found).
    #[test]
    fn neighbouring_records_are_fetched_as_one_run_each_checked() {
        let rt = super::super::remote::runtime().unwrap();
        let store = Arc::new(Counting::default());
        let remote = Remote::with_store(store.clone(), Default::default(), "counting://");
        let agent = crate::seal::keys::MasterKey::from_bytes([3; 32]).agent_id("a");
        let hash = [5; 32];
        let ids: Vec<ObjectId> = (1..=4).map(|i| ObjectId([i; 32])).collect();
        let mut p0 = pack::PACK_MAGIC.to_vec();
        for (i, id) in ids[..3].iter().enumerate() {
            pack::encode_record(&mut p0, id, ObjectKind::Chunk, &vec![i as u8; 10 + i]);
        }
        let mut p1 = pack::PACK_MAGIC.to_vec();
        pack::encode_record(&mut p1, &ids[3], ObjectKind::Chunk, b"other part");
        for (n, p) in [&p0, &p1].into_iter().enumerate() {
            rt.block_on(remote.put_pack(&agent, 7, &hash, n as u32, p.clone()))
                .unwrap();
        }
        let (a, b, c, d) = (
            place(7, 0, &p0, 0),
            place(7, 0, &p0, 1),
            place(7, 0, &p0, 2),
            place(7, 1, &p1, 0),
        );
        // In any order: a, b, c follow one another; d is in another part.
        let w = vec![(0, c), (1, d), (2, a), (3, b)];
        assert_eq!(runs(&w), vec![vec![2, 3, 0], vec![1]]);
        // a and c, without b between them: two runs.
        assert_eq!(runs(&[(0, a), (1, c)]), vec![vec![0], vec![1]]);
        // Another snapshot: another run.
        let other = Place { seq: 8, ..b };
        assert_eq!(runs(&[(0, a), (1, other)]), vec![vec![0], vec![1]]);
        // Past RUN_BYTES: split.
        let big = |offset: u32| Place {
            seq: 9,
            entry: PartEntry {
                offset,
                len: (RUN_BYTES / 2) as u32 - RECORD_HEADER as u32,
                ..a.entry
            },
        };
        let half = (RUN_BYTES / 2) as u32;
        let three = [(0, big(45)), (1, big(45 + half)), (2, big(45 + 2 * half))];
        assert_eq!(runs(&three), vec![vec![0, 1], vec![2]]);

        let fetch = |members: &[(ObjectId, Place)]| {
            rt.block_on(fetch_run(
                &remote,
                &agent,
                &hash,
                ObjectKind::Chunk,
                members,
            ))
            .into_iter()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
        };
        let want: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 10 + i]).collect();
        let gets = || store.gets.load(Ordering::Relaxed);
        let before = gets();
        assert_eq!(fetch(&[(ids[0], a), (ids[1], b), (ids[2], c)]), want);
        assert_eq!(gets() - before, 1, "one ranged GET for the run");
        // b's entry names c's record: b is still b's bytes, c still c's.
        let wrong = Place {
            seq: 7,
            entry: PartEntry {
                id: ids[1],
                ..c.entry
            },
        };
        let before = gets();
        assert_eq!(
            fetch(&[(ids[0], a), (ids[1], wrong), (ids[2], c)]),
            vec![want[0].clone(), want[1].clone(), want[2].clone()]
        );
        assert_eq!(gets() - before, 2, "the run, then part 0 searched for b");

        // Part 0 rewritten without b (as a redaction does): shorter, so the
        // run of a and c by their old entries reaches past its end. Both
        // are found in one search of the parts, which stops at part 0.
        let mut shorter = pack::PACK_MAGIC.to_vec();
        for i in [0, 2] {
            pack::encode_record(&mut shorter, &ids[i], ObjectKind::Chunk, &want[i]);
        }
        rt.block_on(remote.put_pack(&agent, 7, &hash, 0, shorter))
            .unwrap();
        let before = gets();
        assert_eq!(
            fetch(&[(ids[0], a), (ids[2], c)]),
            vec![want[0].clone(), want[2].clone()]
        );
        assert_eq!(gets() - before, 2, "the run, then one search");
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
        let back = read_remote_index(&raw, "t").unwrap();
        assert_eq!(back[0].entries, vec![e(2)]);
        assert_eq!(back[1].entries, vec![e(1)]);
        assert!(read_remote_index(&raw[..raw.len() - 1], "t").is_err());
    }
}
