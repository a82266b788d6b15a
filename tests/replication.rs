//! Replication and restore against real parts: the same driver suite on
//! memory://, file:// and a real S3 server (moto on loopback); replicate,
//! wipe, restore and compare every snapshot byte for byte; tampering on the
//! remote; a second writer (fork); a blind remote; injected faults and an
//! S3 outage.

mod support;
use sovseal::Error;
use sovseal::engine::{Engine, XattrFlags};
use sovseal::history::restore;
use sovseal::replication::replicator::Replicator;
use sovseal::repo::agent::Agent;
use sovseal::repo::remote::{Created, Remote};
use sovseal::seal::tree::{FileType, ROOT_INO};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::home::{Env, bytes, files_under};
use support::moto::Moto;
use support::postgres::Postgres;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn driver_suite(remote: &Remote) {
    let rt = rt();
    let a = sovseal::seal::keys::AgentId([1; 32]);
    let b = sovseal::seal::keys::AgentId([2; 32]);
    rt.block_on(async {
        assert!(remote.list_envelopes(&a, 0, 10).await.unwrap().is_empty());
        assert!(!remote.has_envelopes(&a).await.unwrap());
        assert_eq!(remote.get_envelope(&a, 1).await.unwrap(), None);
        for seq in [3u64, 1, 2, 10, 4] {
            assert_eq!(
                remote
                    .put_envelope(&a, seq, format!("e{seq}").into_bytes())
                    .await
                    .unwrap(),
                Created::New
            );
        }
        remote
            .put_envelope(&b, 1, b"other agent".to_vec())
            .await
            .unwrap();
        // Conditional create: same bytes is a retry, other bytes a conflict; nothing is overwritten.
        assert_eq!(
            remote.put_envelope(&a, 2, b"e2".to_vec()).await.unwrap(),
            Created::AlreadyThere
        );
        assert_eq!(
            remote
                .put_envelope(&a, 2, b"forked".to_vec())
                .await
                .unwrap(),
            Created::Conflict
        );
        assert_eq!(remote.get_envelope(&a, 2).await.unwrap().unwrap(), b"e2");
        // Paginated, ordered listing per agent.
        assert_eq!(remote.list_envelopes(&a, 0, 2).await.unwrap(), vec![1, 2]);
        assert_eq!(remote.list_envelopes(&a, 2, 2).await.unwrap(), vec![3, 4]);
        assert_eq!(remote.list_envelopes(&a, 4, 2).await.unwrap(), vec![10]);
        assert_eq!(remote.list_envelopes(&b, 0, 10).await.unwrap(), vec![1]);
        assert!(remote.has_envelopes(&a).await.unwrap());
        remote.delete_envelope(&a, 10).await.unwrap();
        remote.delete_envelope(&a, 10).await.unwrap();
        assert_eq!(
            remote.list_envelopes(&a, 0, 10).await.unwrap(),
            vec![1, 2, 3, 4]
        );
        let big = bytes(5, 3 << 20);
        let h = [9u8; 32];
        remote.put_pack(&a, 1, &h, 0, big.clone()).await.unwrap();
        remote.put_pack(&a, 1, &h, 0, big.clone()).await.unwrap();
        remote
            .put_pack(&a, 1, &[8u8; 32], 0, b"another history".to_vec())
            .await
            .unwrap();
        assert_eq!(remote.get_pack(&a, 1, &h, 0).await.unwrap().unwrap(), big);
        assert_eq!(remote.get_pack(&a, 1, &h, 1).await.unwrap(), None);
    });
}

#[test]
fn driver_suite_memory_file_and_s3() {
    driver_suite(&Remote::open("memory://").unwrap());
    let dir = tempfile::tempdir().unwrap();
    driver_suite(&Remote::open(&format!("file://{}", dir.path().display())).unwrap());
    let m = Moto::start();
    driver_suite(&Remote::open_with(&m.url("suite"), &m.options()).unwrap());
    let e = Remote::open("ftp://x").unwrap_err().to_string();
    assert!(e.contains("not supported"), "{e}");
}

/// The Postgres driver (#16): the same suite against a real PostgreSQL
/// server, over the store's connections in turn; two connections racing to
/// create one envelope (the fence two writers meet at) see exactly one win;
/// a server restart in the middle is survived (the connections are made
/// again); a replicated agent wiped and restored from it is byte for byte
/// the same; and its rows hold no plaintext and no agent name.
#[test]
fn the_postgres_driver_passes_the_suite_and_restores() {
    let mut pg = Postgres::start();
    let remote = Remote::open(&pg.url()).unwrap();
    driver_suite(&remote);
    // The suite's calls took the store's connections in turn: as many
    // server sessions, named, so that pack parts go up side by side.
    let sessions =
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sovseal'");
    assert_eq!(
        sessions.trim(),
        sovseal::repo::postgres::CONNECTIONS.to_string(),
        "server sessions of one store"
    );
    let a = sovseal::seal::keys::AgentId([3; 32]);
    let (one, two) = (
        Remote::open(&pg.url()).unwrap(),
        Remote::open(&pg.url()).unwrap(),
    );
    rt().block_on(async {
        for seq in 1..=20u64 {
            let (x, y) = futures::join!(
                one.put_envelope(&a, seq, b"writer one".to_vec()),
                two.put_envelope(&a, seq, b"writer two".to_vec()),
            );
            let mut r = [x.unwrap(), y.unwrap()];
            r.sort_by_key(|c| format!("{c:?}"));
            assert_eq!(r, [Created::Conflict, Created::New], "seq {seq}");
        }
    });
    pg.restart();
    assert_eq!(
        rt().block_on(remote.list_envelopes(&a, 0, 100))
            .unwrap()
            .len(),
        20,
        "after a server restart"
    );

    // Listings stream page by page (1,000 rows per query): 2,500 envelopes
    // list whole and in order, from the start and from an offset.
    let many = sovseal::seal::keys::AgentId([4; 32]);
    rt().block_on(async {
        use futures::TryStreamExt;
        for seq in 1..=2_500u64 {
            remote.put_envelope(&many, seq, vec![1]).await.unwrap();
        }
        let all = remote.list_envelopes(&many, 0, usize::MAX).await.unwrap();
        assert!(
            all == (1..=2_500).collect::<Vec<u64>>(),
            "{} listed, up to {:?}",
            all.len(),
            all.last()
        );
        let names: Vec<String> = remote
            .store()
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "ascending, once each"
        );
        let from = object_store::path::Path::from(names[1_234].as_str());
        let after: Vec<String> = remote
            .store()
            .list_with_offset(None, &from)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert!(after == names[1_235..], "{} after the offset", after.len());
    });

    let env = Env::new();
    let mut e = env.open();
    let marker = format!("PGMARK{}", std::process::id());
    workload(&mut e, marker.as_bytes());
    replicate_all(&e, &remote);
    let rows = pg.psql("SELECT encode(data, 'hex') FROM sovseal_objects");
    assert!(rows.lines().count() >= 10, "{rows}");
    for (needle, what) in [
        (marker.as_bytes(), "plaintext"),
        (b"agent-1".as_slice(), "the agent's name"),
    ] {
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!rows.contains(&hex), "a row holds {what}");
    }
    drop(e);
    // The same agent (fixed test key) again, from an empty table.
    pg.psql("TRUNCATE sovseal_objects");
    replicate_wipe_restore(Remote::open(&pg.url()).unwrap());
    let e = Remote::open("postgres:///nosuchdb?host=/nonexistent&user=postgres")
        .unwrap_err()
        .to_string();
    assert!(e.contains("remote postgres://"), "{e}");
    // A password in the URL never reaches a message.
    for url in [
        "postgres://agent:s3cr3t@/nosuchdb?host=/nonexistent",
        "postgres:///nosuchdb?host=/nonexistent&user=agent&password=s3cr3t",
    ] {
        let e = Remote::open(url).unwrap_err().to_string();
        assert!(!e.contains("s3cr3t") && e.contains("***"), "{e}");
    }
}

/// The PostgreSQL store against object_store's own reusable suite for
/// custom stores (its `integration` module): puts, gets with ranges and
/// heads, listings with and without delimiters and offsets, copies and
/// renames, conditional copies. Not run: multipart uploads (not offered:
/// one put per pack part), entity tags and versions (none kept).
#[test]
fn the_postgres_store_passes_object_stores_own_suite() {
    use object_store::integration as suite;
    let pg = Postgres::start();
    let store = sovseal::repo::postgres::PgStore::connect(&pg.url()).unwrap();
    rt().block_on(async {
        suite::put_get_delete_list(&store).await;
        suite::list_uses_directories_correctly(&store).await;
        suite::list_with_delimiter(&store).await;
        suite::get_nonexistent_object(&store, None)
            .await
            .unwrap_err();
        suite::rename_and_copy(&store).await;
        suite::copy_if_not_exists(&store).await;
        suite::copy_rename_nonexistent_object(&store).await;
        suite::list_with_offset_exclusivity(&store).await;
    });
}

type Tree = BTreeMap<String, (FileType, Vec<u8>)>;

fn dump(a: &Agent, seq: u64) -> Tree {
    let v = a.snapshot(seq).unwrap();
    let mut out = Tree::new();
    let mut stack = vec![(String::new(), ROOT_INO)];
    while let Some((p, ino)) = stack.pop() {
        for (n, e) in v.entries(ino).unwrap().iter() {
            let path = format!("{p}/{}", String::from_utf8_lossy(n));
            let i = v.getattr(e.ino).unwrap();
            let data = match e.file_type {
                FileType::Dir => {
                    stack.push((path.clone(), e.ino));
                    Vec::new()
                }
                FileType::File => v.read(e.ino, 0, i.size as usize).unwrap(),
                FileType::Symlink => v.readlink(e.ino).unwrap(),
                _ => i.rdev().to_le_bytes().to_vec(),
            };
            out.insert(path, (e.file_type, data));
        }
    }
    out
}

fn dump_all(a: &Agent) -> BTreeMap<u64, Tree> {
    let head = a.head().unwrap().seq();
    (1..=head).map(|s| (s, dump(a, s))).collect()
}

/// Five snapshots of varied content, including a 3 MiB file (several chunks).
fn workload(e: &mut Engine, marker: &[u8]) {
    let d = e.mkdir(ROOT_INO, b"docs", 0o755, 0, 0).unwrap();
    let f = e
        .create(
            d.ino,
            &[b"f-".to_vec(), marker.to_vec()].concat(),
            0o644,
            0,
            0,
        )
        .unwrap();
    e.write(f.ino, 0, &[marker, b" body"].concat()).unwrap();
    e.commit().unwrap();
    let big = e.create(ROOT_INO, b"big", 0o600, 0, 0).unwrap();
    e.write(big.ino, 0, &bytes(7, 3 << 20)).unwrap();
    e.setxattr(big.ino, b"user.note", marker, XattrFlags::default())
        .unwrap();
    e.commit().unwrap();
    e.symlink(ROOT_INO, b"link", b"docs", 0, 0).unwrap();
    e.write(big.ino, 1 << 20, marker).unwrap();
    e.commit().unwrap();
    e.unlink(d.ino, &[b"f-".to_vec(), marker.to_vec()].concat())
        .unwrap();
    e.commit().unwrap();
}

/// Held by the tests that set this process's lazy remote
/// (`lazy::use_remote`, one per process): run together, one's reads went
/// to another's store.
fn one_process_remote() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replicates everything: made durable first, as the mount's barrier does
/// (only durable snapshots leave the machine).
fn replicate_all(e: &Engine, remote: &Remote) {
    e.sync().unwrap();
    let r = Replicator::start(e.shared_agent(), remote.clone()).unwrap();
    r.notify(e.head().seq());
    r.wait_for(e.head().seq()).unwrap();
}

/// A replicator that uploads every snapshot alone (its own pack parts,
/// part index and envelope), for tests about those objects.
fn alone(e: &Engine, remote: &Remote) -> Replicator {
    let options = sovseal::replication::replicator::Options {
        batch_uploads: false,
        ..Default::default()
    };
    Replicator::start_with(e.shared_agent(), remote.clone(), options).unwrap()
}

/// [`replicate_all`], every snapshot uploaded alone.
fn replicate_all_alone(e: &Engine, remote: &Remote) {
    e.sync().unwrap();
    let r = alone(e, remote);
    r.notify(e.head().seq());
    r.wait_for(e.head().seq()).unwrap();
}

