//! Part indexes for snapshots replicated before lazy restores existed.
//!
//! A lazy restore ([`crate::history::restore::restore_lazy`]) needs the
//! part index of every snapshot on the remote: one without (replicated by
//! an older build) makes the whole agent restore whole. A writer's
//! replicator writes the missing ones once it has nothing to upload
//! ([`Backfill`]), oldest first, one snapshot per step so that new
//! snapshots go first.
//!
//! Each index is taken from the local index when the parts the replicator
//! would build today are the parts on the remote: the same objects in the
//! same order. The order holds while no pack of the data dir was ever
//! rewritten (a prune or a redaction copies the objects it keeps into a new
//! pack in another order, and removes the old packs: their numbers leave a
//! gap); the objects are the same when every part has the size planned (a
//! `HEAD` each: a snapshot's objects only ever leave, locally by a prune or
//! a redaction, remotely by a redaction, so equal sizes mean the same
//! objects). Otherwise the index is read from the remote's parts
//! themselves (a `GET` each, every record header parsed). Either way an index only says where to
//! look: a lazy reader checks every record it fetches, so an index written
//! here can cost a fetch, never serve wrong bytes.
//!
//! Also here, once the indexes are complete: chain segments
//! ([`crate::repo::segment`]), the envelopes and part indexes of each
//! aligned range of 256 replicated snapshots in one object, written from
//! the local envelopes and the remote's part indexes ([`write_segment`]),
//! so that a lazy restore reads one object per 256 snapshots, and of the
//! snapshots after the last complete range (the tail segment).
//!
//! Architecture Invariant: like the replicator, this holds no key and
//! opens nothing.

use crate::Result;
use crate::replication::replicator::planned_index;
use crate::repo::agent::Agent;
use crate::repo::pack;
use crate::repo::remote::Remote;
use crate::repo::replication_state::{indexed_seq, set_indexed_seq};
use crate::repo::segment::{self, SEGMENT_LEN};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// How the part index of one snapshot was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// From the local index: the remote's parts have the sizes planned.
    FromLocal,
    /// From the remote's parts, read whole.
    FromRemote,
    /// None: the remote holds no part of the snapshot (a forgotten
    /// snapshot whose content was pruned there; a lazy restore takes it
    /// without an index).
    NoParts,
    /// None: a part there does not decode (a restore of the agent is done
    /// whole, and refuses it); looked at again by the next pass.
    Undecodable,
}

/// Writes the part index of snapshot `seq`, which the remote holds
/// without one (see the module doc).
pub async fn write_index(agent: &Agent, remote: &Remote, seq: u64) -> Result<Written> {
    let id = agent.repo().keys().agent_id();
    let hash = agent.envelope(seq)?.hash();
    let (planned, sizes) = planned_index(agent, seq)?;
    let mut same = in_upload_order(agent)?;
    // Each planned part has its size there, and there is no further part.
    let expected = sizes.iter().map(|s| Some(*s)).chain([None]);
    for (part, size) in expected.enumerate() {
        if !same || remote.pack_size(&id, seq, &hash, part as u32).await? != size {
            same = false;
        }
    }
    let (entries, written) = if same {
        (planned, Written::FromLocal)
    } else {
        match remote.entries_from_parts(&id, seq, &hash).await? {
            Some(Ok(entries)) => (entries, Written::FromRemote),
            Some(Err(e)) => {
                tracing::warn!("no part index written for snapshot {seq}: {e}");
                return Ok(Written::Undecodable);
            }
            None => return Ok(Written::NoParts),
        }
    };
    remote
        .put_index(&id, seq, &hash, pack::encode_index(&entries))
        .await?;
    Ok(written)
}

/// Whether every snapshot's objects still lie in the packs in the order
/// they were appended, and so uploaded: no pack was ever rewritten. Packs
/// are numbered from 1 and a rewrite removes the packs it copied from.
fn in_upload_order(agent: &Agent) -> Result<bool> {
    let packs = agent.repo().index()?.packs()?;
    Ok(packs.keys().copied().eq(1..=packs.len() as u32))
}

