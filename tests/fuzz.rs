//! Fuzz targets for every parser that reads bytes an attacker controls
//! (issue 13, item 6: fail closed everywhere).
//!
//! Each `target_*` function takes arbitrary bytes, feeds them to one parser
//! and asserts what the parser promises: no panic, and either a typed error
//! or a value that is canonical (re-encoding gives the very bytes that were
//! decoded) where docs/FORMAT.md calls the encoding canonical, or that
//! round-trips (decode ∘ encode is the identity) where it is JSON. Records
//! that are signed or sealed must decode to the one value this process
//! signed or sealed, never to something else.
//!
//! The bodies are plain functions so that the cargo-fuzz harness in `fuzz/`
//! includes this file (`#[path]`) and runs the same checks for hours; here
//! the `props` module drives them with proptest for a bounded number of
//! cases, with two kinds of input per target: random bytes, and mutations
//! (bit flips, truncation, extension, splices, huge length fields, JSON
//! tokens) of valid encodings made by the real encoders, so that the
//! fuzzer gets past the first checks. A counting allocator checks that no
//! input makes a parser allocate more than a small multiple of its size.

#![allow(dead_code)] // the fuzz harness uses some targets only

use sovseal::Error;
use sovseal::config::{AgentName, Home};
use sovseal::custody::export;
use sovseal::engine::SetAttr;
use sovseal::engine::journal::{Entry, Op};
use sovseal::history::checkpoint::Checkpoint;
use sovseal::history::redact;
use sovseal::history::retention::{self, ForgetRecord};
use sovseal::repo::batch::{self, Batch};
use sovseal::repo::journal::{JOURNAL_FILE, Journal};
use sovseal::repo::pack;
use sovseal::repo::remote::Remote;
use sovseal::repo::segment;
use sovseal::seal::envelope::{self, Envelope};
use sovseal::seal::keys::{AgentKeys, MasterKey};
use sovseal::seal::record;
use sovseal::seal::tree::{
    self, ChunkIndexNode, ChunkRef, Chunks, Content, DirChild, DirEntry, DirIndex, DirRef, Entries,
    FileType, Inode, Manifest, ObjRef, ObjectId, ObjectKind, PageMapNode, Pages,
};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

// ---------------------------------------------------------------------------
// Fixtures: keys and one valid encoding (or a few) of every format, made by
// the real encoders, once per process.

/// The passphrase of the export fixtures.
pub const PASSPHRASE: &str = "correct horse battery staple";
/// Journal frame: `len u32 || seq u64 || hash (32)` (docs/FORMAT.md).
const JOURNAL_FRAME: usize = 4 + 8 + 32;
/// Largest journal record the reader accepts (src/repo/journal.rs).
const JOURNAL_MAX_RECORD: usize = 1 << 20;

/// Valid encodings of every format, and what they decode to.
pub struct Seeds {
    /// Keys of the agent whose single envelope is [`Seeds::envelope`].
    pub env_keys: AgentKeys,
    /// The one envelope sealed under `env_keys`.
    pub envelope: Envelope,
    /// Its manifest.
    pub manifest: Manifest,
    /// `envelope.to_json()`.
    pub envelope_json: Vec<u8>,
    /// `encode_manifest(manifest)` (tree format 1: a page list).
    pub manifest_bin: Vec<u8>,
    /// A tree-format-2 manifest (a page map root).
    pub manifest2_bin: Vec<u8>,
    /// The same in tree format 3 (a counted page map).
    pub manifest3_bin: Vec<u8>,
    /// Tree format 4, with provenance.
    pub manifest4_bin: Vec<u8>,
    /// Tree format 5, with a provenance marked incomplete.
    pub manifest5_bin: Vec<u8>,
    /// Tree format 6: the page map's root with its home.
    pub manifest6_bin: Vec<u8>,
    /// Page-map nodes (tree formats 2 and 3).
    pub page_maps: Vec<Vec<u8>>,
    /// Inode pages (the first byte of each selects `inodes_per_page`, see
    /// [`target_page`]).
    pub pages: Vec<Vec<u8>>,
    /// Directory nodes.
    pub dirs: Vec<Vec<u8>>,
    /// Directory index nodes (tree format 2).
    pub dir_indexes: Vec<Vec<u8>>,
    /// Chunk lists.
    pub chunk_lists: Vec<Vec<u8>>,
    /// Chunk-index nodes (tree format 7).
    pub chunk_indexes: Vec<Vec<u8>>,
    /// Deltas (tree format 8).
    pub deltas: Vec<Vec<u8>>,
    /// A manifest of tree format 8 naming a delta.
    pub manifest8_bin: Vec<u8>,
    /// A remote pack part with one record of each content kind.
    pub pack: Vec<u8>,
    /// One encoded journal entry of every operation.
    pub entries: Vec<Vec<u8>>,
    /// A journal file of three records.
    pub journal_file: Vec<u8>,
    /// Keys of the agent whose signed records follow.
    pub rec_keys: AgentKeys,
    /// The one checkpoint signed under `rec_keys`, and its JSON.
    pub checkpoint: Checkpoint,
    /// `checkpoint.to_json()`.
    pub checkpoint_json: Vec<u8>,
    /// The one forget record signed under `rec_keys` (snapshot 7).
    pub forget: ForgetRecord,
    /// Its JSON.
    pub forget_json: Vec<u8>,
    /// The one redaction record signed under `rec_keys`.
    pub redaction: redact::Record,
    /// Its JSON.
    pub redaction_json: Vec<u8>,
    /// A rotated master key (versions 1, 2, 3) and its export file
    /// (cheap Argon2id parameters), as `key export` writes it.
    pub export_key: MasterKey,
    /// The export file's bytes.
    pub export_json: Vec<u8>,
    /// Argon2id(PASSPHRASE, salt) for [`target_export_plaintext`].
    pub export_kek: [u8; 32],
    /// A config.json with every setting sovseal reads.
    pub config_json: Vec<u8>,
    /// Remote object names, one per line (see [`target_remote_listing`]).
    pub listing: Vec<u8>,
    /// A `-o` option string.
    pub mount_options: Vec<u8>,
    /// A chain segment (from 257) and a tail segment (from 1, 40 members).
    pub segments: Vec<Vec<u8>>,
    /// A forget record bundle of three records.
    pub forgotten_bundle: Vec<u8>,
    /// An upload batch index of snapshots 257..=259, the middle one gone.
    pub batch_index: Vec<u8>,
}

fn master() -> MasterKey {
    MasterKey::from_bytes([0x42; 32])
}

fn id(n: u8) -> ObjectId {
    ObjectId([n; 32])
}

/// A metadata reference with a home (tree format 6).
fn oref(n: u8) -> ObjRef {
    ObjRef {
        id: id(n),
        home: u64::from(n) * 1000 + 7,
    }
}

fn inode(ino: u64, content: Content) -> Inode {
    let mut xattrs = BTreeMap::new();
    if ino.is_multiple_of(2) {
        xattrs.insert(b"user.a".to_vec(), b"1".to_vec());
        xattrs.insert(b"user.b".to_vec(), vec![0, 255]);
    }
    Inode {
        ino,
        perm: 0o644,
        uid: 1000,
        gid: 1000,
        nlink: 1,
        size: 5,
        atime: 1_700_000_000_000_000_000,
        mtime: -1,
        ctime: 1,
        parent: if matches!(content, Content::Dir(_)) {
            1
        } else {
            0
        },
        xattrs,
        content,
    }
}

/// The fixtures (built once per process).
pub fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(build_seeds)
}