/// A data dir of tree format 5 and index schema 3, written by the last
/// build before homes (tests/fixtures/v2/datadir-tree5/, made by
/// `sovseal-mount` of 4b27b6a with its default file remote, which it
/// replicated to: `big/` of 100 files with 10 then deleted, `hello.txt`
/// appended to, a sparse `docs/blob.bin` with a chunk list), opens and
/// migrates its index; its next snapshots (tree format 6) keep references
/// to its objects by id beside their own objects at home. That mixed
/// history replicates on to the old build's remote, loses all but its
/// newest snapshots to a forget and a prune, and restores into an empty
/// data dir: every kept snapshot reads the same before and after, and
/// verifies.
#[test]
fn an_older_data_dir_migrates_and_its_mixed_history_replicates_prunes_and_restores() {
    use sovseal::seal::tree::{ObjectKind, Pages};
    let env = Env::golden("datadir-tree5");
    let mut e = env.open();
    assert_eq!(e.head().manifest().format, 5, "written by tree format 5");
    let schema: i64 = rusqlite::Connection::open(env.data_dir().join("index.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(schema, 4, "migrated on open");
    let big = e.resolve(b"big").unwrap();
    assert_eq!(e.readdir(big).unwrap().len(), 90);
    let hello = e.resolve(b"hello.txt").unwrap();
    assert_eq!(
        e.read(hello, 0, 99).unwrap(),
        b"hello from tree format 5\nagain\n"
    );
    let mut blob = vec![0u8; (600 << 10) + 3];
    blob[..5].copy_from_slice(b"start");
    blob[600 << 10..].copy_from_slice(b"end");
    let blob_ino = e.resolve(b"docs/blob.bin").unwrap();
    assert!(matches!(
        e.getattr(blob_ino).unwrap().content,
        sovseal::seal::tree::Content::File(sovseal::seal::tree::Chunks::List { .. })
    ));
    assert_eq!(e.read(blob_ino, 0, 1 << 20).unwrap(), blob);

    e.create(big, b"g000", 0o644, 0, 0).unwrap();
    e.write(hello, 31, b"third\n").unwrap();
    e.commit().unwrap();
    let head = e.head();
    let m = head.manifest().clone();
    assert_eq!(m.format, sovseal::seal::tree::FORMAT_VERSION);
    let Pages::Counted(Some(root)) = m.pages else {
        panic!("a counted page map");
    };
    assert_eq!(root.home, m.seq, "the changed page map is stored at home");
    let (mut by_id, mut at_home) = (0, 0);
    head.walk_objects(&|_| false, &mut |kind, r| {
        if kind.homed() {
            match r.home {
                0 => by_id += 1,
                h => {
                    assert_eq!(h, m.seq);
                    at_home += 1;
                }
            }
        } else {
            assert_eq!(r.home, 0, "{} found by id", kind.name());
        }
        Ok(())
    })
    .unwrap();
    assert!(by_id > 0 && at_home > 0, "{by_id} by id, {at_home} at home");
    assert!(matches!(
        e.getattr(big).unwrap().content,
        sovseal::seal::tree::Content::Dir(Some(d)) if d.obj().home == m.seq && d.kind() == ObjectKind::DirIndex
    ));
    drop(e);
    let e = env.open();
    assert_eq!(
        e.read(hello, 0, 99).unwrap(),
        b"hello from tree format 5\nagain\nthird\n"
    );
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();

    let remote = Remote::open(&format!(
        "file://{}",
        env.home.root().join("remote").display()
    ))
    .unwrap();
    replicate_all(&e, &remote);
    let last = e.head().seq();
    let agent = e.agent();
    let forget: Vec<u64> = (1..last - 2).collect();
    sovseal::history::retention::forget(agent, &forget).unwrap();
    let report = sovseal::history::retention::prune(agent, &remote, &mut |_, _| {}).unwrap();
    assert!(report.objects_removed > 0, "{report:?}");
    sovseal::history::verify::verify(agent, |_, _| {}).unwrap();
    let kept: BTreeMap<u64, Tree> = (last - 2..=last).map(|s| (s, dump(agent, s))).collect();
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    restore_ok(&env, &remote);
    let e = env.open();
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    let again: BTreeMap<u64, Tree> = (last - 2..=last).map(|s| (s, dump(e.agent(), s))).collect();
    assert_eq!(again, kept);
    assert_eq!(
        e.read(hello, 0, 99).unwrap(),
        b"hello from tree format 5\nagain\nthird\n"
    );
}

/// Part indexes missing on a remote an older build replicated (#16): the
/// golden tree-format-5 data dir's own remote has none, so a lazy restore
/// of it was done whole. Each missing one is written from the local index
/// when the remote's parts have the planned sizes (a snapshot of two parts
/// included), else read from the parts themselves (after a local prune
/// took objects the remote keeps); each equals what parsing the remote's
/// parts gives. Then the agent restores lazily and every kept snapshot
/// reads as before.
#[test]
fn part_indexes_an_older_build_left_out_are_written_and_the_agent_restores_lazily() {
    let _one = one_process_remote();
    use sovseal::replication::backfill::{self, Written};
    use sovseal::repo::pack;
    let env = Env::golden("datadir-tree5");
    let mut e = env.open();
    let remote = Remote::open(&format!(
        "file://{}",
        env.home.root().join("remote").display()
    ))
    .unwrap();
    let rt = rt();
    let id = env.master.agent_id(env.agent.as_str());
    let old_head = e.head().seq();
    assert!(
        rt.block_on(remote.list_indexes(&id, 0)).unwrap().is_empty(),
        "the older build wrote no part index"
    );
    assert_eq!(
        rt.block_on(remote.list_envelopes(&id, 0, usize::MAX))
            .unwrap(),
        (1..=old_head).collect::<Vec<_>>()
    );
    // A snapshot of two parts, uploaded by this build with its index.
    let f = e.create(ROOT_INO, b"two-parts", 0o600, 0, 0).unwrap().ino;
    e.write(f, 0, &bytes(11, 9 << 20)).unwrap();
    e.commit().unwrap();
    e.sync().unwrap();
    let head = e.head().seq();
    let agent = e.agent();
    let hash = |seq| agent.envelope(seq).unwrap().hash();
    rt.block_on(sovseal::replication::replicator::upload(
        agent, &remote, head,
    ))
    .unwrap();
    let stored = |seq| {
        rt.block_on(remote.get_index(&id, seq, &hash(seq)))
            .unwrap()
            .unwrap_or_else(|| panic!("no part index of snapshot {seq}"))
    };
    let parsed = |seq| {
        let mut entries = Vec::new();
        let mut part = 0;
        while let Some(b) = rt
            .block_on(remote.get_pack(&id, seq, &hash(seq), part))
            .unwrap()
        {
            entries.extend(pack::part_entries(seq, part, &b).unwrap());
            part += 1;
        }
        (pack::encode_index(&entries), part)
    };
    let uploaded = stored(head);
    assert_eq!((uploaded.clone(), 2), parsed(head), "two parts, indexed");
    rt.block_on(remote.delete_index(&id, head, &hash(head)))
        .unwrap();

    // One part there holds a record more than this data dir would upload
    // (its size differs from the plan): read from the remote.
    let mut odd = rt
        .block_on(remote.get_pack(&id, 2, &hash(2), 0))
        .unwrap()
        .unwrap();
    pack::encode_record(
        &mut odd,
        &sovseal::seal::tree::ObjectId([7; 32]),
        sovseal::seal::tree::ObjectKind::Chunk,
        b"not planned",
    );
    rt.block_on(remote.put_pack(&id, 2, &hash(2), 0, odd))
        .unwrap();

    let missing = rt
        .block_on(backfill::missing(agent, &remote, 0, head))
        .unwrap();
    assert_eq!(missing, (1..=head).collect::<Vec<_>>());
    for &seq in &missing {
        assert_eq!(
            rt.block_on(backfill::write_index(agent, &remote, seq))
                .unwrap(),
            if seq == 2 {
                Written::FromRemote
            } else {
                Written::FromLocal
            },
            "snapshot {seq}"
        );
        assert_eq!(stored(seq), parsed(seq).0, "snapshot {seq}");
    }
    assert_eq!(stored(head), uploaded);
    let after: Vec<u64> = rt
        .block_on(remote.list_indexes(&id, head - 2))
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(after, vec![head - 1, head], "listed after a snapshot");
    assert!(
        rt.block_on(backfill::missing(agent, &remote, 0, head))
            .unwrap()
            .is_empty()
    );

    // Forgotten and pruned: the remote drops the parts of snapshots that
    // hold no live object and writes the others again with their live
    // objects alone (a delta a kept snapshot's chain reads) or keeps them
    // whole, while the local packs lose their dead objects. Indexes
    // written again from scratch (a trimmed snapshot needs one too).
    let forget: Vec<u64> = (1..old_head - 1).collect();
    sovseal::history::retention::forget(agent, &forget).unwrap();
    let report = sovseal::history::retention::prune(agent, &remote, &mut |_, _| {}).unwrap();
    let whole = report.remote_snapshots_pruned - report.remote_snapshots_trimmed;
    assert!(
        whole > 0 && report.remote_snapshots_kept + report.remote_snapshots_trimmed > 0,
        "{report:?}"
    );
    for (seq, h) in rt.block_on(remote.list_indexes(&id, 0)).unwrap() {
        assert_eq!(h, sovseal::hex::encode(&hash(seq)[..16]));
        rt.block_on(remote.delete_index(&id, seq, &hash(seq)))
            .unwrap();
    }
    let missing = rt
        .block_on(backfill::missing(agent, &remote, 0, head))
        .unwrap();
    assert_eq!(
        missing.len() as u64,
        head - whole,
        "pruned there: nothing to index"
    );
    let mut from_remote = 0;
    for &seq in &missing {
        let w = rt
            .block_on(backfill::write_index(agent, &remote, seq))
            .unwrap();
        from_remote += u32::from(w == Written::FromRemote);
        assert_ne!(w, Written::NoParts, "snapshot {seq}");
        assert_eq!(stored(seq), parsed(seq).0, "snapshot {seq}");
    }
    assert!(from_remote > 0, "no local prune made the parts differ");
    let kept: BTreeMap<u64, Tree> = (old_head - 1..=head).map(|s| (s, dump(agent, s))).collect();
    drop(e);

    let e = restore_lazily(&env, &remote, head);
    let again: BTreeMap<u64, Tree> = (old_head - 1..=head)
        .map(|s| (s, dump(e.agent(), s)))
        .collect();
    assert_eq!(again, kept);
    assert!(
        !env.data_dir()
            .join("packs")
            .read_dir()
            .unwrap()
            .any(|f| { f.unwrap().metadata().unwrap().len() > 1 << 20 }),
        "content fetched on read, not restored whole"
    );
}

/// Tree format 6 deduplicates metadata within a commit only: a directory
/// whose name comes and goes gets its first node's bytes again, stored at
/// the new home. A prune keeps the copy that retained snapshots reference
/// and removes the other one, so the forgotten snapshots' rows go and
/// their remote parts can be deleted.
#[test]
fn a_prune_removes_a_dead_copy_of_an_object_live_at_another_home() {
    use sovseal::seal::tree::Content;
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: the directory's node is what they store.)
    e.set_fold_every(0);
    let d = e.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    e.create(d, b"a", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    let first = e.head().seq();
    e.create(d, b"b", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    e.unlink(d, b"b").unwrap();
    e.commit().unwrap();
    let last = e.head().seq();
    let node = |seq: u64| match e.agent().snapshot(seq).unwrap().getattr(d).unwrap().content {
        Content::Dir(Some(r)) => *r.obj(),
        c => panic!("{c:?}"),
    };
    let (old, new) = (node(first), node(last));
    assert_eq!(old.id, new.id, "the same entries, the same node");
    assert_eq!((old.home, new.home), (first, last));
    let (_dir, remote) = dir_remote();
    replicate_all(&e, &remote);
    let agent = e.agent();
    sovseal::history::retention::forget(agent, &(1..last).collect::<Vec<_>>()).unwrap();
    let report = sovseal::history::retention::prune(agent, &remote, &mut |_, _| {}).unwrap();
    // Snapshot `first`'s copy of the node is gone; `last`'s still reads.
    let homed_at = |seq: u64| -> Vec<Vec<u8>> {
        let c = rusqlite::Connection::open(env.data_dir().join("index.db")).unwrap();
        let rows: Vec<Vec<u8>> = c
            .prepare("SELECT objects FROM homes WHERE seq = ?1")
            .unwrap()
            .query_map([seq], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        rows.concat().chunks(49).map(|e| e[..32].to_vec()).collect()
    };
    assert!(!homed_at(first).contains(&old.id.0.to_vec()), "{report:?}");
    assert!(homed_at(last).contains(&new.id.0.to_vec()));
    assert!(report.remote_snapshots_pruned >= 1, "{report:?}");
    assert_eq!(e.readdir(d).unwrap().len(), 1);
    sovseal::history::verify::verify(agent, |_, _| {}).unwrap();
}

fn replicate_wipe_restore(remote: Remote) {
    let env = Env::new();
    let mut e = env.open();
    workload(&mut e, b"MARK");
    replicate_all(&e, &remote);
    let before = dump_all(e.agent());
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let mut progress = Vec::new();
    let head = rt()
        .block_on(restore::restore(
            &env.home,
            &env.agent,
            &env.master,
            &remote,
            |s, h| progress.push((s, h)),
        ))
        .unwrap();
    assert_eq!(head, 5);
    assert_eq!(progress.len(), 5, "progress per snapshot");
    let e = env.open();
    assert_eq!(
        dump_all(e.agent()),
        before,
        "every file of every snapshot, byte for byte"
    );
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(
        sovseal::repo::replication_state::replicated_seq(e.agent()).unwrap(),
        5
    );
}

/// An agent of five snapshots replicated whole to a file:// remote in
/// `rdir` and closed, its `replicated_seq` marker then set back to 2, as a
/// crash that lost the lazy marker writes leaves it.
fn replicated_with_marker_behind(rdir: &std::path::Path, batches: bool) -> (Env, Remote) {
    let remote = Remote::open(&format!("file://{}", rdir.display())).unwrap();
    let env = Env::new();
    let mut e = env.open();
    workload(&mut e, b"MARK");
    match batches {
        true => replicate_all(&e, &remote),
        false => replicate_all_alone(&e, &remote),
    }
    assert_eq!(
        sovseal::repo::replication_state::replicated_seq(e.agent()).unwrap(),
        5,
        "written once the queue drained"
    );
    drop(e);
    rusqlite::Connection::open(env.data_dir().join("index.db"))
        .unwrap()
        .execute_batch("UPDATE meta SET value = CAST('2' AS BLOB) WHERE key = 'replicated_seq'")
        .unwrap();
    (env, remote)
}

/// The `replicated_seq` marker is written when the queue drains and at
/// most every `MARKER_EVERY` while it does not, so a crash can leave it
/// behind what reached the remote. The replicator then uploads those
/// snapshots again: the remote takes them as already there (no fork, no
/// error) and the marker ends at the head. Planted (a re-upload meeting its
/// own envelope taken as a fork): fails.
#[test]
fn a_marker_behind_the_remote_is_caught_up_without_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let (env, remote) = replicated_with_marker_behind(dir.path(), true);
    let e = env.open();
    assert_eq!(
        sovseal::repo::replication_state::replicated_seq(e.agent()).unwrap(),
        2,
        "the marker a crash left behind"
    );
    replicate_all(&e, &remote);
    let state = sovseal::repo::replication_state::ReplicationState::read(e.agent()).unwrap();
    assert_eq!((state.replicated, state.fork), (5, None), "{state:?}");
    assert_eq!(state.error, None, "{state:?}");
}

/// A failing upload records what went up before it at once, not after
/// the retries: the marker stands at the last snapshot the remote took
/// while the next one keeps failing, and moves on once it goes up.
/// (Planted without the save in the error path: the marker stays behind,
/// and this fails.)
#[test]
fn a_failing_upload_records_what_went_up_before_it() {
    let rdir = tempfile::tempdir().unwrap();
    let (env, remote) = replicated_with_marker_behind(rdir.path(), false);
    // Snapshot 4's pack part cannot be written again: a directory that is
    // not empty stands where the file was (root ignores permissions).
    let part = files_under(&rdir.path().join("sovseal-v1"))
        .into_iter()
        .find(|p| {
            p.parent().is_some_and(|d| d.ends_with("packs"))
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{:020}-", 4)))
        })
        .expect("snapshot 4's part");
    std::fs::remove_file(&part).unwrap();
    std::fs::create_dir(&part).unwrap();
    std::fs::write(part.join("in-the-way"), b"x").unwrap();
    let e = env.open();
    let r = alone(&e, &remote);
    r.notify(e.head().seq());
    let state = || sovseal::repo::replication_state::ReplicationState::read(e.agent()).unwrap();
    let t = std::time::Instant::now();
    while !(state().replicated == 3 && state().error.is_some()) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the marker while 4 fails: {:?}",
            state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&part).unwrap();
    r.wait_for(5).unwrap();
    assert_eq!(state().replicated, 5);
    assert_eq!(state().error, None);
}

#[test]
fn replicate_wipe_restore_file_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    replicate_wipe_restore(Remote::open(&format!("file://{}", dir.path().display())).unwrap());
    let m = Moto::start();
    replicate_wipe_restore(Remote::open_with(&m.url("agents"), &m.options()).unwrap());
}

/// A replicated agent on a file:// remote, its data dir wiped (key and
/// rollback record kept): ready for restore.
fn wiped() -> (Env, tempfile::TempDir, Remote, std::path::PathBuf) {
    let env = Env::new();
    let (rdir, remote) = dir_remote();
    let mut e = env.open();
    workload(&mut e, b"MARK");
    replicate_all_alone(&e, &remote);
    let agent_dir = rdir
        .path()
        .join("sovseal-v1")
        .join(env.master.agent_id(env.agent.as_str()).to_hex());
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    (env, rdir, remote, agent_dir)
}

fn restore_ok(env: &Env, remote: &Remote) {
    rt().block_on(restore::restore(
        &env.home,
        &env.agent,
        &env.master,
        remote,
        |_, _| {},
    ))
    .unwrap();
}

fn restore_err(env: &Env, remote: &Remote) -> Error {
    let e = rt()
        .block_on(restore::restore(
            &env.home,
            &env.agent,
            &env.master,
            remote,
            |_, _| {},
        ))
        .unwrap_err();
    assert!(
        !env.data_dir().join("index.db").exists(),
        "nothing unverified is kept: {e}"
    );
    e
}

#[test]
fn tampered_remote_is_refused_naming_the_snapshot() {
    // A bit flipped in a pack.
    let (env, _d, remote, dir) = wiped();
    let pack = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("00000000000000000002-")
        })
        .unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    let n = b.len();
    b[n - 100] ^= 1;
    std::fs::write(&pack, b).unwrap();
    let e = restore_err(&env, &remote);
    assert!(
        matches!(e, Error::Tag { .. }) && e.to_string().contains("snapshot 2"),
        "{e}"
    );

    // A bit flipped in an envelope's ciphertext.
    let (env, _d, remote, dir) = wiped();
    let p = dir.join("envelopes/00000000000000000003.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let c = j["ciphertext_b64"].as_str().unwrap().to_owned();
    let first = if c.as_bytes()[0] == b'A' { "B" } else { "A" };
    let flipped = format!("{first}{}", &c[1..]);
    j["ciphertext_b64"] = flipped.into();
    std::fs::write(&p, serde_json::to_vec(&j).unwrap()).unwrap();
    let e = restore_err(&env, &remote);
    assert!(e.is_integrity() && e.to_string().contains('3'), "{e}");

    // Two envelopes swapped.
    let (env, _d, remote, dir) = wiped();
    let (p2, p3) = (
        dir.join("envelopes/00000000000000000002.json"),
        dir.join("envelopes/00000000000000000003.json"),
    );
    let (a, b) = (std::fs::read(&p2).unwrap(), std::fs::read(&p3).unwrap());
    std::fs::write(&p2, b).unwrap();
    std::fs::write(&p3, a).unwrap();
    let e = restore_err(&env, &remote);
    assert!(matches!(e, Error::ChainBroken { seq: 2, .. }), "{e}");

    // One deleted in the middle.
    let (env, _d, remote, dir) = wiped();
    std::fs::remove_file(dir.join("envelopes/00000000000000000003.json")).unwrap();
    let e = restore_err(&env, &remote);
    assert!(matches!(e, Error::ChainBroken { seq: 3, .. }), "{e}");

    // The newest deleted: the remote's own signed checkpoint of snapshot 5
    // catches it (the replicator signed one when it stopped).
    let (env, _d, remote, dir) = wiped();
    std::fs::remove_file(dir.join("envelopes/00000000000000000005.json")).unwrap();
    let e = restore_err(&env, &remote);
    assert!(
        matches!(e, Error::ChainBroken { seq: 5, .. })
            && e.to_string().contains("signed checkpoint"),
        "{e}"
    );
    // ...and with the checkpoints deleted too, this machine's rollback
    // record still does.
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let e = restore_err(&env, &remote);
    assert!(matches!(e, Error::Rollback { seen: 5, found: 4 }), "{e}");

    // An intact remote restores (the harness itself is sound).
    let (env, _d, remote, _dir) = wiped();
    restore_ok(&env, &remote);
}

#[test]
fn a_second_writer_is_detected_and_nothing_is_overwritten() {
    let (rdir, remote) = dir_remote();
    let first = Env::new();
    let mut a = first.open();
    workload(&mut a, b"FIRST");
    replicate_all(&a, &remote);
    let env_dir = rdir
        .path()
        .join("sovseal-v1")
        .join(first.master.agent_id(first.agent.as_str()).to_hex());
    let before: BTreeMap<_, _> = files_under(&env_dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    // Same key, same agent, another data dir: a forked history.
    let second = Env::new();
    let mut b = second.open();
    workload(&mut b, b"SECOND");
    b.sync().unwrap();
    let r = Replicator::start(b.shared_agent(), remote.clone()).unwrap();
    r.notify(b.head().seq());
    let err = r.wait_for(b.head().seq()).unwrap_err();
    assert!(matches!(err, Error::Fork { .. }), "{err}");
    assert!(r.status().fork.is_some());
    assert!(err.to_string().contains("another machine"), "{err}");
    // The second machine keeps working locally.
    let f = b.create(ROOT_INO, b"still-writable", 0o644, 0, 0).unwrap();
    b.write(f.ino, 0, b"x").unwrap();
    b.commit().unwrap();
    // Nothing the first writer put there was changed.
    for (p, bytes) in &before {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            bytes,
            "{} was overwritten",
            p.display()
        );
    }
    assert_eq!(
        sovseal::repo::replication_state::fork_seq(b.agent()).unwrap(),
        r.status().fork
    );
}

#[test]
fn the_remote_is_blind() {
    let (rdir, remote) = dir_remote();
    let env = Env::new();
    let mut e = env.open();
    let marker = format!("RMARK{}", std::process::id()).into_bytes();
    workload(&mut e, &marker);
    replicate_all(&e, &remote);
    let files = files_under(rdir.path());
    assert!(files.len() >= 5);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("/batches/")),
        "snapshots committed before the upload go up in batches"
    );
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        assert!(
            !raw.windows(marker.len()).any(|w| w == marker.as_slice()),
            "{} holds plaintext",
            f.display()
        );
        assert!(
            !raw.windows(7).any(|w| w == b"agent-1"),
            "{} names the agent",
            f.display()
        );
    }
}

