//! Restore: rebuild an agent's local data from the remote alone.
//!
//! Verified recall (seed 004) for a whole chain: list the envelopes, check
//! that the sequence numbers are dense from 1, download each envelope, check
//! its parent link, tag and payload hash (`vsr_hash_mismatch`), download its
//! pack parts and check every object's tag and id before it is stored, commit
//! it to a fresh local index, and finally run the full verification. A head
//! older than the one this machine last saw is a rollback. Anything that does
//! not verify removes the half-built data dir and names the sequence and the
//! reason: nothing unverified is ever shown.
//!
//! Also here: writing a snapshot's tree, or one path of it, out to a plain
//! directory, from the remote (`to_directory`) or from local data
//! (`from_local`, after verifying that snapshot's objects).

use crate::config::{AgentName, Home};
use crate::repo::agent::Agent;
use crate::repo::pack;
use crate::repo::remote::Remote;
use crate::repo::replication_state::{META_REMOTE, META_REPLICATED};
use crate::repo::segment;
use crate::repo::view::SnapshotView;
use crate::seal::envelope::{self, Envelope, GENESIS_PARENT};
use crate::seal::keys::{AgentId, MasterKey};
use crate::seal::tree::{self, FileType, Inode, ObjRef, ObjectId};
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, mkdirat, mknodat};
use nix::unistd::{linkat, symlinkat};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Restores `name` from `remote` into an empty local data dir; returns the
/// head sequence number. `progress(seq, head)` is called per snapshot.
pub async fn restore(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64> {
    empty_data_dir(home, name)?;
    let res = restore_into(home, name, master, remote, &mut progress).await;
    if res.is_err() {
        // Only a data dir this restore marked (and so filled) goes.
        let _ = crate::repo::agent::discard_stopped_restore(home, name);
    }
    res
}

/// What the remote holds of an agent, checked before anything is fetched.
struct Survey {
    seqs: Vec<u64>,
    head: u64,
    checkpoints: Vec<crate::history::checkpoint::Checkpoint>,
    forgotten: Vec<(u64, i64, Vec<u8>)>,
}

/// Lists the envelopes (dense from 1), the signed checkpoints (each
/// verified, none past the head) and the forget records (each verified).
/// Snapshots `1..=covered` are taken as present without a listing (chain
/// segments hold them: [`covered`]) when the remote lists the last of
/// them: only the envelopes from it on are listed. Else (segments left
/// over past the end of the chain) every envelope is. `ahead` (what
/// `covered` is told from) and the requests that do not depend on it run
/// at once: a mount on a far remote waits for about two round trips (more
/// when forget records are missing from the bundle or a listing pages),
/// not one per request.
async fn survey<T>(
    keys: &crate::seal::keys::AgentKeys,
    name: &AgentName,
    remote: &Remote,
    ahead: impl std::future::Future<Output = Result<T>>,
    covered: impl FnOnce(&T) -> u64,
) -> Result<(Survey, T)> {
    let id = keys.agent_id();
    let listing = async {
        // The newest signed checkpoint on the remote: it must verify, and
        // the chain must reach it (a remote that dropped newer snapshots
        // but kept their checkpoint is caught here, before anything is
        // downloaded) and hold its hash (once restored), which vouches for
        // every snapshot before it. Read before the envelopes are listed:
        // a checkpoint is stored only after its snapshot's envelope, so
        // the one read names an envelope the listing below shows, also
        // while a writer goes on.
        let newest = crate::history::checkpoint::fetch_remote_newest(keys, remote);
        let (ahead, newest) = futures::try_join!(ahead, newest)?;
        let covered = covered(&ahead);
        // One listing (every page of a cursor loop lists the whole
        // directory), of what the segments do not hold.
        let mut seqs = Vec::new();
        if covered > 0 {
            let from_last = remote.list_envelopes(&id, covered - 1, usize::MAX).await?;
            if from_last.first() == Some(&covered) {
                seqs = (1..covered).chain(from_last).collect();
            } else {
                tracing::warn!(
                    "the chain segments on the remote hold snapshots up to {covered}, which the remote does not list: listing every envelope"
                );
            }
        }
        if seqs.is_empty() {
            seqs = remote.list_envelopes(&id, 0, usize::MAX).await?;
        }
        Ok::<_, Error>((seqs, newest, ahead))
    };
    let ((seqs, checkpoint, ahead), forgotten) =
        futures::try_join!(listing, forget_records(keys, remote))?;
    let checkpoints: Vec<_> = checkpoint.into_iter().collect();
    let Some(&head) = seqs.last() else {
        return Err(Error::Invalid(format!(
            "the remote {} holds no snapshots of agent {name} (for this master key)",
            remote.shown_url()
        )));
    };
    for (i, s) in seqs.iter().enumerate() {
        if *s != i as u64 + 1 {
            return Err(Error::ChainBroken {
                seq: i as u64 + 1,
                detail: "snapshot missing on the remote: sequence numbers are not dense".into(),
            });
        }
    }
    // (Only the length here; the hashes are compared once restored.)
    if let Some(c) = checkpoints.last() {
        crate::history::checkpoint::check(c, head, |_| c.hash_bytes().map(Some), "the remote")?;
    }
    Ok((
        Survey {
            seqs,
            head,
            checkpoints,
            forgotten,
        },
        ahead,
    ))
}

/// The forget records on the remote: snapshots whose content retention
/// removed, each verified (a remote cannot pass a deletion off as a
/// forget), in order. Those in the bundle are not fetched one by one; one
/// of them that does not verify there is fetched from its file.
pub(super) async fn forget_records(
    keys: &crate::seal::keys::AgentKeys,
    remote: &Remote,
) -> Result<Vec<(u64, i64, Vec<u8>)>> {
    let id = keys.agent_id();
    let bundled = forgotten_bundle(remote, &id).await?;
    let parse = |seq: u64, raw: &[u8]| {
        crate::history::retention::ForgetRecord::parse(raw, keys, seq, None)
            .map_err(|e| of_remote_snapshot(seq, e))
    };
    let mut forgotten = Vec::new();
    for (seq, raw) in remote
        .list_forgotten(&id, &|s| bundled.contains_key(&s))
        .await?
    {
        let r = parse(seq, &raw)?;
        forgotten.push((seq, r.at_ms, raw));
    }
    for (seq, raw) in bundled {
        let (r, raw) = match parse(seq, &raw) {
            Ok(r) => (r, raw),
            Err(e) => {
                tracing::warn!(
                    "the forget record of snapshot {seq} in the bundle on the remote does not verify ({e}): fetching its file"
                );
                let raw = remote.get_forgotten(&id, seq).await?.ok_or(e)?;
                (parse(seq, &raw)?, raw)
            }
        };
        forgotten.push((seq, r.at_ms, raw));
    }
    forgotten.sort_unstable_by_key(|f| f.0);
    Ok(forgotten)
}

/// The forget records in the remote's bundle, by snapshot; none when it
/// is missing or does not decode (then every record is fetched from its
/// file, with a log line).
async fn forgotten_bundle(remote: &Remote, id: &AgentId) -> Result<BTreeMap<u64, Vec<u8>>> {
    let Some(b) = remote.get_forgotten_bundle(id).await? else {
        return Ok(BTreeMap::new());
    };
    Ok(match segment::decode_forgotten(&b) {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            tracing::warn!("{e}: fetching every forget record from its file");
            BTreeMap::new()
        }
    })
}

/// Refuses a data dir of `name` that holds local data (a restore only
/// fills an empty one; [`Agent::create_for_restore`] looks again under the
/// lock), after removing one a stopped restore left.
fn empty_data_dir(home: &Home, name: &AgentName) -> Result<()> {
    let dir = home.agent_dir(name);
    if crate::repo::agent::discard_stopped_restore(home, name)? {
        tracing::warn!("a restore of agent {name} stopped before it finished; starting it over");
    }
    if home.has_agent(name) {
        return Err(Error::Invalid(format!(
            "agent {name} already has local data in {}; restore only into an empty data dir",
            dir.display()
        )));
    }
    Ok(())
}

