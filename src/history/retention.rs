//! Retention: which snapshots to keep (a policy), forgetting the others, and
//! pruning the content that no retained snapshot references, locally and on
//! the remote.
//!
//! A forgotten snapshot keeps its envelope (sequence, parent, hashes), so
//! the chain from snapshot 1 still verifies; it gets a forget record signed
//! with the agent's Ed25519 key (stored in the index and on the remote), so
//! that verification and restore accept its missing content, and nobody
//! without the master key can pass a deletion off as a forget. It is no
//! longer listed (`.snapshots/`, `sovseal snapshots`) nor opened.
//!
//! Pruning rewrites the local packs that hold dead objects (live objects
//! are copied to a new pack; one index transaction switches every location;
//! then the old packs are deleted) and deletes on the remote the pack parts
//! of forgotten snapshots that hold no live object. Content of snapshots not
//! yet replicated is kept until it is.

use crate::config::parse_duration;
use crate::repo::agent::Agent;
use crate::repo::remote::Remote;
use crate::seal::tree::{ObjRef, ObjectId};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// Which snapshots to keep. A snapshot is kept if any rule keeps it; the
/// head is always kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The newest N snapshots.
    pub keep_last: Option<u64>,
    /// The newest snapshot of each of the newest N hours (UTC) that have one.
    pub keep_hourly: Option<u64>,
    /// The newest snapshot of each of the newest N days (UTC) that have one.
    pub keep_daily: Option<u64>,
    /// Every snapshot taken within this long before now (`7d`, `36h`).
    pub keep_within: Option<String>,
}

impl Policy {
    /// Whether no rule is given (which would forget everything but the head).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_within.is_none()
    }

    /// Checks the rules: at least one, durations that parse.
    pub fn validate(&self) -> Result<Option<Duration>> {
        if self.is_empty() {
            return Err(Error::Invalid(
                "refusing to forget every snapshot but the head: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-within".into(),
            ));
        }
        self.keep_within.as_deref().map(parse_duration).transpose()
    }

    /// The retention policy of an agent from `config.json` (`retention`,
    /// per agent or top-level), if one is set.
    pub fn from_config(v: Option<serde_json::Value>) -> Result<Option<Self>> {
        let Some(v) = v else { return Ok(None) };
        let p: Policy = serde_json::from_value(v).map_err(|e| {
            Error::Invalid(format!(
                "config.json: retention must look like {{\"keep_last\": 100, \"keep_daily\": 7, \"keep_within\": \"2d\"}}: {e}"
            ))
        })?;
        p.validate()?;
        Ok(Some(p))
    }
}

/// Keeps the newest snapshot of each of the newest `n` buckets.
fn keep_buckets(snaps: &[(u64, i64)], n: u64, bucket_ms: i64, keep: &mut BTreeSet<u64>) {
    let mut seen = BTreeSet::new();
    for (seq, ts) in snaps.iter().rev() {
        if seen.len() as u64 >= n {
            break;
        }
        if seen.insert(ts.div_euclid(bucket_ms)) {
            keep.insert(*seq);
        }
    }
}

/// Splits `snaps` (retained, ascending, with timestamps in ms) into the
/// sequences to keep and to forget under `p`, at time `now_ms`.
pub fn plan(p: &Policy, snaps: &[(u64, i64)], now_ms: i64) -> Result<(BTreeSet<u64>, Vec<u64>)> {
    let within = p.validate()?;
    let mut keep = BTreeSet::new();
    if let Some(&(head, _)) = snaps.last() {
        keep.insert(head);
    }
    if let Some(n) = p.keep_last {
        keep.extend(snaps.iter().rev().take(n as usize).map(|s| s.0));
    }
    if let Some(n) = p.keep_hourly {
        keep_buckets(snaps, n, 3_600_000, &mut keep);
    }
    if let Some(n) = p.keep_daily {
        keep_buckets(snaps, n, 86_400_000, &mut keep);
    }
    if let Some(d) = within {
        let since = now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        keep.extend(snaps.iter().filter(|s| s.1 >= since).map(|s| s.0));
    }
    let forget = snaps
        .iter()
        .map(|s| s.0)
        .filter(|s| !keep.contains(s))
        .collect();
    Ok((keep, forget))
}

