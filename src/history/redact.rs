//! Redaction: erasing the content of one path from every snapshot, for data
//! that must not be kept, without breaking the chain.
//!
//! Snapshots are hash-chained and never rewritten, so redaction removes the
//! path's content objects (chunks, chunk lists, chunk-index nodes) instead: from the local
//! packs (rewritten like a prune) and from the remote pack parts (rewritten
//! without them). Objects that some other file still uses are kept (the
//! bytes live on in that file). What remains of the path is sealed
//! metadata: its name in the directory nodes, its size and times.
//!
//! The redaction is recorded: a record signed with the agent's key lists the
//! erased objects and a keyed hash of the path (never the path itself),
//! locally and on the remote. Verification and restore accept exactly those
//! objects missing, from the snapshots the record lists; reading them fails.
//!
//! The same bytes written again after the redaction are the same objects
//! (ids are keyed hashes of the content; a stretch of holes is one list in
//! every sparse file): the writer stores them again, and a snapshot that
//! references them then must have them. So a follower or a restored
//! machine erases only what no later snapshot of its own references again
//! ([`erasable`]).

use crate::repo::agent::Agent;
use crate::repo::pack;
use crate::repo::remote::Remote;
use crate::seal::keys::AgentKeys;
use crate::seal::record::{self, Signed};
use crate::seal::tree::{Content, FileType, ObjRef, ObjectId, Pages, ROOT_INO};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The signed record of one redaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `sovseal-redaction`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// The agent's keyed id, hex.
    pub agent_id: String,
    /// The key version whose signing key signed it (left out, meaning 1,
    /// in version-1 records).
    #[serde(
        default = "record::key_version_1",
        skip_serializing_if = "record::is_key_version_1"
    )]
    pub key_version: u32,
    /// Keyed hash of the path (the object-id key), hex: tells redactions
    /// apart without revealing the path.
    pub path_id: String,
    /// The snapshots in which the path had content, and those whose inode
    /// pages hold a record referencing an erased object (tree format 8: a
    /// delta chain replaced or removed it, and a walk of their objects
    /// still reaches it).
    pub seqs: Vec<u64>,
    /// The erased objects, hex.
    pub objects: Vec<String>,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Ed25519 signature (the agent's checkpoint key) over [`Record::message`].
    pub signature: String,
}

/// `format` of redaction records.
const REDACTION_FORMAT: &str = "sovseal-redaction";

impl Signed for Record {
    const FORMAT: &'static str = REDACTION_FORMAT;
    const VERSION: u32 = 2;
    const KIND: &'static str = "redaction record";