async fn restore_into(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let keys = master.agent_keys(name.as_str());
    let (
        Survey {
            seqs,
            head,
            checkpoints,
            forgotten,
        },
        (),
    ) = survey(&keys, name, remote, async { Ok(()) }, |_| 0).await?;
    let (agent, _lock) = Agent::create_for_restore(home, name, master)?;
    fetch_chain(&agent, remote, &seqs, None, Content::Whole, progress).await?;
    // Forget records must name the snapshots restored (checked again, with
    // the hash, by verify).
    agent.repo().index()?.forget(&forgotten)?;
    // Redaction records: objects erased on purpose, each record verified.
    crate::history::redact::fetch_remote(&agent, remote).await?;
    // Everything here came from the remote (what a prune counts on: a
    // snapshot not replicated yet keeps its content), and from which one
    // (what the commands that change the remote compare with).
    record_restored_from(&agent, remote, head)?;
    // What they erased is not kept, should the remote still hold it (the
    // parts of a snapshot forgotten before the redaction, left by a build
    // that did not rewrite those), nor what only forgotten snapshots use.
    // (Refused whole when it cannot be told what a later snapshot uses
    // again: the walk's error names what is wrong.)
    let allowed = crate::history::redact::allowances_unchecked(&agent)?;
    let erasable = crate::history::redact::erasable(&agent, &allowed)?;
    carry_out_records(&agent, Erasing::Found(erasable, true))?;
    // Every object of every snapshot present and authentic, chain whole.
    crate::history::verify::verify(&agent, |_, _| {})?;
    for c in &checkpoints {
        crate::history::checkpoint::check_local(&agent, c)?;
        crate::history::checkpoint::save_local(&agent, c)?;
    }
    let head_view = agent.head()?;
    agent.make_durable(&head_view)?;
    agent.finish_restore()?;
    Ok(head)
}

/// Restores `name` from `remote` lazily into an empty local data dir:
/// every envelope is fetched and checked as [`restore`] does (sequence,
/// parent link, key and format succession, manifest), with the signed
/// checkpoints, forget and redaction records, but of each snapshot's
/// content only its part index; objects are fetched when first read
/// ([`crate::repo::lazy`]), each verified before use. Returns the head, or
/// `None` when a snapshot's content has no part index on the remote
/// (replicated by a build before lazy restores): nothing is kept then,
/// and the caller restores whole.
pub async fn restore_lazy(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    mut progress: impl FnMut(u64, u64),
) -> Result<Option<u64>> {
    empty_data_dir(home, name)?;
    let mut flat = true;
    loop {
        let res = restore_lazy_into(home, name, master, remote, flat, &mut progress).await;
        if !matches!(res, Ok(Lazily::Head(_))) {
            // Only a data dir this restore marked (and so filled) goes.
            let _ = crate::repo::agent::discard_stopped_restore(home, name);
        }
        match res? {
            Lazily::Head(h) => return Ok(Some(h)),
            Lazily::Whole => return Ok(None),
            Lazily::NotFlat if flat => {
                // (Its own error, should the data dir not go.)
                crate::repo::agent::discard_stopped_restore(home, name)?;
                flat = false;
            }
            Lazily::NotFlat => {
                return Err(Error::Failed(
                    "a lazy restore from the first snapshot asked to start flat".into(),
                ));
            }
        }
    }
}

/// How a lazy restore ended.
enum Lazily {
    /// Restored, up to this head.
    Head(u64),
    /// A snapshot without a part index: nothing kept, to be restored whole.
    Whole,
    /// A flat start whose first snapshot is not sealed under the key
    /// version this machine seals new data under: nothing kept, to be
    /// restored lazily from the first snapshot.
    NotFlat,
}