mod faulty {
    //! An object store that fails or delays a fraction of requests.
    use futures::StreamExt;
    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Faulty {
        pub inner: Arc<dyn ObjectStore>,
        pub n: AtomicU64,
        pub failed: AtomicU64,
        /// Whether request `n` (counted from 0) fails.
        pub fails: fn(u64) -> bool,
        /// Entries the inner store listed (what a listing cost).
        pub listed: Arc<AtomicU64>,
        /// Reads in flight now, and the most seen at once.
        pub reading: AtomicU64,
        pub most_reading: AtomicU64,
        /// Reads that started while no other was in flight: the rounds of
        /// requests a reader waited for, one after another.
        pub alone: AtomicU64,
        /// How long every read takes, in ms, besides the every-tenth delay.
        pub read_ms: AtomicU64,
        /// Told of every read as it starts.
        pub on_get: std::sync::Mutex<Option<OnGet>>,
        /// Every put (once stored) and delete (once asked for), in order.
        pub log: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
        /// Reads (and HEADs) of the paths it names fail while set.
        pub fail_if: std::sync::Mutex<Option<FailIf>>,
        /// Every listing asked for: its prefix, and its offset if any.
        pub listings: std::sync::Mutex<Vec<(String, Option<String>)>>,
    }

    /// A read in flight, counted in [`Faulty::reading`].
    struct Reading<'a>(&'a AtomicU64);

    impl Drop for Reading<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// What [`Faulty`] tells of each read.
    pub type OnGet = Box<dyn Fn(&Path) + Send>;

    /// Reads as they came: each object's directory and the sequence number
    /// its name starts with (names without one left out).
    pub type Reads = Arc<std::sync::Mutex<Vec<(String, u64)>>>;

    /// A remote over `inner` that records every read ([`Reads`]).
    pub fn recording_reads(inner: &Arc<dyn ObjectStore>) -> (sovseal::repo::remote::Remote, Reads) {
        let read = Reads::default();
        let faulty = Faulty::new(inner.clone(), |_| false);
        *faulty.on_get.lock().unwrap() = Some({
            let read = read.clone();
            Box::new(move |p: &Path| {
                let (dir, name) = p.as_ref().rsplit_once('/').unwrap();
                let kind = dir.rsplit('/').next().unwrap().to_owned();
                if let Ok(seq) = name[..20.min(name.len())].parse::<u64>() {
                    read.lock().unwrap().push((kind, seq));
                }
            })
        });
        let remote =
            sovseal::repo::remote::Remote::with_store(faulty, Default::default(), "faulty://");
        (remote, read)
    }
    /// Which reads [`Faulty`] fails.
    pub type FailIf = Box<dyn Fn(&str) -> bool + Send>;

    impl std::fmt::Debug for Faulty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Faulty")
        }
    }

    impl std::fmt::Display for Faulty {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Faulty")
        }
    }

    impl Faulty {
        /// `inner`, failing the requests `fails` names (every tenth one
        /// answered 30 ms late).
        pub fn new(inner: Arc<dyn ObjectStore>, fails: fn(u64) -> bool) -> Arc<Self> {
            Arc::new(Faulty {
                inner,
                n: Default::default(),
                failed: Default::default(),
                fails,
                listed: Default::default(),
                reading: Default::default(),
                most_reading: Default::default(),
                alone: Default::default(),
                read_ms: Default::default(),
                on_get: Default::default(),
                log: Default::default(),
                fail_if: Default::default(),
                listings: Default::default(),
            })
        }

        async fn maybe_fail(&self) -> Result<()> {
            let n = self.n.fetch_add(1, Ordering::Relaxed);
            if n % 10 == 3 {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
            if (self.fails)(n) {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return Err(object_store::Error::Generic {
                    store: "faulty",
                    source: "injected failure".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Faulty {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Result<PutResult> {
            self.maybe_fail().await?;
            let r = self.inner.put_opts(location, payload, opts).await?;
            self.log.lock().unwrap().push(("put", location.to_string()));
            Ok(r)
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            if let Some(f) = &*self.on_get.lock().unwrap() {
                f(location);
            }
            if let Some(f) = &*self.fail_if.lock().unwrap()
                && f(location.as_ref())
            {
                return Err(object_store::Error::Generic {
                    store: "faulty",
                    source: "injected failure".into(),
                });
            }
            let now = self.reading.fetch_add(1, Ordering::Relaxed) + 1;
            // (Counted out when the read ends or is dropped.)
            let _reading = Reading(&self.reading);
            self.most_reading.fetch_max(now, Ordering::Relaxed);
            if now == 1 {
                self.alone.fetch_add(1, Ordering::Relaxed);
            }
            let ms = self.read_ms.load(Ordering::Relaxed);
            if ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            match self.maybe_fail().await {
                Ok(()) => self.inner.get_opts(location, options).await,
                Err(e) => Err(e),
            }
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            let log = self.log.clone();
            self.inner
                .delete_stream(Box::pin(locations.inspect(move |p| {
                    if let Ok(p) = p {
                        log.lock().unwrap().push(("delete", p.to_string()));
                    }
                })))
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.listings
                .lock()
                .unwrap()
                .push((prefix.map(|p| p.to_string()).unwrap_or_default(), None));
            let n = self.listed.clone();
            Box::pin(self.inner.list(prefix).inspect(move |_| {
                n.fetch_add(1, Ordering::Relaxed);
            }))
        }
        fn list_with_offset(
            &self,
            prefix: Option<&Path>,
            offset: &Path,
        ) -> BoxStream<'static, Result<ObjectMeta>> {
            self.listings.lock().unwrap().push((
                prefix.map(|p| p.to_string()).unwrap_or_default(),
                Some(offset.to_string()),
            ));
            let n = self.listed.clone();
            Box::pin(
                self.inner
                    .list_with_offset(prefix, offset)
                    .inspect(move |_| {
                        n.fetch_add(1, Ordering::Relaxed);
                    }),
            )
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }
}

/// A restore reads the writer's copy of its newest checkpoint and lists
/// only the checkpoints after it (one page however many there are: one
/// per checkpoint interval of the agent's life), never all of them. A
/// checkpoint listed after the copy is still taken: a copy left behind
/// (the writer stopped between the two puts, or a remote that put an old
/// copy back) neither hides a newer checkpoint nor the snapshots dropped
/// under it. A copy that does not verify is refused; a remote without one
/// (an older writer) has its checkpoints listed from the first.
#[test]
fn a_restore_reads_the_newest_checkpoints_copy_and_lists_only_after_it() {
    use object_store::ObjectStoreExt;
    use sovseal::history::checkpoint;
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    for s in 0..6 {
        e.write(f, 0, &bytes(s, 64)).unwrap();
        e.commit().unwrap();
    }
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &plain);
    let head = e.head().seq();
    // The replicator signed the head; then checkpoints of 2 and 4 asked
    // for by hand: the copy stays at the head's.
    for s in [2, 4] {
        rt().block_on(checkpoint::create(e.agent(), &plain, s))
            .unwrap();
    }
    drop(e);
    let agent_dir = format!(
        "sovseal-v1/{}",
        env.master.agent_id(env.agent.as_str()).to_hex()
    );
    let at = |rel: &str| object_store::path::Path::from(format!("{agent_dir}/{rel}"));
    let copy = at("checkpoint.json");
    let file = |s: u64| at(&format!("checkpoints/{s:020}.json"));
    let get = |p: &object_store::path::Path| {
        rt().block_on(async { inner.get(p).await.unwrap().bytes().await.unwrap() })
    };
    let put = |p: &object_store::path::Path, b: bytes::Bytes| {
        rt().block_on(inner.put(p, b.into())).unwrap();
    };
    assert_eq!(get(&copy), get(&file(head)));
    // What a restore lists of the checkpoints, and which files it reads.
    let restore_with = |expect_ok: bool| {
        let faulty = faulty::Faulty::new(inner.clone(), |_| false);
        let read = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        *faulty.on_get.lock().unwrap() = Some({
            let read = read.clone();
            Box::new(move |p: &object_store::path::Path| {
                if p.as_ref().contains("checkpoint") {
                    read.lock().unwrap().push(p.to_string());
                }
            })
        });
        let remote = Remote::with_store(faulty.clone(), Default::default(), "faulty://");
        let _ = std::fs::remove_dir_all(env.data_dir());
        let _ = std::fs::remove_file(env.home.seen_head_path(&env.agent));
        let r = rt().block_on(restore::restore(
            &env.home,
            &env.agent,
            &env.master,
            &remote,
            |_, _| {},
        ));
        assert_eq!(r.is_ok(), expect_ok, "{r:?}");
        let listed: Vec<Option<String>> = faulty
            .listings
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with("/checkpoints"))
            .map(|(_, o)| o.clone())
            .collect();
        let read = std::mem::take(&mut *read.lock().unwrap());
        (r.err(), listed, read)
    };
    let checkpointed = || {
        let e = env.open();
        checkpoint::checkpointed_seq(e.agent()).unwrap()
    };

    // The copy, then a listing after it (empty), no checkpoint file read.
    let (_, listed, read) = restore_with(true);
    assert_eq!(listed, [Some(file(head).to_string())]);
    assert_eq!(read, [copy.to_string()]);
    assert_eq!(checkpointed(), Some(head));

    // A copy left at 2: the head's checkpoint, listed after it, is taken.
    put(&copy, get(&file(2)));
    let (_, listed, read) = restore_with(true);
    assert_eq!(listed, [Some(file(2).to_string())]);
    assert_eq!(read, [copy.to_string(), file(head).to_string()]);
    assert_eq!(checkpointed(), Some(head));
    // ...and so the remote that drops the head's snapshot while it puts
    // the old copy back is caught by the head's checkpoint.
    let envelope = at(&format!("envelopes/{head:020}.json"));
    let saved = get(&envelope);
    rt().block_on(inner.delete(&envelope)).unwrap();
    let (e, _, _) = restore_with(false);
    assert!(
        e.as_ref()
            .unwrap()
            .to_string()
            .contains("dropped or rolled back"),
        "{e:?}"
    );
    put(&envelope, saved);

    // A copy that does not verify (its snapshot altered): refused.
    let mut forged: serde_json::Value = serde_json::from_slice(&get(&file(head))).unwrap();
    forged["seq"] = serde_json::json!(head - 1);
    put(&copy, serde_json::to_vec(&forged).unwrap().into());
    let (e, _, _) = restore_with(false);
    let e = e.unwrap();
    assert!(
        matches!(e, Error::Corrupt { .. })
            && e.to_string().contains(&format!(
                "checkpoint {}'s copy as the newest on the remote (checkpoint.json)",
                head - 1
            )),
        "{e}"
    );

    // No copy (an older writer's remote): every checkpoint is listed, the
    // newest read.
    rt().block_on(inner.delete(&copy)).unwrap();
    let (_, listed, read) = restore_with(true);
    assert_eq!(listed, [None]);
    assert_eq!(read, [copy.to_string(), file(head).to_string()]);
    assert_eq!(checkpointed(), Some(head));

    // `verify --remote` checks the copy with the checkpoint files: one
    // signed by this agent's key over another hash (a key that leaked, or
    // a fork) is refused, as is one that does not verify.
    let e = env.open();
    let checked = checkpoint::check_all(e.agent(), &[], Some(&plain), None).unwrap();
    assert_eq!(checked.remote_head, Some(head));
    let keys = env.master.agent_keys(env.agent.as_str());
    let other = checkpoint::Checkpoint::sign(&keys, head, &[7; 32], 1);
    put(&copy, other.to_json().into());
    let err = checkpoint::check_all(e.agent(), &[], Some(&plain), None).unwrap_err();
    assert!(
        matches!(err, Error::ChainBroken { seq, .. } if seq == head),
        "{err}"
    );
    put(&copy, serde_json::to_vec(&forged).unwrap().into());
    let err = checkpoint::check_all(e.agent(), &[], Some(&plain), None).unwrap_err();
    assert!(err.to_string().contains("(checkpoint.json)"), "{err}");
}

/// The flat start from a checkpoint inside a chain segment (B = C: the
/// restore takes that segment's members from B on), inside the tail (its
/// members before B left out), and at the head itself (held by the tail:
/// nothing after B, so the head's parent is not checked when it opens).
/// Each restore reads nothing before B's segment and holds the snapshots
/// from B on only; the older history then brings every snapshot back as
/// the writer had it, and `verify` passes over the whole chain.
#[test]
fn a_flat_start_begins_inside_a_chain_segment_inside_the_tail_or_at_the_head() {
    let _one = one_process_remote();
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use sovseal::history::{checkpoint, older};
    use sovseal::replication::backfill;
    use sovseal::repo::segment::SEGMENT_LEN;
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    for s in 0..4 * SEGMENT_LEN + 100 {
        e.write(f, 0, &bytes(s, 64)).unwrap();
        e.commit().unwrap();
    }
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &plain);
    let covered = 4 * SEGMENT_LEN;
    let head = e.head().seq();
    assert!(head > covered + 64 && head < covered + SEGMENT_LEN);
    for k in 0..4 {
        let w = rt().block_on(backfill::write_segment(
            e.agent(),
            &plain,
            k * SEGMENT_LEN + 1,
            &Default::default(),
        ));
        assert_eq!(w.unwrap(), backfill::Segment::Written);
    }
    let w = rt().block_on(backfill::write_tail(
        e.agent(),
        &plain,
        covered + 1,
        head,
        &Default::default(),
    ));
    assert_eq!(w.unwrap(), backfill::Segment::Written);
    let keys = env.master.agent_keys(env.agent.as_str());
    let id = keys.agent_id();
    let starts = [2 * SEGMENT_LEN + 88, covered + 50, head];
    let signed: Vec<checkpoint::Checkpoint> = starts
        .iter()
        .map(|&c| {
            let hash = e.agent().snapshot_unchecked(c).unwrap().hash();
            checkpoint::Checkpoint::sign(&keys, c, &hash, 1)
        })
        .collect();
    let mut seqs = vec![1, 2, covered, head - 1, head];
    seqs.extend(starts.iter().flat_map(|&c| [c - 1, c]));
    let before: BTreeMap<u64, Tree> = seqs.iter().map(|&s| (s, dump(e.agent(), s))).collect();
    drop(e);
    let checkpoints =
        object_store::path::Path::from(format!("sovseal-v1/{}/checkpoints", id.to_hex()));
    for c in signed {
        let b = c.seq;
        // The remote's newest checkpoint is C's (the others gone).
        rt().block_on(async {
            let names: Vec<_> = inner
                .list(Some(&checkpoints))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .unwrap();
            for n in names {
                inner.delete(&n).await.unwrap();
            }
            plain.put_checkpoint(&id, b, c.to_json()).await.unwrap();
            plain.put_newest_checkpoint(&id, c.to_json()).await.unwrap();
        });
        std::fs::remove_dir_all(env.data_dir()).unwrap();
        let _ = std::fs::remove_file(env.home.seen_head_path(&env.agent));
        // Every read of the restore, by the snapshot its name starts with.
        let (remote, read) = faulty::recording_reads(&inner);
        let restored = rt().block_on(restore::restore_lazy(
            &env.home,
            &env.agent,
            &env.master,
            &remote,
            |_, _| {},
        ));
        assert_eq!(restored.unwrap(), Some(head), "from {b}");
        let reads = std::mem::take(&mut *read.lock().unwrap());
        // (From the segments and the tail only: no envelope file.)
        let segment = (b - 1) / SEGMENT_LEN * SEGMENT_LEN + 1;
        assert!(
            reads
                .iter()
                .all(|(kind, s)| *s >= segment && kind != "envelopes"),
            "from {b}: {reads:?}"
        );
        sovseal::repo::lazy::use_remote(plain.clone(), Duration::from_secs(30)).unwrap();
        let e = env.open();
        let agent = e.agent();
        assert_eq!(older::pending(agent).unwrap(), Some((b, None)), "from {b}");
        assert!(matches!(
            agent.snapshot(b - 1),
            Err(Error::NoSuchSnapshot(_))
        ));
        assert_eq!(dump(agent, b), before[&b], "from {b}");
        assert_eq!(dump(agent, head), before[&head], "from {b}");
        let stop = std::sync::atomic::AtomicBool::new(false);
        rt().block_on(older::fill(agent, &plain, &stop)).unwrap();
        assert_eq!(older::pending(agent).unwrap(), None, "from {b}");
        for (s, t) in &before {
            assert_eq!(&dump(agent, *s), t, "from {b}: snapshot {s}");
        }
        sovseal::history::verify::verify(agent, |_, _| {}).unwrap();
    }
}

/// Every object of `store` under `prefix` (a folder, or one object's
/// name), with its bytes, deleted from it.
fn take_under(
    store: &Arc<dyn object_store::ObjectStore>,
    prefix: &str,
) -> Vec<(object_store::path::Path, bytes::Bytes)> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    rt().block_on(async {
        let prefix = object_store::path::Path::from(prefix);
        let mut names: Vec<_> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        if store.head(&prefix).await.is_ok() {
            names.push(prefix);
        }
        let mut taken = Vec::new();
        for n in names {
            let b = store.get(&n).await.unwrap().bytes().await.unwrap();
            store.delete(&n).await.unwrap();
            taken.push((n, b));
        }
        taken
    })
}

/// A lazily restored head at the end of a long delta chain: the chain's
/// deltas are asked for together when the head is first read (each delta
/// names only the one before it; walked one after another, a store 10 ms
/// away cost a mount 10 ms a delta, up to 256 at the default fold:
/// PERFORMANCE "Session 47"), from a restore of the whole chain and from a
/// flat start whose chain reaches below its first snapshot (the part
/// indexes there come from their chain segment first); the head and a
/// snapshot in the middle of the chain read as written. After a rollback
/// the snapshots before the head stored deltas of another chain: the head
/// still reads, and the whole history verifies.
#[test]
fn a_lazy_restore_asks_for_a_delta_chain_together() {
    let _one = one_process_remote();
    use sovseal::history::older;
    use sovseal::repo::segment::SEGMENT_LEN;
    use std::sync::atomic::Ordering::Relaxed;
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    // Commits that fold up to 200, then a chain of 120 deltas across the
    // end of the first chain segment's range.
    e.set_fold_every(0);
    for s in 0..200 {
        e.write(f, 0, &bytes(s, 100)).unwrap();
        e.commit().unwrap();
    }
    let fold = e.head().seq();
    e.set_fold_every(1000);
    let deltas = 120;
    for s in 0..deltas {
        let g = e
            .create(ROOT_INO, format!("g{s}").as_bytes(), 0o644, 0, 0)
            .unwrap()
            .ino;
        e.write(g, 0, &bytes(s + 5000, 100)).unwrap();
        e.write(f, 0, &bytes(s + 1000, 100)).unwrap();
        e.commit().unwrap();
    }
    let head = e.head().seq();
    assert_eq!(head, fold + deltas, "one snapshot a commit");
    assert!(fold < SEGMENT_LEN && SEGMENT_LEN < head);
    let middle = fold + deltas / 2;
    let before: BTreeMap<u64, Tree> = [middle, head]
        .iter()
        .map(|&s| (s, dump(e.agent(), s)))
        .collect();
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &plain);
    rt().block_on(sovseal::replication::backfill::write_segment(
        e.agent(),
        &plain,
        1,
        &Default::default(),
    ))
    .unwrap();
    drop(e);
    let restore_from = |remote: &Remote| {
        std::fs::remove_dir_all(env.data_dir()).unwrap();
        let _ = std::fs::remove_file(env.home.seen_head_path(&env.agent));
        rt().block_on(restore::restore_lazy(
            &env.home,
            &env.agent,
            &env.master,
            remote,
            |_, _| {},
        ))
        .unwrap()
    };
    // Every read 2 ms away: reads one after another are each alone.
    let open_far = |what: &str| {
        let slow = faulty::Faulty::new(inner.clone(), |_| false);
        slow.read_ms.store(2, Relaxed);
        let remote = Remote::with_store(slow.clone(), Default::default(), "slow://");
        sovseal::repo::lazy::use_remote(remote, Duration::from_secs(30)).unwrap();
        let e = env.open();
        let rounds = slow.alone.load(Relaxed);
        assert!(
            rounds < deltas / 3,
            "{what}: opening the head waited for {rounds} rounds of reads for a chain of {deltas} deltas"
        );
        e
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let read_all = |e: &Engine| {
        assert_eq!(dump(e.agent(), head), before[&head]);
        rt().block_on(older::fill(e.agent(), &plain, &stop))
            .unwrap();
        assert_eq!(dump(e.agent(), middle), before[&middle]);
    };
    // The replicator signed a checkpoint of the head once it caught up: a
    // flat start there, the chain's older part indexes fetched for it
    // (the first range's from its segment).
    assert_eq!(restore_from(&plain), Some(head));
    let e = open_far("a flat start at the head");
    assert_eq!(older::pending(e.agent()).unwrap(), Some((head, None)));
    read_all(&e);
    drop(e);

    // The same flat start with the chain segment and the tail gone from
    // the remote since (as a prune may leave it): the part indexes of the
    // chain's older snapshots, each from its own files, asked for
    // together.
    assert_eq!(restore_from(&plain), Some(head));
    let agent_dir = format!(
        "sovseal-v1/{}",
        env.master.agent_id(env.agent.as_str()).to_hex()
    );
    let segments = take_under(&inner, &format!("{agent_dir}/segments"));
    assert_eq!(segments.len(), 2, "the first range's segment and the tail");
    let e = open_far("a flat start without segments");
    assert_eq!(dump(e.agent(), head), before[&head]);
    drop(e);
    rt().block_on(async {
        use object_store::ObjectStoreExt;
        for (n, b) in segments {
            inner.put(&n, b.into()).await.unwrap();
        }
    });

    // Without a checkpoint: the whole history (every part index here).
    assert!(!take_under(&inner, &format!("{agent_dir}/checkpoints")).is_empty());
    assert_eq!(
        take_under(&inner, &format!("{agent_dir}/checkpoint.json")).len(),
        1
    );
    assert_eq!(restore_from(&plain), Some(head));
    let e = open_far("no checkpoint");
    assert_eq!(older::pending(e.agent()).unwrap(), None);
    read_all(&e);
    drop(e);

    // A rollback to the middle, and one commit on it: the new head's
    // chain is the middle's and one delta more, while the snapshots
    // before the head stored the deltas after the middle (every guess
    // wrong: the walk fetches the chain itself).
    sovseal::repo::lazy::use_remote(plain.clone(), Duration::from_secs(30)).unwrap();
    let mut e = env.open();
    rt().block_on(older::fill(e.agent(), &plain, &stop))
        .unwrap();
    let target = e.agent().snapshot(middle).unwrap();
    e.rollback_to(&target).unwrap();
    assert_eq!(dump(e.agent(), e.head().seq()), before[&middle]);
    e.write(f, 0, b"after the rollback").unwrap();
    e.commit().unwrap();
    let rolled = e.head().seq();
    let after = dump(e.agent(), rolled);
    assert_ne!(after, before[&middle]);
    replicate_all(&e, &plain);
    drop(e);
    assert_eq!(restore_from(&plain), Some(rolled));
    sovseal::repo::lazy::use_remote(plain.clone(), Duration::from_secs(30)).unwrap();
    let e = env.open();
    assert_eq!(dump(e.agent(), rolled), after);
    rt().block_on(older::fill(e.agent(), &plain, &stop))
        .unwrap();
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// A lazy restore's reads ahead keep going while it checks and commits
/// what came: the chain segment 8 ranges ahead is asked for once the first
/// range is done, not once all 8 before it are (a `buffered` stream polls
/// the futures it holds only when asked for a result it has not got yet:
/// left to it, the reads ahead went in batches, a full round trip waited
/// for every 8 segments; PERFORMANCE "Session 35").
#[test]
fn a_lazy_restore_reads_chain_segments_ahead_while_it_checks_the_ones_it_has() {
    use sovseal::replication::backfill;
    use sovseal::repo::segment::SEGMENT_LEN;
    use std::sync::atomic::{AtomicU64, Ordering};
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    let ranges = 10;
    for s in 0..ranges * SEGMENT_LEN {
        e.write(f, 0, &bytes(s, 64)).unwrap();
        e.commit().unwrap();
    }
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &plain);
    for k in 0..ranges {
        assert_eq!(
            rt().block_on(backfill::write_segment(
                e.agent(),
                &plain,
                k * SEGMENT_LEN + 1,
                &Default::default()
            ))
            .unwrap(),
            backfill::Segment::Written
        );
    }
    let written = e.head().seq();
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    // Where the restore's checks were when each segment was asked for.
    let checked = Arc::new(AtomicU64::new(0));
    let asked = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let faulty = faulty::Faulty::new(inner, |_| false);
    *faulty.on_get.lock().unwrap() = Some({
        let (checked, asked) = (checked.clone(), asked.clone());
        Box::new(move |p: &object_store::path::Path| {
            // `…/segments/<first:020>.seg`
            let first = p
                .as_ref()
                .rsplit_once("/segments/")
                .and_then(|(_, n)| n.strip_suffix(".seg")?.parse::<u64>().ok());
            if let Some(first) = first {
                asked
                    .lock()
                    .unwrap()
                    .entry(first)
                    .or_insert(checked.load(Ordering::Relaxed));
            }
        })
    });
    let remote = Remote::with_store(faulty, Default::default(), "faulty://");
    let head = rt()
        .block_on(restore::restore_lazy(
            &env.home,
            &env.agent,
            &env.master,
            &remote,
            |seq, _| checked.store(seq, Ordering::Relaxed),
        ))
        .unwrap();
    assert_eq!(head, Some(written));
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len() as u64, ranges, "every segment read: {asked:?}");
    // The ninth: 8 reads ahead, then one more as the first range is done.
    let ninth = 8 * SEGMENT_LEN + 1;
    let at = asked[&ninth];
    assert!(
        at < 2 * SEGMENT_LEN,
        "the segment from snapshot {ninth} was asked for only once snapshot {at} was being checked: {asked:?}"
    );
}

