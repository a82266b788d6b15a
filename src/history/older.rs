//! The history before a flat start, fetched and checked after the mount
//! serves (#16).
//!
//! A lazy restore from a signed checkpoint
//! ([`crate::history::restore::restore_lazy`]) commits the rows of the
//! snapshots from the checkpoint's on and records where they start
//! ([`crate::repo::index::META_HISTORY_FROM`]), so that a fresh machine's
//! mount waits for the same few requests whatever the length of the
//! history. [`fill`] fetches the older snapshots, newest first, from the
//! chain segments (or the envelope files): each envelope must hash to the
//! parent link of the one after it, down to genesis at 1, keep the key and
//! format succession and open its manifest; each part index must decode,
//! each forget record verify against its snapshot. A batch's part indexes
//! are stored first ([`crate::repo::lazy::Lazy::add_older`]: a read that
//! waits for an object without a place looks again), then its rows, with
//! the marker moved down, in one transaction (then a `.snapshots/` request
//! waiting for them looks again: `Lazy::older_rows_in`); a crash in
//! between fetches the batch again.
//!
//! A mount runs it in a thread of its own from the moment it opens the
//! agent; the commands that need the whole history (verify, log, prune,
//! forget, redact, rollback and the rest) run it first, or wait for the
//! mount's. A snapshot that does not check stops it, named in the log, in
//! `sovseal status` ([`META_HISTORY_FAILED`]) and in the commands' errors:
//! the snapshots from the checkpoint on still serve, the older ones are
//! never shown.

use crate::history::restore::{self, Ahead};
use crate::repo::agent::Agent;
use crate::repo::lazy::{Lazy, SnapshotIndex};
use crate::repo::remote::Remote;
use crate::seal::envelope::{self, Envelope, GENESIS_PARENT};
use crate::seal::keys::{AgentId, AgentKeys};
use crate::{Error, Result};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

/// `meta` key: why the older history stopped loading (a snapshot that
/// does not check), for `sovseal status` and the commands that need it;
/// cleared when a fill starts again.
pub const META_HISTORY_FAILED: &str = "history_failed";

/// Snapshots checked before their part indexes and rows are stored.
const BATCH: usize = 1024;

/// Where the history of `agent` stands: `None` when whole, else the first
/// snapshot held and why loading stopped, if it did.
pub fn pending(agent: &Agent) -> Result<Option<(u64, Option<String>)>> {
    let index = agent.repo().index()?;
    let Some(from) = index.history_from()? else {
        return Ok(None);
    };
    let failed = index
        .meta(META_HISTORY_FAILED)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(Some((from, failed)))
}

/// Fetches, checks and stores the snapshots before the first this index
/// holds, newest first, until snapshot 1 is in or `stop` is set (between
/// requests' results). Nothing to do for a whole history. A remote, disk
/// or index that fails ([`worth_retrying`]) is only returned: reads keep
/// waiting for the older part indexes, and the caller tries again. Any
/// other error (a snapshot that does not check) is recorded
/// ([`META_HISTORY_FAILED`]) and returned, and reads stop waiting.
pub async fn fill(agent: &Agent, remote: &Remote, stop: &AtomicBool) -> Result<()> {
    let lazy = agent.repo().lazy().cloned();
    if let Some(l) = &lazy {
        l.set_filling(true);
    }
    let res = fill_batches(agent, remote, stop).await;
    if let Some(l) = &lazy
        && !res.as_ref().is_err_and(worth_retrying)
    {
        l.set_filling(false);
    }
    if let Err(e) = &res
        && !worth_retrying(e)
    {
        let shown = e.to_string();
        if let Err(m) = agent
            .repo()
            .index()
            .and_then(|i| i.set_meta(META_HISTORY_FAILED, Some(shown.as_bytes())))
        {
            tracing::warn!("older history: could not record why it stopped ({m})");
        }
    }
    res
}

/// Whether `e` is a remote, a disk or the index failing (worth another
/// try), as opposed to something fetched that does not check.
pub fn worth_retrying(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote { .. } | Error::Io { .. } | Error::Sqlite(..)
    )
}

