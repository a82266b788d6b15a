//! Full verification of an agent's chain and content (read-only).
//!
//! Walks the chain from the first retained snapshot to head: each envelope's
//! recorded hash, its parent link and dense sequence numbers, its tag and
//! payload hash (`vsr_hash_mismatch`), then every object the snapshot
//! references, once per object: present, record header consistent, tag
//! valid, content hashing to its id, directory entries naming existing
//! inodes. The first failure is returned with the sequence it concerns.
//! Nothing is repaired.

use crate::agent::Agent;
use crate::envelope::tree::{self, Chunks, Content, ObjectId, ObjectKind};
use crate::envelope::{self, GENESIS_PARENT};
use crate::{Error, Result};
use std::collections::{BTreeSet, HashSet};

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

struct Walker<'a> {
    agent: &'a Agent,
    seen: HashSet<ObjectId>,
    report: Report,
}

impl Walker<'_> {
    /// Verifies one object; returns its plaintext the first time, `None` after.
    fn object(&mut self, kind: ObjectKind, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        if self.seen.contains(id) {
            return Ok(None);
        }
        let repo = self.agent.repo();
        let (stored_kind, loc) = repo
            .index()
            .object(id)?
            .ok_or_else(|| Error::MissingObject {
                id: id.to_hex(),
                kind: kind.name(),
                seq: 0,
            })?;
        let (hid, hkind, hlen) = repo.store().read_header(&loc)?;
        if hid != *id || hkind != kind as u8 || stored_kind != kind as u8 || hlen != loc.len {
            return Err(Error::corrupt(
                format!("{} {}", kind.name(), id.to_hex()),
                "pack record header or index entry does not match the reference",
            ));
        }
        let plain = repo.open_verified(kind, id)?;
        self.seen.insert(*id);
        self.report.objects += 1;
        self.report.sealed_bytes += u64::from(loc.len);
        Ok(Some(plain))
    }

    fn snapshot(&mut self, m: &tree::Manifest) -> Result<()> {
        let mut inos = BTreeSet::new();
        let mut dirs = Vec::new();
        for (page_no, pid) in &m.pages {
            let Some(raw) = self.object(ObjectKind::InodePage, pid)? else {
                // A page verified before: its inodes exist; collect them for
                // the entry check from the (verified) cache.
                let p = self.agent.repo().page(pid, m.inodes_per_page)?;
                inos.extend(p.keys().copied());
                continue;
            };
            let (no, page) = tree::decode_page(&raw, m.inodes_per_page)?;
            if no != *page_no {
                return Err(Error::corrupt(
                    "inode page",
                    "page number does not match the manifest",
                ));
            }
            for (ino, i) in page {
                inos.insert(ino);
                match &i.content {
                    Content::File(c) => {
                        let refs = match c {
                            Chunks::Inline(r) => r.clone(),
                            Chunks::List { id, count } => {
                                match self.object(ObjectKind::ChunkList, id)? {
                                    Some(raw) => {
                                        let r = tree::decode_chunk_list(&raw)?;
                                        if r.len() as u64 != *count {
                                            return Err(Error::corrupt(
                                                "chunk list",
                                                "count differs from the inode",
                                            ));
                                        }
                                        r
                                    }
                                    None => continue,
                                }
                            }
                        };
                        for id in refs.iter().flatten() {
                            self.object(ObjectKind::Chunk, id)?;
                        }
                    }
                    Content::Dir(Some(id)) => {
                        if let Some(raw) = self.object(ObjectKind::DirNode, id)? {
                            dirs.push((ino, tree::decode_dir(&raw)?));
                        }
                    }
                    Content::Dir(None) | Content::Symlink(_) => {}
                }
            }
        }
        for (dir, entries) in dirs {
            for (name, e) in entries {
                if !inos.contains(&e.ino) {
                    return Err(Error::corrupt(
                        "directory node",
                        format!(
                            "directory {dir} has an entry ({} bytes) naming missing inode {}",
                            name.len(),
                            e.ino
                        ),
                    ));
                }
            }
        }
        if !inos.contains(&tree::ROOT_INO) {
            return Err(Error::corrupt("manifest", "no root directory"));
        }
        Ok(())
    }
}

/// Verifies the whole agent; `progress(seq, head)` is called per snapshot.
pub fn verify(agent: &Agent, mut progress: impl FnMut(u64, u64)) -> Result<Report> {
    let head_view = agent.head()?;
    let (first, head) = {
        let idx = agent.repo().index();
        (idx.first_seq()?.unwrap_or(1), idx.head_seq()?.unwrap_or(0))
    };
    if head != head_view.seq() {
        return Err(Error::ChainBroken {
            seq: head,
            detail: "head changed during verification".into(),
        });
    }
    let keys = agent.repo().keys().clone();
    let mut w = Walker {
        agent,
        seen: HashSet::new(),
        report: Report {
            first_seq: first,
            head_seq: head,
            ..Report::default()
        },
    };
    let mut prev: Option<[u8; 32]> = (first == 1).then_some(GENESIS_PARENT);
    for seq in first..=head {
        progress(seq, head);
        let (env, stored) = {
            let idx = agent.repo().index();
            (idx.envelope(&keys.agent_id(), seq)?, idx.stored_hash(seq)?)
        };
        let env = env.ok_or_else(|| Error::ChainBroken {
            seq,
            detail: "snapshot missing: sequence numbers are not dense".into(),
        })?;
        if stored != Some(env.hash()) {
            return Err(Error::ChainBroken {
                seq,
                detail: "the index's recorded hash does not match the envelope".into(),
            });
        }
        if prev.is_some_and(|p| env.parent_snapshot != p) {
            return Err(Error::ChainBroken {
                seq,
                detail: "parent_snapshot does not name the previous snapshot".into(),
            });
        }
        let m = envelope::open_manifest(&keys, &env)?;
        w.snapshot(&m).map_err(|e| at(seq, e))?;
        w.report.snapshots += 1;
        prev = Some(env.hash());
    }
    Ok(w.report)
}
