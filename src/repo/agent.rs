//! Opening an agent's data dir: lock, index, head check, rollback check.
//!
//! [`Agent`] is the read side shared by the writer ([`crate::engine::Engine`])
//! and read-only tools (`sovseal verify`, `cat`, `snapshots`), which may run
//! while a mount holds the write lock. Opening checks the head cheaply
//! (envelope hash, tag, payload hash, parent link) and refuses a head older
//! than the last one this machine recorded (`$SOVSEAL_HOME/seen/<agent>`,
//! an HMAC'd record kept outside the data dir).

use crate::config::{AgentName, Home};
use crate::fsutil::Dir;
use crate::repo::Repo;
use crate::repo::index::{Index, NewObject, SnapshotMeta};
use crate::repo::store::Store;
use crate::repo::view::SnapshotView;
use crate::seal::envelope;
use crate::seal::keys::{AgentKeys, MasterKey};
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened agent: its repository and identity.
pub struct Agent {
    name: AgentName,
    home: Home,
    repo: Arc<Repo>,
    /// The seen-head record, open once the writer has recorded a head.
    seen: std::sync::Mutex<Option<(File, u64)>>,
    /// Snapshots whose forget record verified (records are only ever
    /// added, and a valid one cannot be forged, so the answer holds).
    forgotten: std::sync::Mutex<BTreeSet<u64>>,
}

/// Length of one slot of the seen-head record: `v1 <seq, 20 digits> <hash
/// hex> <mac hex>\n`.
const SEEN_SLOT: usize = 3 + 20 + 1 + 64 + 1 + 64 + 1;

/// The exclusive write lock of an agent's data dir, held while alive.
pub struct WriteLock {
    lock: nix::fcntl::Flock<File>,
}

/// The data dir's subdirectory of redaction records.
pub const REDACTIONS_DIR: &str = "redactions";

/// The lock file holds the writer's pid, then what it is doing: nothing
/// more for a command, `mount <mountpoint>` for a mount daemon while it
/// serves, `stopping` once it has started its last commit. A new writer
/// refuses at once unless the holder is stopping or serves a mountpoint
/// that is no longer mounted: then it waits for it, bounded.
const STOPPING: &str = "stopping";
/// See [`STOPPING`].
const SERVING: &str = "mount";

/// Longest wait for a stopping writer to finish its last commit.
const STOPPING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl WriteLock {
    /// Marks the lock as held by a writer that is finishing: a new writer
    /// waits for it (bounded) instead of refusing.
    pub fn mark_stopping(&self) {
        self.rewrite(STOPPING);
    }

    /// Marks the lock as held by a mount daemon serving `mountpoint`: once
    /// that is no longer mounted, a new writer waits for this one.
    pub fn mark_serving(&self, mountpoint: &Path) {
        self.rewrite(&format!("{SERVING} {}", mountpoint.display()));
    }

    fn rewrite(&self, state: &str) {
        use std::os::unix::fs::FileExt;
        // The new line first, then the length: a reader sees the old line
        // or the new one as the first line, never an empty file.
        let line = format!("{} {state}\n", std::process::id());
        let r = self
            .lock
            .write_all_at(line.as_bytes(), 0)
            .and_then(|()| self.lock.set_len(line.len() as u64));
        if let Err(e) = r {
            tracing::warn!("lock file: could not record {state:?}: {e}");
        }
    }
}

/// Whether the holder described by a lock file's text is on its way out:
/// stopping, or serving a mountpoint that is no longer mounted.
fn holder_finishing(text: &str) -> bool {
    let mut words = text.lines().next().unwrap_or("").splitn(3, ' ');
    let _pid = words.next();
    match (words.next(), words.next()) {
        (Some(STOPPING), None) => true,
        (Some(SERVING), Some(mnt)) => crate::sys::mounted_at(Path::new(mnt)).is_none(),
        _ => false,
    }
}

/// `repo`, serving what a lazy restore left on the remote when `data` was
/// restored lazily ([`crate::repo::lazy`]).
fn with_lazy(repo: Repo, data: &Dir, writer: bool) -> Result<Arc<Repo>> {
    if let Some(l) = crate::repo::lazy::Lazy::open(data, repo.keys().agent_id(), writer)? {
        repo.set_lazy(l);
    }
    Ok(Arc::new(repo))
}

impl Agent {
    /// Opens an existing agent for reading. Takes no lock.
    pub fn open_readonly(home: &Home, name: &AgentName, master: &MasterKey) -> Result<Self> {
        let index_path = home.index_path(name);
        if !home.has_agent(name) {
            return Err(Error::NoSuchAgent(name.to_string()));
        }
        refuse_stopped_restore(home, name)?;
        // The same checks as a writer's, so a reader never follows a
        // symlink planted for the agent's data dir either.
        let data = home.agent_data(name)?;
        let dir = data.path().to_owned();
        let keys = master.agent_keys(name.as_str());
        recover_unheld(home, &data, name, &keys)?;
        let index = Index::open(&index_path, false)?;
        check_agent_id(&index, &keys, name, false)?;
        let store = Store::open_readonly(&dir.join("packs"));
        let agent = Agent {
            name: name.clone(),
            home: home.clone(),
            repo: with_lazy(Repo::new(keys, store, index), &data, false)?,
            seen: Default::default(),
            forgotten: Default::default(),
        };
        agent.head()?;
        Ok(agent)
    }

    /// Recovers `name` after an unclean stop (`recover_tail`) unless a
    /// writer holds it: what a check that reads the index before the
    /// writer opens it runs first, so that an index whose rows a power cut
    /// lost is rebuilt from the packs before it is judged.
    pub fn recover_if_unheld(home: &Home, name: &AgentName, master: &MasterKey) -> Result<()> {
        if !home.has_agent(name) {
            return Ok(());
        }
        refuse_stopped_restore(home, name)?;
        let data = home.agent_data(name)?;
        recover_unheld(home, &data, name, &master.agent_keys(name.as_str()))
    }