/// The replicated snapshots after `after` up to `replicated` whose part
/// index is not on the remote, ascending. Left out: those a lazy restore
/// brought here (their indexes are the remote's own), and forgotten
/// snapshots whose content the remote no longer holds.
pub async fn missing(
    agent: &Agent,
    remote: &Remote,
    after: u64,
    replicated: u64,
) -> Result<Vec<u64>> {
    let restored = agent.repo().lazy().map_or(0, |l| l.restored_head());
    let from = restored.max(after) + 1;
    if from > replicated {
        return Ok(Vec::new());
    }
    let id = agent.repo().keys().agent_id();
    let listed = remote.list_indexes(&id, from - 1).await?;
    // (A trimmed one still holds what kept snapshots read: it needs its
    // index.)
    let trimmed = agent.repo().index()?.trimmed_seqs()?;
    let pruned: std::collections::BTreeSet<u64> = agent
        .repo()
        .index()?
        .forgotten()?
        .into_iter()
        .filter_map(|(seq, (_, remote_pruned))| {
            (remote_pruned && !trimmed.contains(&seq)).then_some(seq)
        })
        .collect();
    let mut out = Vec::new();
    for seq in from..=replicated {
        if pruned.contains(&seq) {
            continue;
        }
        // The index is locked per snapshot: commits go on meanwhile.
        let Some(hash) = agent.repo().index()?.stored_hash(seq)? else {
            continue;
        };
        let name = crate::hex::encode(&hash[..16]);
        if listed
            .binary_search_by(|(s, h)| s.cmp(&seq).then_with(|| h.as_str().cmp(&name)))
            .is_err()
        {
            out.push(seq);
        }
    }
    Ok(out)
}

/// Whether a chain segment was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Written, replacing any.
    Written,
    /// Not yet: a snapshot of its range has parts on the remote but no
    /// part index there (an older build's, not written back yet).
    NotYet,
}

/// Writes the chain segment starting at `first` (every snapshot of its
/// range replicated): each envelope from the local index, each part index
/// as this run uploaded it (`uploaded`) or as the remote holds it (a `GET`
/// each, some in flight at once; a `HEAD` for a snapshot without one).
pub async fn write_segment(
    agent: &Agent,
    remote: &Remote,
    first: u64,
    uploaded: &Uploaded,
) -> Result<Segment> {
    debug_assert!(segment::is_first(first));
    let last = first + SEGMENT_LEN - 1;
    let Some(members) = members(agent, remote, first, last, uploaded).await? else {
        return Ok(Segment::NotYet);
    };
    let id = agent.repo().keys().agent_id();
    remote
        .put_segment(&id, first, segment::encode(first, &members))
        .await?;
    Ok(Segment::Written)
}

/// Writes the tail segment: snapshots `first..=last` (replicated; `first`
/// starts a range, `last` ends none), as [`write_segment`] does.
pub async fn write_tail(
    agent: &Agent,
    remote: &Remote,
    first: u64,
    last: u64,
    uploaded: &Uploaded,
) -> Result<Segment> {
    debug_assert!(segment::is_first(first) && last >= first && last < first + SEGMENT_LEN);
    let Some(members) = members(agent, remote, first, last, uploaded).await? else {
        return Ok(Segment::NotYet);
    };
    let id = agent.repo().keys().agent_id();
    remote
        .put_tail(&id, segment::encode(first, &members))
        .await?;
    Ok(Segment::Written)
}

/// The members of a segment of snapshots `first..=last`; `None` when one
/// of them has parts on the remote but no part index there. The part
/// indexes this run uploaded come from `uploaded`, the rest from the
/// remote.
async fn members(
    agent: &Agent,
    remote: &Remote,
    first: u64,
    last: u64,
    uploaded: &Uploaded,
) -> Result<Option<Vec<segment::Member>>> {
    let id = agent.repo().keys().agent_id();
    let envelopes = (first..=last)
        .map(|seq| agent.envelope(seq))
        .collect::<Result<Vec<_>>>()?;
    let members: Vec<Option<segment::Member>> =
        futures::stream::iter(envelopes.iter().zip(first..))
            .map(|(env, seq)| {
                let hash = env.hash();
                let id = &id;
                let known = uploaded.get(seq);
                async move {
                    if let Some(index) = known {
                        return Ok(Some(segment::Member {
                            envelope: env.to_json(),
                            index: Some(index),
                        }));
                    }
                    let index = remote.get_index(id, seq, &hash).await?;
                    if index.is_none() && remote.has_pack(id, seq, &hash, 0).await? {
                        return Ok(None);
                    }
                    Ok::<_, crate::Error>(Some(segment::Member {
                        envelope: env.to_json(),
                        index,
                    }))
                }
            })
            .buffered(SEGMENT_FETCHES)
            .try_collect()
            .await?;
    Ok(members.into_iter().collect())
}

