//! History management over sealed snapshots: what changed between two
//! snapshots (`sovseal diff`). Rolling back is a commit and lives in the
//! engine (`Engine::rollback`); writing a tree out lives in `restore`.

use crate::Result;
use crate::repo::view::SnapshotView;
use crate::seal::tree::{Content, FileType, Inode, ROOT_INO};
use serde::Serialize;
use std::collections::BTreeMap;

/// One path present in only one of the two snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Path from the root, `/`-separated (lossy UTF-8 for display).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Size in bytes (a directory: 0).
    pub size: u64,
    /// Inode number in the snapshot that has the path.
    pub ino: u64,
}

/// One path present in both snapshots whose inode differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Path from the root.
    pub path: String,
    /// Kind in the newer snapshot.
    pub kind: &'static str,
    /// Size in the older snapshot.
    pub old_size: u64,
    /// Size in the newer snapshot.
    pub new_size: u64,
    /// What differs: `type`, `content`, `target`, `mode`, `owner`, `xattrs`.
    pub what: Vec<&'static str>,
    /// Inode number in the newer snapshot.
    pub ino: u64,
}

/// The difference from snapshot `from` to snapshot `to`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    /// The older snapshot's sequence.
    pub from: u64,
    /// The newer snapshot's sequence.
    pub to: u64,
    /// Paths only in `to`.
    pub added: Vec<Entry>,
    /// Paths only in `from`.
    pub removed: Vec<Entry>,
    /// Paths in both whose file type, content or metadata differ (times
    /// alone do not count: every commit touches them).
    pub changed: Vec<Change>,
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharDev => "character device",
        FileType::BlockDev => "block device",
    }
}

fn join(parent: &str, name: &[u8]) -> String {
    let n = String::from_utf8_lossy(name);
    if parent == "/" {
        format!("/{n}")
    } else {
        format!("{parent}/{n}")
    }
}

/// Every path below `ino` with its inode, depth first, sorted by name.
fn walk(view: &SnapshotView, ino: u64, path: &str, out: &mut Vec<(String, Inode)>) -> Result<()> {
    for (name, e) in view.entries(ino)?.iter() {
        let p = join(path, name);
        let i = view.getattr(e.ino)?;
        let dir = e.file_type == FileType::Dir;
        out.push((p.clone(), i));
        if dir {
            walk(view, e.ino, &p, out)?;
        }
    }
    Ok(())
}

/// What differs between two inode records, ignoring times and link counts.
fn differences(a: &Inode, b: &Inode) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.file_type() != b.file_type() {
        what.push("type");
        return what;
    }
    match (&a.content, &b.content) {
        (Content::File(x), Content::File(y)) if x != y || a.size != b.size => what.push("content"),
        (Content::Symlink(x), Content::Symlink(y)) if x != y => what.push("target"),
        (Content::Special(_, x), Content::Special(_, y)) if x != y => what.push("device"),
        _ => {}
    }
    if a.perm != b.perm {
        what.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        what.push("owner");
    }
    if a.xattrs != b.xattrs {
        what.push("xattrs");
    }
    what
}

/// Compares two snapshots path by path. Content is compared by chunk
/// references (keyed hashes of the plaintext), so nothing is decrypted but
/// inode pages and directory nodes.
pub fn diff(from: &SnapshotView, to: &SnapshotView) -> Result<Diff> {
    Ok(compare(
        from.seq(),
        to.seq(),
        &listing(from)?,
        &listing(to)?,
    ))
}

/// Every path of a snapshot with its inode (directory nodes and inode
/// pages read, no file content).
pub fn listing(view: &SnapshotView) -> Result<BTreeMap<String, Inode>> {
    let mut out = Vec::new();
    walk(view, ROOT_INO, "/", &mut out)?;
    Ok(out.into_iter().collect())
}

/// The difference between two listings ([`listing`]) of snapshots `from`
/// and `to`.
pub fn compare(
    from: u64,
    to: u64,
    a: &BTreeMap<String, Inode>,
    b: &BTreeMap<String, Inode>,
) -> Diff {
    let entry = |p: &String, i: &Inode| Entry {
        path: p.clone(),
        kind: kind(i.file_type()),
        size: if i.file_type() == FileType::Dir {
            0
        } else {
            i.size
        },
        ino: i.ino,
    };
    let mut d = Diff {
        from,
        to,
        ..Diff::default()
    };
    for (p, i) in a {
        match b.get(p) {
            None => d.removed.push(entry(p, i)),
            Some(j) => {
                let what = differences(i, j);
                if !what.is_empty() {
                    d.changed.push(Change {
                        path: p.clone(),
                        kind: kind(j.file_type()),
                        old_size: i.size,
                        new_size: j.size,
                        what,
                        ino: j.ino,
                    });
                }
            }
        }
    }
    for (p, j) in b {
        if !a.contains_key(p) {
            d.added.push(entry(p, j));
        }
    }
    d
}
