//! Golden fixtures of every envelope format (tests/fixtures/v1/, v2/): a
//! snapshot envelope and the sealed objects it references, exactly as
//! written by that format. They must keep decoding, through the public
//! format API alone, to the tree below; re-encoding what they decode to
//! must give the same bytes (the encodings are canonical); and the
//! must-fail fixtures must keep failing with the right error.
//!
//! `SOVSEAL_WRITE_FIXTURES=1 cargo test --test fixtures -- --test-threads=1`
//! writes the fixtures of the current format (`envelope::FORMAT`) only:
//! older versions stay exactly as they were written.

mod support;
use sovseal::Error;
use sovseal::config::{AgentName, Home};
use sovseal::engine::{Engine, XattrFlags};
use sovseal::seal::envelope::{self, Envelope};
use sovseal::seal::keys::{AgentKeys, MasterKey};
use sovseal::seal::tree::{
    self, ChunkRef, Chunks, Content, DirRef, FileType, ObjectId, ObjectKind, Pages, ROOT_INO,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::home::bytes;

const MASTER: [u8; 32] = [0x42; 32];
const AGENT: &str = "fixture";

fn dir(v: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/v{v}"))
}

fn keys() -> AgentKeys {
    MasterKey::from_bytes(MASTER).agent_keys(AGENT)
}

/// The fixture agent, fresh, in a home at `dir`.
fn fixture_engine(dir: &Path) -> Engine {
    Engine::open(
        &Home::at(dir),
        &AgentName::new(AGENT).unwrap(),
        &MasterKey::from_bytes(MASTER),
    )
    .unwrap()
}

/// Writes snapshot `seq`'s envelope and every object it references into
/// `d` (`envelope.json`, `objects/<id>.<kind>`).
fn write_snapshot(a: &sovseal::repo::agent::Agent, seq: u64, d: &Path) -> Envelope {
    let env = a.envelope(seq).unwrap();
    std::fs::write(d.join("envelope.json"), env.to_json()).unwrap();
    a.snapshot(seq)
        .unwrap()
        .walk_objects(&|_| false, &mut |kind, r| {
            std::fs::write(
                d.join(format!("objects/{}.{}", r.id.to_hex(), kind as u8)),
                a.sealed_object(r).unwrap(),
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
    env
}

fn write_fixtures(v: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    let hello = e.create(ROOT_INO, b"hello.txt", 0o644, 1000, 1000).unwrap();
    e.write(hello.ino, 0, b"hello, sovseal\n").unwrap();
    e.setxattr(hello.ino, b"user.note", b"golden", XattrFlags::default())
        .unwrap();
    let docs = e.mkdir(ROOT_INO, b"docs", 0o750, 1000, 1000).unwrap();
    e.symlink(docs.ino, b"link", b"../hello.txt", 1000, 1000)
        .unwrap();
    e.link(hello.ino, docs.ino, b"hard").unwrap();
    let sparse = e.create(ROOT_INO, b"sparse", 0o600, 1000, 1000).unwrap();
    e.write(sparse.ino, 0, b"start").unwrap();
    e.write(sparse.ino, (9 << 20) + 5, b"end").unwrap();
    e.create(ROOT_INO, b"empty", 0o600, 1000, 1000).unwrap();
    // Special files (inode types 4-7) exist from format 2 on.
    if v >= 2 {
        e.mknod(docs.ino, b"fifo", FileType::Fifo, 0o640, 0, 1000, 1000)
            .unwrap();
        e.mknod(docs.ino, b"null", FileType::CharDev, 0o666, 0x0103, 0, 0)
            .unwrap();
    }
    let info = e.commit().unwrap().unwrap();
    let a = e.agent();
    let d = dir(v);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("objects")).unwrap();
    std::fs::create_dir_all(d.join("must-fail")).unwrap();
    let env = write_snapshot(a, info.seq, &d);
    // Must-fail variants of the envelope.
    let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    let variant = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        f(&mut j);
        std::fs::write(
            d.join(format!("must-fail/{name}.json")),
            serde_json::to_vec(&j).unwrap(),
        )
        .unwrap();
    };
    variant("format-version-next", &|j| {
        j["format_version"] = (v + 1).into()
    });
    variant("format-version-previous", &|j| {
        j["format_version"] = (v - 1).into()
    });
    variant("key-version-2", &|j| j["key_version"] = 2.into());
    variant("payload-hash", &|j| {
        j["client_payload_hash"] = "00".repeat(32).into()
    });
    let mut short = env.sealed.clone();
    short.truncate(short.len() - 1);
    use base64::Engine as _;
    let short = base64::engine::general_purpose::STANDARD.encode(&short);
    let len = env.sealed.len() - 1;
    variant("truncated", &|j| {
        j["ciphertext_b64"] = short.clone().into();
        j["byte_size"] = len.into();
    });
    variant("sequence-moved", &|j| j["sequence_number"] = 7.into());
    variant("unknown-field", &|j| j["plaintext"] = "x".into());
    std::fs::write(d.join("must-fail/not-json.json"), b"{\"agent_id\": ").unwrap();
}

fn object(v: u32, kind: ObjectKind, id: &ObjectId) -> Vec<u8> {
    object_in(&dir(v), kind, id)
}

fn object_in(d: &Path, kind: ObjectKind, id: &ObjectId) -> Vec<u8> {
    let sealed = std::fs::read(d.join(format!("objects/{}.{}", id.to_hex(), kind as u8)))
        .unwrap_or_else(|e| panic!("fixture object {} {}: {e}", kind.name(), id.to_hex()));
    let plain = envelope::open_object(&keys(), kind, id, &sealed).unwrap();
    assert_eq!(
        envelope::object_id(&keys(), kind, &plain),
        *id,
        "object ids are stable"
    );
    plain
}

#[derive(Debug, PartialEq)]
enum Node {
    File {
        perm: u32,
        nlink: u32,
        data: Vec<u8>,
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    },
    Dir {
        perm: u32,
        nlink: u32,
    },
    Symlink(Vec<u8>),
    Special(FileType, u32, u64),
}

fn file_data(v: u32, refs: &[ChunkRef], size: u64, chunk: u64) -> Vec<u8> {
    file_data_in(&dir(v), refs, size, chunk)
}

fn file_data_in(d: &Path, refs: &[ChunkRef], size: u64, chunk: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    for (i, r) in refs.iter().enumerate() {
        if let Some(id) = r {
            let c = object_in(d, ObjectKind::Chunk, id);
            let at = i as u64 * chunk;
            out[at as usize..at as usize + c.len()].copy_from_slice(&c);
        }
    }
    out
}

#[test]
fn golden_v1_decodes() {
    decodes(1);
}

#[test]
fn golden_v2_decodes() {
    if std::env::var_os("SOVSEAL_WRITE_FIXTURES").is_some() {
        assert_eq!(envelope::FORMAT, 2, "write the new format's own fixtures");
        write_fixtures(envelope::FORMAT);
    }
    decodes(2);
}

/// The manifest of the golden snapshot in `d` (written by `write` first
/// when asked to and absent), whose encoding must be canonical: it hashes
/// to what its envelope names.
fn golden_tree_manifest(d: &Path, write: fn(&Path)) -> tree::Manifest {
    if std::env::var_os("SOVSEAL_WRITE_FIXTURES").is_some() && !d.exists() {
        write(d);
    }
    let env = Envelope::from_json(&std::fs::read(d.join("envelope.json")).unwrap()).unwrap();
    let m = envelope::open_manifest(&keys(), &env).unwrap();
    use sha2::Digest;
    let again: [u8; 32] = sha2::Sha256::digest(tree::encode_manifest(&m)).into();
    assert_eq!(again, env.client_payload_hash, "canonical manifest");
    m
}

/// Tree format 2 (tests/fixtures/v2/tree2/): the manifest names a page
/// map instead of listing its pages, pages hold 32 inodes, and a directory
/// of 100 entries, more than one directory node holds, is a directory
/// index node over leaves split by a keyed hash of the names. Decoded with the format API alone; the
/// writer only ever adds it (it never rewrites the format-1 fixtures).
#[test]
fn golden_tree2_decodes() {
    let d = dir(2).join("tree2");
    let m = golden_tree_manifest(&d, write_tree2);
    assert_eq!(m.format, 2);
    assert_eq!(m.inodes_per_page, 32);
    // The page map: a radix tree over the page numbers' hex digits.
    let Pages::Map(Some(root)) = &m.pages else {
        panic!("tree format 2 names a page map");
    };
    let mut inodes = BTreeMap::new();
    let mut map_nodes = 0;
    let mut stack = vec![(*root, None::<u8>, 0u64)];
    while let Some((id, parent_level, prefix)) = stack.pop() {
        let raw = object_in(&d, ObjectKind::PageMap, &id.id);
        let n = tree::decode_page_map(&raw).unwrap();
        assert_eq!(tree::encode_page_map(&n), raw, "canonical page-map node");
        if let Some(p) = parent_level {
            assert_eq!(n.level + 1, p);
        }
        map_nodes += 1;
        for (digit, c) in n.children.iter().enumerate() {
            let Some(c) = c else { continue };
            let no = (prefix << 4) | digit as u64;
            if n.level > 0 {
                stack.push((*c, Some(n.level), no));
                continue;
            }
            let (pno, page) = tree::decode_page(
                &object_in(&d, ObjectKind::InodePage, &c.id),
                m.inodes_per_page,
            )
            .unwrap();
            assert_eq!(pno, no);
            inodes.extend(page);
        }
    }
    // 102 inodes in pages of 32: pages 0-3 under one level-0 node.
    assert_eq!(map_nodes, 1);
    assert_eq!(inodes.len(), 102);
    let Content::Dir(Some(DirRef::Leaf(root))) = &inodes[&ROOT_INO].content else {
        panic!("the root is one directory node");
    };
    let root = tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &root.id)).unwrap();
    let big = root[&b"big"[..]].ino;
    let Content::Dir(Some(DirRef::Index(idx))) = &inodes[&big].content else {
        panic!("a directory of 100 entries is an index node");
    };
    // (node, digits of its path) — every entry must sit where its hash
    // places it, and every count must add up.
    let mut names = BTreeMap::new();
    let mut stack = vec![(DirRef::Index(*idx), Vec::<usize>::new(), None::<u64>)];
    let mut index_nodes = 0;
    while let Some((node, path, want)) = stack.pop() {
        match node {
            DirRef::Index(id) => {
                let raw = object_in(&d, ObjectKind::DirIndex, &id.id);
                let n = tree::decode_dir_index(&raw).unwrap();
                assert_eq!(tree::encode_dir_index(&n), raw, "canonical index node");
                assert_eq!(usize::from(n.depth), path.len());
                if let Some(w) = want {
                    assert_eq!(n.count(), w);
                }
                index_nodes += 1;
                for (digit, c) in n.children.iter().enumerate() {
                    if let Some(c) = c {
                        let mut p = path.clone();
                        p.push(digit);
                        stack.push((c.node, p, Some(c.count)));
                    }
                }
            }
            DirRef::Leaf(id) => {
                let raw = object_in(&d, ObjectKind::DirNode, &id.id);
                let e = tree::decode_dir(&raw).unwrap();
                assert_eq!(tree::encode_dir(&e), raw);
                assert_eq!(Some(e.len() as u64), want);
                assert!(e.len() as u64 <= tree::DIR_LEAF_MAX);
                for (name, entry) in e {
                    let h = keys().dir_name_hash(&name);
                    for (depth, digit) in path.iter().enumerate() {
                        assert_eq!(tree::dir_digit(&h, depth as u8), *digit);
                    }
                    assert_eq!(inodes[&entry.ino].file_type(), entry.file_type);
                    names.insert(String::from_utf8(name).unwrap(), entry.ino);
                }
            }
        }
    }
    assert_eq!(index_nodes, 1);
    let want: Vec<String> = (0..100).map(|k| format!("f{k:03}")).collect();
    assert_eq!(names.keys().cloned().collect::<Vec<_>>(), want);
    // Placement pinned: the keyed name hash and its digits are the format.
    assert_eq!(
        sovseal::hex::encode(&keys().dir_name_hash(b"f000")[..8]),
        std::fs::read_to_string(d.join("hash-f000.txt"))
            .unwrap()
            .trim()
    );
}

