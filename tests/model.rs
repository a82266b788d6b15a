//! A proptest reference model: random operation sequences, with commits,
//! reopens and simulated crashes, applied to the engine and to a plain
//! in-memory model must give identical trees at every sequence number.

mod support;
use proptest::prelude::*;
use sovseal::engine::{Engine, RenameFlags, SetAttr, XattrFlags};
use sovseal::seal::tree::{FileType, ROOT_INO};
use std::collections::BTreeMap;
use std::io::Write;
use support::home::{Env, bytes, files_under};

type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;
/// path -> (kind, xattrs, first path of the same inode)
type Dump = BTreeMap<String, (Kind, Xattrs, String)>;

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
struct MInode {
    kind: Kind,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The model: paths to inode ids, inode ids to contents.
#[derive(Clone, Debug, Default)]
struct Model {
    paths: BTreeMap<String, u64>,
    inodes: BTreeMap<u64, MInode>,
    next: u64,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(a, _)| a)
}

impl Model {
    fn kind(&self, p: &str) -> Option<&Kind> {
        if p.is_empty() {
            return Some(&Kind::Dir);
        }
        self.paths.get(p).map(|i| &self.inodes[i].kind)
    }
    fn is_dir(&self, p: &str) -> bool {
        matches!(self.kind(p), Some(Kind::Dir))
    }
    fn children(&self, p: &str) -> Vec<String> {
        let pre = format!("{p}/");
        self.paths
            .keys()
            .filter(|k| k.starts_with(&pre))
            .cloned()
            .collect()
    }
    /// Ok(()) if `p` resolves to a directory, else the errno Linux gives.
    fn dir_check(&self, p: &str) -> Result<(), i32> {
        let mut cur = String::new();
        for part in p.split('/').filter(|s| !s.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            match self.kind(&cur) {
                None => return Err(libc::ENOENT),
                Some(Kind::Dir) => {}
                Some(_) => return Err(libc::ENOTDIR),
            }
        }
        Ok(())
    }
    /// Ok(()) if creating `p` is allowed, else the errno.
    fn can_create(&self, p: &str) -> Result<(), i32> {
        self.dir_check(parent_of(p))?;
        if self.paths.contains_key(p) {
            Err(libc::EEXIST)
        } else {
            Ok(())
        }
    }
    fn add(&mut self, p: &str, kind: Kind) {
        self.next += 1;
        self.inodes.insert(
            self.next,
            MInode {
                kind,
                xattrs: BTreeMap::new(),
            },
        );
        self.paths.insert(p.to_owned(), self.next);
    }
    fn remove(&mut self, p: &str) {
        let id = self.paths.remove(p).unwrap();
        if !self.paths.values().any(|v| *v == id) {
            self.inodes.remove(&id);
        }
    }
    /// Canonical dump: path -> (kind, xattrs, first path of the same inode).
    fn dump(&self) -> Dump {
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        for (p, id) in &self.paths {
            first.entry(*id).or_insert_with(|| p.clone());
        }
        self.paths
            .iter()
            .map(|(p, id)| {
                let i = &self.inodes[id];
                (
                    p.clone(),
                    (i.kind.clone(), i.xattrs.clone(), first[id].clone()),
                )
            })
            .collect()
    }
}