pub use crate::seal::forget::ForgetRecord;

/// Applies `policy` to the agent's retained snapshots as of now: returns
/// (kept, to forget), and unless `dry_run` forgets them (signed records).
/// Pruning is a separate step ([`prune`]). Needs the writer.
pub fn apply(agent: &Agent, policy: &Policy, dry_run: bool) -> Result<(BTreeSet<u64>, Vec<u64>)> {
    let retained = agent.repo().index()?.retained()?;
    let (keep, forget_seqs) = plan(policy, &retained, crate::time::now_ms())?;
    if !dry_run {
        forget(agent, &forget_seqs)?;
    }
    Ok((keep, forget_seqs))
}

/// Prunes locally, then on `remote` (its failure is an error: see
/// [`prune_remote`] to treat it apart).
pub fn prune(
    agent: &Agent,
    remote: &Remote,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PruneReport> {
    let mut r = prune_local(agent, progress)?;
    crate::repo::remote::runtime()?.block_on(prune_remote(agent, remote, &mut r))?;
    Ok(r)
}

/// Forgets `seqs` (never the head): signs and records a forget record for
/// each. Needs the writer (no mount running).
pub fn forget(agent: &Agent, seqs: &[u64]) -> Result<()> {
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    let keys = agent.repo().keys();
    let now = crate::time::now_ms();
    let mut records = Vec::new();
    for &seq in seqs {
        if seq == head {
            return Err(Error::Invalid(format!(
                "the head (snapshot {seq}) cannot be forgotten"
            )));
        }
        let hash = agent
            .repo()
            .index()?
            .stored_hash(seq)?
            .ok_or(Error::NoSuchSnapshot(seq))?;
        let r = ForgetRecord::sign(keys, seq, &hash, now);
        records.push((seq, now, serde_json::to_vec(&r).expect("record encodes")));
    }
    agent.repo().index()?.forget(&records)
}

/// The forgotten sequences of `agent`, each record verified
/// ([`Agent::forgotten_seqs`]).
pub fn forgotten(agent: &Agent) -> Result<BTreeSet<u64>> {
    agent.forgotten_seqs()
}

/// What a prune did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Objects removed locally.
    pub objects_removed: u64,
    /// Sealed bytes removed locally.
    pub bytes_removed: u64,
    /// Local packs rewritten.
    pub packs_rewritten: u64,
    /// Forgotten snapshots whose remote pack parts were deleted.
    pub remote_snapshots_pruned: u64,
    /// Remote pack parts deleted.
    pub remote_parts_deleted: u64,
    /// Forgotten snapshots whose remote parts stay as they are: all they
    /// hold is still read, or a lazily restored data dir may still fetch
    /// from them.
    pub remote_snapshots_kept: u64,
    /// Of the pruned ones, those whose parts were written again with the
    /// objects a kept snapshot still reads (a delta of its chain, a page it
    /// did not change) instead of deleted.
    pub remote_snapshots_trimmed: u64,
    /// Remote pack parts written again for them.
    pub remote_parts_rewritten: u64,
}

/// Objects referenced by a retained snapshot, or by any snapshot not yet
/// replicated (its content must reach the remote first). What a redaction
/// erased from a snapshot is not read there, nor kept for it.
fn live_objects(agent: &Agent, progress: &mut dyn FnMut(u64, u64)) -> Result<HashSet<ObjRef>> {
    let forgotten = forgotten(agent)?;
    let allowed = crate::history::redact::allowances(agent)?;
    let replicated = crate::repo::replication_state::replicated_seq(agent)?;
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    let live: RefCell<HashSet<ObjRef>> = RefCell::new(HashSet::new());
    let walked: RefCell<HashSet<ObjectId>> = RefCell::new(HashSet::new());
    for seq in 1..=head {
        progress(seq, head);
        if forgotten.contains(&seq) && seq <= replicated {
            continue;
        }
        let view = agent.snapshot_unchecked(seq)?;
        // Every reference met is live, as the copy it names (an object
        // stored again at another home is another copy); below an id
        // walked before, the subtree is the same bytes (the id is their
        // hash), so it is not walked again.
        view.walk_objects(
            &|r| {
                if allowed.allows(&r.id, seq) {
                    return true;
                }
                live.borrow_mut().insert(*r);
                walked.borrow().contains(&r.id)
            },
            &mut |_, r| {
                walked.borrow_mut().insert(r.id);
                Ok(())
            },
        )?;
    }
    Ok(live.into_inner())
}