async fn restore_lazy_into(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    flat: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Lazily> {
    let keys = master.agent_keys(name.as_str());
    let id = keys.agent_id();
    // The chain segments and the tail on the remote, at once.
    let segments_and_tail = async {
        let (segments, tail) = futures::try_join!(remote.list_segments(&id), remote.get_tail(&id))?;
        let tail = tail.and_then(|b| {
            segment::decode_tail(&b)
                .inspect_err(|e| {
                    tracing::warn!("the tail segment on the remote is not usable ({e}): left out")
                })
                .ok()
        });
        Ok((segments.into_iter().collect::<BTreeSet<u64>>(), tail))
    };
    let survey = survey(&keys, name, remote, segments_and_tail, |(s, t)| {
        covered(s, t.as_ref())
    });
    // (Of a fresh data dir: none held here.)
    let none_here = HashSet::new();
    let redactions = crate::history::redact::fetch_remote_records(&keys, remote, &none_here);
    let (
        (
            Survey {
                seqs,
                head,
                checkpoints,
                forgotten,
            },
            (segments, tail),
        ),
        redactions,
    ) = futures::try_join!(survey, redactions)?;
    let (agent, _lock) = Agent::create_for_restore(home, name, master)?;
    // The flat start: from the newest signed checkpoint, which vouches for
    // every snapshot before it; those are fetched and checked in the
    // background once the mount serves ([`crate::history::older`]).
    let from = match flat {
        true => flat_start(
            home,
            name,
            checkpoints.last(),
            covered(&segments, tail.as_ref()),
        ),
        false => 1,
    };
    if from > 1 {
        tracing::info!(
            "lazy restore from snapshot {from} (a signed checkpoint vouches for it): the {} snapshots before it are fetched in the background",
            from - 1
        );
        agent.repo().index()?.set_meta(
            crate::repo::index::META_HISTORY_FROM,
            Some(from.to_string().as_bytes()),
        )?;
    }
    let seqs = &seqs[(from - 1) as usize..];
    let mut indexes = Indexes {
        forgotten: forgotten
            .iter()
            .map(|(s, _, raw)| (*s, raw.clone()))
            .collect(),
        keys: keys.clone(),
        taken: Vec::new(),
        missing: None,
        not_flat: false,
        segments,
        tail,
    };
    fetch_chain(
        &agent,
        remote,
        seqs,
        None,
        Content::Indexes(&mut indexes),
        progress,
    )
    .await?;
    if let Some(seq) = indexes.missing {
        tracing::info!(
            "snapshot {seq} on the remote has no part index (replicated by an earlier build): restoring whole"
        );
        return Ok(Lazily::Whole);
    }
    if indexes.not_flat {
        tracing::info!(
            "snapshot {from} on the remote is not sealed under the newest key version here: checking the whole chain first"
        );
        return Ok(Lazily::NotFlat);
    }
    // (Those of older snapshots come with their rows.)
    let held: Vec<_> = forgotten.into_iter().filter(|f| f.0 >= from).collect();
    agent.repo().index()?.forget(&held)?;
    crate::history::redact::save_fetched(&agent, &redactions)?;
    for c in &checkpoints {
        crate::history::checkpoint::check_local(&agent, c)?;
        crate::history::checkpoint::save_local(&agent, c)?;
    }
    // What a redaction erased is never fetched from the snapshots up to the
    // newest it lists (a remote whose parts were not rewritten yet still
    // holds it; the same bytes written again come later).
    let allowed = crate::history::redact::allowances(&agent)?;
    crate::repo::lazy::drop_erased(&mut indexes.taken, |seq, id| allowed.erased_as_of(id, seq));
    // Everything is on the remote: recorded before the remote index makes
    // this a lazily restored data dir (a crash in between leaves a data
    // dir whose head does not read, refused at the next mount, never one
    // that uploads snapshots it holds no content of).
    record_restored_from(&agent, remote, head)?;
    let head_view = agent.head()?;
    agent.make_durable(&head_view)?;
    agent.repo().flush()?;
    crate::repo::lazy::write_remote_index(&agent.data()?, remote, &indexes.taken)?;
    agent.finish_restore()?;
    Ok(Lazily::Head(head))
}

/// Snapshots before the newest signed checkpoint from which a lazy restore
/// starts flat: a shorter history is fetched whole (it costs one chain
/// segment's request, and the flat start would save nothing).
pub const FLAT_MIN: u64 = segment::SEGMENT_LEN;

/// The first snapshot a lazy restore fetches: the newest signed
/// checkpoint's (`checkpoint`, verified by the survey, which vouches for
/// every snapshot before it through their parent links), or the first
/// after the snapshots the chain segments and the tail hold from 1
/// (`covered`) when that comes before it, so that the older history is
/// read in segments, which hold the part index of every snapshot that has
/// parts left (one missing after them has the restore done whole, as
/// ever); when at least [`FLAT_MIN`] snapshots come before it. Else 1, as
/// when this machine holds a seen-head record of the agent: its pin must
/// be checked against the chain at open, and may name an older snapshot.
fn flat_start(
    home: &Home,
    name: &AgentName,
    checkpoint: Option<&crate::history::checkpoint::Checkpoint>,
    covered: u64,
) -> u64 {
    match checkpoint.map(|c| c.seq.min(covered + 1)) {
        Some(from) if from > FLAT_MIN && !home.seen_head_path(name).exists() => from,
        _ => 1,
    }
}

/// How many snapshots from the first the chain segments on the remote hold
/// without a gap: each complete range from 1 (`segments`, their first
/// snapshots), then the `tail` if it starts where they end. A lazy restore
/// lists only the envelopes after them. The segments' envelopes are
/// checked like any (hash chain, key and format succession); one that is
/// gone or does not check by the time it is read is fetched from its own
/// file, whose name its sequence number gives.
fn covered(segments: &BTreeSet<u64>, tail: Option<&(u64, Vec<segment::Member>)>) -> u64 {
    let mut covered = 0;
    while segments.contains(&(covered + 1)) {
        covered += segment::SEGMENT_LEN;
    }
    match tail {
        Some((first, members)) if *first == covered + 1 => covered + members.len() as u64,
        _ => covered,
    }
}

/// Records every snapshot up to `head` as replicated, to `remote` (as
/// shown: the commands that change the remote compare with it).
fn record_restored_from(agent: &Agent, remote: &Remote, head: u64) -> Result<()> {
    let index = agent.repo().index()?;
    index.set_meta(META_REPLICATED, Some(head.to_string().as_bytes()))?;
    index.set_meta(META_REMOTE, Some(remote.shown_url().as_bytes()))
}

/// What a chain fetch takes of each snapshot's content.
enum Content<'a> {
    /// Its pack parts, every object checked and stored.
    Whole,
    /// Its part index only (a lazy restore).
    Indexes(&'a mut Indexes),
}

/// The part indexes a lazy restore took.
struct Indexes {
    /// Snapshots with a verified forget record (and the record): their
    /// parts (and index) may be gone.
    forgotten: HashMap<u64, Vec<u8>>,
    keys: crate::seal::keys::AgentKeys,
    taken: Vec<crate::repo::lazy::SnapshotIndex>,
    /// The first snapshot without a part index: the fetch stops there.
    missing: Option<u64>,
    /// A flat start's first snapshot is not sealed under the key version
    /// new data is sealed under here: the fetch stops there. (Its parent is
    /// not checked, so it must be one a retired key cannot have sealed:
    /// its key version is then the newest, and the succession from it on
    /// keeps the rest there.)
    not_flat: bool,
    /// The chain segments on the remote (their first snapshots).
    segments: BTreeSet<u64>,
    /// The tail segment on the remote (its first snapshot and members), if
    /// one decodes.
    tail: Option<(u64, Vec<segment::Member>)>,
}

/// A check of one fetched snapshot before it is committed: its view (its
/// objects readable, committed or pending) and the objects fetched for it.
type PreCommit<'a> = &'a dyn Fn(&SnapshotView, &HashSet<ObjRef>) -> Result<()>;

/// Fetches snapshots `seqs` (dense, each the next after the local head)
/// from `remote` into `agent`: each envelope's sequence, parent link, key
/// and format succession and manifest are checked, and every object of its
/// pack parts is checked (tag and id) before it is stored; then `check`, if
/// given, sees the snapshot, and only then is it committed to the local
/// index. Stops at the first snapshot that fails, naming it; the snapshots
/// before it stay committed, each whole.
async fn fetch_chain(
    agent: &Agent,
    remote: &Remote,
    seqs: &[u64],
    check: Option<PreCommit<'_>>,
    mut content: Content<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let lazy = matches!(content, Content::Indexes(_));
    let keys = agent.repo().keys().clone();
    let id = keys.agent_id();
    let local_head = agent.repo().index()?.head_seq()?;
    // A flat start ([`flat_start`]) takes its first snapshot's parent link
    // as given: the signed checkpoint vouches for it (compared once
    // restored), and the older history checks it when fetched.
    let flat = local_head.is_none() && seqs.first().is_some_and(|&s| s > 1);
    let (mut prev, mut prev_versions, local) = match local_head {
        None => (GENESIS_PARENT, (0, 0), seqs.first().map_or(0, |s| s - 1)),
        Some(s) => {
            let env = agent.envelope(s)?;
            (env.hash(), (env.key_version, env.format_version), s)
        }
    };
    let head = seqs.last().copied().unwrap_or(local);
    // Read ahead: the next snapshots' envelopes and first parts (or part
    // indexes, or whole chain segments) are on their way while this one is
    // checked and committed (in order).
    let (segments, tail) = match &mut content {
        Content::Indexes(i) => (i.segments.clone(), i.tail.take()),
        Content::Whole => (BTreeSet::new(), None),
    };
    let mut ahead = futures::stream::iter(units(seqs, &segments, tail, lazy))
        .map(|unit| started(fetch_unit(remote.clone(), id, unit, lazy)))
        .buffered(if lazy { UNITS_AHEAD_LAZY } else { FETCH_AHEAD })
        .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok::<Ahead, Error>)))
        .try_flatten();
    for (i, &seq) in seqs.iter().enumerate() {
        if seq != local + i as u64 + 1 {
            return Err(Error::ChainBroken {
                seq: local + i as u64 + 1,
                detail: "snapshot missing on the remote: sequence numbers are not dense".into(),
            });
        }
        progress(seq, head);
        let got = ahead
            .next()
            .await
            .expect("one prefetch per sequence number")?;
        if flat && i == 0 {
            prev = got.env.parent_snapshot;
            prev_versions = (got.env.key_version, got.env.format_version);
        }
        let (got, manifest) = match check_envelope(&keys, &got.env, seq, &prev, prev_versions) {
            Ok(m) => (got, m),
            // A chain segment only bundles the remote's files: one of its
            // snapshots that does not check is taken from its files (and
            // checked again) before the restore fails.
            Err(e) if got.segment.is_some() => {
                tracing::warn!(
                    "the segment from snapshot {} on the remote (a chain or the tail segment) holds a snapshot {seq} that does not check ({e}): fetching its files",
                    got.segment.unwrap_or_default()
                );
                // (The segment's error stands when the files cannot be had.)
                let got = match prefetch(remote, &id, seq, lazy).await {
                    Ok(g) => g,
                    Err(_) => return Err(chain_error(&keys, remote, seq, &got.env, e).await),
                };
                // (A flat start's first: its own file's link, not the
                // segment's copy's.)
                if flat && i == 0 {
                    prev = got.env.parent_snapshot;
                    prev_versions = (got.env.key_version, got.env.format_version);
                }
                match check_envelope(&keys, &got.env, seq, &prev, prev_versions) {
                    Ok(m) => (got, m),
                    Err(e) => return Err(chain_error(&keys, remote, seq, &got.env, e).await),
                }
            }
            Err(e) => return Err(chain_error(&keys, remote, seq, &got.env, e).await),
        };
        // A flat start's first, as taken (one of a newer version than held
        // failed above, as unknown).
        if flat
            && i == 0
            && got.env.key_version < keys.key_version()
            && let Content::Indexes(taken) = &mut content
        {
            taken.not_flat = true;
            return Ok(());
        }
        let Ahead {
            env,
            first,
            more,
            index,
            parts_gone,
            segment: _,
        } = got;
        prev_versions = (env.key_version, env.format_version);
        let hash = env.hash();
        // A snapshot of tree format 6 or later stores its metadata at home.
        let home = if manifest.format >= tree::HOMED_FORMAT {
            seq
        } else {
            0
        };
        let mut fetched = HashSet::new();
        let mut store = |bytes: &[u8]| -> Result<()> {
            for (oid, kind, sealed) in
                pack::decode_part(seq, bytes).map_err(|e| of_remote_snapshot(seq, e))?
            {
                let home = if kind.homed() { home } else { 0 };
                agent
                    .repo()
                    .put_sealed(kind, &oid, sealed, home)
                    .map_err(|e| of_remote_snapshot(seq, e))?;
                fetched.insert(ObjRef { id: oid, home });
            }
            Ok(())
        };
        if let Content::Indexes(taken) = &mut content {
            let place = (seq, hash, index, parts_gone);
            let Some(entries) = part_entries(remote, &taken.keys, &taken.forgotten, place).await?
            else {
                taken.missing = Some(seq);
                return Ok(());
            };
            taken
                .taken
                .push(crate::repo::lazy::SnapshotIndex { seq, hash, entries });
        } else if let Some(bytes) = first {
            store(&bytes)?;
            // Parts are numbered from 0 and read until the first missing.
            if more {
                let mut part = 1;
                while let Some(bytes) = remote.get_pack(&id, seq, &hash, part).await? {
                    store(&bytes)?;
                    part += 1;
                }
            }
        }
        if let Some(check) = check {
            check(
                &SnapshotView::new(agent.repo().clone(), hash, manifest),
                &fetched,
            )
            .map_err(|e| of_remote_snapshot(seq, e))?;
        }
        agent
            .repo()
            .commit(&env)
            .map_err(|e| of_remote_snapshot(seq, e))?;
        prev = hash;
        // The runtime has one thread: the reads ahead (their requests and
        // replies) move only while this loop waits.
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Snapshot `seq`'s part index as a lazy restore takes it (`place`: the
/// snapshot, its envelope hash, its index as read ahead, whether a chain
/// segment says its parts are gone): the index's entries; none for a
/// snapshot forgotten (its record, in `forgotten`, names this very
/// snapshot) and pruned, as nothing of it is on the remote (a forgotten
/// snapshot whose parts are still there needs an index like any other);
/// `None` when it has no index (replicated by a build before lazy
/// restores).
pub(super) async fn part_entries(
    remote: &Remote,
    keys: &crate::seal::keys::AgentKeys,
    forgotten: &HashMap<u64, Vec<u8>>,
    place: (u64, [u8; 32], Option<Result<Vec<pack::PartEntry>>>, bool),
) -> Result<Option<Vec<pack::PartEntry>>> {
    let (seq, hash, index, parts_gone) = place;
    match index {
        Some(decoded) => Ok(Some(decoded.map_err(|e| of_remote_snapshot(seq, e))?)),
        None if forgotten.contains_key(&seq)
            && (parts_gone || !remote.has_pack(&keys.agent_id(), seq, &hash, 0).await?) =>
        {
            crate::history::retention::ForgetRecord::parse(
                &forgotten[&seq],
                keys,
                seq,
                Some(&hash),
            )
            .map_err(|e| of_remote_snapshot(seq, e))?;
            Ok(Some(Vec::new()))
        }
        None => Ok(None),
    }
}

/// How many snapshots a chain fetch checks and commits between letting
/// its reads ahead run (some 100 us of work: small beside a round trip).
const YIELD_EVERY: usize = 8;

/// Checks snapshot `seq`'s envelope against the chain so far (the hash
/// and the key and format versions of the one before) and opens its
/// manifest. An unknown key version comes back as is, for
/// [`chain_error`].
fn check_envelope(
    keys: &crate::seal::keys::AgentKeys,
    env: &Envelope,
    seq: u64,
    prev: &[u8; 32],
    prev_versions: (u32, u32),
) -> Result<tree::Manifest> {
    check_number(env, seq)?;
    if env.parent_snapshot != *prev {
        return Err(Error::ChainBroken {
            seq,
            detail: "parent_snapshot does not name the previous snapshot".into(),
        });
    }
    envelope::check_succession(prev_versions.0, prev_versions.1, env)?;
    match envelope::open_manifest(keys, env) {
        Err(e @ Error::UnknownKeyVersion(..)) => Err(e),
        other => other.map_err(|e| of_remote_snapshot(seq, e)),
    }
}

/// Checks that the remote's file for snapshot `seq` holds that snapshot.
pub(super) fn check_number(env: &Envelope, seq: u64) -> Result<()> {
    if env.sequence_number != seq {
        return Err(Error::ChainBroken {
            seq,
            detail: format!(
                "the remote file for {seq} holds snapshot {}",
                env.sequence_number
            ),
        });
    }
    Ok(())
}

/// The error a restore stops with when snapshot `seq` does not check: an
/// unknown key version is told apart from an altered envelope.
pub(super) async fn chain_error(
    keys: &crate::seal::keys::AgentKeys,
    remote: &Remote,
    seq: u64,
    env: &Envelope,
    e: Error,
) -> Error {
    match e {
        Error::UnknownKeyVersion(v, held) => {
            unknown_key_version(keys, remote, seq, env.hash(), v, held).await
        }
        e => e,
    }
}

/// How many snapshots a chain fetch reads ahead of the one it checks and
/// commits. Each holds at most one pack part (8 MiB; 32 MiB for parts
/// written before session 15) until its turn.
const FETCH_AHEAD: usize = 8;
/// How many units a lazy restore reads ahead: a unit is a chain segment
/// (about 1 KiB per snapshot: envelopes and part indexes, no pack part) or
/// [`SINGLES`] snapshots' envelopes and part indexes (about 45 bytes per
/// object), so about 64 requests are in flight (the chain is checked in
/// order on use).
pub(super) const UNITS_AHEAD_LAZY: usize = 8;
/// Snapshots of a lazy restore fetched one by one per unit.
const SINGLES: usize = 8;

/// What the read-ahead fetches as one piece.
pub(super) enum Unit {
    /// A chain segment: [`segment::SEGMENT_LEN`] snapshots from this one.
    Segment(u64),
    /// The snapshots of the chain segment from the first number from the
    /// second on (a flat start inside its range).
    SegmentFrom(u64, u64),
    /// Snapshots from this one, as the tail segment (already here) holds
    /// them.
    Given(u64, Vec<segment::Member>),
    /// Snapshots fetched one by one (envelope, part index or parts each).
    Singles(Vec<u64>),
}

/// Cuts `seqs` (ascending) into units: a chain segment wherever one is
/// listed and `seqs` hold its whole range, the tail segment's members
/// (those `seqs` hold) where it starts a range without one, and runs of
/// single snapshots (one each unless `lazy`).
pub(super) fn units(
    seqs: &[u64],
    segments: &BTreeSet<u64>,
    mut tail: Option<(u64, Vec<segment::Member>)>,
    lazy: bool,
) -> Vec<Unit> {
    let len = segment::SEGMENT_LEN as usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let s = seqs[i];
        if segments.contains(&s) && seqs.get(i + len - 1) == Some(&(s + len as u64 - 1)) {
            out.push(Unit::Segment(s));
            i += len;
            continue;
        }
        // A range begun inside (a flat start's first): its segment still,
        // the snapshots before `s` left out.
        let start = segment::first_of(s);
        let rest = (start + len as u64 - s) as usize;
        if i == 0
            && start != s
            && segments.contains(&start)
            && seqs.get(rest - 1) == Some(&(start + len as u64 - 1))
        {
            out.push(Unit::SegmentFrom(start, s));
            i += rest;
            continue;
        }
        // The tail begun before `s` (a flat start in its range): from `s`.
        if i == 0
            && let Some((first, members)) = tail.as_mut()
            && *first < s
            && s < *first + members.len() as u64
        {
            members.drain(..(s - *first) as usize);
            *first = s;
        }
        if !segments.contains(&s) && tail.as_ref().is_some_and(|(first, _)| *first == s) {
            let (first, mut members) = tail.take().expect("checked");
            // Only what the survey holds, and only consecutive.
            let held = seqs[i..]
                .iter()
                .zip(first..)
                .take_while(|(a, b)| *a == b)
                .count();
            members.truncate(held);
            if !members.is_empty() {
                i += members.len();
                out.push(Unit::Given(first, members));
                continue;
            }
        }
        match out.last_mut() {
            Some(Unit::Singles(v)) if lazy && v.len() < SINGLES => v.push(s),
            _ => out.push(Unit::Singles(vec![s])),
        }
        i += 1;
    }
    out
}

