//! The replicator: local snapshots out to the remote, in order, with retries.
//!
//! Architecture Invariant: the replicator reads sealed bytes and envelopes
//! only; it holds no key and decrypts nothing.
//!
//! The durable queue is the index itself: every snapshot above
//! `replicated_seq` (a `meta` row) is pending, and the objects to upload with
//! snapshot N are those that N first committed (`objects.seq = N`). For each
//! pending snapshot, in order: its pack parts go up (in parallel, each put
//! tried a few times: parts are idempotent), then its envelope with a
//! conditional create, then `replicated_seq = N` is recorded (when the
//! queue drains, every [`MARKER_EVERY`] while it does not, and when an
//! upload fails or the thread stops). After a
//! restart the thread resumes at `replicated_seq + 1`, uploading again what
//! went up after the last marker (idempotent).
//! Transient failures retry with exponential backoff and jitter; a different
//! envelope already on the remote is a fork: replication stops for the agent
//! (recorded in `meta`, shown by `sovseal status`), the mount goes on.
//! With nothing to upload, the thread writes the part indexes an older
//! build left out ([`crate::replication::backfill`]).

use crate::repo::agent::Agent;
use crate::repo::batch;
use crate::repo::index::NewObject;
use crate::repo::pack::{self, PACK_MAGIC, RECORD_HEADER};
use crate::repo::remote::{Created, Remote};
use crate::repo::replication_state::{
    META_CHECKPOINT_ERROR, META_ERROR, META_FORK, META_REMOTE, META_REPLICATED, fork_seq,
    replicated_seq,
};
use crate::repo::segment::{self, SEGMENT_LEN};
use crate::{Error, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest pack part uploaded in one request. 8 MiB parts replicated a
/// 256 MiB snapshot 1.2-1.4x as fast as 32 MiB ones (the first put starts
/// sooner, and building parts overlaps their upload) and bound the upload's
/// memory to 32 MiB (docs/PERFORMANCE.md, session 15).
pub const PART_BYTES: usize = 8 << 20;
/// Pack parts uploaded at once per snapshot: bounds the memory a large
/// snapshot's upload holds to `PARTS_IN_FLIGHT * PART_BYTES`.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Longest time the recorded `replicated_seq` trails what went up while
/// snapshots keep coming: the marker is written when the queue drains and
/// at most this often meanwhile, not once per snapshot (a SQLite
/// transaction each). A marker lost to a crash only repeats idempotent
/// uploads.
pub const MARKER_EVERY: Duration = Duration::from_millis(250);

/// Most bytes of records one upload batch holds (`repo::batch`): a run of
/// snapshots that together add more goes up in several batches, and a
/// snapshot of more than one part alone.
pub const BATCH_BYTES: usize = PART_BYTES;

/// How long the replicator lets a few pending snapshots gather before it
/// uploads them as one batch (none gathers while a `--sync-replication`
/// close waits, or once [`GATHER_COUNT`] are pending). A writer saving in
/// a loop then costs the remote about one object a snapshot (its
/// envelope) instead of three, for this much more replication lag.
pub const GATHER: Duration = Duration::from_millis(20);

/// Pending snapshots that are uploaded at once, without gathering more.
pub const GATHER_COUNT: u64 = 64;

/// How long after a program's last disk sync through the mount ended
/// ([`Replicator::foreground_sync`]: fsync, fdatasync, fsyncdir, a
/// durable close) the replicator still holds pending snapshots back
/// (and all the while one is under way), so that its uploads do not land
/// between the program's syncs (see [`YIELD_MAX`]). Checkpoints and the
/// chain segments written after an upload are not held back.
pub const YIELD_QUIET: Duration = Duration::from_millis(10);

/// Longest the replicator holds pending snapshots back while programs
/// keep syncing ([`YIELD_QUIET`]), from when it first finds one pending:
/// a burst of fsyncs shorter than this runs without the replicator's disk
/// syncs beside its own (on a `file://` remote one per envelope:
/// measured, they tripled the p99 of the pack's sync, docs/PERFORMANCE.md
/// session 52) and replicates as soon as it ends. Past it, every snapshot
/// pending then is uploaded (batch after batch) before the next hold
/// begins, so under a longer stream of them a snapshot waits at most for
/// the upload of the backlog ahead of it, this much, and its own upload.
/// None is held back while a `--sync-replication` close waits.
pub const YIELD_MAX: Duration = Duration::from_secs(1);

/// Tries of one part's put before the snapshot's upload fails (and is
/// retried whole, with backoff, by the replicator).
pub const PART_TRIES: u32 = 3;

/// The pack parts of one snapshot, built from the local store one at a time
/// (a 4 GiB snapshot never sits in memory whole).
pub struct Parts<'a> {
    agent: &'a Agent,
    objects: std::vec::IntoIter<NewObject>,
    next: Option<(NewObject, Vec<u8>)>,
    started: bool,
    /// Bytes of records not yet put into a part.
    remaining: usize,
}