    /// Opens (creating if asked) an agent for writing: the lock, the index,
    /// the packs (cut back to their committed length). A data dir a restore
    /// left part-filled ([`RESTORING`]) is refused: it holds only what the
    /// restore fetched, and the next mount starts it over
    /// ([`discard_stopped_restore`]).
    pub(crate) fn open_writer(
        home: &Home,
        name: &AgentName,
        master: &MasterKey,
        create: bool,
    ) -> Result<(Self, WriteLock)> {
        if !home.has_agent(name) && !create {
            return Err(Error::NoSuchAgent(name.to_string()));
        }
        let dir = home.ensure_agent_data(name)?;
        let lock = lock(&dir, name)?;
        refuse_stopped_restore(home, name)?;
        Self::open_locked(home, name, master, dir, lock)
    }

    /// Creates the data dir of `name` for a restore, marked [`RESTORING`]
    /// (durably, before anything else is in it) until
    /// [`Agent::finish_restore`]: a restore that stops before then leaves
    /// a data dir nothing opens and the next mount starts over. Refused,
    /// under the write lock, unless the data dir holds nothing yet (another
    /// process may have created the agent since the caller looked).
    pub(crate) fn create_for_restore(
        home: &Home,
        name: &AgentName,
        master: &MasterKey,
    ) -> Result<(Self, WriteLock)> {
        let dir = home.ensure_agent_data(name)?;
        let lock = lock(&dir, name)?;
        let held: Vec<_> = dir.names()?.into_iter().filter(|n| n != "lock").collect();
        if !held.is_empty() || !history_evidence(home, name, None, false)?.is_empty() {
            return Err(Error::Invalid(format!(
                "agent {name} already has local data in {}; restore only into an empty data dir",
                dir.path().display()
            )));
        }
        dir.write_atomic(RESTORING, b"", 0o600, true)?;
        Self::open_locked(home, name, master, dir, lock)
    }

    /// Ends a restore: the data dir is whole (synced by the caller) and
    /// opens like any other from now on.
    pub(crate) fn finish_restore(&self) -> Result<()> {
        let data = self.data()?;
        data.remove_file(RESTORING)?;
        data.sync()
    }

    fn open_locked(
        home: &Home,
        name: &AgentName,
        master: &MasterKey,
        dir: Dir,
        lock: WriteLock,
    ) -> Result<(Self, WriteLock)> {
        let keys = master.agent_keys(name.as_str());
        let mut index = Index::open(&dir.join(crate::config::INDEX_FILE), true)?;
        check_agent_id(&index, &keys, name, true)?;
        let packs = dir.ensure_sub("packs")?;
        // Read through their own checked descriptor before the writer
        // opens (and may cut or remove) any pack.
        let reader = Store::open_checked_readonly(dir.sub("packs")?);
        recover_tail(&mut index, &packs, &reader, &keys)?;
        refuse_unindexed_packs(home, &index, &packs, &reader, name)?;
        drop(reader);
        let store = Store::open_writer(packs, &index.packs()?)?;
        Ok((
            Agent {
                seen: Default::default(),
                forgotten: Default::default(),
                name: name.clone(),
                home: home.clone(),
                repo: with_lazy(Repo::new(keys, store, index), &dir, true)?,
            },
            lock,
        ))
    }

    /// The agent's name.
    pub fn name(&self) -> &AgentName {
        &self.name
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.home.agent_dir(&self.name)
    }

    /// The data dir, opened and checked (see [`crate::fsutil::Dir`]): what
    /// every record written into it goes through.
    pub fn data(&self) -> Result<Dir> {
        self.home.agent_data(&self.name)
    }