/// Runs `work` as a task of its own from now on, and gives its result. The
/// chain fetch's read-ahead goes through here: a `buffered` stream polls
/// its futures only when asked for its next result, and not at all while
/// it hands out results that came in together, so reads ahead left to it
/// started in batches (a full round trip waited for every
/// [`UNITS_AHEAD_LAZY`] units: measured, PERFORMANCE "Session 35"). The
/// task is cancelled when its result is no longer wanted.
pub(super) fn started<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> impl std::future::Future<Output = Result<T>> {
    /// Cancels the task when dropped.
    struct Task<T>(tokio::task::JoinHandle<Result<T>>);
    impl<T> Drop for Task<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut task = Task(tokio::spawn(work));
    async move {
        match (&mut task.0).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Error::Failed(format!("a read ahead stopped: {e}"))),
        }
    }
}

/// Fetches one unit. A segment that is missing or does not decode (a
/// member's envelope or part index included) is fetched snapshot by
/// snapshot instead, with a log line: it only bundles what the remote
/// holds anyway.
pub(super) async fn fetch_unit(
    remote: Remote,
    id: AgentId,
    unit: Unit,
    lazy: bool,
) -> Result<Vec<Ahead>> {
    let (remote, id) = (&remote, &id);
    let seqs = match unit {
        Unit::Singles(v) => v,
        Unit::Given(first, members) => {
            let n = members.len() as u64;
            match aheads(first, members) {
                Ok(a) => return Ok(a),
                Err(e) => tracing::warn!(
                    "the tail segment on the remote is not usable ({e}): fetching its snapshots one by one"
                ),
            }
            (first..first + n).collect()
        }
        Unit::Segment(first) | Unit::SegmentFrom(first, _) => {
            let from = match unit {
                Unit::SegmentFrom(_, from) => from,
                _ => first,
            };
            match remote.get_segment(id, first).await? {
                Some(b) => match segment::decode(first, &b).and_then(|m| aheads(first, m)) {
                    Ok(mut a) => {
                        a.drain(..((from - first) as usize).min(a.len()));
                        return Ok(a);
                    }
                    Err(e) => tracing::warn!(
                        "chain segment {first} on the remote is not usable ({e}): fetching its snapshots one by one"
                    ),
                },
                None => tracing::info!(
                    "chain segment {first} left the remote while listed: fetching its snapshots one by one"
                ),
            }
            (from..first + segment::SEGMENT_LEN).collect()
        }
    };
    futures::stream::iter(seqs)
        .map(|s| prefetch(remote, id, s, lazy))
        .buffered(SINGLES)
        .try_collect()
        .await
}

