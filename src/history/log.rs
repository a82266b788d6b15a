//! Who changed what, snapshot by snapshot (`sovseal log`): each snapshot
//! compared with the retained snapshot before it (paths added, removed,
//! changed, as `diff` finds them: no file content decrypted), joined with
//! the provenance sealed in it (tree format 4): the note, and which
//! process changed each path.

use crate::Result;
use crate::history::diff::{self, Change, Entry};
use crate::repo::agent::Agent;
use crate::seal::tree::{Inode, Provenance, Writer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A process, as a snapshot's provenance names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id (0: the kernel, with no process to name).
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process name (lossy UTF-8).
    pub comm: String,
    /// Executable path (lossy UTF-8).
    pub exe: String,
}

impl From<&Writer> for Process {
    fn from(w: &Writer) -> Self {
        Process {
            pid: w.pid,
            uid: w.uid,
            gid: w.gid,
            comm: String::from_utf8_lossy(&w.comm).into_owned(),
            exe: String::from_utf8_lossy(&w.exe).into_owned(),
        }
    }
}

/// One changed path of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// Path from the root.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// `file`, `dir`, `symlink`, …
    pub kind: &'static str,
    /// What differs, for `changed`: `content`, `mode`, `owner`, …
    pub what: Vec<&'static str>,
    /// Size before (0 when added).
    pub old_size: u64,
    /// Size after (0 when removed).
    pub new_size: u64,
    /// Indices into the snapshot's `writers` of the processes that changed
    /// it (empty when unknown: a snapshot without provenance, or a change
    /// replayed from the journal after a crash).
    pub writers: Vec<usize>,
}

/// One snapshot of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Sequence number.
    pub seq: u64,
    /// Commit time, ms since the epoch.
    pub timestamp_ms: i64,
    /// The snapshot it was compared with (0: none, an empty tree).
    pub parent: u64,
    /// The note the agent set for it.
    pub note: Option<String>,
    /// The processes that made its changes.
    pub writers: Vec<Process>,
    /// Whether the snapshot's record of writers is incomplete: more
    /// processes or changes than one record holds
    /// (`seal::tree::WRITERS_MAX`, `CHANGES_MAX`), so some paths name no
    /// writer or not all of theirs.
    pub writers_incomplete: bool,
    /// Its changed paths, sorted by path.
    pub changes: Vec<PathChange>,
}

/// A snapshot listed for comparison: sequence, paths, provenance, time.
type Side = (u64, BTreeMap<String, Inode>, Option<Provenance>, i64);

/// The log of `agent`, newest first: at most `limit` snapshots, and with
/// `path` only those that changed it or something below it.
pub fn log(agent: &Agent, path: Option<&str>, limit: usize) -> Result<Vec<LogEntry>> {
    let head = agent.head()?.seq();
    // `/` (or nothing) is the whole tree: no filter.
    let want = path.map(normalize).filter(|p| !p.is_empty());
    let mut out = Vec::new();
    // Each snapshot is listed once: as the newer side, then the older.
    let mut newer: Option<Side> = None;
    for seq in (1..=head).rev() {
        if out.len() >= limit {
            break;
        }
        if agent.is_forgotten(seq)? {
            continue;
        }
        let view = agent.snapshot(seq)?;
        let listing = diff::listing(&view)?;
        let m = view.manifest();
        if let Some((n, nl, prov, ts)) = newer.take() {
            let e = entry(n, seq, &listing, &nl, prov, ts);
            if keeps(&e, want.as_deref()) {
                out.push(e);
            }
        }
        newer = Some((seq, listing, m.provenance.clone(), m.timestamp_ms));
    }
    if let Some((n, nl, prov, ts)) = newer
        && out.len() < limit
    {
        let e = entry(n, 0, &BTreeMap::new(), &nl, prov, ts);
        if keeps(&e, want.as_deref()) {
            out.push(e);
        }
    }
    Ok(out)
}

/// `path` as the log compares it: from the root, no trailing slash.
/// (`/` and the empty path are the root: an empty string.)
fn normalize(path: &str) -> String {
    let p = path.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("/{p}")
    }
}

fn keeps(e: &LogEntry, path: Option<&str>) -> bool {
    let Some(p) = path else { return true };
    e.changes.iter().any(|c| {
        c.path == p || (c.path.starts_with(p) && c.path.as_bytes().get(p.len()) == Some(&b'/'))
    })
}

/// A path added or removed although no program touched its own inode was
/// moved by the rename of a directory above it: its inode is in both
/// snapshots. It is shown with the programs that renamed (took the old
/// name of) the nearest such directory among the changes of the same kind.
/// Nothing else is inherited: a path created under a new directory, or
/// changed in place, keeps its own writers, even none.
fn inherit_writers(
    changes: &mut [PathChange],
    inos: &std::collections::HashMap<(String, &'static str), u64>,
    moved: impl Fn(u64) -> bool,
    renamers: impl Fn(u64) -> Vec<usize>,
) {
    for c in changes.iter_mut() {
        if !c.writers.is_empty() || c.change == "changed" {
            continue;
        }
        if !inos
            .get(&(c.path.clone(), c.change))
            .is_some_and(|i| moved(*i))
        {
            continue;
        }
        let mut p = c.path.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if let Some(dir) = inos.get(&(p.to_string(), c.change)) {
                let w = renamers(*dir);
                if !w.is_empty() {
                    c.writers = w;
                    break;
                }
            }
        }
    }
}

fn entry(
    seq: u64,
    parent: u64,
    older: &BTreeMap<String, Inode>,
    newer: &BTreeMap<String, Inode>,
    prov: Option<Provenance>,
    timestamp_ms: i64,
) -> LogEntry {
    let d = diff::compare(parent, seq, older, newer);
    let prov = prov.unwrap_or_default();
    let who = |ino: u64, removed: bool| -> Vec<usize> {
        prov.writers_of(ino, removed).map(|w| w as usize).collect()
    };
    let added = |e: &Entry, change| PathChange {
        path: e.path.clone(),
        change,
        kind: e.kind,
        what: Vec::new(),
        old_size: if change == "removed" { e.size } else { 0 },
        new_size: if change == "added" { e.size } else { 0 },
        writers: who(e.ino, change == "removed"),
    };
    let changed = |c: &Change| PathChange {
        path: c.path.clone(),
        change: "changed",
        kind: c.kind,
        what: c.what.clone(),
        old_size: c.old_size,
        new_size: c.new_size,
        writers: who(c.ino, false),
    };
    let mut changes: Vec<PathChange> = d
        .added
        .iter()
        .map(|e| added(e, "added"))
        .chain(d.removed.iter().map(|e| added(e, "removed")))
        .chain(d.changed.iter().map(changed))
        .collect();
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let inos: std::collections::HashMap<(String, &'static str), u64> = d
        .added
        .iter()
        .map(|e| ((e.path.clone(), "added"), e.ino))
        .chain(
            d.removed
                .iter()
                .map(|e| ((e.path.clone(), "removed"), e.ino)),
        )
        .collect();
    let (old_inos, new_inos): (BTreeSet<u64>, BTreeSet<u64>) = (
        older.values().map(|i| i.ino).collect(),
        newer.values().map(|i| i.ino).collect(),
    );
    inherit_writers(
        &mut changes,
        &inos,
        |ino| old_inos.contains(&ino) && new_inos.contains(&ino),
        |ino| who(ino, true),
    );
    LogEntry {
        seq,
        timestamp_ms,
        parent,
        note: prov
            .note
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned()),
        writers: prov.writers.iter().map(Process::from).collect(),
        writers_incomplete: prov.incomplete,
        changes,
    }
}
