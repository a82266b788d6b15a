//! Engine benchmarks: seal throughput beside raw AES-256-GCM, and commit
//! latency of a one-file change against tree size and file size.
//!
//! `cargo bench --bench engine`; figures go to docs/PERFORMANCE.md.
//! `SOVSEAL_BENCH_QUICK=1` skips the largest cases.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sovseal::config::{AgentName, Home};
use sovseal::engine::Engine;
use sovseal::seal::keys::MasterKey;
use sovseal::seal::tree::{ObjectKind, ROOT_INO};
use sovseal::seal::{aead, envelope};
use std::hint::black_box;
use std::time::Duration;

fn quick() -> bool {
    std::env::var_os("SOVSEAL_BENCH_QUICK").is_some()
}

fn seal(c: &mut Criterion) {
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

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
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
    Fixture { _dir: dir, engine }
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
    }
    e.commit().unwrap();
    (f, target)
}

fn commit_vs_tree_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit-one-file-vs-tree-size");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let sizes: &[u64] = if quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    for &n in sizes {
        let (mut f, ino) = tree(n);
        let data = vec![0xabu8; 4096];
        let mut k = 0u64;
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                k += 1;
                f.engine
                    .write(ino, 0, &data[..(k % 4000 + 1) as usize])
                    .unwrap();
                f.engine.commit().unwrap().unwrap()
            })
        });
    }
    g.finish();
}

fn commit_vs_file_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit-4k-overwrite-vs-file-size");
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
        g.bench_function(
            BenchmarkId::from_parameter(format!("{}MiB", size >> 20)),
            |b| {
                b.iter(|| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let off = (rng % (size / 4096)) * 4096;
                    // Unique bytes every time: no deduplication flatters small files.
                    data[..8].copy_from_slice(&rng.to_le_bytes());
                    f.engine.write(file.ino, off, &data).unwrap();
                    f.engine.commit().unwrap().unwrap()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, seal, commit_vs_tree_size, commit_vs_file_size);
criterion_main!(benches);
