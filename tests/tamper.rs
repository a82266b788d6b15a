//! Tampering with the data dir is detected: verification fails closed,
//! names the kind of damage and the snapshot, and no read returns bad data.

mod support;
use rusqlite::Connection;
use sovseal::Error;
use sovseal::repo::agent::Agent;
use sovseal::seal::tree::ROOT_INO;
use std::os::unix::fs::FileExt;
use support::home::{Env, bytes};

/// Builds an agent with snapshots 1..=5 (four files, one per commit).
fn build() -> Env {
    build_with(sovseal::engine::FOLD_EVERY)
}

/// As [`build`], folding every `fold_every` commits (0: each commit
/// writes whole pages and trees, no delta).
fn build_with(fold_every: u32) -> Env {
    let env = Env::new();
    let mut e = env.open();
    e.set_fold_every(fold_every);
    for i in 0..4u64 {
        let f = e
            .create(ROOT_INO, format!("f{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        e.write(f.ino, 0, &bytes(i, 100_000)).unwrap();
        e.commit().unwrap();
    }
    assert_eq!(e.head().seq(), 5);
    // Durable, as an unmount leaves it: what follows is tampering, not the
    // loss of an unsynced tail (tests/powercut.rs).
    e.sync().unwrap();
    env
}

fn db(env: &Env) -> Connection {
    Connection::open(env.data_dir().join("index.db")).unwrap()
}

fn verify(env: &Env) -> sovseal::Result<sovseal::history::verify::Report> {
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master)?;
    sovseal::history::verify::verify(&a, |_, _| {})
}

fn read_head(env: &Env, name: &str) -> sovseal::Result<Vec<u8>> {
    read_head_at(env, name, 0, 1 << 20)
}

/// Up to `len` bytes at `off` of `name` in head, read by a process of its
/// own (nothing cached before).
fn read_head_at(env: &Env, name: &str, off: u64, len: usize) -> sovseal::Result<Vec<u8>> {
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master)?;
    let v = a.head()?;
    let ino = v.resolve(name.as_bytes())?;
    v.read(ino, off, len)
}

#[test]
fn untouched_agent_verifies() {
    let env = build();
    let r = verify(&env).unwrap();
    assert_eq!((r.first_seq, r.head_seq, r.snapshots), (1, 5, 5));
    assert!(r.objects >= 4 + 5);
}

#[test]
fn bit_flip_in_sealed_content() {
    let env = build();
    let (pack, offset): (u32, u64) = db(&env)
        .query_row(
            "SELECT pack, offset FROM objects WHERE kind = 1 LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let path = env.data_dir().join(format!("packs/{pack:08}.pack"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset + 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], offset + 100).unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::Tag { .. }), "{err}");
    assert!(
        err.to_string().contains("chunk") && err.to_string().contains("snapshot"),
        "{err}"
    );
    // No read of any file returns the damaged chunk as good data: neither
    // a whole read (each file's 64 KiB chunk and 34,464-byte tail opened
    // straight into the reply) nor a read of part of a chunk (opened into
    // the chunk cache).
    let (mut failures, mut part_failures) = (0, 0);
    for i in 0..4 {
        let want = bytes(i, 100_000);
        match read_head(&env, &format!("f{i}")) {
            Ok(d) => assert_eq!(d, want, "f{i} returned wrong bytes"),
            Err(e) => {
                assert!(matches!(e, Error::Tag { .. }), "{e}");
                failures += 1;
            }
        }
        for off in [1_000, 70_000] {
            match read_head_at(&env, &format!("f{i}"), off as u64, 4096) {
                Ok(d) => assert_eq!(d, want[off..off + 4096], "f{i} at {off}: wrong bytes"),
                Err(e) => {
                    assert!(matches!(e, Error::Tag { .. }), "{e}");
                    part_failures += 1;
                }
            }
        }
    }
    assert_eq!((failures, part_failures), (1, 1));
}

#[test]
fn bit_flip_in_an_envelope() {
    let env = build();
    // Flip the sealed manifest of snapshot 3 only: the recorded hash no longer matches.
    let c = db(&env);
    let mut sealed: Vec<u8> = c
        .query_row("SELECT sealed FROM snapshots WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    sealed[20] ^= 1;
    c.execute("UPDATE snapshots SET sealed = ?1 WHERE seq = 3", [&sealed])
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::ChainBroken { seq: 3, .. }), "{err}");

    // A forger who also rewrites the recorded hash of the head still meets the tag.
    let env = build();
    let c = db(&env);
    let mut sealed: Vec<u8> = c
        .query_row("SELECT sealed FROM snapshots WHERE seq = 5", [], |r| {
            r.get(0)
        })
        .unwrap();
    sealed[20] ^= 1;
    c.execute("UPDATE snapshots SET sealed = ?1 WHERE seq = 5", [&sealed])
        .unwrap();
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master);
    // Either the recorded-hash check or the tag fails; both are integrity errors.
    let err = a.err().unwrap();
    assert!(err.is_integrity(), "{err}");
    rewrite_hash(&env, 5);
    let err = Agent::open_readonly(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Tag { .. }), "{err}");
    assert!(err.to_string().contains("snapshot 5"), "{err}");
}