/// `big/` with entries f000..f099: a directory index node over leaves.
fn big_dir(e: &mut Engine) -> u64 {
    let big = e.mkdir(ROOT_INO, b"big", 0o755, 1000, 1000).unwrap();
    for k in 0..100 {
        e.create(big.ino, format!("f{k:03}").as_bytes(), 0o644, 1000, 1000)
            .unwrap();
    }
    big.ino
}

fn write_tree2(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    big_dir(&mut e);
    let info = e.commit().unwrap().unwrap();
    let a = e.agent();
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(a, info.seq, d);
    std::fs::write(
        d.join("hash-f000.txt"),
        sovseal::hex::encode(&keys().dir_name_hash(b"f000")[..8]),
    )
    .unwrap();
}

/// Tree format 3 (tests/fixtures/v2/tree3/): page-map nodes count the
/// inodes below each child, inode numbers are reused, and a new agent's
/// pages hold 16 inodes. Written as 40 files (inodes 2-41), ten deleted
/// (5-14) and five created after them, which took the lowest free numbers
/// (5-9). Decoded with the format API alone: the counts are exactly the
/// pages' sizes.
#[test]
fn golden_tree3_decodes() {
    let d = dir(2).join("tree3");
    let m = golden_tree_manifest(&d, write_tree3);
    assert_eq!((m.format, m.inodes_per_page, m.next_ino), (3, 16, 42));
    let Pages::Counted(Some(root)) = &m.pages else {
        panic!("tree format 3 names a counted page map");
    };
    let raw = object_in(&d, ObjectKind::PageMap, &root.id);
    let n = tree::decode_page_map(&raw).unwrap();
    assert_eq!(tree::encode_page_map(&n), raw, "canonical page-map node");
    assert_eq!(n.level, 0);
    let counts = n.counts.expect("format 3 counts");
    let mut inodes = BTreeMap::new();
    for (no, c) in n.children.iter().enumerate() {
        let Some(c) = c else {
            assert_eq!(counts[no], 0);
            continue;
        };
        let (pno, page) =
            tree::decode_page(&object_in(&d, ObjectKind::InodePage, &c.id), 16).unwrap();
        assert_eq!(pno, no as u64);
        assert_eq!(counts[no], page.len() as u64, "page {no}'s count");
        inodes.extend(page);
    }
    let want: Vec<u64> = (1..=4).chain(5..=9).chain(15..=41).collect();
    assert_eq!(inodes.keys().copied().collect::<Vec<_>>(), want);
    // Page 0 (inodes 1-15): 1-9 and 15; page 1: 16-31; page 2: 32-41.
    assert_eq!(counts[..4], [10, 16, 10, 0]);
    let Content::Dir(Some(DirRef::Leaf(dir))) = &inodes[&ROOT_INO].content else {
        panic!("the root is one directory node");
    };
    let names = tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &dir.id)).unwrap();
    assert_eq!(names[&b"new0"[..]].ino, 5);
    assert_eq!(names[&b"new4"[..]].ino, 9);
    assert_eq!(names[&b"f13"[..]].ino, 15);
    assert!(!names.contains_key(&b"f03"[..]));
}

