//! The page map: where a snapshot's inode pages are (tree formats 2 and 3).
//!
//! Format 1 listed every page in the manifest, so each commit rewrote a
//! list that grows with the tree (40 bytes per page). Format 2 keeps the
//! pages in a radix tree over the hexadecimal digits of the page number:
//! a level-0 node names up to 16 pages, a level-`l` node up to 16 nodes of
//! level `l - 1`, and the manifest names the root. A commit re-seals the
//! nodes on the paths to the pages it touched: O(log n) bytes. Format 3
//! adds, per child, the number of inodes below it, so that a writer finds
//! the lowest page with a free inode number in O(log n) node reads
//! ([`first_open_page`]) and reuses numbers instead of spreading a
//! churning tree over ever more pages.
//!
//! The shape is a function of the set of pages: the root's level is the
//! lowest that holds the highest page number, empty subtrees are absent,
//! and a root whose only child is digit 0 is replaced by that child.
//! Readers check levels, the root's shape, and (format 3) each count
//! against the node below it on every path they read (a walk does not
//! read the children it is told to skip); a page's count is checked by
//! whoever reads the page ([`get`], [`Item::Page`]). Counts only guide a
//! writer to pages with room: it reads the page before it hands out a
//! number, so a wrong count can cost a free number, never reuse a live one.

use crate::repo::Repo;
use crate::seal::tree::{
    self, ObjRef, ObjectKind, PAGE_MAP_FANOUT, PAGE_MAP_MAX_LEVEL, PageMapNode, Pages,
};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A page's new state in [`update`]: its object and the inodes it holds
/// (at least 1), or `None` to drop it.
pub type PageChange = Option<(ObjRef, u64)>;

fn corrupt(r: &ObjRef, detail: &str) -> Error {
    Error::corrupt(format!("page map {}", r.id.to_hex()), detail)
}

/// The lowest root level whose nodes reach `page_no`.
fn level_for(page_no: u64) -> u8 {
    let bits = 64 - page_no.leading_zeros();
    (bits.saturating_sub(1) / 4) as u8
}

/// Node `id`, which must be at `level` and count inodes iff `counted`.
fn node(repo: &Repo, id: &ObjRef, level: u8, counted: bool) -> Result<Arc<PageMapNode>> {
    checked(id, repo.page_map(id)?, level, counted)
}

fn checked(id: &ObjRef, n: Arc<PageMapNode>, level: u8, counted: bool) -> Result<Arc<PageMapNode>> {
    if n.level != level {
        return Err(corrupt(id, "at the wrong level"));
    }
    if n.counts.is_some() != counted {
        return Err(corrupt(
            id,
            "counts inodes where its tree format does not, or the reverse",
        ));
    }
    Ok(n)
}

/// The root node of a page map, checked for its shape.
fn root_node(repo: &Repo, id: &ObjRef, counted: bool) -> Result<Arc<PageMapNode>> {
    let n = repo.page_map(id)?;
    let n = checked(id, n.clone(), n.level, counted)?;
    if n.level > 0 && n.children[1..].iter().all(Option::is_none) {
        return Err(corrupt(id, "a root above its highest page"));
    }
    Ok(n)
}

/// Checks that child `c` of `parent` (digit `d`) holds the inodes its
/// parent counts for it.
fn check_count(parent: &PageMapNode, d: usize, c: &ObjRef, child: &PageMapNode) -> Result<()> {
    match (parent.counts, child.total()) {
        (Some(counts), Some(total)) if counts[d] != total => Err(corrupt(
            c,
            "holds another number of inodes than its parent counts",
        )),
        _ => Ok(()),
    }
}

/// The page holding `page_no`, if the snapshot has one, and (tree format
/// 3) the inodes its page-map node counts in it: a reader of the page must
/// check that count.
pub fn get(repo: &Repo, pages: &Pages, page_no: u64) -> Result<Option<(ObjRef, Option<u64>)>> {
    let (root, counted) = match pages {
        Pages::List(l) => return Ok(l.get(&page_no).map(|id| (ObjRef::by_id(*id), None))),
        Pages::Map(None) | Pages::Counted(None) => return Ok(None),
        Pages::Map(Some(root)) => (*root, false),
        Pages::Counted(Some(root)) => (*root, true),
    };
    let mut n = root_node(repo, &root, counted)?;
    if level_for(page_no) > n.level {
        return Ok(None);
    }
    loop {
        let d = tree::page_digit(page_no, n.level);
        let Some(child) = n.children[d] else {
            return Ok(None);
        };
        if n.level == 0 {
            return Ok(Some((child, n.counts.map(|c| c[d]))));
        }
        let next = node(repo, &child, n.level - 1, counted)?;
        check_count(&n, d, &child, &next)?;
        n = next;
    }
}

