//! Replication benchmark: throughput to a local S3 server (moto) against raw
//! object_store puts of the same bytes, PUT requests per small snapshot, and
//! restore time for 1,000 snapshots. Prints a table for docs/PERFORMANCE.md.
//!
//! `cargo bench --bench replication` (needs `moto_server` on PATH or
//! `SOVSEAL_TEST_MOTO`, as installed by scripts/test). With
//! `SOVSEAL_BENCH_PG_URL=postgres://…` the throughput and restore rows are
//! measured against that PostgreSQL database too. The snapshot is 256 MiB,
//! or `SOVSEAL_BENCH_REPL_MIB` MiB (1024 for the 1 GiB row).
//!
//! `SOVSEAL_BENCH_RESTORE_SCALING=1` runs only the restore-scaling table
//! instead: the time of a verified restore (what a fresh machine waits for
//! before its mount serves) against the number of snapshots and the bytes
//! of history, from moto and from a store answering in 10 ms; with
//! `SOVSEAL_BENCH_RESTORE_PG=1` also from a PostgreSQL server it starts
//! (as the tests do: the `postgresql` package, a cluster in a temporary
//! directory, a Unix socket). `SOVSEAL_BENCH_RESTORE_LIFE=1` runs only
//! the lazy mount of an agent with a long life behind it (checkpoints and
//! forget records) instead, and `SOVSEAL_BENCH_RESTORE_LOCAL=1` only what
//! a lazy mount of 1,000 and 10,000 snapshots costs without request
//! latency (the local work per snapshot). `SOVSEAL_BENCH_PRUNE_FAR=1`
//! runs only a remote prune of 900 forgotten snapshots on a store
//! answering in 10 ms, `SOVSEAL_BENCH_VERIFY_FAR=1` only `verify
//! --remote`'s chain check of 1,000 and 10,000 snapshots on such a store,
//! `SOVSEAL_BENCH_FLAT=1` only a lazy mount from the chain against one from
//! the newest signed checkpoint (the flat start), on such a store.

use object_store::{ObjectStoreExt, PutPayload};
use sovseal::config::{AgentName, Home};
use sovseal::engine::Engine;
use sovseal::repo::remote::Remote;
use sovseal::seal::keys::MasterKey;
use sovseal::seal::tree::ROOT_INO;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/support/moto.rs"]
mod moto;

