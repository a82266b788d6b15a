//! The kernel's read-ahead window (#15): a mount asks for a 4 MiB window by
//! default, `--readahead-kib N` and `-o readahead_kib=N` choose another,
//! 0 keeps the kernel's; a sequential read through the larger window (1 MiB
//! requests, several at once) returns exactly the bytes written, cold;
//! such a read leaves the daemon's chunk cache alone, an `O_DIRECT` one
//! fills it.

mod support;
use std::os::unix::fs::MetadataExt;
use support::metrics::{metric, wait_for, wait_rewritten_after};
use support::mount::Mounted;

/// The window of the mount, read from sysfs by the mount's own device
/// number (found by stat, independently of the daemon's mount-table code).
fn window_kib(m: &Mounted) -> u32 {
    let dev = std::fs::metadata(m.path("")).unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let f = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
    text.trim().parse().unwrap()
}

#[test]
fn the_mount_sets_the_window_it_is_asked_for() {
    let m = Mounted::new("ra-default", &[]);
    assert_eq!(window_kib(&m), 4096, "the default window");
    // The window belongs to the mount: a remount sets it again.
    m.remount();
    assert_eq!(window_kib(&m), 4096, "after a remount");
    drop(m);
    let m = Mounted::new("ra-flag", &["--readahead-kib", "1024"]);
    assert_eq!(window_kib(&m), 1024);
    drop(m);
    let m = Mounted::new("ra-option", &["-o", "readahead_kib=512"]);
    assert_eq!(window_kib(&m), 512);
    drop(m);
    // 0 leaves the kernel's own window for a FUSE mount (128 KiB).
    let m = Mounted::new("ra-off", &["--readahead-kib", "0"]);
    assert_eq!(window_kib(&m), 128);
}

#[test]
fn a_cold_sequential_read_through_the_window_returns_what_was_written() {
    let m = Mounted::new("ra-read", &[]);
    // 24 MiB + 1,000 bytes of varied content: 1 MiB requests that cross
    // 64 KiB chunks, a short last chunk, and a hole in the middle.
    m.py(r#"
import hashlib, os, random
rng = random.Random(4096)
with open("f", "wb") as f:
    f.write(rng.randbytes(12 << 20))
    f.seek((14 << 20) + 123)
    f.write(rng.randbytes((10 << 20) - 123 + 1000))
    f.flush()
    os.fsync(f.fileno())
"#);
    let want = m.py("import hashlib; print(hashlib.sha256(open('f','rb').read()).hexdigest())");
    m.remount();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").unwrap();
    // Two readers at once, one from the start and one from the middle,
    // each reading in 1 MiB pieces.
    let got = m.py(r#"
import hashlib, threading
def digest(start, out):
    h = hashlib.sha256()
    with open("f", "rb", buffering=0) as f:
        f.seek(start)
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    out[start] = h
out = {}
ts = [threading.Thread(target=digest, args=(s, out)) for s in (0, 12 << 20)]
[t.start() for t in ts]
[t.join() for t in ts]
whole = open("f", "rb").read()
assert out[12 << 20].hexdigest() == hashlib.sha256(whole[12 << 20:]).hexdigest()
print(out[0].hexdigest())
"#);
    assert_eq!(got, want);
    assert_eq!(window_kib(&m), 4096);
}

/// The chunk cache's series in the metrics file of the agent `ra-cache`.
const CHUNK_CACHE: &str = "sovseal_cache_bytes{agent=\"ra-cache\",cache=\"chunks\"} ";

/// A read through the kernel's page cache opens whole chunks straight into
/// the reply and leaves the daemon's chunk cache alone (the page cache
/// keeps the bytes); an `O_DIRECT` read, whose re-reads come back to the
/// daemon, goes through the chunk cache. Both return what was written.
#[test]
fn whole_chunks_skip_the_chunk_cache_only_where_the_page_cache_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("sovseal.prom");
    let m = Mounted::new("ra-cache", &["--metrics-file", metrics.to_str().unwrap()]);
    m.sh("head -c 4194304 /dev/urandom > f && sync f");
    let want = m.sh("sha256sum < f");
    m.remount();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").unwrap();
    assert_eq!(m.sh("dd if=f bs=1M status=none | sha256sum"), want);
    wait_rewritten_after(&metrics, std::time::SystemTime::now());
    let through_page_cache = metric(&metrics, CHUNK_CACHE).unwrap();
    assert!(
        through_page_cache < 64 << 10,
        "a read through the page cache left {through_page_cache} bytes in the chunk cache"
    );
    assert_eq!(
        m.sh("dd if=f bs=1M iflag=direct status=none | sha256sum"),
        want
    );
    wait_for(&metrics, CHUNK_CACHE, |n| n >= 4 << 20);
}
