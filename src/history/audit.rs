//! The remote's chain compared with this machine's (`sovseal verify
//! --remote`).
//!
//! A checkpoint vouches for one snapshot of the remote; a restore reads
//! the rest: the envelope files (a whole restore), the chain segments,
//! the tail segment, the part indexes and the upload batch indexes (a lazy
//! one), the forget records
//! (bundled, and their files), the redaction records.
//! [`check_remote_chain`] reads all of those, up to this machine's head,
//! and holds each envelope against the local one that `verify` has just
//! checked: the same hash, so the same manifest, parent link and key. So
//! a remote that a restore would refuse (an altered or missing envelope, a
//! part index that does not decode, a forget or redaction record that
//! does not verify, a snapshot whose content is nowhere: a part of its own
//! that its part index names missing from a listing of `packs/`, and no
//! place in an upload batch whose part is listed) or that holds another
//! chain (a fork) is reported
//! here, by the machine that wrote it, before anyone needs it; so is a
//! damaged segment or bundle, which a restore reads around (deleting it
//! has the writer write it again). Content is not downloaded: a pack
//! part's objects are checked when a restore or a lazy read fetches them.
//!
//! Architecture Invariant: read-only, on the remote and here.

use crate::repo::agent::Agent;
use crate::repo::pack;
use crate::repo::remote::Remote;
use crate::repo::segment;
use crate::seal::envelope::Envelope;
use crate::seal::forget::ForgetRecord;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};

/// Envelope files asked for at once.
const IN_FLIGHT: usize = 32;

/// What [`check_remote_chain`] compared.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RemoteChain {
    /// The remote's newest snapshot.
    pub remote_head: u64,
    /// Snapshots whose envelope file matched the local one: `1..=compared`.
    pub compared: u64,
    /// Chain segments (and the tail) read, each member matching.
    pub segments: u64,
    /// Forget records on the remote verified against the local snapshot
    /// they name.
    pub forget_records: u64,
    /// Redaction records on the remote, each verified.
    pub redaction_records: u64,
    /// Upload batch indexes read, each decoding with its members' part
    /// indexes.
    pub batch_indexes: u64,
}