/// The flat start (#16): a lazy restore of a long history begins at the
/// newest signed checkpoint, or at the first snapshot after the chain
/// segments when that is earlier (here: the checkpoint is at head), and
/// reads nothing of the remote before it (no chain segment, envelope or
/// part index of an older snapshot); the
/// older history is fetched after, newest first, each envelope checked
/// against the parent link of the one after it down to genesis. Content
/// stored before the checkpoint waits for it; then every snapshot reads
/// and the whole chain verifies. An older envelope altered on the remote
/// (in its segment and its file) stops the older history there, named,
/// while the head still reads.
#[test]
fn a_lazy_restore_starts_at_the_newest_checkpoint_and_fetches_the_older_history_after() {
    let _one = one_process_remote();
    use object_store::ObjectStoreExt;
    use sovseal::history::{checkpoint, older};
    use sovseal::replication::backfill;
    use sovseal::repo::segment::SEGMENT_LEN;
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: the head reads metadata of snapshot 1, and no
    // delta chain reaches back past the checkpoint.)
    e.set_fold_every(0);
    // A directory of snapshot 1, never changed after (its node stays
    // homed there); a file whose one chunk is stored at snapshot ~300
    // while its inode and the root directory are rewritten at the end.
    let d = e.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap().ino;
    let x = e.create(d, b"x", 0o644, 0, 0).unwrap().ino;
    e.write(x, 0, b"in d").unwrap();
    e.commit().unwrap();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    let mut old = 0;
    for s in 0..4 * SEGMENT_LEN + 40 {
        if s == 300 {
            old = e.create(ROOT_INO, b"old", 0o644, 0, 0).unwrap().ino;
            e.write(old, 0, &bytes(7, 1000)).unwrap();
        }
        e.write(f, 0, &bytes(s, 64)).unwrap();
        e.commit().unwrap();
    }
    let perm = sovseal::engine::SetAttr {
        perm: Some(0o600),
        ..Default::default()
    };
    e.setattr(old, &perm).unwrap();
    e.create(ROOT_INO, b"g", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let plain = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &plain);
    for k in 0..4 {
        let first = k * SEGMENT_LEN + 1;
        let w = rt().block_on(backfill::write_segment(
            e.agent(),
            &plain,
            first,
            &Default::default(),
        ));
        assert_eq!(w.unwrap(), backfill::Segment::Written);
    }
    // The replicator signed a checkpoint of the head it reached.
    let b = e.head().seq();
    assert_eq!(checkpoint::checkpointed_seq(e.agent()).unwrap(), Some(b));
    let written = b;
    let before: BTreeMap<u64, Tree> = [1, 2, 300, b - 1, b]
        .iter()
        .map(|&s| (s, dump(e.agent(), s)))
        .collect();
    drop(e);
    let restore_from = |remote: &Remote| {
        std::fs::remove_dir_all(env.data_dir()).unwrap();
        // (A fresh machine: no seen-head record of the agent.)
        let _ = std::fs::remove_file(env.home.seen_head_path(&env.agent));
        let head = rt().block_on(restore::restore_lazy(
            &env.home,
            &env.agent,
            &env.master,
            remote,
            |_, _| {},
        ));
        assert_eq!(head.unwrap(), Some(written));
    };
    // Every read of the restore, by the snapshot its name starts with.
    let (remote, read) = faulty::recording_reads(&inner);
    restore_from(&remote);
    let reads = std::mem::take(&mut *read.lock().unwrap());
    // From the first snapshot after the chain segments on (the checkpoint
    // is later), nothing older.
    let from = 4 * SEGMENT_LEN + 1;
    let oldest = reads.iter().map(|(_, s)| *s).min().unwrap();
    assert_eq!(oldest, from, "{reads:?}");
    sovseal::repo::lazy::use_remote(plain.clone(), Duration::from_secs(30)).unwrap();
    let e = env.open();
    let agent = e.agent();
    assert_eq!(older::pending(agent).unwrap(), Some((from, None)));
    // The head's metadata stored before the checkpoint (`d`'s node, of
    // snapshot 1) reads at once: the part indexes of its chain segment are
    // fetched for it. Content waits for the older history (none is coming
    // here: missing).
    let head = agent.head().unwrap();
    let names: Vec<Vec<u8>> = head
        .entries(d)
        .unwrap()
        .keys()
        .map(|n| n.to_vec())
        .collect();
    assert_eq!(names, [b"x".to_vec()]);
    assert_eq!(e.read(x, 0, 10).unwrap(), b"in d");
    assert!(matches!(
        e.read(old, 0, 10),
        Err(Error::MissingObject { .. })
    ));
    assert!(matches!(
        agent.snapshot(from - 1),
        Err(Error::NoSuchSnapshot(_))
    ));
    assert!(
        sovseal::history::verify::verify(agent, |_, _| {}).is_err(),
        "not over part of the chain"
    );
    // A read of content stored before the checkpoint waits for the older
    // history's part indexes while they are coming (from a remote that
    // answers each chain segment 300 ms late, by the mount's thread).
    let slow = faulty::Faulty::new(inner.clone(), |_| false);
    *slow.on_get.lock().unwrap() = Some(Box::new(|p: &object_store::path::Path| {
        if p.as_ref().ends_with(".seg") {
            std::thread::sleep(Duration::from_millis(300));
        }
    }));
    let slow = Remote::with_store(slow, Default::default(), "faulty://");
    let filling = sovseal::mount::warm::Warmer::older_history(&e.shared_agent(), slow).unwrap();
    let reader = {
        let agent = e.shared_agent();
        std::thread::spawn(move || dump(&agent, written))
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(!reader.is_finished(), "the read waits");
    assert_eq!(reader.join().unwrap(), before[&written]);
    let t0 = std::time::Instant::now();
    while older::pending(agent).unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(filling);
    let stop = std::sync::atomic::AtomicBool::new(false);
    assert_eq!(older::pending(agent).unwrap(), None);
    for (s, t) in &before {
        assert_eq!(&dump(agent, *s), t, "snapshot {s}");
    }
    sovseal::history::verify::verify(agent, |_, _| {}).unwrap();
    drop(e);

    // A machine whose key was rotated since (version 2 here, the remote's
    // snapshots all of version 1) does not start flat: a snapshot it did
    // not check the parent of could be one a retired key sealed after the
    // rotation. The whole chain is checked first.
    let mut rotated = env.master.clone();
    rotated.add_version(2, [9; 32]);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let _ = std::fs::remove_file(env.home.seen_head_path(&env.agent));
    let head = rt().block_on(restore::restore_lazy(
        &env.home,
        &env.agent,
        &rotated,
        &plain,
        |_, _| {},
    ));
    assert_eq!(head.unwrap(), Some(written));
    let a = Agent::open_readonly(&env.home, &env.agent, &rotated).unwrap();
    assert_eq!(older::pending(&a).unwrap(), None, "whole chain");
    drop(a);

    // Snapshot 5 altered in its segment and its file (its timestamp: it
    // still parses and opens; only the chain tells).
    let id = env.master.agent_id(env.agent.as_str());
    // (Snapshot 5's envelope file, byte for byte, wherever it is stored:
    // snapshots of one millisecond share their timestamp.)
    let env5 = rt().block_on(plain.get_envelope(&id, 5)).unwrap().unwrap();
    let t5 = sovseal::seal::envelope::Envelope::from_json(&env5)
        .unwrap()
        .timestamp;
    let mut altered = env5.clone();
    let ts = format!("\"timestamp\":{t5}");
    let at = altered
        .windows(ts.len())
        .position(|w| w == ts.as_bytes())
        .unwrap();
    altered[at..at + ts.len()].copy_from_slice(format!("\"timestamp\":{}", t5 + 1).as_bytes());
    let alter = |path: object_store::path::Path| {
        let raw = rt().block_on(async { inner.get(&path).await.unwrap().bytes().await.unwrap() });
        let at = raw
            .windows(env5.len())
            .position(|w| w == &env5[..])
            .unwrap();
        let mut raw = raw.to_vec();
        raw[at..at + env5.len()].copy_from_slice(&altered);
        rt().block_on(inner.put(&path, raw.into())).unwrap();
    };
    let path_ending = |end: String| {
        rt().block_on(async {
            use futures::TryStreamExt;
            inner
                .list(None)
                .map_ok(|m| m.location)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
        })
        .into_iter()
        .find(|p| p.as_ref().ends_with(&end))
        .unwrap()
    };
    alter(path_ending(format!("/envelopes/{:020}.json", 5)));
    alter(path_ending(format!("/segments/{:020}.seg", 1)));
    restore_from(&plain);
    let e = env.open();
    let agent = e.agent();
    let err = rt()
        .block_on(older::fill(agent, &plain, &stop))
        .unwrap_err();
    assert!(
        matches!(&err, Error::ChainBroken { seq: 5, detail } if detail.contains("parent link of snapshot 6")),
        "{err}"
    );
    let (at, why) = older::pending(agent).unwrap().unwrap();
    assert!(
        at > 5 && why.is_some_and(|w| w.contains("snapshot 5")),
        "{at}"
    );
    assert!(matches!(agent.snapshot(5), Err(Error::NoSuchSnapshot(5))));
    assert_eq!(dump(agent, written), before[&written]);
}

#[test]
fn injected_failures_and_delays_are_retried_until_all_is_replicated() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = faulty::Faulty::new(inner.clone(), |n| n % 3 == 1);
    let remote = Remote::with_store(faulty.clone(), Default::default(), "faulty://");
    let env = Env::new();
    let mut e = env.open();
    workload(&mut e, b"MARK");
    replicate_all(&e, &remote);
    assert!(
        faulty.failed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "faults were injected"
    );
    let before = dump_all(e.agent());
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let clean = Remote::with_store(inner, Default::default(), "memory://");
    restore_ok(&env, &clean);
    assert_eq!(
        dump_all(env.open().agent()),
        before,
        "each object uploaded correctly"
    );
}

