//! Full verification of an agent's chain and content (read-only).
//!
//! Walks the chain from the first retained snapshot to head: each envelope's
//! recorded hash, its parent link and dense sequence numbers, its tag and
//! payload hash (`vsr_hash_mismatch`), then every object the snapshot
//! references, once per object: present, record header consistent, tag
//! valid, content hashing to its id, directory entries naming existing
//! inodes. The first failure is returned with the sequence it concerns.
//! Nothing is repaired.

use crate::repo::agent::Agent;
use crate::seal::envelope::{self, GENESIS_PARENT};
use crate::seal::tree::{self, ObjRef, ObjectKind};
use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::HashSet;

/// What a successful verification covered.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// First retained sequence number.
    pub first_seq: u64,
    /// Head sequence number.
    pub head_seq: u64,
    /// Snapshots verified.
    pub snapshots: u64,
    /// Distinct objects verified.
    pub objects: u64,
    /// Sealed bytes read.
    pub sealed_bytes: u64,
    /// Objects erased by redaction (allowed missing; each record verified).
    pub redacted: u64,
    /// What each key version covers: snapshots (their manifests) and
    /// objects sealed under it.
    pub key_versions: std::collections::BTreeMap<u32, KeyCoverage>,
    /// Forgotten snapshots among them (envelope and chain checked, content
    /// not: it was pruned by retention; each forget record's signature is).
    pub forgotten: u64,
}

/// What one key version seals.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KeyCoverage {
    /// Snapshots whose manifest it seals.
    pub snapshots: u64,
    /// Objects it seals.
    pub objects: u64,
}

/// Adds the sequence number to an error from inside a snapshot.
fn at(seq: u64, e: Error) -> Error {
    match e {
        Error::Tag { what } => Error::Tag {
            what: format!("{what} (snapshot {seq})"),
        },
        Error::Corrupt { what, detail } => Error::Corrupt {
            what: format!("{what} (snapshot {seq})"),
            detail,
        },
        Error::MissingObject { id, kind, .. } => Error::MissingObject { id, kind, seq },
        other => other,
    }
}

/// Verifies one object: index entry, pack record header, tag, id.
fn check_object(agent: &Agent, kind: ObjectKind, r: &ObjRef) -> Result<(Vec<u8>, u64, u32)> {
    let repo = agent.repo();
    let id = &r.id;
    let (stored_kind, loc, (hid, hkind, hlen)) =
        repo.stored_header(kind, r).map_err(|e| match e {
            Error::MissingObject { id, seq, .. } => Error::MissingObject {
                id,
                kind: kind.name(),
                seq,
            },
            e => e,
        })?;
    if hid != *id || hkind != kind as u8 || stored_kind != kind as u8 || hlen != loc.len {
        return Err(Error::corrupt(
            format!("{} {}", kind.name(), id.to_hex()),
            "pack record header or index entry does not match the reference",
        ));
    }
    let (plain, v) = repo.open_verified_versioned(kind, r)?;
    Ok((plain, u64::from(loc.len), v))
}

/// The file in the data dir recording the last successful full
/// verification (`sovseal status` shows it). Informational: nothing trusts it.
pub const VERIFIED_FILE: &str = "verified.json";

/// Records a successful verification: head sequence and when.
pub fn record(agent: &Agent, report: &Report) -> Result<()> {
    let path = agent.data_dir().join(VERIFIED_FILE);
    let at_ms = crate::time::now_ms();
    let v = serde_json::json!({ "seq": report.head_seq, "at_ms": at_ms });
    crate::fsutil::write_atomic_nosync(&path, v.to_string().as_bytes(), 0o600)
}