fn build_seeds() -> Seeds {
    let m = master();
    let env_keys = m.agent_keys("fuzz-envelope");
    let manifest = Manifest {
        format: 1,
        agent_id: env_keys.agent_id(),
        seq: 3,
        parent: [0xab; 32],
        timestamp_ms: 1_700_000_000_123,
        chunk_size: tree::CHUNK_SIZE,
        inodes_per_page: tree::INODES_PER_PAGE,
        next_ino: 300,
        pages: Pages::List(BTreeMap::from([(0, id(1)), (1, id(2)), (2, id(3))])),
        provenance: None,
        delta: None,
    };
    let envelope = envelope::seal_manifest(&env_keys, &manifest);
    let envelope_json = envelope.to_json();
    let manifest_bin = tree::encode_manifest(&manifest);
    let manifest2_bin = tree::encode_manifest(&Manifest {
        format: 2,
        pages: Pages::Map(Some(ObjRef::by_id(id(8)))),
        ..manifest.clone()
    });
    let manifest3_bin = tree::encode_manifest(&Manifest {
        format: 3,
        pages: Pages::Counted(Some(ObjRef::by_id(id(8)))),
        ..manifest.clone()
    });
    let manifest4_bin = tree::encode_manifest(&Manifest {
        format: 4,
        pages: Pages::Counted(Some(ObjRef::by_id(id(8)))),
        provenance: Some(tree::Provenance {
            note: Some(b"tool call 42: write_file report.md".to_vec()),
            writers: vec![
                tree::Writer {
                    pid: 4242,
                    uid: 1000,
                    gid: 1000,
                    comm: b"python3".to_vec(),
                    exe: b"/usr/bin/python3.11".to_vec(),
                },
                tree::Writer {
                    pid: 0,
                    uid: 0,
                    gid: 0,
                    comm: Vec::new(),
                    exe: Vec::new(),
                },
            ],
            changes: [(2, 0), (9, 0), (9, 1)].into(),
            removed: [(9, 1)].into(),
            incomplete: false,
        }),
        ..manifest.clone()
    });
    let manifest5_bin = tree::encode_manifest(&Manifest {
        format: 5,
        pages: Pages::Counted(Some(ObjRef::by_id(id(8)))),
        provenance: Some(tree::Provenance {
            note: None,
            writers: vec![tree::Writer {
                pid: 77,
                uid: 1000,
                gid: 1000,
                comm: b"rm".to_vec(),
                exe: b"/usr/bin/rm".to_vec(),
            }],
            changes: [(1, 0)].into(),
            removed: [(4, 0), (5, 0)].into(),
            incomplete: true,
        }),
        ..manifest.clone()
    });
    let manifest6_bin = tree::encode_manifest(&Manifest {
        format: 6,
        pages: Pages::Counted(Some(oref(8))),
        ..manifest.clone()
    });
    let mut low = [None; tree::PAGE_MAP_FANOUT];
    low[0] = Some(oref(1));
    low[5] = Some(ObjRef::by_id(id(2)));
    let mut high = [None; tree::PAGE_MAP_FANOUT];
    high[1] = Some(oref(3));
    let page_maps = vec![
        tree::encode_page_map(&PageMapNode {
            level: 0,
            children: low,
            counts: None,
        }),
        tree::encode_page_map(&PageMapNode {
            level: tree::PAGE_MAP_MAX_LEVEL,
            children: high,
            counts: None,
        }),
        // Tree format 3: counts per child.
        tree::encode_page_map(&PageMapNode {
            level: 0,
            children: low,
            counts: Some(std::array::from_fn(|d| {
                [7, 0, 0, 0, 0, 32][..].get(d).copied().unwrap_or(0)
            })),
        }),
        tree::encode_page_map(&PageMapNode {
            level: tree::PAGE_MAP_MAX_LEVEL,
            children: high,
            counts: Some(std::array::from_fn(|d| u64::from(d == 1) * 1_000_000)),
        }),
    ];

    let mut page0 = BTreeMap::new();
    for i in [
        inode(1, Content::Dir(Some(DirRef::Leaf(oref(9))))),
        inode(
            2,
            Content::File(Chunks::Inline(vec![Some(id(4)), None, Some(id(5))])),
        ),
        inode(
            3,
            Content::File(Chunks::List {
                id: id(6),
                count: 12,
            }),
        ),
        inode(
            8,
            Content::File(Chunks::Tree {
                id: id(11),
                count: 300,
            }),
        ),
        inode(4, Content::Symlink(b"../target".to_vec())),
        inode(5, Content::Dir(None)),
        inode(7, Content::Dir(Some(DirRef::Index(ObjRef::by_id(id(10)))))),
        inode(6, Content::File(Chunks::Inline(Vec::new()))),
    ] {
        page0.insert(i.ino, i);
    }
    let page1 = BTreeMap::from([(130, inode(130, Content::Symlink(Vec::new())))]);
    let with_ipp = |sel: u8, b: Vec<u8>| [vec![sel], b].concat();
    let pages = vec![
        with_ipp(0, tree::encode_page(0, &page0)),
        with_ipp(0, tree::encode_page(1, &page1)),
        with_ipp(0, tree::encode_page(7, &BTreeMap::new())),
    ];

    let entry = |ino, ft| DirEntry { ino, file_type: ft };
    let dir: Entries = BTreeMap::from([
        (b"a".to_vec(), entry(2, FileType::File)),
        (b"b c".to_vec(), entry(3, FileType::Dir)),
        (vec![0xff, 0xfe], entry(4, FileType::Symlink)),
    ]);
    let dirs = vec![
        tree::encode_dir(&dir),
        tree::encode_dir(&Entries::new()),
        tree::encode_dir(&BTreeMap::from([(
            vec![b'x'; 255],
            entry(9, FileType::File),
        )])),
    ];

    let child = |node, count| Some(DirChild { node, count });
    let mut top = [None; tree::DIR_FANOUT];
    top[0] = child(DirRef::Leaf(oref(11)), 40);
    top[7] = child(DirRef::Index(oref(12)), 65);
    top[15] = child(DirRef::Leaf(ObjRef::by_id(id(13))), 1);
    let mut deepest = [None; tree::DIR_FANOUT];
    deepest[3] = child(DirRef::Leaf(oref(14)), 1000);
    let dir_indexes = vec![
        tree::encode_dir_index(&DirIndex {
            depth: 0,
            children: top,
        }),
        tree::encode_dir_index(&DirIndex {
            depth: tree::DIR_MAX_DEPTH - 1,
            children: deepest,
        }),
    ];

    let refs: Vec<ChunkRef> = (0..12u8).map(|i| (i % 3 != 1).then(|| id(i))).collect();
    let chunk_lists = vec![
        tree::encode_chunk_list(&refs),
        tree::encode_chunk_list(&[]),
        tree::encode_chunk_list(&[None]),
    ];
    let chunk_indexes = vec![
        tree::encode_chunk_index(&ChunkIndexNode {
            height: 1,
            children: vec![id(1), id(2), id(3)],
        }),
        tree::encode_chunk_index(&ChunkIndexNode {
            height: 2,
            children: vec![id(4)],
        }),
    ];

    let deltas = vec![
        tree::encode_delta(&tree::Delta {
            prev: None,
            depth: 1,
            inodes: BTreeMap::from([(2, inode(2, Content::Dir(None)))]),
            removed: [9u64, 12].into(),
            dirs: BTreeMap::from([(
                1,
                tree::DirEdits {
                    fresh: false,
                    names: BTreeMap::from([
                        (b"a".to_vec(), Some(entry(2, FileType::Dir))),
                        (b"gone".to_vec(), None),
                    ]),
                },
            )]),
        }),
        tree::encode_delta(&tree::Delta {
            prev: Some(oref(7)),
            depth: 2,
            dirs: BTreeMap::from([(
                2,
                tree::DirEdits {
                    fresh: true,
                    names: BTreeMap::new(),
                },
            )]),
            ..Default::default()
        }),
    ];
    let manifest8_bin = tree::encode_manifest(&Manifest {
        format: 8,
        pages: Pages::Counted(Some(oref(8))),
        delta: Some(oref(9)),
        ..manifest.clone()
    });

    let mut pack_bytes = pack::PACK_MAGIC.to_vec();
    pack::encode_record(
        &mut pack_bytes,
        &id(1),
        ObjectKind::Chunk,
        b"sealed chunk bytes",
    );
    pack::encode_record(&mut pack_bytes, &id(2), ObjectKind::ChunkList, b"");
    pack::encode_record(&mut pack_bytes, &id(3), ObjectKind::DirNode, &[7; 40]);
    pack::encode_record(&mut pack_bytes, &id(4), ObjectKind::InodePage, &[1; 3]);
    pack::encode_record(&mut pack_bytes, &id(5), ObjectKind::ChunkIndex, &[2; 33]);

    let entries = sovseal::engine::journal::examples()
        .into_iter()
        .enumerate()
        .map(|(i, op)| {
            Entry {
                op,
                time_ns: 1_700_000_000_000_000_000 + i as i64,
                created: i as u64,
            }
            .encode()
        })
        .collect::<Vec<_>>();

    let mut journal_file = Vec::new();
    for (n, e) in entries.iter().take(3).enumerate() {
        let sealed = envelope::seal_journal(&env_keys, 3, &[0xcd; 32], n as u64, e);
        journal_file.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        journal_file.extend_from_slice(&3u64.to_le_bytes());
        journal_file.extend_from_slice(&[0xcd; 32]);
        journal_file.extend_from_slice(&sealed);
    }

    let rec_keys = m.agent_keys("fuzz-records");
    let checkpoint = Checkpoint::sign(&rec_keys, 5, &[0x11; 32], 1_795_000_000_000);
    let checkpoint_json = checkpoint.to_json();
    let forget = ForgetRecord::sign(&rec_keys, 7, &[0x22; 32], 1_795_000_000_001);
    let forget_json = serde_json::to_vec(&forget).unwrap();
    let members: Vec<segment::Member> = (0..segment::SEGMENT_LEN)
        .map(|i| segment::Member {
            envelope: format!("{{\"sequence_number\":{i}}}").into_bytes(),
            index: (i % 4 != 0).then(|| vec![i as u8; (i % 7) as usize]),
        })
        .collect();
    let segments = vec![
        segment::encode(257, &members),
        segment::encode(1, &members[..40]),
    ];
    let forgotten_bundle = segment::encode_forgotten(&[
        (7, forget_json.clone()),
        (9, b"{}".to_vec()),
        (300, forget_json.clone()),
    ]);
    let mut redaction = redact::Record {
        format: "sovseal-redaction".into(),
        version: 1,
        agent_id: rec_keys.agent_id().to_hex(),
        key_version: 1,
        path_id: sovseal::hex::encode(&rec_keys.object_id(0xEE, b"secret/file.txt")),
        seqs: vec![3, 4],
        objects: vec![id(1).to_hex(), id(2).to_hex()],
        at_ms: 1_795_000_000_002,
        signature: String::new(),
    };
    record::sign(&rec_keys, &mut redaction);
    let redaction_json = serde_json::to_vec(&redaction).unwrap();

    let mut export_key = MasterKey::from_bytes([0x31; 32]);
    export_key.add_version(2, [0x32; 32]);
    export_key.add_version(3, [0x33; 32]);
    let kdf = export::Kdf {
        m_kib: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
        salt: "AAECAwQFBgcICQoLDA0ODw==".into(),
        alg: "argon2id".into(),
    };
    let e = export::seal(&export_key, PASSPHRASE, kdf.clone()).unwrap();
    let export_json = serde_json::to_vec_pretty(&e).unwrap();
    let export_kek = argon2id(&kdf);

    let config_json = br#"{
  "schema_version": 1,
  "remote": "file:///var/lib/sovseal-remote/",
  "retention": {"keep_last": 10, "keep_within": "7d"},
  "agents": {
    "fuzz": {
      "remote": "s3://bucket/prefix",
      "retention": {"keep_hourly": 24, "keep_daily": 7, "keep_within": "36h"},
      "checkpoint_interval_secs": 60,
      "checkpoint_hook": "true"
    }
  }
}
"#
    .to_vec();

    let listing = b"00000000000000000001.json\n00000000000000000002.json\n00000000000000000003.json\n00000000000000000003-0011223344556677-0000.pack\nnotes.txt\n00000000001795000000-0123456789abcdef.json\n00000000001795000000-0123456789ABCDEF.json"
        .to_vec();

    Seeds {
        env_keys,
        envelope,
        manifest,
        envelope_json,
        manifest_bin,
        manifest2_bin,
        manifest3_bin,
        manifest4_bin,
        manifest5_bin,
        manifest6_bin,
        manifest8_bin,
        deltas,
        page_maps,
        pages,
        dirs,
        dir_indexes,
        chunk_lists,
        chunk_indexes,
        pack: pack_bytes,
        entries,
        journal_file,
        rec_keys,
        checkpoint,
        checkpoint_json,
        forget,
        forget_json,
        redaction,
        redaction_json,
        export_key,
        export_json,
        export_kek,
        config_json,
        listing,
        mount_options: b"ro,allow_other,noatime,fsname=sovseal:fuzz,sync_close".to_vec(),
        segments,
        forgotten_bundle,
        batch_index: batch_index_seed(),
    }
}