#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod postgres;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Rounds of the throughput comparison (median reported).
const ROUNDS: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and listing: nothing to run quickly.
    }
    // The tests' harness: ready once it answers an S3 request (a port that
    // accepts connections is not yet a server that creates buckets).
    let moto = moto::Moto::start();
    let opts = moto.options();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let home = Home::at(dir.path().join("home"));
    let master = MasterKey::from_bytes([4; 32]);
    if std::env::var_os("SOVSEAL_BENCH_RESTORE_SCALING").is_some() {
        restore_scaling(&rt, &home, &master, &moto);
        return;
    }
    if std::env::var_os("SOVSEAL_BENCH_RESTORE_LIFE").is_some() {
        restore_life(&rt, &home, &master);
        return;
    }
    if std::env::var_os("SOVSEAL_BENCH_FLAT").is_some() {
        flat_start(&rt, &home, &master);
        return;
    }
    if std::env::var_os("SOVSEAL_BENCH_RESTORE_LOCAL").is_some() {
        restore_local(&rt, &home, &master);
        return;
    }
    if std::env::var_os("SOVSEAL_BENCH_PRUNE_FAR").is_some() {
        prune_far(&rt, &home, &master);
        return;
    }
    if std::env::var_os("SOVSEAL_BENCH_VERIFY_FAR").is_some() {
        verify_far(&rt, &home, &master);
        return;
    }

    // 1. Throughput: one snapshot of 256 MiB (or as asked), replicated,
    // against raw puts of the same bytes.
    let name = AgentName::new("big").unwrap();
    let mut e = Engine::open(&home, &name, &master).unwrap();
    let f = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap();
    let size = std::env::var("SOVSEAL_BENCH_REPL_MIB")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .expect("SOVSEAL_BENCH_REPL_MIB: a number of MiB")
        })
        .unwrap_or(256)
        << 20;
    for i in 0..(size >> 20) {
        e.write(f.ino, (i as u64) << 20, &random(1 << 20, i as u64))
            .unwrap();
    }
    let seq = e.commit().unwrap().unwrap().seq;
    let agent = e.shared_agent();
    let parts = sovseal::replication::replicator::pack_parts(&agent, seq).unwrap();
    let bytes: usize = parts.iter().map(Vec::len).sum();
    // Alternating rounds, each to fresh keys (the S3 server's state grows
    // with every round: neither side gets only the early ones); medians.
    let (ours, rawt) = throughput(
        &rt,
        &agent,
        seq,
        &parts,
        |round| Remote::open_with(&moto.url(&format!("repl{round}")), &opts).unwrap(),
        |round| Remote::open_with(&moto.url(&format!("raw{round}")), &opts).unwrap(),
    );
    // 1b. The same against PostgreSQL, when SOVSEAL_BENCH_PG_URL names a
    // database (rounds after the first overwrite the same rows, on both
    // sides alike).
    let pg = std::env::var("SOVSEAL_BENCH_PG_URL").ok().map(|url| {
        let remote = Remote::open(&url).unwrap();
        let (ours, rawt) = throughput(
            &rt,
            &agent,
            seq,
            &parts,
            |_| remote.clone(),
            |_| remote.clone(),
        );
        (remote, ours, rawt)
    });
    drop(e);

    // 2. PUTs per small snapshot: 200 one-file commits to a file:// remote, count its files.
    let small = AgentName::new("small").unwrap();
    let rdir = dir.path().join("remote");
    let fremote = Remote::open(&format!("file://{}", rdir.display())).unwrap();
    let mut e = Engine::open(&home, &small, &master).unwrap();
    rt.block_on(sovseal::replication::replicator::upload(
        &e.shared_agent(),
        &fremote,
        1,
    ))
    .unwrap();
    let before = count_files(&rdir);
    for i in 0..200u64 {
        let f = e
            .create(ROOT_INO, format!("f{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        e.write(f.ino, 0, &random(2048, i)).unwrap();
        let s = e.commit().unwrap().unwrap().seq;
        rt.block_on(sovseal::replication::replicator::upload(
            &e.shared_agent(),
            &fremote,
            s,
        ))
        .unwrap();
    }
    let puts = (count_files(&rdir) - before) as f64 / 200.0;

    // 3. Restore time for 1,000 snapshots from S3.
    for i in 200..1001u64 {
        let f = e
            .create(ROOT_INO, format!("f{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        e.write(f.ino, 0, &random(2048, i)).unwrap();
        e.commit().unwrap();
    }
    let head = e.head().seq();
    drop(e);
    let s3 = Remote::open_with(&moto.url("restore"), &opts).unwrap();
    let restore_t = restore_time(&rt, &home, &small, &master, &s3, &s3);
    let pg_restore = pg
        .as_ref()
        .map(|(remote, _, _)| restore_time(&rt, &home, &small, &master, remote, remote));
    // A store that answers every request after 10 ms (a far S3 region),
    // with the server's own work taken out: what a restore's round trips
    // cost, apart from moto's CPU.
    let (near, far) = far::pair();
    let far_restore = restore_time(&rt, &home, &small, &master, &near, &far);

    println!("| measurement | value |");
    println!("|---|---|");
    rows("moto", "raw object_store puts", size, bytes, ours, rawt);
    println!("| PUT requests per small (one-file) snapshot | {puts:.2} |");
    println!(
        "| restore {head} snapshots from moto (verified) | {:.2} s |",
        restore_t.as_secs_f64()
    );
    println!(
        "| restore {head} snapshots from a store answering in {} ms (verified) | {:.2} s |",
        far::DELAY.as_millis(),
        far_restore.as_secs_f64()
    );
    if let (Some((_, ours, rawt)), Some(restore_t)) = (pg, pg_restore) {
        rows(
            "PostgreSQL",
            "raw puts through the PostgreSQL store",
            size,
            bytes,
            ours,
            rawt,
        );
        println!(
            "| restore {head} snapshots from PostgreSQL (verified) | {:.2} s |",
            restore_t.as_secs_f64()
        );
    }
    drop(moto);
}

/// Uploads every snapshot of agent `name` (the engine closed) through
/// `up`, deletes the local agent and times its verified restore through
/// `down` (the same store, or the same bytes behind a slower path).
fn restore_time(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    up: &Remote,
    down: &Remote,
) -> Duration {
    let e = Engine::open(home, name, master).unwrap();
    for s in 1..=e.head().seq() {
        rt.block_on(sovseal::replication::replicator::upload(
            &e.shared_agent(),
            up,
            s,
        ))
        .unwrap();
    }
    drop(e);
    std::fs::remove_dir_all(home.agent_dir(name)).unwrap();
    let t = Instant::now();
    rt.block_on(sovseal::history::restore::restore(
        home,
        name,
        master,
        down,
        |_, _| {},
    ))
    .unwrap();
    t.elapsed()
}

/// After [`restore_time`] (the remote holds the agent): the time of a lazy
/// restore until the engine serves head (what a mount waits for), and of
/// the first read of head's file `f0` then (fetched, verified).
fn lazy_time(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    down: &Remote,
) -> (Duration, Duration, usize) {
    let (e, _older, mounted) = lazy_mount(rt, home, name, master, down);
    let t = Instant::now();
    let f0 = e.lookup(ROOT_INO, b"f0").unwrap().unwrap().ino;
    let n = e.read(f0, 0, 64 << 20).unwrap().len();
    (mounted, t.elapsed(), n)
}

/// What a fresh machine's mount does before it serves: a lazy restore of
/// agent `name` from `down` (no seen-head record here), the agent opened,
/// and a flat start's older history started in the background; with the
/// time it took.
fn lazy_mount(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    down: &Remote,
) -> (Engine, Option<sovseal::mount::warm::Warmer>, Duration) {
    std::fs::remove_dir_all(home.agent_dir(name)).unwrap();
    let _ = std::fs::remove_file(home.seen_head_path(name));
    sovseal::repo::lazy::use_remote(down.clone(), Duration::from_secs(60)).unwrap();
    let t = Instant::now();
    let head = rt
        .block_on(sovseal::history::restore::restore_lazy(
            home,
            name,
            master,
            down,
            |_, _| {},
        ))
        .unwrap();
    assert!(head.is_some(), "the remote has part indexes");
    let e = Engine::open(home, name, master).unwrap();
    let older =
        sovseal::mount::warm::Warmer::older_history(&e.shared_agent(), down.clone()).unwrap();
    (e, older, t.elapsed())
}

/// The flat start (#16): a lazy mount of 1,000 and 10,000 snapshots (or
/// `SOVSEAL_BENCH_FLAT_SNAPSHOTS`, comma-separated) from a store answering
/// in 10 ms a request and a listing page, from the chain (no checkpoint
/// on the remote), from a signed checkpoint of the head among one per 10
/// snapshots (all listed: no copy of the newest), and from the copy a
/// writer keeps (what its replicator signs once it catches up); then a first read (`f0`), a read of a file stored at
/// snapshot 1 (found through the chain segment fetched for a directory
/// node of that range, or waiting for the older history), and the time
/// until the older history is in (counted from the mount's end).
fn flat_start(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    let counts: Vec<u64> = std::env::var("SOVSEAL_BENCH_FLAT_SNAPSHOTS")
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        })
        .unwrap_or_else(|_| vec![1_000, 10_000]);
    println!(
        "| snapshots | lazy mount from the chain | from the newest checkpoint, all listed | from its copy | then a first read (f0) | then a read of content stored at snapshot 1 | older history in after |"
    );
    println!("|---|---|---|---|---|---|---|");
    for snapshots in counts {
        let name = AgentName::new(&format!("flat{snapshots}")).unwrap();
        {
            let mut e = Engine::open(home, &name, master).unwrap();
            let first = e.create(ROOT_INO, b"first", 0o644, 0, 0).unwrap().ino;
            e.write(first, 0, &random(2 << 10, 0)).unwrap();
            e.commit().unwrap();
        }
        let e = ten_files(home, &name, master, snapshots - 1, 2 << 10);
        let head = e.head().seq();
        let (near, far) = uploaded_with_segments(rt, home, &name, master, e);
        let chain = lazy_time(rt, home, &name, master, &far).0;

        // The checkpoints a writer signed along the way (one per 10
        // snapshots: one a minute at 10 a minute) and the head's, stored
        // without the copy of the newest: a remote of a writer before it,
        // whose checkpoints are all listed.
        let e = Engine::open(home, &name, master).unwrap();
        let keys = master.agent_keys(name.as_str());
        for seq in (10..head).step_by(10).chain([head]) {
            let hash = e.agent().snapshot_unchecked(seq).unwrap().hash();
            let c = sovseal::history::checkpoint::Checkpoint::sign(&keys, seq, &hash, 0);
            rt.block_on(near.put_checkpoint(&keys.agent_id(), seq, c.to_json()))
                .unwrap();
        }
        drop(e);
        let (e, older, listing) = lazy_mount(rt, home, &name, master, &far);
        assert!(older.is_some(), "a flat start");
        drop((older, e));
        // Then the head's checkpoint as a writer signs it now (the copy).
        let e = Engine::open(home, &name, master).unwrap();
        rt.block_on(sovseal::history::checkpoint::create(e.agent(), &near, head))
            .unwrap();
        drop(e);
        let (e, older, mounted) = lazy_mount(rt, home, &name, master, &far);
        assert!(older.is_some(), "a flat start");
        let served = Instant::now();
        let t = Instant::now();
        let f0 = e.lookup(ROOT_INO, b"f0").unwrap().unwrap().ino;
        e.read(f0, 0, 64 << 20).unwrap();
        let read = t.elapsed();
        let t = Instant::now();
        let first = e.lookup(ROOT_INO, b"first").unwrap().unwrap().ino;
        e.read(first, 0, 64 << 20).unwrap();
        let oldest = t.elapsed();
        while sovseal::history::older::pending(e.agent())
            .unwrap()
            .is_some()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let whole = served.elapsed();
        drop((older, e));
        println!(
            "| {snapshots} | {:.0} ms | {:.0} ms | **{:.0} ms** | {:.0} ms | {:.0} ms | {:.0} ms |",
            chain.as_secs_f64() * 1e3,
            listing.as_secs_f64() * 1e3,
            mounted.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3,
            oldest.as_secs_f64() * 1e3,
            whole.as_secs_f64() * 1e3
        );
        std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
    }
}

/// Writes the chain segments of every complete range of 256 snapshots
/// of agent `name` to `up`, and the tail segment (what a writer's
/// replicator does when idle), from the data dir a restore left.
fn write_segments(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    up: &Remote,
) {
    let e = Engine::open(home, name, master).unwrap();
    let len = sovseal::repo::segment::SEGMENT_LEN;
    for k in 0..e.head().seq() / len {
        let w = rt
            .block_on(sovseal::replication::backfill::write_segment(
                &e.shared_agent(),
                up,
                k * len + 1,
                &Default::default(),
            ))
            .unwrap();
        assert_eq!(w, sovseal::replication::backfill::Segment::Written);
    }
    // And the tail, as an idle writer leaves it.
    let (head, covered) = (e.head().seq(), e.head().seq() / len * len);
    if head - covered >= sovseal::repo::segment::TAIL_STEP {
        rt.block_on(sovseal::replication::backfill::write_tail(
            &e.shared_agent(),
            up,
            covered + 1,
            head,
            &Default::default(),
        ))
        .unwrap();
    }
}

/// Agent `name` with ten files `f0`..`f9` and `snapshots` snapshots, each
/// rewriting the next file with `size` random bytes.
fn ten_files(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    snapshots: u64,
    size: usize,
) -> Engine {
    let mut e = Engine::open(home, name, master).unwrap();
    let files: Vec<u64> = (0..10)
        .map(|f| {
            e.create(ROOT_INO, format!("f{f}").as_bytes(), 0o644, 0, 0)
                .unwrap()
                .ino
        })
        .collect();
    for s in 0..snapshots {
        e.write(files[(s % 10) as usize], 0, &random(size, s + 1))
            .unwrap();
        e.commit().unwrap();
    }
    e
}

/// Uploads every snapshot of agent `name` (open in `e`, closed here) to
/// a new in-memory store and writes its chain segments there; the two
/// remotes over that store ([`far::pair`]).
fn uploaded_with_segments(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    e: Engine,
) -> (Remote, Remote) {
    let (near, far) = far::pair();
    let agent = e.shared_agent();
    for s in 1..=e.head().seq() {
        rt.block_on(sovseal::replication::replicator::upload(&agent, &near, s))
            .unwrap();
    }
    drop(agent);
    drop(e);
    write_segments(rt, home, name, master, &near);
    (near, far)
}

/// Replaces `to` with a copy of the directory `from` (`cp -a`).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .args([from, to])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The three throughput rows of one remote: sovseal's median, the raw
/// puts' median, and their ratio.
fn rows(remote: &str, raw_label: &str, size: usize, bytes: usize, ours: Duration, rawt: Duration) {
    let rate = |t: Duration| bytes as f64 / t.as_secs_f64() / 1e6;
    println!(
        "| replicate one {} MiB snapshot to {remote} (median of {ROUNDS}) | {:.0} MB/s ({:.2} s) |",
        size >> 20,
        rate(ours),
        ours.as_secs_f64()
    );
    println!(
        "| {raw_label} of the same bytes (median of {ROUNDS}) | {:.0} MB/s ({:.2} s) |",
        rate(rawt),
        rawt.as_secs_f64()
    );
    println!(
        "| ratio sovseal / raw ({remote}) | {:.2}x |",
        rawt.as_secs_f64() / ours.as_secs_f64()
    );
}

/// Median times of `ROUNDS` alternating rounds: sovseal's upload of
/// snapshot `seq` to `ours(round)`, then raw puts of the same `parts` to
/// `raw(round)` (under `raw/<round>/`).
fn throughput(
    rt: &tokio::runtime::Runtime,
    agent: &std::sync::Arc<sovseal::repo::agent::Agent>,
    seq: u64,
    parts: &[Vec<u8>],
    ours: impl Fn(usize) -> Remote,
    raw: impl Fn(usize) -> Remote,
) -> (Duration, Duration) {
    let (mut ourt, mut rawt) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let remote = ours(round);
        rt.block_on(sovseal::replication::replicator::upload(agent, &remote, 1))
            .unwrap();
        let t = Instant::now();
        rt.block_on(sovseal::replication::replicator::upload(
            agent, &remote, seq,
        ))
        .unwrap();
        ourt.push(t.elapsed());
        let raw = raw(round);
        let t = Instant::now();
        rt.block_on(futures::future::try_join_all(parts.iter().enumerate().map(
            |(i, p)| {
                let s = raw.store().clone();
                let p = p.clone();
                async move {
                    s.put(
                        &object_store::path::Path::from(format!("raw/{round}/{i}")),
                        PutPayload::from(p),
                    )
                    .await
                }
            },
        )))
        .unwrap();
        rawt.push(t.elapsed());
    }
    ourt.sort();
    rawt.sort();
    (ourt[ROUNDS / 2], rawt[ROUNDS / 2])
}