/// Record header in a pack.
const RECORD_OVERHEAD: usize = RECORD_HEADER as usize;

impl<'a> Parts<'a> {
    /// The parts of snapshot `seq`: the objects it first committed, in pack
    /// order.
    pub fn new(agent: &'a Agent, seq: u64) -> Result<Self> {
        Ok(Self::of(agent, agent.repo().index()?.objects_of(seq)?))
    }

    /// The parts of a snapshot whose objects (`Index::objects_of`) are
    /// known already.
    fn of(agent: &'a Agent, objects: Vec<NewObject>) -> Self {
        let remaining = objects
            .iter()
            .map(|o| RECORD_OVERHEAD + o.loc.len as usize)
            .sum();
        Parts {
            agent,
            objects: objects.into_iter(),
            next: None,
            started: false,
            remaining,
        }
    }

    /// The next part; a snapshot that added no object still has one (the
    /// magic alone). Part boundaries are deterministic, so an upload
    /// repeated after a crash writes the same parts under the same names.
    pub fn next_part(&mut self) -> Result<Option<Vec<u8>>> {
        // Sized up front: grown by doubling, a part would hold up to twice
        // PART_BYTES, and PARTS_IN_FLIGHT of them twice the intended bound.
        let cap = self.remaining.min(PART_BYTES + RECORD_OVERHEAD + (2 << 20));
        let mut p = Vec::with_capacity(PACK_MAGIC.len() + cap);
        p.extend_from_slice(&PACK_MAGIC[..]);
        loop {
            let (o, sealed) = match self.next.take() {
                Some(x) => x,
                None => match self.objects.next() {
                    Some(o) => {
                        let sealed = self.agent.repo().store().read(&o.loc)?;
                        (o, sealed)
                    }
                    None => break,
                },
            };
            if opens_new_part(p.len(), sealed.len()) {
                self.next = Some((o, sealed));
                break;
            }
            pack::encode_record(&mut p, &o.id, o.kind, &sealed);
            self.remaining = self
                .remaining
                .saturating_sub(RECORD_OVERHEAD + sealed.len());
        }
        if p.len() == PACK_MAGIC.len() && self.started {
            return Ok(None);
        }
        self.started = true;
        Ok(Some(p))
    }
}

/// Whether an object of `sealed` bytes goes into a new part rather than
/// the one of `part_len` bytes being built: the one rule that places part
/// boundaries, used to build parts and to plan them ([`planned_index`]).
fn opens_new_part(part_len: usize, sealed: usize) -> bool {
    part_len + sealed > PART_BYTES && part_len > PACK_MAGIC.len()
}

/// The part index and the part sizes that [`upload`] would write for
/// snapshot `seq` today, from the local index alone (no object is read):
/// the objects it first committed, laid out as [`Parts`] lays them out.
pub fn planned_index(agent: &Agent, seq: u64) -> Result<(Vec<pack::PartEntry>, Vec<u64>)> {
    Ok(plan(&agent.repo().index()?.objects_of(seq)?))
}

/// [`planned_index`] of a snapshot's objects.
fn plan(objects: &[NewObject]) -> (Vec<pack::PartEntry>, Vec<u64>) {
    let mut entries = Vec::new();
    let mut sizes = Vec::new();
    let mut len = PACK_MAGIC.len();
    for o in objects {
        let sealed = o.loc.len as usize;
        if opens_new_part(len, sealed) {
            sizes.push(len as u64);
            len = PACK_MAGIC.len();
        }
        entries.push(pack::PartEntry {
            id: o.id,
            kind: o.kind,
            part: sizes.len() as u32,
            offset: (len + RECORD_OVERHEAD) as u32,
            len: sealed as u32,
        });
        len += RECORD_OVERHEAD + sealed;
    }
    sizes.push(len as u64);
    (entries, sizes)
}

/// All pack parts of snapshot `seq` at once (benchmarks and tests).
pub fn pack_parts(agent: &Agent, seq: u64) -> Result<Vec<Vec<u8>>> {
    let mut parts = Parts::new(agent, seq)?;
    let mut all = Vec::new();
    while let Some(p) = parts.next_part()? {
        all.push(p);
    }
    Ok(all)
}

