//! Inode numbers are reused (tree format 3, `engine::inodes`): a new inode
//! takes the lowest number no live or pinned inode holds, so a tree that
//! churns through many files keeps few, full pages; a number is never
//! handed out while an open handle or a kernel reference (a pin) holds its
//! inode; and a journal replay gives each created inode the number it was
//! acknowledged with.

mod support;
use proptest::prelude::*;
use sovseal::engine::Engine;
use sovseal::seal::tree::{self, FileType, Pages, ROOT_INO};
use std::collections::{BTreeMap, BTreeSet};
use support::home::Env;

/// Head's pages and the inodes each holds (read through the page map,
/// which checks each page against its count).
fn pages(e: &Engine) -> BTreeMap<u64, u64> {
    let ipp = u64::from(e.head().manifest().inodes_per_page);
    let mut out = BTreeMap::new();
    for ino in e.head().inode_numbers().unwrap() {
        *out.entry(ino / ipp).or_default() += 1;
    }
    out
}

fn create(e: &mut Engine, dir: u64, name: &str) -> u64 {
    e.create(dir, name.as_bytes(), 0o644, 0, 0).unwrap().ino
}

/// Creating 1,000 files, deleting them, and creating 1,000 others uses the
/// same numbers and the same pages, where numbers that are never reused
/// would have spread the second round over 63 more pages (of 16).
#[test]
fn churn_reuses_numbers_and_pages() {
    let env = Env::new();
    let mut e = env.open();
    let d = e.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    let first: BTreeSet<u64> = (0..1000)
        .map(|k| create(&mut e, d, &format!("a{k}")))
        .collect();
    e.commit().unwrap();
    let (next, layout) = (e.head().manifest().next_ino, pages(&e));
    for k in 0..1000 {
        e.unlink(d, format!("a{k}").as_bytes()).unwrap();
    }
    e.commit().unwrap();
    assert_eq!(pages(&e).values().sum::<u64>(), 2, "root and d");
    // Half in the same commit as the deletes' successor, half after a
    // reopen (nothing about free numbers is kept in memory across it).
    let mut second: BTreeSet<u64> = (0..500)
        .map(|k| create(&mut e, d, &format!("b{k}")))
        .collect();
    e.commit().unwrap();
    drop(e);
    let mut e = env.open();
    second.extend((500..1000).map(|k| create(&mut e, d, &format!("b{k}"))));
    e.commit().unwrap();
    assert_eq!(second, first, "the lowest free numbers, in order");
    assert_eq!(e.head().manifest().next_ino, next);
    assert_eq!(pages(&e), layout);
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// With the set of known free numbers bounded (here at 8), deleting 50
/// files in one commit window drops most of their numbers from it, and
/// creates in that window take fresh ones (head still counts the pages
/// full); after the commit the dropped numbers are found again, lowest
/// first.
#[test]
fn numbers_dropped_from_a_full_free_set_are_found_after_the_commit() {
    let env = Env::new();
    let mut e = env.open();
    e.set_free_inode_budget(8);
    // (Commits that fold: head's page counts show the numbers freed; after
    // a delta commit they do at the next fold.)
    e.set_fold_every(0);
    let made: Vec<u64> = (0..100)
        .map(|k| create(&mut e, ROOT_INO, &format!("a{k}")))
        .collect();
    assert_eq!(made, (2..102).collect::<Vec<_>>());
    e.commit().unwrap();
    for k in 0..50 {
        e.unlink(ROOT_INO, format!("a{k}").as_bytes()).unwrap();
    }
    // Eight come from the set (2-9); the rest are fresh.
    let window: Vec<u64> = (0..20)
        .map(|k| create(&mut e, ROOT_INO, &format!("b{k}")))
        .collect();
    assert_eq!(window[..8], (2..10).collect::<Vec<_>>());
    assert!(window[8..].iter().all(|i| *i >= 102), "{window:?}");
    e.commit().unwrap();
    let after: Vec<u64> = (0..42)
        .map(|k| create(&mut e, ROOT_INO, &format!("c{k}")))
        .collect();
    assert_eq!(after, (10..52).collect::<Vec<_>>());
    e.commit().unwrap();
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// A file unlinked while open keeps its number until its last pin goes:
/// no create takes it meanwhile, before or after a commit; then the next
/// create does.
#[test]
fn a_pinned_number_is_not_reused() {
    let env = Env::new();
    let mut e = env.open();
    let a = create(&mut e, ROOT_INO, "a");
    e.write(a, 0, b"still mine").unwrap();
    e.commit().unwrap();
    e.pin(a);
    e.unlink(ROOT_INO, b"a").unwrap();
    let b = create(&mut e, ROOT_INO, "b");
    assert_ne!(b, a);
    e.commit().unwrap();
    let c = create(&mut e, ROOT_INO, "c");
    assert_ne!(c, a);
    assert_eq!(e.read(a, 0, 100).unwrap(), b"still mine");
    e.unpin(a);
    assert_eq!(create(&mut e, ROOT_INO, "d"), a, "free once unpinned");
    e.commit().unwrap();
    assert_eq!(e.read(a, 0, 100).unwrap(), b"");
}

/// After a crash, the journal's creates get the numbers they were
/// acknowledged with, even where what was free differs at replay: here an
/// orphan (unlinked while open) held the lowest number when `b` was
/// created, and after the crash nothing holds it.
#[test]
fn a_replay_keeps_the_acknowledged_numbers() {
    let env = Env::new();
    let mut e = env.open();
    let a = create(&mut e, ROOT_INO, "a");
    e.commit().unwrap();
    e.pin(a);
    e.unlink(ROOT_INO, b"a").unwrap();
    let b = create(&mut e, ROOT_INO, "b");
    let d = e.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    e.symlink(d, b"s", b"../b", 0, 0).unwrap();
    assert_ne!(b, a);
    drop(e); // a crash: nothing committed since `a`
    let mut e = env.open();
    assert_eq!(e.resolve(b"b").unwrap(), b);
    assert_eq!(e.resolve(b"d").unwrap(), d);
    assert_eq!(e.readlink(e.resolve(b"d/s").unwrap()).unwrap(), b"../b");
    assert!(e.lookup(ROOT_INO, b"a").unwrap().is_none());
    assert_eq!(
        create(&mut e, ROOT_INO, "again"),
        a,
        "free after the restart"
    );
}

/// A data dir written by the build of tree format 2
/// (tests/fixtures/v2/datadir-tree2/: pages of 32 under an uncounted page
/// map; f050-f059 of the 100-entry `big` and c010-c029 deleted; the daemon
/// SIGKILLed after `mkdir newdir` and `ln -s target-of-sym sym` were
/// acknowledged, so they are in its journal only) opens, replays its
/// journal with the numbers the old build gave (144, 145), converts to a
/// counted page map, and then reuses the deleted files' numbers, lowest
/// first. Its history reads and verifies, the old files under their old
/// numbers in old snapshots.
#[test]
fn a_tree_format_2_data_dir_opens_replays_and_reuses_numbers() {
    let env = Env::golden("datadir-tree2");
    let mut e = env.open();
    let m = e.head().manifest().clone();
    assert_eq!((m.format, m.inodes_per_page), (tree::FORMAT_VERSION, 32));
    assert!(matches!(m.pages, Pages::Counted(Some(_))));
    assert_eq!(e.resolve(b"newdir").unwrap(), 144);
    assert_eq!(e.resolve(b"sym").unwrap(), 145);
    assert_eq!(e.readlink(145).unwrap(), b"target-of-sym");
    let big = e.resolve(b"big").unwrap();
    assert_eq!(e.readdir(big).unwrap().len(), 90);
    assert_eq!(
        e.read(e.resolve(b"big/f007").unwrap(), 0, 9).unwrap(),
        b"n007\n"
    );
    assert_eq!(
        e.read(e.resolve(b"hello.txt").unwrap(), 0, 99).unwrap(),
        b"hello from tree format 2\n"
    );
    let replayed = m.seq;
    let old = (1..replayed)
        .rev()
        .map(|s| e.agent().snapshot(s).unwrap())
        .find(|v| v.resolve(b"big/f050").is_ok())
        .expect("a snapshot with big/f050");
    assert_eq!(old.resolve(b"big/f050").unwrap(), 53);

    let made: Vec<u64> = (0..31)
        .map(|k| create(&mut e, big, &format!("n{k:02}")))
        .collect();
    let want: Vec<u64> = (53..=62).chain(114..=133).chain([146]).collect();
    assert_eq!(made, want);
    e.commit().unwrap();
    assert_eq!(old.resolve(b"big/f050").unwrap(), 53);
    assert_eq!(old.getattr(53).unwrap().file_type(), FileType::File);
    assert_eq!(e.lookup(big, b"n00").unwrap().unwrap().ino, 53);
    drop(e);
    let e = env.open();
    assert_eq!(e.readdir(big).unwrap().len(), 121);
    let report = sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(report.snapshots, replayed + 1);
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Remove(u8),
    Pin(u8),
    Unpin,
    Commit,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..60u8).prop_map(Op::Create),
        6 => (0..60u8).prop_map(Op::Remove),
        1 => (0..60u8).prop_map(Op::Pin),
        1 => Just(Op::Unpin),
        2 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]
    /// Against a model of names and contents, through creates, removes,
    /// pins of open files, commits, reopens and crashes: every live name
    /// has its own number and its own content, no create takes a pinned
    /// number, and the numbers stay within what was ever live at once
    /// plus the pinned ones.
    #[test]
    fn numbers_stay_unique_and_dense(ops in proptest::collection::vec(op(), 1..120)) {
        let env = Env::new();
        let mut e = env.open();
        // name -> (ino, content); committed: the model at the last commit.
        let mut live: BTreeMap<u8, (u64, Vec<u8>)> = BTreeMap::new();
        let mut committed = live.clone();
        // Names created since the last commit (their content is not in
        // the journal: written at close, which the model never does).
        let mut fresh: BTreeSet<u8> = BTreeSet::new();
        let mut pinned: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut peak = 0usize;
        for op in ops {
            match op {
                Op::Create(n) if !live.contains_key(&n) => {
                    let name = format!("f{n}");
                    let ino = create(&mut e, ROOT_INO, &name);
                    prop_assert!(live.values().all(|(i, _)| *i != ino), "{} reused while live", ino);
                    prop_assert!(pinned.iter().all(|(i, _)| *i != ino), "{} reused while pinned", ino);
                    let body = format!("{name}@{ino}").into_bytes();
                    e.write(ino, 0, &body).unwrap();
                    live.insert(n, (ino, body));
                    fresh.insert(n);
                }
                Op::Remove(n) if live.contains_key(&n) => {
                    e.unlink(ROOT_INO, format!("f{n}").as_bytes()).unwrap();
                    live.remove(&n);
                }
                Op::Pin(n) if live.contains_key(&n) && pinned.len() < 4 => {
                    let (ino, body) = live.remove(&n).unwrap();
                    // An open file, then unlinked: an orphan.
                    e.pin(ino);
                    e.unlink(ROOT_INO, format!("f{n}").as_bytes()).unwrap();
                    pinned.push((ino, body));
                }
                Op::Unpin => {
                    if let Some((ino, body)) = pinned.pop() {
                        prop_assert_eq!(e.read(ino, 0, 100).unwrap(), body);
                        e.unpin(ino);
                    }
                }
                Op::Commit => {
                    e.commit().unwrap();
                    committed = live.clone();
                    fresh.clear();
                }
                Op::Reopen | Op::Crash => {
                    if matches!(op, Op::Reopen) {
                        e.commit().unwrap();
                        committed = live.clone();
                        fresh.clear();
                    }
                    drop(e);
                    e = env.open();
                    // After a crash the journal brings back every create and
                    // unlink; a name created since the last commit is
                    // empty, an older one has its committed content.
                    for (n, (_, body)) in live.iter_mut() {
                        if fresh.contains(n) {
                            body.clear();
                        } else {
                            *body = committed[n].1.clone();
                        }
                    }
                    pinned.clear();
                    committed = live.clone();
                    fresh.clear();
                }
                _ => continue,
            }
            peak = peak.max(live.len() + pinned.len());
            for (n, (ino, body)) in &live {
                let found = e.lookup(ROOT_INO, format!("f{n}").as_bytes()).unwrap().unwrap();
                prop_assert_eq!(found.ino, *ino);
                prop_assert_eq!(&e.read(*ino, 0, 100).unwrap(), body);
            }
            prop_assert_eq!(e.readdir(ROOT_INO).unwrap().len(), live.len());
            let highest = live.values().map(|(i, _)| *i).chain(pinned.iter().map(|(i, _)| *i)).max();
            prop_assert!(highest.is_none_or(|h| h <= peak as u64 + 1), "{:?} above {} + 1", highest, peak);
        }
        e.commit().unwrap();
        sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    }
}