fn write_tree3(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    for k in 0..40 {
        e.create(ROOT_INO, format!("f{k:02}").as_bytes(), 0o644, 1000, 1000)
            .unwrap();
    }
    e.commit().unwrap();
    for k in 3..13 {
        e.unlink(ROOT_INO, format!("f{k:02}").as_bytes()).unwrap();
    }
    for k in 0..5 {
        e.create(ROOT_INO, format!("new{k}").as_bytes(), 0o644, 1000, 1000)
            .unwrap();
    }
    let info = e.commit().unwrap().unwrap();
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(e.agent(), info.seq, d);
}

/// Tree format 4 (tests/fixtures/v2/tree4/): the manifest carries the
/// snapshot's provenance: the agent's note, the processes that wrote, and
/// which inode each created, changed or removed a name of. Written
/// through the engine API as a mount would: two writers, a removal.
#[test]
fn golden_tree4_decodes() {
    let d = dir(2).join("tree4");
    let m = golden_tree_manifest(&d, write_tree4);
    assert_eq!((m.format, m.seq), (4, 3));
    let p = m.provenance.expect("format 4 carries provenance");
    assert_eq!(p.note.as_deref(), Some(&b"tool call 7: tidy the notes"[..]));
    assert_eq!(p.writers, [writer(4242, "python3"), writer(4250, "rm")]);
    assert_eq!(p.changes.iter().copied().collect::<Vec<_>>(), [(3, 0)]);
    assert_eq!(p.removed.iter().copied().collect::<Vec<_>>(), [(2, 1)]);
}