/// Removes every local object no retained snapshot references, rewriting
/// the packs that hold them. Needs the writer (no mount running).
/// `progress(seq, head)` follows the walk over the snapshots.
pub fn prune_local(agent: &Agent, progress: &mut dyn FnMut(u64, u64)) -> Result<PruneReport> {
    let live = live_objects(agent, progress)?;
    let all = agent.repo().index()?.all_objects()?;
    if live.is_empty() && !all.is_empty() {
        // Every agent's head references objects: an empty live set means
        // the index lost its history, not that everything is garbage.
        return Err(Error::HistoryMissing {
            agent: agent.name().to_string(),
            evidence: format!("{} objects but no snapshot referencing any", all.len()),
        });
    }
    let dead: Vec<_> = all
        .into_iter()
        .filter(|o| {
            !live.contains(&ObjRef {
                id: o.id,
                home: o.home,
            })
        })
        .collect();
    Ok(PruneReport {
        packs_rewritten: crate::repo::repack::remove_objects(agent.repo(), &dead)?,
        objects_removed: dead.len() as u64,
        bytes_removed: dead.iter().map(|o| u64::from(o.loc.len)).sum(),
        ..PruneReport::default()
    })
}

/// On the remote: uploads the forget records, then deletes the pack parts
/// of forgotten, replicated snapshots that no longer hold a live object
/// (run after [`prune_local`]), then writes the forget record bundle when
/// it would change. The requests of different snapshots go at once
/// (16 at a time), in three steps that keep the order a crash may
/// interrupt at any point: every record stored (and what each snapshot
/// still has there looked up), then the chain segments of the snapshots
/// whose parts go, then those parts and part indexes, each snapshot
/// recorded as pruned there once its own are gone. A snapshot whose
/// requests fail is left for the next prune while the others go on; the
/// first error is returned at the end, `report` counting what was done.
pub async fn prune_remote(agent: &Agent, remote: &Remote, report: &mut PruneReport) -> Result<()> {
    use futures::StreamExt;
    let id = agent.repo().keys().agent_id();
    let id = &id;
    let replicated = crate::repo::replication_state::replicated_seq(agent)?;
    let rows = agent.repo().index()?.forgotten()?;
    // Every record the remote holds from here, bundled (below).
    let bundle: Vec<(u64, Vec<u8>)> = rows
        .range(..=replicated)
        .map(|(seq, (raw, _))| (*seq, raw.clone()))
        .collect();
    // Also the pruned ones that still hold objects there: their parts
    // were written again with those alone, and what died since goes now.
    let trimmed = agent.repo().index()?.trimmed_seqs()?;
    let due: Vec<(u64, (Vec<u8>, bool))> = rows
        .range(..=replicated)
        .filter(|(seq, (_, pruned))| !pruned || trimmed.contains(seq))
        .map(|(seq, (raw, pruned))| (*seq, (raw.clone(), *pruned)))
        .collect();
    // 1. Each record stored; then whether the snapshot keeps its parts
    // (a live object, or a lazily restored data dir that may still fetch
    // from them) or what it has left there. A snapshot whose requests
    // fail is left for the next prune; the others go on, and the first
    // error is returned at the end (with the report of what was done).
    let mut failed = None;
    let mut found: Vec<(u64, Option<Goes>)> = Vec::new();
    // Snapshots that keep some objects (a delta or a page a kept snapshot
    // reads): their parts are written again with those alone (step 4).
    let mut trims: Vec<(u64, [u8; 32])> = Vec::new();
    let step1: Vec<Result<Step1>> = futures::stream::iter(due)
        .map(|(seq, (raw, pruned))| async move {
            if !pruned {
                remote.put_forgotten(id, seq, raw).await?;
            }
            if agent.repo().lazy().is_some_and(|l| l.holds(seq)) {
                return Ok((seq, None, None));
            }
            let hash = agent
                .repo()
                .index()?
                .stored_hash(seq)?
                .ok_or(Error::NoSuchSnapshot(seq))?;
            if agent.repo().index()?.has_objects_of(seq)? {
                return Ok((seq, None, Some(hash)));
            }
            // With part 0 gone, the part index still says how many parts
            // there were (a prune by an older build, cut short, deleted
            // them from the first).
            let (left, parts) = if remote.has_pack(id, seq, &hash, 0).await? {
                (true, 0)
            } else {
                match remote.get_index(id, seq, &hash).await? {
                    Some(b) => (
                        true,
                        crate::repo::pack::decode_index(seq, &b)
                            .map(|e| e.iter().map(|p| p.part + 1).max().unwrap_or(0))
                            .unwrap_or(0),
                    ),
                    None => (false, 0),
                }
            };
            Ok((seq, Some(Goes { hash, left, parts }), None))
        })
        .buffered(PRUNE_IN_FLIGHT)
        .collect()
        .await;
    for r in step1 {
        match r {
            Ok((seq, goes, trim)) => {
                found.push((seq, goes));
                trims.extend(trim.map(|h| (seq, h)));
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    // (Those with objects still read are counted by step 4.)
    report.remote_snapshots_kept +=
        (found.iter().filter(|(_, f)| f.is_none()).count() - trims.len()) as u64;
    // 2. The chain segment bundling a part index goes before the index,
    // when there is anything left to delete (a restore then reads its
    // snapshots one by one until the writer writes it again; a stale one
    // would only cost it requests): each once. Nothing is deleted past a
    // segment that could not be.
    let mut unsegmented = BTreeSet::new();
    for (seq, _) in found.iter().filter(|(_, f)| f.is_some_and(|g| g.left)) {
        if let Err(e) = remote.delete_segment_of(id, *seq, &mut unsegmented).await {
            return Err(failed.unwrap_or(e));
        }
    }
    // The snapshots that keep some objects: their parts written again
    // with those alone (what the local prune removed goes there too), read
    // from their upload batch when they went up in one, before they
    // leave it below.
    let mut trims = match trim_parts(agent, remote, &trims, &mut unsegmented, report).await {
        Ok(t) => t,
        Err(e) => return Err(failed.unwrap_or(e)),
    };
    // Records that upload batches hold leave them, each batch written
    // again once for all its pruned and trimmed members; a batch index of
    // their ranges that does not decode stops the prune here (what it
    // holds cannot be told: its members read as having no parts above).
    let mut in_batches: Vec<(u64, [u8; 32])> = found
        .iter()
        .filter_map(|(seq, f)| f.filter(|g| g.left).map(|g| (*seq, g.hash)))
        .collect();
    in_batches.append(&mut trims.own);
    let mut pruned: Vec<u64> = found
        .iter()
        .filter_map(|(seq, f)| f.map(|_| *seq))
        .collect();
    pruned.extend(&trims.looked_at);
    if let Err(e) = remote.leave_batches(id, &in_batches, &pruned).await {
        return Err(failed.or(trims.failed).unwrap_or(e));
    }
    // 3. The parts and index of each, then recorded; each counted as it
    // is done.
    let mut step3 =
        futures::stream::iter(found.into_iter().filter_map(|(seq, f)| f.map(|g| (seq, g))))
            .map(|(seq, g)| async move {
                let hash = g.hash;
                let parts = remote.delete_packs(id, seq, &hash, g.parts).await?;
                remote.delete_index(id, seq, &hash).await?;
                agent.repo().index()?.set_remote_pruned(seq)?;
                Ok::<_, Error>(parts)
            })
            .buffer_unordered(PRUNE_IN_FLIGHT);
    while let Some(r) = step3.next().await {
        match r {
            Ok(parts) => {
                report.remote_snapshots_pruned += 1;
                report.remote_parts_deleted += u64::from(parts);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    // 4. The trimmed ones recorded as pruned there (part of their
    // content is gone: a restore needs their record), and looked at again
    // by each prune while they hold objects there.
    for seq in &trims.trimmed {
        agent.repo().index()?.set_remote_trimmed(*seq)?;
        report.remote_snapshots_pruned += 1;
        report.remote_snapshots_trimmed += 1;
    }
    if let Some(e) = trims.failed {
        failed.get_or_insert(e);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    // One object for a restore to fetch instead of a record per forgotten
    // snapshot (`segment::encode_forgotten`), written again when it would
    // hold other records than the last one written there (records only
    // come, so their count and the last say it).
    use crate::repo::replication_state::{forgotten_bundled, set_forgotten_bundled};
    let stamp = format!(
        "{} {} {}",
        bundle.len(),
        bundle.last().map_or(0, |b| b.0),
        remote.shown_url()
    );
    if !bundle.is_empty() && forgotten_bundled(agent)?.as_deref() != Some(stamp.as_str()) {
        remote
            .put_forgotten_bundle(id, crate::repo::segment::encode_forgotten(&bundle))
            .await?;
        set_forgotten_bundled(agent, &stamp)?;
    }
    Ok(())
}

/// What [`trim_parts`] did.
#[derive(Default)]
struct Trims {
    /// Those now with parts of their own (to leave their upload batch).
    own: Vec<(u64, [u8; 32])>,
    /// Those whose parts were written again.
    trimmed: Vec<u64>,
    /// Every one looked at (their batch ranges are checked).
    looked_at: Vec<u64>,
    /// The first request that failed (its snapshot is left as it was).
    failed: Option<Error>,
}

/// [`prune_remote`]'s trim: each of `trims` (forgotten snapshots that
/// still hold objects a kept snapshot reads: a delta of its chain, a page
/// it did not change) keeps on the remote those objects alone. A snapshot
/// whose requests fail is left as it was, the others go on. A batch index
/// of their ranges that does not decode stops it (the error).
async fn trim_parts(
    agent: &Agent,
    remote: &Remote,
    trims: &[(u64, [u8; 32])],
    unsegmented: &mut BTreeSet<u64>,
    report: &mut PruneReport,
) -> Result<Trims> {
    let id = agent.repo().keys().agent_id();
    let seqs: Vec<u64> = trims.iter().map(|(s, _)| *s).collect();
    remote.leave_batches(&id, &[], &seqs).await?;
    let mut out = Trims {
        looked_at: seqs,
        ..Trims::default()
    };
    // What every kept snapshot reaches, walked once (not what the local
    // index lacks: a damaged index must never delete a remote copy).
    let live = match trims.is_empty() {
        true => HashSet::new(),
        false => live_objects(agent, &mut |_, _| {})?,
    };
    for (seq, hash) in trims {
        match trim_one(agent, remote, (*seq, hash), &live, unsegmented).await {
            Ok((rewritten, stale, has_own)) => {
                report.remote_parts_rewritten += rewritten;
                if has_own {
                    out.own.push((*seq, *hash));
                }
                if rewritten > 0 || stale == Some(true) {
                    out.trimmed.push(*seq);
                } else {
                    report.remote_snapshots_kept += 1;
                }
            }
            Err(e) => {
                out.failed.get_or_insert(e);
            }
        }
    }
    Ok(out)
}

/// One snapshot of [`trim_parts`]: its parts written again without what
/// the local prune removed (unless its part index names none of it).
/// Returns the parts written again, whether its index named any, and
/// whether it has parts of its own now.
async fn trim_one(
    agent: &Agent,
    remote: &Remote,
    (seq, hash): (u64, &[u8; 32]),
    live: &HashSet<ObjRef>,
    unsegmented: &mut BTreeSet<u64>,
) -> Result<(u64, Option<bool>, bool)> {
    let id = agent.repo().keys().agent_id();
    // Gone: what no kept snapshot reaches (a metadata object there is
    // the copy homed at `seq`; content is found by id).
    let gone = |o: &ObjectId| {
        !live.contains(&ObjRef { id: *o, home: seq }) && !live.contains(&ObjRef::by_id(*o))
    };
    let stale = crate::history::redact::stale_index(remote, &id, seq, hash, &gone).await?;
    // (Its part index names nothing gone: its parts hold what is still
    // read, whole.)
    let rewritten = match stale {
        Some(false) => 0,
        _ => {
            crate::history::redact::rewrite_parts(
                remote,
                &id,
                (seq, hash),
                &gone,
                stale,
                unsegmented,
            )
            .await?
        }
    };
    Ok((rewritten, stale, remote.has_own_pack(&id, seq, hash).await?))
}

/// What step 1 of [`prune_remote`] found of one forgotten snapshot: its
/// parts go (`Goes`), or it keeps objects kept snapshots read (its
/// envelope hash: its parts are trimmed), or neither (a lazily restored
/// data dir may still fetch from it).
type Step1 = (u64, Option<Goes>, Option<[u8; 32]>);

/// Snapshots whose requests a remote prune has in flight at once.
const PRUNE_IN_FLIGHT: usize = 16;

/// A forgotten snapshot whose parts a remote prune deletes.
#[derive(Clone, Copy)]
struct Goes {
    /// Its envelope hash (names its parts there).
    hash: [u8; 32],
    /// Whether a part or the part index is still there.
    left: bool,
    /// How many parts its part index names, when part 0 is gone (else 0).
    parts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn plans_follow_each_rule_and_always_keep_the_head() {
        // One snapshot every 30 minutes for two days.
        let snaps: Vec<(u64, i64)> = (1..=96).map(|s| (s, s as i64 * H / 2)).collect();
        let now = 96 * H / 2;
        let p = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            plan(&p, &snaps, now).unwrap().0
        };
        assert_eq!(p(|p| p.keep_last = Some(3)), BTreeSet::from([94, 95, 96]));
        // Hourly: the newest of each of the newest 3 hours that have one
        // (snapshot 96 opens hour 48 alone; 95 closes hour 47, 93 hour 46).
        assert_eq!(p(|p| p.keep_hourly = Some(3)), BTreeSet::from([93, 95, 96]));
        assert_eq!(p(|p| p.keep_daily = Some(5)).len(), 3); // 3 days have snapshots
        assert_eq!(
            p(|p| p.keep_within = Some("90m".into())),
            BTreeSet::from([93, 94, 95, 96])
        );
        // keep_last 0 keeps the head all the same.
        assert_eq!(p(|p| p.keep_last = Some(0)), BTreeSet::from([96]));
        // No rule: refused, nothing planned.
        assert!(plan(&Policy::default(), &snaps, now).is_err());
        let (keep, forget) = plan(
            &Policy {
                keep_last: Some(10),
                ..Policy::default()
            },
            &snaps,
            now,
        )
        .unwrap();
        assert_eq!(keep.len() + forget.len(), snaps.len());
    }

    #[test]
    fn forget_records_are_bound_to_agent_snapshot_and_key() {
        let m = crate::seal::keys::MasterKey::from_bytes([5; 32]);
        let k = m.agent_keys("a");
        let r = ForgetRecord::sign(&k, 4, &[7; 32], 1);
        let raw = serde_json::to_vec(&r).unwrap();
        ForgetRecord::parse(&raw, &k, 4, Some(&[7; 32])).unwrap();
        assert!(ForgetRecord::parse(&raw, &k, 5, None).is_err());
        assert!(ForgetRecord::parse(&raw, &k, 4, Some(&[8; 32])).is_err());
        assert!(ForgetRecord::parse(&raw, &m.agent_keys("b"), 4, None).is_err());
        // A checkpoint signature cannot be replayed as a forget record.
        let c = crate::history::checkpoint::Checkpoint::sign(&k, 4, &[7; 32], 1);
        let mut r2 = r.clone();
        r2.signature = c.signature;
        assert!(ForgetRecord::parse(&serde_json::to_vec(&r2).unwrap(), &k, 4, None).is_err());
    }
}