    pub(crate) fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Whether the data dir holds any redaction record (what they say is
    /// `history::redact`'s to read).
    pub fn holds_redaction_records(&self) -> Result<bool> {
        Ok(match self.data()?.sub_if_exists(REDACTIONS_DIR)? {
            Some(d) => !d.json_names()?.is_empty(),
            None => false,
        })
    }

    /// A WAL checkpointer for this agent's index, on a connection of its
    /// own, for a thread beside the writer ([`Index::checkpointer`]).
    pub fn wal_checkpointer(&self) -> Result<crate::repo::index::Checkpointer> {
        self.repo.index()?.checkpointer()
    }

    /// Opens snapshot `seq`: its envelope from the index, the recorded hash
    /// against the envelope, then tag and payload hash. A forgotten snapshot
    /// is refused ([`Error::Forgotten`]): its content may be gone.
    pub fn snapshot(&self, seq: u64) -> Result<SnapshotView> {
        if self.is_forgotten(seq)? {
            return Err(Error::Forgotten(seq));
        }
        self.snapshot_unchecked(seq)
    }

    /// The forgotten snapshots: every forget row, its record verified
    /// against its snapshot's recorded hash.
    pub fn forgotten_seqs(&self) -> Result<BTreeSet<u64>> {
        let rows = self.repo.index()?.forgotten()?;
        let keys = self.repo.keys();
        let mut out = BTreeSet::new();
        for (seq, (raw, _)) in rows {
            let hash = self.repo.index()?.stored_hash(seq)?;
            crate::seal::forget::ForgetRecord::parse(&raw, keys, seq, hash.as_ref())?;
            out.insert(seq);
        }
        Ok(out)
    }

    /// Whether snapshot `seq` was forgotten: a forget row whose signed
    /// record names this snapshot (sequence and envelope hash). A row whose
    /// record does not verify hides nothing: it is an integrity error.
    pub fn is_forgotten(&self, seq: u64) -> Result<bool> {
        if self.forgotten.lock().expect("forgotten").contains(&seq) {
            return Ok(true);
        }
        let Some(raw) = self.repo.index()?.forget_record(seq)? else {
            return Ok(false);
        };
        // The snapshot's envelope, checked against its recorded hash, says
        // which key version the record must at least be signed under.
        let env = self.envelope(seq)?;
        let hash = env.hash();
        if self.repo.index()?.stored_hash(seq)? != Some(hash) {
            return Err(Error::ChainBroken {
                seq,
                detail: "the index's recorded hash does not match the envelope".into(),
            });
        }
        let r = crate::seal::forget::ForgetRecord::parse(&raw, self.repo.keys(), seq, Some(&hash))?;
        crate::seal::record::check_in_force(&r, seq, env.key_version)?;
        self.forgotten.lock().expect("forgotten").insert(seq);
        Ok(true)
    }

    /// Like [`Agent::snapshot`], forgotten or not (verification and prune
    /// look at the envelope and what is still referenced).
    pub fn snapshot_unchecked(&self, seq: u64) -> Result<SnapshotView> {
        let (env, stored) = {
            let idx = self.repo.index()?;
            let env = idx
                .envelope(&self.repo.keys().agent_id(), seq)?
                .ok_or(Error::NoSuchSnapshot(seq))?;
            (env, idx.stored_hash(seq)?)
        };
        let hash = env.hash();
        if stored != Some(hash) {
            return Err(Error::ChainBroken {
                seq,
                detail: "the index's recorded hash does not match the envelope".into(),
            });
        }
        let m = envelope::open_manifest(self.repo.keys(), &env)?;
        Ok(SnapshotView::new(self.repo.clone(), hash, m))
    }

    /// The bytes the metadata cache and the chunk cache hold (see
    /// [`Repo::cache_bytes`]).
    pub fn cache_bytes(&self) -> (usize, usize) {
        self.repo.cache_bytes()
    }

    /// The head, checked cheaply: envelope, parent link, and the rollback record.
    pub fn head(&self) -> Result<SnapshotView> {
        let seq = self
            .repo
            .index()?
            .head_seq()?
            .ok_or_else(|| Error::NoSuchAgent(self.name.to_string()))?;
        let view = self.snapshot(seq)?;
        // (The head of a flat start's first row: its link to the snapshot
        // before it is checked when that one's row is fetched, and a signed
        // checkpoint vouched for it.)
        let first = self.repo.index()?.history_from()?.unwrap_or(1);
        if seq > first {
            // The parent's envelope, checked against the head's link, so
            // that its key version is authentic: the head may not be
            // sealed under an older one (a retired key).
            let parent = self.envelope(seq - 1)?;
            let recorded = self.repo.index()?.stored_hash(seq - 1)?;
            if recorded != Some(view.manifest().parent) {
                return Err(Error::ChainBroken {
                    seq,
                    detail: "parent link does not match snapshot before it".into(),
                });
            }
            if recorded != Some(parent.hash()) {
                return Err(Error::ChainBroken {
                    seq: seq - 1,
                    detail: "the index's recorded hash does not match the envelope".into(),
                });
            }
            let head_env = self.envelope(seq)?;
            envelope::check_succession(parent.key_version, parent.format_version, &head_env)?;
        }
        self.check_seen(&view)?;
        Ok(view)
    }

    /// The envelope of snapshot `seq` as stored (not yet verified).
    pub fn envelope(&self, seq: u64) -> Result<crate::seal::envelope::Envelope> {
        self.repo
            .index()?
            .envelope(&self.repo.keys().agent_id(), seq)?
            .ok_or(Error::NoSuchSnapshot(seq))
    }

    /// The sealed bytes of an object as stored (ciphertext; not opened).
    pub fn sealed_object(&self, r: &crate::seal::tree::ObjRef) -> Result<Vec<u8>> {
        self.repo.stored_object(r)
    }

    /// Up to `limit` snapshots after `after`, from the index (nothing decrypted).
    /// Forgotten snapshots are left out once their forget record verifies.
    pub fn list(&self, after: u64, limit: u64) -> Result<Vec<SnapshotMeta>> {
        let mut out = Vec::new();
        let mut cursor = after;
        while (out.len() as u64) < limit {
            let page = self.repo.index()?.list(cursor, limit)?;
            let Some((last, _)) = page.last() else { break };
            cursor = last.seq;
            for (meta, forget_row) in page {
                if !(forget_row && self.is_forgotten(meta.seq)?) && (out.len() as u64) < limit {
                    out.push(meta);
                }
            }
        }
        Ok(out)
    }

    fn check_seen(&self, head: &SnapshotView) -> Result<()> {
        let path = self.home.seen_head_path(&self.name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        // Two slots, written in turn; the valid one with the higher sequence
        // counts. A slot that does not verify is ignored when the other one
        // does (a torn write loses one slot, never both); a forged slot
        // cannot raise the sequence without the key.
        let (best, bad) = text.lines().filter(|l| !l.trim().is_empty()).fold(
            (None, false),
            |(best, bad), line| match self.parse_seen(line) {
                Some(r) if best.is_none_or(|(s, _)| s < r.0) => (Some(r), bad),
                Some(_) => (best, bad),
                None => (best, true),
            },
        );
        let (seq, hash) = match (best, bad) {
            (Some(r), _) => r,
            (None, false) => return Ok(()),
            (None, true) => {
                return Err(Error::corrupt(
                    format!("seen-head record {}", path.display()),
                    "malformed or not sealed by this key",
                ));
            }
        };
        if head.seq() < seq {
            return Err(Error::Rollback {
                seen: seq,
                found: head.seq(),
            });
        }
        // The record pins (seq, hash): the chain must still hold that very
        // snapshot, so a longer fork does not replace the history this
        // machine saw without notice.
        let found = if head.seq() == seq {
            Some(head.hash())
        } else {
            self.repo.index()?.stored_hash(seq)?
        };
        if found != Some(hash) {
            return Err(Error::ChainBroken {
                seq,
                detail: format!(
                    "this machine recorded snapshot {seq} as {}, but the chain holds {}: forked or replaced",
                    crate::hex::encode(&hash),
                    found.map_or("nothing".into(), |h| crate::hex::encode(&h))
                ),
            });
        }
        Ok(())
    }

    /// One slot of the seen-head record, if it is well formed and its MAC
    /// verifies.
    fn parse_seen(&self, line: &str) -> Option<(u64, [u8; 32])> {
        let mut parts = line.split_whitespace();
        let (Some("v1"), Some(seq), Some(hash), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let seq: u64 = seq.parse().ok()?;
        let hash = crate::hex::decode32(hash)?;
        let mac = crate::hex::decode32(mac)?;
        self.repo
            .keys()
            .seen_head_verify(&seen_record(seq, &hash), &mac)
            .then_some((seq, hash))
    }

    /// Before a first snapshot: an index without snapshots on top of
    /// evidence of history is refused ([`Error::HistoryMissing`]), since
    /// starting the agent over would hide (and a later prune destroy) what
    /// it had.
    pub fn refuse_start_over(&self) -> Result<()> {
        let evidence = history_evidence(&self.home, &self.name, Some(&*self.repo.index()?), true)?;
        if evidence.is_empty() {
            return Ok(());
        }
        Err(Error::HistoryMissing {
            agent: self.name.to_string(),
            evidence: evidence.join("; "),
        })
    }

    /// Makes every snapshot up to `head` (already committed) durable: the
    /// packs synced, the index's durable point recorded, then `head`
    /// recorded as seen, so that the seen-head record only ever names a
    /// durable snapshot.
    pub fn make_durable(&self, head: &SnapshotView) -> Result<()> {
        self.sync_packs()?;
        self.record_durable(head.seq(), &head.hash())
    }

    /// The disk sync of [`Agent::make_durable`]: once it returns, every
    /// snapshot committed before it survives a power cut, so a caller may
    /// release those who wait for that (an `fsync`) before it calls
    /// [`Agent::record_durable`].
    pub fn sync_packs(&self) -> Result<()> {
        self.repo.sync_packs()
    }

    /// The rest of [`Agent::make_durable`], after [`Agent::sync_packs`]:
    /// the head it synced (sequence number `seq`, hash `hash`) recorded as
    /// the durable point (which gates replication) and as seen, neither
    /// synced (recovery and the rollback check only become more careful if
    /// a power cut loses them).
    pub fn record_durable(&self, seq: u64, hash: &[u8; 32]) -> Result<()> {
        self.repo.record_durable(seq)?;
        self.record_seen(seq, hash)
    }

    /// Records the head `seq`, `hash` as seen. Not fsynced: losing it on
    /// power failure only weakens the rollback check to an older head. The
    /// first record of a process rewrites the file atomically (both
    /// slots); later ones overwrite the slot of the head's parity in place,
    /// one small write per commit with no rename.
    fn record_seen(&self, seq: u64, hash: &[u8; 32]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self.home.seen_head_path(&self.name);
        let mac = self.repo.keys().seen_head_mac(&seen_record(seq, hash));
        let line = format!(
            "v1 {seq:020} {} {}\n",
            crate::hex::encode(hash),
            crate::hex::encode(&mac)
        );
        debug_assert_eq!(line.len(), SEEN_SLOT);
        let mut seen = self.seen.lock().expect("seen-head record");
        if let Some((f, last)) = seen.as_mut() {
            if seq <= *last {
                return Ok(());
            }
            *last = seq;
            let at = (seq % 2) * SEEN_SLOT as u64;
            return f
                .write_all_at(line.as_bytes(), at)
                .map_err(|e| Error::io(&path, e));
        }
        let dir = self.home.ensure()?.ensure_sub("seen")?;
        let name = self.name.as_str();
        dir.write_atomic(name, line.repeat(2).as_bytes(), 0o600, false)?;
        let f = dir.open_file(name, nix::fcntl::OFlag::O_WRONLY, 0)?;
        *seen = Some((f, seq));
        Ok(())
    }
}

/// Everything that says `name` had history on this machine, besides the
/// index's snapshots: the seen-head record (with `seen`), the index's other
/// rows, pack data, checkpoints, forget and redaction records, a journal.
pub fn history_evidence(
    home: &Home,
    name: &AgentName,
    index: Option<&Index>,
    seen: bool,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let seen_path = home.seen_head_path(name);
    if seen && std::fs::metadata(&seen_path).is_ok_and(|m| m.len() > 0) {
        out.push(format!("the seen-head record {}", seen_path.display()));
    }
    if let Some(index) = index {
        out.extend(index.history_traces()?);
    }
    let dir = home.agent_dir(name);
    let nonempty = |sub: &str| {
        std::fs::read_dir(dir.join(sub)).map_or(0, |rd| rd.filter_map(|e| e.ok()).count())
    };
    let packed: u64 = std::fs::read_dir(dir.join("packs")).map_or(0, |rd| {
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .map(|m| {
                m.len()
                    .saturating_sub(crate::repo::pack::PACK_MAGIC.len() as u64)
            })
            .sum()
    });
    if packed > 0 && index.is_none() {
        out.push(format!(
            "{packed} bytes of pack data in {}",
            dir.join("packs").display()
        ));
    }
    for (sub, what) in [
        ("checkpoints", "checkpoints"),
        (REDACTIONS_DIR, "redaction records"),
    ] {
        let n = nonempty(sub);
        if n > 0 {
            out.push(format!("{n} {what} in {}", dir.join(sub).display()));
        }
    }
    if std::fs::metadata(dir.join(super::journal::JOURNAL_FILE)).is_ok_and(|m| m.len() > 0) {
        out.push("an operation journal".into());
    }
    Ok(out)
}

/// Moves `name`'s data dir and seen-head record aside, under
/// `$SOVSEAL_HOME/discarded/<name>-<ms>/`, taking the writer lock first (a
/// mounted agent is refused). Nothing is deleted. Returns where they went.
pub fn discard_local(home: &Home, name: &AgentName) -> Result<PathBuf> {
    let dir = home.agent_dir(name);
    let seen = home.seen_head_path(name);
    if !dir.exists() && !seen.exists() {
        return Err(Error::NoSuchAgent(name.to_string()));
    }
    let _lock = if dir.exists() {
        Some(lock(&home.agent_data(name)?, name)?)
    } else {
        None
    };
    let root = home.dir()?;
    let to = root
        .ensure_sub("discarded")?
        .ensure_sub(format!("{name}-{}", crate::time::now_ms()))?;
    if dir.exists() {
        root.sub("agents")?.rename_to(name.as_str(), &to, "data")?;
    }
    if seen.exists() {
        root.sub("seen")?
            .rename_to(name.as_str(), &to, "seen-head")?;
    }
    Ok(to.path().to_owned())
}

/// Recovery after an unclean stop, before the packs are opened for
/// writing. The index commits without a sync and the packs are the commit
/// record, so after a power cut the two may disagree both ways:
///
/// 1. Cut back: index rows after the durable point whose objects did not
///    all reach the disk (tags checked, oldest first) are removed from the
///    first incomplete snapshot on; such a snapshot was never acknowledged
///    as durable.
/// 2. Catch up: snapshots whose objects and commit record reached the
///    packs but whose index rows were lost are committed again from the
///    packs ([`catch_up`]).
///
/// Between the two, packs shorter than the index says are fitted
/// ([`fit_short_packs`]). Then the packs read are synced and the head
/// recorded durable, in a synchronous transaction.
fn recover_tail(index: &mut Index, packs: &Dir, store: &Store, keys: &AgentKeys) -> Result<()> {
    let mut touched = BTreeSet::new();
    let mut changed = false;
    if let Some(head) = index.head_seq()? {
        match index.durable_seq()? {
            // Written before durability was recorded: every commit then synced.
            None => index.mark_durable(head)?,
            Some(durable) if durable < head => {
                cut_back(index, store, keys, durable, head, &mut touched)?;
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed |= fit_short_packs(index, packs, store, &mut touched, changed)?;
    let caught = catch_up(index, packs, store, keys, &mut touched)?;
    if caught > 0 {
        tracing::warn!(
            "recovered {caught} snapshot(s) from the commit records in the packs that the index had not yet recorded (the last writer stopped before it wrote their rows: a crash or a power cut)"
        );
    }
    if changed || caught > 0 {
        Store::sync_packs(packs.path(), &touched)?;
        if let Some(head) = index.head_seq()? {
            index.mark_durable(head)?;
        }
    }
    Ok(())
}

/// A reader that finds no writer holding the agent recovers it first, as
/// the next writer would (under the writer lock, which it then releases):
/// after a power cut the index may be behind the packs (its last rows
/// lost) or past them (rows whose objects were lost), and a reader must see
/// neither a false rollback nor a torn snapshot. A held agent was recovered
/// by its holder; one that becomes held meanwhile is left to it, and the
/// reader waits for the holder's index to follow its packs
/// ([`wait_for_holders_index`]).
fn recover_unheld(home: &Home, data: &Dir, name: &AgentName, keys: &AgentKeys) -> Result<()> {
    if writer_pid(home, name).is_some() {
        return wait_for_holders_index(data);
    }
    let _lock = match lock(data, name) {
        Ok(l) => l,
        Err(Error::Locked { .. }) => return wait_for_holders_index(data),
        Err(e) => return Err(e),
    };
    let mut index = Index::open(&data.join(crate::config::INDEX_FILE), true)?;
    check_agent_id(&index, keys, name, false)?;
    let Some(packs) = data.sub_if_exists("packs")? else {
        return Ok(());
    };
    let reader = Store::open_checked_readonly(data.sub("packs")?);
    recover_tail(&mut index, &packs, &reader, keys)
}

/// How long a reader beside a live writer waits for the writer's index to
/// reach the ends its packs had when the reader came.
const HOLDER_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A live writer seals snapshots into its packs at once and writes their
/// index rows a moment later (`Repo`'s flush; the mount within 25 ms), so
/// a reader in another process waits, bounded by [`HOLDER_INDEX_WAIT`],
/// until the index records each pack at least up to the last commit record
/// it held when the reader came: a snapshot sealed before `sovseal log`
/// started is listed. Objects past the last commit record (a file still
/// being written, sealed early) are not waited for, and a pack that
/// cannot be read (removed meanwhile) is left out; the reader then sees
/// what the index holds.
fn wait_for_holders_index(data: &Dir) -> Result<()> {
    let Some(packs) = data.sub_if_exists("packs")? else {
        return Ok(());
    };
    let path = data.join(crate::config::INDEX_FILE);
    if !path.exists() {
        return Ok(());
    }
    let magic = crate::repo::pack::PACK_MAGIC.len() as u64;
    let index = Index::open(&path, false)?;
    let recorded = index.packs()?;
    let numbers = crate::repo::store::pack_numbers(&packs)?;
    let store = Store::open_checked_readonly(packs);
    let mut sealed = std::collections::BTreeMap::new();
    for p in numbers {
        let from = recorded.get(&p).copied().unwrap_or(magic);
        let end = store
            .file_len(p)
            .and_then(|len| store.last_commit_end(p, from, len));
        match end {
            Ok(Some(end)) => {
                sealed.insert(p, end);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!("pack {p:08} left out of the wait for the writer's index: {e}")
            }
        }
    }
    let until = std::time::Instant::now() + HOLDER_INDEX_WAIT;
    while !sealed.is_empty() {
        if std::time::Instant::now() >= until {
            tracing::debug!("the writer's index is still behind its packs; reading what it holds");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let recorded = index.packs()?;
        sealed.retain(|p, end| recorded.get(p).is_none_or(|r| r < end));
    }
    Ok(())
}

/// Step 1 of [`recover_tail`]: keeps the snapshots after `durable` whose
/// new objects are all whole, up to the first one that is not.
fn cut_back(
    index: &Index,
    store: &Store,
    keys: &AgentKeys,
    durable: u64,
    head: u64,
    touched: &mut BTreeSet<u32>,
) -> Result<()> {
    let mut whole = durable;
    for seq in durable + 1..=head {
        let objects = index.objects_of(seq)?;
        let ok = objects.iter().all(|o| {
            store.read(&o.loc).is_ok_and(|sealed| {
                crate::seal::envelope::open_object(keys, o.kind, &o.id, &sealed).is_ok()
            })
        });
        if !ok {
            break;
        }
        touched.extend(objects.iter().map(|o| o.loc.pack));
        whole = seq;
    }
    if whole < head {
        tracing::warn!(
            "snapshots {}..={head} were not on stable storage when this agent last stopped (power cut?) and are incomplete; head is snapshot {whole}, the last durable one is {durable}",
            whole + 1
        );
        index.truncate_after(whole)?;
    }
    Ok(())
}

/// Between the steps of [`recover_tail`]: a pack shorter than its committed
/// length, whose every indexed object is still whole (step 1 cut back the
/// snapshots that lost one), lost only commit records past its last
/// object. The index commits without a sync, so a WAL sync made for
/// another transaction can carry a snapshot's rows to the disk before the
/// pack bytes of its commit record: after a power cut the pack ends inside
/// that record. The snapshot is kept (its envelope is in the index and
/// chains, its objects verify); its pack's committed length is lowered to
/// the end of its last object, a record boundary, from which step 2 reads
/// on. The lost records are written again there from the envelopes the
/// index holds ([`lost_records`]), so that an index lost later can still be
/// rebuilt from the packs past this snapshot, and the pack's committed
/// length is set to their end; the head is recorded durable in a
/// synchronous transaction before the agent opens. A pack cut short before
/// an indexed object lost synced data and is refused, as is a pack the
/// index lists that is gone. Returns whether a length changed.
///
/// After step 1 cut snapshots back (`after_cut`), every committed length
/// ends at its pack's last object, and the commit records that followed
/// it, whole or torn, lie past it, where the writer cuts them off. So a
/// pack holding bytes past its last object gets the same treatment: the
/// records of the snapshots kept are checked there and written again if
/// they are not whole.
fn fit_short_packs(
    index: &Index,
    packs: &Dir,
    store: &Store,
    touched: &mut BTreeSet<u32>,
    after_cut: bool,
) -> Result<bool> {
    let on_disk = crate::repo::store::pack_numbers(packs)?;
    let mut changed = false;
    for (pack, committed) in index.packs()? {
        if !on_disk.contains(&pack) {
            continue; // refused by the writer, naming it
        }
        let actual = store.file_len(pack)?;
        let objects_end = index
            .objects_end(pack)?
            .max(crate::repo::pack::PACK_MAGIC.len() as u64);
        if after_cut && actual >= committed && committed <= objects_end && actual > objects_end {
            let records = lost_records(index, pack)?;
            if records.is_empty() {
                continue;
            }
            let (end, wrote) =
                crate::repo::store::Store::rewrite_tail(packs, pack, objects_end, &records)?;
            if wrote {
                tracing::warn!(
                    "pack {pack:08}: the commit records after its last kept object were torn (power cut?) and were written again from the index"
                );
                touched.insert(pack);
            }
            index.set_pack_length(pack, end)?;
            changed = true;
            continue;
        }
        if actual >= committed {
            continue;
        }
        if objects_end > actual {
            return Err(Error::corrupt(
                format!(
                    "pack {}",
                    packs.path().join(format!("{pack:08}.pack")).display()
                ),
                format!(
                    "{actual} bytes, but its indexed objects end at {objects_end} ({committed} were committed)"
                ),
            ));
        }
        let records = lost_records(index, pack)?;
        let (end, _) = crate::repo::store::Store::rewrite_tail(packs, pack, objects_end, &records)?;
        tracing::warn!(
            "pack {pack:08} ends {} bytes short of its committed length, inside a commit record whose snapshot the index holds (power cut?); its objects are whole, the commit records after them were written again from the index",
            committed - actual
        );
        index.set_pack_length(pack, end)?;
        touched.insert(pack);
        changed = true;
    }
    Ok(changed)
}

/// The commit records that followed the last object of `pack`, encoded
/// again from the envelopes the index holds: the snapshot that object
/// belongs to, then each later one up to (not including) the first whose
/// objects went to a later pack, whose record therefore went there too.
/// A snapshot without new objects may have had its record rolled into the
/// next pack; a second copy of an identical record is passed over by the
/// rebuild.
fn lost_records(index: &Index, pack: u32) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let (Some(first), Some(head), Some(agent)) = (
        index.last_object_seq(pack)?,
        index.head_seq()?,
        index.agent_id()?,
    ) else {
        return Ok(buf);
    };
    for seq in first..=head {
        if index.objects_of(seq)?.iter().any(|o| o.loc.pack > pack) {
            break;
        }
        let env = index.envelope(&agent, seq)?.ok_or_else(|| {
            Error::corrupt(
                format!("snapshot {seq}"),
                "the index holds no envelope for it",
            )
        })?;
        crate::repo::pack::encode_commit(&mut buf, &env);
    }
    Ok(buf)
}

/// Step 2 of [`recover_tail`]: reads every pack past its committed length
/// (packs the index does not know from their start), in append order, and
/// commits each snapshot whose objects and commit record are all there and
/// verify: every object's tag, and the envelope hashing to its record,
/// extending the head (sequence, parent hash, key and format versions) and
/// opening. When an index commit failed and was retried, the pack holds a
/// commit record per attempt: the last one of a sequence number is the one
/// the index committed, so a snapshot is committed here only once the next
/// record shows no retry follows. Commit records of snapshots the index
/// already holds are passed over. The first record that is torn, unknown
/// or does not verify ends the scan: what follows was never synced, and the
/// writer cuts it off. Returns the number of snapshots committed.
fn catch_up(
    index: &mut Index,
    packs: &Dir,
    store: &Store,
    keys: &AgentKeys,
    touched: &mut BTreeSet<u32>,
) -> Result<u64> {
    use crate::repo::pack::{self, PACK_MAGIC, RECORD_HEADER, Record};
    use crate::repo::store::Location;
    let committed = index.packs()?;
    let on_disk = crate::repo::store::pack_numbers(packs)?;
    // From the first pack with bytes past its committed length on: appends
    // run through the packs in order.
    let magic = PACK_MAGIC.len() as u64;
    let start_of = |p: u32| committed.get(&p).copied().unwrap_or(magic);
    let mut first = None;
    for &p in &on_disk {
        if store.file_len(p)? > start_of(p) {
            first = Some(p);
            break;
        }
    }
    let Some(first) = first else {
        return Ok(0);
    };
    let mut scan = Scan {
        index,
        store,
        on_disk: &on_disk,
        first,
        touched,
        head: None,
        caught: 0,
    };
    if let Some(seq) = scan.index.head_seq()? {
        let env = scan
            .index
            .envelope(&keys.agent_id(), seq)?
            .ok_or(Error::NoSuchSnapshot(seq))?;
        scan.head = Some(env);
    }
    let mut objects: Vec<NewObject> = Vec::new();
    let mut candidate: Option<Candidate> = None;
    // The end of the last commit record passed over (already indexed), if
    // no snapshot was committed after it.
    let mut passed = None;
    'packs: for p in on_disk.range(first..).copied() {
        if !committed.contains_key(&p) && !store.has_magic(p)? {
            break;
        }
        let mut at = start_of(p);
        let size = store.file_len(p)?;
        while let Some((id, kind, body)) = store.read_record(p, at, size)? {
            let loc = Location {
                pack: p,
                offset: at + RECORD_HEADER,
                len: body.len() as u32,
            };
            at += RECORD_HEADER + body.len() as u64;
            match pack::decode_record(id, kind, &body) {
                Ok(Record::Object(id, kind, sealed)) => {
                    if envelope::open_object(keys, kind, &id, sealed).is_err() {
                        break 'packs;
                    }
                    // Its home is set once the commit record says whose
                    // object it is.
                    objects.push(NewObject {
                        id,
                        kind,
                        loc,
                        home: 0,
                    });
                }
                Ok(Record::Commit(env)) => {
                    let seq = env.sequence_number;
                    if candidate
                        .as_ref()
                        .is_some_and(|c| c.env.sequence_number != seq)
                    {
                        let c = candidate.take().expect("checked");
                        scan.commit(c)?;
                        passed = None;
                    }
                    if seq < scan.next() {
                        if candidate.is_some() {
                            break 'packs;
                        }
                        // Already indexed (or a superseded attempt at it).
                        if scan.index.stored_hash(seq)? == Some(env.hash()) {
                            passed = Some((p, at));
                        }
                        objects.clear();
                        continue;
                    }
                    if !scan.extends(keys, &env) {
                        break 'packs;
                    }
                    // A snapshot of tree format 6 or later stores its
                    // metadata objects at home.
                    if scan.homed(keys, &env) {
                        for o in objects.iter_mut().filter(|o| o.kind.homed()) {
                            o.home = seq;
                        }
                    }
                    // A retry after a failed index commit replaces the
                    // attempt before it, and holds its objects too.
                    let mut all = candidate.take().map_or_else(Vec::new, |c| c.objects);
                    all.append(&mut objects);
                    candidate = Some(Candidate {
                        env,
                        objects: all,
                        pack: p,
                        end: at,
                    });
                }
                Err(_) => break 'packs,
            }
        }
        if at != size {
            break; // a torn record
        }
    }
    if let Some(c) = candidate {
        scan.commit(c)?;
        passed = None;
    }
    // Commit records of indexed snapshots stay in the committed part of the
    // packs (the writer cuts off what is past it), so that the packs can
    // rebuild every indexed snapshot.
    if let Some((p, at)) = passed {
        let lengths: Vec<(u32, u64)> = lengths_up_to(store, &on_disk, first, p, at)?
            .into_iter()
            .filter(|(q, len)| committed.get(q).is_some_and(|c| len > c))
            .collect();
        scan.index.set_pack_lengths(&lengths)?;
        scan.touched.extend(lengths.iter().map(|(q, _)| *q));
    }
    Ok(scan.caught)
}

/// A snapshot read back from the packs and verified, not yet committed.
struct Candidate {
    env: crate::seal::envelope::Envelope,
    objects: Vec<NewObject>,
    /// Where its commit record ends.
    pack: u32,
    end: u64,
}

/// The state of [`catch_up`]'s scan.
struct Scan<'a> {
    index: &'a mut Index,
    store: &'a Store,
    on_disk: &'a BTreeSet<u32>,
    first: u32,
    touched: &'a mut BTreeSet<u32>,
    /// The head committed so far.
    head: Option<crate::seal::envelope::Envelope>,
    caught: u64,
}

impl Scan<'_> {
    fn next(&self) -> u64 {
        self.head.as_ref().map_or(1, |h| h.sequence_number + 1)
    }

    /// Whether `env` is the next snapshot after head: sequence, parent hash,
    /// key and format versions, and its manifest opens under the key.
    fn extends(&self, keys: &AgentKeys, env: &crate::seal::envelope::Envelope) -> bool {
        let parent = self
            .head
            .as_ref()
            .map_or(envelope::GENESIS_PARENT, |h| h.hash());
        env.sequence_number == self.next()
            && env.parent_snapshot == parent
            && self.head.as_ref().is_none_or(|h| {
                envelope::check_succession(h.key_version, h.format_version, env).is_ok()
            })
            && envelope::open_manifest(keys, env).is_ok()
    }

    /// Whether snapshot `env` (which [`Scan::extends`] opened) stores its
    /// metadata objects at home (tree format 6 or later).
    fn homed(&self, keys: &AgentKeys, env: &crate::seal::envelope::Envelope) -> bool {
        envelope::open_manifest(keys, env)
            .is_ok_and(|m| m.format >= crate::seal::tree::HOMED_FORMAT)
    }

    fn commit(&mut self, c: Candidate) -> Result<()> {
        let lengths = lengths_up_to(self.store, self.on_disk, self.first, c.pack, c.end)?;
        self.index.commit(&c.objects, &lengths, &c.env)?;
        self.touched.extend(lengths.iter().map(|(q, _)| *q));
        self.head = Some(c.env);
        self.caught += 1;
        Ok(())
    }
}

/// The length of every pack from `first` to `last` once read up to `at` in
/// `last`: the earlier ones were read whole.
fn lengths_up_to(
    store: &Store,
    on_disk: &BTreeSet<u32>,
    first: u32,
    last: u32,
    at: u64,
) -> Result<Vec<(u32, u64)>> {
    on_disk
        .range(first..=last)
        .map(|&q| Ok((q, if q == last { at } else { store.file_len(q)? })))
        .collect()
}

/// An index without snapshots beside pack data that recovery could not
/// rebuild it from (packs from before commit records, or whose first
/// records are damaged): refused before the writer would remove the packs
/// the index does not know. The data is history this index lost, not
/// leftovers; `sovseal reset --discard-local-history` moves it aside.
fn refuse_unindexed_packs(
    home: &Home,
    index: &Index,
    packs: &Dir,
    store: &Store,
    name: &AgentName,
) -> Result<()> {
    if index.head_seq()?.is_some() {
        return Ok(());
    }
    let magic = crate::repo::pack::PACK_MAGIC.len() as u64;
    let mut data = 0;
    for p in crate::repo::store::pack_numbers(packs)? {
        data += store.file_len(p)?.saturating_sub(magic);
    }
    if data == 0 {
        return Ok(());
    }
    let mut evidence = history_evidence(home, name, Some(index), true)?;
    evidence.push(format!(
        "{data} bytes of pack data in {} that could not be rebuilt into snapshots",
        packs.path().display()
    ));
    Err(Error::HistoryMissing {
        agent: name.to_string(),
        evidence: evidence.join("; "),
    })
}

fn seen_record(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut r = b"seen-head\0".to_vec();
    r.extend_from_slice(&seq.to_be_bytes());
    r.extend_from_slice(hash);
    r
}

fn check_agent_id(
    index: &Index,
    keys: &crate::seal::keys::AgentKeys,
    name: &AgentName,
    writer: bool,
) -> Result<()> {
    match index.agent_id()? {
        Some(id) if id == keys.agent_id() => Ok(()),
        Some(_) => Err(Error::Custody(format!(
            "the master key in use does not match agent {name}'s data (its keyed id differs): wrong master key or a copied data dir"
        ))),
        None if writer => index.set_agent_id(&keys.agent_id()),
        None => Err(Error::NoSuchAgent(name.to_string())),
    }
}

/// The pid holding `name`'s writer lock (a mount or another writer), read
/// from `/proc/locks` without touching the lock: `None` when nobody holds it.
pub fn writer_pid(home: &Home, name: &AgentName) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(home.agent_dir(name).join("lock")).ok()?;
    let dev = meta.dev();
    let key = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let i = f.iter().position(|x| *x == "FLOCK")?;
        (f.get(i + 2) == Some(&"WRITE") && f.get(i + 4) == Some(&key.as_str()))
            .then(|| f.get(i + 3)?.parse().ok())?
    })
}