/// What [`walk`] reports.
pub enum Item {
    /// A page-map node.
    Node(ObjRef),
    /// An inode page, its number, and (tree format 3) the inodes its
    /// parent counts in it: a reader of the page must check that count.
    Page(u64, ObjRef, Option<u64>),
}

/// Visits the page map's nodes (parents first) and every page, in page
/// order. Nodes for which `skip` is true are not visited, nor anything
/// below them; pages are all reported (callers skip them as they wish).
/// Checks the shape: levels descend by one, the root is canonical, counts
/// add up.
pub fn walk(
    repo: &Repo,
    pages: &Pages,
    skip: &dyn Fn(&ObjRef) -> bool,
    f: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let (root, counted) = match pages {
        Pages::List(l) => {
            for (no, id) in l {
                f(Item::Page(*no, ObjRef::by_id(*id), None))?;
            }
            return Ok(());
        }
        Pages::Map(None) | Pages::Counted(None) => return Ok(()),
        Pages::Map(Some(root)) => (*root, false),
        Pages::Counted(Some(root)) => (*root, true),
    };
    if skip(&root) {
        return Ok(());
    }
    let n = root_node(repo, &root, counted)?;
    // (node, its level, the page-number digits above it, its count)
    let mut stack = vec![(root, n.level, 0u64, n.total())];
    while let Some((id, level, prefix, want)) = stack.pop() {
        let n = node(repo, &id, level, counted)?;
        if want.is_some() && n.total() != want {
            return Err(corrupt(
                &id,
                "holds another number of inodes than its parent counts",
            ));
        }
        f(Item::Node(id))?;
        let no = |digit: usize| (prefix << 4) | digit as u64;
        let count = |digit: usize| n.counts.map(|c| c[digit]);
        if level == 0 {
            for (digit, c) in n.children.iter().enumerate() {
                if let Some(c) = c {
                    f(Item::Page(no(digit), *c, count(digit)))?;
                }
            }
        } else {
            // Pushed high digits first: popped in page order.
            for (digit, c) in n.children.iter().enumerate().rev() {
                if let Some(c) = c.filter(|c| !skip(c)) {
                    stack.push((c, level - 1, no(digit), count(digit)));
                }
            }
        }
    }
    Ok(())
}

/// The snapshot's pages after `changes` (a page number to its new page
/// and count, `None` to drop it), sealing the page-map nodes on the
/// changed paths at home `home` (the snapshot being built). The result
/// always counts inodes (tree format 3): a format-1 list or a format-2 map
/// is rebuilt in full once, reading each page (`inodes_per_page` of the
/// snapshot) to count its inodes.
pub fn update(
    repo: &Repo,
    base: &Pages,
    inodes_per_page: u32,
    changes: &BTreeMap<u64, PageChange>,
    home: u64,
) -> Result<Pages> {
    let root = match base {
        Pages::Counted(root) => *root,
        Pages::List(_) | Pages::Map(_) => {
            let mut all: BTreeMap<u64, PageChange> = BTreeMap::new();
            walk(repo, base, &|_| false, &mut |item| {
                if let Item::Page(no, id, _) = item
                    && !changes.contains_key(&no)
                {
                    let n = repo.page(&id, inodes_per_page, no)?.len() as u64;
                    all.insert(no, Some((id, n)));
                }
                Ok(())
            })?;
            all.extend(
                changes
                    .iter()
                    .filter(|(_, c)| c.is_some())
                    .map(|(k, v)| (*k, *v)),
            );
            return update(repo, &Pages::Counted(None), inodes_per_page, &all, home);
        }
    };
    if changes.is_empty() {
        return Ok(Pages::Counted(root));
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
            let below = node(repo, &r, level, true)?;
            let mut children = [None; PAGE_MAP_FANOUT];
            let mut counts = [0; PAGE_MAP_FANOUT];
            children[0] = Some(r);
            counts[0] = below.total().unwrap_or(0);
            root = Some(seal(
                repo,
                PageMapNode {
                    level: level + 1,
                    children,
                    counts: Some(counts),
                },
                home,
            )?);
        }
        level += 1;
    }
    // Drops of pages beyond the root's reach change nothing.
    let reach = |no: u64| level_for(no) <= level;
    let cs: Vec<(u64, PageChange)> = changes
        .iter()
        .filter(|(no, _)| reach(**no))
        .map(|(no, c)| (*no, *c))
        .collect();
    let mut root = update_node(repo, root, level, &cs, home)?.map(|(id, _)| id);
    while let Some(r) = root {
        let n = repo.page_map(&r)?;
        if n.level == 0 || n.children[1..].iter().any(Option::is_some) {
            break;
        }
        root = n.children[0];
    }
    Ok(Pages::Counted(root))
}