fn writer(pid: u32, comm: &str) -> tree::Writer {
    tree::Writer {
        pid,
        uid: 1000,
        gid: 1000,
        comm: comm.as_bytes().to_vec(),
        exe: format!("/usr/bin/{comm}").into_bytes(),
    }
}

fn write_tree4(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    let gone = e.create(ROOT_INO, b"old.md", 0o644, 1000, 1000).unwrap();
    e.commit().unwrap();
    e.set_note(Some(b"tool call 7: tidy the notes".to_vec()))
        .unwrap();
    let f = e.create(ROOT_INO, b"notes.md", 0o644, 1000, 1000).unwrap();
    e.write(f.ino, 0, b"tidy\n").unwrap();
    e.attribute(f.ino, &writer(4242, "python3"));
    e.unlink(ROOT_INO, b"old.md").unwrap();
    e.attribute_removal(gone.ino, &writer(4250, "rm"));
    let info = e.commit().unwrap().unwrap();
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(e.agent(), info.seq, d);
}

/// Tree format 6 (tests/fixtures/v2/tree6/): references to metadata
/// objects carry their home, the snapshot whose commit stored them. Written
/// as two commits: a directory of 100 entries (an index node) and a file,
/// then a change to the file and one more name in the directory. The
/// second snapshot (3) stores what it changed at home 3 and keeps
/// references to what it did not change at home 2. Decoded with the
/// format API alone; every node re-encodes to its bytes.
#[test]
fn golden_tree6_decodes() {
    let d = dir(2).join("tree6");
    let m = golden_tree_manifest(&d, write_tree6);
    assert_eq!((m.format, m.seq), (6, 3));
    let Pages::Counted(Some(root)) = &m.pages else {
        panic!("tree format 6 names a counted page map");
    };
    assert_eq!(root.home, 3, "the page map changed in snapshot 3");
    let raw = object_in(&d, ObjectKind::PageMap, &root.id);
    let n = tree::decode_page_map(&raw).unwrap();
    assert_eq!(tree::encode_page_map(&n), raw, "canonical page-map node");
    let mut inodes = BTreeMap::new();
    let mut page_homes = Vec::new();
    for (no, c) in n.children.iter().enumerate() {
        let Some(c) = c else { continue };
        let raw = object_in(&d, ObjectKind::InodePage, &c.id);
        let (pno, page) = tree::decode_page(&raw, m.inodes_per_page).unwrap();
        assert_eq!(tree::encode_page(pno, &page), raw, "canonical page");
        assert_eq!(pno, no as u64);
        page_homes.push(c.home);
        inodes.extend(page);
    }
    // 104 inodes in pages of 16; the pages with a change are at home 3,
    // the others still at home 2.
    assert_eq!(inodes.len(), 104);
    assert!(
        page_homes.contains(&2) && page_homes.contains(&3),
        "{page_homes:?}"
    );
    let Content::Dir(Some(DirRef::Leaf(root_dir))) = &inodes[&ROOT_INO].content else {
        panic!("the root is one directory node");
    };
    let names = tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &root_dir.id)).unwrap();
    let notes = &inodes[&names[&b"notes.md"[..]].ino];
    let Content::File(Chunks::Inline(refs)) = &notes.content else {
        panic!("a small file's chunks are inline");
    };
    assert_eq!(
        file_data_in(&d, refs, notes.size, u64::from(m.chunk_size)),
        b"second\n"
    );
    let Content::Dir(Some(DirRef::Index(idx))) = &inodes[&names[&b"big"[..]].ino].content else {
        panic!("a directory of 101 entries is an index node");
    };
    assert_eq!(idx.home, 3);
    let raw = object_in(&d, ObjectKind::DirIndex, &idx.id);
    let n = tree::decode_dir_index(&raw).unwrap();
    assert_eq!(tree::encode_dir_index(&n), raw, "canonical index node");
    let mut leaf_homes = BTreeMap::new();
    let mut entries = 0;
    for c in n.children.iter().flatten() {
        let DirRef::Leaf(leaf) = c.node else {
            panic!("101 entries split once");
        };
        *leaf_homes.entry(leaf.home).or_insert(0) += 1;
        let e = tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &leaf.id)).unwrap();
        assert_eq!(e.len() as u64, c.count);
        entries += e.len();
    }
    assert_eq!(entries, 101);
    // One leaf took `g000` (home 3); the others are those of snapshot 2.
    assert_eq!(leaf_homes.get(&3), Some(&1), "{leaf_homes:?}");
    assert!(leaf_homes.get(&2).is_some_and(|n| *n > 1), "{leaf_homes:?}");
}