/// Part indexes a segment's writing reads at once.
const SEGMENT_FETCHES: usize = 16;

/// The part indexes this run uploaded, of the range of the newest (those
/// of older ranges leave when a newer range starts), at most
/// 16 MiB of them (`UPLOADED_BYTES`): a segment or tail of snapshots all found
/// here is written without reading the remote.
#[derive(Default)]
pub struct Uploaded {
    indexes: std::collections::BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

/// The most part index bytes [`Uploaded`] keeps (a range of snapshots of
/// many objects each reads the rest from the remote).
const UPLOADED_BYTES: usize = 16 << 20;

impl Uploaded {
    /// Keeps the part index `index` just uploaded for snapshot `seq`.
    fn insert(&mut self, seq: u64, index: Vec<u8>) {
        let this_range = self.indexes.split_off(&segment::first_of(seq));
        let dropped = std::mem::replace(&mut self.indexes, this_range);
        self.bytes -= dropped.values().map(Vec::len).sum::<usize>();
        if let Some(old) = self.indexes.remove(&seq) {
            self.bytes -= old.len();
        }
        if self.bytes + index.len() <= UPLOADED_BYTES {
            self.bytes += index.len();
            self.indexes.insert(seq, index);
        }
    }

    fn get(&self, seq: u64) -> Option<Vec<u8>> {
        self.indexes.get(&seq).cloned()
    }

    /// Whether the part index of every snapshot of `first..=last` is here.
    fn holds(&self, first: u64, last: u64) -> bool {
        self.indexes.range(first..=last).count() as u64 == last + 1 - first
    }
}

/// The chain segments a replicator writes: the remote's are listed once,
/// then each complete range of replicated snapshots without one is written,
/// oldest first, one a step; then the tail segment, whenever it would hold
/// [`segment::TAIL_STEP`] more snapshots than this run last wrote.
#[derive(Default)]
struct Segments {
    /// The segments present, written or put off this run (`None`: not
    /// listed yet).
    known: Option<BTreeSet<u64>>,
    /// The tail this run wrote (or put off): its first and last snapshot.
    tail: Option<(u64, u64)>,
    /// Failed attempts at the next one, for other reasons than the remote
    /// failing: after [`SEGMENT_TRIES`] it is put off (a range to the next
    /// mount, the tail until [`segment::TAIL_STEP`] more snapshots are
    /// replicated), so that one cannot hold up the rest.
    failed: u32,
    /// The work those failures were of (one's failures do not count
    /// against another).
    failing: Option<Work>,
    /// The part indexes this run uploaded.
    uploaded: Uploaded,
}

/// Attempts at one chain segment per run.
const SEGMENT_TRIES: u32 = 3;

/// What a [`Segments`] step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    List,
    Segment(u64),
    Tail(u64, u64),
}

impl Segments {
    /// The next step, with snapshots up to `replicated` on the remote.
    fn next(&self, replicated: u64) -> Option<Work> {
        let covered = replicated / SEGMENT_LEN * SEGMENT_LEN;
        let tail_due = self.tail_due(replicated);
        let Some(known) = &self.known else {
            return (covered > 0 || tail_due).then_some(Work::List);
        };
        (0..replicated / SEGMENT_LEN)
            .map(|k| k * SEGMENT_LEN + 1)
            .find(|f| !known.contains(f))
            .map(Work::Segment)
            .or(tail_due.then_some(Work::Tail(covered + 1, replicated)))
    }

    /// Whether the tail is due with snapshots up to `replicated` on the
    /// remote: it would hold [`segment::TAIL_STEP`] or more, and that many
    /// more than this run last wrote.
    fn tail_due(&self, replicated: u64) -> bool {
        let covered = replicated / SEGMENT_LEN * SEGMENT_LEN;
        replicated - covered >= segment::TAIL_STEP
            && self.tail.is_none_or(|(first, last)| {
                first != covered + 1 || replicated >= last + segment::TAIL_STEP
            })
    }