/// Uploads snapshot `seq`: pack parts (at most [`PARTS_IN_FLIGHT`] at a
/// time), then its part index (where each object is, for lazy restores),
/// then the envelope (conditional). A snapshot whose envelope is on the
/// remote therefore has its parts and its index there. Returns the part
/// index written (`None`: a snapshot restored lazily, whose files the
/// remote holds already).
pub async fn upload(agent: &Agent, remote: &Remote, seq: u64) -> Result<Option<Vec<u8>>> {
    use futures::StreamExt;
    let id = agent.repo().keys().agent_id();
    let env = agent.envelope(seq)?;
    let hash = env.hash();
    if agent
        .repo()
        .lazy()
        .is_some_and(|l| seq <= l.restored_head())
    {
        // Restored lazily: its content is on the remote and not here, so
        // parts built here would be empty and replace the remote's.
        return match remote.get_envelope(&id, seq).await? {
            Some(there) if there == env.to_json() => Ok(None),
            Some(_) => Err(Error::Fork { seq }),
            None => Err(Error::Invalid(format!(
                "snapshot {seq} is gone from the remote this data dir was lazily restored from; its content is not here to upload again"
            ))),
        };
    }
    let mut parts = Parts::new(agent, seq)?;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut index, mut built_all) = (0u32, false);
    let mut entries = Vec::new();
    loop {
        while !built_all && in_flight.len() < PARTS_IN_FLIGHT {
            match parts.next_part()? {
                Some(p) => {
                    entries.extend(pack::part_entries(seq, index, &p)?);
                    in_flight.push(put_part(remote, &id, seq, &hash, index, p.into()));
                    index += 1;
                }
                None => built_all = true,
            }
        }
        match in_flight.next().await {
            Some(r) => r?,
            None => break,
        }
    }
    let index = pack::encode_index(&entries);
    with_tries(
        || format!("part index of snapshot {seq}"),
        || remote.put_index(&id, seq, &hash, index.clone()),
    )
    .await?;
    put_envelope(remote, &id, seq, &env, Synced::Each).await?;
    Ok(Some(index))
}

/// Whether an envelope's put syncs its name ([`Remote::put_envelope`]) or
/// leaves that to one [`Remote::sync_envelopes`] after the batch's last
/// ([`Remote::put_envelope_unsynced`]).
#[derive(Clone, Copy)]
enum Synced {
    Each,
    AfterBatch,
}

/// Creates the envelope of snapshot `seq` on the remote ([`with_tries`]);
/// a different one there is a fork.
async fn put_envelope(
    remote: &Remote,
    id: &crate::seal::keys::AgentId,
    seq: u64,
    env: &crate::seal::envelope::Envelope,
    synced: Synced,
) -> Result<()> {
    let json = env.to_json();
    let created = with_tries(
        || format!("envelope of snapshot {seq}"),
        || async {
            match synced {
                Synced::Each => remote.put_envelope(id, seq, json.clone()).await,
                Synced::AfterBatch => remote.put_envelope_unsynced(id, seq, json.clone()).await,
            }
        },
    )
    .await?;
    match created {
        Created::New | Created::AlreadyThere => Ok(()),
        Created::Conflict => Err(Error::Fork { seq }),
    }
}

/// The upload batch that starts at `next`, taking pending durable
/// snapshots up to `upto`: those of `next`'s aligned range whose parts
/// would be one part each, together at most [`BATCH_BYTES`] of records,
/// each with the objects it first committed (what [`upload_batch`] builds
/// its part from). Fewer than two when no batch forms (a snapshot of
/// several parts, one a lazy restore brought here): `next` goes up alone.
pub fn batch_members(agent: &Agent, next: u64, upto: u64) -> Result<Vec<Vec<NewObject>>> {
    let upto = upto.min(segment::first_of(next) + SEGMENT_LEN - 1);
    let mut members = Vec::new();
    if upto <= next
        || agent
            .repo()
            .lazy()
            .is_some_and(|l| next <= l.restored_head())
    {
        return Ok(members);
    }
    let (index, mut bytes) = (agent.repo().index()?, 0);
    for seq in next..=upto {
        let objects = index.objects_of(seq)?;
        let (_, sizes) = plan(&objects);
        let records = sizes[0] as usize - PACK_MAGIC.len();
        if sizes.len() > 1 || bytes + records > BATCH_BYTES {
            break;
        }
        bytes += records;
        members.push(objects);
    }
    Ok(members)
}