/// Dumps a tree through read callbacks (engine head+overlay, or a snapshot view).
fn dump_tree(
    readdir: &dyn Fn(u64) -> Vec<(Vec<u8>, u64)>,
    node: &dyn Fn(u64) -> (FileType, u64, Xattrs),
    read: &dyn Fn(u64, u64) -> Vec<u8>,
    readlink: &dyn Fn(u64) -> Vec<u8>,
) -> Dump {
    let mut out = Dump::new();
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    let mut rows = Vec::new();
    while let Some((path, ino)) = stack.pop() {
        for (name, child) in readdir(ino) {
            let p = if path.is_empty() {
                String::from_utf8(name).unwrap()
            } else {
                format!("{path}/{}", String::from_utf8(name).unwrap())
            };
            let (ft, size, x) = node(child);
            let kind = match ft {
                FileType::Dir => {
                    stack.push((p.clone(), child));
                    Kind::Dir
                }
                FileType::File => Kind::File(read(child, size)),
                FileType::Symlink => Kind::Symlink(readlink(child)),
                t => panic!("the model makes no {t:?}"),
            };
            rows.push((p, child, kind, x));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, ino, _, _) in &rows {
        first.entry(*ino).or_insert_with(|| p.clone());
    }
    for (p, ino, kind, x) in rows {
        out.insert(p, (kind, x, first[&ino].clone()));
    }
    out
}

fn dump_engine(e: &Engine) -> Dump {
    dump_tree(
        &|ino| {
            e.readdir(ino)
                .unwrap()
                .into_iter()
                .map(|(n, d)| (n, d.ino))
                .collect()
        },
        &|ino| {
            let i = e.getattr(ino).unwrap();
            (i.file_type(), i.size, i.xattrs)
        },
        &|ino, size| e.read(ino, 0, size as usize).unwrap(),
        &|ino| e.readlink(ino).unwrap(),
    )
}

fn dump_view(v: &sovseal::repo::view::SnapshotView) -> Dump {
    dump_tree(
        &|ino| {
            v.entries(ino)
                .unwrap()
                .iter()
                .map(|(n, d)| (n.clone(), d.ino))
                .collect()
        },
        &|ino| {
            let i = v.getattr(ino).unwrap();
            (i.file_type(), i.size, i.xattrs)
        },
        &|ino, size| v.read(ino, 0, size as usize).unwrap(),
        &|ino| v.readlink(ino).unwrap(),
    )
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Mkdir(usize),
    Symlink(usize, u8),
    Write(usize, u32, u16, u8),
    Truncate(usize, u32),
    Unlink(usize),
    Rmdir(usize),
    Rename(usize, usize, bool),
    Link(usize, usize),
    SetXattr(usize, u8, u8),
    Commit,
    Crash,
}

const PATHS: &[&str] = &[
    "a", "b", "c", "a/a", "a/b", "b/a", "b/b", "a/a/a", "a/a/b", "b/a/a",
];

/// Offsets and sizes: mostly small (so writes, truncates and extensions
/// overlap within a chunk), sometimes across several chunks, and now and
/// then past 128 chunks of 64 KiB, where a file's references become a
/// chunk tree (tree format 7) that later writes and truncates reshape.
fn pos() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0..20_000u32, 2 => 0..3_000_000u32, 1 => 8_000_000..20_000_000u32]
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    let f = 0..3usize; // top-level paths: files meet most operations
    prop_oneof![
        3 => p.clone().prop_map(Op::Create),
        2 => f.clone().prop_map(Op::Create),
        2 => p.clone().prop_map(Op::Mkdir),
        1 => (p.clone(), any::<u8>()).prop_map(|(a, b)| Op::Symlink(a, b)),
        4 => (f.clone(), pos(), 0..20_000u16, any::<u8>()).prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        2 => (f.clone(), pos()).prop_map(|(a, b)| Op::Truncate(a, b)),
        2 => p.clone().prop_map(Op::Unlink),
        1 => p.clone().prop_map(Op::Rmdir),
        2 => (p.clone(), p.clone(), any::<bool>()).prop_map(|(a, b, c)| Op::Rename(a, b, c)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => (p.clone(), 0..3u8, any::<u8>()).prop_map(|(a, b, c)| Op::SetXattr(a, b, c)),
        2 => Just(Op::Commit),
        1 => Just(Op::Crash),
    ]
}

fn split(p: &str) -> (&str, &[u8]) {
    match p.rsplit_once('/') {
        Some((a, b)) => (a, b.as_bytes()),
        None => ("", p.as_bytes()),
    }
}

fn errno<T>(r: sovseal::Result<T>) -> Result<T, i32> {
    r.map_err(|e| match e {
        sovseal::Error::Fs { errno, .. } => errno,
        other => panic!("unexpected error: {other}"),
    })
}

/// Simulates a crash mid-commit: garbage after the committed end of the pack.
fn append_garbage(env: &Env) {
    let packs = files_under(&env.data_dir().join("packs"));
    let last = packs.iter().max().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&bytes(77, 5000)).unwrap();
}

/// What survives a crash of the process: the journal keeps every
/// acknowledged namespace and attribute operation, not uncommitted file
/// data. `dm` follows `m`'s names, kinds and xattrs; its file contents are
/// the committed ones, changed only by truncation (a journaled operation).
fn follow(dm: &Model, m: &Model) -> Model {
    let mut next = m.clone();
    for (id, i) in next.inodes.iter_mut() {
        if let Kind::File(c) = &mut i.kind {
            *c = match dm.inodes.get(id).map(|o| &o.kind) {
                Some(Kind::File(old)) => old.clone(),
                _ => Vec::new(),
            };
        }
    }
    next
}