    /// Right after snapshot `replicated` was uploaded (the segments
    /// listed): the segment of the range it completes, or the tail, when
    /// due and every part index of it is at hand ([`Uploaded`]), whatever
    /// older range still lacks one (left to the idle steps).
    fn cheap(&self, replicated: u64) -> Option<Work> {
        let known = self.known.as_ref()?;
        let first = segment::first_of(replicated);
        if replicated.is_multiple_of(SEGMENT_LEN) {
            return (!known.contains(&first) && self.uploaded.holds(first, replicated))
                .then_some(Work::Segment(first));
        }
        (self.tail_due(replicated) && self.uploaded.holds(first, replicated))
            .then_some(Work::Tail(first, replicated))
    }

    async fn step(&mut self, agent: &Agent, remote: &Remote, replicated: u64) -> Result<()> {
        match self.next(replicated) {
            Some(work) => self.run(work, agent, remote).await,
            None => Ok(()),
        }
    }

    async fn run(&mut self, work: Work, agent: &Agent, remote: &Remote) -> Result<()> {
        let written = match work {
            Work::List => {
                let id = agent.repo().keys().agent_id();
                self.known = Some(remote.list_segments(&id).await?.into_iter().collect());
                return Ok(());
            }
            Work::Segment(first) => write_segment(agent, remote, first, &self.uploaded).await,
            Work::Tail(first, last) => write_tail(agent, remote, first, last, &self.uploaded).await,
        };
        let put_off = |s: &mut Self| match work {
            Work::Segment(first) => {
                s.known.get_or_insert_default().insert(first);
            }
            Work::Tail(first, last) => s.tail = Some((first, last)),
            Work::List => {}
        };
        let w = match written {
            Ok(w) => w,
            // The remote failing (an outage) puts nothing off: the step
            // backs off and tries again.
            Err(e @ crate::Error::Remote { .. }) => return Err(e),
            Err(e) => {
                if self.failing != Some(work) {
                    (self.failing, self.failed) = (Some(work), 0);
                }
                self.failed += 1;
                if self.failed >= SEGMENT_TRIES {
                    tracing::warn!("chain segment {work:?} put off to the next mount");
                    put_off(self);
                    self.failed = 0;
                }
                return Err(e);
            }
        };
        self.failed = 0;
        match w {
            Segment::Written => tracing::debug!(?work, "chain segment written"),
            Segment::NotYet => tracing::info!(
                "no chain segment {work:?} yet: a snapshot of it has no part index on the remote"
            ),
        }
        put_off(self);
        Ok(())
    }
}

/// A replicator's pass over the snapshots without a part index: listed at
/// its first step (after those a pass found complete before:
/// [`indexed_seq`]), then one snapshot a step. A step that fails is tried
/// again after a backoff (up to [`RETRY_MAX`]).
pub struct Backfill {
    /// The snapshots to index, and the replicated head they were listed up to.
    queue: Option<(VecDeque<u64>, u64)>,
    done: bool,
    tally: [u64; 4],
    /// The first snapshot left without an index ([`Written::Undecodable`]).
    first_skipped: Option<u64>,
    /// When the next step may run, and the wait after the next failure.
    due: Instant,
    backoff: Duration,
    /// Chain segment steps cut short in a row (each one's grace is twice
    /// the last's).
    cuts: u32,
    /// Chain segments, once the indexes are complete.
    segments: Segments,
}

/// How long an idle chain segment step (an older range's, reading its
/// part indexes from the remote) may hold up an upload or a checkpoint,
/// at first: what the steps right after the uploads do not write, and a
/// remote that stops answering, must not stall replication behind them.
/// Doubled after each cut, up to [`SEGMENT_GRACE_MAX`], so that a step a
/// slow remote makes longer still finishes beside a busy writer.
pub const SEGMENT_GRACE: Duration = Duration::from_secs(1);
/// The most [`SEGMENT_GRACE`] grows to.
pub const SEGMENT_GRACE_MAX: Duration = Duration::from_secs(10);