/// Compares the remote's chain up to this machine's head with the local
/// one (see the module doc). The first difference fails, naming the
/// snapshot: an envelope missing, not decoding or differing; a segment
/// not decoding or holding a snapshot that differs; a forget record that
/// does not verify against the snapshot it names; a snapshot whose
/// content no pack part and no upload batch on the remote holds.
pub async fn check_remote_chain(agent: &Agent, remote: &Remote) -> Result<RemoteChain> {
    let keys = agent.repo().keys().clone();
    let id = keys.agent_id();
    let local_head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    let none_here = std::collections::HashSet::new();
    let (listed, segments, tail, bundle, redactions) = futures::try_join!(
        remote.list_envelopes(&id, 0, usize::MAX),
        remote.list_segments(&id),
        remote.get_tail(&id),
        remote.get_forgotten_bundle(&id),
        crate::history::redact::fetch_remote_records(&keys, remote, &none_here),
    )?;
    let remote_head = listed.last().copied().unwrap_or(0);
    let upto = remote_head.min(local_head);
    // The local envelope's hash of each snapshot compared (verified by
    // `verify`), read once (32 bytes a snapshot): the files, the segments
    // and the part indexes each look at it.
    let hashes: Vec<[u8; 32]> = (1..=upto)
        .map(|s| agent.envelope(s).map(|e| e.hash()))
        .collect::<Result<_>>()?;
    let local = |seq: u64| match seq.checked_sub(1).and_then(|i| hashes.get(i as usize)) {
        Some(h) => Ok(*h),
        None => agent.envelope(seq).map(|e| e.hash()),
    };
    let differs = |seq: u64, what: &str| Error::ChainBroken {
        seq,
        detail: format!(
            "{what} on the remote differs from this machine's snapshot {seq}: a fork, or an altered remote"
        ),
    };

    // Every envelope file: dense from 1, each this machine's.
    let dense = listed
        .iter()
        .zip(1..=upto)
        .take_while(|(s, i)| *s == i)
        .count() as u64;
    if dense < upto {
        return Err(missing(dense + 1));
    }
    let mut files = futures::stream::iter(1..=upto)
        .map(|seq| {
            let (remote, id) = (remote, &id);
            async move { Ok::<_, Error>((seq, remote.get_envelope(id, seq).await?)) }
        })
        .buffered(IN_FLIGHT);
    let mut compared = 0;
    while let Some((seq, raw)) = files.try_next().await? {
        let raw = raw.ok_or_else(|| missing(seq))?;
        let theirs = Envelope::from_json(&raw).map_err(|e| at(seq, "its envelope file", e))?;
        if theirs.hash() != local(seq)? {
            return Err(differs(seq, "the envelope file"));
        }
        compared = seq;
    }

    // The chain segments and the tail: what a lazy restore reads instead
    // (it reads around one that does not decode; here that is reported,
    // and deleting the file has the writer write it again).
    let mut read = 0;
    let mut covered = std::collections::HashSet::new();
    // The pack parts each snapshot's part index names (one when it has
    // none: snapshots replicated before part indexes).
    let mut parts = std::collections::HashMap::new();
    let mut count_parts = |seq: u64, index: &[u8]| -> Result<()> {
        let entries = pack::decode_index(seq, index)?;
        let n = entries.iter().map(|e| e.part + 1).max().unwrap_or(1);
        parts.insert(seq, n);
        Ok(())
    };
    let mut check_members = |what: &str, first: u64, members: Vec<segment::Member>| -> Result<()> {
        for (seq, m) in (first..).zip(members).take_while(|(s, _)| *s <= upto) {
            let theirs = Envelope::from_json(&m.envelope).map_err(|e| at(seq, what, e))?;
            if theirs.hash() != local(seq)? {
                return Err(differs(seq, what));
            }
            if let Some(i) = &m.index {
                count_parts(seq, i).map_err(|e| at(seq, what, e))?;
            }
            covered.insert(seq);
        }
        Ok(())
    };
    let wanted: Vec<u64> = segments.into_iter().filter(|f| *f <= upto).collect();
    let mut fetched = futures::stream::iter(wanted)
        .map(|first| {
            let (remote, id) = (remote, &id);
            async move { Ok::<_, Error>((first, remote.get_segment(id, first).await?)) }
        })
        .buffered(4);
    while let Some((first, bytes)) = fetched.try_next().await? {
        // (Listed, then gone: a prune or a writer's step in between; the
        // envelope files above hold the same snapshots.)
        let Some(bytes) = bytes else { continue };
        let what = format!("chain segment {first}");
        check_members(&what, first, segment::decode(first, &bytes)?)?;
        read += 1;
    }
    if let Some(bytes) = tail {
        let (first, members) = segment::decode_tail(&bytes)?;
        if first <= upto {
            check_members(&format!("the tail segment (from {first})"), first, members)?;
            read += 1;
        }
    }
    // The part index files of the snapshots no segment holds (a lazy
    // restore reads those; absent is fine: parts replicated by an older
    // build, or pruned).
    let mut indexes = futures::stream::iter((1..=upto).filter(|s| !covered.contains(s)))
        .map(|seq| {
            let (remote, id) = (remote, &id);
            let hash = local(seq);
            async move {
                let got = remote.get_index(id, seq, &hash?).await?;
                Ok::<_, Error>((seq, got))
            }
        })
        .buffered(IN_FLIGHT);
    while let Some((seq, bytes)) = indexes.try_next().await? {
        if let Some(b) = bytes {
            count_parts(seq, &b).map_err(|e| at(seq, "its part index file", e))?;
        }
    }
    // The upload batches' indexes, read strictly (a reader reads around
    // one that does not decode, and misses its members' content).
    let (batch_indexes, batched) = remote.check_batches(&id, upto).await?;
    // The pack parts, listed after the envelopes and the batches were
    // read and before the forget record files are: an upload puts a
    // snapshot's parts before its envelope, a redaction a member's own
    // part before it takes the member out of its batch, and a prune its
    // record file before it deletes the parts, so none of them running
    // meanwhile makes a snapshot read as having no content.
    let own = remote.list_own_parts(&id).await?;

    // The forget records: each must name a snapshot of this chain, signed.
    let mut records = 0;
    let bundled = match bundle {
        Some(b) => segment::decode_forgotten(&b)?,
        None => Vec::new(),
    };
    let in_bundle: std::collections::HashSet<u64> = bundled.iter().map(|(s, _)| *s).collect();
    let files = remote
        .list_forgotten(&id, &|s| in_bundle.contains(&s))
        .await?;
    let mut on_remote = std::collections::HashSet::new();
    for (seq, raw) in bundled.into_iter().chain(files) {
        // (Past this machine's head: the signature only, as a restore
        // checks it.)
        let hash = if seq <= local_head {
            Some(local(seq)?)
        } else {
            None
        };
        ForgetRecord::parse(&raw, &keys, seq, hash.as_ref())
            .map_err(|e| at(seq, "its forget record", e))?;
        on_remote.insert(seq);
        records += 1;
    }
    // A snapshot this machine pruned on this remote (its parts deleted
    // there after its record was stored) must keep its record there: a
    // restore without it finds content missing and fails.
    let ours = crate::repo::replication_state::ReplicationState::read(agent)?.remote;
    if ours.as_deref() == Some(remote.shown_url().as_str()) {
        let index = agent.repo().index()?;
        if let Some((seq, _)) = index
            .forgotten()?
            .into_iter()
            .find(|(seq, (_, pruned))| *pruned && *seq <= upto && !on_remote.contains(seq))
        {
            return Err(Error::ChainBroken {
                seq,
                detail: "its forget record is missing on the remote, though its parts were pruned there: a restore finds its content missing".into(),
            });
        }
    }
    // Every snapshot's content is somewhere a restore reads it: a place in
    // an upload batch whose part is there, or every pack part of its own
    // that its part index names (part 0 without one); a part moved away,
    // or a batch index altered or dropped, is not seen by the checks
    // above. A forget record lets the remote go without it.
    for seq in (1..=upto).filter(|s| !on_remote.contains(s)) {
        let hash = local(seq)?;
        if batched.contains(&(seq, hash)) {
            continue;
        }
        let h16: [u8; 16] = hash[..16].try_into().expect("16 of 32 bytes");
        let n = parts.get(&seq).copied().unwrap_or(1);
        if let Some(part) = (0..n).find(|p| !own.contains(&(seq, h16, *p))) {
            let whose = match part {
                0 => "no part of its own and no upload batch holding it",
                _ => "its part index names it",
            };
            return Err(Error::ChainBroken {
                seq,
                detail: format!(
                    "its content is on the remote nowhere: pack part {part} is missing ({whose}), so a restore finds it missing"
                ),
            });
        }
    }
    Ok(RemoteChain {
        remote_head,
        compared,
        segments: read,
        forget_records: records,
        redaction_records: redactions.len() as u64,
        batch_indexes,
    })
}

/// Snapshot `seq` is not on the remote, though a later one is.
fn missing(seq: u64) -> Error {
    Error::ChainBroken {
        seq,
        detail: "snapshot missing on the remote: sequence numbers are not dense".into(),
    }
}

/// Names where on the remote an error about snapshot `seq` came from.
fn at(seq: u64, what: &str, e: Error) -> Error {
    Error::ChainBroken {
        seq,
        detail: format!("{what} on the remote does not check: {e}"),
    }
}