fn write_tree6(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    let big = big_dir(&mut e);
    let notes = e.create(ROOT_INO, b"notes.md", 0o644, 1000, 1000).unwrap();
    e.write(notes.ino, 0, b"first\n").unwrap();
    e.commit().unwrap();
    e.write(notes.ino, 0, b"second\n").unwrap();
    e.create(big, b"g000", 0o644, 1000, 1000).unwrap();
    let info = e.commit().unwrap().unwrap();
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(e.agent(), info.seq, d);
}

/// Tree format 7 (tests/fixtures/v2/tree7/): a file of more than
/// `CHUNK_LIST_LEAF` chunks keeps its references in a chunk tree. Written
/// as a sparse file of 200 chunks (data in the first and the last, holes
/// between) whose first chunk then changed: the root chunk-index node
/// names two chunk lists, of 128 and 72 references. Decoded with the
/// format API alone; every node re-encodes to its bytes.
#[test]
fn golden_tree7_decodes() {
    let d = dir(2).join("tree7");
    let m = golden_tree_manifest(&d, write_tree7);
    assert_eq!((m.format, m.seq), (7, 3));
    let Pages::Counted(Some(root)) = &m.pages else {
        panic!("tree format 7 names a counted page map");
    };
    let n = tree::decode_page_map(&object_in(&d, ObjectKind::PageMap, &root.id)).unwrap();
    let mut inodes = BTreeMap::new();
    for c in n.children.iter().flatten() {
        let raw = object_in(&d, ObjectKind::InodePage, &c.id);
        inodes.extend(tree::decode_page(&raw, m.inodes_per_page).unwrap().1);
    }
    let Content::Dir(Some(DirRef::Leaf(root_dir))) = &inodes[&ROOT_INO].content else {
        panic!("the root is one directory node");
    };
    let names = tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &root_dir.id)).unwrap();
    let sparse = &inodes[&names[&b"sparse.bin"[..]].ino];
    let chunk = u64::from(m.chunk_size);
    assert_eq!(sparse.size, 199 * chunk + 4);
    let Content::File(Chunks::Tree { id, count: 200 }) = &sparse.content else {
        panic!("200 chunks are a chunk tree: {:?}", sparse.content);
    };
    let raw = object_in(&d, ObjectKind::ChunkIndex, id);
    let node = tree::decode_chunk_index(&raw).unwrap();
    assert_eq!(
        tree::encode_chunk_index(&node),
        raw,
        "canonical chunk-index node"
    );
    assert_eq!((node.height, node.children.len()), (1, 2));
    let mut refs: Vec<ChunkRef> = Vec::new();
    for (c, len) in node.children.iter().zip([tree::CHUNK_LIST_LEAF, 72]) {
        let raw = object_in(&d, ObjectKind::ChunkList, c);
        let l = tree::decode_chunk_list(&raw).unwrap();
        assert_eq!(tree::encode_chunk_list(&l), raw, "canonical chunk list");
        assert_eq!(l.len(), len);
        refs.extend(l);
    }
    let data = file_data_in(&d, &refs, sparse.size, chunk);
    assert_eq!(&data[..6], b"second");
    assert_eq!(&data[data.len() - 4..], b"tail");
    assert!(data[6..data.len() - 4].iter().all(|b| *b == 0));
}

fn write_tree7(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    let f = e
        .create(ROOT_INO, b"sparse.bin", 0o644, 1000, 1000)
        .unwrap();
    let chunk = u64::from(tree::CHUNK_SIZE);
    e.write(f.ino, 0, b"first").unwrap();
    e.write(f.ino, 199 * chunk, b"tail").unwrap();
    e.commit().unwrap();
    e.write(f.ino, 0, b"second").unwrap();
    let info = e.commit().unwrap().unwrap();
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(e.agent(), info.seq, d);
}