/// An engine folding every 8 commits, whose head holds directory `d`
/// (returned) with file `x` in it: a delta names them.
fn directory_d_with_x(env: &Env) -> (Engine, u64) {
    let mut e = env.open();
    e.set_fold_every(8);
    let d = e.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    create(&mut e, d, "x");
    e.commit().unwrap();
    (e, d)
}

/// A directory's number given to a file within one commit window of a
/// delta chain (tree format 8): the chain's names of the directory go with
/// it, and the file stays a file with its bytes through a reopen (the
/// overlay rebuilt from the chain) and the next fold (planted: a fresh
/// directory edit on the file's number made it an empty directory at the
/// fold).
#[test]
fn a_directory_number_given_to_a_file_stays_a_file_through_reopen_and_fold() {
    use sovseal::seal::tree::FileType;
    let env = Env::new();
    let (mut e, d) = directory_d_with_x(&env);
    e.unlink(d, b"x").unwrap();
    e.rmdir(ROOT_INO, b"d").unwrap();
    let f = create(&mut e, ROOT_INO, "f");
    assert_eq!(f, d, "the number is reused");
    e.write(f, 0, b"file bytes").unwrap();
    e.commit().unwrap();
    for round in 0..2 {
        // A reopen, then (round 1) a fold.
        drop(e);
        e = env.open();
        e.set_fold_every(if round == 0 { 8 } else { 0 });
        let i = e.getattr(f).unwrap();
        assert_eq!(i.file_type(), FileType::File, "round {round}");
        assert_eq!(e.read(f, 0, 100).unwrap(), b"file bytes", "round {round}");
        let head = e.agent().head().unwrap();
        assert!(head.entries(f).is_err(), "a file lists no entries");
        assert_eq!(head.read(f, 0, 100).unwrap(), b"file bytes");
        create(&mut e, ROOT_INO, &format!("g{round}"));
        e.commit().unwrap();
    }
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// A directory's number freed and given to a new directory before the
/// next commit, while head's delta chain has names for the old one: the
/// new directory lists only its own names (its delta edits start fresh),
/// in the engine, in head's view and after a reopen.
#[test]
fn a_directory_number_given_to_a_new_directory_lists_only_its_names() {
    let env = Env::new();
    let (mut e, d) = directory_d_with_x(&env);
    assert!(e.head().manifest().delta.is_some(), "a delta names x");
    e.unlink(d, b"x").unwrap();
    e.rmdir(ROOT_INO, b"d").unwrap();
    let n = e.mkdir(ROOT_INO, b"n", 0o755, 0, 0).unwrap().ino;
    assert_eq!(n, d, "the number is reused");
    create(&mut e, n, "y");
    e.commit().unwrap();
    let names = |v: Vec<Vec<u8>>| {
        v.into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .collect::<Vec<_>>()
    };
    for round in 0..2 {
        let listed = e.readdir(n).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names(listed), ["y"], "round {round}: the engine");
        let head = e.agent().head().unwrap();
        let listed = head.entries(n).unwrap().keys().cloned().collect();
        assert_eq!(names(listed), ["y"], "round {round}: head's view");
        drop(e);
        e = env.open();
    }
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// As above, the new directory left empty over two commits: the chain
/// says once that its names start over, and it lists nothing, in the
/// engine, in head's view and after a reopen. (Debug builds check every
/// delta against one computed from everything since the fold: that
/// check once disagreed here.)
#[test]
fn a_directory_number_given_to_a_new_empty_directory_lists_nothing() {
    let env = Env::new();
    let (mut e, d) = directory_d_with_x(&env);
    e.unlink(d, b"x").unwrap();
    e.rmdir(ROOT_INO, b"d").unwrap();
    let n = e.mkdir(ROOT_INO, b"n", 0o755, 0, 0).unwrap().ino;
    assert_eq!(n, d, "the number is reused");
    e.commit().unwrap();
    create(&mut e, ROOT_INO, "z");
    e.commit().unwrap();
    assert!(e.head().manifest().delta.is_some(), "still a chain");
    for round in 0..2 {
        assert!(
            e.readdir(n).unwrap().is_empty(),
            "round {round}: the engine"
        );
        let head = e.agent().head().unwrap();
        assert!(
            head.entries(n).unwrap().is_empty(),
            "round {round}: head's view"
        );
        drop(e);
        e = env.open();
    }
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}