/// Uploads the snapshots from `first` on whose objects `members` holds
/// ([`batch_members`]) as one upload batch (`repo::batch`): the batch
/// part, the batch index, then each envelope in order (the conditional
/// creates that fence a second writer; on a file remote their names are
/// synced once, after the last, before this returns and anything counts
/// on them). Each member's part is built as
/// [`upload`] would build its part 0, so the batch holds what their own
/// parts would. Returns the members' part indexes, in order.
pub async fn upload_batch(
    agent: &Agent,
    remote: &Remote,
    first: u64,
    members: Vec<Vec<NewObject>>,
) -> Result<Vec<Vec<u8>>> {
    debug_assert!(members.len() > 1, "a batch has two members or more");
    let id = agent.repo().keys().agent_id();
    let last = first + members.len() as u64 - 1;
    let mut b = batch::Builder::new(first);
    let mut envs = Vec::new();
    let mut indexes = Vec::new();
    for (seq, objects) in (first..).zip(members) {
        let env = agent.envelope(seq)?;
        let mut parts = Parts::of(agent, objects);
        let part = parts.next_part()?.expect("a snapshot has a part");
        if parts.next_part()?.is_some() {
            return Err(Error::Invalid(format!(
                "snapshot {seq} has more than one part: not a batch member"
            )));
        }
        let index = pack::encode_index(&pack::part_entries(seq, 0, &part)?);
        b.push(env.hash(), &part, index.clone())?;
        indexes.push(index);
        envs.push(env);
    }
    let (part, batch) = b.finish();
    let part = object_store::PutPayload::from(part);
    let last_hash = envs.last().expect("a member").hash();
    with_tries(
        || format!("batch of snapshots {first}-{last}"),
        || remote.put_batch(&id, &last_hash, part.clone(), &batch),
    )
    .await?;
    for (seq, env) in (first..).zip(&envs) {
        put_envelope(remote, &id, seq, env, Synced::AfterBatch).await?;
    }
    // Not tried again on its own: a directory sync that failed may have
    // dropped what it did not write. The batch fails and goes up again.
    remote.sync_envelopes(&id).await?;
    Ok(indexes)
}

/// Runs one idempotent request (a pack part, the part index, the
/// envelope's conditional create: the same name and bytes each time),
/// trying up to [`PART_TRIES`] times with backoff. A transient failure of
/// one request costs that request, not the snapshot's others: without it
/// a snapshot of many parts on a flaky link might never go up whole.
async fn with_tries<T, F: std::future::Future<Output = Result<T>>>(
    what: impl Fn() -> String,
    mut request: impl FnMut() -> F,
) -> Result<T> {
    let mut wait = Duration::from_millis(50);
    for attempt in 1.. {
        match request().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < PART_TRIES => {
                tracing::debug!("{}, try {attempt}: {e}", what());
                tokio::time::sleep(jitter(wait)).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last try returns")
}

/// Puts one pack part ([`with_tries`]).
async fn put_part(
    remote: &Remote,
    id: &crate::seal::keys::AgentId,
    seq: u64,
    hash: &[u8; 32],
    index: u32,
    part: object_store::PutPayload,
) -> Result<()> {
    with_tries(
        || format!("part {index} of snapshot {seq}"),
        || remote.put_pack(id, seq, hash, index, part.clone()),
    )
    .await
}

/// When the replicator signs checkpoints: once the queue is drained and
/// `interval` has passed since the last one, and when it stops.
#[derive(Clone, Debug)]
pub struct CheckpointPolicy {
    /// Least time between two checkpoints.
    pub interval: Duration,
    /// `sh -c` command run with each checkpoint (external anchoring).
    pub hook: Option<String>,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            interval: Duration::from_secs(60),
            hook: None,
        }
    }
}

/// How a replicator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// When it signs checkpoints.
    pub checkpoints: CheckpointPolicy,
    /// Whether snapshots committed faster than they upload go up in
    /// batches ([`upload_batch`]); otherwise each goes up alone.
    pub batch_uploads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checkpoints: CheckpointPolicy::default(),
            batch_uploads: true,
        }
    }
}

#[derive(Default)]
struct State {
    replicated: u64,
    head: u64,
    error: Option<String>,
    fork: Option<u64>,
    errors: u64,
    checkpointed: u64,
    checkpoint_error: Option<String>,
    checkpoint_errors: u64,
    stop: bool,
    /// Threads in [`Replicator::wait_for`].
    waiting: usize,
    /// The thread lets pending snapshots gather into a batch ([`GATHER`]):
    /// a commit then wakes it only once [`GATHER_COUNT`] are pending.
    gathering: bool,
    /// The thread holds pending snapshots back while programs sync
    /// ([`YIELD_MAX`]): no commit wakes it.
    yielding: bool,
    /// When a program's disk sync through the mount last started or ended.
    synced_at: Option<std::time::Instant>,
    /// Programs' disk syncs under way ([`Replicator::foreground_sync`]).
    syncing: usize,
}

/// A program's disk sync under way ([`Replicator::foreground_sync`]);
/// when dropped, the sync has ended.
pub struct ForegroundSync<'a>(&'a Replicator);

impl Drop for ForegroundSync<'_> {
    fn drop(&mut self) {
        // No wake-up: a thread holding back while syncs are under way
        // looks again every YIELD_QUIET (`held_back`), not once per sync.
        if let Ok(mut st) = self.0.shared.0.lock() {
            st.syncing = st.syncing.saturating_sub(1);
            st.synced_at = Some(std::time::Instant::now());
        }
    }
}