/// Recomputes the recorded hash of `seq` from the (tampered) row, as a
/// forger without the key could.
fn rewrite_hash(env: &Env, seq: u64) {
    let c = db(env);
    let a = sovseal::repo::index::Index::open(&env.data_dir().join("index.db"), false).unwrap();
    let e = a
        .envelope(&env.master.agent_id(env.agent.as_str()), seq)
        .unwrap()
        .unwrap();
    c.execute(
        "UPDATE snapshots SET hash = ?1 WHERE seq = ?2",
        rusqlite::params![&e.hash()[..], seq],
    )
    .unwrap();
}

#[test]
fn bit_flip_in_stored_hashes() {
    let env = build();
    let c = db(&env);
    let mut h: Vec<u8> = c
        .query_row("SELECT hash FROM snapshots WHERE seq = 2", [], |r| r.get(0))
        .unwrap();
    h[0] ^= 1;
    c.execute("UPDATE snapshots SET hash = ?1 WHERE seq = 2", [&h])
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::ChainBroken { seq: 2, .. }), "{err}");

    let env = build();
    let c = db(&env);
    // On the head, where no child's parent link gives the forgery away first.
    let mut h: Vec<u8> = c
        .query_row(
            "SELECT payload_hash FROM snapshots WHERE seq = 5",
            [],
            |r| r.get(0),
        )
        .unwrap();
    h[31] ^= 0x80;
    c.execute("UPDATE snapshots SET payload_hash = ?1 WHERE seq = 5", [&h])
        .unwrap();
    rewrite_hash(&env, 5);
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::VsrHashMismatch { seq: 5 }), "{err}");
    assert!(err.to_string().starts_with("vsr_hash_mismatch"), "{err}");

    let env = build();
    let c = db(&env);
    let mut p: Vec<u8> = c
        .query_row("SELECT parent FROM snapshots WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    p[5] ^= 4;
    c.execute("UPDATE snapshots SET parent = ?1 WHERE seq = 3", [&p])
        .unwrap();
    rewrite_hash(&env, 3);
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::ChainBroken { seq: 3, .. }), "{err}");
}

#[test]
fn swapped_envelopes() {
    let env = build();
    let c = db(&env);
    c.execute_batch(
        "UPDATE snapshots SET seq = -1 WHERE seq = 2;
         UPDATE snapshots SET seq = 2 WHERE seq = 3;
         UPDATE snapshots SET seq = 3 WHERE seq = -1;",
    )
    .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::ChainBroken { seq: 2, .. }), "{err}");
    // Even with recorded hashes recomputed, the AAD binds each manifest to its sequence.
    rewrite_hash(&env, 2);
    rewrite_hash(&env, 3);
    let err = verify(&env).unwrap_err();
    assert!(err.is_integrity(), "{err}");
}

#[test]
fn deleted_head_is_a_rollback() {
    let env = build();
    db(&env)
        .execute("DELETE FROM snapshots WHERE seq = 5", [])
        .unwrap();
    let err = Agent::open_readonly(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Rollback { seen: 5, found: 4 }),
        "{err}"
    );
    let err = sovseal::engine::Engine::open(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Rollback { .. }), "{err}");
}