/// The snapshots of a segment from `first`, read ahead (nothing trusted
/// yet).
fn aheads(first: u64, members: Vec<segment::Member>) -> Result<Vec<Ahead>> {
    members
        .into_iter()
        .zip(first..)
        .map(|(m, seq)| {
            let env = Envelope::from_json(&m.envelope).map_err(|e| of_remote_snapshot(seq, e))?;
            // An index that does not decode makes the segment unusable.
            let index = match &m.index {
                Some(i) => Some(Ok(pack::decode_index(seq, i)?)),
                None => None,
            };
            Ok(Ahead {
                env,
                first: None,
                more: false,
                parts_gone: index.is_none(),
                index,
                segment: Some(first),
            })
        })
        .collect()
}

/// One snapshot read ahead: its envelope (parsed, not yet checked), its
/// first pack part, and whether a second part exists.
pub(super) struct Ahead {
    pub(super) env: Envelope,
    first: Option<Vec<u8>>,
    more: bool,
    /// Its part index, decoded (or why not: reported in order), instead
    /// of its parts (a lazy restore).
    pub(super) index: Option<Result<Vec<pack::PartEntry>>>,
    /// No index and no part on the remote, as a chain segment says (saves
    /// looking).
    pub(super) parts_gone: bool,
    /// The chain segment it came from (its first snapshot), if any.
    pub(super) segment: Option<u64>,
}

/// Reads snapshot `seq` ahead: three requests (envelope, first part, a
/// `HEAD` for a second) instead of a round trip each in the committing
/// loop. Nothing here is trusted: every check runs in order on use.
pub(super) async fn prefetch(remote: &Remote, id: &AgentId, seq: u64, lazy: bool) -> Result<Ahead> {
    let raw = remote
        .get_envelope(id, seq)
        .await?
        .ok_or_else(|| Error::ChainBroken {
            seq,
            detail: "envelope vanished from the remote while it was fetched".into(),
        })?;
    let env = Envelope::from_json(&raw).map_err(|e| of_remote_snapshot(seq, e))?;
    let hash = env.hash();
    if lazy {
        let index = remote
            .get_index(id, seq, &hash)
            .await?
            .map(|b| pack::decode_index(seq, &b));
        return Ok(Ahead {
            env,
            first: None,
            more: false,
            index,
            parts_gone: false,
            segment: None,
        });
    }
    let first = remote.get_pack(id, seq, &hash, 0).await?;
    let more = first.is_some() && remote.has_pack(id, seq, &hash, 1).await?;
    Ok(Ahead {
        env,
        first,
        more,
        index: None,
        parts_gone: false,
        segment: None,
    })
}

/// Checks that every object `view` references is stored: walks into the
/// objects `fetched` for it (each was checked when it was stored) and stops
/// at those stored before (checked then, their subtrees complete). Objects
/// a verified redaction record erased may be missing from the snapshots it
/// lists (`allowed`), and only there; one the snapshot references elsewhere
/// (the same bytes written again after the redaction) must be stored, and
/// goes into `again`. Anything else is.
fn check_complete(
    agent: &Agent,
    view: &SnapshotView,
    fetched: &HashSet<ObjRef>,
    allowed: &crate::history::redact::Allowances,
    again: &std::cell::RefCell<BTreeMap<u64, HashSet<ObjectId>>>,
) -> Result<()> {
    let repo = agent.repo();
    // This snapshot's, merged into `again` once it checks out.
    let mine = std::cell::RefCell::new(HashSet::new());
    // Rows at this snapshot's own home are not trusted: any there now are
    // left from a lost snapshot of its number.
    let skip = |r: &ObjRef| {
        if allowed.allows(&r.id, view.seq()) {
            return true;
        }
        if allowed.names(&r.id) {
            mine.borrow_mut().insert(r.id);
        }
        !fetched.contains(r) && r.home != view.seq() && repo.has(r).unwrap_or(false)
    };
    view.walk_objects(&skip, &mut |kind, r| {
        if fetched.contains(r) {
            return Ok(());
        }
        Err(Error::corrupt(
            format!("{} {}", kind.name(), r.id.to_hex()),
            "referenced by the snapshot but neither stored here nor on the remote",
        ))
    })?;
    again.borrow_mut().insert(view.seq(), mine.into_inner());
    Ok(())
}

/// What one [`pull`] did.
#[derive(Debug)]
pub struct Pulled {
    /// The local head before.
    pub from: u64,
    /// The local head now (the remote's head when nothing failed).
    pub head: u64,
    /// The newest snapshot the remote listed.
    pub remote_head: u64,
    /// Why the pull stopped before the remote's head: the first snapshot
    /// that did not verify (those before it are whole and kept).
    pub stopped: Option<Error>,
    /// Forget records taken in (of snapshots held here).
    pub forgotten: usize,
    /// Redaction records taken in.
    pub redactions: usize,
    /// When redaction records came in: what this handle may erase now
    /// (refused to its readers already), and whether that could be told
    /// exactly; for [`carry_out_records`], which need not walk again.
    pub erasable: Option<(HashSet<ObjectId>, bool)>,
}