/// An upload batch index (`repo::batch`) of snapshots 257..=259, whose
/// middle member left the batch.
fn batch_index_seed() -> Vec<u8> {
    let mut part = pack::PACK_MAGIC.to_vec();
    pack::encode_record(&mut part, &ObjectId([3; 32]), ObjectKind::Chunk, &[4; 40]);
    let index = pack::encode_index(&pack::part_entries(257, 0, &part).unwrap());
    let mut b = batch::Builder::new(257);
    for n in 0..3 {
        b.push([n; 32], &part, index.clone()).unwrap();
    }
    let (whole, built) = b.finish();
    batch::without(&built, &whole, &[258]).unwrap().1.encode()
}

fn argon2id(kdf: &export::Kdf) -> [u8; 32] {
    use base64::Engine as _;
    let salt = base64::engine::general_purpose::STANDARD
        .decode(&kdf.salt)
        .unwrap();
    let params = argon2::Params::new(kdf.m_kib, kdf.t_cost, kdf.p_cost, Some(32)).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(PASSPHRASE.as_bytes(), &salt, &mut out)
        .unwrap();
    out
}

/// True for the errors a parser of untrusted bytes may return: integrity
/// (corrupt, tag, hash, chain) and unknown versions. Never I/O, SQL or a
/// remote error from a pure parser.
pub fn typed_parse_error(e: &Error) -> bool {
    e.is_integrity()
        || matches!(
            e,
            Error::UnknownFormatVersion(..) | Error::UnknownKeyVersion(..)
        )
}

// ---------------------------------------------------------------------------
// The targets.

/// Parser: `Envelope::from_json` then `open_manifest` (versions, size, tag,
/// payload hash, agreement of the blind fields). Attacker: a hostile object
/// store serving `envelopes/<seq>.json` (restore, `verify --remote`), or
/// whoever can write the local index's `sealed` column.
pub fn target_envelope(data: &[u8]) {
    let s = seeds();
    let env = match Envelope::from_json(data) {
        Ok(env) => env,
        Err(e) => {
            assert!(typed_parse_error(&e), "envelope JSON: untyped error {e:?}");
            return;
        }
    };
    // JSON is not byte-canonical (whitespace, key order); the envelope is a
    // function of its meaning: encoding and decoding again gives it back.
    assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    match envelope::open_manifest(&s.env_keys, &env) {
        Ok(m) => {
            // Every field is bound (AAD, payload hash, manifest agreement):
            // only the one envelope sealed under these keys opens.
            assert_eq!(env, s.envelope, "a different envelope opened");
            assert_eq!(m, s.manifest);
            assert_eq!(env.hash(), s.envelope.hash());
        }
        Err(e) => assert!(typed_parse_error(&e), "open_manifest: untyped error {e:?}"),
    }
}