/// Tree format 8 (tests/fixtures/v2/tree8/): the manifest names the
/// newest delta of a chain of two on top of a fold's pages. Written with a
/// fold every two commits: a fold (snapshot 4) then two delta commits;
/// the second removes a directory the first filled and makes a new one
/// under its inode number, so its edits of that number start fresh.
/// Decoded with the format API alone (and `Merged`, the chain applied);
/// every delta re-encodes to its bytes.
#[test]
fn golden_tree8_decodes() {
    use sovseal::repo::delta::Merged;
    let d = dir(2).join("tree8");
    let m = golden_tree_manifest(&d, write_tree8);
    assert_eq!((m.format, m.seq), (8, 6));
    let Pages::Counted(Some(root)) = &m.pages else {
        panic!("tree format 8 names a counted page map");
    };
    assert_eq!(root.home, 4, "the fold's page map");
    let mut deltas = Vec::new();
    let mut next = m.delta;
    while let Some(r) = next {
        let raw = object_in(&d, ObjectKind::Delta, &r.id);
        let delta = tree::decode_delta(&raw).unwrap();
        assert_eq!(tree::encode_delta(&delta), raw, "canonical delta");
        next = delta.prev;
        deltas.push((r.home, delta));
    }
    let homes: Vec<(u64, u32)> = deltas.iter().map(|(h, d)| (*h, d.depth)).collect();
    assert_eq!(homes, [(6, 2), (5, 1)]);
    let mut merged = Merged::default();
    for (_, delta) in deltas.iter().rev() {
        merged.apply(delta);
    }
    // The fold's records, then the chain's over them.
    let n = tree::decode_page_map(&object_in(&d, ObjectKind::PageMap, &root.id)).unwrap();
    let mut inodes = BTreeMap::new();
    for c in n.children.iter().flatten() {
        let raw = object_in(&d, ObjectKind::InodePage, &c.id);
        inodes.extend(tree::decode_page(&raw, m.inodes_per_page).unwrap().1);
    }
    for (ino, i) in &merged.inodes {
        match i {
            Some(i) => inodes.insert(*ino, i.clone()),
            None => inodes.remove(ino),
        };
    }
    let entries = |ino: u64| -> tree::Entries {
        merged
            .entries(ino, || {
                Ok(match &inodes[&ino].content {
                    Content::Dir(None) => std::sync::Arc::new(tree::Entries::new()),
                    Content::Dir(Some(DirRef::Leaf(r))) => std::sync::Arc::new(
                        tree::decode_dir(&object_in(&d, ObjectKind::DirNode, &r.id)).unwrap(),
                    ),
                    c => panic!("{c:?}"),
                })
            })
            .unwrap()
            .as_ref()
            .clone()
    };
    let root = entries(ROOT_INO);
    assert_eq!(
        root.keys().map(Vec::as_slice).collect::<Vec<_>>(),
        [&b"kept.txt"[..], b"new", b"notes.txt"]
    );
    // The new directory took the old one's number: its edits start fresh,
    // and it holds only its own name.
    let new = root[&b"new"[..]].ino;
    assert!(deltas[0].1.dirs[&new].fresh, "{:?}", deltas[0].1.dirs);
    assert_eq!(
        entries(new).keys().map(Vec::as_slice).collect::<Vec<_>>(),
        [&b"inner"[..]]
    );
    let notes = &inodes[&root[&b"notes.txt"[..]].ino];
    let Content::File(Chunks::Inline(refs)) = &notes.content else {
        panic!("{:?}", notes.content);
    };
    let data = file_data_in(&d, refs, notes.size, u64::from(m.chunk_size));
    assert_eq!(data, b"third\n");
}

fn write_tree8(d: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut e = fixture_engine(tmp.path());
    e.set_fold_every(2);
    let notes = e.create(ROOT_INO, b"notes.txt", 0o644, 1000, 1000).unwrap();
    e.write(notes.ino, 0, b"first\n").unwrap();
    e.create(ROOT_INO, b"kept.txt", 0o644, 1000, 1000).unwrap();
    e.commit().unwrap(); // 2: a delta
    e.commit().unwrap(); // (nothing changed: no snapshot)
    e.write(notes.ino, 0, b"zero\n").unwrap();
    e.commit().unwrap(); // 3: a delta
    e.write(notes.ino, 0, b"fold\n").unwrap();
    assert_eq!(e.commit().unwrap().unwrap().seq, 4); // a fold
    let old = e.mkdir(ROOT_INO, b"old", 0o755, 1000, 1000).unwrap();
    e.create(old.ino, b"a", 0o644, 1000, 1000).unwrap();
    e.commit().unwrap(); // 5: a delta
    e.unlink(old.ino, b"a").unwrap();
    e.rmdir(ROOT_INO, b"old").unwrap();
    let new = e.mkdir(ROOT_INO, b"new", 0o755, 1000, 1000).unwrap();
    assert_eq!(new.ino, old.ino, "the number is reused");
    e.create(new.ino, b"inner", 0o644, 1000, 1000).unwrap();
    e.write(notes.ino, 0, b"third\n").unwrap();
    let info = e.commit().unwrap().unwrap(); // 6: a delta
    assert_eq!(info.seq, 6);
    std::fs::create_dir_all(d.join("objects")).unwrap();
    write_snapshot(e.agent(), info.seq, d);
}