/// Brings an agent that follows a writer up to the remote's head. First
/// the remote must still list the local head (else it was rolled back, or
/// this data dir holds snapshots never replicated: refused, naming it).
/// The remote's forget and redaction records are verified and stored
/// first, since they allow content to be missing. Then the snapshots after
/// the local head are fetched one by one as a restore checks them
/// (sequence, parent link, key and format succession, tag and payload hash,
/// each object's tag and id before it is stored), and each is committed
/// only once every object it references is stored (fetched now, or
/// before), unless a verified forget record says its content is gone. The
/// new head is made durable and recorded as seen. A snapshot that fails,
/// or whose parent is not the local head (a fork, or a rewritten history),
/// ends the pull there ([`Pulled::stopped`], naming it); what came before
/// it is kept. The writer's new signed checkpoints are checked too: one
/// that names a snapshot the remote does not list, or another snapshot than
/// the one held here, ends the pull the same way. An error is returned when
/// the remote cannot be read or its records do not verify; snapshots
/// committed before it are whole.
pub async fn pull(agent: &Agent, remote: &Remote) -> Result<Pulled> {
    let keys = agent.repo().keys().clone();
    let id = keys.agent_id();
    let from = agent.repo().index()?.head_seq()?.unwrap_or(0);
    // The writer's new checkpoints, listed before the envelopes: a
    // checkpoint is stored only after its snapshot's envelope, so each one
    // listed here names an envelope the listing below must show.
    let checked = crate::history::checkpoint::newest_local_seq(agent)?.unwrap_or(0);
    let checkpoints =
        crate::history::checkpoint::fetch_remote_after(&keys, remote, checked, true).await?;
    let vouched: HashMap<u64, [u8; 32]> = checkpoints
        .iter()
        .map(|c| Ok((c.seq, c.hash_bytes()?)))
        .collect::<Result<_>>()?;
    let mut seqs = remote
        .list_envelopes(&id, from.saturating_sub(1), usize::MAX)
        .await?;
    if from > 0 {
        if seqs.first() != Some(&from) {
            return Err(Error::ChainBroken {
                seq: from,
                detail: format!(
                    "the remote {} no longer lists snapshot {from}, which this machine holds verified: it was rolled back, or this data dir holds snapshots that were never replicated",
                    remote.shown_url()
                ),
            });
        }
        seqs.remove(0);
    }
    let remote_head = seqs.last().copied().unwrap_or(from);
    // Records first: what they say is gone is not a gap.
    let known = agent.repo().index()?.forgotten_seqs()?;
    let mut forget = Vec::new();
    for (seq, raw) in remote.list_forgotten(&id, &|s| known.contains(&s)).await? {
        let r = crate::history::retention::ForgetRecord::parse(&raw, &keys, seq, None)
            .map_err(|e| of_remote_snapshot(seq, e))?;
        forget.push((seq, r.at_ms, raw));
    }
    let redactions = crate::history::redact::fetch_remote(agent, remote).await?;
    let allowed = crate::history::redact::allowances_unchecked(agent)?;
    let mut erasable = None;
    if redactions > 0 {
        // Refused from now on, before the snapshots are fetched (a mount
        // serving this agent rewrites the packs once the pull is done).
        let e = erasable_or_all(agent, &allowed);
        agent.repo().erase(&e.0);
        erasable = Some(e);
    }
    // Redacted objects that the snapshots fetched reference again, by
    // snapshot.
    let again = std::cell::RefCell::new(BTreeMap::new());
    let content_gone: HashSet<u64> = known
        .iter()
        .copied()
        .chain(forget.iter().map(|f| f.0))
        .collect();
    let check = |view: &SnapshotView, fetched: &HashSet<ObjRef>| {
        // Before it is committed: a snapshot the writer's checkpoint names
        // must be the one it signed.
        if vouched.get(&view.seq()).is_some_and(|h| *h != view.hash()) {
            return Err(Error::ChainBroken {
                seq: view.seq(),
                detail: "the remote holds a different snapshot than the writer's signed checkpoint"
                    .into(),
            });
        }
        if content_gone.contains(&view.seq()) {
            return Ok(());
        }
        check_complete(agent, view, fetched, &allowed, &again)
    };
    let mut stopped = fetch_chain(
        agent,
        remote,
        &seqs,
        Some(&check),
        Content::Whole,
        &mut |_, _| {},
    )
    .await
    .err();
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    // Served again: what a snapshot committed here needs (one that checked
    // out but did not commit needs nothing).
    let again: HashSet<ObjectId> = again
        .into_inner()
        .range(..=head)
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    agent.repo().unerase(&again);
    if let Some((e, _)) = erasable.as_mut() {
        e.retain(|id| !again.contains(id));
    }
    // Forget rows only for snapshots held here (the rest come next time).
    forget.retain(|f| f.0 <= head);
    agent.repo().index()?.forget(&forget)?;
    if head > from {
        agent.make_durable(&agent.head()?)?;
        agent
            .repo()
            .index()?
            .set_meta(META_REPLICATED, Some(head.to_string().as_bytes()))?;
    }
    // Kept only once what they name is durable here.
    if let Err(e) = take_checkpoints(agent, remote, &checkpoints, head, remote_head).await {
        stopped.get_or_insert(e);
    }
    Ok(Pulled {
        from,
        head,
        remote_head,
        stopped,
        forgotten: forget.len(),
        redactions,
        erasable,
    })
}

/// Checks the writer's new checkpoints (`cps`, verified) after a [`pull`]
/// reached `head` (durable) of the `remote_head` listed. One of a snapshot
/// the remote did not list, and does not hold when asked, means the remote
/// withholds or rolled back what the writer vouched for; one of a snapshot
/// held here must name the local chain's, and is then kept here (the next
/// pull lists those after it). One of a snapshot not fetched yet is
/// checked by a later pull.
async fn take_checkpoints(
    agent: &Agent,
    remote: &Remote,
    cps: &[crate::history::checkpoint::Checkpoint],
    head: u64,
    remote_head: u64,
) -> Result<()> {
    use crate::history::checkpoint;
    let id = agent.repo().keys().agent_id();
    for c in cps {
        // (A listing that lags behind the store's writes is asked again.)
        if c.seq > remote_head && remote.get_envelope(&id, c.seq).await?.is_none() {
            checkpoint::check(c, remote_head, |_| Ok(None), "the remote's listing")?;
        } else if c.seq <= head {
            checkpoint::check_local(agent, c)?;
            checkpoint::save_local(agent, c)?;
        }
    }
    Ok(())
}

/// What [`carry_out_records`] erases.
#[derive(Debug)]
pub enum Erasing {
    /// What the redaction records allow, less what a snapshot held here
    /// references again ([`crate::history::redact::erasable`], a walk of
    /// the snapshots after the oldest record's, forgotten ones aside).
    Find,
    /// What the pull that took new records in found
    /// ([`Pulled::erasable`]), and whether it could tell exactly.
    Found(HashSet<ObjectId>, bool),
}

impl Erasing {
    /// After a pull that ended without an error: what it found when
    /// redaction records came in and no forget record did (its walk ran
    /// before the forget records were stored, and a snapshot forgotten
    /// since may have been all that kept an object), else
    /// [`Erasing::Find`].
    pub fn after(p: &mut Pulled) -> Self {
        match p.erasable.take() {
            Some((ids, exact)) if p.forgotten == 0 => Erasing::Found(ids, exact),
            _ => Erasing::Find,
        }
    }
}

/// What [`carry_out_records`] did.
#[derive(Debug)]
pub struct CarriedOut {
    /// Objects erased from the local packs.
    pub erased: usize,
    /// Objects pruned.
    pub pruned: u64,
    /// False when it could not be told which erased objects were written
    /// again: everything the records name is refused to readers of this
    /// handle, and the packs keep it all.
    pub exact: bool,
    /// What this handle now refuses to serve ([`crate::repo::Repo::erase`]),
    /// for another handle on the same data dir to refuse as well.
    pub refused: HashSet<ObjectId>,
    /// Whether what this handle serves changed (erased objects, a
    /// different set refused, snapshots forgotten since the last prune):
    /// readers' caches must drop what they hold.
    pub changed: bool,
}

/// Carries out here what the writer's records say, after a [`pull`]:
/// objects a verified redaction record erased and no snapshot held here
/// references again ([`crate::history::redact::erasable`]) are no longer
/// served ([`crate::repo::Repo::erase`]) and leave the local packs (when
/// that cannot be told, everything named is refused and nothing leaves),
/// and, when snapshots were forgotten since the data dir last pruned
/// (`META_PRUNED_FORGOTTEN`: also after a pull or a prune that failed
/// part-way), content no retained snapshot references is pruned. Needs the
/// writer lock; a mount serving the data dir may go on reading meanwhile
/// (reads of moved objects are retried at their new place).
pub fn carry_out_records(agent: &Agent, erasing: Erasing) -> Result<CarriedOut> {
    let mut n = 0;
    // Not what a snapshot held here references again. When that cannot be
    // told, all of it is refused to readers and the packs keep it.
    let (erased, exact) = match erasing {
        Erasing::Found(ids, exact) => (ids, exact),
        Erasing::Find => {
            erasable_or_all(agent, &crate::history::redact::allowances_unchecked(agent)?)
        }
    };
    let mut changed = agent.repo().erase(&erased);
    if exact {
        // Looked up one by one, what the records name (the rewrite of the
        // packs that hold any reads their other objects): chunks, chunk
        // lists and chunk-index nodes, found by id.
        let mut dead = Vec::new();
        for id in &erased {
            if let Some((kind, loc)) = agent.repo().index()?.object(id)? {
                let kind = tree::ObjectKind::from_u8(kind)
                    .ok_or_else(|| Error::corrupt("index", format!("object kind {kind}")))?;
                dead.push(crate::repo::index::NewObject {
                    id: *id,
                    kind,
                    loc,
                    home: 0,
                });
            }
        }
        if !dead.is_empty() {
            crate::repo::repack::remove_objects(agent.repo(), &dead)?;
            n = dead.len();
        }
    }
    let mut pruned = 0;
    let forgotten = agent.repo().index()?.forgotten_seqs()?.len();
    let key = crate::repo::replication_state::META_PRUNED_FORGOTTEN;
    // (None: a data dir of a build before the record, or one that never
    // pruned: due once if anything was forgotten.)
    let done = agent.repo().index()?.meta(key)?;
    let done: usize = done
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0);
    if done != forgotten {
        pruned = crate::history::retention::prune_local(agent, &mut |_, _| {})?.objects_removed;
        agent
            .repo()
            .index()?
            .set_meta(key, Some(forgotten.to_string().as_bytes()))?;
        // Snapshots left the listing, whatever the prune freed.
        changed = true;
    }
    changed |= n > 0;
    Ok(CarriedOut {
        erased: n,
        pruned,
        exact,
        refused: erased,
        changed,
    })
}