/// `changes` sorted by page number, all below `node`'s digits. Returns the
/// new node and the inodes below it.
fn update_node(
    repo: &Repo,
    node_id: Option<ObjRef>,
    level: u8,
    changes: &[(u64, PageChange)],
    home: u64,
) -> Result<Option<(ObjRef, u64)>> {
    debug_assert!(level <= PAGE_MAP_MAX_LEVEL);
    let (mut children, mut counts) = match node_id {
        Some(id) => {
            let n = node(repo, &id, level, true)?;
            if changes.is_empty() {
                return Ok(Some((id, n.total().unwrap_or(0))));
            }
            (n.children, n.counts.unwrap_or([0; PAGE_MAP_FANOUT]))
        }
        None if changes.is_empty() => return Ok(None),
        None => ([None; PAGE_MAP_FANOUT], [0; PAGE_MAP_FANOUT]),
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
        let new = if level == 0 {
            mine.last().expect("one change at least").1
        } else {
            update_node(repo, children[d], level - 1, mine, home)?
        };
        debug_assert!(new.is_none_or(|(_, n)| n > 0), "a page without inodes");
        children[d] = new.map(|(id, _)| id);
        counts[d] = new.map_or(0, |(_, n)| n);
    }
    if children.iter().all(Option::is_none) {
        return Ok(None);
    }
    let n = PageMapNode {
        level,
        children,
        counts: Some(counts),
    };
    let total = n.total().unwrap_or(0);
    Ok(Some((seal(repo, n, home)?, total)))
}

fn seal(repo: &Repo, n: PageMapNode, home: u64) -> Result<ObjRef> {
    let encoded = tree::encode_page_map(&n);
    debug_assert_eq!(tree::decode_page_map(&encoded).ok().as_ref(), Some(&n));
    let r = repo.put_meta(ObjectKind::PageMap, &encoded, home)?;
    repo.cache_page_map(r.id, n);
    Ok(r)
}

/// The lowest page number in `from..=limit` holding fewer inodes than it
/// has numbers (`inodes_per_page`, one less for page 0: inode 0 is never
/// used), absent pages included; O(log n) node reads. `None` when there is
/// none, and for a page map that does not count (tree formats 1 and 2,
/// until their first commit converts them).
pub fn first_open_page(
    repo: &Repo,
    pages: &Pages,
    inodes_per_page: u32,
    from: u64,
    limit: u64,
) -> Result<Option<u64>> {
    if from > limit {
        return Ok(None);
    }
    let root = match pages {
        Pages::Counted(None) => return Ok(Some(from)),
        Pages::Counted(Some(root)) => *root,
        Pages::List(_) | Pages::Map(_) => return Ok(None),
    };
    let n = root_node(repo, &root, true)?;
    let ipp = u128::from(inodes_per_page);
    let found = open_below(repo, &n, 0, ipp, from, limit)?;
    // Pages beyond the root's reach are absent: free.
    let beyond = 16u128.pow(u32::from(n.level) + 1);
    Ok(found.or_else(|| {
        let p = u128::from(from).max(beyond);
        (p <= u128::from(limit)).then_some(p as u64)
    }))
}