/// While a program's disk sync is under way the replicator holds pending
/// snapshots back (tests/replication_hold.rs shows it through a mount), at
/// most `YIELD_MAX`; once that has passed, every snapshot pending then goes
/// up, batch after batch (256 at most each), while the sync still goes on,
/// not one batch per hold.
#[test]
fn a_hold_that_ends_uploads_the_whole_backlog() {
    use sovseal::replication::replicator::YIELD_MAX;
    let remote = Remote::open("memory://").unwrap();
    let env = Env::new();
    let mut e = env.open();
    e.sync().unwrap();
    let r = Replicator::start(e.shared_agent(), remote.clone()).unwrap();
    r.notify(e.head().seq());
    r.wait_for(e.head().seq()).unwrap();
    let before = r.status().replicated;
    // 1,000 durable snapshots (four ranges of 256), told to the
    // replicator at once while a program's sync is under way.
    let f = e.create(ROOT_INO, b"log", 0o644, 0, 0).unwrap();
    for i in 0..1000u64 {
        e.write(f.ino, i * 10, format!("{i:09}\n").as_bytes())
            .unwrap();
        e.commit().unwrap().unwrap();
    }
    e.sync().unwrap();
    let head = e.head().seq();
    let syncing = r.foreground_sync();
    let t0 = std::time::Instant::now();
    r.notify(head);
    // Without the hold they would go up within ~20 ms.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.status().replicated, before, "held back while syncing");
    // The hold ends YIELD_MAX after the replicator first found them
    // pending; then all of them go up, well within 0.8 s from a memory
    // remote. Holding again after each batch would take a second per 256.
    let deadline = t0 + YIELD_MAX + Duration::from_millis(800);
    while r.status().replicated < head && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        r.status().replicated,
        head,
        "the backlog of {} snapshots went up by the deadline",
        head - before
    );
    drop(syncing);
    assert_eq!(r.status().error, None);
}

#[test]
fn an_s3_outage_during_writes_loses_nothing_and_the_queue_drains() {
    let m = Moto::start();
    let remote = Remote::open_with(&m.url("outage"), &m.options()).unwrap();
    let env = Env::new();
    let mut e = env.open();
    let r = Replicator::start(e.shared_agent(), remote.clone()).unwrap();
    let f = e.create(ROOT_INO, b"log", 0o644, 0, 0).unwrap();
    for i in 0..30u64 {
        if i == 10 {
            m.pause();
        }
        if i == 25 {
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                r.status().replicated < e.head().seq(),
                "the outage held replication back"
            );
            m.resume();
        }
        e.write(f.ino, i * 10, format!("{i:09}\n").as_bytes())
            .unwrap();
        let info = e.commit().unwrap().unwrap();
        e.sync().unwrap();
        r.notify(info.seq);
    }
    m.resume();
    r.wait_for(e.head().seq()).unwrap();
    assert_eq!(r.status().error, None);
    let before = dump_all(e.agent());
    drop(r);
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    restore_ok(&env, &remote);
    assert_eq!(dump_all(env.open().agent()), before);
}

/// A snapshot larger than three pack parts goes up whole through a failing
/// remote, each part's put tried again on its own. Two remotes: one that
/// fails the first four requests of the big snapshot (the first try of each
/// part in flight), which must cost no failed attempt of the whole
/// snapshot; one that fails one request in three at random, where uploads
/// also fail whole (the envelope, a part failing thrice) and are retried
/// until it is all there.
#[test]
fn a_snapshot_of_many_parts_goes_up_whole_through_failures_and_delays() {
    // Requests 0 to 2 put the first snapshot (a part, its part index,
    // the envelope).
    let first_four: fn(u64) -> bool = |n| (3..7).contains(&n);
    let one_in_three: fn(u64) -> bool =
        |n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) % 3 == 0;
    let (errors, failed) = many_parts_through(first_four);
    assert_eq!(errors, 0, "a part's failed put is tried again on its own");
    assert_eq!(failed, 4);
    let (_, failed) = many_parts_through(one_in_three);
    assert!(failed > 0, "faults were injected");
}

