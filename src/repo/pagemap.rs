//! The page map: where a snapshot's inode pages are (tree format 2).
//!
//! Format 1 listed every page in the manifest, so each commit rewrote a
//! list that grows with the tree (40 bytes per page). Format 2 keeps the
//! pages in a radix tree over the hexadecimal digits of the page number:
//! a level-0 node names up to 16 pages, a level-`l` node up to 16 nodes of
//! level `l - 1`, and the manifest names the root. A commit re-seals the
//! nodes on the paths to the pages it touched: O(log n) bytes.
//!
//! The shape is a function of the set of pages: the root's level is the
//! lowest that holds the highest page number, empty subtrees are absent,
//! and a root whose only child is digit 0 is replaced by that child.

use crate::repo::Repo;
use crate::seal::tree::{
    self, ObjectId, ObjectKind, PAGE_MAP_FANOUT, PAGE_MAP_MAX_LEVEL, PageMapNode, Pages,
};
use crate::{Error, Result};
use std::collections::BTreeMap;

fn corrupt(id: &ObjectId, detail: &str) -> Error {
    Error::corrupt(format!("page map {}", id.to_hex()), detail)
}

/// The lowest root level whose nodes reach `page_no`.
fn level_for(page_no: u64) -> u8 {
    let bits = 64 - page_no.leading_zeros();
    (bits.saturating_sub(1) / 4) as u8
}

/// The page holding `page_no`, if the snapshot has one.
pub fn get(repo: &Repo, pages: &Pages, page_no: u64) -> Result<Option<ObjectId>> {
    let root = match pages {
        Pages::List(l) => return Ok(l.get(&page_no).copied()),
        Pages::Map(None) => return Ok(None),
        Pages::Map(Some(root)) => *root,
    };
    let mut id = root;
    let mut n = repo.page_map(&id)?;
    if level_for(page_no) > n.level {
        return Ok(None);
    }
    loop {
        let Some(child) = n.children[tree::page_digit(page_no, n.level)] else {
            return Ok(None);
        };
        if n.level == 0 {
            return Ok(Some(child));
        }
        let level = n.level;
        id = child;
        n = repo.page_map(&id)?;
        if n.level + 1 != level {
            return Err(corrupt(&id, "at the wrong level"));
        }
    }
}