/// The restore-scaling table: histories of `snapshots` snapshots, each
/// rewriting one of ten files with `size` fresh bytes (so head holds ten
/// files while the history holds them all), restored (verified) from moto
/// and from a store answering in 10 ms. A restore is what a machine
/// without the agent waits for before `sovseal-mount --remote` serves.
fn restore_scaling(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    master: &MasterKey,
    moto: &moto::Moto,
) {
    let cases: [(u64, usize); 4] = [
        (1_000, 2 << 10),
        (10_000, 2 << 10),
        (1_000, 100 << 10),
        (1_000, 1 << 20),
    ];
    // PostgreSQL too when asked (the tests' server: needs the
    // `postgresql` package the test command installs).
    let pg_server =
        std::env::var_os("SOVSEAL_BENCH_RESTORE_PG").map(|_| postgres::Postgres::start());
    let mut pg_rows = Vec::new();
    println!(
        "| snapshots | history | head | restore from moto | lazy: mount, first read of a head file | lazy from chain segments: mount | from a store answering in 10 ms | lazy: mount, first read | lazy from chain segments: mount |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, &(snapshots, size)) in cases.iter().enumerate() {
        let name = AgentName::new(&format!("scale{i}")).unwrap();
        let e = ten_files(home, &name, master, snapshots, size);
        drop(e);
        let s3 = Remote::open_with(&moto.url(&format!("scale{i}")), &moto.options()).unwrap();
        // The writer's data dir, put back before each upload (a lazy
        // restore's holds no content to upload).
        let kept = home.agent_dir(&name).with_extension("orig");
        copy_dir(&home.agent_dir(&name), &kept);
        let from_moto = restore_time(rt, home, &name, master, &s3, &s3);
        let lazy_moto = lazy_time(rt, home, &name, master, &s3);
        write_segments(rt, home, &name, master, &s3);
        let seg_moto = lazy_time(rt, home, &name, master, &s3);
        let (near, far) = far::pair();
        copy_dir(&kept, &home.agent_dir(&name));
        let from_far = restore_time(rt, home, &name, master, &near, &far);
        let lazy_far = lazy_time(rt, home, &name, master, &far);
        write_segments(rt, home, &name, master, &near);
        let seg_far = lazy_time(rt, home, &name, master, &far);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {snapshots} | {:.0} MiB | {} KiB | {:.2} s | {:.0} ms, {:.0} ms ({} KiB) | {:.0} ms | {:.2} s | {:.0} ms, {:.0} ms | {:.0} ms |",
            (snapshots as usize * size) as f64 / (1 << 20) as f64,
            10 * size / 1024,
            from_moto.as_secs_f64(),
            ms(lazy_moto.0),
            ms(lazy_moto.1),
            lazy_moto.2 / 1024,
            ms(seg_moto.0),
            from_far.as_secs_f64(),
            ms(lazy_far.0),
            ms(lazy_far.1),
            ms(seg_far.0),
        );
        let Some(pg_server) = &pg_server else {
            std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
            std::fs::remove_dir_all(&kept).unwrap();
            continue;
        };
        let pg = Remote::open(&pg_server.url()).unwrap();
        copy_dir(&kept, &home.agent_dir(&name));
        let from_pg = restore_time(rt, home, &name, master, &pg, &pg);
        let lazy_pg = lazy_time(rt, home, &name, master, &pg);
        write_segments(rt, home, &name, master, &pg);
        let seg_pg = lazy_time(rt, home, &name, master, &pg);
        pg_rows.push(format!(
            "| {snapshots} | {:.0} MiB | {} KiB | {:.2} s | {:.0} ms, {:.0} ms ({} KiB) | {:.0} ms |",
            (snapshots as usize * size) as f64 / (1 << 20) as f64,
            10 * size / 1024,
            from_pg.as_secs_f64(),
            ms(lazy_pg.0),
            ms(lazy_pg.1),
            lazy_pg.2 / 1024,
            ms(seg_pg.0),
        ));
        std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
        std::fs::remove_dir_all(&kept).unwrap();
    }
    if pg_rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| snapshots | history | head | restore from PostgreSQL | lazy: mount, first read of a head file | lazy from chain segments: mount |"
    );
    println!("|---|---|---|---|---|---|");
    for r in pg_rows {
        println!("{r}");
    }
}

