//! Large directories (tree format 2, `repo::dirtree`): a directory split
//! by name hash into bounded nodes must behave exactly like a map of
//! names, across commits, reopens and crashes, while a commit that changes
//! one name writes a bounded number of bytes whatever the directory's
//! size.

mod support;
use proptest::prelude::*;
use sovseal::engine::{Engine, RenameFlags};
use sovseal::seal::tree::{self, Content, DirRef, FileType, ROOT_INO};
use std::collections::BTreeMap;
use support::home::{Env, files_under};

fn name(k: u32) -> Vec<u8> {
    // Some long names, so leaves differ in size.
    if k.is_multiple_of(7) {
        format!("{k:05}-{}", "x".repeat((k % 200) as usize)).into_bytes()
    } else {
        format!("n{k:05}").into_bytes()
    }
}

fn dir_root(e: &Engine, ino: u64) -> Option<DirRef> {
    match e.getattr(ino).unwrap().content {
        Content::Dir(r) => r,
        c => panic!("not a directory: {c:?}"),
    }
}

/// The listing of `dir` as name -> inode.
fn listing(e: &Engine, dir: u64) -> BTreeMap<Vec<u8>, u64> {
    e.readdir(dir)
        .unwrap()
        .into_iter()
        .map(|(n, d)| (n, d.ino))
        .collect()
}

fn fill(e: &mut Engine, dir: u64, keys: impl Iterator<Item = u32>) -> BTreeMap<Vec<u8>, u64> {
    keys.map(|k| {
        let n = name(k);
        let i = e.create(dir, &n, 0o644, 0, 0).unwrap();
        (n, i.ino)
    })
    .collect()
}