/// Longest wait before a failed step is tried again.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

impl Default for Backfill {
    fn default() -> Self {
        Backfill {
            queue: None,
            done: false,
            tally: [0; 4],
            first_skipped: None,
            due: Instant::now(),
            backoff: Duration::from_secs(1),
            cuts: 0,
            segments: Segments::default(),
        }
    }
}

impl Backfill {
    /// When the next step is due, with snapshots up to `replicated` on
    /// the remote (`None`: nothing to do until more are).
    pub fn due(&self, replicated: u64) -> Option<Instant> {
        (!self.done || self.segments.next(replicated).is_some()).then_some(self.due)
    }

    /// Keeps the part index this run just uploaded for snapshot `seq`.
    pub fn uploaded(&mut self, seq: u64, index: Vec<u8>) {
        self.segments.uploaded.insert(seq, index);
    }

    /// How long the next step may go on while an upload or a checkpoint
    /// waits: a part index's (which may read a large snapshot's parts)
    /// gives way at once; a chain segment's is given [`SEGMENT_GRACE`] to
    /// finish, twice that after each cut in a row, up to
    /// [`SEGMENT_GRACE_MAX`].
    pub fn grace(&self) -> Duration {
        if self.done {
            (SEGMENT_GRACE * 2u32.saturating_pow(self.cuts)).min(SEGMENT_GRACE_MAX)
        } else {
            Duration::ZERO
        }
    }

    /// The step just run was cut short for an upload or a checkpoint: a
    /// chain segment's waits its backoff before it is tried again, with a
    /// longer grace (one that cannot finish within its grace while the
    /// writer keeps committing must not hold up every upload by that much,
    /// nor be cut for ever); a part index's is taken up again at the next
    /// idle moment.
    pub fn cut_short(&mut self) {
        if self.done {
            self.cuts = (self.cuts + 1).min(8);
            tracing::debug!(
                "chain segment step cut short; trying again in {:?}",
                self.backoff
            );
            self.due = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
        }
    }

    /// Right after snapshot `replicated` was uploaded: the chain segment
    /// of the range it completes, or the tail, when due and every part
    /// index of it was uploaded by this run (one PUT; the segments are
    /// listed first, once), whether or not an older range lacks one or the
    /// part indexes of older snapshots are complete (those snapshots are
    /// not in it). A failure is left to the steps taken when the
    /// replicator is idle.
    pub async fn inline(&mut self, agent: &Agent, remote: &Remote, replicated: u64) {
        let s = &mut self.segments;
        let first = segment::first_of(replicated);
        if s.known.is_none()
            && s.uploaded.holds(first, replicated)
            && let Err(e) = s.run(Work::List, agent, remote).await
        {
            tracing::warn!("listing the chain segments: {e}; tried again later");
            return;
        }
        // (One write at most: the segment, or the tail.)
        while let Some(work) = s.cheap(replicated) {
            if let Err(e) = s.run(work, agent, remote).await {
                tracing::warn!(
                    "chain segment {work:?}: {e}; tried again when the replicator is idle"
                );
                return;
            }
        }
    }