/// What a lazy mount costs on this machine alone: 1,000 and 10,000
/// snapshots (chain segments written) from a store that answers at once
/// (median of 3) and from one answering in 10 ms: the first column is the
/// local work per snapshot (checks, index rows, part indexes), the second
/// adds the requests.
fn restore_local(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    println!(
        "| snapshots | lazy mount, store answering at once (median of 3) | from a store answering in 10 ms |"
    );
    println!("|---|---|---|");
    for snapshots in [1_000u64, 10_000] {
        let name = AgentName::new(&format!("local{snapshots}")).unwrap();
        let e = ten_files(home, &name, master, snapshots, 2 << 10);
        let (near, far) = uploaded_with_segments(rt, home, &name, master, e);
        let mut at_once: Vec<Duration> = (0..3)
            .map(|_| lazy_time(rt, home, &name, master, &near).0)
            .collect();
        at_once.sort();
        let far_t = lazy_time(rt, home, &name, master, &far).0;
        println!(
            "| {snapshots} | {:.0} ms | {:.0} ms |",
            at_once[1].as_secs_f64() * 1e3,
            far_t.as_secs_f64() * 1e3
        );
        std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
    }
    browse_after_lazy_restore(rt, home, master);
}

/// Browsing a fresh machine's lazy mount from a store answering in 10 ms:
/// 400 directories (each with a file and a subdirectory holding another),
/// one snapshot per file; the time to read every metadata object of head
/// (what `find` or `ls -lR` reads) one at a time, as a lookup path does,
/// against fetching them level by level first (what a mount now does once
/// it serves).
fn browse_after_lazy_restore(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    let name = AgentName::new("browse").unwrap();
    let mut e = Engine::open(home, &name, master).unwrap();
    // (What `lazy_time` reads first.)
    let f0 = e.create(ROOT_INO, b"f0", 0o644, 0, 0).unwrap().ino;
    e.write(f0, 0, b"f0").unwrap();
    for d in 0..400u64 {
        let dir = e
            .mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755, 0, 0)
            .unwrap()
            .ino;
        let f = e.create(dir, b"f", 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, &random(100, d + 1)).unwrap();
        e.commit().unwrap();
        let v = e.mkdir(dir, b"v", 0o755, 0, 0).unwrap().ino;
        let g = e.create(v, b"g", 0o644, 0, 0).unwrap().ino;
        e.write(g, 0, &random(5000, d + 1)).unwrap();
        e.commit().unwrap();
    }
    let (_near, far) = uploaded_with_segments(rt, home, &name, master, e);
    // Every object of head but content, read through the engine's repo.
    let walk = |e: &Engine| {
        let head = e.agent().head().unwrap();
        let mut n = 0;
        head.walk_objects(&|_| false, &mut |kind, _| {
            n += u64::from(kind != sovseal::seal::tree::ObjectKind::Chunk);
            Ok(())
        })
        .unwrap();
        n
    };
    lazy_time(rt, home, &name, master, &far);
    let e = Engine::open(home, &name, master).unwrap();
    let t = Instant::now();
    let objects = walk(&e);
    let one_by_one = t.elapsed();
    drop(e);
    lazy_time(rt, home, &name, master, &far);
    let e = Engine::open(home, &name, master).unwrap();
    let t = Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let fetched = e.agent().head().unwrap().fetch_metadata(&stop).unwrap();
    let ahead = t.elapsed();
    let t = Instant::now();
    assert_eq!(walk(&e), objects);
    let after = t.elapsed();
    println!();
    println!(
        "| head's metadata, 400 directories ({objects} objects), 10 ms a request | one at a time | fetched ahead level by level ({fetched} fetched) | then read |"
    );
    println!("|---|---|---|---|");
    println!(
        "| time | {:.0} ms | {:.0} ms | {:.0} ms |",
        one_by_one.as_secs_f64() * 1e3,
        ahead.as_secs_f64() * 1e3,
        after.as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
}