/// What the redaction records `allowed` let this handle erase
/// ([`crate::history::redact::erasable`]), and `true`; or, when that cannot
/// be told, everything they name, to be refused to readers but left in the
/// packs, and `false`.
fn erasable_or_all(
    agent: &Agent,
    allowed: &crate::history::redact::Allowances,
) -> (HashSet<ObjectId>, bool) {
    match crate::history::redact::erasable(agent, allowed) {
        Ok(e) => (e, true),
        Err(e) => {
            tracing::error!(
                "redaction: cannot tell which erased objects were written again ({e}); refusing them all, the packs keep them"
            );
            (allowed.ids().collect(), false)
        }
    }
}

/// The error for remote snapshot `seq` (envelope hash `hash`), sealed
/// under key version `v`, which this machine does not hold: a rotation
/// whose key was not imported here (a custody error), unless the next
/// snapshot's parent link or a signed checkpoint of `seq` names another
/// hash for it, which shows that the envelope was altered on the remote
/// (an integrity error: the version is part of the hashed envelope).
async fn unknown_key_version(
    keys: &crate::seal::keys::AgentKeys,
    remote: &Remote,
    seq: u64,
    hash: [u8; 32],
    v: u32,
    held: u32,
) -> Error {
    let altered = |by: String| Error::ChainBroken {
        seq,
        detail: format!(
            "its envelope names key version {v}, which this machine does not hold, and {by} names another hash for it: altered on the remote"
        ),
    };
    let next = match remote.get_envelope(&keys.agent_id(), seq + 1).await {
        Ok(Some(raw)) => Envelope::from_json(&raw).ok(),
        _ => None,
    };
    if let Some(n) = next
        && n.sequence_number == seq + 1
        && n.parent_snapshot != hash
    {
        return altered(format!("snapshot {}", seq + 1));
    }
    if let Ok(checkpoints) =
        crate::history::checkpoint::fetch_remote_after(keys, remote, seq - 1, true).await
        && checkpoints
            .iter()
            .any(|c| c.seq == seq && c.hash_bytes().is_ok_and(|h| h != hash))
    {
        return altered(format!("the signed checkpoint of snapshot {seq}"));
    }
    Error::UnknownKeyVersion(v, held)
}

/// Names snapshot `seq` (as read from the remote) in an error about its
/// bytes, so that every refusal says which snapshot failed. A format
/// version this build does not know, or a key version below the first,
/// is a refusal of that snapshot too (exit 3): written by a newer
/// sovseal, or altered.
pub(super) fn of_remote_snapshot(seq: u64, e: Error) -> Error {
    let at = format!(" (snapshot {seq}, from the remote)");
    match e {
        Error::Tag { what } => Error::Tag {
            what: format!("{what}{at}"),
        },
        Error::Corrupt { what, detail } => Error::Corrupt {
            what: format!("{what}{at}"),
            detail,
        },
        Error::MissingObject { id, kind, .. } => Error::MissingObject { id, kind, seq },
        Error::UnknownFormatVersion(found, known) => Error::ChainBroken {
            seq,
            detail: format!(
                "format version {found} on the remote (this build reads up to {known}): written by a newer sovseal (upgrade), or altered"
            ),
        },
        // Below the first key version: no key ever made it, so no rotation
        // explains it (one above the versions held is a key not imported
        // here, exit 4).
        Error::UnknownKeyVersion(found, _) if found < crate::seal::keys::KEY_VERSION => {
            Error::ChainBroken {
                seq,
                detail: format!("key version {found} on the remote, which never exists: altered"),
            }
        }
        e => e,
    }
}

/// What to write out of a snapshot, and where.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// The snapshot (default: the newest).
    pub seq: Option<u64>,
    /// The path inside it (`/` for the whole tree).
    pub path: &'a str,
    /// Where: a missing or empty directory, or a new path for a file.
    pub dest: &'a Path,
    /// How.
    pub options: WriteOptions,
}

/// Restores `name` from the remote at `url` into a private temporary data
/// dir (the rollback record of this machine still applies), then writes
/// `out` of that snapshot. `progress(seq, head)` follows the fetch and
/// verification of the chain. Returns the sequence written and what was
/// skipped ([`write_path`]).
pub fn to_directory(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    url: &str,
    out: Output<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, Vec<String>)> {
    let Output {
        seq,
        path,
        dest,
        options: o,
    } = out;
    if path.trim_matches('/').is_empty() {
        check_empty_dest(dest)?;
    }
    let remote = Remote::open(url)?;
    home.ensure()?;
    let tmp = tempfile_dir(home)?;
    let scratch = Home::at(&tmp);
    let seen = home.seen_head_path(name);
    if seen.exists() {
        crate::fsutil::create_private_dir(&tmp.join("seen"))?;
        std::fs::copy(&seen, scratch.seen_head_path(name)).map_err(|e| Error::io(&seen, e))?;
    }
    let rt = crate::repo::remote::runtime()?;
    let res = rt
        .block_on(restore(&scratch, name, master, &remote, progress))
        .and_then(|head| {
            let agent = Agent::open_readonly(&scratch, name, master)?;
            let want = seq.unwrap_or(head);
            let view = agent.snapshot(want)?;
            let skipped = write_path(&view, path, dest, o)?;
            Ok((want, skipped))
        });
    let _ = std::fs::remove_dir_all(&tmp);
    res
}

fn tempfile_dir(home: &Home) -> Result<std::path::PathBuf> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Custody(format!("random: {e}")))?;
    let dir = home
        .root()
        .join(format!("restore-{}", crate::hex::encode(&b)));
    crate::fsutil::create_private_dir(&dir)?;
    Ok(dir)
}

/// Fails unless `dest` is missing or an empty directory.
fn check_empty_dest(dest: &Path) -> Result<()> {
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(|e| Error::io(dest, e))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!("{} is not empty", dest.display())));
    }
    Ok(())
}

/// Fails if anything exists at `dest`.
fn check_absent_dest(dest: &Path) -> Result<()> {
    if dest.symlink_metadata().is_ok() {
        return Err(Error::Invalid(format!(
            "{} already exists; restore a file to a new path",
            dest.display()
        )));
    }
    Ok(())
}

/// How a tree is written out.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Keep setuid and setgid bits (root only); by default they are
    /// stripped, so that a restore never creates a set-id program.
    pub preserve_setuid: bool,
}

impl WriteOptions {
    fn mode(self, perm: u32) -> Mode {
        let keep = if self.preserve_setuid { 0o7777 } else { 0o1777 };
        Mode::from_bits_truncate(perm & keep)
    }
}

fn nix_io(p: &Path, e: nix::errno::Errno) -> Error {
    Error::io(p, std::io::Error::from(e))
}

/// Opens a directory under `dir` without following a symlink.
fn open_dir_at(dir: &impl AsFd, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nix_io(shown, e))
}

/// Writes `path` of snapshot `view` out: a directory's tree into `dest`
/// (missing or empty), a file or symlink as `dest` (must not exist).
/// Everything below `dest` is created through descriptors of the
/// directories this restore made, with `O_NOFOLLOW` and `O_EXCL`: a symlink
/// planted in `dest` meanwhile is never followed (as GNU tar extracts).
pub fn write_path(
    view: &SnapshotView,
    path: &str,
    dest: &Path,
    o: WriteOptions,
) -> Result<Vec<String>> {
    if o.preserve_setuid && !nix::unistd::geteuid().is_root() {
        return Err(Error::Invalid(
            "--preserve-setuid is for root only (set-id bits are stripped otherwise)".into(),
        ));
    }
    let ino = view.resolve(path.as_bytes())?;
    let i = view.getattr(ino)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} names no file", dest.display())))?;
    if i.file_type() == FileType::Dir && !parent.exists() {
        // The directories leading to DEST are the user's to name: made as
        // asked. Below DEST, nothing is followed.
        crate::fsutil::create_private_dir(parent)?;
    }
    let pfd = openat(
        nix::fcntl::AT_FDCWD,
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nix_io(parent, e))?;
    match i.file_type() {
        FileType::Dir => {
            check_empty_dest(dest)?;
            match mkdirat(&pfd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(nix_io(dest, e)),
            }
            let dfd = Arc::new(open_dir_at(&pfd, name, dest)?);
            let mut skipped = Vec::new();
            write_tree(view, ino, &dfd, dest, o, &mut HashMap::new(), &mut skipped)?;
            Ok(skipped)
        }
        FileType::File => {
            check_absent_dest(dest)?;
            write_file(view, &i, &pfd, name, dest, o)
        }
        FileType::Symlink => {
            check_absent_dest(dest)?;
            let t = view.readlink(ino)?;
            symlinkat(OsStr::from_bytes(&t), &pfd, name).map_err(|e| nix_io(dest, e))?;
            Ok(Vec::new())
        }
        _ => {
            check_absent_dest(dest)?;
            Ok(write_special(&i, &pfd, name, dest, o)?
                .into_iter()
                .collect())
        }
    }
}