#[test]
fn seen_head_record_survives_one_torn_slot_but_not_two() {
    let env = build();
    let path = env.home.seen_head_path(&env.agent);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "two slots: {text:?}");
    assert!(
        lines.iter().all(|l| l.len() == 153),
        "fixed width: {text:?}"
    );
    let open = || Agent::open_readonly(&env.home, &env.agent, &env.master).map(|_| ());
    // The slot holding the head is torn: the other, older one still counts,
    // so deleting the head is still a rollback down to it.
    let head_slot = lines
        .iter()
        .position(|l| l.contains(" 00000000000000000005 "))
        .unwrap();
    let mut torn: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    torn[head_slot] = "v1 0000000000000".into();
    std::fs::write(&path, torn.join("\n") + "\n").unwrap();
    open().unwrap();
    // Both slots unreadable: refused, not ignored.
    std::fs::write(&path, "v1 garbage\nv1 more garbage\n").unwrap();
    let err = open().unwrap_err();
    assert!(err.is_integrity(), "{err}");
    // The single-line form of earlier builds still reads, and still guards.
    std::fs::write(
        &path,
        lines[head_slot].replacen(" 00000000000000000005 ", " 5 ", 1) + "\n",
    )
    .unwrap();
    open().unwrap();
    db(&env)
        .execute("DELETE FROM snapshots WHERE seq = 5", [])
        .unwrap();
    let err = open().unwrap_err();
    assert!(
        matches!(err, Error::Rollback { seen: 5, found: 4 }),
        "{err}"
    );
}

#[test]
fn deleted_middle_snapshot_breaks_density() {
    let env = build();
    db(&env)
        .execute("DELETE FROM snapshots WHERE seq = 3", [])
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::ChainBroken { seq: 3, .. }), "{err}");
}

#[test]
fn missing_object() {
    let env = build();
    // The metadata objects snapshot 2 stored (its root directory node, the
    // first one, among them).
    db(&env)
        .execute("DELETE FROM homes WHERE seq = 2", [])
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::MissingObject { seq: 2, .. }), "{err}");
}

/// The index says where objects are, never what they are: entries of a
/// commit's `homes` row pointed at each other's bytes are read, and
/// refused by the pack record header or the tag (kind and id are in the
/// AAD), never served.
#[test]
fn swapped_homes_entries() {
    // (Commits that fold: a delta commit stores one metadata object.)
    let env = build_with(0);
    let c = db(&env);
    let objects: Vec<u8> = c
        .query_row("SELECT objects FROM homes WHERE seq = 4", [], |r| r.get(0))
        .unwrap();
    let mut e: Vec<Vec<u8>> = objects.chunks(49).map(<[u8]>::to_vec).collect();
    assert!(e.len() >= 2, "snapshot 4 stored pages and page-map nodes");
    // Swap the locations (pack, offset, length) of the first two entries.
    let (a, b) = (e[0][33..].to_vec(), e[1][33..].to_vec());
    e[0][33..].copy_from_slice(&b);
    e[1][33..].copy_from_slice(&a);
    c.execute("UPDATE homes SET objects = ?1 WHERE seq = 4", [e.concat()])
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(err.is_integrity(), "{err}");
    assert!(err.to_string().contains("snapshot 4"), "{err}");
}