    /// One step: the listing, the next snapshot's index, or (the indexes
    /// complete) the next chain segment.
    pub async fn step(&mut self, agent: &Agent, remote: &Remote, replicated: u64) {
        let step = if self.done {
            self.segments.step(agent, remote, replicated).await
        } else {
            self.try_step(agent, remote, replicated).await
        };
        match step {
            Ok(()) => (self.backoff, self.cuts) = (Duration::from_secs(1), 0),
            Err(e) => {
                tracing::warn!(
                    "part indexes or chain segments of older snapshots: trying again in {:?}: {e}",
                    self.backoff
                );
                self.due = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    async fn try_step(&mut self, agent: &Agent, remote: &Remote, replicated: u64) -> Result<()> {
        let (queue, upto) = match &mut self.queue {
            Some((q, upto)) => (q, *upto),
            None => {
                let after = indexed_seq(agent, &remote.shown_url())?;
                let m = missing(agent, remote, after, replicated).await?;
                if !m.is_empty() {
                    tracing::info!(
                        "{} replicated snapshots have no part index on the remote (replicated by an older build); writing them, so that a lazy restore can use them",
                        m.len()
                    );
                }
                let (q, _) = self.queue.insert((m.into(), replicated));
                (q, replicated)
            }
        };
        // Taken off the queue once written: a step given up half-way (see
        // the replicator) is done again.
        let Some(&seq) = queue.front() else {
            if self.tally.iter().sum::<u64>() > 0 {
                let [local, remote, none, bad] = self.tally;
                tracing::info!(
                    "part indexes written for {} snapshots ({local} from the local index, {remote} read from the remote's parts; {none} without parts there, {bad} with parts that do not decode)",
                    local + remote
                );
            }
            // Not past a snapshot left without an index for now.
            let reached = self.first_skipped.map_or(upto, |s| upto.min(s - 1));
            set_indexed_seq(agent, &remote.shown_url(), reached)?;
            self.done = true;
            return Ok(());
        };
        let w = write_index(agent, remote, seq).await?;
        tracing::debug!(seq, ?w, "part index written");
        self.tally[w as usize] += 1;
        if w == Written::Undecodable {
            self.first_skipped.get_or_insert(seq);
        }
        if let Some((q, _)) = &mut self.queue {
            q.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded(seqs: impl IntoIterator<Item = u64>) -> Uploaded {
        let mut u = Uploaded::default();
        for s in seqs {
            u.insert(s, vec![s as u8; 10]);
        }
        u
    }

    fn listed(uploaded: Uploaded) -> Segments {
        Segments {
            known: Some(BTreeSet::new()),
            uploaded,
            ..Default::default()
        }
    }

    #[test]
    fn the_range_an_upload_completes_and_the_tail_are_written_from_this_runs_uploads() {
        // Older ranges without a segment (pruned, replicated before
        // segments, or before a restart) do not hold it up; the idle steps
        // start with them.
        let mut s = listed(uploaded(257..=512));
        assert_eq!(s.cheap(512), Some(Work::Segment(257)));
        assert_eq!(s.next(512), Some(Work::Segment(1)));
        s.known.as_mut().unwrap().insert(257);
        assert_eq!(s.cheap(512), None);
        // A restart mid-range: not every index of that range is at hand.
        assert_eq!(listed(uploaded(300..=512)).cheap(512), None);
        // The tail, once it would hold TAIL_STEP, then every TAIL_STEP more.
        let mut s = listed(uploaded(513..=700));
        assert_eq!(s.cheap(575), None);
        assert_eq!(s.cheap(576), Some(Work::Tail(513, 576)));
        s.tail = Some((513, 576));
        assert_eq!(s.cheap(639), None);
        assert_eq!(s.cheap(640), Some(Work::Tail(513, 640)));
        // Not listed yet: the caller lists first.
        let s = Segments {
            uploaded: uploaded(1..=256),
            ..Default::default()
        };
        assert_eq!(s.cheap(256), None);
    }

    #[test]
    fn a_segment_step_cut_short_backs_off_and_gets_more_time() {
        let mut b = Backfill {
            done: true,
            ..Default::default()
        };
        assert_eq!(b.grace(), SEGMENT_GRACE);
        let before = Instant::now();
        b.cut_short();
        assert!(b.due > before);
        assert_eq!(b.grace(), 2 * SEGMENT_GRACE);
        for _ in 0..20 {
            b.cut_short();
        }
        assert_eq!(b.grace(), SEGMENT_GRACE_MAX);
        // A part index's step gives way at once and is not put off.
        let mut p = Backfill::default();
        let due = p.due;
        p.cut_short();
        assert_eq!((p.grace(), p.due), (Duration::ZERO, due));
    }

    #[test]
    fn the_newest_ranges_part_indexes_are_kept_within_the_budget() {
        let mut u = uploaded(250..=260);
        assert!(
            u.holds(257, 260) && !u.holds(250, 256),
            "the older range left"
        );
        assert_eq!(u.bytes, 40);
        u.insert(258, vec![0; 3]);
        assert_eq!(u.bytes, 33);
        u.insert(261, vec![0; UPLOADED_BYTES]);
        assert!(!u.holds(257, 261), "over the budget");
        assert_eq!(u.bytes, 33);
        assert_eq!(u.get(258), Some(vec![0; 3]));
    }
}