/// Recreates a FIFO, or a device node when running as root, in `dir`; a
/// socket (a live endpoint cannot be restored), or a device node this user
/// may not create, is skipped and returned as a line for the report, as
/// tar and restic do. The mode is set through an `O_PATH | O_NOFOLLOW`
/// descriptor of what was just made, never through a path that could have
/// been replaced.
fn write_special(
    i: &Inode,
    dir: &impl AsFd,
    name: &OsStr,
    shown: &Path,
    o: WriteOptions,
) -> Result<Option<String>> {
    let kind = match i.file_type() {
        FileType::Fifo => SFlag::S_IFIFO,
        FileType::CharDev => SFlag::S_IFCHR,
        FileType::BlockDev => SFlag::S_IFBLK,
        FileType::Socket => {
            return Ok(Some(format!(
                "{}: a socket is not restored",
                shown.display()
            )));
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{} is not special",
                shown.display()
            )));
        }
    };
    match mknodat(dir, name, kind, Mode::from_bits_truncate(0o600), i.rdev()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) if kind != SFlag::S_IFIFO => {
            return Ok(Some(format!(
                "{}: creating a device node needs root",
                shown.display()
            )));
        }
        Err(e) => return Err(nix_io(shown, e)),
    }
    let fd = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| nix_io(shown, e))?;
    let via = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        via.as_str(),
        o.mode(i.perm),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| nix_io(shown, e))?;
    Ok(None)
}

/// Writes `path` of snapshot `seq` (default: head) of a local agent to
/// `dest`, after verifying every object of that snapshot. Returns the
/// sequence written.
pub fn from_local(
    agent: &Agent,
    seq: Option<u64>,
    path: &str,
    dest: &Path,
    o: WriteOptions,
) -> Result<(u64, Vec<String>)> {
    let view = match seq {
        Some(s) => agent.snapshot(s)?,
        None => agent.head()?,
    };
    // Resolve first: a wrong path fails before anything is read or written.
    view.resolve(path.as_bytes())?;
    crate::history::verify::verify_snapshot(agent, &view)?;
    let skipped = write_path(&view, path, dest, o)?;
    Ok((view.seq(), skipped))
}

/// Writes one regular file (holes stay holes) with its extended
/// attributes, mode and mtime, created as `name` under `dir` (never
/// through a symlink, never over an existing file). Returns the
/// attributes it could not set, for the report.
fn write_file(
    view: &SnapshotView,
    i: &Inode,
    dir: &impl AsFd,
    name: &OsStr,
    shown: &Path,
    o: WriteOptions,
) -> Result<Vec<String>> {
    use std::os::unix::fs::FileExt;
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| nix_io(shown, e))?;
    let f = std::fs::File::from(fd);
    let mut off = 0;
    while off < i.size {
        let buf = view.read(i.ino, off, 1 << 20)?;
        if buf.iter().any(|b| *b != 0) {
            f.write_all_at(&buf, off)
                .map_err(|er| Error::io(shown, er))?;
        }
        off += buf.len() as u64;
    }
    f.set_len(i.size).map_err(|er| Error::io(shown, er))?;
    let skipped = write_xattrs(&f, i, shown, o);
    fchmod(&f, o.mode(i.perm)).map_err(|e| nix_io(shown, e))?;
    set_mtime(&f, shown, i.mtime)?;
    Ok(skipped)
}

/// Sets the extended attributes of `i` (POSIX ACLs included) on `fd`,
/// before its mode (an access ACL sets the mode; `chmod` after it then
/// keeps both in step). `security.capability` is a privilege like a
/// set-id bit: kept only with `--preserve-setuid`. What the destination
/// refuses (`trusted.*` without root, a file system without xattrs) is
/// returned for the report, as tar and restic report it, not fatal.
fn write_xattrs(fd: &impl AsFd, i: &Inode, shown: &Path, o: WriteOptions) -> Vec<String> {
    let mut skipped = Vec::new();
    for (name, value) in &i.xattrs {
        if name.as_slice() == b"security.capability" && !o.preserve_setuid {
            skipped.push(format!(
                "{}: security.capability not restored (a privilege, as set-id bits: --preserve-setuid)",
                shown.display()
            ));
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        let rc =
            rustix::fs::fsetxattr(fd, cname.as_c_str(), value, rustix::fs::XattrFlags::empty());
        if let Err(e) = rc {
            let e = std::io::Error::from(e);
            skipped.push(format!(
                "{}: attribute {} not restored: {e}",
                shown.display(),
                String::from_utf8_lossy(name)
            ));
        }
    }
    skipped
}

/// Writes the tree below directory `top` into the directory `dir` (shown
/// as `shown`): directories, files, symlinks, hard links, modes and
/// modification times, extended attributes.
fn write_tree(
    view: &SnapshotView,
    top: u64,
    dir: &Arc<OwnedFd>,
    shown: &Path,
    o: WriteOptions,
    linked: &mut HashMap<u64, (Arc<OwnedFd>, std::ffi::OsString)>,
    skipped: &mut Vec<String>,
) -> Result<()> {
    for (name, e) in view.entries(top)?.iter() {
        let name = OsStr::from_bytes(name);
        let p = shown.join(name);
        let i = view.getattr(e.ino)?;
        match e.file_type {
            FileType::Dir => {
                mkdirat(&**dir, name, Mode::from_bits_truncate(0o700))
                    .map_err(|er| nix_io(&p, er))?;
                let child = Arc::new(open_dir_at(&**dir, name, &p)?);
                write_tree(view, e.ino, &child, &p, o, linked, skipped)?;
                // After the entries: a default ACL set first would be
                // inherited by them, which the snapshot may not show.
                skipped.extend(write_xattrs(&*child, &i, &p, o));
                fchmod(&*child, o.mode(i.perm)).map_err(|er| nix_io(&p, er))?;
                let f = std::fs::File::from(child.try_clone().map_err(|er| Error::io(&p, er))?);
                set_mtime(&f, &p, i.mtime)?;
            }
            FileType::Symlink => {
                let t = view.readlink(e.ino)?;
                symlinkat(OsStr::from_bytes(&t), &**dir, name).map_err(|er| nix_io(&p, er))?;
            }
            FileType::Fifo | FileType::Socket | FileType::CharDev | FileType::BlockDev => {
                skipped.extend(write_special(&i, &**dir, name, &p, o)?);
            }
            FileType::File => {
                if let Some((fdir, fname)) = linked.get(&e.ino) {
                    linkat(&**fdir, fname.as_os_str(), &**dir, name, AtFlags::empty())
                        .map_err(|er| nix_io(&p, er))?;
                    continue;
                }
                skipped.extend(write_file(view, &i, &**dir, name, &p, o)?);
                if i.nlink > 1 {
                    linked.insert(e.ino, (dir.clone(), name.to_owned()));
                }
            }
        }
    }
    Ok(())
}

fn set_mtime(f: &std::fs::File, p: &Path, ns: i64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    f.set_modified(t).map_err(|e| Error::io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::segment::SEGMENT_LEN;

    #[test]
    fn segments_cover_the_snapshots_from_the_first_without_a_gap() {
        let tail = |first: u64, n: usize| {
            Some((
                first,
                vec![
                    segment::Member {
                        envelope: Vec::new(),
                        index: None
                    };
                    n
                ],
            ))
        };
        let segs = |v: &[u64]| {
            v.iter()
                .map(|k| k * SEGMENT_LEN + 1)
                .collect::<BTreeSet<u64>>()
        };
        assert_eq!(covered(&segs(&[]), None), 0);
        assert_eq!(covered(&segs(&[]), tail(1, 70).as_ref()), 70);
        assert_eq!(
            covered(&segs(&[0, 1]), tail(2 * SEGMENT_LEN + 1, 64).as_ref()),
            2 * SEGMENT_LEN + 64
        );
        // A gap ends it: the rest is listed.
        assert_eq!(covered(&segs(&[0, 2]), None), SEGMENT_LEN);
        assert_eq!(
            covered(&segs(&[1, 2]), tail(3 * SEGMENT_LEN + 1, 64).as_ref()),
            0
        );
        // A tail that does not start where the segments end is left out.
        assert_eq!(
            covered(&segs(&[0]), tail(2 * SEGMENT_LEN + 1, 64).as_ref()),
            SEGMENT_LEN
        );
    }
}