/// The local pack layout with a commit record (tests/fixtures/v2/
/// commit.pack, written by builds before tree format 8 with the envelope's
/// JSON form; commit-record.pack, with its binary form, what this build
/// writes): the v2 fixture's objects in id order, then the commit record
/// of its envelope. Each must decode to exactly those objects and that
/// envelope; the second must encode back to the same bytes.
#[test]
fn golden_commit_pack_decodes() {
    use sovseal::repo::pack::{self, Record};
    let d = dir(2);
    let env = Envelope::from_json(&std::fs::read(d.join("envelope.json")).unwrap()).unwrap();
    let mut objects: Vec<(ObjectId, ObjectKind, Vec<u8>)> = std::fs::read_dir(d.join("objects"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let (hex, kind) = name.split_once('.').unwrap();
            let id = ObjectId(sovseal::hex::decode32(hex).unwrap());
            let kind = ObjectKind::from_u8(kind.parse().unwrap()).unwrap();
            (
                id,
                kind,
                std::fs::read(d.join("objects").join(&name)).unwrap(),
            )
        })
        .collect();
    objects.sort_by_key(|o| o.0.0);
    let mut encoded = pack::PACK_MAGIC.to_vec();
    for (id, kind, sealed) in &objects {
        pack::encode_record(&mut encoded, id, *kind, sealed);
    }
    pack::encode_commit(&mut encoded, &env);
    let path = d.join("commit-record.pack");
    if std::env::var_os("SOVSEAL_WRITE_FIXTURES").is_some() && !path.exists() {
        std::fs::write(&path, &encoded).unwrap();
    }
    let json = std::fs::read(d.join("commit.pack")).unwrap();
    let golden = std::fs::read(&path).unwrap();
    for pack_bytes in [&json, &golden] {
        let recs = pack::decode_local(pack_bytes).unwrap();
        assert_eq!(recs.len(), objects.len() + 1);
        for (r, (id, kind, sealed)) in recs.iter().zip(&objects) {
            match r {
                Record::Object(rid, rkind, body) => {
                    assert_eq!((rid, rkind, *body), (id, kind, &sealed[..]));
                }
                Record::Commit(_) => panic!("a commit record before the objects"),
            }
        }
        match recs.last().unwrap() {
            Record::Commit(e) => assert_eq!(*e, env),
            r => panic!("the pack ends with {r:?}"),
        }
        // A remote pack part never carries a commit record.
        assert!(pack::decode_part(2, pack_bytes).is_err());
    }
    assert_eq!(golden, encoded, "the pack layout is stable");
    assert!(
        golden.len() + 300 < json.len(),
        "the binary form is smaller"
    );
}

fn decodes(v: u32) {
    let env = Envelope::from_json(&std::fs::read(dir(v).join("envelope.json")).unwrap()).unwrap();
    assert_eq!(env.format_version, v);
    let m = envelope::open_manifest(&keys(), &env).unwrap();
    assert_eq!(env.sequence_number, 2);
    assert_eq!(m.agent_id, keys().agent_id());
    assert_eq!(
        Envelope::from_json(&env.to_json()).unwrap(),
        env,
        "JSON round-trips"
    );
    use sha2::Digest;
    let again: [u8; 32] = sha2::Sha256::digest(tree::encode_manifest(&m)).into();
    assert_eq!(
        again, env.client_payload_hash,
        "the manifest encoding is canonical and stable"
    );

    let Pages::List(pages) = &m.pages else {
        panic!("tree format 1 lists its pages");
    };
    let mut inodes = BTreeMap::new();
    for (no, id) in pages {
        let raw = object(v, ObjectKind::InodePage, id);
        let (pno, page) = tree::decode_page(&raw, m.inodes_per_page).unwrap();
        assert_eq!(pno, *no);
        assert_eq!(
            tree::encode_page(pno, &page),
            raw,
            "page encoding is canonical"
        );
        inodes.extend(page);
    }
    let mut tree_out: BTreeMap<String, Node> = BTreeMap::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    while let Some((path, ino)) = stack.pop() {
        let Content::Dir(Some(DirRef::Leaf(did))) = &inodes[&ino].content else {
            continue;
        };
        let raw = object(v, ObjectKind::DirNode, &did.id);
        let entries = tree::decode_dir(&raw).unwrap();
        assert_eq!(tree::encode_dir(&entries), raw);
        for (name, e) in entries {
            let p = format!("{path}/{}", String::from_utf8(name).unwrap());
            let i = &inodes[&e.ino];
            assert_eq!(i.file_type(), e.file_type);
            let node = match &i.content {
                Content::Dir(_) => {
                    stack.push((p.clone(), e.ino));
                    Node::Dir {
                        perm: i.perm,
                        nlink: i.nlink,
                    }
                }
                Content::Symlink(t) => Node::Symlink(t.clone()),
                Content::Special(t, rdev) => Node::Special(*t, i.perm, *rdev),
                Content::File(c) => {
                    let refs = match c {
                        Chunks::Inline(r) => r.clone(),
                        Chunks::List { id, count } => {
                            let r = tree::decode_chunk_list(&object(v, ObjectKind::ChunkList, id))
                                .unwrap();
                            assert_eq!(r.len() as u64, *count);
                            r
                        }
                        Chunks::Tree { .. } => panic!("the v{v} fixtures predate chunk trees"),
                    };
                    Node::File {
                        perm: i.perm,
                        nlink: i.nlink,
                        data: file_data(v, &refs, i.size, u64::from(m.chunk_size)),
                        xattrs: i.xattrs.clone(),
                    }
                }
            };
            tree_out.insert(p, node);
        }
    }
    let hello = || Node::File {
        perm: 0o644,
        nlink: 2,
        data: b"hello, sovseal\n".to_vec(),
        xattrs: BTreeMap::from([(b"user.note".to_vec(), b"golden".to_vec())]),
    };
    let mut sparse = vec![0u8; (9 << 20) + 8];
    sparse[..5].copy_from_slice(b"start");
    sparse[(9 << 20) + 5..].copy_from_slice(b"end");
    let mut want = BTreeMap::from([
        (
            "/docs".to_string(),
            Node::Dir {
                perm: 0o750,
                nlink: 2,
            },
        ),
        ("/docs/hard".to_string(), hello()),
        (
            "/docs/link".to_string(),
            Node::Symlink(b"../hello.txt".to_vec()),
        ),
        (
            "/empty".to_string(),
            Node::File {
                perm: 0o600,
                nlink: 1,
                data: vec![],
                xattrs: BTreeMap::new(),
            },
        ),
        ("/hello.txt".to_string(), hello()),
        (
            "/sparse".to_string(),
            Node::File {
                perm: 0o600,
                nlink: 1,
                data: sparse,
                xattrs: BTreeMap::new(),
            },
        ),
    ]);
    if v >= 2 {
        want.insert("/docs/fifo".into(), Node::Special(FileType::Fifo, 0o640, 0));
        want.insert(
            "/docs/null".into(),
            Node::Special(FileType::CharDev, 0o666, 0x0103),
        );
    }
    assert_eq!(tree_out, want);
    let sparse_inode = inodes.values().find(|i| i.size == (9 << 20) + 8).unwrap();
    assert!(
        matches!(sparse_inode.content, Content::File(Chunks::List { .. })),
        "fixture covers chunk lists"
    );
}

