//! The packs are the commit record (DESIGN.md, invariants 3 and 6): the
//! index commits without a sync, the barrier syncs the packs alone, and an
//! index that lost rows (its WAL tail in a power cut, or the whole file) is
//! rebuilt from the commit records in the packs, each one verified: tags,
//! envelope hash, parent link, manifest. What cannot be rebuilt is refused,
//! never deleted. tests/powercut.rs drives the same recovery through real
//! power cuts of a mounted agent; these tests cut exactly where they mean to.

mod support;
use sovseal::Error;
use sovseal::engine::Engine;
use sovseal::repo::agent::Agent;
use sovseal::repo::pack::{COMMIT_KIND, PACK_MAGIC, RECORD_HEADER};
use sovseal::seal::tree::ROOT_INO;
use std::io::Write;
use std::path::{Path, PathBuf};
use support::home::{Env, bytes, path_ino};

/// Snapshot `1 + k` adds file `f{k-1}` (30 KB each).
fn add_file(e: &mut Engine, k: u64) {
    let f = e
        .create(ROOT_INO, format!("f{k}").as_bytes(), 0o644, 0, 0)
        .unwrap();
    e.write(f.ino, 0, &bytes(k, 30_000)).unwrap();
    e.commit().unwrap();
}

const INDEX_FILES: [&str; 3] = ["index.db", "index.db-wal", "index.db-shm"];

/// A copy of the index files as they are now (the engine stays open).
fn copy_index(env: &Env, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in INDEX_FILES {
        let _ = std::fs::copy(env.data_dir().join(f), to.join(f));
    }
}

/// Puts the copied index back in place (what a power cut that lost the
/// WAL tail leaves), without the shared-memory file.
fn put_back_index(env: &Env, from: &Path) {
    for f in INDEX_FILES {
        let _ = std::fs::remove_file(env.data_dir().join(f));
    }
    for f in ["index.db", "index.db-wal"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), env.data_dir().join(f)).unwrap();
        }
    }
}

fn remove_index(env: &Env) {
    for f in INDEX_FILES {
        let _ = std::fs::remove_file(env.data_dir().join(f));
    }
}

/// Builds snapshots 1..=8 (files f1..f7), made durable by the barrier;
/// returns a copy of the index taken when head was snapshot 3.
fn build(env: &Env) -> PathBuf {
    let saved = env.dir.path().join("index-at-3");
    let mut e = env.open();
    for k in 1..=2 {
        add_file(&mut e, k);
    }
    e.sync().unwrap();
    copy_index(env, &saved);
    for k in 3..=7 {
        add_file(&mut e, k);
    }
    assert_eq!(e.sync().unwrap(), 8);
    saved
}

/// Opens the agent again and checks head, every file of head, and a full
/// verification.
fn check(env: &Env, head: u64) -> Engine {
    let e = Engine::open(&env.home, &env.agent, &env.master).unwrap();
    assert_eq!(e.head().seq(), head);
    for k in 1..head {
        let ino = path_ino(&e, &format!("f{k}"));
        assert_eq!(e.read(ino, 0, 1 << 20).unwrap(), bytes(k, 30_000), "f{k}");
    }
    assert!(e.resolve(format!("f{head}").as_bytes()).is_err());
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    let r = sovseal::history::verify::verify(&a, |_, _| {}).unwrap();
    assert_eq!((r.first_seq, r.head_seq), (1, head));
    e
}

/// Every record of the (only) pack: (offset of its header, kind, length).
fn records(env: &Env) -> (PathBuf, Vec<(u64, u8, u64)>) {
    let path = env.data_dir().join("packs/00000001.pack");
    let b = std::fs::read(&path).unwrap();
    assert_eq!(&b[..8], PACK_MAGIC);
    let mut at = PACK_MAGIC.len();
    let mut out = Vec::new();
    while at < b.len() {
        let len = u32::from_le_bytes(b[at + 33..at + 37].try_into().unwrap()) as u64;
        out.push((at as u64, b[at + 32], len));
        at += RECORD_HEADER as usize + len as usize;
    }
    (path, out)
}

