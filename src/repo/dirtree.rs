//! Directories of any size: a directory's entries as one directory node,
//! or split by name hash under directory index nodes (tree format 2).
//!
//! The shape is a function of the entries alone ([`tree::dir_is_leaf`]):
//! a part of a directory with at most [`tree::DIR_LEAF_MAX`] entries is
//! one directory node (a leaf); a larger part is an index node whose 16
//! children split it by the next 4-bit digit of each name's hash. Small
//! directories therefore stay one node, exactly as in format 1, and equal
//! directories give equal objects. A commit that changes a few names
//! re-seals the leaves holding them and the index nodes above those
//! leaves: O(log n) bytes in the directory's size, not O(n). Lookups walk
//! one path; listings read every leaf.
//!
//! Directories written by format 1 are one node whatever their size; they
//! are read as they are and split by their first commit here.

use crate::repo::Repo;
use crate::seal::tree::{
    self, DIR_FANOUT, DirChild, DirEntry, DirIndex, DirRef, Entries, ObjRef, ObjectKind,
};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

fn corrupt(r: &ObjRef, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("directory index {}", r.id.to_hex()), detail)
}

/// Number of entries in a directory.
pub fn count(repo: &Repo, root: Option<&DirRef>) -> Result<u64> {
    Ok(match root {
        None => 0,
        Some(DirRef::Leaf(id)) => repo.dir(id)?.len() as u64,
        Some(DirRef::Index(id)) => repo.dir_index(id)?.count(),
    })
}

/// Looks up one name: reads the nodes on one path.
pub fn lookup(repo: &Repo, root: Option<&DirRef>, name: &[u8]) -> Result<Option<DirEntry>> {
    let Some(mut node) = root.copied() else {
        return Ok(None);
    };
    let hash = repo.keys().dir_name_hash(name);
    let mut depth = 0u8;
    // The count the parent gave the node (none for the directory's own).
    let mut want = None;
    loop {
        match node {
            DirRef::Leaf(id) => {
                let e = repo.dir(&id)?;
                if want.is_some_and(|w| w != e.len() as u64) {
                    return Err(corrupt(&id, "leaf count differs from its parent's"));
                }
                return Ok(e.get(name).copied());
            }
            DirRef::Index(id) => {
                let n = repo.dir_index(&id)?;
                if n.depth != depth || want.is_some_and(|w| w != n.count()) {
                    return Err(corrupt(&id, "at the wrong depth, or miscounted"));
                }
                match n.children[tree::dir_digit(&hash, depth)] {
                    None => return Ok(None),
                    Some(c) => {
                        node = c.node;
                        want = Some(c.count);
                    }
                }
                depth += 1;
            }
        }
    }
}

/// All entries of a directory, sorted by name. Checks that every entry
/// sits where its name hash places it and that the counts agree.
pub fn entries(repo: &Repo, root: Option<&DirRef>) -> Result<Arc<Entries>> {
    match root {
        None => Ok(Arc::new(Entries::new())),
        Some(DirRef::Leaf(id)) => repo.dir(id),
        Some(r @ DirRef::Index(_)) => {
            let mut out = Entries::new();
            collect(repo, r, 0, Vec::new(), &mut out)?;
            Ok(Arc::new(out))
        }
    }
}

/// Adds the entries below `node`, which sits at `depth` under `path`.
fn collect(
    repo: &Repo,
    node: &DirRef,
    depth: u8,
    path: Vec<usize>,
    out: &mut Entries,
) -> Result<()> {
    walk_nodes(repo, node, depth, path, &|_| false, &mut |_, leaf| {
        if let Some(e) = leaf {
            out.extend(e.iter().map(|(k, v)| (k.clone(), *v)));
        }
        Ok(())
    })
}

/// Visits every object of a directory, parents before children, with the
/// same checks as [`entries`]. Objects for which `skip` is true are not
/// visited, nor anything below them.
pub fn walk(
    repo: &Repo,
    root: &DirRef,
    skip: &dyn Fn(&ObjRef) -> bool,
    visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
) -> Result<()> {
    walk_nodes(repo, root, 0, Vec::new(), skip, &mut |r, _| {
        visit(r.kind(), r.obj())
    })
}