fn must_fail(v: u32, name: &str) -> Error {
    let raw = std::fs::read(dir(v).join(format!("must-fail/{name}.json"))).unwrap();
    match Envelope::from_json(&raw) {
        Err(e) => e,
        Ok(env) => envelope::open_manifest(&keys(), &env).unwrap_err(),
    }
}

#[test]
fn must_fail_fixtures_fail_closed() {
    // Format 1's fixture relabelled as format 2 (written when 2 did not
    // exist yet): now that 2 exists, the format in the AAD refuses it.
    assert!(matches!(
        must_fail(1, "format-version-2"),
        Error::Tag { .. }
    ));
    // Format 2's relabelled as 3 (unknown) or as 1 (AAD mismatch).
    assert!(matches!(
        must_fail(2, "format-version-next"),
        Error::UnknownFormatVersion(3, 2)
    ));
    assert!(matches!(
        must_fail(2, "format-version-previous"),
        Error::Tag { .. }
    ));
    for v in [1, 2] {
        must_fail_closed(v);
    }
}

fn must_fail_closed(v: u32) {
    assert!(matches!(
        must_fail(v, "key-version-2"),
        Error::UnknownKeyVersion(2, 1)
    ));
    assert!(matches!(
        must_fail(v, "payload-hash"),
        Error::VsrHashMismatch { seq: 2 }
    ));
    assert!(matches!(must_fail(v, "truncated"), Error::Tag { .. }));
    assert!(matches!(must_fail(v, "sequence-moved"), Error::Tag { .. }));
    assert!(matches!(
        must_fail(v, "unknown-field"),
        Error::Corrupt { .. }
    ));
    assert!(matches!(must_fail(v, "not-json"), Error::Corrupt { .. }));
    // The right fixture with the wrong key, or as another agent, does not open.
    let env = Envelope::from_json(&std::fs::read(dir(v).join("envelope.json")).unwrap()).unwrap();
    let wrong = MasterKey::from_bytes([0x43; 32]).agent_keys(AGENT);
    assert!(
        envelope::open_manifest(&wrong, &env)
            .unwrap_err()
            .is_integrity()
    );
    // Garbage and truncated objects.
    let m = envelope::open_manifest(&keys(), &env).unwrap();
    let Pages::List(pages) = &m.pages else {
        panic!("tree format 1 lists its pages");
    };
    let (_, pid) = pages.iter().next().unwrap();
    let good = std::fs::read(dir(v).join(format!("objects/{}.4", pid.to_hex()))).unwrap();
    for bad in [
        bytes(5, good.len()),
        good[..good.len() - 1].to_vec(),
        good[..10].to_vec(),
        vec![],
    ] {
        let e = envelope::open_object(&keys(), ObjectKind::InodePage, pid, &bad).unwrap_err();
        assert!(matches!(e, Error::Tag { .. }), "{e}");
    }
    assert!(
        envelope::open_object(&keys(), ObjectKind::DirNode, pid, &good).is_err(),
        "kind is bound"
    );
    // Decoders reject malformed plaintext without panicking.
    let plain = envelope::open_object(&keys(), ObjectKind::InodePage, pid, &good).unwrap();
    for cut in 0..plain.len() {
        assert!(tree::decode_page(&plain[..cut], m.inodes_per_page).is_err());
    }
    assert!(tree::decode_page(&[plain.clone(), vec![0]].concat(), m.inodes_per_page).is_err());
    let _ = FileType::File;
}