/// Parser: `tree::decode_manifest` (the plaintext of an envelope).
/// Attacker: none without the key (it is authenticated first); this guards
/// the canonical-encoding promise of docs/FORMAT.md and a future key leak.
pub fn target_manifest(data: &[u8]) {
    match tree::decode_manifest(data) {
        Ok(m) => assert_eq!(
            tree::encode_manifest(&m),
            data,
            "decode_manifest accepted a non-canonical encoding"
        ),
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_page_map` (page-map nodes, kind 7): canonical, a
/// level within the page numbers' 16 digits, at least one child.
/// Attacker: as for manifests.
pub fn target_page_map(data: &[u8]) {
    match tree::decode_page_map(data) {
        Ok(n) => {
            assert_eq!(
                tree::encode_page_map(&n),
                data,
                "decode_page_map accepted a non-canonical encoding"
            );
            assert!(n.level <= tree::PAGE_MAP_MAX_LEVEL);
            assert!(n.children.iter().any(Option::is_some));
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_page` (inode pages, kind 4), with the page size
/// chosen by the first byte (0: the real 128; 1: 1; 2: 0, which no manifest
/// allows; 3: `u32::MAX`). Attacker: as for manifests (authenticated
/// plaintext); canonical encoding promised.
pub fn target_page(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ipp = match sel % 4 {
        0 => tree::INODES_PER_PAGE,
        1 => 1,
        2 => 0,
        _ => u32::MAX,
    };
    match tree::decode_page(body, ipp) {
        Ok((no, inodes)) => {
            assert_eq!(
                tree::encode_page(no, &inodes),
                body,
                "decode_page accepted a non-canonical encoding"
            );
            for (ino, i) in &inodes {
                assert_eq!(*ino, i.ino);
                assert_eq!(i.perm & !0o7777, 0);
                if let Content::File(Chunks::Inline(r)) = &i.content {
                    assert!(r.len() <= tree::MAX_INLINE_CHUNKS);
                }
            }
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_dir` (directory nodes, kind 3): names 1-255 bytes,
/// no `/` or NUL, not `.`/`..`, strictly sorted. Attacker: as for manifests;
/// a name that passed here would become a path under a restore's DEST.
pub fn target_dir(data: &[u8]) {
    match tree::decode_dir(data) {
        Ok(entries) => {
            assert_eq!(
                tree::encode_dir(&entries),
                data,
                "decode_dir accepted a non-canonical encoding"
            );
            for name in entries.keys() {
                assert!(!name.is_empty() && !name.contains(&b'/') && !name.contains(&0));
                assert!(name != b"." && name != b"..");
            }
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_dir_index` (directory index nodes, kind 6):
/// canonical, and the shape rules hold for what it accepts (children
/// non-empty, a child is a leaf exactly when its count says so, the node
/// too large to be a leaf). Attacker: as for manifests.
pub fn target_dir_index(data: &[u8]) {
    match tree::decode_dir_index(data) {
        Ok(n) => {
            assert_eq!(
                tree::encode_dir_index(&n),
                data,
                "decode_dir_index accepted a non-canonical encoding"
            );
            assert!(n.depth < tree::DIR_MAX_DEPTH);
            assert!(!tree::dir_is_leaf(n.count(), n.depth));
            for c in n.children.iter().flatten() {
                assert!(c.count > 0);
                let leaf = tree::dir_is_leaf(c.count, n.depth + 1);
                assert_eq!(leaf, matches!(c.node, DirRef::Leaf(_)));
            }
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_chunk_list` (kind 2). Attacker: as for manifests.
pub fn target_chunk_list(data: &[u8]) {
    match tree::decode_chunk_list(data) {
        Ok(refs) => assert_eq!(
            tree::encode_chunk_list(&refs),
            data,
            "decode_chunk_list accepted a non-canonical encoding"
        ),
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_delta` (deltas, kind 9): canonical, and what
/// it accepts links to a previous delta exactly when its depth is past 1.
/// Attacker: as for manifests.
pub fn target_delta(data: &[u8]) {
    match tree::decode_delta(data) {
        Ok(d) => {
            assert_eq!(
                tree::encode_delta(&d),
                data,
                "decode_delta accepted a non-canonical encoding"
            );
            assert_eq!(d.prev.is_some(), d.depth > 1);
            assert!(d.removed.iter().all(|i| !d.inodes.contains_key(i)));
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `tree::decode_chunk_index` (chunk-index nodes, kind 8):
/// canonical, and what it accepts has a height it knows and 1 to
/// `CHUNK_INDEX_FANOUT` children. Attacker: as for manifests.
pub fn target_chunk_index(data: &[u8]) {
    match tree::decode_chunk_index(data) {
        Ok(n) => {
            assert_eq!(
                tree::encode_chunk_index(&n),
                data,
                "decode_chunk_index accepted a non-canonical encoding"
            );
            assert!((1..=tree::CHUNK_INDEX_MAX_HEIGHT).contains(&n.height));
            assert!((1..=tree::CHUNK_INDEX_FANOUT).contains(&n.children.len()));
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `pack::decode_part` (a remote pack part: magic, then records
/// `id || kind || len || sealed`) and `pack::decode_header`. Attacker: a
/// hostile object store serving `packs/…pack` (restore, redaction rewrite),
/// before any tag is checked; errors must name the snapshot.
pub fn target_pack(data: &[u8]) {
    match pack::decode_part(7, data) {
        Ok(recs) => {
            let mut again = pack::PACK_MAGIC.to_vec();
            for (oid, kind, sealed) in &recs {
                pack::encode_record(&mut again, oid, *kind, sealed);
            }
            assert_eq!(again, data, "decode_part accepted a non-canonical part");
        }
        Err(e) => {
            assert!(typed_parse_error(&e), "{e:?}");
            assert!(e.to_string().contains("snapshot 7"), "{e}");
        }
    }
    if let Some(h) = data.first_chunk::<{ pack::RECORD_HEADER as usize }>() {
        let (oid, kind, len) = pack::decode_header(h);
        let mut again = oid.0.to_vec();
        again.push(kind);
        again.extend_from_slice(&len.to_le_bytes());
        assert_eq!(&again[..], &h[..]);
    }
}

/// Parser: `engine::journal::Entry::decode` (one journaled operation, the
/// plaintext of a journal record). Attacker: none without the key (records
/// are sealed per head); guards the canonical encoding ("anything else is a
/// typed error").
pub fn target_journal_entry(data: &[u8]) {
    match Entry::decode(data) {
        Ok(e) => assert_eq!(
            e.encode(),
            data,
            "Entry::decode accepted a non-canonical encoding"
        ),
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: the journal file reader (`repo::journal::Journal::open`: frames
/// `len || seq || hash || sealed`, a torn tail cut off). Attacker: whoever
/// can write the data dir (untrusted in SECURITY.md), or a power cut.
pub fn target_journal_file(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    std::fs::write(&path, data).unwrap();
    let (j, recs) = match Journal::open(dir.path()) {
        Ok(x) => x,
        Err(e) => panic!("a journal file of any content opens (torn tails are cut): {e}"),
    };
    let mut again = Vec::new();
    for r in &recs {
        assert!((1..=JOURNAL_MAX_RECORD).contains(&r.sealed.len()));
        again.extend_from_slice(&(r.sealed.len() as u32).to_le_bytes());
        again.extend_from_slice(&r.seq.to_le_bytes());
        again.extend_from_slice(&r.hash);
        again.extend_from_slice(&r.sealed);
    }
    assert!(
        data.starts_with(&again),
        "records are not a prefix of the file"
    );
    // What follows the records is not one whole valid frame.
    if let Some(frame) = data[again.len()..].get(..JOURNAL_FRAME) {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert!(
            len == 0 || len > JOURNAL_MAX_RECORD || data.len() - again.len() - JOURNAL_FRAME < len,
            "a whole record was dropped"
        );
    }
    assert_eq!(j.is_empty(), again.is_empty());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        again.len() as u64,
        "the torn tail is cut off"
    );
}

/// Parser: `Checkpoint::parse` (JSON, format, version, agent, Ed25519).
/// Attacker: a hostile object store serving `checkpoints/<seq>.json`, or a
/// checkpoint hook's anchor directory.
pub fn target_checkpoint(data: &[u8]) {
    let s = seeds();
    match Checkpoint::parse(data, &s.rec_keys) {
        Ok(c) => {
            assert_eq!(
                c.message(),
                s.checkpoint.message(),
                "a forged checkpoint verified"
            );
            assert_eq!(
                sovseal::hex::decode_n::<64>(&c.signature),
                sovseal::hex::decode_n::<64>(&s.checkpoint.signature)
            );
            assert_eq!(Checkpoint::parse(&c.to_json(), &s.rec_keys).unwrap(), c);
            assert_eq!(c.hash_bytes().unwrap(), [0x11; 32]);
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `ForgetRecord::parse` (signed forget records of retention).
/// Attacker: a hostile object store serving `forgotten/<seq>.json`, trying
/// to pass a deletion off as a forget.
pub fn target_forget(data: &[u8]) {
    let s = seeds();
    for hash in [None, Some(&[0x22; 32]), Some(&[0x23; 32])] {
        match ForgetRecord::parse(data, &s.rec_keys, 7, hash) {
            Ok(r) => {
                assert_eq!(r.message(), s.forget.message(), "a forged record verified");
                assert_ne!(hash, Some(&[0x23; 32]), "a record for another hash passed");
            }
            Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
        }
    }
    if let Ok(r) = ForgetRecord::parse(data, &s.rec_keys, 8, None) {
        panic!("a record of snapshot 7 passed for snapshot 8: {r:?}");
    }
}

/// Parser: `segment::decode` and `segment::decode_tail` (chain segments:
/// envelopes and part indexes of up to 256 snapshots). Attacker: a hostile
/// object store serving `segments/*.seg` to a lazy restore. The encoding is
/// canonical.
pub fn target_segment(data: &[u8]) {
    for first in [1, 257] {
        match segment::decode(first, data) {
            Ok(m) => assert_eq!(segment::encode(first, &m), data, "not canonical"),
            Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
        }
    }
    match segment::decode_tail(data) {
        Ok((first, m)) => assert_eq!(segment::encode(first, &m), data, "not canonical"),
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `batch::Batch::decode` (an upload batch's index: where each
/// member's records are in the batch part, and its part index). Attacker:
/// a hostile object store serving `batches/*/*.bix` to any reader of a
/// batched snapshot. The encoding is canonical.
pub fn target_batch_index(data: &[u8]) {
    for (first, last) in [(257, 259), (1, 1), (1, 256)] {
        match Batch::decode(first, last, data) {
            Ok(b) => assert_eq!(b.encode(), data, "not canonical"),
            Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
        }
    }
}

/// Parser: `segment::decode_forgotten` (the forget record bundle; each
/// record in it is then verified as `target_forget`'s are). Attacker: a
/// hostile object store serving `segments/forgotten.fgb` to a restore. The
/// encoding is canonical.
pub fn target_forgotten_bundle(data: &[u8]) {
    match segment::decode_forgotten(data) {
        Ok(v) => {
            assert_eq!(segment::encode_forgotten(&v), data, "not canonical");
            assert!(v.windows(2).all(|w| w[0].0 < w[1].0) && v.first().is_none_or(|r| r.0 > 0));
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `redact::Record::parse` (signed redaction records). Attacker: a
/// hostile object store serving `redactions/*.json`, trying to make restore
/// accept missing objects.
pub fn target_redaction(data: &[u8]) {
    let s = seeds();
    match redact::Record::parse(data, &s.rec_keys) {
        Ok(r) => {
            assert_eq!(
                r.message(),
                s.redaction.message(),
                "a forged record verified"
            );
            assert_eq!(r.file_name(), s.redaction.file_name());
            assert_eq!(r.object_ids().unwrap(), vec![id(1), id(2)]);
        }
        Err(e) => assert!(typed_parse_error(&e), "{e:?}"),
    }
}

/// Parser: `custody::export::read` then `open` (JSON, KDF bounds, tag,
/// key versions, fingerprint). Attacker: whoever hands the user a damaged
/// or crafted key export file (`sovseal key import FILE`) without knowing
/// the passphrase. Opening runs Argon2id, so only cheap parameters are
/// opened here (costly ones are bounded by `Kdf::check`, tested apart).
pub fn target_export(data: &[u8]) {
    let s = seeds();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.export");
    std::fs::write(&path, data).unwrap();
    let e = match export::read(&path) {
        Ok(e) => e,
        Err(e) => {
            assert!(matches!(e, Error::Custody(_)), "{e:?}");
            return;
        }
    };
    let json = serde_json::to_vec(&e).unwrap();
    let back: export::Export = serde_json::from_slice(&json).unwrap();
    assert_eq!(serde_json::to_vec(&back).unwrap(), json);
    if e.kdf.m_kib <= 16 * 1024 && e.kdf.t_cost <= 2 && e.kdf.p_cost <= 4 {
        match export::open(&e, PASSPHRASE) {
            Ok(k) => assert_eq!(k, s.export_key, "a different key came out"),
            Err(err) => assert!(matches!(err, Error::Custody(_)), "{err:?}"),
        }
    }
}

/// Parser: the sealed plaintext of a key export (`version u32 BE || 32
/// bytes` per key version, ascending from 1, for export version 2; the 32
/// key bytes for version 1). Attacker: someone who makes an export file
/// with a passphrase of their own and talks the user into importing it; so
/// the plaintext is theirs. Checked against a reference reading of
/// docs/FORMAT.md. The first byte picks the export version.
pub fn target_export_plaintext(data: &[u8]) {
    use base64::Engine as _;
    let s = seeds();
    let Some((&sel, plain)) = data.split_first() else {
        return;
    };
    let version = if sel % 2 == 0 { 1 } else { 2 };
    let expected = reference_export_plaintext(version, plain);
    let fingerprint = expected
        .as_ref()
        .map_or_else(|| "0123456789abcdef".to_string(), MasterKey::fingerprint);
    let kdf = export::Kdf {
        m_kib: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
        salt: "AAECAwQFBgcICQoLDA0ODw==".into(),
        alg: "argon2id".into(),
    };
    // AAD per docs/FORMAT.md: format \n version \n alg \n m_kib \n t_cost \n
    // p_cost \n salt \n fingerprint.
    let aad = format!(
        "{}\n{version}\n{}\n{}\n{}\n{}\n{}\n{fingerprint}",
        export::FORMAT,
        kdf.alg,
        kdf.m_kib,
        kdf.t_cost,
        kdf.p_cost,
        kdf.salt
    );
    let sealed = sovseal::seal::aead::seal(&s.export_kek, aad.as_bytes(), plain);
    let e = export::Export {
        format: export::FORMAT.into(),
        version,
        kdf,
        fingerprint,
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    match (export::open(&e, PASSPHRASE), expected) {
        (Ok(k), Some(want)) => assert_eq!(k, want),
        (Err(err), None) => assert!(matches!(err, Error::Custody(_)), "{err:?}"),
        (Ok(k), None) => panic!("import accepted a plaintext the format refuses: {k:?}"),
        (Err(err), Some(want)) => panic!("import refused a valid plaintext ({want:?}): {err}"),
    }
}

/// docs/FORMAT.md's key export plaintext, read independently.
fn reference_export_plaintext(version: u32, plain: &[u8]) -> Option<MasterKey> {
    if version == 1 {
        return Some(MasterKey::from_bytes(plain.try_into().ok()?));
    }
    if plain.is_empty() || !plain.len().is_multiple_of(36) {
        return None;
    }
    let mut key: Option<MasterKey> = None;
    for (i, rec) in plain.chunks(36).enumerate() {
        let v = u32::from_be_bytes(rec[..4].try_into().unwrap());
        let bytes: [u8; 32] = rec[4..].try_into().unwrap();
        if v != i as u32 + 1 {
            return None;
        }
        match &mut key {
            None => key = Some(MasterKey::from_bytes(bytes)),
            Some(k) => k.add_version(v, bytes),
        }
    }
    key
}

/// Parser: `Home::read_config`, `agent_setting`, `remote_for`, and the
/// settings read from it: `retention::Policy::from_config` (then `plan`),
/// `parse_duration`, `checkpoint_interval_secs`. Attacker: none in the
/// threat model (config.json is the user's, mode 0600), but a typo or a
/// tool that writes it must give an error, never a panic or a policy that
/// forgets what it should keep.
pub fn target_config(data: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let path = home.config_path();
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = AgentName::new("fuzz").unwrap();
    if home.read_config().is_err() {
        return;
    }
    let _ = home.remote_for(&agent, None);
    if let Ok(Some(v)) = home.agent_setting(&agent, "checkpoint_interval_secs") {
        let _ = v.as_u64();
    }
    if let Ok(Some(serde_json::Value::String(w))) = home.agent_setting(&agent, "keep_within") {
        check_duration(&w);
    }
    let Ok(setting) = home.agent_setting(&agent, "retention") else {
        return;
    };
    if let Ok(Some(policy)) = retention::Policy::from_config(setting) {
        if let Some(w) = &policy.keep_within {
            check_duration(w);
        }
        check_plan(&policy);
    }
}

/// A retention plan never forgets the head, keeps and forgets a partition
/// of the snapshots, and keeps whatever `keep_within` covers.
fn check_plan(policy: &retention::Policy) {
    let now = 1_800_000_000_000i64;
    let snaps: Vec<(u64, i64)> = (1..=40u64)
        .map(|s| (s, now - (40 - s as i64) * 3_600_000))
        .collect();
    let (keep, forget) = retention::plan(policy, &snaps, now).unwrap();
    assert!(keep.contains(&40));
    assert_eq!(keep.len() + forget.len(), snaps.len());
    assert!(forget.iter().all(|s| !keep.contains(s)));
    if let Some(d) = policy
        .keep_within
        .as_deref()
        .and_then(|w| sovseal::config::parse_duration(w).ok())
    {
        for (s, ts) in &snaps {
            if (now - ts) as u128 <= d.as_millis() {
                assert!(keep.contains(s), "keep_within {d:?} forgot snapshot {s}");
            }
        }
    }
}

/// `parse_duration` agrees with its documentation: digits, then one of
/// `s m h d w` or nothing, surrounding spaces ignored.
fn check_duration(s: &str) {
    let got = sovseal::config::parse_duration(s).ok();
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit {
        "" | "s" => Some(1u64),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        "w" => Some(604_800),
        _ => None,
    };
    let want = num
        .parse::<u64>()
        .ok()
        .zip(mult)
        .and_then(|(n, m)| n.checked_mul(m))
        .map(std::time::Duration::from_secs);
    assert_eq!(got, want, "parse_duration({s:?})");
}

/// Parser: `parse_duration` on any text (CLI `--keep-within`, config.json).
/// Attacker: none (user input); must not panic or overflow.
pub fn target_duration(data: &[u8]) {
    check_duration(&String::from_utf8_lossy(data));
}

/// Parser: `mount::options::parse` (`-o` options from mount(8), fstab or a
/// unit file). Attacker: none (the mounting user); must not panic.
pub fn target_mount_options(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let opts: Vec<String> = text.split(',').map(str::to_owned).collect();
    let agent = AgentName::new("fuzz").unwrap();
    match sovseal::mount::options::parse(&opts, &agent) {
        Ok(m) => {
            assert_eq!(
                m.read_only,
                opts.iter().any(|o| o.trim() == "ro"),
                "{opts:?}"
            );
            if let Some(last) = opts
                .iter()
                .rev()
                .find_map(|o| o.trim().strip_prefix("fsname="))
            {
                assert_eq!(m.fsname, last);
            }
        }
        Err(e) => assert!(matches!(e, Error::Invalid(_)), "{e:?}"),
    }
}

/// Parser: `snapshots::parse_name` (names looked up under `.snapshots/`).
/// Attacker: any program using the mount. Canonical: it accepts exactly
/// the names `dir_name` makes.
pub fn target_snapshot_name(data: &[u8]) {
    if let Some(seq) = sovseal::mount::fs::snapshots::parse_name(data) {
        assert_eq!(
            sovseal::mount::fs::snapshots::dir_name(seq).as_bytes(),
            data
        );
    }
}

/// Parser: `hex::decode_n` (ids, hashes, signatures in JSON records).
/// Attacker: whoever writes those records. Canonical up to letter case.
pub fn target_hex(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Some(b) = sovseal::hex::decode32(&s) {
        assert_eq!(sovseal::hex::encode(&b), s.to_ascii_lowercase());
    }
    if let Some(b) = sovseal::hex::decode_n::<4>(&s) {
        assert_eq!(sovseal::hex::encode(&b), s.to_ascii_lowercase());
    }
}

/// Parser: how `Remote` reads a listing (`list_envelopes`,
/// `list_checkpoints`, `list_forgotten`, `list_redactions`: sequence
/// numbers from object names). Attacker: a hostile object store, which
/// decides what a listing holds. Input: object names, one per line (at most
/// 48), each stored (with its name as content) under `envelopes/`,
/// `checkpoints/`, `forgotten/` and `redactions/` of one agent in an
/// in-memory store. A listed sequence must be ascending, unique, and name
/// an object that `get_envelope` and friends then find at the canonical
/// name (`<seq, 20 digits>.json`).
pub fn target_remote_listing(data: &[u8]) {
    use object_store::ObjectStoreExt;
    use object_store::path::Path;
    let agent = sovseal::seal::keys::AgentId([0x5c; 32]);
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let remote = Remote::with_store(store.clone(), Path::default(), "memory://fuzz");
    let rt = sovseal::repo::remote::runtime().unwrap();
    let base = format!("sovseal-v1/{}", agent.to_hex());
    let names: Vec<String> = data
        .split(|b| *b == b'\n')
        .take(48)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    rt.block_on(async {
        let mut stored = BTreeMap::new();
        for sub in ["envelopes", "checkpoints", "forgotten", "redactions"] {
            for n in &names {
                let full = format!("{base}/{sub}/{n}");
                let p = Path::parse(&full).unwrap_or_else(|_| Path::from(full.as_str()));
                if !p.as_ref().starts_with(&format!("{base}/{sub}/")) {
                    continue; // not below this directory at all
                }
                store.put(&p, n.clone().into_bytes().into()).await.unwrap();
                stored.insert(p, n.clone().into_bytes());
            }
        }
        let canonical = |sub: &str, seq: u64| {
            let p = Path::from(format!("{base}/{sub}/{seq:020}.json").as_str());
            stored.get(&p).cloned()
        };
        let env = remote.list_envelopes(&agent, 0, usize::MAX).await.unwrap();
        assert_eq!(remote.has_envelopes(&agent).await.unwrap(), !env.is_empty());
        assert!(
            env.windows(2).all(|w| w[0] < w[1]),
            "listing not ascending and unique: {env:?} from {names:?}"
        );
        for s in &env {
            let want = canonical("envelopes", *s);
            assert!(
                want.is_some(),
                "listed snapshot {s} has no envelope at its canonical name: {names:?}"
            );
            assert_eq!(remote.get_envelope(&agent, *s).await.unwrap(), want);
        }
        // Pagination by cursor gives the same list.
        let mut paged = Vec::new();
        loop {
            let page = remote
                .list_envelopes(&agent, paged.last().copied().unwrap_or(0), 3)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(
            paged,
            env.iter().copied().filter(|s| *s > 0).collect::<Vec<_>>()
        );
        let cps = remote.list_checkpoints(&agent, 0).await.unwrap();
        assert!(cps.windows(2).all(|w| w[0] < w[1]), "{cps:?}");
        for s in &cps {
            assert!(
                canonical("checkpoints", *s).is_some(),
                "checkpoint {s}: {names:?}"
            );
        }
        let fg = remote.list_forgotten(&agent, &|_| false).await.unwrap();
        assert!(fg.windows(2).all(|w| w[0].0 < w[1].0), "{fg:?}");
        for (s, body) in &fg {
            assert_eq!(
                Some(body),
                canonical("forgotten", *s).as_ref(),
                "forget record {s}: {names:?}"
            );
        }
        // Redaction records: every object below `redactions/`, in name
        // order (each is then parsed and verified by the caller).
        let red: Vec<Vec<u8>> = remote
            .list_redactions(&agent, &|_| false)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, body)| body)
            .collect();
        let want: Vec<Vec<u8>> = stored
            .iter()
            .filter(|(p, _)| p.as_ref().starts_with(&format!("{base}/redactions/")))
            .map(|(_, body)| body.clone())
            .collect();
        assert_eq!(red, want, "redaction listing from {names:?}");
    });
}

// ---------------------------------------------------------------------------
// Mutations of valid encodings (shared with the cargo-fuzz harness, which
// uses them to turn its raw input into a mutated seed).

/// Tokens that JSON parsers and number fields meet rarely by chance.
const TOKENS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1e999",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"99999999999999999999999",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"",
    b"\\u0000",
    b"\\ud800",
    b",",
    b":",
    b"\"x\":1,",
    b"0000000000",
    b"/",
    b"..",
    b"\n",
    b"AAAA",
    b"====",
];

/// Values written over 4 bytes to claim huge lengths and counts.
const HUGE: &[u32] = &[u32::MAX, 0x8000_0000, 0x7fff_ffff, 0x00ff_ffff, 0x0001_0000];

/// Applies one mutation `(kind, a, b, bytes)` to `d` (positions taken
/// modulo the length, so that any numbers make a valid mutation).
pub fn mutate(d: &mut Vec<u8>, kind: u8, a: u32, b: u32, bytes: &[u8]) {
    let len = d.len();
    let at = if len == 0 { 0 } else { a as usize % len };
    match kind % 10 {
        0 if len > 0 => d[at] ^= 1 << (b % 8),
        1 if len > 0 => d[at] = b as u8,
        2 => d.truncate(a as usize % (len + 1)),
        3 => d.extend_from_slice(bytes),
        4 => {
            let end = (at + b as usize % 8).min(len);
            d.splice(at..end, bytes.iter().copied());
        }
        5 if len >= 4 => {
            let at = at.min(len - 4);
            let v = match b as usize % (HUGE.len() + 2) {
                i if i < HUGE.len() => HUGE[i],
                i if i == HUGE.len() => len as u32,
                _ => len as u32 + 1,
            };
            d[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        6 => {
            let end = (at + b as usize % 64).min(len);
            let copy = d[at..end].to_vec();
            let to = if len == 0 {
                0
            } else {
                bytes.len() * 7 % (len + 1)
            };
            d.splice(to..to, copy);
        }
        7 => {
            let end = (at + b as usize % 16).min(len);
            d.drain(at..end);
        }
        8 => {
            let t = TOKENS[b as usize % TOKENS.len()];
            d.splice(at..at, t.iter().copied());
        }
        9 => {
            let t = TOKENS[b as usize % TOKENS.len()];
            let end = (at + bytes.len() % 8).min(len);
            d.splice(at..end, t.iter().copied());
        }
        _ => d.push(b as u8),
    }
}

/// Every way of writing a huge `u32` over 4 bytes of `seed`, for the
/// length-field checks.
pub fn huge_length_variants(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for at in 0..seed.len().saturating_sub(3) {
        for v in HUGE.iter().copied().chain([seed.len() as u32 + 1]) {
            let mut d = seed.to_vec();
            d[at..at + 4].copy_from_slice(&v.to_le_bytes());
            out.push(d);
        }
    }
    out
}

/// Turns raw fuzzer bytes into a mutated seed, for the cargo-fuzz harness
/// (libFuzzer mutates bytes, not the formats): the first byte picks the
/// seed, then every 9 bytes are one [`mutate`] `(kind, a u32, b u32)`, the
/// high nibble of `kind` saying how many of the bytes after it are its data.
pub fn mutated_seed(seeds: &[&[u8]], data: &[u8]) -> Vec<u8> {
    let Some((&pick, mut rest)) = data.split_first() else {
        return seeds[0].to_vec();
    };
    let mut d = seeds[pick as usize % seeds.len()].to_vec();
    while rest.len() >= 9 {
        let (op, tail) = rest.split_at(9);
        let a = u32::from_le_bytes(op[1..5].try_into().unwrap());
        let b = u32::from_le_bytes(op[5..9].try_into().unwrap());
        let n = usize::from(op[0] >> 4).min(tail.len());
        mutate(&mut d, op[0], a, b, &tail[..n]);
        rest = &tail[n..];
    }
    d
}

/// A target body.
pub type Target = fn(&[u8]);

/// The targets by name, with their seeds (empty: random input only).
pub fn target_by_name(name: &str) -> (Target, Vec<&'static [u8]>) {
    let s = seeds();
    let all = |v: &'static Vec<Vec<u8>>| v.iter().map(Vec::as_slice).collect::<Vec<_>>();
    match name {
        "envelope" => (target_envelope, vec![&s.envelope_json]),
        "manifest" => (
            target_manifest,
            vec![
                &s.manifest_bin,
                &s.manifest2_bin,
                &s.manifest3_bin,
                &s.manifest4_bin,
                &s.manifest5_bin,
                &s.manifest6_bin,
                &s.manifest8_bin,
            ],
        ),
        "delta" => (target_delta, all(&s.deltas)),
        "page_map" => (target_page_map, all(&s.page_maps)),
        "page" => (target_page, all(&s.pages)),
        "dir" => (target_dir, all(&s.dirs)),
        "dir_index" => (target_dir_index, all(&s.dir_indexes)),
        "chunk_list" => (target_chunk_list, all(&s.chunk_lists)),
        "chunk_index" => (target_chunk_index, all(&s.chunk_indexes)),
        "pack" => (target_pack, vec![&s.pack]),
        "journal_entry" => (target_journal_entry, all(&s.entries)),
        "journal_file" => (target_journal_file, vec![&s.journal_file]),
        "checkpoint" => (target_checkpoint, vec![&s.checkpoint_json]),
        "forget" => (target_forget, vec![&s.forget_json]),
        "redaction" => (target_redaction, vec![&s.redaction_json]),
        "export" => (target_export, vec![&s.export_json]),
        "export_plaintext" => (target_export_plaintext, Vec::new()),
        "config" => (target_config, vec![&s.config_json]),
        "mount_options" => (target_mount_options, vec![&s.mount_options]),
        "remote_listing" => (target_remote_listing, vec![&s.listing]),
        "segment" => (target_segment, all(&s.segments)),
        "forgotten_bundle" => (target_forgotten_bundle, vec![&s.forgotten_bundle]),
        "batch_index" => (target_batch_index, vec![&s.batch_index]),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// One fuzzer input for target `name`: as it is, and as a mutated seed.
pub fn fuzz_one(name: &str, data: &[u8]) {
    let (target, seeds) = target_by_name(name);
    target(data);
    if !seeds.is_empty() {
        target(&mutated_seed(&seeds, data));
    }
}

// ---------------------------------------------------------------------------
// The proptest drivers (not in the cargo-fuzz build).

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    // A counting allocator: per thread, the largest single allocation and
    // the total allocated while a target runs (proptest runs each test on
    // its own thread).
    struct Counting;

    thread_local! {
        static PEAK: Cell<usize> = const { Cell::new(0) };
        static TOTAL: Cell<usize> = const { Cell::new(0) };
    }

    fn note(n: usize) {
        let _ = PEAK.try_with(|p| p.set(p.get().max(n)));
        let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(n)));
    }

    // SAFETY: every call is forwarded unchanged to the system allocator;
    // the counters are const-initialised thread locals (no allocation, no
    // destructor), so counting cannot recurse.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            note(l.size());
            unsafe { System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            note(l.size());
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            note(new);
            unsafe { System.realloc(p, l, new) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// Runs `target(data)` and checks the allocations it made: no single
    /// one above `peak_per_byte * len + fixed`, all together below 64 times
    /// that (a forged length or count cannot make a parser reserve memory
    /// its input does not back).
    fn bounded(target: fn(&[u8]), data: &[u8], peak_per_byte: usize, fixed: usize) {
        seeds(); // built outside the measurement
        PEAK.with(|p| p.set(0));
        TOTAL.with(|t| t.set(0));
        target(data);
        let peak = PEAK.with(Cell::get);
        let total = TOTAL.with(Cell::get);
        let bound = peak_per_byte * data.len() + fixed;
        assert!(
            peak <= bound,
            "one allocation of {peak} bytes for {} input bytes (bound {bound})",
            data.len()
        );
        assert!(
            total <= 64 * bound,
            "{total} bytes allocated for {} input bytes",
            data.len()
        );
    }

    fn cfg(cases: u32) -> Config {
        Config {
            cases,
            max_shrink_iters: 2000,
            ..Config::default()
        }
    }

    fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..4096)
    }

    type Mutation = (u8, u32, u32, Vec<u8>);

    fn mutations() -> impl Strategy<Value = (usize, Vec<Mutation>)> {
        (
            any::<usize>(),
            prop::collection::vec(
                (
                    any::<u8>(),
                    any::<u32>(),
                    any::<u32>(),
                    prop::collection::vec(any::<u8>(), 0..24),
                ),
                1..5,
            ),
        )
    }

    fn apply(seeds: &[&[u8]], (pick, muts): &(usize, Vec<Mutation>)) -> Vec<u8> {
        let mut d = seeds[pick % seeds.len()].to_vec();
        for (k, a, b, bytes) in muts {
            mutate(&mut d, *k, *a, *b, bytes);
        }
        d
    }

    /// The seeds themselves pass, and every huge-length variant of them
    /// stays within the allocation bound.
    fn seeds_and_huge_lengths(target: fn(&[u8]), seeds: &[&[u8]], per_byte: usize, fixed: usize) {
        for s in seeds {
            bounded(target, s, per_byte, fixed);
            for v in huge_length_variants(s) {
                bounded(target, &v, per_byte, fixed);
            }
        }
    }

    fn s() -> &'static Seeds {
        seeds()
    }

    // Bounds, per target: bytes per input byte for the largest single
    // allocation, plus a fixed allowance (JSON maps, tempdirs, the tokio
    // runtime of the listing target).
    const PURE: (usize, usize) = (4, 16 << 10);
    const JSON: (usize, usize) = (8, 64 << 10);
    const FILES: (usize, usize) = (4, 64 << 10);

    fn envelope_seeds() -> Vec<&'static [u8]> {
        vec![&s().envelope_json]
    }
    fn page_seeds() -> Vec<&'static [u8]> {
        s().pages.iter().map(Vec::as_slice).collect()
    }
    fn dir_seeds() -> Vec<&'static [u8]> {
        s().dirs.iter().map(Vec::as_slice).collect()
    }
    fn page_map_seeds() -> Vec<&'static [u8]> {
        s().page_maps.iter().map(Vec::as_slice).collect()
    }
    fn dir_index_seeds() -> Vec<&'static [u8]> {
        s().dir_indexes.iter().map(Vec::as_slice).collect()
    }
    fn chunk_list_seeds() -> Vec<&'static [u8]> {
        s().chunk_lists.iter().map(Vec::as_slice).collect()
    }
    fn chunk_index_seeds() -> Vec<&'static [u8]> {
        s().chunk_indexes.iter().map(Vec::as_slice).collect()
    }
    fn entry_seeds() -> Vec<&'static [u8]> {
        s().entries.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn seeds_pass_and_forged_lengths_allocate_nothing() {
        let s = s();
        seeds_and_huge_lengths(
            target_manifest,
            &[
                &s.manifest_bin,
                &s.manifest2_bin,
                &s.manifest3_bin,
                &s.manifest4_bin,
                &s.manifest5_bin,
                &s.manifest6_bin,
                &s.manifest8_bin,
            ],
            PURE.0,
            PURE.1,
        );
        let deltas: Vec<&[u8]> = s.deltas.iter().map(Vec::as_slice).collect();
        seeds_and_huge_lengths(target_delta, &deltas, PURE.0, PURE.1);
        seeds_and_huge_lengths(target_page_map, &page_map_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_page, &page_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_dir, &dir_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_dir_index, &dir_index_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_chunk_list, &chunk_list_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_chunk_index, &chunk_index_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_pack, &[&s.pack], PURE.0, PURE.1);
        seeds_and_huge_lengths(target_journal_entry, &entry_seeds(), PURE.0, PURE.1);
        seeds_and_huge_lengths(target_journal_file, &[&s.journal_file], FILES.0, FILES.1);
        let segs: Vec<&[u8]> = s.segments.iter().map(Vec::as_slice).collect();
        seeds_and_huge_lengths(target_segment, &segs, PURE.0, PURE.1);
        seeds_and_huge_lengths(target_batch_index, &[&s.batch_index], PURE.0, PURE.1);
        seeds_and_huge_lengths(
            target_forgotten_bundle,
            &[&s.forgotten_bundle],
            JSON.0,
            JSON.1,
        );
        assert_eq!(segment::decode(257, &s.segments[0]).unwrap().len(), 256);
        assert_eq!(segment::decode_tail(&s.segments[1]).unwrap().1.len(), 40);
        let batch = Batch::decode(257, 259, &s.batch_index).unwrap();
        assert_eq!(
            batch.members.iter().filter(|m| m.place.is_some()).count(),
            2
        );
        assert_eq!(
            segment::decode_forgotten(&s.forgotten_bundle)
                .unwrap()
                .len(),
            3
        );
        // The seeds decode to what was encoded.
        assert_eq!(tree::decode_manifest(&s.manifest_bin).unwrap(), s.manifest);
        assert_eq!(Envelope::from_json(&s.envelope_json).unwrap(), s.envelope);
        assert_eq!(
            envelope::open_manifest(&s.env_keys, &s.envelope).unwrap(),
            s.manifest
        );
        assert_eq!(
            Checkpoint::parse(&s.checkpoint_json, &s.rec_keys).unwrap(),
            s.checkpoint
        );
        ForgetRecord::parse(&s.forget_json, &s.rec_keys, 7, Some(&[0x22; 32])).unwrap();
        redact::Record::parse(&s.redaction_json, &s.rec_keys).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e"), &s.export_json).unwrap();
        let e = export::read(&dir.path().join("e")).unwrap();
        assert_eq!(export::open(&e, PASSPHRASE).unwrap(), s.export_key);
        let (_, recs) = {
            std::fs::write(dir.path().join(JOURNAL_FILE), &s.journal_file).unwrap();
            Journal::open(dir.path()).unwrap()
        };
        assert_eq!(recs.len(), 3);
        for (n, r) in recs.iter().enumerate() {
            let plain =
                envelope::open_journal(&s.env_keys, r.seq, &r.hash, n as u64, &r.sealed).unwrap();
            assert_eq!(
                Entry::decode(&plain).unwrap().op,
                sovseal::engine::journal::examples()[n]
            );
        }
        bounded(target_mount_options, &s.mount_options, JSON.0, JSON.1);
        bounded(target_config, &s.config_json, JSON.0, JSON.1);
        bounded(target_remote_listing, &s.listing, JSON.0, 512 << 10);
        bounded(target_envelope, &s.envelope_json, JSON.0, JSON.1);
        bounded(target_checkpoint, &s.checkpoint_json, JSON.0, JSON.1);
        bounded(target_forget, &s.forget_json, JSON.0, JSON.1);
        bounded(target_redaction, &s.redaction_json, JSON.0, JSON.1);
        bounded(target_export, &s.export_json, FILES.0, 32 << 20);
    }

    /// What these targets found (issue 13, item 6), one input each: every
    /// one decoded (or panicked) before the fix beside it.
    #[test]
    fn findings_stay_fixed() {
        let s = s();
        // decode_manifest accepted pages out of order (re-encoded sorted).
        let mut m = s.manifest_bin.clone();
        let first = m.len() - 3 * 40;
        let (a, b) = m[first..].split_at_mut(40);
        a.swap_with_slice(&mut b[..40]);
        assert!(tree::decode_manifest(&m).is_err(), "unsorted pages");
        // decode_page accepted records out of order, and xattrs out of order.
        let i = |ino| inode(ino, Content::Symlink(b"t".to_vec()));
        let one = |ino| {
            let p = tree::encode_page(0, &BTreeMap::from([(ino, i(ino))]));
            p[12..].to_vec()
        };
        let mut page = 0u64.to_le_bytes().to_vec();
        page.extend_from_slice(&2u32.to_le_bytes());
        page.extend_from_slice(&one(5));
        page.extend_from_slice(&one(3));
        assert!(tree::decode_page(&page, 128).is_err(), "unsorted inodes");
        let p = tree::encode_page(0, &BTreeMap::from([(2, i(2))]));
        let ka = p.windows(6).position(|w| w == b"user.a").unwrap();
        let mut swapped = p.clone();
        swapped[ka + 5] = b'c'; // user.a -> user.c, now after user.b
        assert!(tree::decode_page(&swapped, 128).is_err(), "unsorted xattrs");
        // decode_page divided by a zero page size (panic).
        assert!(tree::decode_page(&p, 0).is_err());
        // Entry::decode ignored the value of an absent setattr field.
        let e = Entry {
            op: Op::Setattr {
                ino: 3,
                attrs: SetAttr::default(),
            },
            time_ns: 0,
            created: 0,
        }
        .encode();
        let mut d = e.clone();
        d[17 + 1 + 8 + 1] = 7; // perm: absent, value 7
        assert!(Entry::decode(&e).is_ok());
        assert!(Entry::decode(&d).is_err(), "absent field with a value");
        // The remote listing took non-canonical and nested names for
        // sequence numbers (a sequence listed twice, or one whose envelope
        // get_envelope then does not find).
        target_remote_listing(
            b"00000000000000000001.json\n1.json\n+2.json\n000000000000000000003.json\nx/00000000000000000004.json",
        );
    }

    /// `keep_within` at the edges of what `parse_duration` accepts: the
    /// plan keeps everything it covers (and does not overflow).
    #[test]
    fn retention_keep_within_extremes() {
        for w in [
            "0s",
            "1d",
            "106751991167w",
            "9223372036854775s",
            "9223372036854776s",
            "9300000000000000s",
            "18446744073709551s",
            "30500568904943w",
            "18446744073709551615",
        ] {
            let p = retention::Policy {
                keep_last: None,
                keep_hourly: None,
                keep_daily: None,
                keep_within: Some(w.into()),
            };
            check_duration(w);
            check_plan(&p);
        }
    }

    /// Found by `remote_listing_mutated` in CI: a listing of sequence 0
    /// alone (which no writer makes) made `has_envelopes` say yes while
    /// `list_envelopes` listed nothing.
    #[test]
    fn a_listing_of_sequence_zero_holds_no_envelope() {
        target_remote_listing(b"00000000000000000000.json");
        target_remote_listing(b"00000000000000000000.json\n00000000000000000001.json");
    }

    /// Counts and lengths that claim more than the input holds are refused
    /// before anything is reserved for them.
    #[test]
    fn huge_counts_are_errors() {
        let max = u32::MAX.to_le_bytes();
        type Refused = fn(&[u8]) -> bool;
        let cases: Vec<(&str, Vec<u8>, Refused)> = vec![
            ("chunk list count", max.to_vec(), |d| {
                tree::decode_chunk_list(d).is_err()
            }),
            ("directory count", max.to_vec(), |d| {
                tree::decode_dir(d).is_err()
            }),
            (
                "directory name length",
                [&1u32.to_le_bytes()[..], &max, &[0; 9]].concat(),
                |d| tree::decode_dir(d).is_err(),
            ),
            (
                "page count",
                [&0u64.to_le_bytes()[..], &max].concat(),
                |d| tree::decode_page(d, 128).is_err(),
            ),
            (
                "manifest pages",
                [
                    &1u32.to_le_bytes()[..],
                    &[0; 32],
                    &[0; 8],
                    &[0; 32],
                    &[0; 8],
                    &1u32.to_le_bytes(),
                    &1u32.to_le_bytes(),
                    &[0; 8],
                    &max,
                ]
                .concat(),
                |d| tree::decode_manifest(d).is_err(),
            ),
            (
                "pack record length",
                [&pack::PACK_MAGIC[..], &[0; 32], &[1], &max].concat(),
                |d| pack::decode_part(1, d).is_err(),
            ),
            (
                "journal entry name",
                [&[1u8][..], &[0; 16], &[5], &[0; 8], &max].concat(),
                |d| Entry::decode(d).is_err(),
            ),
        ];
        for (what, d, refused) in cases {
            PEAK.with(|p| p.set(0));
            assert!(refused(&d), "{what}: accepted");
            let peak = PEAK.with(Cell::get);
            assert!(peak < 4096, "{what}: allocated {peak} bytes");
        }
        // A page whose record claims u32::MAX xattrs, and one whose symlink
        // target claims u32::MAX bytes.
        let i = inode(2, Content::Symlink(b"t".to_vec()));
        let page = tree::encode_page(0, &BTreeMap::from([(2, i)]));
        let xattr_count_at = 8 + 4 + 8 + 1 + 4 * 4 + 8 * 5;
        let mut d = page.clone();
        d[xattr_count_at..xattr_count_at + 4].copy_from_slice(&max);
        assert!(tree::decode_page(&d, 128).is_err());
        let mut d = page.clone();
        let target_len_at = d.len() - 1 - 4;
        d[target_len_at..target_len_at + 4].copy_from_slice(&max);
        assert!(tree::decode_page(&d, 128).is_err());
        // A journal frame that claims a 4 GiB record is a torn tail.
        let dir = tempfile::tempdir().unwrap();
        let mut j = max.to_vec();
        j.extend_from_slice(&[0; 40]);
        std::fs::write(dir.path().join(JOURNAL_FILE), &j).unwrap();
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    proptest! {
        #![proptest_config(cfg(1000))]
        #[test]
        fn envelope_random(d in random_bytes()) { bounded(target_envelope, &d, JSON.0, JSON.1) }
        #[test]
        fn manifest_random(d in random_bytes()) { bounded(target_manifest, &d, PURE.0, PURE.1) }
        #[test]
        fn page_map_random(d in random_bytes()) { bounded(target_page_map, &d, PURE.0, PURE.1) }
        #[test]
        fn page_random(d in random_bytes()) { bounded(target_page, &d, PURE.0, PURE.1) }
        #[test]
        fn dir_random(d in random_bytes()) { bounded(target_dir, &d, PURE.0, PURE.1) }
        #[test]
        fn dir_index_random(d in random_bytes()) { bounded(target_dir_index, &d, PURE.0, PURE.1) }
        #[test]
        fn chunk_list_random(d in random_bytes()) { bounded(target_chunk_list, &d, PURE.0, PURE.1) }
        #[test]
        fn chunk_index_random(d in random_bytes()) { bounded(target_chunk_index, &d, PURE.0, PURE.1) }
        #[test]
        fn delta_random(d in random_bytes()) { bounded(target_delta, &d, PURE.0, PURE.1) }
        #[test]
        fn pack_random(d in random_bytes()) { bounded(target_pack, &d, PURE.0, PURE.1) }
        #[test]
        fn journal_entry_random(d in random_bytes()) { bounded(target_journal_entry, &d, PURE.0, PURE.1) }
        #[test]
        fn journal_file_random(d in random_bytes()) { bounded(target_journal_file, &d, FILES.0, FILES.1) }
        #[test]
        fn checkpoint_random(d in random_bytes()) { bounded(target_checkpoint, &d, JSON.0, JSON.1) }
        #[test]
        fn forget_random(d in random_bytes()) { bounded(target_forget, &d, JSON.0, JSON.1) }
        #[test]
        fn segment_random(d in random_bytes()) { bounded(target_segment, &d, PURE.0, PURE.1) }
        #[test]
        fn batch_index_random(d in random_bytes()) { bounded(target_batch_index, &d, PURE.0, PURE.1) }
        #[test]
        fn forgotten_bundle_random(d in random_bytes()) { bounded(target_forgotten_bundle, &d, JSON.0, JSON.1) }
        #[test]
        fn redaction_random(d in random_bytes()) { bounded(target_redaction, &d, JSON.0, JSON.1) }
        #[test]
        fn export_random(d in random_bytes()) { bounded(target_export, &d, FILES.0, FILES.1) }
        #[test]
        fn config_random(d in random_bytes()) { bounded(target_config, &d, JSON.0, JSON.1) }
        #[test]
        fn duration_random(d in prop::collection::vec(any::<u8>(), 0..40)) { bounded(target_duration, &d, PURE.0, PURE.1) }
        #[test]
        fn duration_text(d in "[ 0-9]{0,24}[smhdwx]?[ ]?") { bounded(target_duration, d.as_bytes(), PURE.0, PURE.1) }
        #[test]
        fn mount_options_random(d in random_bytes()) { bounded(target_mount_options, &d, JSON.0, JSON.1) }
        #[test]
        fn snapshot_name_random(d in prop::collection::vec(b'0'..=b'9', 0..12)) { bounded(target_snapshot_name, &d, PURE.0, PURE.1) }
        #[test]
        fn hex_random(d in "[0-9a-fA-F]{0,70}|.{0,70}") { bounded(target_hex, d.as_bytes(), PURE.0, PURE.1) }
    }

    proptest! {
        #![proptest_config(cfg(256))]
        #[test]
        fn remote_listing_random(d in random_bytes()) { bounded(target_remote_listing, &d, JSON.0, 512 << 10) }
        #[test]
        fn remote_listing_names(names in prop::collection::vec(
            "[0-9]{1,22}\\.json|[+-]?[0-9]{0,20}(\\.json)?|[0-9]{20}\\.json[a-z~]?|[a-z]{1,3}/[0-9]{20}\\.json|\\.\\.|\\.|[0-9]{20}-[0-9a-f]{16}\\.json",
            0..12,
        )) {
            bounded(target_remote_listing, names.join("\n").as_bytes(), JSON.0, 512 << 10)
        }
        #[test]
        fn export_plaintext(sel in any::<u8>(), plain in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120),
            (1u32..5).prop_flat_map(|n| prop::collection::vec(any::<u8>(), (36 * n) as usize)),
            prop::collection::vec((0u32..5, any::<[u8; 32]>()), 1..5).prop_map(|recs| {
                recs.iter().enumerate().flat_map(|(i, (jitter, k))| {
                    let v = if *jitter == 0 { i as u32 + 2 } else { i as u32 + 1 };
                    [&v.to_be_bytes()[..], &k[..]].concat()
                }).collect()
            }),
        ]) {
            let d = [vec![sel], plain].concat();
            bounded(target_export_plaintext, &d, FILES.0, 32 << 20)
        }
    }

    proptest! {
        #![proptest_config(cfg(2000))]
        #[test]
        fn envelope_mutated(m in mutations()) { bounded(target_envelope, &apply(&envelope_seeds(), &m), JSON.0, JSON.1) }
        #[test]
        fn manifest_mutated(m in mutations()) { bounded(target_manifest, &apply(&[&s().manifest_bin, &s().manifest2_bin], &m), PURE.0, PURE.1) }
        #[test]
        fn page_map_mutated(m in mutations()) { bounded(target_page_map, &apply(&page_map_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn page_mutated(m in mutations()) { bounded(target_page, &apply(&page_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn dir_mutated(m in mutations()) { bounded(target_dir, &apply(&dir_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn dir_index_mutated(m in mutations()) { bounded(target_dir_index, &apply(&dir_index_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn chunk_list_mutated(m in mutations()) { bounded(target_chunk_list, &apply(&chunk_list_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn chunk_index_mutated(m in mutations()) { bounded(target_chunk_index, &apply(&chunk_index_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn pack_mutated(m in mutations()) { bounded(target_pack, &apply(&[&s().pack], &m), PURE.0, PURE.1) }
        #[test]
        fn journal_entry_mutated(m in mutations()) { bounded(target_journal_entry, &apply(&entry_seeds(), &m), PURE.0, PURE.1) }
        #[test]
        fn journal_file_mutated(m in mutations()) { bounded(target_journal_file, &apply(&[&s().journal_file], &m), FILES.0, FILES.1) }
        #[test]
        fn checkpoint_mutated(m in mutations()) { bounded(target_checkpoint, &apply(&[&s().checkpoint_json], &m), JSON.0, JSON.1) }
        #[test]
        fn forget_mutated(m in mutations()) { bounded(target_forget, &apply(&[&s().forget_json], &m), JSON.0, JSON.1) }
        #[test]
        fn segment_mutated(m in mutations()) {
            let segs: Vec<&[u8]> = s().segments.iter().map(Vec::as_slice).collect();
            bounded(target_segment, &apply(&segs, &m), PURE.0, PURE.1)
        }
        #[test]
        fn batch_index_mutated(m in mutations()) { bounded(target_batch_index, &apply(&[&s().batch_index], &m), PURE.0, PURE.1) }
        #[test]
        fn forgotten_bundle_mutated(m in mutations()) { bounded(target_forgotten_bundle, &apply(&[&s().forgotten_bundle], &m), JSON.0, JSON.1) }
        #[test]
        fn redaction_mutated(m in mutations()) { bounded(target_redaction, &apply(&[&s().redaction_json], &m), JSON.0, JSON.1) }
        #[test]
        fn config_mutated(m in mutations()) { bounded(target_config, &apply(&[&s().config_json], &m), JSON.0, JSON.1) }
        #[test]
        fn mount_options_mutated(m in mutations()) { bounded(target_mount_options, &apply(&[&s().mount_options], &m), JSON.0, JSON.1) }
        #[test]
        fn remote_listing_mutated(m in mutations()) { bounded(target_remote_listing, &apply(&[&s().listing], &m), JSON.0, 512 << 10) }
    }

    proptest! {
        // The cargo-fuzz entry point (fuzz/): every target by name, raw and
        // as a mutated seed.
        #![proptest_config(cfg(64))]
        #[test]
        fn fuzz_harness_entry_point(d in prop::collection::vec(any::<u8>(), 0..512)) {
            for name in [
                "envelope", "manifest", "page", "dir", "chunk_list", "chunk_index", "delta", "pack", "journal_entry",
                "journal_file", "checkpoint", "forget", "redaction", "export", "export_plaintext",
                "config", "mount_options", "remote_listing", "segment", "forgotten_bundle", "batch_index",
            ] {
                fuzz_one(name, &d);
            }
        }
    }

    proptest! {
        // Each case that still parses runs Argon2id (8 MiB): fewer cases.
        #![proptest_config(cfg(256))]
        #[test]
        fn export_mutated(m in mutations()) { bounded(target_export, &apply(&[&s().export_json], &m), FILES.0, 32 << 20) }
    }
}