/// Replicates a snapshot of several parts through a remote failing the
/// requests `fails` picks, restores it from a clean copy and compares;
/// returns the failed attempts of the whole and the failed requests.
fn many_parts_through(fails: fn(u64) -> bool) -> (u64, u64) {
    use sovseal::replication::replicator::{PART_BYTES, pack_parts};
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = faulty::Faulty::new(inner.clone(), fails);
    let remote = Remote::with_store(faulty.clone(), Default::default(), "faulty://");
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"big", 0o644, 0, 0).unwrap();
    let size = 3 * PART_BYTES + (5 << 20);
    for (i, at) in (0..size).step_by(1 << 20).enumerate() {
        e.write(f.ino, at as u64, &bytes(i as u64, 1 << 20))
            .unwrap();
    }
    let seq = e.commit().unwrap().unwrap().seq;
    assert!(
        pack_parts(e.agent(), seq).unwrap().len() >= 4,
        "the snapshot spans several parts"
    );
    e.sync().unwrap();
    let r = Replicator::start(e.shared_agent(), remote.clone()).unwrap();
    r.notify(seq);
    let t0 = std::time::Instant::now();
    while r.status().replicated < seq {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not replicated within 2 minutes: {:?}",
            r.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = r.status().errors_total;
    drop(r);
    let before = dump_all(e.agent());
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let clean = Remote::with_store(inner, Default::default(), "memory://");
    restore_ok(&env, &clean);
    assert_eq!(dump_all(env.open().agent()), before, "every part arrived");
    (
        errors,
        faulty.failed.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// A follower's poll costs what is new, not what the history holds: the
/// envelopes are listed from the follower's head on (S3's `start-after`, a
/// key range on PostgreSQL), and the forget and redaction records it holds
/// are listed but not fetched again.
#[test]
fn a_poll_costs_what_is_new_not_the_history() {
    use std::sync::atomic::Ordering::Relaxed;
    let counting = faulty::Faulty::new(Arc::new(object_store::memory::InMemory::new()), |_| false);
    let remote = Remote::with_store(counting.clone(), Default::default(), "counting://");
    let env = Env::new();
    let mut e = env.open();
    let secret = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(secret, 0, b"to be redacted").unwrap();
    let log = e.create(ROOT_INO, b"log", 0o644, 0, 0).unwrap().ino;
    e.commit().unwrap();
    for i in 0..300u64 {
        e.write(log, i * 8, &i.to_le_bytes()).unwrap();
        e.commit().unwrap();
    }
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    let head = e.head().seq();
    replicate_all(&e, &remote);
    let agent = e.agent();
    sovseal::history::retention::forget(agent, &[2, 3, 4]).unwrap();
    sovseal::history::retention::prune(agent, &remote, &mut |_, _| {}).unwrap();
    let plan = sovseal::history::redact::plan(agent, "secret", &mut |_, _| {}).unwrap();
    let rec = sovseal::history::redact::apply_local(agent, "secret", &plan).unwrap();
    rt().block_on(sovseal::history::redact::apply_remote(agent, &remote, &rec))
        .unwrap();
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    restore_ok(&env, &remote);

    let e = env.open();
    let (gets, listed) = (counting.n.load(Relaxed), counting.listed.load(Relaxed));
    let p = rt().block_on(restore::pull(e.agent(), &remote)).unwrap();
    assert_eq!(
        (p.from, p.head, p.forgotten, p.redactions),
        (head, head, 0, 0),
        "{:?}",
        p.stopped
    );
    let gets = counting.n.load(Relaxed) - gets;
    let listed = counting.listed.load(Relaxed) - listed;
    assert_eq!(gets, 0, "records held here fetched again");
    // The head's envelope, three forget records, one redaction record.
    assert_eq!(
        listed, 5,
        "a poll listed {listed} entries for {head} snapshots"
    );
}

/// A remote in memory.
/// A remote in a temporary directory (its files can be read and edited):
/// the directory, which must outlive it, and the remote.
fn dir_remote() -> (tempfile::TempDir, Remote) {
    let dir = tempfile::tempdir().unwrap();
    let remote = Remote::open(&format!("file://{}", dir.path().display())).unwrap();
    (dir, remote)
}

fn memory_remote() -> Remote {
    Remote::with_store(
        Arc::new(object_store::memory::InMemory::new()),
        Default::default(),
        "memory://",
    )
}

/// `name` in the root holding `data`, committed, then unlinked and
/// committed again.
fn written_then_removed(e: &mut Engine, name: &[u8], data: &[u8]) {
    let s = e.create(ROOT_INO, name, 0o600, 0, 0).unwrap().ino;
    e.write(s, 0, data).unwrap();
    e.commit().unwrap();
    e.unlink(ROOT_INO, name).unwrap();
    e.commit().unwrap();
}

/// Every byte of `env`'s packs (record headers name ids in the clear).
fn pack_bytes(env: &Env) -> Vec<u8> {
    files_under(&env.data_dir().join("packs"))
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// A pull that takes in a redaction record together with a snapshot that
/// writes part of the erased content again hands on what may be erased
/// ([`restore::Pulled::erasable`], which a follower carries out without
/// walking its history again): exactly what a walk of everything it then
/// holds finds, so without what was written again. Carried out, the rest
/// leaves the packs and the content written again still reads.
#[test]
fn a_pull_with_a_redaction_hands_on_what_a_walk_of_everything_finds() {
    use sovseal::history::redact;
    use std::collections::HashSet;
    let remote = memory_remote();
    let writer = Env::new();
    let mut e = writer.open();
    // 21 chunks of 64 KiB: a chunk list.
    let secret = bytes(77, 20 * 65536 + 5);
    written_then_removed(&mut e, b"secret", &secret);
    replicate_all(&e, &remote);
    let follower = Env::new();
    restore_ok(&follower, &remote);

    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    let rec = redact::apply_local(e.agent(), "secret", &plan).unwrap();
    rt().block_on(redact::apply_remote(e.agent(), &remote, &rec))
        .unwrap();
    // Its first ten chunks written again: the same objects.
    let half = secret[..10 * 65536].to_vec();
    let a = e.create(ROOT_INO, b"again", 0o600, 0, 0).unwrap().ino;
    e.write(a, 0, &half).unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);

    let f = follower.open();
    let mut p = rt().block_on(restore::pull(f.agent(), &remote)).unwrap();
    assert!(p.stopped.is_none(), "{:?}", p.stopped);
    assert_eq!((p.redactions, p.head), (1, e.head().seq()));
    let (found, exact) = p.erasable.clone().expect("a redaction came in");
    assert!(exact);
    let walked =
        redact::erasable(f.agent(), &redact::allowances_unchecked(f.agent()).unwrap()).unwrap();
    assert_eq!(found, walked);
    let named: HashSet<_> = plan.erase.iter().copied().collect();
    assert!(
        !found.is_empty() && found.is_subset(&named) && found.len() < named.len(),
        "{} of {} named",
        found.len(),
        named.len()
    );
    let erasing = restore::Erasing::after(&mut p);
    assert!(matches!(erasing, restore::Erasing::Found(..)));
    let out = restore::carry_out_records(f.agent(), erasing).unwrap();
    assert_eq!((out.erased, out.exact), (found.len(), true));
    drop(f);
    let f = follower.open();
    let ino = support::home::path_ino(&f, "again");
    assert!(f.read(ino, 0, half.len()).unwrap() == half, "again differs");
    // Record headers name their object's id in the clear.
    let packs = pack_bytes(&follower);
    let held = |id: &sovseal::seal::tree::ObjectId| packs.windows(32).any(|w| w == id.0);
    assert!(
        found.iter().all(|id| !held(id)),
        "erased objects left in the packs"
    );
    assert!(
        named.difference(&found).all(held),
        "content written again left the packs"
    );
}

/// A forget record taken in by the same pull as a redaction record may
/// free what the pull's walk (made before the forget was stored) kept:
/// content that only a snapshot now forgotten wrote again. The writer
/// forgot that snapshot before it redacted, so its record names the
/// content; the follower must erase it too, so the pull's answer is not
/// handed on and the records are walked again.
#[test]
fn a_forget_in_the_same_pull_as_a_redaction_is_walked_again() {
    use sovseal::history::{redact, retention};
    let remote = memory_remote();
    let writer = Env::new();
    let mut e = writer.open();
    let content = bytes(91, 3 * 65536);
    written_then_removed(&mut e, b"secret", &content);
    // The same bytes again under another name, in one snapshot only.
    let o = e.create(ROOT_INO, b"other", 0o600, 0, 0).unwrap().ino;
    e.write(o, 0, &content).unwrap();
    e.commit().unwrap();
    let other_seq = e.head().seq();
    e.unlink(ROOT_INO, b"other").unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);
    let follower = Env::new();
    restore_ok(&follower, &remote);

    retention::forget(e.agent(), &[other_seq]).unwrap();
    retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    assert!(plan.objects > 0 && plan.shared_kept == 0, "{plan:?}");
    let rec = redact::apply_local(e.agent(), "secret", &plan).unwrap();
    rt().block_on(redact::apply_remote(e.agent(), &remote, &rec))
        .unwrap();

    let f = follower.open();
    let mut p = rt().block_on(restore::pull(f.agent(), &remote)).unwrap();
    assert!(p.stopped.is_none(), "{:?}", p.stopped);
    assert_eq!((p.forgotten, p.redactions), (1, 1));
    // The pull's walk kept it all: the forgotten snapshot still counted.
    let (by_pull, _) = p.erasable.clone().unwrap();
    assert!(by_pull.is_empty(), "{by_pull:?}");
    let erasing = restore::Erasing::after(&mut p);
    assert!(matches!(erasing, restore::Erasing::Find));
    let out = restore::carry_out_records(f.agent(), erasing).unwrap();
    assert_eq!(
        (out.erased, out.exact, out.changed),
        (plan.objects, true, true)
    );
    drop(f);
    let packs = pack_bytes(&follower);
    assert!(
        plan.erase
            .iter()
            .all(|id| !packs.windows(32).any(|w| w == id.0)),
        "redacted content left in the follower's packs"
    );
}

/// A redaction run again (as every `sovseal redact` does for each record)
/// leaves alone the same bytes written again after it: stored again by a
/// later snapshot that was forgotten since, whose remote parts a prune
/// keeps because a retained snapshot still uses them. (Only forgotten
/// snapshots up to the last one a record names can hold what it erased.)
/// A whole restore then reads them.
#[test]
fn a_redaction_run_again_keeps_the_same_bytes_written_again_in_a_forgotten_snapshot() {
    use sovseal::history::{redact, retention};
    let (rdir, remote) = dir_remote();
    let writer = Env::new();
    let mut e = writer.open();
    let content = bytes(93, 3 * 65536);
    written_then_removed(&mut e, b"secret", &content);
    replicate_all(&e, &remote);
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    let rec = redact::apply_local(e.agent(), "secret", &plan).unwrap();
    rt().block_on(redact::apply_remote(e.agent(), &remote, &rec))
        .unwrap();
    // The same bytes again: stored again by `again`'s snapshot, which is
    // then forgotten while the next one still holds the file.
    let a = e.create(ROOT_INO, b"again", 0o600, 0, 0).unwrap().ino;
    e.write(a, 0, &content).unwrap();
    e.commit().unwrap();
    let stored_again = e.head().seq();
    let o = e.create(ROOT_INO, b"other", 0o600, 0, 0).unwrap().ino;
    e.write(o, 0, b"later").unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);
    retention::forget(e.agent(), &[stored_again]).unwrap();
    let report = retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();
    assert!(report.remote_snapshots_kept > 0, "{report:?}");
    let parts_of_again = || -> Vec<u8> {
        files_under(rdir.path())
            .into_iter()
            .filter(|f| {
                let n = f.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(&format!("{stored_again:020}-")) && n.ends_with(".pack")
            })
            .flat_map(|f| std::fs::read(f).unwrap())
            .collect()
    };
    let before = parts_of_again();
    assert!(!before.is_empty());
    // Run again (idempotent for what it erased).
    rt().block_on(redact::apply_remote(e.agent(), &remote, &rec))
        .unwrap();
    assert_eq!(parts_of_again(), before, "content written again cut");
    drop(e);
    let fresh = Env::new();
    restore_ok(&fresh, &remote);
    let f = fresh.open();
    assert_eq!(
        f.read(f.resolve(b"again").unwrap(), 0, 1 << 20).unwrap(),
        content
    );
}

/// Content that a redaction erases and that a snapshot forgotten here, but
/// not yet on the remote (no prune ran), stored first: that snapshot's
/// forget record goes up before its parts lose the content, so the remote
/// never holds a snapshot that must have content it no longer has. The
/// content leaves every remote part, and a whole restore verifies.
#[test]
fn a_redaction_forgets_on_the_remote_what_it_cuts_from_a_snapshot_forgotten_here() {
    use sovseal::history::{redact, retention};
    let (rdir, remote) = dir_remote();
    let writer = Env::new();
    let mut e = writer.open();
    let content = bytes(95, 3 * 65536);
    // `other` stores the content first; `secret` has the same bytes next.
    let o = e.create(ROOT_INO, b"other", 0o600, 0, 0).unwrap().ino;
    e.write(o, 0, &content).unwrap();
    e.commit().unwrap();
    let first = e.head().seq();
    e.unlink(ROOT_INO, b"other").unwrap();
    written_then_removed(&mut e, b"secret", &content);
    replicate_all(&e, &remote);
    // Forgotten here only: the remote has no forget record of it yet.
    retention::forget(e.agent(), &[first]).unwrap();
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    assert!(plan.objects > 0 && !plan.seqs.contains(&first), "{plan:?}");
    let rec = redact::apply_local(e.agent(), "secret", &plan).unwrap();
    rt().block_on(redact::apply_remote(e.agent(), &remote, &rec))
        .unwrap();
    let id = writer.master.agent_id(writer.agent.as_str());
    let listed = rt()
        .block_on(remote.list_forgotten(&id, &|_| false))
        .unwrap();
    assert!(
        listed.iter().any(|(seq, _)| *seq == first),
        "the forget record went up"
    );
    for obj in rec.object_ids().unwrap() {
        for f in files_under(rdir.path()) {
            let b = std::fs::read(&f).unwrap();
            assert!(
                !b.windows(32).any(|w| w == &obj.0[..]),
                "erased object left in {}",
                f.display()
            );
        }
    }
    drop(e);
    let fresh = Env::new();
    restore_ok(&fresh, &remote);
}

