//! A file's chunk references (tree format 7): inline in the inode, one
//! chunk list, or a tree of chunk lists under chunk-index nodes.
//!
//! Up to tree format 6 a file of more than [`MAX_INLINE_CHUNKS`] chunks
//! kept every reference in one chunk list, so a commit that changed one
//! chunk re-sealed all of them: 33 bytes per chunk, ~135 KB for a 256 MiB
//! file at 64 KiB chunks, for a 4 KiB overwrite. Format 7 cuts a list of
//! more than [`CHUNK_LIST_LEAF`] references into lists of exactly that
//! many (the last one shorter) and names them from chunk-index nodes of
//! up to [`CHUNK_INDEX_FANOUT`] children, level by level up to one root
//! ([`Chunks::Tree`]). A commit takes the lists and nodes it did not
//! change from the file's previous tree and stores only those whose bytes
//! are new: lists and nodes are found by id, like chunks (an id is the
//! bytes' keyed hash, so equal runs of references are one object). A 4 KiB
//! overwrite then seals one list and the nodes above it: ~4.2 KB plus ~4 KB
//! per level.
//!
//! The shape is a function of the count (the inode's): the root has the
//! lowest height that covers it, and every child but a node's last is
//! full. Readers check it on every node they read, so a list or node that
//! is swapped, cut or padded is an integrity error, not a misread file.

use crate::repo::Repo;
use crate::seal::tree::{
    self, CHUNK_INDEX_FANOUT, CHUNK_LIST_LEAF, ChunkIndexNode, ChunkRef, Chunks, MAX_INLINE_CHUNKS,
    ObjRef, ObjectId, ObjectKind, chunk_tree_height, chunk_tree_span,
};
use crate::{Error, Result};
use std::sync::Arc;

fn corrupt(kind: ObjectKind, id: &ObjectId, detail: String) -> Error {
    Error::corrupt(format!("{} {}", kind.name(), id.to_hex()), detail)
}