/// A one-name commit in a directory of 5,000 entries appends a few KiB to
/// the packs: the leaf holding the name, the index nodes above it, the new
/// inode's page, the directory's own page and the commit record. The flat
/// encoding of the directory alone is over 70 KB.
#[test]
fn one_create_in_a_large_directory_writes_little() {
    let env = Env::new();
    let mut e = env.open();
    let big = e.mkdir(ROOT_INO, b"big", 0o755, 0, 0).unwrap().ino;
    fill(&mut e, big, 0..5000);
    e.commit().unwrap();
    assert!(matches!(dir_root(&e, big), Some(DirRef::Index(_))));
    let packs = || -> u64 {
        files_under(&env.data_dir().join("packs"))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let mut worst = 0;
    for k in 5000..5020 {
        let before = packs();
        e.create(big, &name(k), 0o644, 0, 0).unwrap();
        e.commit().unwrap();
        worst = worst.max(packs() - before);
    }
    eprintln!("worst one-create commit: {worst} bytes");
    // Two inode pages of up to 128 small records, a leaf of up to 64
    // entries (some names 200 bytes long) and at most four index nodes.
    assert!(
        worst < 40_000,
        "one create in a 5,000-entry directory sealed {worst} bytes"
    );
    let flat = tree::encode_dir(&e.readdir(big).unwrap().into_iter().collect()).len();
    assert!(flat > 70_000, "{flat}");
    assert!(worst * 2 < flat as u64, "{worst} against {flat}");
}

/// A directory's nodes in walk order: each directory node's id (its
/// entries) and, for an index node, its kind alone (its references name
/// where each child is stored, which depends on when it was written).
fn shape(e: &Engine, root: &DirRef) -> Vec<(tree::ObjectKind, Option<tree::ObjectId>)> {
    let mut out = Vec::new();
    let head = e.agent().head().unwrap();
    head.walk_dir(root, &mut |kind, r| {
        out.push((kind, (kind == tree::ObjectKind::DirNode).then_some(r.id)));
        Ok(())
    })
    .unwrap();
    out
}

/// The shape is a function of the entries alone: a directory built in one
/// order in one commit and one built in another order over many commits,
/// with extra names added and removed, has the same index nodes over the
/// same directory nodes (equal objects, wherever each is stored).
#[test]
fn equal_directories_are_equal_objects() {
    let env = Env::new();
    let mut e = env.open();
    // (Every commit folds: the trees compared are the ones it writes.)
    e.set_fold_every(0);
    let a = e.mkdir(ROOT_INO, b"a", 0o755, 0, 0).unwrap().ino;
    let b = e.mkdir(ROOT_INO, b"b", 0o755, 0, 0).unwrap().ino;
    let files = fill(&mut e, a, 0..700);
    e.commit().unwrap();
    // The same entries (hard links: same inode numbers) in reverse order,
    // with 300 more that go away again, committed along the way.
    for (i, (n, ino)) in files.iter().rev().enumerate() {
        e.link(*ino, b, n).unwrap();
        if i % 97 == 0 {
            e.commit().unwrap();
        }
    }
    let extra = fill(&mut e, b, 1000..1300);
    e.commit().unwrap();
    for n in extra.keys() {
        e.unlink(b, n).unwrap();
    }
    e.commit().unwrap();
    assert_eq!(listing(&e, a), listing(&e, b));
    let (ra, rb) = (dir_root(&e, a), dir_root(&e, b));
    assert!(matches!(ra, Some(DirRef::Index(_))));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(shape(&e, &ra).len() > 2);
    assert_eq!(shape(&e, &ra), shape(&e, &rb));
    // Shrunk below one leaf, it is one directory node again (format 1's
    // shape).
    for n in files.keys().skip(10) {
        e.unlink(b, n).unwrap();
    }
    e.commit().unwrap();
    assert!(matches!(dir_root(&e, b), Some(DirRef::Leaf(_))));
    assert_eq!(listing(&e, b).len(), 10);
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Create(u32),
    Unlink(u32),
    /// Rename within the large directory (replacing the target if any).
    Rename(u32, u32),
    /// Move out to the small directory and back.
    MoveOut(u32),
    MoveIn(u32),
    /// Remove a run of names (merging pages), or add one (splitting).
    UnlinkRange(u32, u32),
    CreateRange(u32, u32),
    Commit,
    Reopen,
    Crash,
}

const KEYS: u32 = 1500;

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        4 => k.clone().prop_map(Op::Create),
        3 => k.clone().prop_map(Op::Unlink),
        2 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => k.clone().prop_map(Op::MoveOut),
        1 => k.clone().prop_map(Op::MoveIn),
        1 => (k.clone(), 1..400u32).prop_map(|(a, n)| Op::UnlinkRange(a, n)),
        1 => (k.clone(), 1..400u32).prop_map(|(a, n)| Op::CreateRange(a, n)),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// The reference model: the large directory and the small one as maps of
/// name to the file's identity (its creation key), through any sequence of
/// operations, with every committed snapshot checked at the end.
fn run(start: u32, ops: Vec<Op>, fold_every: u32) -> Result<(), TestCaseError> {
    let env = Env::new();
    let open = |env: &Env| {
        let mut e = env.open();
        e.set_fold_every(fold_every);
        e
    };
    let mut e = open(&env);
    let big = e.mkdir(ROOT_INO, b"big", 0o755, 0, 0).unwrap().ino;
    let small = e.mkdir(ROOT_INO, b"small", 0o755, 0, 0).unwrap().ino;
    // name -> inode number in the model; inode numbers are stable.
    let mut m_big: BTreeMap<Vec<u8>, u64> = fill(&mut e, big, 0..start);
    let mut m_small: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    e.commit().unwrap();
    let mut committed = vec![(e.head().seq(), m_big.clone(), m_small.clone())];
    for op in ops {
        match op {
            Op::Create(k) => {
                let n = name(k);
                let r = e.create(big, &n, 0o644, 0, 0);
                match m_big.get(&n) {
                    Some(_) => prop_assert!(r.is_err()),
                    None => {
                        m_big.insert(n, r.unwrap().ino);
                    }
                }
            }
            Op::Unlink(k) => {
                let n = name(k);
                let r = e.unlink(big, &n);
                prop_assert_eq!(r.is_ok(), m_big.remove(&n).is_some());
            }
            Op::Rename(a, b) => {
                let (na, nb) = (name(a), name(b));
                let r = e.rename(big, &na, big, &nb, RenameFlags::default());
                prop_assert_eq!(r.is_ok(), m_big.contains_key(&na));
                if let Some(ino) = m_big.remove(&na) {
                    m_big.insert(nb, ino);
                }
            }
            Op::MoveOut(k) | Op::MoveIn(k) => {
                let n = name(k);
                let out = matches!(op, Op::MoveOut(_));
                let (from, to, mf, mt) = if out {
                    (big, small, &mut m_big, &mut m_small)
                } else {
                    (small, big, &mut m_small, &mut m_big)
                };
                let r = e.rename(from, &n, to, &n, RenameFlags::default());
                prop_assert_eq!(r.is_ok(), mf.contains_key(&n));
                if let Some(ino) = mf.remove(&n) {
                    mt.insert(n, ino);
                }
            }
            Op::UnlinkRange(a, len) => {
                for k in a..(a + len).min(KEYS) {
                    if m_big.remove(&name(k)).is_some() {
                        e.unlink(big, &name(k)).unwrap();
                    }
                }
            }
            Op::CreateRange(a, len) => {
                for k in a..(a + len).min(KEYS) {
                    let n = name(k);
                    if let std::collections::btree_map::Entry::Vacant(v) = m_big.entry(n) {
                        let ino = e.create(big, v.key(), 0o644, 0, 0).unwrap().ino;
                        v.insert(ino);
                    }
                }
            }
            Op::Commit => {
                if let Some(info) = e.commit().unwrap() {
                    committed.push((info.seq, m_big.clone(), m_small.clone()));
                }
            }
            Op::Reopen => {
                e.commit().unwrap();
                drop(e);
                e = open(&env);
                if committed.last().unwrap().0 < e.head().seq() {
                    committed.push((e.head().seq(), m_big.clone(), m_small.clone()));
                }
            }
            Op::Crash => {
                // The journal replays every acknowledged operation.
                drop(e);
                e = open(&env);
                if committed.last().unwrap().0 < e.head().seq() {
                    committed.push((e.head().seq(), m_big.clone(), m_small.clone()));
                }
            }
        }
        prop_assert_eq!(&listing(&e, big), &m_big, "after {:?}", op);
        prop_assert_eq!(&listing(&e, small), &m_small);
        // Lookups walk one path: a present and an absent name.
        if let Some((n, ino)) = m_big.iter().next() {
            prop_assert_eq!(e.lookup(big, n).unwrap().map(|d| d.ino), Some(*ino));
        }
        prop_assert!(e.lookup(big, b"absent").unwrap().is_none());
        prop_assert_eq!(e.getattr(big).unwrap().nlink, 2);
    }
    for (seq, mb, ms) in &committed {
        let v = e.agent().snapshot(*seq).unwrap();
        let list = |ino| -> BTreeMap<Vec<u8>, u64> {
            v.entries(ino)
                .unwrap()
                .iter()
                .map(|(n, d)| (n.clone(), d.ino))
                .collect()
        };
        prop_assert_eq!(&list(big), mb, "snapshot {}", seq);
        prop_assert_eq!(&list(small), ms, "snapshot {}", seq);
        for (n, ino) in mb.iter().take(20) {
            let d = v.lookup(big, n).unwrap().unwrap();
            prop_assert_eq!((d.ino, d.file_type), (*ino, FileType::File));
        }
    }
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 100, failure_persistence: None, ..ProptestConfig::default() })]
    /// Starting sizes around the split points: one leaf (64), one index
    /// level (up to 16 * 64), two levels.
    #[test]
    fn large_directory_matches_model(
        start in prop_oneof![Just(0u32), 50..80u32, 900..1100u32, 1100..1500u32],
        ops in proptest::collection::vec(op(), 1..40),
        // Delta chains of the default length, and short ones (folds
        // between most commits; 0: every commit folds).
        fold_every in prop_oneof![Just(sovseal::engine::FOLD_EVERY), 0..4u32],
    ) {
        run(start, ops, fold_every)?;
    }
}