/// Forget rows a pull stored are pruned by the next carrying out of the
/// records, also when the one after that pull never ran (a poll that
/// failed after storing them, a crash) and no new record comes: a prune is
/// due while the forgotten snapshots outnumber those last pruned.
#[test]
fn a_forget_whose_prune_never_ran_is_pruned_by_the_next_carrying_out() {
    use sovseal::history::retention;
    let remote = memory_remote();
    let writer = Env::new();
    let mut e = writer.open();
    let f_ino = e.create(ROOT_INO, b"state", 0o600, 0, 0).unwrap().ino;
    let old = bytes(31, 200_000);
    e.write(f_ino, 0, &old).unwrap();
    e.commit().unwrap();
    let old_seq = e.head().seq();
    e.write(f_ino, 0, &bytes(32, 200_000)).unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);
    let follower = Env::new();
    restore_ok(&follower, &remote);
    retention::forget(e.agent(), &[old_seq]).unwrap();
    retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();

    let f = follower.open();
    let p = rt().block_on(restore::pull(f.agent(), &remote)).unwrap();
    assert_eq!(p.forgotten, 1);
    // Its carrying out never runs. The next pull brings nothing new.
    let mut p = rt().block_on(restore::pull(f.agent(), &remote)).unwrap();
    assert_eq!((p.forgotten, p.redactions), (0, 0));
    let out = restore::carry_out_records(f.agent(), restore::Erasing::after(&mut p)).unwrap();
    assert!(out.pruned > 0 && out.changed, "{out:?}");
    let out = restore::carry_out_records(f.agent(), restore::Erasing::Find).unwrap();
    assert!(out.pruned == 0 && !out.changed, "pruned again: {out:?}");
    drop(f);
    let packs = pack_bytes(&follower);
    // Each version is 200,000 random bytes: only the retained one is left.
    assert!(packs.len() < 2 * 200_000, "{} bytes of packs", packs.len());
}

/// A follower carries out the writer's forgets while it serves: packs are
/// rewritten under eight readers of the head, and nothing a retained
/// snapshot holds ever fails to read. (Planted: the old pack removed
/// before the index moves its objects fails at once; without the retry
/// at an object's new place (`Repo::read_sealed`, `Repo::stored_header`),
/// about one debug run in three fails: CI's first run of this test did.)
#[test]
fn reads_go_on_while_a_prune_rewrites_the_packs_under_them() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: no forgotten snapshot holds a delta that a
    // kept one reads.)
    e.set_fold_every(0);
    let keep = e.create(ROOT_INO, b"keep", 0o644, 0, 0).unwrap().ino;
    e.write(keep, 0, &bytes(5, 2 << 20)).unwrap();
    let tmp = e.create(ROOT_INO, b"tmp", 0o644, 0, 0).unwrap().ino;
    e.commit().unwrap();
    let first = e.head().seq();
    for i in 0..40 {
        e.write(tmp, 0, &bytes(i, 100_000)).unwrap();
        e.commit().unwrap();
    }
    // Only replicated snapshots lose their content to a forget.
    let remote = Remote::with_store(
        Arc::new(object_store::memory::InMemory::new()),
        Default::default(),
        "memory://",
    );
    replicate_all(&e, &remote);
    let agent = e.shared_agent();
    let head = Arc::new(agent.head().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // More readers than cores: a reader is often preempted between
    // finding an object and reading it.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (agent, stop, head) = (agent.clone(), stop.clone(), head.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Relaxed) {
                    // Every object of the head, from the packs (past the
                    // caches).
                    sovseal::history::verify::verify_snapshot(&agent, &head)
                        .unwrap_or_else(|e| panic!("read {rounds}: {e}"));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let mut rewritten = 0;
    for seq in first..first + 40 {
        sovseal::history::retention::forget(&agent, &[seq]).unwrap();
        rewritten += sovseal::history::retention::prune_local(&agent, &mut |_, _| {})
            .unwrap()
            .packs_rewritten;
    }
    stop.store(true, Relaxed);
    let rounds: u64 = readers
        .into_iter()
        .map(|r| r.join().expect("no read failed"))
        .sum();
    assert!(
        rewritten >= 40 && rounds > 10,
        "{rewritten} packs rewritten, {rounds} reads"
    );
    sovseal::history::verify::verify(&agent, |_, _| {}).unwrap();
}

/// A restore reads ahead: the next snapshots' envelopes and first parts
/// are fetched while one is checked and committed, so a far remote's round
/// trips overlap (docs/PERFORMANCE.md: 34 s → 4.6 s for 1,002 snapshots at
/// 10 ms per request), and at most eight snapshots (one part each) are in
/// flight, so memory stays bounded however long the history.
#[test]
fn a_restore_reads_ahead_a_bounded_number_of_snapshots() {
    use std::sync::atomic::Ordering::Relaxed;
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"log", 0o644, 0, 0).unwrap().ino;
    for i in 0..60u64 {
        e.write(f, i * 4096, &bytes(i, 4096)).unwrap();
        e.commit().unwrap();
    }
    let clean = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &clean);
    let before = dump_all(e.agent());
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    // Every tenth request answers 30 ms late.
    let slow = faulty::Faulty::new(inner, |_| false);
    let remote = Remote::with_store(slow.clone(), Default::default(), "slow://");
    restore_ok(&env, &remote);
    assert_eq!(dump_all(env.open().agent()), before);
    let most = slow.most_reading.load(Relaxed);
    // Eight read ahead, plus the committing loop's own next part.
    assert!((2..=9).contains(&most), "{most} reads in flight at once");
}

/// The index records the remote the replicator runs against (shown by
/// `sovseal status`, compared by the commands that change the remote)
/// without the password its URL holds: no credential at rest.
#[test]
fn the_remote_url_is_recorded_without_its_password() {
    let env = Env::new();
    let mut e = env.open();
    e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap();
    e.commit().unwrap();
    let remote = Remote::with_store(
        Arc::new(object_store::memory::InMemory::new()),
        Default::default(),
        "postgres://sovseal:hunter2@127.0.0.1/agents",
    );
    replicate_all(&e, &remote);
    drop(e);
    let stored: String = rusqlite::Connection::open(env.data_dir().join("index.db"))
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'remote_url'", [], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .map(|v| String::from_utf8(v).unwrap())
        .unwrap();
    assert_eq!(stored, "postgres://sovseal:***@127.0.0.1/agents");
}

/// A remote prune asks for the requests of different snapshots at once
/// (one after another it took 40 s for 900 snapshots 10 ms away:
/// PERFORMANCE "Session 36"), in an order a crash can cut anywhere: every
/// forget record is stored before any part is deleted, and the chain
/// segment and the tail segment (which bundle part indexes) are deleted
/// before any part or index of theirs.
#[test]
fn a_remote_prune_asks_at_once_and_stores_every_record_before_any_part_goes() {
    use sovseal::replication::backfill;
    use std::sync::atomic::Ordering;
    let env = Env::new();
    let mut e = env.open();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    for s in 0..300 {
        e.write(f, 0, &bytes(s, 2048)).unwrap();
        e.commit().unwrap();
    }
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = faulty::Faulty::new(inner, |_| false);
    let remote = Remote::with_store(faulty.clone(), Default::default(), "memory://");
    replicate_all_alone(&e, &remote);
    let head = e.head().seq();
    // (The replicator may have written them already.)
    rt().block_on(backfill::write_segment(
        e.agent(),
        &remote,
        1,
        &Default::default(),
    ))
    .unwrap();
    rt().block_on(backfill::write_tail(
        e.agent(),
        &remote,
        257,
        head,
        &Default::default(),
    ))
    .unwrap();
    let id = env.master.agent_id(env.agent.as_str());
    assert!(rt().block_on(remote.get_segment(&id, 1)).unwrap().is_some());
    assert!(rt().block_on(remote.get_tail(&id)).unwrap().is_some());
    let forget: Vec<u64> = (1..=280).collect();
    sovseal::history::retention::forget(e.agent(), &forget).unwrap();
    faulty.log.lock().unwrap().clear();
    faulty.most_reading.store(0, Ordering::Relaxed);
    let report = sovseal::history::retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();
    assert!(report.remote_snapshots_pruned >= 270, "{report:?}");
    assert!(
        faulty.most_reading.load(Ordering::Relaxed) >= 4,
        "requests of different snapshots at once: {}",
        faulty.most_reading.load(Ordering::Relaxed)
    );
    let log = faulty.log.lock().unwrap().clone();
    let first = |f: &dyn Fn(&(&str, String)) -> bool| log.iter().position(f).unwrap();
    let last = |f: &dyn Fn(&(&str, String)) -> bool| log.iter().rposition(f).unwrap();
    let part_or_index = |(op, p): &(&str, String)| {
        *op == "delete" && (p.contains("/packs/") || p.contains("/indexes/"))
    };
    let first_part = first(&part_or_index);
    let records = |(op, p): &(&str, String)| *op == "put" && p.contains("/forgotten/");
    assert_eq!(log.iter().filter(|e| records(e)).count(), 280, "{log:?}");
    assert!(last(&records) < first_part, "{log:?}");
    for seg in [
        format!("/segments/{:020}.seg", 1),
        "/segments/tail.seg".into(),
    ] {
        let at = first(&|(op, p)| *op == "delete" && p.ends_with(&seg));
        assert!(at < first_part, "{seg}: {log:?}");
    }
}

/// The pack parts of snapshot `seq` in `store`, sorted.
fn packs_on(store: &Arc<dyn object_store::ObjectStore>, seq: u64) -> Vec<String> {
    let prefix = format!("/packs/{seq:020}-");
    let mut v: Vec<String> = rt().block_on(async {
        use futures::TryStreamExt;
        store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|p| p.contains(&prefix))
            .collect()
    });
    v.sort();
    v
}

/// A remote prune cut short leaves nothing a later one misses: a snapshot
/// of three pack parts has them deleted from the last (deleted from the
/// first, a prune cut after part 0 left parts 1 and 2 where nothing looks
/// for them: a later prune finds no part 0 and records the snapshot as
/// pruned), and a snapshot whose requests fail does not stop the others,
/// which are done and counted before the error is returned.
#[test]
fn a_remote_prune_cut_short_leaves_nothing_a_later_prune_misses() {
    use sovseal::history::retention;
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: no forgotten snapshot holds a delta that a
    // kept one reads.)
    e.set_fold_every(0);
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    // (This snapshot keeps its parts: the file's creation is live.)
    e.commit().unwrap();
    // Three parts of 8 MiB for snapshot `big`.
    e.write(f, 0, &bytes(7, 20 << 20)).unwrap();
    e.commit().unwrap();
    let big = e.head().seq();
    e.setattr(
        f,
        &sovseal::engine::SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    for s in 0..20 {
        e.write(f, 0, &bytes(s, 4096)).unwrap();
        e.commit().unwrap();
    }
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = faulty::Faulty::new(inner.clone(), |_| false);
    let remote = Remote::with_store(faulty.clone(), Default::default(), "memory://");
    replicate_all(&e, &remote);
    let head = e.head().seq();
    let packs_of = |seq: u64| packs_on(&inner, seq);
    assert_eq!(packs_of(big).len(), 3, "{:?}", packs_of(big));
    let forget: Vec<u64> = (1..head).collect();
    retention::forget(e.agent(), &forget).unwrap();
    let mut report = retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    // The first prune: every look at `big`'s second part fails.
    let part_1 = format!("/packs/{big:020}-");
    *faulty.fail_if.lock().unwrap() = Some(Box::new(move |p| {
        p.contains(&part_1) && p.ends_with("-0001.pack")
    }));
    faulty.log.lock().unwrap().clear();
    let res = rt().block_on(retention::prune_remote(e.agent(), &remote, &mut report));
    assert!(res.is_err(), "{report:?}");
    // Every other forgotten snapshot pruned there (the one that created
    // the file keeps its parts), the parts after big's gone.
    assert_eq!(
        report.remote_snapshots_pruned + report.remote_snapshots_kept + 1,
        head - 1,
        "the others went on: {report:?}"
    );
    for seq in big + 1..head {
        assert!(
            packs_of(seq).is_empty(),
            "snapshot {seq}: {:?}",
            packs_of(seq)
        );
    }
    assert_eq!(packs_of(big).len(), 3, "none of big's parts went");
    // The second, with nothing failing: every part of every pruned
    // snapshot gone, big's from the last.
    *faulty.fail_if.lock().unwrap() = None;
    faulty.log.lock().unwrap().clear();
    let first = report.remote_snapshots_pruned;
    rt().block_on(retention::prune_remote(e.agent(), &remote, &mut report))
        .unwrap();
    assert!(report.remote_snapshots_pruned > first, "{report:?}");
    assert!(packs_of(big).is_empty(), "{:?}", packs_of(big));
    let deleted: Vec<String> = faulty
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(op, p)| *op == "delete" && p.contains(&format!("/packs/{big:020}-")))
        .map(|(_, p)| p[p.len() - 9..].to_owned())
        .collect();
    assert_eq!(deleted, ["0002.pack", "0001.pack", "0000.pack"]);
}

/// Parts an older build's prune left (it deleted from part 0 up; cut
/// short after part 0, parts 1 and 2 stayed, and the part index) are
/// found through the part index and deleted, not passed over as a
/// snapshot with nothing left.
#[test]
fn a_remote_prune_deletes_the_parts_an_older_prune_left_after_part_0() {
    use sovseal::history::retention;
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: no forgotten snapshot holds a delta that a
    // kept one reads.)
    e.set_fold_every(0);
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
    e.commit().unwrap();
    e.write(f, 0, &bytes(9, 20 << 20)).unwrap();
    e.commit().unwrap();
    let big = e.head().seq();
    e.write(f, 0, &bytes(10, 20 << 20)).unwrap();
    e.commit().unwrap();
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let remote = Remote::with_store(inner.clone(), Default::default(), "memory://");
    replicate_all(&e, &remote);
    let packs = || packs_on(&inner, big);
    let left = packs();
    assert_eq!(left.len(), 3, "{left:?}");
    rt().block_on(object_store::ObjectStoreExt::delete(
        &inner,
        &object_store::path::Path::from(left[0].as_str()),
    ))
    .unwrap();
    retention::forget(e.agent(), &[big]).unwrap();
    let report = retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();
    assert_eq!(report.remote_snapshots_pruned, 1, "{report:?}");
    assert!(packs().is_empty(), "{:?}", packs());
}

/// Every file under `dir` whose bytes hold `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// The remote files of agent `env` under `rdir`, by their directory
/// (`envelopes`, `packs`, `batches`, ...).
fn remote_files_by_dir(env: &Env, rdir: &std::path::Path) -> BTreeMap<String, usize> {
    let agent_dir = rdir
        .join("sovseal-v1")
        .join(env.master.agent_id(env.agent.as_str()).to_hex());
    let mut by = BTreeMap::new();
    for f in files_under(&agent_dir) {
        let top = f
            .strip_prefix(&agent_dir)
            .unwrap()
            .components()
            .next()
            .unwrap();
        *by.entry(top.as_os_str().to_string_lossy().into_owned())
            .or_insert(0) += 1;
    }
    by
}

/// `n` snapshots, each adding a file of its own content (`{prefix}{i}`),
/// the `big_at`th a 9 MiB file (two pack parts).
fn many_small_snapshots(e: &mut Engine, prefix: &str, n: u64, big_at: u64) {
    for i in 1..=n {
        let name = format!("{prefix}{i}");
        let f = e
            .create(ROOT_INO, name.as_bytes(), 0o644, 0, 0)
            .unwrap()
            .ino;
        let size = if i == big_at {
            9 << 20
        } else {
            300 + i as usize
        };
        e.write(f, 0, &bytes(i + prefix.len() as u64 * 1000, size))
            .unwrap();
        e.commit().unwrap();
    }
}