/// The header offset and body of snapshot `seq`'s commit record.
fn commit_record(env: &Env, seq: u64) -> (PathBuf, u64, Vec<u8>) {
    let (path, recs) = records(env);
    let b = std::fs::read(&path).unwrap();
    for (at, kind, len) in recs {
        if kind != COMMIT_KIND {
            continue;
        }
        let body = b[(at + RECORD_HEADER) as usize..(at + RECORD_HEADER + len) as usize].to_vec();
        if sovseal::repo::pack::commit_envelope(&body)
            .unwrap()
            .sequence_number
            == seq
        {
            return (path, at, body);
        }
    }
    panic!("no commit record of snapshot {seq}");
}

fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, at).unwrap();
}

fn forget_seen(env: &Env) {
    std::fs::remove_file(env.home.seen_head_path(&env.agent)).unwrap();
}

/// Regression (fails without the catch-up: head 3, and the seen-head
/// record, which names snapshot 8, reports a rollback).
#[test]
fn an_index_that_lost_its_tail_is_rebuilt_from_the_commit_records() {
    let env = Env::new();
    let saved = build(&env);
    put_back_index(&env, &saved);
    let e = check(&env, 8);
    drop(e);
    // The recovered state is durable and recorded: a second open finds
    // nothing to recover and the same head.
    check(&env, 8);
}

#[test]
fn a_deleted_index_is_rebuilt_from_the_packs() {
    let env = Env::new();
    build(&env);
    remove_index(&env);
    check(&env, 8);
}

/// A power cut that tore snapshot 7's commit record (so 7 and 8 were never
/// acknowledged durable, and the seen-head record never named them).
#[test]
fn a_torn_commit_record_ends_recovery_before_it() {
    let env = Env::new();
    let saved = build(&env);
    put_back_index(&env, &saved);
    forget_seen(&env);
    let (path, at, body) = commit_record(&env, 7);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(at + RECORD_HEADER + body.len() as u64 / 2)
        .unwrap();
    drop(f);
    let e = check(&env, 6);
    drop(e);
    // The torn tail was cut off after snapshot 6's commit record.
    let (_, recs) = records(&env);
    let (last_at, last_kind, last_len) = *recs.last().unwrap();
    assert_eq!(last_kind, COMMIT_KIND);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        last_at + RECORD_HEADER + last_len
    );
    assert_eq!(commit_record(&env, 6).1, last_at);
}

/// An attacker who can write the data dir (but holds no key) rewrites a
/// commit record: a changed envelope with its hash recomputed, so that the
/// record's id matches. Its manifest does not open: recovery stops before
/// it and nothing after it is indexed.
#[test]
fn a_forged_commit_record_is_not_accepted() {
    let env = Env::new();
    let saved = build(&env);
    put_back_index(&env, &saved);
    forget_seen(&env);
    let (path, at, body) = commit_record(&env, 6);
    let mut env6 = sovseal::repo::pack::commit_envelope(&body).unwrap();
    let i = env6.sealed.len() / 2;
    env6.sealed[i] ^= 1;
    let mut rec = Vec::new();
    sovseal::repo::pack::encode_commit(&mut rec, &env6);
    assert_eq!(rec.len() as u64, RECORD_HEADER + body.len() as u64);
    write_at(&path, at, &rec);
    check(&env, 5);
}