fn lock(dir: &Dir, name: &AgentName) -> Result<WriteLock> {
    use nix::fcntl::{Flock, FlockArg, OFlag};
    let path = dir.join("lock");
    let f = dir.open_file("lock", OFlag::O_RDWR | OFlag::O_CREAT, 0o600)?;
    let t0 = std::time::Instant::now();
    let mut f = f;
    let mut told = false;
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(mut l) => {
                l.set_len(0).map_err(|e| Error::io(&path, e))?;
                writeln!(&mut *l, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                return Ok(WriteLock { lock: l });
            }
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                let text = dir
                    .read("lock")
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let pid = text
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                // A writer whose mount is gone and that is finishing its
                // last commit: wait for it, bounded; anyone else: refuse.
                if !holder_finishing(&text) || t0.elapsed() > STOPPING_WAIT {
                    return Err(Error::Locked {
                        agent: name.to_string(),
                        pid,
                        lock: path,
                    });
                }
                if !told {
                    eprintln!(
                        "sovseal: agent {name}: waiting for pid {pid} to finish its last commit"
                    );
                    told = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                f = back;
            }
            Err((_, e)) => return Err(Error::io(&path, e.into())),
        }
    }
}

/// Present in a data dir while a restore fills it, removed once it is
/// whole (`Agent::create_for_restore`, `Agent::finish_restore`).
pub const RESTORING: &str = "restoring";