/// [`first_open_page`] below node `n`, whose first page is `base`.
fn open_below(
    repo: &Repo,
    n: &PageMapNode,
    base: u128,
    ipp: u128,
    from: u64,
    limit: u64,
) -> Result<Option<u64>> {
    let (from, limit) = (u128::from(from), u128::from(limit));
    let span = 16u128.pow(u32::from(n.level));
    let counts = n.counts.unwrap_or([0; PAGE_MAP_FANOUT]);
    for (d, c) in n.children.iter().enumerate() {
        let lo = base + d as u128 * span;
        let hi = lo + span - 1;
        if hi < from {
            continue;
        }
        if lo > limit {
            break;
        }
        let Some(c) = c else {
            return Ok(Some(lo.max(from) as u64));
        };
        let numbers = span * ipp - u128::from(lo == 0);
        if u128::from(counts[d]) >= numbers {
            continue;
        }
        if n.level == 0 {
            return Ok(Some(lo as u64));
        }
        let child = node(repo, c, n.level - 1, true)?;
        check_count(n, d, c, &child)?;
        if let Some(p) = open_below(repo, &child, lo, ipp, from as u64, limit as u64)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::seal::tree::ObjectId;

    /// The home of every object these tests seal.
    const HOME: u64 = 1;

    fn id(n: u64) -> ObjRef {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        ObjRef::by_id(ObjectId(b))
    }

    fn listed(repo: &Repo, pages: &Pages) -> BTreeMap<u64, (ObjRef, Option<u64>)> {
        let mut out = BTreeMap::new();
        walk(repo, pages, &|_| false, &mut |item| {
            if let Item::Page(no, id, n) = item {
                assert!(out.insert(no, (id, n)).is_none(), "page {no} twice");
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

    /// The first page in `from..=limit` with a free number, by brute force
    /// over the model (pages of 32).
    fn open_in_model(model: &BTreeMap<u64, (ObjRef, u64)>, from: u64, limit: u64) -> Option<u64> {
        (from..=limit).find(|p| {
            model
                .get(p)
                .is_none_or(|(_, n)| *n < 32 - u64::from(*p == 0))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        /// Against a map: every step's lookups, listing (with counts) and
        /// open-page searches agree, and the incremental result is the very
        /// tree built from scratch (the shape is a function of the pages).
        #[test]
        fn page_map_matches_a_map(
            steps in proptest::collection::vec(
                proptest::collection::btree_map(
                    page_no(),
                    proptest::option::of((0..1000u64, prop_oneof![Just(32u64), Just(31u64), 1..=32u64])),
                    1..40,
                ),
                1..12,
            ),
            searches in proptest::collection::vec((0..400u64, 0..64u64), 4),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
            let repo = agent.repo();
            let mut model = BTreeMap::new();
            let mut pages = Pages::Counted(None);
            // Last, every high page goes: the root must shrink back.
            let mut steps = steps;
            steps.push((300..100_000u64).chain((u64::MAX - 40)..=u64::MAX).map(|no| (no, None)).collect());
            for step in steps {
                let changes: BTreeMap<u64, PageChange> =
                    step.iter().map(|(no, v)| (*no, v.map(|(i, n)| (id(i), n)))).collect();
                for (no, c) in &changes {
                    match c {
                        Some(c) => model.insert(*no, *c),
                        None => model.remove(no),
                    };
                }
                pages = update(repo, &pages, 32, &changes, HOME).unwrap();
                let want: BTreeMap<_, _> = model.iter().map(|(no, (i, n))| (*no, (*i, Some(*n)))).collect();
                prop_assert_eq!(&listed(repo, &pages), &want);
                for no in step.keys().take(50).chain(model.keys().take(5)) {
                    prop_assert_eq!(get(repo, &pages, *no).unwrap(), model.get(no).map(|c| (c.0, Some(c.1))));
                }
                prop_assert_eq!(get(repo, &pages, 12_345_678).unwrap(), model.get(&12_345_678).map(|c| (c.0, Some(c.1))));
                let all = model.iter().map(|(no, c)| (*no, Some(*c))).collect();
                prop_assert_eq!(&update(repo, &Pages::Counted(None), 32, &all, HOME).unwrap(), &pages);
                for (from, len) in &searches {
                    let limit = from + len;
                    prop_assert_eq!(
                        first_open_page(repo, &pages, 32, *from, limit).unwrap(),
                        open_in_model(&model, *from, limit),
                        "open page in {}..={}", from, limit
                    );
                }
            }
        }
    }

    fn symlink(ino: u64) -> tree::Inode {
        tree::Inode {
            ino,
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
        }
    }

    fn real_page(repo: &Repo, page_no: u64, inos: &[u64]) -> ObjRef {
        let recs = inos.iter().map(|i| (*i, symlink(*i))).collect();
        repo.put_meta(
            ObjectKind::InodePage,
            &tree::encode_page(page_no, &recs),
            HOME,
        )
        .unwrap()
    }

    /// A format-1 list and a format-2 map become the counted map their
    /// pages make, counts read from the pages themselves.
    #[test]
    fn older_formats_convert_to_counted_maps() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        // Formats 1 and 2 find their pages by id.
        let by_id = |r: ObjRef| ObjRef::by_id(r.id);
        let p0 = by_id(real_page(repo, 0, &[1, 2, 3]));
        let p1 = by_id(real_page(repo, 1, &[40]));
        let p2 = by_id(real_page(repo, 2, &[64, 65]));
        let want = update(
            repo,
            &Pages::Counted(None),
            32,
            &BTreeMap::from([(0, Some((p0, 3))), (1, Some((p1, 1))), (2, Some((p2, 2)))]),
            HOME,
        )
        .unwrap();
        let list = Pages::List(BTreeMap::from([(0, p0.id), (1, p1.id), (2, p2.id)]));
        assert_eq!(
            update(repo, &list, 32, &BTreeMap::new(), HOME).unwrap(),
            want
        );
        let mut children = [None; PAGE_MAP_FANOUT];
        children[..3].copy_from_slice(&[Some(p0), Some(p1), Some(p2)]);
        let map = Pages::Map(Some(
            seal(
                repo,
                PageMapNode {
                    level: 0,
                    children,
                    counts: None,
                },
                HOME,
            )
            .unwrap(),
        ));
        assert_eq!(
            update(repo, &map, 32, &BTreeMap::new(), HOME).unwrap(),
            want
        );
        // A change rides along with the conversion.
        let p3 = real_page(repo, 3, &[100]);
        let got = update(
            repo,
            &map,
            32,
            &BTreeMap::from([(1, None), (3, Some((p3, 1)))]),
            HOME,
        )
        .unwrap();
        let mut m = listed(repo, &got);
        assert_eq!(m.remove(&3), Some((p3, Some(1))));
        assert_eq!(m.remove(&0), Some((p0, Some(3))));
        assert_eq!(m.remove(&2), Some((p2, Some(2))));
        assert!(m.is_empty());
        assert_eq!(first_open_page(repo, &got, 32, 0, 10).unwrap(), Some(0));
        assert_eq!(
            first_open_page(repo, &map, 32, 0, 10).unwrap(),
            None,
            "format 2 does not count"
        );
    }

    /// An inode page reached at a number other than its own is refused.
    #[test]
    fn a_page_at_another_number_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let pid = real_page(repo, 0, &[5]);
        assert!(repo.page(&pid, 32, 0).is_ok());
        assert!(repo.page(&pid, 32, 1).unwrap_err().is_integrity());
        // Filed under digit 1 of a page map: reading inode 37 (page 1)
        // finds page 0's records, and refuses them.
        let pages = update(
            repo,
            &Pages::Counted(None),
            32,
            &BTreeMap::from([(1, Some((pid, 1)))]),
            HOME,
        )
        .unwrap();
        let (id, _) = get(repo, &pages, 1).unwrap().unwrap();
        assert!(repo.page(&id, 32, 1).unwrap_err().is_integrity());
    }

    /// A page holding another number of inodes than its page-map node
    /// counts in it is refused by whoever reads it: a lookup of an inode
    /// and a walk over the snapshot's objects.
    #[test]
    fn a_page_that_is_not_its_count_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let pid = real_page(repo, 0, &[1, 2]);
        let view = |count: u64| {
            let pages = update(
                repo,
                &Pages::Counted(None),
                32,
                &BTreeMap::from([(0, Some((pid, count)))]),
                HOME,
            )
            .unwrap();
            crate::repo::view::SnapshotView::new(
                repo.clone(),
                [0; 32],
                tree::Manifest {
                    format: tree::FORMAT_VERSION,
                    agent_id: repo.keys().agent_id(),
                    seq: 1,
                    parent: [0; 32],
                    timestamp_ms: 0,
                    chunk_size: tree::CHUNK_SIZE,
                    inodes_per_page: 32,
                    next_ino: 3,
                    pages,
                    provenance: None,
                    delta: None,
                },
            )
        };
        assert_eq!(view(2).inode(2).unwrap().unwrap().ino, 2);
        assert_eq!(view(2).inode_numbers().unwrap().len(), 2);
        let lying = view(3);
        assert!(lying.inode(2).unwrap_err().is_integrity());
        assert!(lying.inode_numbers().unwrap_err().is_integrity());
        let e = lying
            .walk_objects(&|_| false, &mut |_, _| Ok(()))
            .unwrap_err();
        assert!(e.is_integrity(), "{e}");
    }

    /// A node at the wrong level, a root above its highest page, a count
    /// that is not the sum below it, or a node counting where its tree
    /// format does not (or the reverse) is an integrity error for readers
    /// (sealed under the agent's key, as a bug would write it).
    #[test]
    fn malformed_shapes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let leaf = |counts: Option<[u64; PAGE_MAP_FANOUT]>| {
            seal(
                repo,
                PageMapNode {
                    level: 0,
                    children: std::array::from_fn(|d| (d < 3).then(|| id(d as u64))),
                    counts,
                },
                HOME,
            )
            .unwrap()
        };
        let plain = leaf(None);
        let mut children = [None; PAGE_MAP_FANOUT];
        children[0] = Some(plain);
        let tall = Pages::Map(Some(
            seal(
                repo,
                PageMapNode {
                    level: 1,
                    children,
                    counts: None,
                },
                HOME,
            )
            .unwrap(),
        ));
        let e = walk(repo, &tall, &|_| false, &mut |_| Ok(())).unwrap_err();
        assert!(e.is_integrity(), "{e}");
        children[1] = Some(plain);
        let skipped = Pages::Map(Some(
            seal(
                repo,
                PageMapNode {
                    level: 2,
                    children,
                    counts: None,
                },
                HOME,
            )
            .unwrap(),
        ));
        let e = walk(repo, &skipped, &|_| false, &mut |_| Ok(())).unwrap_err();
        assert!(e.is_integrity(), "{e}");
        assert!(get(repo, &skipped, 0x100).unwrap_err().is_integrity());

        // Counts: each leaf holds 3 + 3 + 3 = 9 inodes.
        let counted = leaf(Some(std::array::from_fn(|d| if d < 3 { 3 } else { 0 })));
        let two = |c0: u64, child: ObjRef, counts: bool| {
            let mut children = [None; PAGE_MAP_FANOUT];
            children[0] = Some(child);
            children[1] = Some(child);
            let mut n = [0; PAGE_MAP_FANOUT];
            n[0] = c0;
            n[1] = 9;
            seal(
                repo,
                PageMapNode {
                    level: 1,
                    children,
                    counts: counts.then_some(n),
                },
                HOME,
            )
            .unwrap()
        };
        let good = Pages::Counted(Some(two(9, counted, true)));
        walk(repo, &good, &|_| false, &mut |_| Ok(())).unwrap();
        assert!(get(repo, &good, 0x11).unwrap().is_some());
        let lying = Pages::Counted(Some(two(8, counted, true)));
        let e = walk(repo, &lying, &|_| false, &mut |_| Ok(())).unwrap_err();
        assert!(e.is_integrity(), "{e}");
        assert!(get(repo, &lying, 0x01).unwrap_err().is_integrity());
        assert!(
            first_open_page(repo, &lying, 32, 0, 100)
                .unwrap_err()
                .is_integrity()
        );
        // A counting root over a node that does not count, and a format-2
        // map whose nodes count.
        let mixed = Pages::Counted(Some(two(9, plain, true)));
        assert!(
            walk(repo, &mixed, &|_| false, &mut |_| Ok(()))
                .unwrap_err()
                .is_integrity()
        );
        let mislabeled = Pages::Map(Some(two(9, counted, true)));
        assert!(get(repo, &mislabeled, 0x01).unwrap_err().is_integrity());
    }
}