#[test]
fn object_replayed_from_another_agent() {
    let env = build();
    // Agent "other", same master key, a file with content of the same length.
    let other = sovseal::config::AgentName::new("other").unwrap();
    {
        let mut e = sovseal::engine::Engine::open(&env.home, &other, &env.master).unwrap();
        let f = e.create(ROOT_INO, b"x", 0o644, 0, 0).unwrap();
        e.write(f.ino, 0, &bytes(99, 100_000)).unwrap();
        e.commit().unwrap();
    }
    let q = "SELECT pack, offset, len FROM objects WHERE kind = 1 ORDER BY len DESC LIMIT 1";
    let loc = |dir: &std::path::Path| -> (std::path::PathBuf, u64, usize) {
        let c = Connection::open(dir.join("index.db")).unwrap();
        let (p, o, l): (u32, u64, usize) = c
            .query_row(q, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        (dir.join(format!("packs/{p:08}.pack")), o, l)
    };
    let (opath, ooff, olen) = loc(&env.home.agent_dir(&other));
    let (apath, aoff, alen) = loc(&env.data_dir());
    assert_eq!(olen, alen);
    let mut buf = vec![0u8; olen];
    std::fs::File::open(opath)
        .unwrap()
        .read_exact_at(&mut buf, ooff)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(apath)
        .unwrap()
        .write_all_at(&buf, aoff)
        .unwrap();
    let err = verify(&env).unwrap_err();
    assert!(matches!(err, Error::Tag { .. }), "{err}");
}

#[test]
fn truncated_pack_refuses_writer() {
    let env = build();
    // Snapshot 5's last object torn (its commit record after it too).
    let (last, len): (u64, u64) = db(&env)
        .query_row(
            "SELECT offset, len FROM objects WHERE seq = 5 ORDER BY offset DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let pack = env.data_dir().join("packs/00000001.pack");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(last + len - 10)
        .unwrap();
    let err = sovseal::engine::Engine::open(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(verify(&env).is_err());
}

/// Recovery after a power cut cuts back only what was never durable: an
/// index whose durable point was moved back, with the head's bytes cut
/// off, is a rollback of durable history and refused.
#[test]
fn recovery_never_cuts_below_what_was_durable() {
    let env = build();
    db(&env)
        .execute(
            "UPDATE meta SET value = CAST('3' AS BLOB) WHERE key = 'durable_seq'",
            [],
        )
        .unwrap();
    // Snapshot 5's last object torn (its commit record after it too).
    let (last, len): (u64, u64) = db(&env)
        .query_row(
            "SELECT offset, len FROM objects WHERE seq = 5 ORDER BY offset DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let pack = env.data_dir().join("packs/00000001.pack");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(last + len - 10)
        .unwrap();
    let err = sovseal::engine::Engine::open(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Rollback { seen: 5, found: 4 }),
        "{err}"
    );
}

#[test]
fn head_readable_after_tamper_elsewhere_is_still_exact() {
    // Damage to snapshot 2's envelope does not stop reading the head, and
    // what the head returns is exact.
    let env = build();
    let c = db(&env);
    let mut sealed: Vec<u8> = c
        .query_row("SELECT sealed FROM snapshots WHERE seq = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    sealed[30] ^= 1;
    c.execute("UPDATE snapshots SET sealed = ?1 WHERE seq = 2", [&sealed])
        .unwrap();
    assert_eq!(read_head(&env, "f3").unwrap(), bytes(3, 100_000));
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    assert!(a.snapshot(2).err().unwrap().is_integrity());
}

/// The operation journal is sealed like everything else: a flipped bit
/// ends the replay at that record (what came before is applied, nothing
/// forged or after it is), and a record moved onto another head is
/// ignored.
#[test]
fn a_tampered_journal_applies_nothing_it_did_not_seal() {
    let env = Env::new();
    let mut e = env.open();
    e.create(ROOT_INO, b"base", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    let head = e.head().seq();
    e.create(ROOT_INO, b"first", 0o644, 0, 0).unwrap();
    e.mkdir(ROOT_INO, b"second", 0o755, 0, 0).unwrap();
    e.symlink(ROOT_INO, b"third", b"t", 0, 0).unwrap();
    drop(e);
    let path = env.data_dir().join("journal");
    let clean = std::fs::read(&path).unwrap();
    // Frames: len u32 || seq u64 || hash (32) || sealed.
    let frame = |i: usize| {
        let mut at = 0;
        for _ in 0..i {
            at += 44 + u32::from_le_bytes(clean[at..at + 4].try_into().unwrap()) as usize;
        }
        at
    };
    // A bit flipped in the second record's ciphertext.
    let mut b = clean.clone();
    b[frame(1) + 44 + 20] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let e = env.open();
    assert!(e.lookup(ROOT_INO, b"first").unwrap().is_some());
    assert!(e.lookup(ROOT_INO, b"second").unwrap().is_none());
    assert!(e.lookup(ROOT_INO, b"third").unwrap().is_none());
    assert_eq!(e.head().seq(), head + 1);
    drop(e);

    // The same records claimed for another head: stale, ignored.
    let env = Env::new();
    let mut e = env.open();
    e.create(ROOT_INO, b"base", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    e.create(ROOT_INO, b"first", 0o644, 0, 0).unwrap();
    let head = e.head().seq();
    drop(e);
    let path = env.data_dir().join("journal");
    let mut b = std::fs::read(&path).unwrap();
    b[4..12].copy_from_slice(&(head - 1).to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let e = env.open();
    assert!(e.lookup(ROOT_INO, b"first").unwrap().is_none());
    assert_eq!(e.head().seq(), head);
}