/// Whether a restore into `name`'s data dir stopped before it finished: the
/// marker is there (or where a session-31 build put a lazy restore's,
/// `lazy/restoring`).
pub fn restore_stopped(home: &Home, name: &AgentName) -> bool {
    let dir = home.agent_dir(name);
    dir.join(RESTORING).exists() || dir.join("lazy").join(RESTORING).exists()
}

/// The error for a data dir a restore left part-filled, if `name`'s is one.
fn refuse_stopped_restore(home: &Home, name: &AgentName) -> Result<()> {
    if restore_stopped(home, name) {
        return Err(Error::Invalid(format!(
            "a restore of agent {name} into this machine stopped before it finished: mount the agent again to start the restore over (or `sovseal reset --agent {name} --discard-local-history`)"
        )));
    }
    Ok(())
}

/// Removes the data dir of `name` if a restore into it stopped before it
/// finished (a crash, a kill, a power cut, an error): it holds only what
/// that restore fetched from the remote, since a restore marks only a data
/// dir that holds nothing and nothing opens a marked one, so the caller
/// may restore anew. Returns whether there was one. A restore still
/// running holds the writer lock: refused like any second writer. The data
/// dir is first moved aside in one rename (a crash while it is deleted
/// leaves nothing under `agents/`), then deleted.
pub fn discard_stopped_restore(home: &Home, name: &AgentName) -> Result<bool> {
    if !restore_stopped(home, name) {
        return Ok(false);
    }
    let _lock = lock(&home.agent_data(name)?, name)?;
    // It may have finished between the look and the lock.
    if !restore_stopped(home, name) {
        return Ok(false);
    }
    let root = home.dir()?;
    let aside = format!("{name}-stopped-restore-{}", crate::time::now_ms());
    let discarded = root.ensure_sub("discarded")?;
    let agents = root.sub("agents")?;
    agents.rename_to(name.as_str(), &discarded, &aside)?;
    agents.sync()?;
    discarded.sync()?;
    let path = discarded.path().join(&aside);
    if let Err(e) = std::fs::remove_dir_all(&path) {
        // Out of the way already: a restore can begin.
        tracing::warn!("{} not removed: {e}", path.display());
    }
    Ok(true)
}

/// A fresh writer on a throwaway agent under `dir`, for unit tests of the
/// repository layer.
#[cfg(test)]
pub(crate) fn scratch(dir: &std::path::Path) -> (Agent, WriteLock) {
    let home = Home::at(dir.join("home"));
    let name = AgentName::new("scratch").expect("valid name");
    Agent::open_writer(&home, &name, &MasterKey::from_bytes([4; 32]), true).expect("scratch agent")
}