/// A lazy mount of an agent with a long life behind it, from a store
/// answering in 10 ms: 1,000 snapshots (chain segments written), a signed
/// checkpoint of each (one a minute of activity is the default), and the
/// first 900 forgotten (their forget records on the remote, and bundled),
/// against the same history without checkpoints and records, and without
/// the bundle.
fn restore_life(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    let name = AgentName::new("life").unwrap();
    let (near, far, head) = one_file_uploaded(rt, home, &name, master);
    write_segments(rt, home, &name, master, &near);
    let kept = home.agent_dir(&name).with_extension("orig");
    copy_dir(&home.agent_dir(&name), &kept);
    let bare = lazy_time(rt, home, &name, master, &far).0;
    copy_dir(&kept, &home.agent_dir(&name));
    let e = Engine::open(home, &name, master).unwrap();
    let agent = e.shared_agent();
    for s in 1..=head {
        rt.block_on(sovseal::history::checkpoint::create(&agent, &near, s))
            .unwrap();
    }
    let forget: Vec<u64> = (1..=900).collect();
    sovseal::history::retention::forget(&agent, &forget).unwrap();
    // Uploads the records (their parts stay: nothing was pruned here).
    let mut report = sovseal::history::retention::PruneReport::default();
    rt.block_on(sovseal::history::retention::prune_remote(
        &agent,
        &near,
        &mut report,
    ))
    .unwrap();
    assert_eq!(report.remote_snapshots_kept, 900, "forget records uploaded");
    drop(agent);
    drop(e);
    let lived = lazy_time(rt, home, &name, master, &far).0;
    // And with the records fetched one by one (an empty bundle).
    let id = master.agent_id(name.as_str());
    rt.block_on(near.put_forgotten_bundle(&id, sovseal::repo::segment::encode_forgotten(&[])))
        .unwrap();
    let unbundled = lazy_time(rt, home, &name, master, &far).0;
    println!("| 1,000 snapshots (segments) | lazy mount, from a store answering in 10 ms |");
    println!("|---|---|");
    println!("| alone | {:.0} ms |", bare.as_secs_f64() * 1e3);
    println!(
        "| with 1,000 checkpoints and 900 forget records (bundled) | {:.0} ms |",
        lived.as_secs_f64() * 1e3
    );
    println!(
        "| the same, the records one by one | {:.0} ms |",
        unbundled.as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
    std::fs::remove_dir_all(&kept).unwrap();
}

/// `sovseal verify --remote`'s chain check on a store answering in 10 ms:
/// 1,000 and 10,000 snapshots with chain segments written (a GET per
/// envelope file, 32 at a time, and one per segment and per part index no
/// segment holds).
fn verify_far(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    println!("| snapshots | verify --remote's chain check, store answering in 10 ms |");
    println!("|---|---|");
    for snapshots in [1_000u64, 10_000] {
        let name = AgentName::new(&format!("audit{snapshots}")).unwrap();
        let e = ten_files(home, &name, master, snapshots, 2 << 10);
        let (_near, far) = uploaded_with_segments(rt, home, &name, master, e);
        let e = Engine::open(home, &name, master).unwrap();
        let agent = e.shared_agent();
        let t = Instant::now();
        let c = rt
            .block_on(sovseal::history::audit::check_remote_chain(&agent, &far))
            .unwrap();
        let took = t.elapsed();
        assert_eq!(c.compared, e.head().seq(), "{c:?}");
        println!("| {snapshots} | {:.0} ms |", took.as_secs_f64() * 1e3);
        drop(agent);
        drop(e);
        std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
    }
}

/// Agent `name`: 1,000 snapshots of one file written again each time (2
/// KiB), uploaded to a new in-memory store and recorded as replicated;
/// the two remotes over that store ([`far::pair`]) and the head.
fn one_file_uploaded(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
) -> (Remote, Remote, u64) {
    let mut e = Engine::open(home, name, master).unwrap();
    let f = e.create(ROOT_INO, b"f0", 0o644, 0, 0).unwrap().ino;
    for s in 0..1_000u64 {
        e.write(f, 0, &random(2 << 10, s + 1)).unwrap();
        e.commit().unwrap();
    }
    let (near, far) = far::pair();
    let agent = e.shared_agent();
    let head = e.head().seq();
    for s in 1..=head {
        rt.block_on(sovseal::replication::replicator::upload(&agent, &near, s))
            .unwrap();
    }
    drop(agent);
    drop(e);
    mark_replicated(home, name, head);
    (near, far, head)
}

/// Records every snapshot up to `head` of `name` (closed) as replicated,
/// as the replicator does (a prune uploads the forget records of
/// replicated snapshots only, and deletes only their parts).
fn mark_replicated(home: &Home, name: &AgentName, head: u64) {
    rusqlite::Connection::open(home.agent_dir(name).join("index.db"))
        .unwrap()
        .execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            rusqlite::params![
                sovseal::repo::replication_state::META_REPLICATED,
                head.to_string().into_bytes()
            ],
        )
        .unwrap();
}