async fn fill_batches(agent: &Agent, remote: &Remote, stop: &AtomicBool) -> Result<()> {
    let Some(from) = agent.repo().index()?.history_from()? else {
        return Ok(());
    };
    let Some(lazy) = agent.repo().lazy().cloned() else {
        return Err(Error::Invalid(format!(
            "agent {} holds snapshots from {from} on only, and its data dir was not restored lazily: the older ones cannot be fetched",
            agent.name()
        )));
    };
    agent.repo().index()?.set_meta(META_HISTORY_FAILED, None)?;
    let keys = agent.repo().keys().clone();
    let id = keys.agent_id();
    let (segments, tail, forgotten) = futures::try_join!(
        remote.list_segments(&id),
        remote.get_tail(&id),
        restore::forget_records(&keys, remote)
    )?;
    let segments: BTreeSet<u64> = segments.into_iter().collect();
    // (One that does not decode is left out: its snapshots are fetched
    // one by one.)
    let tail = tail.and_then(|b| crate::repo::segment::decode_tail(&b).ok());
    let records: HashMap<u64, Vec<u8>> = forgotten
        .iter()
        .map(|(s, _, raw)| (*s, raw.clone()))
        .collect();
    // What a redaction erased is never fetched (as at the restore).
    let allowed = crate::history::redact::allowances_unchecked(agent)?;
    // The snapshot after those checked so far: the oldest held at first.
    let mut next = agent.envelope(from)?;
    let seqs: Vec<u64> = (1..from).collect();
    let mut ahead = futures::stream::iter(
        restore::units(&seqs, &segments, tail, true)
            .into_iter()
            .rev(),
    )
    .map(|unit| restore::started(restore::fetch_unit(remote.clone(), id, unit, true)))
    .buffered(restore::UNITS_AHEAD_LAZY);
    let (mut envelopes, mut indexes) = (Vec::new(), Vec::new());
    while let Some(unit) = ahead.next().await {
        let took = async {
            for got in unit?.into_iter().rev() {
                let seq = next.sequence_number - 1;
                let got = checked(&keys, remote, &id, got, seq, &next).await?;
                let hash = got.env.hash();
                let place = (seq, hash, got.index, got.parts_gone);
                let mut entries = match restore::part_entries(remote, &keys, &records, place).await? {
                    Some(e) => e,
                    None => entries_from_parts(remote, &id, seq, &hash).await?,
                };
                // (Checked before it is taken: what is taken is stored.)
                if seq == 1 && got.env.parent_snapshot != GENESIS_PARENT {
                    return Err(Error::ChainBroken {
                        seq: 1,
                        detail: "the first snapshot does not start a chain (its parent link is not genesis)".into(),
                    });
                }
                entries.retain(|e| !allowed.erased_as_of(&e.id, seq));
                indexes.push(SnapshotIndex { seq, hash, entries });
                envelopes.push(got.env.clone());
                next = got.env;
            }
            Ok(())
        }
        .await;
        if let Err(e) = took {
            // What checked before it serves (its chain reaches the
            // checkpoint); it and the older ones never do.
            store(agent, &lazy, &mut envelopes, &mut indexes, &forgotten)?;
            return Err(e);
        }
        let done = next.sequence_number == 1;
        let stopping = stop.load(Ordering::Relaxed);
        if envelopes.len() >= BATCH || done || stopping {
            store(agent, &lazy, &mut envelopes, &mut indexes, &forgotten)?;
        }
        if done || stopping {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
    Err(Error::ChainBroken {
        seq: next.sequence_number - 1,
        detail: "the older history ended before snapshot 1".into(),
    })
}

/// The part index of snapshot `seq` (envelope hash `hash`), which the
/// remote holds without one (replicated by a build before part indexes,
/// and not indexed since by a writer's mount): read from its pack parts,
/// whole (each object fetched through it is checked, as any).
async fn entries_from_parts(
    remote: &Remote,
    id: &AgentId,
    seq: u64,
    hash: &[u8; 32],
) -> Result<Vec<crate::repo::pack::PartEntry>> {
    let Some(entries) = remote.entries_from_parts(id, seq, hash).await? else {
        return Err(Error::ChainBroken {
            seq,
            detail: "neither a part index nor a pack part of it on the remote, and no forget record says its content was pruned".into(),
        });
    };
    tracing::info!(
        "older history: snapshot {seq} has no part index on the remote: read from its parts"
    );
    entries
}

/// Snapshot `seq` as read ahead, checked against `next` (the snapshot
/// after it, already checked): its number, its hash against `next`'s
/// parent link, the key and format succession, its manifest. One from a
/// chain segment that does not check is taken from its own files (and
/// checked again) before the error stands.
async fn checked(
    keys: &AgentKeys,
    remote: &Remote,
    id: &AgentId,
    got: Ahead,
    seq: u64,
    next: &Envelope,
) -> Result<Ahead> {
    let check = |env: &Envelope| -> Result<()> {
        restore::check_number(env, seq)?;
        if env.hash() != next.parent_snapshot {
            return Err(Error::ChainBroken {
                seq,
                detail: format!(
                    "it does not hash to the parent link of snapshot {}",
                    seq + 1
                ),
            });
        }
        envelope::check_succession(env.key_version, env.format_version, next)?;
        envelope::open_manifest(keys, env).map(|_| ())
    };
    let e = match check(&got.env) {
        Ok(()) => return Ok(got),
        Err(e) => e,
    };
    if let Some(first) = got.segment {
        tracing::warn!(
            "the segment from snapshot {first} on the remote (a chain or the tail segment) holds a snapshot {seq} that does not check ({e}): fetching its files"
        );
        if let Ok(again) = restore::prefetch(remote, id, seq, true).await {
            match check(&again.env) {
                Ok(()) => return Ok(again),
                Err(e) => return Err(restore::chain_error(keys, remote, seq, &again.env, e).await),
            }
        }
    }
    Err(restore::chain_error(keys, remote, seq, &got.env, e).await)
}

/// Stores a checked batch (`envelopes` newest first, their part indexes):
/// the part indexes first, durably, then the rows with their forget
/// records, the marker moved down.
fn store(
    agent: &Agent,
    lazy: &Lazy,
    envelopes: &mut Vec<Envelope>,
    indexes: &mut Vec<SnapshotIndex>,
    forgotten: &[(u64, i64, Vec<u8>)],
) -> Result<()> {
    let (Some(newest), Some(oldest)) = (envelopes.first(), envelopes.last()) else {
        return Ok(());
    };
    let range = oldest.sequence_number..=newest.sequence_number;
    let records: Vec<_> = forgotten
        .iter()
        .filter(|f| range.contains(&f.0))
        .cloned()
        .collect();
    lazy.add_older(std::mem::take(indexes))?;
    agent.repo().index()?.insert_history(envelopes, &records)?;
    lazy.older_rows_in(*range.start());
    tracing::debug!(
        "older history: snapshots {}..={} in",
        range.start(),
        range.end()
    );
    envelopes.clear();
    Ok(())
}
