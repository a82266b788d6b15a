//! Engine benchmarks: seal throughput beside raw AES-256-GCM, and commit
//! latency of a one-file change against tree size, file size and the size
//! of one directory (with the bytes each commit appends).
//!
//! `cargo bench --bench engine`; figures go to docs/PERFORMANCE.md.
//! `SOVSEAL_BENCH_QUICK=1` skips the largest cases.
//! `SOVSEAL_BENCH_TREE_SIZES` and `SOVSEAL_BENCH_DIR_SIZES` (comma lists,
//! e.g. `10000000`) replace the sizes of the tree and directory curves;
//! setting either runs only the curves named.
//!
//! Each fixture checkpoints its WAL from a thread of its own, as a mount
//! does (before session 20 SQLite checkpointed inside the timed commits).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sovseal::config::{AgentName, Home};
use sovseal::engine::{CommitInfo, Engine};
use sovseal::seal::keys::MasterKey;
use sovseal::seal::tree::{ObjectKind, ROOT_INO};
use sovseal::seal::{aead, envelope};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn quick() -> bool {
    std::env::var_os("SOVSEAL_BENCH_QUICK").is_some()
}

/// Whether only the curves named by a sizes variable run.
fn curves_named() -> bool {
    ["SOVSEAL_BENCH_TREE_SIZES", "SOVSEAL_BENCH_DIR_SIZES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// The sizes of a curve: those `var` lists, none when only other curves
/// were asked for, else `quick` or `full`.
fn sizes(var: &str, quick_sizes: &[u64], full: &[u64]) -> Vec<u64> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().parse().expect("a size"))
            .collect(),
        Err(_) if curves_named() => Vec::new(),
        Err(_) if quick() => quick_sizes.to_vec(),
        Err(_) => full.to_vec(),
    }
}

fn seal(c: &mut Criterion) {
    if curves_named() {
        return;
    }
    let keys = MasterKey::from_bytes([1; 32]).agent_keys("bench");
    let mut g = c.benchmark_group("seal");
    for size in [64 * 1024, 1 << 20] {
        let buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("raw-aes-256-gcm", size), &buf, |b, buf| {
            b.iter(|| black_box(aead::seal(&[7; 32], b"aad", buf)))
        });
        g.bench_with_input(
            BenchmarkId::new("object-id-blake3-keyed", size),
            &buf,
            |b, buf| b.iter(|| black_box(envelope::object_id(&keys, ObjectKind::Chunk, buf))),
        );
        g.bench_with_input(BenchmarkId::new("seal-object", size), &buf, |b, buf| {
            let id = envelope::object_id(&keys, ObjectKind::Chunk, buf);
            b.iter(|| black_box(envelope::seal_object(&keys, ObjectKind::Chunk, &id, buf)))
        });
        g.bench_with_input(BenchmarkId::new("name-and-seal", size), &buf, |b, buf| {
            b.iter(|| {
                let id = envelope::object_id(&keys, ObjectKind::Chunk, buf);
                black_box(envelope::seal_object(&keys, ObjectKind::Chunk, &id, buf))
            })
        });
        let sealed = aead::seal(&[7; 32], b"aad", &buf);
        g.bench_with_input(
            BenchmarkId::new("raw-aes-256-gcm-open", size),
            &sealed,
            |b, s| b.iter(|| black_box(aead::open(&[7; 32], b"aad", s).unwrap())),
        );
    }
    g.finish();
}

/// An engine on a fresh data dir, with the WAL checkpointed from a thread
/// of its own as a mount does (`mount::fs::committer`): without it SQLite
/// checkpoints inside the commits being timed, which a mount never does.
struct Fixture {
    engine: Engine,
    checkpoints: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some((stop, t)) = self.checkpoints.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// Checkpoints the engine's WAL every 100 ms (the mount's
/// `CHECKPOINT_AFTER`) until `stop`.
fn checkpoint_thread(engine: &Engine) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let c = engine.agent().wal_checkpointer().expect("a checkpointer");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            c.run().expect("WAL checkpoint");
        }
    });
    (stop, t)
}