/// A remote prune on a store answering in 10 ms: 1,000 snapshots of one
/// file written again each time, the first 900 forgotten and pruned
/// locally, so that the remote prune uploads 900 forget records and
/// deletes their snapshots' parts and indexes (what `sovseal prune` and a
/// mount's retention wait for after the local prune).
fn prune_far(rt: &tokio::runtime::Runtime, home: &Home, master: &MasterKey) {
    let name = AgentName::new("pruned").unwrap();
    let (_, far, _) = one_file_uploaded(rt, home, &name, master);
    let e = Engine::open(home, &name, master).unwrap();
    let agent = e.shared_agent();
    let forget: Vec<u64> = (1..=900).collect();
    sovseal::history::retention::forget(&agent, &forget).unwrap();
    let mut report = sovseal::history::retention::prune_local(&agent, &mut |_, _| {}).unwrap();
    let t0 = Instant::now();
    rt.block_on(sovseal::history::retention::prune_remote(
        &agent,
        &far,
        &mut report,
    ))
    .unwrap();
    let took = t0.elapsed();
    // (A forgotten snapshot whose objects a kept one still uses keeps
    // its parts: the first, which created the file.)
    assert_eq!(
        report.remote_snapshots_pruned + report.remote_snapshots_kept,
        900,
        "{report:?}"
    );
    println!("| 900 of 1,000 snapshots forgotten | remote prune, store answering in 10 ms |");
    println!("|---|---|");
    println!(
        "| {} snapshots pruned there, {} parts deleted | {:.0} ms |",
        report.remote_snapshots_pruned,
        report.remote_parts_deleted,
        took.as_secs_f64() * 1e3
    );
    drop(agent);
    drop(e);
    std::fs::remove_dir_all(home.agent_dir(&name)).unwrap();
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { n += 1 }
        }
    }
    n
}