/// A data dir written by the build before tree format 2
/// (tests/fixtures/v2/datadir-tree1/: tree format 1, pages of 128 listed
/// in the manifest, a 101-entry directory as one node, a journal with
/// stale records) opens and reads; its first commit splits the directory
/// and turns the page list into a counted page map (tree format 3 and
/// on,
/// keeping 128 inodes per page);
/// the old snapshots still read, and the whole chain verifies.
#[test]
fn a_tree_format_1_data_dir_opens_and_converts() {
    use sovseal::seal::tree::Pages;
    let env = Env::golden("datadir-tree1");
    let (home, name, master) = (&env.home, &env.agent, &env.master);
    let mut e = Engine::open(home, name, master).unwrap();
    let m = e.head().manifest().clone();
    assert_eq!((m.seq, m.format, m.inodes_per_page), (4, 1, 128));
    assert!(matches!(m.pages, Pages::List(_)));
    let big = e.resolve(b"big").unwrap();
    assert!(matches!(dir_root(&e, big), Some(DirRef::Leaf(_))));
    assert_eq!(e.readdir(big).unwrap().len(), 101);
    let l50 = e.lookup(big, b"l050").unwrap().unwrap();
    assert_eq!(e.readlink(l50.ino).unwrap(), b"target-50");
    let hello = e.resolve(b"hello.txt").unwrap();
    assert_eq!(
        e.read(hello, 0, 100).unwrap(),
        b"hello from tree format 1\n"
    );

    e.create(big, b"new", 0o644, 0, 0).unwrap();
    // A file written now keeps the agent's chunk size (1 MiB, from before
    // new agents got 64 KiB chunks): 3.5 MiB is four chunks.
    let wide = e.create(ROOT_INO, b"wide", 0o644, 0, 0).unwrap().ino;
    let body: Vec<u8> = (0..(7u32 << 19)).map(|i| (i % 251) as u8).collect();
    e.write(wide, 0, &body).unwrap();
    e.commit().unwrap();
    let m = e.head().manifest().clone();
    assert_eq!(
        (m.seq, m.format, m.inodes_per_page),
        (5, tree::FORMAT_VERSION, 128)
    );
    assert_eq!(m.chunk_size, tree::CHUNK_SIZE_V1);
    assert_ne!(m.chunk_size, tree::CHUNK_SIZE);
    match e.getattr(wide).unwrap().content {
        Content::File(tree::Chunks::Inline(refs)) => {
            assert_eq!(refs.len(), 4)
        }
        c => panic!("{c:?}"),
    }
    assert!(matches!(m.pages, Pages::Counted(Some(_))));
    assert!(matches!(dir_root(&e, big), Some(DirRef::Index(_))));
    assert_eq!(e.readdir(big).unwrap().len(), 102);
    drop(e);
    let e = Engine::open(home, name, master).unwrap();
    assert_eq!(e.readdir(big).unwrap().len(), 102);
    assert_eq!(e.read(wide, 0, 4 << 20).unwrap(), body);
    assert_eq!(
        e.read(hello, 0, 100).unwrap(),
        b"hello from tree format 1\n"
    );
    let old = e.agent().snapshot(4).unwrap();
    assert_eq!(old.entries(big).unwrap().len(), 101);
    assert!(old.lookup(big, b"new").unwrap().is_none());
    let data = old.resolve(b"big/data.bin").unwrap();
    let want: Vec<u8> = (0..10).flat_map(|_| 0..=255u8).collect();
    assert_eq!(old.read(data, 0, 4096).unwrap(), want);
    let report = sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(report.snapshots, 5);
}