/// Snapshots committed faster than they upload go up in batches: one
/// batch part and one batch index for a run of them, then their
/// envelopes (a snapshot of more than one part alone, as before). Each
/// member reads back through the driver exactly as its own part would
/// (the backfill finds no part index missing), and the agent restores
/// from them whole and lazily, every file of every snapshot byte for
/// byte, and verifies. Planted (a member's records placed one record
/// off in the batch index): the restores fail.
#[test]
fn snapshots_committed_faster_than_they_upload_go_up_in_batches_and_restore() {
    let _one = one_process_remote();
    let (rdir, remote) = dir_remote();
    let env = Env::new();
    let mut e = env.open();
    many_small_snapshots(&mut e, "n", 300, 150);
    replicate_all(&e, &remote);
    let head = e.head().seq();
    let by = remote_files_by_dir(&env, rdir.path());
    assert_eq!(by["envelopes"] as u64, head, "{by:?}");
    assert_eq!(
        by.get("packs"),
        Some(&2),
        "only the snapshot of two parts alone: {by:?}"
    );
    assert_eq!(by.get("indexes"), Some(&1), "{by:?}");
    // At least two batches each side of snapshot 150 and of snapshot 256.
    assert!(by["batches"] >= 2 * 3, "{by:?}");
    let total: usize = by.values().sum();
    assert!(total < 340, "about one object a snapshot: {by:?}");
    let id = env.master.agent_id(env.agent.as_str());
    let rt = rt();
    // (Snapshot 151 is the one of two parts.)
    for seq in [2, 150, 152, 256, 257, head] {
        let hash = e.agent().envelope(seq).unwrap().hash();
        let alone = sovseal::replication::replicator::pack_parts(e.agent(), seq).unwrap();
        assert_eq!(alone.len(), 1);
        let got = rt.block_on(remote.get_pack(&id, seq, &hash, 0)).unwrap();
        assert!(got.as_ref() == Some(&alone[0]), "snapshot {seq}'s part");
        assert!(
            rt.block_on(remote.get_pack(&id, seq, &hash, 1))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            rt.block_on(remote.pack_size(&id, seq, &hash, 0)).unwrap(),
            Some(alone[0].len() as u64)
        );
        let index = rt
            .block_on(remote.get_index(&id, seq, &hash))
            .unwrap()
            .unwrap();
        let entries = sovseal::repo::pack::decode_index(seq, &index).unwrap();
        assert_eq!(
            entries,
            sovseal::repo::pack::part_entries(seq, 0, &alone[0]).unwrap()
        );
        let last = entries.last().unwrap();
        let (start, end) = (
            u64::from(last.offset),
            u64::from(last.offset) + u64::from(last.len),
        );
        let range = rt
            .block_on(remote.get_pack_range(&id, seq, &hash, 0, start..end))
            .unwrap()
            .unwrap();
        assert!(
            range == alone[0][start as usize..end as usize],
            "snapshot {seq}'s last record"
        );
        // Another history's snapshot of that number is not there.
        assert!(
            rt.block_on(remote.get_pack(&id, seq, &[7; 32], 0))
                .unwrap()
                .is_none()
        );
    }
    let missing = rt
        .block_on(sovseal::replication::backfill::missing(
            e.agent(),
            &remote,
            0,
            head,
        ))
        .unwrap();
    assert!(
        missing.is_empty(),
        "batch members have their part indexes: {missing:?}"
    );
    let before = dump_all(e.agent());
    drop(e);

    std::fs::remove_dir_all(env.data_dir()).unwrap();
    restore_ok(&env, &remote);
    let e = env.open();
    assert_eq!(dump_all(e.agent()), before, "restored whole");
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
    drop(e);

    let e = restore_lazily(&env, &remote, head);
    assert_eq!(dump_all(e.agent()), before, "read lazily");
}

/// `env`'s data dir wiped and restored lazily from `remote` (this
/// process's lazy remote set to it: hold [`one_process_remote`]), up to
/// `head`, not whole; opened.
fn restore_lazily(env: &Env, remote: &Remote, head: u64) -> Engine {
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let restored = rt()
        .block_on(restore::restore_lazy(
            &env.home,
            &env.agent,
            &env.master,
            remote,
            |_, _| {},
        ))
        .unwrap();
    assert_eq!(restored, Some(head), "restored lazily, not whole");
    sovseal::repo::lazy::use_remote(remote.clone(), Duration::from_secs(30)).unwrap();
    env.open()
}

/// A remote prune takes the records of the snapshots it prunes out of
/// their batches (each batch written once, under its next generation, or
/// deleted when none is left), and a redaction the records of the
/// snapshots it rewrites (their parts then stand under their own names):
/// no remote object holds an object that left the local packs any more,
/// and what is kept restores and verifies. Planted (`leave_batches` a
/// no-op): the ids stay on the remote.
#[test]
fn a_prune_and_a_redaction_take_records_out_of_their_batches() {
    let (rdir, remote) = dir_remote();
    let env = Env::new();
    let mut e = env.open();
    // (Commits that fold: no forgotten snapshot holds a delta that a
    // kept one reads.)
    e.set_fold_every(0);
    // Each snapshot replaces the content of `state`: a forgotten one's
    // objects are dead.
    let state = e.create(ROOT_INO, b"state", 0o644, 0, 0).unwrap().ino;
    for i in 0..100u64 {
        e.write(state, 0, &bytes(i, 3000)).unwrap();
        e.commit().unwrap();
    }
    let secret = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(secret, 0, &bytes(999, 5000)).unwrap();
    e.commit().unwrap();
    let with_secret = e.head().seq();
    for i in 100..120u64 {
        e.write(state, 0, &bytes(i, 3000)).unwrap();
        e.commit().unwrap();
    }
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);
    assert!(remote_files_by_dir(&env, rdir.path())["batches"] >= 2);
    let head = e.head().seq();
    let ids: Vec<Vec<[u8; 32]>> = (1..=40)
        .map(|s| {
            let (entries, _) =
                sovseal::replication::replicator::planned_index(e.agent(), s).unwrap();
            entries.iter().map(|p| p.id.0).collect()
        })
        .collect();
    let erased: Vec<[u8; 32]> = sovseal::history::redact::plan(e.agent(), "secret", &mut |_, _| {})
        .unwrap()
        .erase
        .iter()
        .map(|o| o.0)
        .collect();
    assert!(!erased.is_empty());

    sovseal::history::retention::forget(e.agent(), &(1..=40).collect::<Vec<_>>()).unwrap();
    let report = sovseal::history::retention::prune(e.agent(), &remote, &mut |_, _| {}).unwrap();
    assert!(report.remote_snapshots_pruned >= 35, "{report:?}");
    // Each batch a member left was written again once (or deleted).
    let generations = || -> Vec<String> {
        files_under(rdir.path())
            .into_iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".bix").map(|n| n[n.len() - 4..].to_owned()))
            .collect()
    };
    let after_prune = generations();
    assert!(after_prune.contains(&"0001".to_owned()), "{after_prune:?}");
    assert!(
        after_prune.iter().all(|g| g == "0000" || g == "0001"),
        "{after_prune:?}"
    );
    let plan = sovseal::history::redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    let rec = sovseal::history::redact::apply_local(e.agent(), "secret", &plan).unwrap();
    rt().block_on(sovseal::history::redact::apply_remote(
        e.agent(),
        &remote,
        &rec,
    ))
    .unwrap();
    // A snapshot none of whose objects is live any more was pruned on the
    // remote too (one with any live object keeps its records there, as a
    // snapshot uploaded alone keeps its parts).
    let packs = env.data_dir().join("packs");
    let here = |id: &[u8; 32]| !holding(&packs, &id[..]).is_empty();
    let dead: Vec<&[u8; 32]> = ids
        .iter()
        .filter(|of| !of.iter().any(here))
        .flatten()
        .collect();
    assert!(
        dead.len() >= 30 * 2,
        "{} objects of wholly dead snapshots",
        dead.len()
    );
    for id in dead.into_iter().chain(&erased) {
        assert!(!here(id), "erased here");
        let there = holding(rdir.path(), &id[..]);
        assert!(there.is_empty(), "left on the remote: {there:?}");
    }
    assert!(
        generations().contains(&"0002".to_owned()),
        "the secret's batch written again"
    );
    // (The snapshots that held the secret no longer read whole.)
    let readable = || (41..with_secret).chain([head]);
    let kept: BTreeMap<u64, Tree> = readable().map(|s| (s, dump(e.agent(), s))).collect();
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    restore_ok(&env, &remote);
    let e = env.open();
    let again: BTreeMap<u64, Tree> = readable().map(|s| (s, dump(e.agent(), s))).collect();
    assert!(again == kept, "the kept snapshots restored");
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// A bit flipped in a batch part is found by the restore, which names the
/// snapshot whose record it hit and keeps nothing.
#[test]
fn a_flipped_bit_in_a_batch_is_refused_naming_its_snapshot() {
    let (rdir, remote) = dir_remote();
    let env = Env::new();
    let mut e = env.open();
    many_small_snapshots(&mut e, "n", 30, 0);
    replicate_all(&e, &remote);
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    let part = files_under(rdir.path())
        .into_iter()
        .find(|f| {
            f.to_string_lossy().contains("/batches/") && f.extension().is_some_and(|x| x == "pack")
        })
        .unwrap();
    let mut b = std::fs::read(&part).unwrap();
    let n = b.len();
    b[n - 10] ^= 1;
    std::fs::write(&part, b).unwrap();
    let last: u64 = part.file_name().unwrap().to_string_lossy()[21..41]
        .parse()
        .unwrap();
    let e = restore_err(&env, &remote);
    assert!(
        matches!(e, Error::Tag { .. }) && e.to_string().contains(&format!("snapshot {last}")),
        "{e}"
    );
}

/// What a prune or a redaction cut short leaves in the batches is finished
/// by the next one: an older generation kept beside the newer (a run
/// stopped before deleting it) is deleted, and the next generation is
/// numbered after the newest, never written over an older one's number
/// (which would bring back what that one took out); a batch part left
/// without its index is deleted. A batch index that does not decode
/// stops a prune and a redaction, which would otherwise read its members
/// as having no parts and leave what they hold, before it deletes
/// anything of that range (an older generation beside a damaged newest
/// one is what readers still find). The members kept read as before.
/// Planted (older generations rewritten like the newest, each numbered
/// from its own): the older generation's records come back and this
/// fails; planted (a batch index that does not decode passed over): the
/// prune goes on and this fails.
#[test]
fn a_prune_cut_short_in_the_batches_is_finished_and_a_damaged_batch_index_stops_it() {
    let (rdir, remote) = dir_remote();
    let env = Env::new();
    let mut e = env.open();
    let state = e.create(ROOT_INO, b"state", 0o644, 0, 0).unwrap().ino;
    let secret = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(secret, 0, &bytes(999, 5000)).unwrap();
    for i in 0..30u64 {
        e.write(state, 0, &bytes(i, 3000)).unwrap();
        e.commit().unwrap();
    }
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    replicate_all(&e, &remote);
    let batch_files = || -> Vec<std::path::PathBuf> {
        files_under(rdir.path())
            .into_iter()
            .filter(|f| f.to_string_lossy().contains("/batches/"))
            .collect()
    };
    let gen0 = batch_files();
    assert_eq!(gen0.len(), 2, "one batch: {gen0:?}");
    let kept: Vec<(std::path::PathBuf, Vec<u8>)> = gen0
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect();
    let ids_of = |s: u64| -> Vec<[u8; 32]> {
        sovseal::replication::replicator::planned_index(e.agent(), s)
            .unwrap()
            .0
            .iter()
            .map(|p| p.id.0)
            .collect()
    };
    let (of5, of7) = (ids_of(5), ids_of(7));
    // (Before any prune: a local prune rewrites the packs in another
    // order.)
    let kept_parts: Vec<(u64, Vec<u8>)> = [4, 6, 8, 20]
        .into_iter()
        .map(|s| {
            let parts = sovseal::replication::replicator::pack_parts(e.agent(), s).unwrap();
            (s, parts[0].clone())
        })
        .collect();
    let packs = env.data_dir().join("packs");
    let prune = |seqs: &[u64]| {
        sovseal::history::retention::forget(e.agent(), seqs).unwrap();
        sovseal::history::retention::prune(e.agent(), &remote, &mut |_, _| {})
    };
    prune(&[5]).unwrap();
    // As a run stopped before deleting generation 0 leaves it, with a
    // part whose index never went up beside it.
    for (f, b) in &kept {
        std::fs::write(f, b).unwrap();
    }
    let (pack0, _) = kept
        .iter()
        .find(|(f, _)| f.extension().unwrap() == "pack")
        .unwrap();
    let orphan = pack0.with_file_name(
        pack0
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("-0000.pack", "-0007.pack"),
    );
    std::fs::copy(pack0, &orphan).unwrap();
    prune(&[7]).unwrap();
    let names: Vec<String> = batch_files()
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.contains("-0002.")), "{names:?}");
    for id in of5.iter().chain(&of7) {
        if holding(&packs, id).is_empty() {
            let there = holding(rdir.path(), id);
            assert!(there.is_empty(), "left on the remote: {there:?}");
        }
    }
    assert!(
        of5.iter()
            .chain(&of7)
            .any(|id| holding(&packs, id).is_empty()),
        "nothing of 5 and 7 was pruned here"
    );

    // The members kept read as their own parts would, through a remote
    // that remembers nothing.
    let fresh = Remote::open(&format!("file://{}", rdir.path().display())).unwrap();
    let id = env.master.agent_id(env.agent.as_str());
    for (seq, alone) in &kept_parts {
        let hash = e.agent().envelope(*seq).unwrap().hash();
        let got = rt().block_on(fresh.get_pack(&id, *seq, &hash, 0)).unwrap();
        assert!(got.as_ref() == Some(alone), "snapshot {seq} kept");
    }

    // The newest generation's index damaged, an older generation beside
    // it (still whole): the next prune and a redaction refuse, and leave
    // the older one.
    let newest: Vec<std::path::PathBuf> = batch_files();
    let older: Vec<std::path::PathBuf> = newest
        .iter()
        .map(|f| {
            let n = f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace("-0002.", "-0001.");
            let older = f.with_file_name(n);
            std::fs::copy(f, &older).unwrap();
            older
        })
        .collect();
    let bix = newest
        .iter()
        .find(|f| f.extension().unwrap() == "bix")
        .unwrap();
    let mut b = std::fs::read(bix).unwrap();
    b[0] ^= 1;
    std::fs::write(bix, b).unwrap();
    let err = prune(&[9]).unwrap_err();
    assert!(err.to_string().contains("upload batch"), "{err}");
    assert!(
        older.iter().all(|f| f.exists()),
        "the older generation deleted"
    );
    let plan = sovseal::history::redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    let rec = sovseal::history::redact::apply_local(e.agent(), "secret", &plan).unwrap();
    let err = rt()
        .block_on(sovseal::history::redact::apply_remote(
            e.agent(),
            &remote,
            &rec,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("upload batch"), "{err}");
}