/// What [`walk`] reports.
pub enum Item<'a> {
    /// A page-map node.
    Node(&'a ObjectId),
    /// An inode page and its number.
    Page(u64, &'a ObjectId),
}

/// Visits the page map's nodes (parents first) and every page, in page
/// order. Nodes for which `skip` is true are not visited, nor anything
/// below them; pages are all reported (callers skip them as they wish).
/// Checks the shape: levels descend by one, the root is canonical.
pub fn walk(
    repo: &Repo,
    pages: &Pages,
    skip: &dyn Fn(&ObjectId) -> bool,
    f: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<()> {
    let root = match pages {
        Pages::List(l) => {
            for (no, id) in l {
                f(Item::Page(*no, id))?;
            }
            return Ok(());
        }
        Pages::Map(None) => return Ok(()),
        Pages::Map(Some(root)) => *root,
    };
    if skip(&root) {
        return Ok(());
    }
    let n = repo.page_map(&root)?;
    if n.level > 0 && n.children[1..].iter().all(Option::is_none) {
        return Err(corrupt(&root, "a root above its highest page"));
    }
    // (node, its level, the page-number digits above it)
    let mut stack = vec![(root, n.level, 0u64)];
    while let Some((id, level, prefix)) = stack.pop() {
        let n = repo.page_map(&id)?;
        if n.level != level {
            return Err(corrupt(&id, "at the wrong level"));
        }
        f(Item::Node(&id))?;
        let no = |digit: usize| (prefix << 4) | digit as u64;
        if level == 0 {
            for (digit, c) in n.children.iter().enumerate() {
                if let Some(c) = c {
                    f(Item::Page(no(digit), c))?;
                }
            }
        } else {
            // Pushed high digits first: popped in page order.
            for (digit, c) in n.children.iter().enumerate().rev() {
                if let Some(c) = c.filter(|c| !skip(c)) {
                    stack.push((c, level - 1, no(digit)));
                }
            }
        }
    }
    Ok(())
}

/// The snapshot's pages after `changes` (a page number to its new page,
/// `None` to drop it), sealing the page-map nodes on the changed paths. A
/// format-1 list becomes a page map (built once, in full).
pub fn update(
    repo: &Repo,
    base: &Pages,
    changes: &BTreeMap<u64, Option<ObjectId>>,
) -> Result<Pages> {
    let root = match base {
        Pages::List(l) => {
            let mut all = l.clone();
            for (no, c) in changes {
                match c {
                    Some(id) => all.insert(*no, *id),
                    None => all.remove(no),
                };
            }
            let changes = all.into_iter().map(|(no, id)| (no, Some(id))).collect();
            return update(repo, &Pages::Map(None), &changes);
        }
        Pages::Map(root) => *root,
    };
    if changes.is_empty() {
        return Ok(Pages::Map(root));
    }
    let (mut root, mut level) = match root {
        None => (None, 0),
        Some(id) => (Some(id), repo.page_map(&id)?.level),
    };
    let need = changes
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|(no, _)| level_for(*no))
        .max()
        .unwrap_or(0);
    while level < need {
        if let Some(r) = root {
            let mut children = [None; PAGE_MAP_FANOUT];
            children[0] = Some(r);
            root = Some(seal(
                repo,
                PageMapNode {
                    level: level + 1,
                    children,
                },
            )?);
        }
        level += 1;
    }
    // Drops of pages beyond the root's reach change nothing.
    let reach = |no: u64| level_for(no) <= level;
    let cs: Vec<(u64, Option<ObjectId>)> = changes
        .iter()
        .filter(|(no, _)| reach(**no))
        .map(|(no, c)| (*no, *c))
        .collect();
    root = update_node(repo, root, level, &cs)?;
    while let Some(r) = root {
        let n = repo.page_map(&r)?;
        if n.level == 0 || n.children[1..].iter().any(Option::is_some) {
            break;
        }
        root = n.children[0];
    }
    Ok(Pages::Map(root))
}

/// `changes` sorted by page number, all below `node`'s digits.
fn update_node(
    repo: &Repo,
    node: Option<ObjectId>,
    level: u8,
    changes: &[(u64, Option<ObjectId>)],
) -> Result<Option<ObjectId>> {
    if changes.is_empty() {
        return Ok(node);
    }
    debug_assert!(level <= PAGE_MAP_MAX_LEVEL);
    let mut children = match node {
        Some(id) => {
            let n = repo.page_map(&id)?;
            if n.level != level {
                return Err(corrupt(&id, "at the wrong level"));
            }
            n.children
        }
        None => [None; PAGE_MAP_FANOUT],
    };
    let mut rest = changes;
    while let Some((first, _)) = rest.first() {
        let d = tree::page_digit(*first, level);
        let k = rest
            .iter()
            .take_while(|(no, _)| tree::page_digit(*no, level) == d)
            .count();
        let (mine, more) = rest.split_at(k);
        rest = more;
        children[d] = if level == 0 {
            mine.last().expect("one change at least").1
        } else {
            update_node(repo, children[d], level - 1, mine)?
        };
    }
    if children.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(seal(repo, PageMapNode { level, children })?))
}