/// The walk behind [`entries`] and [`walk`], from `root` at `depth` under
/// the hash digits `path`: `f` gets each node, and a leaf's entries.
fn walk_nodes(
    repo: &Repo,
    root: &DirRef,
    depth: u8,
    path: Vec<usize>,
    skip: &dyn Fn(&ObjRef) -> bool,
    f: &mut dyn FnMut(&DirRef, Option<&Entries>) -> Result<()>,
) -> Result<()> {
    if skip(root.obj()) {
        return Ok(());
    }
    match root {
        // A directory that is one node (format 1 wrote any size so).
        DirRef::Leaf(id) if depth == 0 => f(root, Some(&*repo.dir(id)?)),
        _ => {
            // (node, depth, digits of the path, the count its parent gave)
            let mut stack = vec![(*root, depth, path, None::<u64>)];
            while let Some((node, depth, path, want)) = stack.pop() {
                match node {
                    DirRef::Leaf(id) => {
                        let e = repo.dir(&id)?;
                        if want.is_some_and(|w| w != e.len() as u64) {
                            return Err(corrupt(&id, "leaf count differs from its parent's"));
                        }
                        for name in e.keys() {
                            let h = repo.keys().dir_name_hash(name);
                            let placed = path
                                .iter()
                                .enumerate()
                                .all(|(d, digit)| tree::dir_digit(&h, d as u8) == *digit);
                            if !placed {
                                return Err(corrupt(&id, "an entry outside its hash range"));
                            }
                        }
                        f(&node, Some(&e))?;
                    }
                    DirRef::Index(id) => {
                        let n = repo.dir_index(&id)?;
                        if n.depth != depth {
                            return Err(corrupt(&id, "at the wrong depth"));
                        }
                        if want.is_some_and(|w| w != n.count()) {
                            return Err(corrupt(&id, "count differs from its parent's"));
                        }
                        f(&node, None)?;
                        for (digit, c) in n.children.iter().enumerate().rev() {
                            let Some(c) = c else { continue };
                            if skip(c.node.obj()) {
                                continue;
                            }
                            let mut p = path.clone();
                            p.push(digit);
                            stack.push((c.node, depth + 1, p, Some(c.count)));
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// Counts come from sealed nodes: one that no directory can have is an
/// integrity error, never an overflow.
fn signed(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::corrupt("directory", "entry count out of range"))
}

fn unsigned(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::corrupt("directory", "entry count below zero"))
}

/// One changed name, with its hash and what it does to the count.
struct Change<'a> {
    hash: [u8; 32],
    name: &'a [u8],
    new: Option<DirEntry>,
    delta: i64,
}

/// What a node is built from: the base's node at this place, or the base
/// entries that fall here (when the base held them in a larger leaf).
enum Base {
    Node(DirRef),
    Entries(Entries),
}

/// Applies `changes` (a name to its new entry, `None` to remove it) to
/// the directory `base` and seals the result: only the leaves holding a
/// changed name and the index nodes above them are written, at home
/// `home` (the snapshot being built). Returns the new root (`None` when
/// the directory is empty).
pub fn update(
    repo: &Repo,
    base: Option<&DirRef>,
    changes: &BTreeMap<Vec<u8>, Option<DirEntry>>,
    home: u64,
) -> Result<Option<DirRef>> {
    let mut total = signed(count(repo, base)?)?;
    let mut cs = Vec::new();
    for (name, new) in changes {
        let old = lookup(repo, base, name)?;
        if old == *new {
            continue;
        }
        let delta = i64::from(new.is_some()) - i64::from(old.is_some());
        total += delta;
        cs.push(Change {
            hash: repo.keys().dir_name_hash(name),
            name,
            new: *new,
            delta,
        });
    }
    if cs.is_empty() {
        return Ok(base.copied());
    }
    cs.sort_by_key(|c| c.hash);
    let b = match base {
        None => Base::Entries(Entries::new()),
        Some(r) => Base::Node(*r),
    };
    build(repo, 0, b, &cs, unsigned(total)?, home)
}

fn build(
    repo: &Repo,
    depth: u8,
    base: Base,
    cs: &[Change<'_>],
    count: u64,
    home: u64,
) -> Result<Option<DirRef>> {
    if count == 0 {
        return Ok(None);
    }
    if let (Base::Node(r), true) = (&base, cs.is_empty()) {
        return Ok(Some(*r));
    }
    if tree::dir_is_leaf(count, depth) {
        let mut e = match base {
            Base::Entries(e) => e,
            Base::Node(DirRef::Leaf(id)) => (*repo.dir(&id)?).clone(),
            Base::Node(r @ DirRef::Index(_)) => {
                // Every change here shares the node's hash digits.
                let path = (0..depth)
                    .map(|d| tree::dir_digit(&cs[0].hash, d))
                    .collect();
                let mut e = Entries::new();
                collect(repo, &r, depth, path, &mut e)?;
                e
            }
        };
        for c in cs {
            match c.new {
                Some(n) => e.insert(c.name.to_vec(), n),
                None => e.remove(c.name),
            };
        }
        if e.len() as u64 != count {
            return Err(Error::corrupt(
                "directory",
                "entry count differs from the index's",
            ));
        }
        let encoded = tree::encode_dir(&e);
        debug_assert_eq!(tree::decode_dir(&encoded).ok().as_ref(), Some(&e));
        let r = repo.put_meta(ObjectKind::DirNode, &encoded, home)?;
        repo.cache_dir(r.id, e);
        return Ok(Some(DirRef::Leaf(r)));
    }
    let (bases, counts) = split(repo, base, depth)?;
    let mut children = [None; DIR_FANOUT];
    let mut rest = cs;
    for (digit, (b, n)) in bases.into_iter().zip(counts).enumerate() {
        let k = rest
            .iter()
            .take_while(|c| tree::dir_digit(&c.hash, depth) == digit)
            .count();
        let (mine, more) = rest.split_at(k);
        rest = more;
        let n = unsigned(mine.iter().fold(signed(n)?, |a, c| a + c.delta))?;
        children[digit] =
            build(repo, depth + 1, b, mine, n, home)?.map(|node| DirChild { node, count: n });
    }
    let node = DirIndex { depth, children };
    let encoded = tree::encode_dir_index(&node);
    debug_assert_eq!(tree::decode_dir_index(&encoded).ok().as_ref(), Some(&node));
    let r = repo.put_meta(ObjectKind::DirIndex, &encoded, home)?;
    repo.cache_dir_index(r.id, node);
    Ok(Some(DirRef::Index(r)))
}

/// The base of each child of a node at `depth`, and its entry count.
fn split(repo: &Repo, base: Base, depth: u8) -> Result<([Base; DIR_FANOUT], [u64; DIR_FANOUT])> {
    let mut counts = [0u64; DIR_FANOUT];
    let entries = match base {
        Base::Node(DirRef::Index(id)) => {
            let n = repo.dir_index(&id)?;
            if n.depth != depth {
                return Err(corrupt(&id, "at the wrong depth"));
            }
            let bases = std::array::from_fn(|d| match n.children[d] {
                Some(c) => {
                    counts[d] = c.count;
                    Base::Node(c.node)
                }
                None => Base::Entries(Entries::new()),
            });
            return Ok((bases, counts));
        }
        Base::Node(DirRef::Leaf(id)) => (*repo.dir(&id)?).clone(),
        Base::Entries(e) => e,
    };
    let mut parts: [Entries; DIR_FANOUT] = std::array::from_fn(|_| Entries::new());
    for (name, e) in entries {
        let d = tree::dir_digit(&repo.keys().dir_name_hash(&name), depth);
        parts[d].insert(name, e);
    }
    for (c, p) in counts.iter_mut().zip(&parts) {
        *c = p.len() as u64;
    }
    Ok((parts.map(Base::Entries), counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::tree::FileType;

    fn entry(ino: u64) -> Option<DirEntry> {
        Some(DirEntry {
            ino,
            file_type: FileType::File,
        })
    }

    /// Shapes that a correct writer never makes, sealed under the agent's
    /// own key (as a bug would write them), are refused by every reader:
    /// wrong depth, an entry outside its hash range, counts that differ.
    #[test]
    fn malformed_shapes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let changes: BTreeMap<Vec<u8>, Option<DirEntry>> = (0..200u64)
            .map(|k| (format!("n{k}").into_bytes(), entry(k + 10)))
            .collect();
        let root = update(repo, None, &changes, 1).unwrap().unwrap();
        let DirRef::Index(rid) = root else {
            panic!("200 entries make an index node")
        };
        assert_eq!(entries(repo, Some(&root)).unwrap().len(), 200);
        let good = repo.dir_index(&rid).unwrap();
        let seal = |n: &DirIndex| {
            let r = repo
                .put_meta(ObjectKind::DirIndex, &tree::encode_dir_index(n), 1)
                .unwrap();
            DirRef::Index(r)
        };
        let refused = |r: DirRef| {
            let e = entries(repo, Some(&r)).unwrap_err();
            assert!(e.is_integrity(), "{e}");
            let mut walked = Ok(());
            if let Err(e) = walk(repo, &r, &|_| false, &mut |_, _| Ok(())) {
                walked = Err(e);
            }
            assert!(walked.is_err());
        };
        // The same children, claimed at depth 1.
        refused(seal(&DirIndex {
            depth: 1,
            ..(*good).clone()
        }));
        // Two children swapped: every entry outside its hash range.
        let mut swapped = (*good).clone();
        let (a, b) = (
            swapped.children.iter().position(Option::is_some).unwrap(),
            swapped.children.iter().rposition(Option::is_some).unwrap(),
        );
        swapped.children.swap(a, b);
        refused(seal(&swapped));
        // A count that does not match its child: listings, walks and the
        // lookups that pass through it refuse it.
        let mut miscounted = (*good).clone();
        let c = miscounted.children[a].as_mut().unwrap();
        c.count += 1;
        let bad = seal(&miscounted);
        refused(bad);
        let through = changes
            .keys()
            .find(|n| tree::dir_digit(&repo.keys().dir_name_hash(n), 0) == a)
            .unwrap();
        assert!(
            lookup(repo, Some(&bad), through)
                .unwrap_err()
                .is_integrity()
        );
        // Counts no directory can have: an error, not an overflow.
        let mut huge = (*good).clone();
        huge.children[a].as_mut().unwrap().count = u64::MAX / 2 + 7;
        let huge = seal(&huge);
        let one = BTreeMap::from([(b"x".to_vec(), entry(1))]);
        assert!(
            update(repo, Some(&huge), &one, 1)
                .unwrap_err()
                .is_integrity()
        );
    }
}