    fn format(&self) -> &str {
        &self.format
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn key_version(&self) -> u32 {
        self.key_version
    }
    fn set_versions(&mut self, version: u32, key_version: u32) {
        self.version = version;
        self.key_version = key_version;
    }
    fn agent_id(&self) -> &str {
        &self.agent_id
    }
    fn body(&self) -> String {
        let mut m = format!("{}\n{}\n", self.path_id, self.at_ms);
        for s in &self.seqs {
            m.push_str(&format!("s {s}\n"));
        }
        for o in &self.objects {
            m.push_str(&format!("o {o}\n"));
        }
        m
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn set_signature(&mut self, _public_key: String, signature: String) {
        self.signature = signature;
    }
}

impl Record {
    /// The signed bytes.
    pub fn message(&self) -> Vec<u8> {
        record::message(self)
    }

    /// The file name it is stored under, locally and on the remote.
    pub fn file_name(&self) -> String {
        format!("{:020}-{}.json", self.at_ms, &self.path_id[..16])
    }

    /// Parses and verifies a record.
    pub fn parse(raw: &[u8], keys: &AgentKeys) -> Result<Self> {
        let r: Record = record::parse(raw, keys)?;
        if r.path_id.len() < 16 {
            return Err(Error::corrupt("redaction record", "path id too short"));
        }
        Ok(r)
    }

    /// The erased object ids.
    pub fn object_ids(&self) -> Result<Vec<ObjectId>> {
        self.objects
            .iter()
            .map(|h| {
                crate::hex::decode32(h)
                    .map(ObjectId)
                    .ok_or_else(|| Error::corrupt("redaction record", "bad object id"))
            })
            .collect()
    }
}

/// Whether a record in `view`'s inode pages (every record, whatever its
/// delta chain made of it) references an object of `erase`. `memo`: the
/// answer per page already read.
fn pages_reach(
    view: &crate::repo::view::SnapshotView,
    erase: &BTreeSet<ObjectId>,
    redacted: &HashSet<ObjectId>,
    memo: &mut HashMap<ObjectId, bool>,
) -> Result<bool> {
    let repo = view.repo();
    let ipp = view.manifest().inodes_per_page;
    let mut any = false;
    crate::repo::pagemap::walk(repo, &view.manifest().pages, &|_| false, &mut |item| {
        let crate::repo::pagemap::Item::Page(no, r, _) = item else {
            return Ok(());
        };
        let reaches = match memo.get(&r.id) {
            Some(b) => *b,
            None => {
                let mut ids = BTreeSet::new();
                for i in repo.page(&r, ipp, no)?.values() {
                    if i.file_type() == FileType::File {
                        content_ids(view, i, redacted, &mut ids)?;
                    }
                }
                let b = ids.iter().any(|id| erase.contains(id));
                memo.insert(r.id, b);
                b
            }
        };
        any |= reaches;
        Ok(())
    })?;
    Ok(any)
}

/// What a redaction would do.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// Snapshots in which the path has content, and those that reach it
    /// through pages they share with one (see [`Record::seqs`]).
    pub seqs: Vec<u64>,
    /// Objects to erase.
    #[serde(skip)]
    pub erase: BTreeSet<ObjectId>,
    /// Number of objects to erase.
    pub objects: usize,
    /// Objects of the path that other files also use: kept.
    pub shared_kept: usize,
    /// Symlinks under the path: their targets are inode metadata and stay.
    pub symlinks: usize,
}

/// The content object ids of a file inode: chunk list (or chunk tree:
/// its nodes and lists) and chunks. What is already redacted is not read,
/// nor anything below it.
fn content_ids(
    view: &crate::repo::view::SnapshotView,
    i: &crate::seal::tree::Inode,
    redacted: &HashSet<ObjectId>,
    out: &mut BTreeSet<ObjectId>,
) -> Result<()> {
    if let Content::File(c) = &i.content {
        let named = std::cell::RefCell::new(Vec::new());
        crate::repo::chunktree::walk(
            view.repo(),
            c,
            &|r| {
                // Named, though not read again.
                let done = redacted.contains(&r.id);
                if done {
                    named.borrow_mut().push(r.id);
                }
                done
            },
            &mut |_, r| {
                named.borrow_mut().push(r.id);
                Ok(())
            },
        )?;
        out.extend(named.into_inner());
    }
    Ok(())
}

/// Plans the redaction of `path` over every snapshot. Refuses a path that
/// still exists in the head: delete it first. `progress(seq, head)` follows
/// the two walks over the snapshots.
pub fn plan(agent: &Agent, path: &str, progress: &mut dyn FnMut(u64, u64)) -> Result<Plan> {
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    let rel = path.trim_matches('/');
    if rel.is_empty() {
        return Err(Error::Invalid(
            "refusing to redact the whole tree; name a file or directory".into(),
        ));
    }
    if agent
        .snapshot_unchecked(head)?
        .resolve(rel.as_bytes())
        .is_ok()
    {
        return Err(Error::Invalid(format!(
            "{path} still exists in the head (snapshot {head}): delete it first, then redact its history"
        )));
    }
    // Erased before and not stored again: not read, not listed again. (The
    // same bytes written again after a redaction are stored again, and a
    // redaction of their new path lists them again.)
    let allowed = allowances(agent)?;
    let mut redacted = HashSet::new();
    for id in allowed.ids() {
        if !agent
            .repo()
            .has_or_fetchable(&crate::seal::tree::ObjRef::by_id(id))?
        {
            redacted.insert(id);
        }
    }
    let forgotten = agent.forgotten_seqs()?;
    let mut plan = Plan::default();
    let mut candidates = BTreeSet::new();
    // Per snapshot, the inodes under the path.
    let mut targets: BTreeMap<u64, HashSet<u64>> = BTreeMap::new();
    // The pages of each snapshot with a delta chain (tree format 8: it
    // shares them with its fold).
    let mut chained = Vec::new();
    for seq in 1..=head {
        progress(seq, 2 * head);
        let view = agent.snapshot_unchecked(seq)?;
        if view.manifest().delta.is_some() {
            chained.push((seq, view.manifest().pages.clone()));
        }
        let mut ids = BTreeSet::new();
        let mut symlinks = 0;
        let walk =
            |ids: &mut BTreeSet<ObjectId>, symlinks: &mut usize| -> Result<Option<HashSet<u64>>> {
                let top = match view.resolve(rel.as_bytes()) {
                    Ok(ino) => ino,
                    Err(Error::Fs { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let mut inos = HashSet::new();
                let mut stack = vec![top];
                while let Some(ino) = stack.pop() {
                    inos.insert(ino);
                    let i = view.getattr(ino)?;
                    match i.file_type() {
                        FileType::Dir => stack.extend(view.entries(ino)?.values().map(|e| e.ino)),
                        FileType::File => content_ids(&view, &i, &redacted, ids)?,
                        FileType::Symlink => *symlinks += 1,
                        _ => {}
                    }
                }
                Ok(Some(inos))
            };
        match walk(&mut ids, &mut symlinks) {
            Ok(None) => {}
            Ok(Some(inos)) => {
                if !ids.is_empty() {
                    plan.seqs.push(seq);
                }
                candidates.extend(ids);
                plan.symlinks += symlinks;
                targets.insert(seq, inos);
            }
            // A forgotten snapshot already pruned: nothing of it is left to
            // erase. Anywhere else a missing object is an error.
            Err(Error::MissingObject { .. }) if forgotten.contains(&seq) => {}
            Err(e) => return Err(e),
        }
    }
    // Anything another file uses, in any retained snapshot, stays.
    let mut kept = BTreeSet::new();
    for seq in (1..=head).filter(|s| !forgotten.contains(s)) {
        progress(head + seq, 2 * head);
        let view = agent.snapshot_unchecked(seq)?;
        let mine = targets.get(&seq);
        for ino in view.inode_numbers()? {
            if ino == ROOT_INO || mine.is_some_and(|t| t.contains(&ino)) {
                continue;
            }
            let i = view.getattr(ino)?;
            if i.file_type() != FileType::File {
                continue;
            }
            let mut ids = BTreeSet::new();
            content_ids(&view, &i, &redacted, &mut ids)?;
            // A file of a snapshot an earlier record lists needs nothing
            // that record erased.
            kept.extend(
                ids.intersection(&candidates)
                    .filter(|id| !allowed.allows(id, seq))
                    .copied(),
            );
        }
    }
    plan.shared_kept = kept.len();
    plan.erase = candidates
        .difference(&kept)
        .filter(|id| !redacted.contains(id))
        .copied()
        .collect();
    plan.objects = plan.erase.len();
    // A snapshot with a delta chain holds its fold's pages whole, records
    // the chain replaced or removed included (what a walk of its objects
    // reaches: what verify, prune and a follower's erasure judge by). One
    // whose pages hold a record referencing an erased object is listed
    // too, so that the object may be missing there. (A snapshot without a
    // chain walks only its tree's records: handled above.)
    if !plan.erase.is_empty() {
        let listed: HashSet<u64> = plan.seqs.iter().copied().collect();
        // By the root of the page map (format 8 counts its pages).
        let mut by_root: HashMap<Option<ObjRef>, bool> = HashMap::new();
        let mut page_reaches = HashMap::new();
        let mut reaching = Vec::new();
        for (seq, p) in chained.iter().filter(|(seq, _)| !listed.contains(seq)) {
            let root = match p {
                Pages::Counted(root) => *root,
                _ => {
                    return Err(Error::corrupt(
                        format!("snapshot {seq}"),
                        "a delta chain on pages of tree format 1 or 2",
                    ));
                }
            };
            let reaches = match by_root.get(&root) {
                Some(r) => *r,
                None => {
                    let view = match agent.snapshot_unchecked(*seq) {
                        Ok(v) => v,
                        Err(Error::MissingObject { .. }) if forgotten.contains(seq) => continue,
                        Err(e) => return Err(e),
                    };
                    let r = match pages_reach(&view, &plan.erase, &redacted, &mut page_reaches) {
                        Ok(r) => r,
                        Err(Error::MissingObject { .. }) if forgotten.contains(seq) => continue,
                        Err(e) => return Err(e),
                    };
                    by_root.insert(root, r);
                    r
                }
            };
            if reaches {
                reaching.push(*seq);
            }
        }
        plan.seqs.extend(reaching);
        plan.seqs.sort_unstable();
    }
    Ok(plan)
}

const LOCAL_DIR: &str = crate::repo::agent::REDACTIONS_DIR;

/// A lazily restored data dir never fetches what the records here erase:
/// every place of a record's objects in the snapshots up to the newest it
/// lists is dropped (`Allowances::erased_as_of`), in the remote index file
/// too when `persist` (a writer), else for this handle. Run at every open,
/// so that a redaction stopped between its record and the remote index
/// serves nothing erased.
pub fn guard_lazy(agent: &Agent, persist: bool) -> Result<()> {
    let Some(lazy) = agent.repo().lazy() else {
        return Ok(());
    };
    let allowed = allowances(agent)?;
    if allowed.is_empty() {
        return Ok(());
    }
    lazy.redact(&|seq, id| allowed.erased_as_of(id, seq), persist)?;
    // (Part indexes a flat start fetches later too.)
    lazy.keep_erased(move |seq, id| allowed.erased_as_of(id, seq));
    Ok(())
}

/// Every local redaction record, verified.
pub fn records(agent: &Agent) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let Some(dir) = agent.data()?.sub_if_exists(LOCAL_DIR)? else {
        return Ok(out);
    };
    for name in dir.json_names()? {
        let raw = dir.read(&name)?.unwrap_or_default();
        out.push(Record::parse(&raw, agent.repo().keys())?);
    }
    out.sort_by_key(|r| r.at_ms);
    Ok(out)
}

/// What the valid redaction records allow to be missing: each erased
/// object, in the snapshots its signed record lists, and nowhere else.
#[derive(Debug, Default)]
pub struct Allowances(HashMap<ObjectId, BTreeSet<u64>>);

impl Allowances {
    /// Whether object `id` may be missing from snapshot `seq`.
    pub fn allows(&self, id: &ObjectId, seq: u64) -> bool {
        self.0.get(id).is_some_and(|s| s.contains(&seq))
    }

    /// Every object a record erased.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.0.keys().copied()
    }

    /// Whether a record erased `id` (from some snapshots).
    pub fn names(&self, id: &ObjectId) -> bool {
        self.0.contains_key(id)
    }

    /// Whether `id` was erased as snapshot `seq` stored it: a record
    /// names it and lists `seq` or a later snapshot. (The same bytes
    /// written again after the redaction are stored again, later.)
    pub fn erased_as_of(&self, id: &ObjectId, seq: u64) -> bool {
        self.last_allowed(id).is_some_and(|last| seq <= last)
    }

    /// The newest snapshot from which some record allows `id` missing.
    fn last_allowed(&self, id: &ObjectId) -> Option<u64> {
        self.0.get(id).and_then(|s| s.last()).copied()
    }

    /// The number of erased objects.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no object was erased.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The allowances of every valid redaction record. (A record's key is
/// checked against the snapshots it lists that this index holds: while a
/// flat start's older history is fetched, those before it wait for the
/// next open.)
pub fn allowances(agent: &Agent) -> Result<Allowances> {
    let records = records(agent)?;
    let first = agent.repo().index()?.history_from()?.unwrap_or(1);
    for r in &records {
        for &seq in r.seqs.iter().filter(|&&s| s >= first) {
            let kv = agent.envelope(seq)?.key_version;
            record::check_in_force(r, seq, kv)?;
        }
    }
    allowances_of(&records)
}

fn allowances_of(records: &[Record]) -> Result<Allowances> {
    let mut out: HashMap<ObjectId, BTreeSet<u64>> = HashMap::new();
    for r in records {
        for id in r.object_ids()? {
            out.entry(id).or_default().extend(r.seqs.iter().copied());
        }
    }
    Ok(Allowances(out))
}

/// What to erase here of the objects `allowed` names: all of them except
/// those a snapshot held here references where no record allows them
/// missing (written again after the redaction). Walks the snapshots after
/// the oldest record's last one (forgotten ones aside: their content goes),
/// reading redacted objects that are still stored even where this handle
/// already refuses them to readers ([`crate::repo::Repo::reading_erased`]).
/// Costs a walk of every object in those snapshots, once each: what a
/// follower pays at start (or a takeover), once in a poll that brings a
/// redaction record (the pull hands its answer on,
/// [`crate::history::restore::Pulled::erasable`]; twice when forget
/// records came with it), in one that brings forget records, and after a
/// failed poll; not in a poll that brings only snapshots.
pub fn erasable(agent: &Agent, allowed: &Allowances) -> Result<HashSet<ObjectId>> {
    let mut erase: HashSet<ObjectId> = allowed.0.keys().copied().collect();
    let Some(from) = allowed
        .0
        .keys()
        .filter_map(|id| allowed.last_allowed(id))
        .min()
    else {
        return Ok(erase);
    };
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    let forgotten = agent.forgotten_seqs()?;
    let walked = std::cell::RefCell::new(HashSet::new());
    // An index that cannot say whether an object is stored fails the
    // whole answer (then nothing leaves the packs), never counts as gone.
    let failed = std::cell::RefCell::new(None);
    agent.repo().reading_erased(|| -> Result<()> {
        for seq in from + 1..=head {
            if forgotten.contains(&seq) {
                continue;
            }
            // Below an object walked before, the same bytes (redacted
            // objects are looked at in every snapshot). One that is gone
            // here already has nothing to keep.
            agent.snapshot_unchecked(seq)?.walk_objects(
                &|r| {
                    if allowed.names(&r.id) {
                        allowed.allows(&r.id, seq)
                            || !agent.repo().has_or_fetchable(r).unwrap_or_else(|e| {
                                failed.borrow_mut().get_or_insert(e);
                                true
                            })
                    } else {
                        walked.borrow().contains(&r.id)
                    }
                },
                &mut |_, r| {
                    walked.borrow_mut().insert(r.id);
                    erase.remove(&r.id);
                    Ok(())
                },
            )?;
            if let Some(e) = failed.borrow_mut().take() {
                return Err(e);
            }
        }
        Ok(())
    })?;
    Ok(erase)
}

/// As [`allowances`], without checking each record against the key
/// version of the snapshots it lists: what a follower or a restore takes
/// in before it holds those snapshots (each record's signature is checked
/// all the same).
pub fn allowances_unchecked(agent: &Agent) -> Result<Allowances> {
    allowances_of(&records(agent)?)
}

/// Stores a record locally (atomically).
pub fn save_local(agent: &Agent, r: &Record) -> Result<()> {
    let dir = agent.data()?.ensure_sub(LOCAL_DIR)?;
    // Durable: the record must outlive the erasure that follows it.
    let bytes = serde_json::to_vec(r).expect("record encodes");
    dir.write_atomic(r.file_name(), &bytes, 0o600, true)
}

/// Carries out `plan` for `path` locally: records the redaction, then
/// erases the objects from the packs.
pub fn apply_local(agent: &Agent, path: &str, plan: &Plan) -> Result<Record> {
    let keys = agent.repo().keys();
    let mut r = Record {
        format: REDACTION_FORMAT.into(),
        version: 1,
        agent_id: keys.agent_id().to_hex(),
        key_version: 1,
        path_id: crate::hex::encode(&keys.object_id(0xEE, path.trim_matches('/').as_bytes())),
        seqs: plan.seqs.clone(),
        objects: plan.erase.iter().map(|i| i.to_hex()).collect(),
        at_ms: crate::time::now_ms(),
        signature: String::new(),
    };
    record::sign(keys, &mut r);
    // The record first: a crash after it leaves objects that are allowed
    // to be missing but still present, never the reverse.
    save_local(agent, &r)?;
    if let Some(lazy) = agent.repo().lazy() {
        // Every place of those objects, at once: all came before this
        // redaction, and none is referenced where it is kept (the packs
        // lose them by id too).
        lazy.redact(&|_, id| plan.erase.contains(id), true)?;
    }
    let all = agent.repo().index()?.all_objects()?;
    let dead: Vec<_> = all
        .into_iter()
        .filter(|o| plan.erase.contains(&o.id))
        .collect();
    crate::repo::repack::remove_objects(agent.repo(), &dead)?;
    Ok(r)
}

/// On the remote: uploads the record, then rewrites the pack parts that
/// hold erased objects so that they lose them: those of the replicated
/// snapshots it names, and those of forgotten snapshots up to the last one
/// it names that the remote still keeps. (An erased object lives in the
/// parts of the snapshot that first stored it: one the record names, or
/// one forgotten since, whose parts a prune keeps while a retained
/// snapshot still uses the object and whose tree a prune here may have
/// removed, so that the plan could not name it. A later snapshot holds
/// only the same bytes written again after the redaction, which stay.)
/// Such a forgotten snapshot's forget record goes up first, so that the
/// remote lets its content be missing, and its parts are read only when
/// its part index names an erased object or it has none. A part index
/// follows its rewritten parts, and is written again while it still names
/// an erased object. Idempotent, so an interrupted run is finished by
/// running it again. Returns the parts rewritten.
pub async fn apply_remote(agent: &Agent, remote: &Remote, r: &Record) -> Result<u64> {
    let id = agent.repo().keys().agent_id();
    remote
        .put_redaction(
            &id,
            &r.file_name(),
            serde_json::to_vec(r).expect("record encodes"),
        )
        .await?;
    let replicated = crate::repo::replication_state::replicated_seq(agent)?;
    let erase: HashSet<ObjectId> = r.object_ids()?.into_iter().collect();
    let listed: BTreeSet<u64> = r.seqs.iter().copied().collect();
    let last = listed.last().copied().unwrap_or(0);
    // (Trimmed ones too: their parts there hold what kept snapshots read.)
    let trimmed = agent.repo().index()?.trimmed_seqs()?;
    let kept_there: BTreeMap<u64, Vec<u8>> = agent
        .repo()
        .index()?
        .forgotten()?
        .into_iter()
        .filter(|(seq, (_, remote_pruned))| {
            (!remote_pruned || trimmed.contains(seq)) && *seq <= last && !listed.contains(seq)
        })
        .map(|(seq, (raw, _))| (seq, raw))
        .collect();
    let seqs: BTreeSet<u64> = listed.iter().chain(kept_there.keys()).copied().collect();
    let mut rewritten = 0;
    let mut unsegmented = BTreeSet::new();
    let seqs: Vec<u64> = seqs.into_iter().filter(|s| *s <= replicated).collect();
    // The upload batches of their ranges, checked first: one whose index
    // does not decode stops the redaction (its members would read as
    // having no parts, and keep what it erases).
    remote.leave_batches(&id, &[], &seqs).await?;
    // Snapshots with parts of their own, whose records leave any batch.
    let mut own = Vec::new();
    for seq in seqs.iter().copied() {
        let hash = agent
            .repo()
            .index()?
            .stored_hash(seq)?
            .ok_or(Error::NoSuchSnapshot(seq))?;
        // Whether the part index there names an erased object (`None`:
        // there is none, or it does not decode).
        let stale = stale_index(remote, &id, seq, &hash, &|o| erase.contains(o)).await?;
        if let Some(raw) = kept_there.get(&seq) {
            if stale == Some(false) {
                continue;
            }
            remote.put_forgotten(&id, seq, raw.clone()).await?;
        }
        rewritten += rewrite_parts(
            remote,
            &id,
            (seq, &hash),
            &|o| erase.contains(o),
            stale,
            &mut unsegmented,
        )
        .await?;
        // A snapshot uploaded in a batch was read from it above and, if it
        // held an erased object, written again under its own names: its
        // records leave the batch, erased ones with them (also when an
        // earlier run stopped before this).
        if remote.has_own_pack(&id, seq, &hash).await? {
            own.push((seq, hash));
        }
    }
    remote.leave_batches(&id, &own, &[]).await?;
    Ok(rewritten)
}

/// Whether the part index of snapshot `seq` on the remote names an object
/// `erase` names (`None`: there is none, or it does not decode).
pub(crate) async fn stale_index(
    remote: &Remote,
    id: &crate::seal::keys::AgentId,
    seq: u64,
    hash: &[u8; 32],
    erase: &(dyn Fn(&ObjectId) -> bool + Sync),
) -> Result<Option<bool>> {
    Ok(remote
        .get_index(id, seq, hash)
        .await?
        .and_then(|raw| pack::decode_index(seq, &raw).ok())
        .map(|entries| entries.iter().any(|e| erase(&e.id))))
}

/// Writes the remote pack parts of snapshot `seq` (its envelope hash
/// `hash`) again without the objects `erase` names, each part that holds
/// one (read from an upload batch when the snapshot went up in one, and
/// written under its own names: the caller has it leave the batch), then
/// its part index when a part changed or `stale` says the index names an
/// erased object. The chain segment bundling its part index goes first
/// (`unsegmented`: the segments deleted so far). Returns how many parts
/// were written again.
pub(crate) async fn rewrite_parts(
    remote: &Remote,
    id: &crate::seal::keys::AgentId,
    (seq, hash): (u64, &[u8; 32]),
    erase: &(dyn Fn(&ObjectId) -> bool + Sync),
    stale: Option<bool>,
    unsegmented: &mut BTreeSet<u64>,
) -> Result<u64> {
    let mut rewritten = 0;
    let (mut part, mut entries, mut changed) = (0, Vec::new(), false);
    while let Some(bytes) = remote.get_pack(id, seq, hash, part).await? {
        let recs = pack::decode_part(seq, &bytes)?;
        if recs.iter().any(|(oid, _, _)| erase(oid)) {
            let mut p = pack::PACK_MAGIC.to_vec();
            for (oid, kind, sealed) in recs.iter().filter(|(oid, _, _)| !erase(oid)) {
                pack::encode_record(&mut p, oid, *kind, sealed);
            }
            entries.extend(pack::part_entries(seq, part, &p)?);
            // The chain segment bundling the part index goes first
            // (written again by the writer; its index would name
            // erased objects).
            remote.delete_segment_of(id, seq, unsegmented).await?;
            remote.put_pack(id, seq, hash, part, p).await?;
            rewritten += 1;
            changed = true;
        } else {
            entries.extend(pack::part_entries(seq, part, &bytes)?);
        }
        part += 1;
    }
    // The part index follows the rewritten parts (an entry left
    // pointing at the old place would only cost a lazy reader a whole
    // part's fetch; the ids of erased objects must go from it too),
    // also when an earlier run stopped between the parts and it.
    if changed || stale == Some(true) {
        remote.delete_segment_of(id, seq, unsegmented).await?;
        remote
            .put_index(id, seq, hash, pack::encode_index(&entries))
            .await?;
    }
    Ok(rewritten)
}

/// Fetches the remote's redaction records not held here yet (each
/// verified) and stores them locally (restore, followers); returns how many
/// were new.
pub async fn fetch_remote(agent: &Agent, remote: &Remote) -> Result<usize> {
    let here: HashSet<String> = match agent.data()?.sub_if_exists(LOCAL_DIR)? {
        Some(dir) => dir
            .json_names()?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect(),
        None => HashSet::new(),
    };
    let all = fetch_remote_records(agent.repo().keys(), remote, &here).await?;
    save_fetched(agent, &all)?;
    Ok(all.len())
}

/// The remote's redaction records whose file names `here` does not hold,
/// each verified (nothing stored: a restore lists them before it creates
/// the data dir, and stores them with [`save_fetched`]).
pub async fn fetch_remote_records(
    keys: &AgentKeys,
    remote: &Remote,
    here: &HashSet<String>,
) -> Result<Vec<Record>> {
    let all = remote
        .list_redactions(&keys.agent_id(), &|name| here.contains(name))
        .await?;
    all.iter()
        .map(|(name, raw)| {
            Record::parse(raw, keys).map_err(|e| match e {
                Error::Corrupt { detail, .. } => {
                    Error::corrupt(format!("redaction record {name} on the remote"), detail)
                }
                Error::UnknownFormatVersion(found, known) => Error::corrupt(
                    format!("redaction record {name} on the remote"),
                    format!("format version {found} (this build reads up to {known})"),
                ),
                e => e,
            })
        })
        .collect()
}

/// Stores redaction records [`fetch_remote_records`] verified.
pub fn save_fetched(agent: &Agent, records: &[Record]) -> Result<()> {
    records.iter().try_for_each(|r| save_local(agent, r))
}
