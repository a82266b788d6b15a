//! `.snapshots/` through a real mount: how many snapshots a workload makes,
//! the bytes of every file at every snapshot, read-only history, and the
//! reserved name.

mod support;
use std::time::Duration;
use support::mount::Mounted;

fn settle() {
    // Longer than the quiet period (200 ms), so that pending metadata
    // commits have happened before we count.
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn each_completed_write_is_exactly_one_snapshot_with_its_bytes() {
    let m = Mounted::new("snaps", &[]);
    let first = m.head();
    m.sh("echo v1 > f");
    settle();
    assert_eq!(
        m.head(),
        first + 1,
        "`echo x > f` makes exactly one snapshot"
    );
    m.sh("echo v2 > f");
    settle();
    m.sh("echo v3 >> f");
    settle();
    let head = m.head();
    assert_eq!(head, first + 3);
    // Every version is browsable, read lazily from history.
    let at = |seq: u64| std::fs::read_to_string(m.path(&format!(".snapshots/{seq:010}/f")));
    assert_eq!(at(first + 1).unwrap(), "v1\n");
    assert_eq!(at(first + 2).unwrap(), "v2\n");
    assert_eq!(at(first + 3).unwrap(), "v2\nv3\n");
    assert!(at(first).is_err(), "f did not exist yet at {first}");
    assert_eq!(
        std::fs::read_link(m.path(".snapshots/latest"))
            .unwrap()
            .to_str()
            .unwrap(),
        format!("{head:010}")
    );
    assert_eq!(
        std::fs::read_to_string(m.path(".snapshots/latest/f")).unwrap(),
        "v2\nv3\n"
    );
    // Names sort in order; mtime is the snapshot time.
    let mut names: Vec<String> = std::fs::read_dir(m.path(".snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "latest")
        .collect();
    let sorted = {
        let mut s = names.clone();
        s.sort();
        s
    };
    names.sort_by_key(|n| n.parse::<u64>().unwrap());
    assert_eq!(names, sorted);
    assert_eq!(names.len() as u64, head);
    let o = m.sovseal(&["snapshots", "--agent", "snaps", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let last = &v["snapshots"].as_array().unwrap()[head as usize - 1];
    let mtime = std::fs::metadata(m.path(&format!(".snapshots/{head:010}")))
        .unwrap()
        .modified()
        .unwrap();
    let ms = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(ms, last["timestamp_ms"].as_i64().unwrap());
}

#[test]
fn bursts_share_snapshots() {
    let m = Mounted::new("burst", &[]);
    let before = m.head();
    // 8 processes, each 200 writes into its own file, then close.
    m.sh("for p in 1 2 3 4 5 6 7 8; do python3 -c \"
f = open('w$p', 'wb')
for i in range(200):
    f.write(b'x' * 4096)
f.close()\" & done; wait");
    settle();
    let made = m.head() - before;
    assert!(
        (1..=9).contains(&made),
        "1600 write() calls made {made} snapshots"
    );
    // Many metadata changes in a quick burst share one quiet-period commit.
    let before = m.head();
    m.sh("mkdir d && for i in $(seq 1 100); do mkdir d/$i; done");
    // The quiet-period commit comes on its own (awaited: CI machines are
    // slow at times); then nothing more comes of the burst.
    let t0 = std::time::Instant::now();
    while m.head() == before {
        assert!(t0.elapsed() < Duration::from_secs(30), "no commit came");
        std::thread::sleep(Duration::from_millis(50));
    }
    settle();
    let made = m.head() - before;
    assert!((1..=3).contains(&made), "101 mkdirs made {made} snapshots");
    // fsync is a commit of its own.
    let before = m.head();
    m.py("import os\nfd = os.open('d/1/x', os.O_CREAT | os.O_WRONLY)\nos.fsync(fd)\nos.close(fd)");
    assert!(m.head() > before, "fsync commits before it returns");
}

#[test]
fn history_is_read_only_and_the_name_is_reserved() {
    let m = Mounted::new("ro-history", &[]);
    m.sh("mkdir d && echo x > d/f && echo y > top");
    settle();
    let out = m.py(r#"
import errno, os
h = ".snapshots/latest"
def erofs(f, *a):
    try:
        f(*a)
    except OSError as e:
        assert e.errno == errno.EROFS, (f.__name__, a, e)
        return
    raise AssertionError(("allowed", f.__name__, a))
erofs(open, h + "/d/f", "w")
erofs(open, h + "/d/f", "a")
erofs(open, h + "/new", "w")
erofs(os.mkdir, h + "/nd")
erofs(os.unlink, h + "/d/f")
erofs(os.rmdir, h + "/d")
erofs(os.rename, h + "/d/f", h + "/d/g")
erofs(os.rename, "top", h + "/top2")
erofs(os.rename, h + "/top", "top3")
erofs(os.chmod, h + "/top", 0o600)
erofs(os.utime, h + "/top", (1, 1))
erofs(os.truncate, h + "/top", 0)
erofs(os.setxattr, h + "/top", "user.k", b"v")
erofs(os.symlink, "x", h + "/sl")
erofs(os.link, "top", h + "/hl")
erofs(os.mkdir, ".snapshots/0000099999")
erofs(os.unlink, ".snapshots/latest")
erofs(os.rmdir, ".snapshots")
erofs(os.rename, ".snapshots", "elsewhere")
# A file onto the directory: the kernel refuses first (EISDIR); a directory reaches us.
try:
    os.rename("top", ".snapshots")
    raise AssertionError("renamed over .snapshots")
except IsADirectoryError:
    pass
os.mkdir("dd")
erofs(os.rename, "dd", ".snapshots")
for f in (os.mkdir, lambda p: open(p, "x")):
    try:
        f(".snapshots")
        raise AssertionError("created .snapshots")
    except FileExistsError:
        pass
assert open(h + "/d/f").read() == "x\n"
print("ok")
"#);
    assert_eq!(out.trim(), "ok");
    assert!(m.path("top").exists() && !m.path("top2").exists() && !m.path("elsewhere").exists());
}

#[test]
fn listing_many_snapshots_pages_through_the_index() {
    let m = Mounted::new("many-snaps", &[]);
    m.py("import os\nfor i in range(600):\n    fd = os.open('f', os.O_CREAT | os.O_WRONLY | os.O_TRUNC)\n    os.write(fd, str(i).encode())\n    os.fsync(fd)\n    os.close(fd)");
    let head = m.head();
    assert!(head >= 601, "{head}");
    let n = std::fs::read_dir(m.path(".snapshots")).unwrap().count() as u64;
    assert_eq!(n, head + 1, "one directory per snapshot plus latest");
    assert_eq!(
        std::fs::read_to_string(m.path(&format!(".snapshots/{:010}/f", head))).unwrap(),
        "599"
    );
}