fn run(ops: Vec<Op>, fold_every: u32) -> Result<(), TestCaseError> {
    let env = Env::new();
    let open = |env: &Env| {
        let mut e = env.open();
        e.set_fold_every(fold_every);
        e
    };
    let mut e = Some(open(&env));
    let mut m = Model::default();
    let mut committed: Vec<(u64, Model)> = vec![(1, Model::default())];
    // What a crash would leave: see `follow`.
    let mut dm = Model::default();
    for op in ops {
        let eng = e.as_mut().unwrap();
        let dir = |eng: &Engine, p: &str| errno(eng.resolve(p.as_bytes()));
        match op {
            Op::Create(i) | Op::Mkdir(i) | Op::Symlink(i, _) => {
                let p = PATHS[i];
                let (par, name) = split(p);
                let want = m.can_create(p);
                let got = dir(eng, par).and_then(|pi| {
                    errno(match &op {
                        Op::Create(_) => eng.create(pi, name, 0o644, 0, 0).map(|_| ()),
                        Op::Mkdir(_) => eng.mkdir(pi, name, 0o755, 0, 0).map(|_| ()),
                        Op::Symlink(_, t) => eng.symlink(pi, name, &[b't', *t], 0, 0).map(|_| ()),
                        _ => unreachable!(),
                    })
                });
                prop_assert_eq!(&got, &want, "{:?}", op);
                if want.is_ok() {
                    m.add(
                        p,
                        match op {
                            Op::Create(_) => Kind::File(vec![]),
                            Op::Mkdir(_) => Kind::Dir,
                            Op::Symlink(_, t) => Kind::Symlink(vec![b't', t]),
                            _ => unreachable!(),
                        },
                    );
                }
            }
            Op::Write(i, off, len, seed) => {
                let p = PATHS[i];
                if !matches!(m.kind(p), Some(Kind::File(_))) {
                    continue;
                }
                let data = bytes(u64::from(seed), usize::from(len));
                let ino = eng.resolve(p.as_bytes()).unwrap();
                eng.write(ino, u64::from(off), &data).unwrap();
                let id = m.paths[p];
                if let Kind::File(c) = &mut m.inodes.get_mut(&id).unwrap().kind {
                    let end = off as usize + data.len();
                    if c.len() < end {
                        c.resize(end, 0);
                    }
                    c[off as usize..end].copy_from_slice(&data);
                }
            }
            Op::Truncate(i, size) => {
                let p = PATHS[i];
                if !matches!(m.kind(p), Some(Kind::File(_))) {
                    continue;
                }
                let ino = eng.resolve(p.as_bytes()).unwrap();
                eng.setattr(
                    ino,
                    &SetAttr {
                        size: Some(u64::from(size)),
                        ..Default::default()
                    },
                )
                .unwrap();
                let id = m.paths[p];
                if let Kind::File(c) = &mut m.inodes.get_mut(&id).unwrap().kind {
                    c.resize(size as usize, 0);
                }
            }
            Op::Unlink(i) | Op::Rmdir(i) => {
                let p = PATHS[i];
                let (par, name) = split(p);
                let is_rmdir = matches!(op, Op::Rmdir(_));
                let want = match (m.dir_check(parent_of(p)), m.kind(p)) {
                    (Err(e), _) => Err(e),
                    (_, None) => Err(libc::ENOENT),
                    (_, Some(Kind::Dir)) if !is_rmdir => Err(libc::EISDIR),
                    (_, Some(Kind::Dir)) if !m.children(p).is_empty() => Err(libc::ENOTEMPTY),
                    (_, Some(Kind::Dir)) => Ok(()),
                    (_, Some(_)) if is_rmdir => Err(libc::ENOTDIR),
                    _ => Ok(()),
                };
                let got = dir(eng, par).and_then(|pi| {
                    errno(if is_rmdir {
                        eng.rmdir(pi, name)
                    } else {
                        eng.unlink(pi, name)
                    })
                });
                prop_assert_eq!(&got, &want, "{:?}", op);
                if want.is_ok() {
                    m.remove(p);
                }
            }
            Op::Rename(a, b, noreplace) => {
                let (src, dst) = (PATHS[a], PATHS[b]);
                let (sp, sn) = split(src);
                let (dp, dn) = split(dst);
                let got = dir(eng, sp).and_then(|s| {
                    dir(eng, dp).and_then(|d| {
                        errno(eng.rename(
                            s,
                            sn,
                            d,
                            dn,
                            RenameFlags {
                                noreplace,
                                exchange: false,
                            },
                        ))
                    })
                });
                let src_dir = m.is_dir(src);
                let want_ok = m.is_dir(sp)
                    && m.is_dir(dp)
                    && m.paths.contains_key(src)
                    && match m.paths.get(dst) {
                        Some(_) if noreplace => false,
                        Some(d) if *d == m.paths[src] => true,
                        Some(_) if src_dir != m.is_dir(dst) => false,
                        Some(_) if src_dir && !m.children(dst).is_empty() => false,
                        _ => !(src_dir && dst.starts_with(&format!("{src}/"))),
                    };
                prop_assert_eq!(got.is_ok(), want_ok, "{:?} -> {:?}", op, got);
                if want_ok && m.paths.get(dst) != m.paths.get(src) {
                    if m.paths.contains_key(dst) {
                        m.remove(dst);
                    }
                    let moved: Vec<String> = m.children(src);
                    let id = m.paths.remove(src).unwrap();
                    m.paths.insert(dst.to_owned(), id);
                    for c in moved {
                        let id = m.paths.remove(&c).unwrap();
                        m.paths.insert(format!("{dst}{}", &c[src.len()..]), id);
                    }
                }
            }
            Op::Link(a, b) => {
                let (src, dst) = (PATHS[a], PATHS[b]);
                let Some(k) = m.kind(src) else { continue };
                let want = if *k == Kind::Dir {
                    Err(libc::EPERM)
                } else {
                    m.can_create(dst)
                };
                let (dp, dn) = split(dst);
                let got = dir(eng, dp).and_then(|d| {
                    let s = eng.resolve(src.as_bytes()).unwrap();
                    errno(eng.link(s, d, dn).map(|_| ()))
                });
                prop_assert_eq!(got.is_ok(), want.is_ok(), "{:?} -> {:?}", op, got);
                if want.is_ok() {
                    let id = m.paths[src];
                    m.paths.insert(dst.to_owned(), id);
                }
            }
            Op::SetXattr(i, k, v) => {
                let p = PATHS[i];
                let Some(&id) = m.paths.get(p) else { continue };
                let ino = eng.resolve(p.as_bytes()).unwrap();
                let key = format!("user.k{k}").into_bytes();
                eng.setxattr(ino, &key, &[v], XattrFlags::default())
                    .unwrap();
                m.inodes.get_mut(&id).unwrap().xattrs.insert(key, vec![v]);
            }
            Op::Commit => {
                if let Some(info) = eng.commit().unwrap() {
                    committed.push((info.seq, m.clone()));
                }
                dm = m.clone();
            }
            Op::Crash => {
                drop(e.take());
                append_garbage(&env);
                e = Some(open(&env));
                m = dm.clone();
                // The replay committed the journaled operations.
                let eng = e.as_ref().unwrap();
                if committed.last().is_some_and(|(s, _)| *s < eng.head().seq()) {
                    committed.push((eng.head().seq(), m.clone()));
                }
            }
        }
        match op {
            Op::Write(..) | Op::Commit | Op::Crash => {}
            Op::Truncate(i, size) => {
                dm = follow(&dm, &m);
                if let Some(id) = m.paths.get(PATHS[i])
                    && let Some(MInode {
                        kind: Kind::File(c),
                        ..
                    }) = dm.inodes.get_mut(id)
                {
                    c.resize(size as usize, 0);
                }
            }
            _ => dm = follow(&dm, &m),
        }
        prop_assert_eq!(dump_engine(e.as_ref().unwrap()), m.dump());
    }
    let eng = e.as_ref().unwrap();
    for (seq, model) in &committed {
        let v = eng.agent().snapshot(*seq).unwrap();
        prop_assert_eq!(dump_view(&v), model.dump(), "snapshot {}", seq);
    }
    sovseal::history::verify::verify(eng.agent(), |_, _| {}).unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, sovseal::engine::FOLD_EVERY)?;
    }

    /// The same with delta chains of 1 to 3 commits (tree format 8): folds,
    /// chains and crashes interleave, and every snapshot on the way reads
    /// as the model had it.
    #[test]
    fn engine_matches_model_folding_often(
        ops in proptest::collection::vec(op(), 1..60),
        fold_every in 0u32..4,
    ) {
        run(ops, fold_every)?;
    }
}