fn seal(repo: &Repo, n: PageMapNode) -> Result<ObjectId> {
    let encoded = tree::encode_page_map(&n);
    debug_assert_eq!(tree::decode_page_map(&encoded).ok().as_ref(), Some(&n));
    let id = repo.put(ObjectKind::PageMap, &encoded)?;
    repo.cache_page_map(id, n, encoded.len());
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> ObjectId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        ObjectId(b)
    }

    fn listed(repo: &Repo, pages: &Pages) -> BTreeMap<u64, ObjectId> {
        let mut out = BTreeMap::new();
        walk(repo, pages, &|_| false, &mut |item| {
            if let Item::Page(no, id) = item {
                assert!(out.insert(no, *id).is_none(), "page {no} twice");
            }
            Ok(())
        })
        .unwrap();
        out
    }

    /// Page numbers: dense from 0 (real trees), sparse, and near the top
    /// of the range (all 16 digits).
    fn page_no() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, 0..100_000u64, (u64::MAX - 40)..=u64::MAX]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        /// Against a map: every step's lookups and listing agree, and the
        /// incremental result is the very tree built from scratch (the
        /// shape is a function of the pages), and the one a format-1 list
        /// converts to.
        #[test]
        fn page_map_matches_a_map(
            steps in proptest::collection::vec(
                proptest::collection::btree_map(page_no(), proptest::option::of(0..1000u64), 1..40),
                1..12,
            )
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
            let repo = agent.repo();
            let mut model = BTreeMap::new();
            let mut pages = Pages::Map(None);
            // Last, every high page goes: the root must shrink back.
            let mut steps = steps;
            steps.push((300..100_000u64).chain((u64::MAX - 40)..=u64::MAX).map(|no| (no, None)).collect());
            for step in steps {
                let changes: BTreeMap<u64, Option<ObjectId>> =
                    step.iter().map(|(no, v)| (*no, v.map(id))).collect();
                for (no, c) in &changes {
                    match c {
                        Some(i) => model.insert(*no, *i),
                        None => model.remove(no),
                    };
                }
                pages = update(repo, &pages, &changes).unwrap();
                prop_assert_eq!(&listed(repo, &pages), &model);
                for no in step.keys().take(50).chain(model.keys().take(5)) {
                    prop_assert_eq!(get(repo, &pages, *no).unwrap(), model.get(no).copied());
                }
                prop_assert_eq!(get(repo, &pages, 12_345_678).unwrap(), model.get(&12_345_678).copied());
                let all = model.iter().map(|(no, i)| (*no, Some(*i))).collect();
                prop_assert_eq!(&update(repo, &Pages::Map(None), &all).unwrap(), &pages);
                let list = Pages::List(model.clone());
                prop_assert_eq!(&update(repo, &list, &BTreeMap::new()).unwrap(), &pages);
            }
        }
    }

    /// An inode page reached at a number other than its own is refused.
    #[test]
    fn a_page_at_another_number_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let inode = tree::Inode {
            ino: 5,
            perm: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            parent: 0,
            xattrs: BTreeMap::new(),
            content: tree::Content::Symlink(b"t".to_vec()),
        };
        let page = tree::encode_page(0, &BTreeMap::from([(5, inode)]));
        let pid = repo.put(ObjectKind::InodePage, &page).unwrap();
        assert!(repo.page(&pid, 32, 0).is_ok());
        assert!(repo.page(&pid, 32, 1).unwrap_err().is_integrity());
        // Filed under digit 1 of a page map: reading inode 37 (page 1)
        // finds page 0's records, and refuses them.
        let mut children = [None; PAGE_MAP_FANOUT];
        children[1] = Some(pid);
        let pages = Pages::Map(Some(
            seal(repo, PageMapNode { level: 0, children }).unwrap(),
        ));
        let id = get(repo, &pages, 1).unwrap().unwrap();
        assert!(repo.page(&id, 32, 1).unwrap_err().is_integrity());
    }

    /// A node at the wrong level, or a root above its highest page, is an
    /// integrity error for readers (sealed under the agent's key, as a bug
    /// would write it).
    #[test]
    fn malformed_shapes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let leaf = seal(
            repo,
            PageMapNode {
                level: 0,
                children: std::array::from_fn(|d| (d < 3).then(|| id(d as u64))),
            },
        )
        .unwrap();
        let mut children = [None; PAGE_MAP_FANOUT];
        children[0] = Some(leaf);
        let tall = Pages::Map(Some(
            seal(repo, PageMapNode { level: 1, children }).unwrap(),
        ));
        let e = walk(repo, &tall, &|_| false, &mut |_| Ok(())).unwrap_err();
        assert!(e.is_integrity(), "{e}");
        children[1] = Some(leaf);
        let skipped = Pages::Map(Some(
            seal(repo, PageMapNode { level: 2, children }).unwrap(),
        ));
        let e = walk(repo, &skipped, &|_| false, &mut |_| Ok(())).unwrap_err();
        assert!(e.is_integrity(), "{e}");
        assert!(get(repo, &skipped, 0x100).unwrap_err().is_integrity());
    }
}