/// The last recorded verification: (head sequence, ms since the epoch).
pub fn last_verified(agent: &Agent) -> Option<(u64, i64)> {
    let raw = std::fs::read(agent.data_dir().join(VERIFIED_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    Some((v["seq"].as_u64()?, v["at_ms"].as_i64()?))
}

/// Verifies every object one snapshot references (present, header, tag,
/// id), each once: what rollback and restore check before they use a tree.
pub fn verify_snapshot(agent: &Agent, view: &crate::repo::view::SnapshotView) -> Result<()> {
    let seen: RefCell<HashSet<ObjRef>> = RefCell::new(HashSet::new());
    let allowed = crate::history::redact::allowances(agent)?;
    let seq = view.seq();
    let skip = |r: &ObjRef| seen.borrow().contains(r) || allowed.allows(&r.id, seq);
    view.walk_objects(&skip, &mut |kind, id| {
        check_object(agent, kind, id)?;
        seen.borrow_mut().insert(*id);
        Ok(())
    })
    .map_err(|e| at(view.seq(), e))
}

/// Verifies the whole agent; `progress(seq, head)` is called per snapshot.
pub fn verify(agent: &Agent, mut progress: impl FnMut(u64, u64)) -> Result<Report> {
    // Never a pass over part of the chain: a flat start's older history
    // is fetched first (the command line does it).
    if let Some((from, _)) = crate::history::older::pending(agent)? {
        return Err(Error::Invalid(format!(
            "agent {} holds its history from snapshot {from} on only: the older snapshots are still to be fetched",
            agent.name()
        )));
    }
    let head_view = agent.head()?;
    let (first, head) = {
        let idx = agent.repo().index()?;
        (idx.first_seq()?.unwrap_or(1), idx.head_seq()?.unwrap_or(0))
    };
    if head != head_view.seq() {
        return Err(Error::ChainBroken {
            seq: head,
            detail: "head changed during verification".into(),
        });
    }
    let mut report = Report {
        first_seq: first,
        head_seq: head,
        ..Report::default()
    };
    let forgotten = agent.forgotten_seqs()?;
    // Redacted objects may be missing only from the snapshots their signed
    // record lists.
    let allowed = crate::history::redact::allowances(agent)?;
    report.redacted = allowed.len() as u64;
    let seen: RefCell<HashSet<ObjRef>> = RefCell::new(HashSet::new());
    let mut prev: Option<[u8; 32]> = (first == 1).then_some(GENESIS_PARENT);
    let mut prev_versions: Option<(u32, u32)> = None;
    for seq in first..=head {
        progress(seq, head);
        let env = agent.envelope(seq).map_err(|e| match e {
            Error::NoSuchSnapshot(_) => Error::ChainBroken {
                seq,
                detail: "snapshot missing: sequence numbers are not dense".into(),
            },
            e => e,
        })?;
        if let Some((kv, format)) = prev_versions {
            envelope::check_succession(kv, format, &env)?;
        }
        prev_versions = Some((env.key_version, env.format_version));
        if prev.is_some_and(|p| env.parent_snapshot != p) {
            return Err(Error::ChainBroken {
                seq,
                detail: "parent_snapshot does not name the previous snapshot".into(),
            });
        }
        // Recorded hash, tag, payload hash and manifest/envelope agreement.
        let view = agent.snapshot_unchecked(seq)?;
        report
            .key_versions
            .entry(env.key_version)
            .or_default()
            .snapshots += 1;
        if forgotten.contains(&seq) {
            report.forgotten += 1;
            report.snapshots += 1;
            prev = Some(env.hash());
            continue;
        }
        let (mut new_dirs, mut new_names) = (Vec::new(), Vec::new());
        let skip = |r: &ObjRef| seen.borrow().contains(r) || allowed.allows(&r.id, seq);
        view.walk_objects(&skip, &mut |kind, id| {
            let (plain, len, v) = check_object(agent, kind, id)?;
            report.key_versions.entry(v).or_default().objects += 1;
            if kind == ObjectKind::DirNode {
                new_dirs.push(tree::decode_dir(&plain)?);
            }
            // A delta's names are checked like a directory node's: against
            // the snapshot that wrote it when it is first seen there, else
            // (that snapshot was forgotten) as a fold's node is.
            if kind == ObjectKind::Delta {
                let d = tree::decode_delta(&plain)?;
                for e in d.dirs.into_values() {
                    let names: tree::Entries = e
                        .names
                        .into_iter()
                        .filter_map(|(n, e)| e.map(|e| (n, e)))
                        .collect();
                    match id.home == seq {
                        true => new_names.push(names),
                        false => new_dirs.push(names),
                    }
                }
            }
            seen.borrow_mut().insert(*id);
            report.objects += 1;
            report.sealed_bytes += len;
            Ok(())
        })
        .map_err(|e| at(seq, e))?;
        let inos = view.inode_numbers().map_err(|e| at(seq, e))?;
        if !inos.contains(&tree::ROOT_INO) {
            return Err(at(seq, Error::corrupt("manifest", "no root directory")));
        }
        // A directory node of the fold, or a delta, read first here (the
        // snapshot that wrote it was forgotten) may still name what the
        // chain removed since, with the name removed too: that is no
        // dangling entry.
        let removed: std::collections::HashSet<u64> = match view.merged().map_err(|e| at(seq, e))? {
            Some(m) => m
                .inodes
                .iter()
                .filter(|(_, i)| i.is_none())
                .map(|(ino, _)| *ino)
                .collect(),
            None => Default::default(),
        };
        let dangling = |e: &&tree::DirEntry, node: bool| {
            !(inos.contains(&e.ino) || node && removed.contains(&e.ino))
        };
        let nodes = new_dirs.iter().map(|d: &tree::Entries| (d, true));
        for (entries, node) in nodes.chain(new_names.iter().map(|d| (d, false))) {
            if let Some(e) = entries.values().find(|e| dangling(e, node)) {
                return Err(at(
                    seq,
                    Error::corrupt(
                        "directory node",
                        format!("entry names missing inode {}", e.ino),
                    ),
                ));
            }
        }
        report.snapshots += 1;
        prev = Some(env.hash());
    }
    Ok(report)
}