/// An object store whose every request takes [`DELAY`] longer, and whose
/// listings page as S3's ListObjectsV2 does.
mod far {
    use futures::stream::{BoxStream, StreamExt};
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    };
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// The added latency per request.
    pub const DELAY: Duration = Duration::from_millis(10);
    /// Names one listing page holds (S3's most).
    const PAGE: usize = 1000;

    /// Two remotes over one in-memory store: the first answers at once
    /// (to fill it), the second after [`DELAY`] per request.
    pub fn pair() -> (sovseal::repo::remote::Remote, sovseal::repo::remote::Remote) {
        let store: Arc<dyn ObjectStore> = Arc::new(Keyed {
            inner: Arc::new(object_store::memory::InMemory::new()),
            names: Default::default(),
        });
        let near =
            sovseal::repo::remote::Remote::with_store(store.clone(), Default::default(), "near://");
        let far = sovseal::repo::remote::Remote::with_store(
            Arc::new(Far(store)),
            Default::default(),
            "far://",
        );
        (near, far)
    }

    #[derive(Debug)]
    pub struct Far(pub Arc<dyn ObjectStore>);

    impl std::fmt::Display for Far {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Far")
        }
    }

    /// A listing answered a page at a time: [`DELAY`] before each
    /// [`PAGE`] names (and before an empty one).
    fn paged(s: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        futures::stream::once(tokio::time::sleep(DELAY))
            .flat_map(|_| futures::stream::empty::<Result<ObjectMeta>>())
            .chain(s.enumerate().then(|(i, m)| async move {
                if i > 0 && i % PAGE == 0 {
                    tokio::time::sleep(DELAY).await;
                }
                m
            }))
            .boxed()
    }

    #[async_trait::async_trait]
    impl ObjectStore for Far {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            tokio::time::sleep(DELAY).await;
            self.0.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            tokio::time::sleep(DELAY).await;
            self.0.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            // (Each delete answered after DELAY too.)
            self.0.delete_stream(Box::pin(l.then(|p| async move {
                tokio::time::sleep(DELAY).await;
                p
            })))
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            paged(self.0.list(p))
        }
        fn list_with_offset(
            &self,
            p: Option<&Path>,
            o: &Path,
        ) -> BoxStream<'static, Result<ObjectMeta>> {
            paged(self.0.list_with_offset(p, o))
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            tokio::time::sleep(DELAY).await;
            self.0.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.0.copy_opts(f, t, o).await
        }
    }

    /// An in-memory store that lists from an offset as S3 does, from the
    /// name after it in its sorted names, where object_store's default
    /// lists every name under the prefix and drops those before the
    /// offset (the cost of a listing would grow with the history).
    /// Objects are stored by plain puts only (sovseal makes no multipart
    /// upload or copy).
    #[derive(Debug)]
    struct Keyed {
        inner: Arc<object_store::memory::InMemory>,
        names: Arc<Mutex<BTreeSet<Path>>>,
    }

    impl std::fmt::Display for Keyed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Keyed")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Keyed {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            let r = self.inner.put_opts(l, p, o).await?;
            self.names.lock().unwrap().insert(l.clone());
            Ok(r)
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            let names = self.names.clone();
            self.inner
                .delete_stream(l)
                .inspect(move |p| {
                    if let Ok(p) = p {
                        names.lock().unwrap().remove(p);
                    }
                })
                .boxed()
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        fn list_with_offset(
            &self,
            p: Option<&Path>,
            o: &Path,
        ) -> BoxStream<'static, Result<ObjectMeta>> {
            use std::ops::Bound::{Excluded, Unbounded};
            let prefix = p.cloned().unwrap_or_default();
            let after: Vec<Path> = self
                .names
                .lock()
                .unwrap()
                .range((Excluded(o.clone()), Unbounded))
                .take_while(|n| n.prefix_matches(&prefix))
                .cloned()
                .collect();
            let inner = self.inner.clone();
            futures::stream::iter(after)
                .then(move |n| {
                    let inner = inner.clone();
                    async move { inner.head(&n).await }
                })
                .boxed()
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }
}