fn engine() -> Fixture {
    let dir = tempfile::tempdir_in(
        std::env::var("SOVSEAL_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let home = Home::at(dir.path());
    let engine = Engine::open(
        &home,
        &AgentName::new("bench").unwrap(),
        &MasterKey::from_bytes([2; 32]),
    )
    .unwrap();
    let checkpoints = Some(checkpoint_thread(&engine));
    Fixture {
        engine,
        checkpoints,
        _dir: dir,
    }
}

/// A tree of `n` small files, 100 per directory.
fn tree(n: u64) -> (Fixture, u64) {
    let mut f = engine();
    let e = &mut f.engine;
    let mut target = 0;
    for d in 0..n.div_ceil(100) {
        let dir = e
            .mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755, 0, 0)
            .unwrap();
        for i in 0..100.min(n - d * 100) {
            let file = e
                .create(dir.ino, format!("f{i}").as_bytes(), 0o644, 0, 0)
                .unwrap();
            e.write(file.ino, 0, format!("file {d}/{i}\n").as_bytes())
                .unwrap();
            target = file.ino;
        }
        if d % 500 == 499 {
            e.commit().unwrap();
        }
    }
    e.commit().unwrap();
    (f, target)
}

fn commit_vs_tree_size(c: &mut Criterion) {
    const GROUP: &str = "commit-one-file-vs-tree-size";
    let mut g = c.benchmark_group(GROUP);
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for n in sizes(
        "SOVSEAL_BENCH_TREE_SIZES",
        &[1_000, 10_000],
        &[1_000, 10_000, 100_000],
    ) {
        let (mut f, ino) = tree(n);
        let data = vec![0xabu8; 4096];
        let mut k = 0u64;
        let one = |f: &mut Fixture| {
            k += 1;
            f.engine
                .write(ino, 0, &data[..(k % 4000 + 1) as usize])
                .unwrap();
            f.engine.commit().unwrap().unwrap()
        };
        bytes_then_time(&mut g, GROUP, n, &mut f, one);
    }
    g.finish();
}

fn commit_vs_file_size(c: &mut Criterion) {
    if curves_named() {
        return;
    }
    const GROUP: &str = "commit-4k-overwrite-vs-file-size-MiB";
    let mut g = c.benchmark_group(GROUP);
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let sizes: &[u64] = if quick() {
        &[1 << 20, 100 << 20]
    } else {
        &[1 << 20, 100 << 20, 1 << 30]
    };
    for &size in sizes {
        let mut f = engine();
        let file = f.engine.create(ROOT_INO, b"big", 0o644, 0, 0).unwrap();
        let block = vec![0x11u8; 1 << 20];
        for off in (0..size).step_by(1 << 20) {
            f.engine.write(file.ino, off, &block).unwrap();
        }
        f.engine.commit().unwrap();
        let mut data = vec![0xcdu8; 4096];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        bytes_then_time(&mut g, GROUP, size >> 20, &mut f, |f| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let off = (rng % (size / 4096)) * 4096;
            // Unique bytes every time: no deduplication flatters small files.
            data[..8].copy_from_slice(&rng.to_le_bytes());
            f.engine.write(file.ino, off, &data).unwrap();
            f.engine.commit().unwrap().unwrap()
        });
    }
    g.finish();
}

/// Bytes the agent's packs hold.
fn pack_bytes(f: &Fixture) -> u64 {
    let dir = f._dir.path().join("agents/bench/packs");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Prints the bytes one commit made by `one` appends (over 100), then
/// times it as case `n` of group `g` (named `group`).
fn bytes_then_time(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    group: &str,
    n: u64,
    f: &mut Fixture,
    mut one: impl FnMut(&mut Fixture) -> CommitInfo,
) {
    let before = pack_bytes(f);
    for _ in 0..100 {
        one(f);
    }
    eprintln!(
        "{group}/{n}: {} bytes appended per commit",
        (pack_bytes(f) - before) / 100
    );
    g.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| one(f)));
}

/// One create (a one-byte file) and its commit in ONE directory of `n`
/// entries: the curve tree format 2 keeps flat (format 1 re-sealed the
/// whole directory). Also prints the bytes each such commit appends.
fn commit_vs_dir_size(c: &mut Criterion) {
    const GROUP: &str = "commit-one-create-vs-dir-size";
    let mut g = c.benchmark_group(GROUP);
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for n in sizes(
        "SOVSEAL_BENCH_DIR_SIZES",
        &[1_000, 10_000],
        &[1_000, 10_000, 100_000, 1_000_000],
    ) {
        let mut f = engine();
        let dir = f.engine.mkdir(ROOT_INO, b"big", 0o755, 0, 0).unwrap().ino;
        for i in 0..n {
            let file = f
                .engine
                .create(dir, format!("note-{i:07}.md").as_bytes(), 0o644, 0, 0)
                .unwrap();
            f.engine.write(file.ino, 0, b"x").unwrap();
            if i % 50_000 == 49_999 {
                f.engine.commit().unwrap();
            }
        }
        f.engine.commit().unwrap();
        let mut k = 0u64;
        let one = |f: &mut Fixture| {
            k += 1;
            let file = f
                .engine
                .create(dir, format!("new-{k:09}").as_bytes(), 0o644, 0, 0)
                .unwrap();
            f.engine.write(file.ino, 0, b"x").unwrap();
            f.engine.commit().unwrap().unwrap()
        };
        bytes_then_time(&mut g, GROUP, n, &mut f, one);
    }
    g.finish();
}

criterion_group!(
    benches,
    seal,
    commit_vs_tree_size,
    commit_vs_file_size,
    commit_vs_dir_size
);
criterion_main!(benches);