/// Stores `refs` (a file's chunk references, without trailing holes) the
/// way a commit of tree format 7 keeps them, storing only lists and nodes
/// not already stored. `base` is what the file held before (its head's
/// content): a list or node whose contents equal the one at the same
/// place in a base tree is that object, taken without encoding, hashing
/// or looking it up again, so a commit's work follows the lists it
/// changed. The whole list is cached under the object the inode names.
pub fn build(repo: &Repo, refs: Vec<ChunkRef>, base: &Chunks) -> Result<Chunks> {
    if refs.len() <= MAX_INLINE_CHUNKS {
        return Ok(Chunks::Inline(refs));
    }
    let count = refs.len() as u64;
    if refs.len() <= CHUNK_LIST_LEAF {
        let id = repo.put(ObjectKind::ChunkList, &tree::encode_chunk_list(&refs))?;
        repo.cache_chunk_list(id, refs);
        return Ok(Chunks::List { id, count });
    }
    let base = Base::of(repo, base)?;
    let mut level = refs
        .chunks(CHUNK_LIST_LEAF)
        .enumerate()
        .map(|(k, l)| match base.list(k, l) {
            Some(id) => Ok(id),
            None => repo.put(ObjectKind::ChunkList, &tree::encode_chunk_list(l)),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut height = 1;
    let root = loop {
        let nodes = level
            .chunks(CHUNK_INDEX_FANOUT)
            .enumerate()
            .map(|(k, c)| match base.node(repo, height, k, c)? {
                Some(id) => Ok(id),
                None => {
                    let node = ChunkIndexNode {
                        height,
                        children: c.to_vec(),
                    };
                    repo.put(ObjectKind::ChunkIndex, &tree::encode_chunk_index(&node))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if let [root] = nodes[..] {
            break root;
        }
        level = nodes;
        height += 1;
    };
    debug_assert_eq!(chunk_tree_height(count), Some(height));
    repo.cache_chunk_tree(root, refs);
    Ok(Chunks::Tree { id: root, count })
}

/// The tree a file held before a commit, to take unchanged lists and
/// nodes from (empty unless it was a chunk tree).
struct Base {
    /// Its whole list of references.
    refs: Arc<Vec<ChunkRef>>,
    /// Its objects by height, in file order: its lists at 0, then its
    /// nodes.
    levels: Vec<Vec<ObjectId>>,
}

impl Base {
    fn of(repo: &Repo, base: &Chunks) -> Result<Self> {
        let Chunks::Tree { id, count } = base else {
            return Ok(Base {
                refs: Arc::new(Vec::new()),
                levels: Vec::new(),
            });
        };
        // Read (and shape-checked) when the file was first written in
        // this commit: from the cache.
        let refs = self::refs(repo, base)?;
        let height = chunk_tree_height(*count).map_or(0, usize::from);
        let mut levels = vec![Vec::new(); height + 1];
        levels[height].push(*id);
        for h in (1..=height).rev() {
            let mut below = Vec::new();
            for n in &levels[h] {
                below.extend_from_slice(&repo.chunk_index(n)?.children);
            }
            levels[h - 1] = below;
        }
        Ok(Base { refs, levels })
    }

    /// The base's list `k`, if it holds exactly `l`.
    fn list(&self, k: usize, l: &[ChunkRef]) -> Option<ObjectId> {
        let id = *self.levels.first()?.get(k)?;
        let at = k * CHUNK_LIST_LEAF;
        (self.refs.get(at..at + l.len()) == Some(l)
            && (l.len() == CHUNK_LIST_LEAF || self.refs.len() == at + l.len()))
        .then_some(id)
    }

    /// The base's node `k` of `height`, if its children are exactly `c`.
    fn node(&self, repo: &Repo, height: u8, k: usize, c: &[ObjectId]) -> Result<Option<ObjectId>> {
        let Some(id) = self.levels.get(usize::from(height)).and_then(|l| l.get(k)) else {
            return Ok(None);
        };
        Ok((repo.chunk_index(id)?.children == c).then_some(*id))
    }
}

/// A file's chunk references: the inode's own, or its chunk list's, or
/// its chunk tree's in file order (checked against `count` and the shape,
/// then cached whole).
pub fn refs(repo: &Repo, chunks: &Chunks) -> Result<Arc<Vec<ChunkRef>>> {
    match chunks {
        Chunks::Inline(v) => Ok(Arc::new(v.clone())),
        Chunks::List { id, count } => {
            let l = repo.chunk_list(id)?;
            if l.len() as u64 != *count {
                return Err(corrupt(
                    ObjectKind::ChunkList,
                    id,
                    "length differs from the inode's count".into(),
                ));
            }
            Ok(l)
        }
        Chunks::Tree { id, count } => {
            if let Some(l) = repo
                .cached_chunk_tree(id)
                .filter(|l| l.len() as u64 == *count)
            {
                return Ok(l);
            }
            // Grown as the lists are read, not reserved from the count
            // (which the nodes have not confirmed yet).
            let mut out = Vec::new();
            traverse(repo, chunks, &|_| false, &mut |_, _| Ok(()), &mut |l| {
                out.extend_from_slice(l);
            })?;
            Ok(repo.cache_chunk_tree(*id, out))
        }
    }
}

/// How many of a file's first `n` chunk references name a stored chunk,
/// and whether the `n`th does (`st_blocks`). For a tree whose whole list
/// is not cached, counted list by list with nothing kept but the answer
/// (cached for the root when `n` covers it, as it does for every
/// committed file): the lists are read past the cache, each distinct one
/// once, so a stat of a file larger than the cache neither expands its
/// list nor pushes everything else out of the cache.
pub fn stored(repo: &Repo, chunks: &Chunks, n: u64) -> Result<(u64, bool)> {
    let Chunks::Tree { id, count } = chunks else {
        return Ok(stored_in(&refs(repo, chunks)?, n));
    };
    if let Some(l) = repo
        .cached_chunk_tree(id)
        .filter(|l| l.len() as u64 == *count)
    {
        return Ok(stored_in(&l, n));
    }
    let whole = n >= *count;
    if whole && let Some((c, last)) = repo.cached_stored_count(id) {
        return Ok((c, last && n == *count));
    }
    let Some(height) = chunk_tree_height(*count) else {
        return Err(corrupt(
            ObjectKind::ChunkIndex,
            id,
            format!("a tree of {count} references"),
        ));
    };
    let mut c = Counting {
        n: n.min(*count),
        at: 0,
        stored: 0,
        last: false,
        seen: std::collections::HashMap::new(),
    };
    c.node(repo, id, height, *count)?;
    if whole {
        repo.cache_stored_count(*id, c.stored, c.last);
    }
    // (Past the count, the `n`th reference is a hole.)
    Ok((c.stored, c.last && n <= *count))
}

/// [`stored`] of a whole list.
fn stored_in(l: &[ChunkRef], n: u64) -> (u64, bool) {
    let upto = &l[..l.len().min(n as usize)];
    let last = n > 0 && upto.len() as u64 == n && upto[upto.len() - 1].is_some();
    (upto.iter().flatten().count() as u64, last)
}

/// A count of stored references among the first `n` of a tree, in file
/// order: `at` references passed, `stored` of them stored, whether the
/// one before `at` is; each list's length, stored count and last
/// reference by id (equal lists are one object: a run of holes is read
/// once).
struct Counting {
    n: u64,
    at: u64,
    stored: u64,
    last: bool,
    seen: std::collections::HashMap<ObjectId, (u64, u64, bool)>,
}

impl Counting {
    fn node(&mut self, repo: &Repo, id: &ObjectId, height: u8, covered: u64) -> Result<()> {
        let (node, span) = checked_node(repo, id, height, covered)?;
        for (k, child) in node.children.iter().enumerate() {
            if self.at >= self.n {
                return Ok(());
            }
            let below = span.min(covered - k as u64 * span);
            if height > 1 {
                self.node(repo, child, height - 1, below)?;
                continue;
            }
            let whole = self.at + below <= self.n;
            let (len, stored, last) = match self.seen.get(child) {
                Some(v) if whole => *v,
                _ => {
                    let l = repo.chunk_list_passing(child)?;
                    let cut = if whole {
                        l.len()
                    } else {
                        (self.n - self.at) as usize
                    };
                    let v = (
                        l.len() as u64,
                        l[..cut.min(l.len())].iter().flatten().count() as u64,
                        cut > 0 && cut <= l.len() && l[cut - 1].is_some(),
                    );
                    if whole {
                        self.seen.insert(*child, v);
                    }
                    v
                }
            };
            if len != below {
                return Err(corrupt(
                    ObjectKind::ChunkList,
                    child,
                    format!("{len} references where the tree needs {below}"),
                ));
            }
            self.stored += stored;
            self.last = last;
            self.at += below;
        }
        Ok(())
    }
}

/// Visits the objects of a file's content, parents before children: its
/// chunk list, or its tree's nodes and lists, and the chunks. An object for
/// which `skip` is true is neither visited nor read, and nothing below it
/// either. Every node read is checked against the shape `count` fixes.
pub fn walk(
    repo: &Repo,
    chunks: &Chunks,
    skip: &dyn Fn(&ObjRef) -> bool,
    visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
) -> Result<()> {
    traverse(repo, chunks, skip, visit, &mut |_| {})
}

/// [`walk`], also handing each list read to `list`, in file order.
fn traverse(
    repo: &Repo,
    chunks: &Chunks,
    skip: &dyn Fn(&ObjRef) -> bool,
    visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
    list: &mut dyn FnMut(&[ChunkRef]),
) -> Result<()> {
    match chunks {
        Chunks::Inline(v) => {
            list(v);
            visit_chunks(v, skip, visit)
        }
        Chunks::List { id, .. } => {
            let r = ObjRef::by_id(*id);
            if skip(&r) {
                return Ok(());
            }
            visit(ObjectKind::ChunkList, &r)?;
            let l = refs(repo, chunks)?;
            list(&l);
            visit_chunks(&l, skip, visit)
        }
        Chunks::Tree { id, count } => {
            let Some(height) = chunk_tree_height(*count) else {
                return Err(corrupt(
                    ObjectKind::ChunkIndex,
                    id,
                    format!("a tree of {count} references"),
                ));
            };
            let r = ObjRef::by_id(*id);
            if skip(&r) {
                return Ok(());
            }
            visit(ObjectKind::ChunkIndex, &r)?;
            walk_node(repo, id, height, *count, skip, visit, list)
        }
    }
}

/// The chunks `refs` names, each unless `skip`ped.
fn visit_chunks(
    refs: &[ChunkRef],
    skip: &dyn Fn(&ObjRef) -> bool,
    visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
) -> Result<()> {
    for r in refs.iter().flatten().map(|id| ObjRef::by_id(*id)) {
        if !skip(&r) {
            visit(ObjectKind::Chunk, &r)?;
        }
    }
    Ok(())
}

/// The node `id` of `height`, covering `covered` references, and below.
fn walk_node(
    repo: &Repo,
    id: &ObjectId,
    height: u8,
    covered: u64,
    skip: &dyn Fn(&ObjRef) -> bool,
    visit: &mut dyn FnMut(ObjectKind, &ObjRef) -> Result<()>,
    list: &mut dyn FnMut(&[ChunkRef]),
) -> Result<()> {
    let (node, span) = checked_node(repo, id, height, covered)?;
    for (k, child) in node.children.iter().enumerate() {
        let below = span.min(covered - k as u64 * span);
        let r = ObjRef::by_id(*child);
        if skip(&r) {
            continue;
        }
        if height == 1 {
            visit(ObjectKind::ChunkList, &r)?;
            let l = checked_list(repo, child, below)?;
            list(&l);
            visit_chunks(&l, skip, visit)?;
        } else {
            visit(ObjectKind::ChunkIndex, &r)?;
            walk_node(repo, child, height - 1, below, skip, visit, list)?;
        }
    }
    Ok(())
}

/// Node `id`, of `height` and covering `covered` references, read and
/// checked against that shape; and the references each full child covers.
fn checked_node(
    repo: &Repo,
    id: &ObjectId,
    height: u8,
    covered: u64,
) -> Result<(Arc<ChunkIndexNode>, u64)> {
    let node = repo.chunk_index(id)?;
    let span = chunk_tree_span(height - 1);
    if node.height != height || node.children.len() as u64 != covered.div_ceil(span) {
        return Err(corrupt(
            ObjectKind::ChunkIndex,
            id,
            format!(
                "height {} with {} children where {covered} references need height {height}",
                node.height,
                node.children.len()
            ),
        ));
    }
    Ok((node, span))
}

/// List `id` of a tree, read and checked to hold `len` references.
fn checked_list(repo: &Repo, id: &ObjectId, len: u64) -> Result<Arc<Vec<ChunkRef>>> {
    let l = repo.chunk_list(id)?;
    if l.len() as u64 != len {
        return Err(corrupt(
            ObjectKind::ChunkList,
            id,
            format!("{} references where the tree needs {len}", l.len()),
        ));
    }
    Ok(l)
}

/// Reference `idx` of a file's chunks (a hole at or past the count): from
/// the whole list when it is cached, else down one path of the tree (its
/// nodes and one list, each checked as [`walk`] checks them), so a read
/// of a file whose whole list does not fit the cache costs what it reads.
pub fn get(repo: &Repo, chunks: &Chunks, idx: u64) -> Result<ChunkRef> {
    let Chunks::Tree { id, count } = chunks else {
        return Ok(refs(repo, chunks)?.get(idx as usize).copied().flatten());
    };
    if idx >= *count {
        return Ok(None);
    }
    if let Some(l) = repo
        .cached_chunk_tree(id)
        .filter(|l| l.len() as u64 == *count)
    {
        return Ok(l[idx as usize]);
    }
    let Some(mut height) = chunk_tree_height(*count) else {
        return Err(corrupt(
            ObjectKind::ChunkIndex,
            id,
            format!("a tree of {count} references"),
        ));
    };
    let (mut at, mut node_id, mut covered) = (idx, *id, *count);
    loop {
        let (node, span) = checked_node(repo, &node_id, height, covered)?;
        let k = at / span;
        let child = node.children[k as usize];
        let below = span.min(covered - k * span);
        at -= k * span;
        if height == 1 {
            return Ok(checked_list(repo, &child, below)?[at as usize]);
        }
        (node_id, covered, height) = (child, below, height - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn chunk(n: u32) -> ChunkRef {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        Some(ObjectId(b))
    }

    /// What a walk reads of `c`: the lists and nodes it visits, and the
    /// references in file order (also as the chunks it visits).
    fn walked(repo: &Repo, c: &Chunks) -> Result<(Vec<ObjRef>, Vec<ChunkRef>)> {
        let (mut objs, mut refs, mut chunks) = (Vec::new(), Vec::new(), Vec::new());
        traverse(
            repo,
            c,
            &|_| false,
            &mut |k, r| {
                match k {
                    ObjectKind::Chunk => chunks.push(r.id),
                    _ => objs.push(*r),
                }
                Ok(())
            },
            &mut |l| refs.extend_from_slice(l),
        )?;
        let stored: Vec<ObjectId> = refs.iter().flatten().copied().collect();
        assert_eq!(chunks, stored, "every chunk visited, in file order");
        Ok((objs, refs))
    }

    /// Lengths at the edges of each shape: inline, one list, a tree of
    /// height 1 (up to 16,384 references) and of height 2.
    fn len() -> impl Strategy<Value = usize> {
        prop_oneof![
            0..=10usize,
            120..=260usize,
            16_380..=16_390usize,
            0..40_000usize,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
        /// Against a vector: what is built reads back (through the walk,
        /// which checks the shape); a change of one reference stores one
        /// new list and one new node per level, no more; and a tree built
        /// over a base (taking its unchanged lists and nodes) is the very
        /// tree built from nothing, grown and cut back too.
        #[test]
        fn a_chunk_tree_reads_back_and_a_change_stores_one_path(
            n in len(),
            holes in 0u32..4,
            at in any::<prop::sample::Index>(),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
            let repo = agent.repo();
            let mut refs: Vec<ChunkRef> = (0..n as u32)
                .map(|i| if holes > 0 && i % (holes + 3) == 0 { None } else { chunk(i) })
                .collect();
            if let Some(last) = refs.last_mut() {
                *last = chunk(u32::MAX);
            }
            let c = build(repo, refs.clone(), &Chunks::Inline(Vec::new())).unwrap();
            match (&c, chunk_tree_height(n as u64)) {
                (Chunks::Inline(_), _) => prop_assert!(n <= MAX_INLINE_CHUNKS),
                (Chunks::List { count, .. }, None) => prop_assert_eq!(*count, n as u64),
                (Chunks::Tree { count, .. }, Some(_)) => prop_assert_eq!(*count, n as u64),
                (c, h) => prop_assert!(false, "{n} references built as {c:?} (height {h:?})"),
            }
            let (objs, back) = walked(repo, &c).unwrap();
            prop_assert_eq!(&back, &refs);
            prop_assert_eq!(&*refs_fresh(repo, &c), &refs);
            // One reference at a time, down the tree (the whole list not
            // cached), and holes past the count.
            if let Chunks::Tree { id, .. } = &c {
                repo.meta.remove(&super::super::whole_tree_key(id));
            }
            for i in 0..n + 2 {
                prop_assert_eq!(get(repo, &c, i as u64).unwrap(), refs.get(i).copied().flatten());
            }
            // Stored references among the first m, counted list by list.
            let boundaries = [CHUNK_LIST_LEAF, 2 * CHUNK_LIST_LEAF];
            for m in [0, 1, n / 2, n.saturating_sub(1)].into_iter().chain(boundaries).chain([n, n + 3]) {
                let upto = &refs[..m.min(n)];
                let want = (
                    upto.iter().flatten().count() as u64,
                    m > 0 && m <= n && refs[m - 1].is_some(),
                );
                prop_assert_eq!(stored(repo, &c, m as u64).unwrap(), want, "first {}", m);
            }
            if n <= MAX_INLINE_CHUNKS {
                return Ok(());
            }
            let k = at.index(n);
            refs[k] = chunk(u32::MAX - 1);
            let c2 = build(repo, refs.clone(), &c).unwrap();
            // Taken from the base or built afresh: the same objects.
            let tmp2 = tempfile::tempdir().unwrap();
            let (agent2, _lock2) = crate::repo::agent::scratch(tmp2.path());
            prop_assert_eq!(&build(agent2.repo(), refs.clone(), &Chunks::Inline(Vec::new())).unwrap(), &c2);
            // Grown by one list, and cut back to the original length.
            let mut longer = refs.clone();
            longer.extend((0..CHUNK_LIST_LEAF as u32 + 1).map(|i| chunk(1_000_000 + i)));
            let c3 = build(repo, longer.clone(), &c2).unwrap();
            prop_assert_eq!(&build(agent2.repo(), longer.clone(), &Chunks::Inline(Vec::new())).unwrap(), &c3);
            prop_assert_eq!(&walked(repo, &c3).unwrap().1, &longer);
            let c4 = build(repo, refs.clone(), &c3).unwrap();
            prop_assert_eq!(&c4, &c2);
            let (objs2, back2) = walked(repo, &c2).unwrap();
            prop_assert_eq!(&back2, &refs);
            let before: HashSet<_> = objs.iter().collect();
            let new = objs2.iter().filter(|o| !before.contains(o)).count();
            let levels = chunk_tree_height(n as u64).map_or(0, usize::from);
            prop_assert_eq!(new, 1 + levels, "one list and one node per level");
        }
    }

    /// The whole list read again from the nodes and lists (not the cached
    /// whole list).
    fn refs_fresh(repo: &Repo, c: &Chunks) -> Arc<Vec<ChunkRef>> {
        if let Chunks::Tree { id, .. } = c {
            repo.meta.remove(&super::super::whole_tree_key(id));
        }
        refs(repo, c).unwrap()
    }

    /// Equal lists are one object, counted once when whole; a count cut
    /// inside a list seen whole before counts that list up to the cut.
    #[test]
    fn stored_counts_a_cut_inside_a_list_met_whole_before() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let half: Vec<ChunkRef> = (0..CHUNK_LIST_LEAF as u32)
            .map(|i| (i % 2 == 0).then(|| chunk(i).unwrap()))
            .collect();
        let mut refs = half.clone();
        refs.extend(half.iter().copied());
        refs.push(chunk(7));
        let c = build(repo, refs, &Chunks::Inline(Vec::new())).unwrap();
        let Chunks::Tree { id, .. } = &c else {
            panic!("{c:?}")
        };
        repo.meta.remove(&super::super::whole_tree_key(id));
        let leaf = CHUNK_LIST_LEAF as u64;
        assert_eq!(stored(repo, &c, leaf + 1).unwrap(), (leaf / 2 + 1, true));
        assert_eq!(stored(repo, &c, leaf + 2).unwrap(), (leaf / 2 + 1, false));
        assert_eq!(stored(repo, &c, 2 * leaf + 1).unwrap(), (leaf + 1, true));
        assert_eq!(stored(repo, &c, 2 * leaf + 9).unwrap(), (leaf + 1, false));
    }

    /// A tree whose nodes or lists do not have the shape the count fixes is
    /// an integrity error, never a file read otherwise: whole, or one
    /// reference down the tree.
    #[test]
    fn a_chunk_tree_of_the_wrong_shape_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (agent, _lock) = crate::repo::agent::scratch(tmp.path());
        let repo = agent.repo();
        let list = |n: u32| {
            let l: Vec<ChunkRef> = (0..n).map(chunk).collect();
            repo.put(ObjectKind::ChunkList, &tree::encode_chunk_list(&l))
                .unwrap()
        };
        let node = |height: u8, children: Vec<ObjectId>| {
            repo.put(
                ObjectKind::ChunkIndex,
                &tree::encode_chunk_index(&ChunkIndexNode { height, children }),
            )
            .unwrap()
        };
        let (full, short) = (list(CHUNK_LIST_LEAF as u32), list(5));
        let good = node(1, vec![full, short]);
        let tree = |id, count| Chunks::Tree { id, count };
        assert_eq!(
            refs(repo, &tree(good, CHUNK_LIST_LEAF as u64 + 5))
                .unwrap()
                .len(),
            CHUNK_LIST_LEAF + 5
        );
        let cases = [
            (
                "a count the lists do not hold",
                tree(good, CHUNK_LIST_LEAF as u64 + 6),
            ),
            (
                "a short list before the last",
                tree(node(1, vec![short, full]), CHUNK_LIST_LEAF as u64 + 5),
            ),
            (
                "a child too many",
                tree(
                    node(1, vec![full, short, short]),
                    CHUNK_LIST_LEAF as u64 + 5,
                ),
            ),
            (
                "a node of the wrong height",
                tree(node(2, vec![full, short]), CHUNK_LIST_LEAF as u64 + 5),
            ),
            (
                "a node where a list belongs",
                tree(node(1, vec![full, good]), CHUNK_LIST_LEAF as u64 + 5),
            ),
            (
                "a tree higher than its count needs",
                tree(node(2, vec![good]), CHUNK_LIST_LEAF as u64 + 5),
            ),
        ];
        for (what, c) in cases {
            match walked(repo, &c) {
                Err(e) if e.is_integrity() => {}
                other => panic!("{what}: {other:?}"),
            }
            let Chunks::Tree { id, .. } = &c else {
                unreachable!()
            };
            repo.meta.remove(&super::super::whole_tree_key(id));
            assert!(refs(repo, &c).is_err(), "{what}: read");
            let Chunks::Tree { count, .. } = &c else {
                unreachable!()
            };
            let e = get(repo, &c, count - 1).unwrap_err();
            assert!(e.is_integrity(), "{what}: one reference: {e}");
            let e = stored(repo, &c, *count).unwrap_err();
            assert!(e.is_integrity(), "{what}: stored count: {e}");
        }
    }
}