/// Packs the index cannot be rebuilt from (their first commit record is
/// damaged) beside an index that is gone: the open is refused, naming the
/// pack data, and nothing is deleted. (Before commit records, the writer
/// removed every pack the new index did not know.)
#[test]
fn packs_that_cannot_be_rebuilt_are_refused_not_deleted() {
    let env = Env::new();
    build(&env);
    remove_index(&env);
    let (path, at, _) = commit_record(&env, 1);
    write_at(&path, at + RECORD_HEADER + 5, b"X");
    let before = std::fs::read(&path).unwrap();
    let err = Engine::open(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(matches!(err, Error::HistoryMissing { .. }), "{err}");
    assert!(err.to_string().contains("pack data"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the packs are kept");
}

/// Every snapshot's commit record follows its objects in the pack and
/// holds exactly the envelope the index holds.
#[test]
fn each_snapshot_ends_with_its_commit_record() {
    let env = Env::new();
    build(&env);
    let (_, recs) = records(&env);
    let commits: Vec<u64> = recs
        .iter()
        .filter(|r| r.1 == COMMIT_KIND)
        .map(|r| r.0)
        .collect();
    assert_eq!(commits.len(), 8, "one commit record per snapshot");
    assert_eq!(
        recs.last().unwrap().1,
        COMMIT_KIND,
        "the pack ends with one"
    );
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    for seq in 1..=8 {
        let (_, _, body) = commit_record(&env, seq);
        assert_eq!(
            sovseal::repo::pack::commit_envelope(&body).unwrap(),
            a.envelope(seq).unwrap(),
            "snapshot {seq}'s record holds its envelope"
        );
    }
}

/// A failed index commit is retried with a new envelope for the same
/// sequence number, so the pack may hold two commit records of one
/// snapshot: the last is the one the index committed (and the chain after
/// it names). Recovery takes it. Built here by inserting another valid
/// envelope of snapshot 6 (same parent, another timestamp) before the real
/// one; the seen-head record still names snapshot 8.
#[test]
fn a_retried_commit_is_recovered_as_its_last_attempt() {
    let env = Env::new();
    let saved = build(&env);
    put_back_index(&env, &saved);
    let (path, at, body) = commit_record(&env, 6);
    let real = sovseal::repo::pack::commit_envelope(&body).unwrap();
    let keys = env.master.agent_keys(env.agent.as_str());
    let mut m = sovseal::seal::envelope::open_manifest(&keys, &real).unwrap();
    m.timestamp_ms -= 1;
    let attempt = sovseal::seal::envelope::seal_manifest(&keys, &m);
    assert_ne!(attempt.hash(), real.hash());
    let mut rec = Vec::new();
    sovseal::repo::pack::encode_commit(&mut rec, &attempt);
    let b = std::fs::read(&path).unwrap();
    let mut with = b[..at as usize].to_vec();
    with.extend_from_slice(&rec);
    with.extend_from_slice(&b[at as usize..]);
    std::fs::write(&path, with).unwrap();
    let e = check(&env, 8);
    let a = e.agent();
    assert_eq!(a.envelope(6).unwrap(), real);
}

/// Regression: a read-only command (verify, cat, snapshots) run after a
/// power cut and before any mount saw the index's lost tail as a rollback
/// (the seen-head record names snapshot 8). A reader that finds no writer
/// recovers the agent first, under the writer lock.
#[test]
fn a_reader_recovers_an_unheld_agent_before_it_reads() {
    let env = Env::new();
    let saved = build(&env);
    put_back_index(&env, &saved);
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    assert_eq!(a.head().unwrap().seq(), 8);
    let r = sovseal::history::verify::verify(&a, |_, _| {}).unwrap();
    assert_eq!((r.first_seq, r.head_seq), (1, 8));
}

/// Regression: a power cut that lost the index's whole WAL (a young agent,
/// no checkpoint yet) leaves an index with its schema and no rows. The
/// mount checks for an index that lost its history before it opens the
/// agent, and refused this one (exit 3, "had history"); it is now rebuilt
/// from the packs first.
#[test]
fn a_mount_over_an_index_that_lost_every_row_rebuilds_it() {
    let m = support::mount::Mounted::new("lostwal", &[]);
    m.sh("echo one > a && mkdir d && echo two > d/b");
    m.unmount();
    let head = m.head();
    m.index_sql("DELETE FROM snapshots; DELETE FROM objects; DELETE FROM packs; UPDATE meta SET value = CAST('0' AS BLOB) WHERE key = 'durable_seq';");
    m.mount();
    assert_eq!(std::fs::read_to_string(m.path("a")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(m.path("d/b")).unwrap(), "two\n");
    m.unmount();
    assert_eq!(m.head(), head);
    m.verify();
}

/// Snapshots 9 and 10 (files f8, f9) committed after the durable point
/// (the barrier never ran for them), then a power cut that kept the index
/// rows of both (a WAL sync made for another transaction carries them) but
/// tore the pack inside snapshot 10's commit record: every object of both
/// is whole. Returns the pack's path and its bytes before the cut.
fn cut_inside_the_last_commit_record(env: &Env) -> (PathBuf, Vec<u8>) {
    let (path, whole, record_end) = cut_inside_snapshot_10s_record(env, 9);
    assert_eq!(whole.len() as u64, record_end, "10's record ends the pack");
    (path, whole)
}

/// Snapshots 1..=8 durable, then 9..=`last_file + 1` committed after the durable
/// point, then the pack cut inside snapshot 10's commit record. Returns
/// the pack's path, its bytes before the cut and where 10's record ended.
fn cut_inside_snapshot_10s_record(env: &Env, last_file: u64) -> (PathBuf, Vec<u8>, u64) {
    build(env);
    let mut e = env.open();
    for k in 8..=last_file {
        add_file(&mut e, k);
    }
    drop(e);
    let c = rusqlite::Connection::open(env.data_dir().join("index.db")).unwrap();
    c.execute(
        "UPDATE meta SET value = CAST('8' AS BLOB) WHERE key = 'durable_seq'",
        [],
    )
    .unwrap();
    drop(c);
    let (path, at, body) = commit_record(env, 10);
    let whole = std::fs::read(&path).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(at + RECORD_HEADER + body.len() as u64 / 3)
        .unwrap();
    (path, whole, at + RECORD_HEADER + body.len() as u64)
}

/// Regression (tests/powercut.rs saw it once): a pack that ends inside the
/// commit record of a snapshot the index kept made the writer refuse the
/// agent ("corrupt pack: N bytes, but M were committed"). The snapshot is
/// kept, its commit record written again from the index (the pack is
/// byte for byte what it was before the cut), and the next commit follows
/// on.
#[test]
fn a_pack_torn_inside_an_indexed_commit_record_keeps_the_snapshot() {
    let env = Env::new();
    let (path, whole) = cut_inside_the_last_commit_record(&env);
    let mut e = check(&env, 10);
    assert!(
        std::fs::read(&path).unwrap() == whole,
        "the torn record is written again, whole"
    );
    add_file(&mut e, 10);
    e.sync().unwrap();
    drop(e);
    check(&env, 11);
}

/// The same cut met first by a reader (verify after a power cut, before
/// any mount): it recovers the agent as the writer would, and the writer
/// then opens it.
#[test]
fn a_reader_first_fits_a_pack_torn_inside_an_indexed_commit_record() {
    let env = Env::new();
    cut_inside_the_last_commit_record(&env);
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    let r = sovseal::history::verify::verify(&a, |_, _| {}).unwrap();
    assert_eq!((r.first_seq, r.head_seq), (1, 10));
    drop(a);
    check(&env, 10);
}

/// The double fault: after the fit, the index is lost as well. The
/// snapshot whose record was torn is rebuilt from the record written again,
/// so nothing after it is cut back (before, the rebuild stopped at snapshot
/// 9 and the seen-head record reported a rollback). Met first by the
/// writer, then by a reader.
#[test]
fn a_fitted_pack_still_rebuilds_an_index_lost_later() {
    for reader_first in [false, true] {
        let env = Env::new();
        cut_inside_the_last_commit_record(&env);
        if reader_first {
            let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
            assert_eq!(a.head().unwrap().seq(), 10);
        } else {
            drop(check(&env, 10));
        }
        remove_index(&env);
        drop(check(&env, 10));
    }
}

/// The cut also took the next snapshot's objects: step 1 cuts snapshot
/// 11 back (the index held it, its objects are gone) and keeps 10, whose
/// commit record was torn. That record is written again too, so an index
/// lost later still rebuilds up to 10 (before, the cut-back left every
/// committed length at the pack's last object and the writer cut the torn
/// record off: the rebuild stopped at 9 and reported a rollback).
#[test]
fn a_cut_back_keeps_the_records_of_the_snapshots_it_keeps() {
    let env = Env::new();
    let (path, whole, record_end) = cut_inside_snapshot_10s_record(&env, 10);
    let kept = whole[..record_end as usize].to_vec();
    drop(check(&env, 10));
    assert!(
        std::fs::read(&path).unwrap() == kept,
        "snapshot 10's record is whole again, and nothing of 11 is left"
    );
    remove_index(&env);
    drop(check(&env, 10));
}

/// A pack cut short before an object the index holds lost synced data:
/// refused, naming the pack, and nothing is cut or deleted.
#[test]
fn a_pack_cut_before_an_indexed_object_is_refused() {
    let env = Env::new();
    build(&env);
    let (path, recs) = records(&env);
    let (at, kind, len) = recs[recs.len() - 2];
    assert_ne!(kind, COMMIT_KIND, "snapshot 8's last object");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(at + RECORD_HEADER + len - 1).unwrap();
    drop(f);
    let before = std::fs::read(&path).unwrap();
    let err = Engine::open(&env.home, &env.agent, &env.master)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("00000001.pack"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the pack is kept");
}

/// Copies the agent's data dir as it is now, the engine still open: what a
/// SIGKILL of the process leaves (everything it wrote is in the page cache).
fn copy_data_dir(env: &Env, to: &Path) {
    let from = env.data_dir();
    for f in support::home::files_under(&from) {
        let dest = to.join(f.strip_prefix(&from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

/// (head, durable point) as the index file holds them, read on a
/// connection of its own (which never writes the engine's waiting rows).
fn index_rows(env: &Env) -> (u64, u64) {
    let idx = sovseal::repo::index::Index::open(&env.data_dir().join("index.db"), false).unwrap();
    (
        idx.head_seq().unwrap().unwrap(),
        idx.durable_seq().unwrap().unwrap(),
    )
}

#[test]
fn commits_leave_their_index_rows_to_the_barrier_and_a_crash_before_it_loses_none() {
    let env = Env::new();
    let mut e = env.open();
    assert_eq!(e.sync().unwrap(), 1);
    assert_eq!(index_rows(&env), (1, 1));
    // Sealed, readable, and not yet in the index file.
    for k in 1..=10 {
        add_file(&mut e, k);
    }
    assert_eq!(e.head().seq(), 11);
    assert_eq!(index_rows(&env), (1, 1), "ten commits wrote no index rows");
    for k in 1..=10 {
        let ino = path_ino(&e, &format!("f{k}"));
        assert_eq!(e.read(ino, 0, 1 << 20).unwrap(), bytes(k, 30_000), "f{k}");
    }
    // The barrier writes them, with the durable point.
    assert_eq!(e.sync().unwrap(), 11);
    assert_eq!(index_rows(&env), (11, 11));
    // Five more, then the process dies before any flush.
    for k in 11..=15 {
        add_file(&mut e, k);
    }
    assert_eq!(index_rows(&env), (11, 11));
    let image = env.dir.path().join("killed");
    copy_data_dir(&env, &image);
    drop(e);
    std::fs::remove_dir_all(env.data_dir()).unwrap();
    std::fs::rename(&image, env.data_dir()).unwrap();
    // The next open catches the index up from the packs' commit records.
    let e = check(&env, 16);
    drop(e);
    assert_eq!(index_rows(&env), (16, 16));
}

/// A reader beside a live writer waits for the commit records in the packs
/// past what the index records, never for sealed objects of a file still
/// being written: the packs' scan finds the end of the last commit record.
#[test]
fn the_last_commit_record_past_the_index_is_found_by_its_headers() {
    use sovseal::repo::store::Store;
    let env = Env::new();
    let mut e = env.open();
    add_file(&mut e, 1);
    e.sync().unwrap();
    let packs = || {
        sovseal::repo::index::Index::open(&env.data_dir().join("index.db"), false)
            .unwrap()
            .packs()
            .unwrap()[&1]
    };
    let pack = env.data_dir().join("packs/00000001.pack");
    let len = || std::fs::metadata(&pack).unwrap().len();
    let store = Store::open_checked_readonly(
        sovseal::fsutil::Dir::open_root(&env.data_dir().join("packs")).unwrap(),
    );
    let magic = PACK_MAGIC.len() as u64;
    let indexed = packs();
    assert_eq!(indexed, len());
    assert_eq!(
        store.last_commit_end(1, magic, len()).unwrap(),
        Some(indexed)
    );
    assert_eq!(store.last_commit_end(1, indexed, len()).unwrap(), None);
    // A file larger than the dirty budget, not closed: its chunks are
    // sealed into the pack (whole chunks at once, as they are written),
    // and no commit record follows them.
    e.set_dirty_budget(1 << 20);
    let f = e.create(ROOT_INO, b"big", 0o644, 0, 0).unwrap();
    e.write(f.ino, 0, &bytes(9, 3 << 20)).unwrap();
    assert!(len() > indexed + (1 << 20), "chunks sealed early");
    assert_eq!(store.last_commit_end(1, indexed, len()).unwrap(), None);
    // Its commit: a commit record at the end, not yet in the index.
    e.commit().unwrap();
    assert_eq!(packs(), indexed);
    assert_eq!(
        store.last_commit_end(1, indexed, len()).unwrap(),
        Some(len())
    );
    // A torn tail (a record the file does not hold whole) ends the scan.
    let whole = len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&pack)
        .unwrap()
        .write_all(&[0u8; 20])
        .unwrap();
    assert_eq!(
        store.last_commit_end(1, indexed, len()).unwrap(),
        Some(whole)
    );
}