/// Status of a running replicator.
#[derive(Clone, Debug)]
pub struct Status {
    /// Highest replicated sequence number.
    pub replicated: u64,
    /// The last error, while it lasts.
    pub error: Option<String>,
    /// The fork, if one was found.
    pub fork: Option<u64>,
    /// Failed replication attempts since start (each is retried).
    pub errors_total: u64,
    /// Newest checkpointed sequence.
    pub checkpointed: u64,
    /// The last checkpoint error (signing, upload or hook), while it lasts.
    pub checkpoint_error: Option<String>,
    /// Failed checkpoints and hook runs since start.
    pub checkpoint_errors_total: u64,
}

/// A running replicator thread (its own tokio runtime).
pub struct Replicator {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Replicator {
    /// Starts replicating `agent` to `remote`, with the default checkpoint
    /// policy.
    pub fn start(agent: Arc<Agent>, remote: Remote) -> Result<Self> {
        Self::start_with(agent, remote, Options::default())
    }

    /// Starts replicating `agent` to `remote` as `options` say.
    pub fn start_with(agent: Arc<Agent>, remote: Remote, options: Options) -> Result<Self> {
        let replicated = replicated_seq(&agent)?;
        let checkpointed = crate::history::checkpoint::checkpointed_seq(&agent)?.unwrap_or(0);
        let fork = fork_seq(&agent)?;
        let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
        agent
            .repo()
            .index()?
            // Without any password the URL holds (shown in status, and
            // compared by the commands that change the remote).
            .set_meta(META_REMOTE, Some(remote.shown_url().as_bytes()))?;
        let shared = Arc::new((
            Mutex::new(State {
                replicated,
                head,
                fork,
                checkpointed,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        let runtime = crate::repo::remote::runtime()?;
        let thread = std::thread::Builder::new()
            .name("sovseal-replicator".into())
            .spawn(move || runtime.block_on(run(&s, &agent, &remote, &options)))
            .map_err(|e| Error::io("replicator thread", e))?;
        Ok(Replicator {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells the replicator that `head` is committed.
    pub fn notify(&self, head: u64) {
        let (m, cv) = &*self.shared;
        let mut st = m.lock().expect("replicator");
        st.head = st.head.max(head);
        if !st.gathering || (!st.yielding && st.head - st.replicated >= GATHER_COUNT) {
            cv.notify_all();
        }
    }

    /// Tells the replicator that a program's disk sync starts, until the
    /// returned guard is dropped (not with `--sync-replication`, whose
    /// waiters want the upload): pending snapshots wait while one is under
    /// way and until none has been for [`YIELD_QUIET`], at most
    /// [`YIELD_MAX`].
    pub fn foreground_sync(&self) -> ForegroundSync<'_> {
        let mut st = self.shared.0.lock().expect("replicator");
        st.syncing += 1;
        st.synced_at = Some(std::time::Instant::now());
        ForegroundSync(self)
    }

    /// Waits until `seq` is on the remote (`--sync-replication`); fails on a
    /// fork or when stopped.
    pub fn wait_for(&self, seq: u64) -> Result<()> {
        let (m, cv) = &*self.shared;
        let mut st = m.lock().expect("replicator");
        // Counted while waiting, so that the thread does not hold pending
        // snapshots back to gather a batch.
        st.waiting += 1;
        cv.notify_all();
        let done = loop {
            if st.replicated >= seq {
                break Ok(());
            }
            if let Some(f) = st.fork {
                break Err(Error::Fork { seq: f });
            }
            if st.stop {
                break Err(Error::Remote {
                    op: "replicate".into(),
                    detail: "replicator stopped".into(),
                });
            }
            st = cv.wait(st).expect("replicator");
        };
        st.waiting -= 1;
        done
    }

    /// Current status.
    pub fn status(&self) -> Status {
        let st = self.shared.0.lock().expect("replicator");
        Status {
            replicated: st.replicated,
            error: st.error.clone(),
            fork: st.fork,
            errors_total: st.errors,
            checkpointed: st.checkpointed,
            checkpoint_error: st.checkpoint_error.clone(),
            checkpoint_errors_total: st.checkpoint_errors,
        }
    }

    /// Stops the thread (what is not replicated stays queued in the index).
    pub fn stop(&self) {
        {
            let (m, cv) = &*self.shared;
            m.lock().expect("replicator").stop = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.lock().expect("replicator thread").take() {
            let _ = t.join();
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Until when (as seen at `now`) pending snapshots the thread first found
/// at `since` are held back because programs are syncing ([`YIELD_MAX`]);
/// `None` when they are not (no sync yet, or a `--sync-replication` close
/// waits). While a sync is under way, a look again [`YIELD_QUIET`] later.
fn held_back(
    st: &State,
    since: std::time::Instant,
    now: std::time::Instant,
) -> Option<std::time::Instant> {
    let synced = st.synced_at.filter(|_| st.waiting == 0)?;
    let quiet_from = match st.syncing {
        0 => synced,
        _ => now,
    };
    Some((quiet_from + YIELD_QUIET).min(since + YIELD_MAX))
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let f = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    d.mul_f64(f)
}

/// Signs a checkpoint of `seq`, then runs the hook; failures are logged,
/// kept in the index for `sovseal status` and counted, never swallowed. A
/// failed hook is run again (with a fresh checkpoint) after the interval.
async fn checkpoint(
    shared: &(Mutex<State>, Condvar),
    agent: &Agent,
    remote: &Remote,
    seq: u64,
    policy: &CheckpointPolicy,
) {
    let res = match crate::history::checkpoint::create(agent, remote, seq).await {
        Ok(c) => match &policy.hook {
            Some(h) => crate::history::checkpoint::run_hook(h, &c),
            None => Ok(()),
        },
        Err(e) => Err(e),
    };
    let mut st = shared.0.lock().expect("replicator");
    match res {
        Ok(()) => {
            st.checkpointed = seq;
            st.checkpoint_error = None;
            drop(st);
            let _ = agent
                .repo()
                .index()
                .and_then(|i| i.set_meta(META_CHECKPOINT_ERROR, None));
            tracing::debug!(seq, "checkpoint signed");
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!("checkpoint of snapshot {seq}: {msg}");
            st.checkpoint_errors += 1;
            st.checkpoint_error = Some(msg.clone());
            drop(st);
            let _ = agent
                .repo()
                .index()
                .and_then(|i| i.set_meta(META_CHECKPOINT_ERROR, Some(msg.as_bytes())));
        }
    }
}

/// Whether snapshot `next` may leave the machine, given the index's durable
/// point: only once it is durable, so that a power cut can never leave the
/// remote ahead of the local disk. No recorded point is an index from
/// before durability was recorded (every commit then synced; a writer's
/// open records one). An index that cannot be read is an error, never a
/// yes.
fn may_upload(next: u64, durable: Result<Option<u64>>) -> Result<bool> {
    Ok(durable?.is_none_or(|d| next <= d))
}

/// What the replication loop does next.
enum Step {
    /// Upload from the first snapshot given, up to the second (the head).
    Upload(u64, u64),
    Checkpoint(u64),
    /// Nothing to upload: the next step of the part indexes' backfill or
    /// of the chain segments.
    Backfill(u64),
    FinalCheckpoint(u64),
    Exit,
}

async fn run(shared: &(Mutex<State>, Condvar), agent: &Agent, remote: &Remote, options: &Options) {
    let policy = &options.checkpoints;
    let (m, cv) = shared;
    let mut backoff = Duration::from_millis(100);
    // Due at once if the last checkpoint is behind what is replicated.
    let mut last_cp = std::time::Instant::now()
        .checked_sub(policy.interval)
        .unwrap_or_else(std::time::Instant::now);
    // The newest snapshot uploaded whose marker is not written yet, and
    // when the marker was last written.
    let mut unsaved: Option<u64> = None;
    let mut saved_at = std::time::Instant::now();
    // Part indexes of snapshots replicated by older builds, written when
    // the queue is empty.
    let mut backfill = crate::replication::backfill::Backfill::default();
    // Since when pending snapshots have been gathering into a batch.
    let mut gathering: Option<std::time::Instant> = None;
    // The head when an upload step last started (after any hold or
    // gathering): until it is replicated, nothing is held back again, so
    // a stream of syncs cannot hold a backlog of several batches back for
    // a second per batch.
    let mut draining: Option<u64> = None;
    let save = |seq: u64| {
        // Lazy: if a power cut loses it, the snapshot is uploaded again,
        // which is idempotent (same parts, same envelope).
        agent.repo().index()?.set_meta_lazy(&[
            (META_REPLICATED, Some(seq.to_string().as_bytes())),
            (META_ERROR, None),
        ])
    };
    // Writes the marker of an upload not recorded yet, if any (an error
    // only delays it: the next one, or the next start, records it).
    let save_unsaved = |unsaved: &mut Option<u64>| {
        if let Some(seq) = unsaved.take()
            && let Err(e) = save(seq)
        {
            tracing::warn!("could not record snapshot {seq} as replicated: {e}");
        }
    };
    loop {
        let step = {
            let mut st = m.lock().expect("replicator");
            loop {
                if st.fork.is_some() {
                    break Step::Exit;
                }
                if st.stop {
                    // A last checkpoint of what reached the remote.
                    break match st.replicated > st.checkpointed {
                        true => Step::FinalCheckpoint(st.replicated),
                        false => Step::Exit,
                    };
                }
                let now = std::time::Instant::now();
                if st.replicated < st.head {
                    // A few pending snapshots wait a moment for more, to
                    // go up as one batch; not while a close waits for
                    // them, nor once many are pending. All of them wait
                    // while programs are syncing, for a while, unless
                    // what waited last time is not all up yet.
                    if draining.is_some_and(|d| st.replicated >= d) {
                        draining = None;
                    }
                    let since = *gathering.get_or_insert(now);
                    let gather = (options.batch_uploads
                        && st.waiting == 0
                        && st.head - st.replicated < GATHER_COUNT)
                        .then_some(since + GATHER);
                    let held = draining
                        .is_none()
                        .then(|| held_back(&st, since, now))
                        .flatten()
                        .filter(|&until| now < until);
                    if let Some(until) = gather.into_iter().chain(held).max()
                        && now < until
                    {
                        st.gathering = true;
                        st.yielding = held.is_some();
                        st = cv.wait_timeout(st, until - now).expect("replicator").0;
                        st.gathering = false;
                        st.yielding = false;
                        continue;
                    }
                    gathering = None;
                    draining.get_or_insert(st.head);
                    break Step::Upload(st.replicated + 1, st.head);
                }
                let checkpoint =
                    (st.replicated > st.checkpointed).then_some(last_cp + policy.interval);
                if checkpoint.is_some_and(|due| now >= due) {
                    break Step::Checkpoint(st.replicated);
                }
                let backfill_due = backfill.due(st.replicated);
                if backfill_due.is_some_and(|due| now >= due) {
                    break Step::Backfill(st.replicated);
                }
                // Nothing to do now: wait for a notification or whichever
                // comes due first.
                st = match checkpoint.into_iter().chain(backfill_due).min() {
                    Some(due) => cv.wait_timeout(st, due - now).expect("replicator").0,
                    None => cv.wait(st).expect("replicator"),
                };
            }
        };
        if matches!(step, Step::Exit | Step::FinalCheckpoint(_)) {
            save_unsaved(&mut unsaved);
        }
        let (next, head) = match step {
            Step::Exit => return,
            Step::FinalCheckpoint(r) => {
                // Bounded: an unreachable remote must not hold up the unmount.
                let cp = checkpoint(shared, agent, remote, r, policy);
                if tokio::time::timeout(Duration::from_secs(10), cp)
                    .await
                    .is_err()
                {
                    tracing::warn!("final checkpoint of snapshot {r} timed out");
                }
                return;
            }
            Step::Checkpoint(r) => {
                // A checkpoint comes once the queue is drained, so the
                // marker was written just before it.
                checkpoint(shared, agent, remote, r, policy).await;
                last_cp = std::time::Instant::now();
                continue;
            }
            Step::Backfill(replicated) => {
                // Given up (and taken up again later) as soon as the
                // thread is to stop, and once it has run for its grace
                // also when there is something to upload or a checkpoint
                // is due: none for a part index's step (which may read a
                // large snapshot's parts); a chain segment's (at most one
                // part index GET per snapshot of its range) is given a
                // moment to finish, and backs off when cut.
                let grace = backfill.grace();
                let started = std::time::Instant::now();
                let wanted = async {
                    loop {
                        {
                            let st = m.lock().expect("replicator");
                            let checkpoint = st.replicated > st.checkpointed
                                && std::time::Instant::now() >= last_cp + policy.interval;
                            let waiting = st.head > replicated || checkpoint;
                            if st.stop || (waiting && started.elapsed() >= grace) {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                let step = backfill.step(agent, remote, replicated);
                let cut = matches!(
                    futures::future::select(std::pin::pin!(step), std::pin::pin!(wanted)).await,
                    futures::future::Either::Right(_)
                );
                if cut {
                    backfill.cut_short();
                }
                continue;
            }
            Step::Upload(next, head) => (next, head),
        };
        // Only durable snapshots leave the machine: a power cut must never
        // leave the remote ahead of the local disk. (The mount notifies only
        // after its barrier; this holds for any caller.) An index that
        // cannot say what is durable fails the step like a failed upload
        // (shown in status, retried with backoff): fail closed.
        let durable = agent.repo().index().and_then(|i| i.durable_seq());
        // Without a recorded durable point (an index from before one was
        // recorded), every committed snapshot counts as durable.
        let upto = match &durable {
            Ok(d) => d.unwrap_or(head).min(head),
            Err(_) => next,
        };
        let uploaded = match may_upload(next, durable) {
            Ok(true) => {
                match batch_members(agent, next, if options.batch_uploads { upto } else { next }) {
                    Ok(members) if members.len() > 1 => upload_batch(agent, remote, next, members)
                        .await
                        .map(|indexes| indexes.into_iter().map(Some).collect::<Vec<_>>()),
                    Ok(_) => upload(agent, remote, next).await.map(|i| vec![i]),
                    Err(e) => Err(e),
                }
            }
            Ok(false) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => Err(e),
        };
        match uploaded {
            Ok(indexes) => {
                let first = next;
                let next = next + indexes.len() as u64 - 1;
                backoff = Duration::from_millis(100);
                let (drained, had_error) = {
                    let st = m.lock().expect("replicator");
                    (st.head <= next, st.error.is_some())
                };
                let saved = if drained || had_error || saved_at.elapsed() >= MARKER_EVERY {
                    unsaved = None;
                    saved_at = std::time::Instant::now();
                    save(next)
                } else {
                    unsaved = Some(next);
                    Ok(())
                };
                {
                    let mut st = m.lock().expect("replicator");
                    if let Err(e) = saved {
                        st.error = Some(e.to_string());
                        continue;
                    }
                    st.replicated = next;
                    st.error = None;
                    tracing::debug!(seq = next, "replicated");
                    cv.notify_all();
                }
                // A range of snapshots this run uploaded gets its chain
                // segment (or the tail) now, from what the uploads wrote:
                // one PUT, so that a writer that never pauses writes them
                // too.
                for (seq, index) in (first..).zip(indexes) {
                    if let Some(index) = index {
                        backfill.uploaded(seq, index);
                    }
                }
                backfill.inline(agent, remote, next).await;
            }
            Err(Error::Fork { seq }) => {
                tracing::error!("{}", Error::Fork { seq });
                save_unsaved(&mut unsaved);
                let _ = agent
                    .repo()
                    .index()
                    .and_then(|i| i.set_meta(META_FORK, Some(seq.to_string().as_bytes())));
                let mut st = m.lock().expect("replicator");
                st.fork = Some(seq);
                st.error = Some(Error::Fork { seq }.to_string());
                cv.notify_all();
                return;
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(
                    "replication of snapshot {next} failed, retrying in {backoff:?}: {msg}"
                );
                // What went up before the failure is recorded now, not
                // after the retries (the error row is written after it).
                if unsaved.is_some() {
                    saved_at = std::time::Instant::now();
                    save_unsaved(&mut unsaved);
                }
                let _ = agent
                    .repo()
                    .index()
                    .and_then(|i| i.set_meta(META_ERROR, Some(msg.as_bytes())));
                {
                    let mut st = m.lock().expect("replicator");
                    st.error = Some(msg);
                    st.errors += 1;
                }
                // Sleep in slices so that a stop is noticed promptly.
                let until = tokio::time::Instant::now() + jitter(backoff);
                while tokio::time::Instant::now() < until {
                    if m.lock().expect("replicator").stop {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_snapshots_are_held_back_while_programs_sync_for_a_bounded_time() {
        let now = std::time::Instant::now();
        let mut st = State::default();
        // No program has synced: nothing held back.
        assert_eq!(held_back(&st, now, now), None);
        // One just ended: held until it has been quiet for a moment.
        let ended = now.checked_sub(YIELD_QUIET / 2).expect("a clock past 5 ms");
        st.synced_at = Some(ended);
        assert_eq!(held_back(&st, now, now), Some(ended + YIELD_QUIET));
        // One under way (started before): held, looked at again a moment
        // later, whenever it started.
        st.syncing = 1;
        assert_eq!(held_back(&st, now, now), Some(now + YIELD_QUIET));
        // Programs syncing all along after the oldest pending snapshot
        // waited YIELD_MAX: no longer held back, under way or not.
        let since = now.checked_sub(5 * YIELD_MAX).expect("a clock past 5 s");
        assert_eq!(held_back(&st, since, now), Some(since + YIELD_MAX));
        st.syncing = 0;
        st.synced_at = Some(now);
        assert_eq!(held_back(&st, since, now), Some(since + YIELD_MAX));
        assert!(held_back(&st, since, now).unwrap() < now);
        // A `--sync-replication` close waits for the upload: never held.
        st.waiting = 1;
        assert_eq!(held_back(&st, now, now), None);
    }

    #[test]
    fn only_durable_snapshots_may_leave_and_an_unreadable_index_holds_them_back() {
        assert!(may_upload(3, Ok(Some(3))).unwrap());
        assert!(!may_upload(4, Ok(Some(3))).unwrap());
        assert!(
            may_upload(4, Ok(None)).unwrap(),
            "an index from before durability was recorded"
        );
        let unreadable = Err(Error::corrupt("index", "disk I/O error"));
        assert!(
            may_upload(1, unreadable).is_err(),
            "an index error must not read as durable"
        );
    }
}
