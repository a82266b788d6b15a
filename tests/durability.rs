//! Durability through a real mount and real kills (DESIGN.md, invariants 3
//! and 6; docs/SEMANTICS.md, "Durability"):
//! - every operation that returned survives a SIGKILL of the daemon sent
//!   right after the call returned, in the tree and in a snapshot;
//! - atomic-save and git loops killed at random instants lose no
//!   acknowledged save or commit;
//! - a close seals a snapshot without a disk sync (only what an fsync
//!   before it did not), fsync syncs, and `--durable-close` keeps "every
//!   close durable";
//! - a new mount right after an unmount waits for the old daemon's last
//!   commit instead of failing.

mod support;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::mount::{MOUNT, Mounted, Rng, text};

/// Helpers every program below starts with.
const PRELUDE: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    if libc.syscall(316, -100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
def put(name, data):
    with open(name, "wb") as f:
        f.write(data)
def get(name):
    with open(name, "rb") as f:
        return f.read()
def acl(*entries):
    # POSIX ACL xattr encoding: version 2, then (tag, perm, id) entries.
    import struct
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
# user::rw-, user:1000:rw-, group::r--, mask::rw-, other::--- (unnamed
# entries carry the id the kernel writes back: ACL_UNDEFINED_ID)
U = 0xFFFFFFFF
ACL = acl((1, 6, U), (2, 6, 1000), (4, 4, U), (16, 6, U), (32, 0, U))
def need(cond, what):
    if not cond:
        print("FAIL:", what, file=sys.stderr); sys.exit(1)
"#;

/// One operation of the matrix: what exists before, the call, and what
/// must hold after the remount (run in the live tree and in the newest
/// snapshot under `.snapshots/latest`).
struct Case {
    name: &'static str,
    setup: &'static str,
    op: &'static str,
    check: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "write+close",
        setup: "",
        op: r#"put("f", b"hello")"#,
        check: r#"need(get("f") == b"hello", "content")"#,
    },
    Case {
        name: "fsync (file still open)",
        setup: "",
        op: r#"fd = os.open("f", os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b"synced"); os.fsync(fd)"#,
        check: r#"need(get("f") == b"synced", "content")"#,
    },
    Case {
        name: "create",
        setup: "",
        op: r#"os.close(os.open("new", os.O_CREAT | os.O_WRONLY, 0o640))"#,
        check: r#"st = os.stat("new"); need(st.st_size == 0 and st.st_mode & 0o777 == 0o640, oct(st.st_mode))"#,
    },
    Case {
        name: "mkdir",
        setup: "",
        op: r#"os.mkdir("d", 0o750)"#,
        check: r#"st = os.stat("d"); need(os.path.isdir("d") and st.st_mode & 0o777 == 0o750, oct(st.st_mode))"#,
    },
    Case {
        name: "rename",
        setup: r#"put("a", b"A")"#,
        op: r#"os.rename("a", "b")"#,
        check: r#"need(not os.path.exists("a") and get("b") == b"A", os.listdir("."))"#,
    },
    Case {
        name: "atomic save (rename over)",
        setup: r#"put("state.json", b"old")"#,
        op: r#"fd = os.open("state.tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644); os.write(fd, b"new"); os.fsync(fd); os.close(fd); os.rename("state.tmp", "state.json")"#,
        check: r#"need(get("state.json") == b"new" and not os.path.exists("state.tmp"), os.listdir("."))"#,
    },
    Case {
        name: "rename RENAME_EXCHANGE",
        setup: r#"put("x", b"X"); put("y", b"Y")"#,
        op: r#"renameat2("x", "y", 2)"#,
        check: r#"need(get("x") == b"Y" and get("y") == b"X", "swapped")"#,
    },
    Case {
        name: "rename RENAME_NOREPLACE",
        setup: r#"put("p", b"P")"#,
        op: r#"renameat2("p", "q", 1)"#,
        check: r#"need(get("q") == b"P" and not os.path.exists("p"), os.listdir("."))"#,
    },
    Case {
        name: "unlink",
        setup: r#"put("u", b"U")"#,
        op: r#"os.unlink("u")"#,
        check: r#"need(not os.path.exists("u"), os.listdir("."))"#,
    },
    Case {
        name: "rmdir",
        setup: r#"os.mkdir("r")"#,
        op: r#"os.rmdir("r")"#,
        check: r#"need(not os.path.exists("r"), os.listdir("."))"#,
    },
    Case {
        name: "link",
        setup: r#"put("l", b"L")"#,
        op: r#"os.link("l", "l2")"#,
        check: r#"need(get("l2") == b"L" and os.stat("l").st_nlink == 2, "linked")"#,
    },
    Case {
        name: "symlink",
        setup: "",
        op: r#"os.symlink("some/target", "s")"#,
        check: r#"need(os.readlink("s") == "some/target", "target")"#,
    },
    Case {
        name: "chmod",
        setup: r#"put("c", b"C")"#,
        op: r#"os.chmod("c", 0o604)"#,
        check: r#"need(os.stat("c").st_mode & 0o7777 == 0o604, oct(os.stat("c").st_mode))"#,
    },
    Case {
        name: "chown",
        setup: r#"put("o", b"O")"#,
        op: r#"os.chown("o", 1234, 5678)"#,
        check: r#"st = os.stat("o"); need((st.st_uid, st.st_gid) == (1234, 5678), (st.st_uid, st.st_gid))"#,
    },
    Case {
        name: "truncate",
        setup: r#"put("t", b"0123456789")"#,
        op: r#"os.truncate("t", 4)"#,
        check: r#"need(get("t") == b"0123", get("t"))"#,
    },
    Case {
        name: "utimens",
        setup: r#"put("m", b"M")"#,
        op: r#"os.utime("m", ns=(1_000_000_000_123, 2_000_000_000_456))"#,
        check: r#"st = os.stat("m"); need(st.st_mtime_ns == 2_000_000_000_456, st.st_mtime_ns)"#,
    },
    Case {
        name: "setxattr",
        setup: r#"put("xa", b"X")"#,
        op: r#"os.setxattr("xa", "user.k", b"v1")"#,
        check: r#"need(os.getxattr("xa", "user.k") == b"v1", "xattr")"#,
    },
    Case {
        name: "removexattr",
        setup: r#"put("xr", b"X"); os.setxattr("xr", "user.k", b"v1")"#,
        op: r#"os.removexattr("xr", "user.k")"#,
        check: r#"need("user.k" not in os.listxattr("xr"), os.listxattr("xr"))"#,
    },
    Case {
        // The mode follows the ACL (its mask): both must survive replay.
        name: "setfacl",
        setup: r#"put("fa", b"A")"#,
        op: r#"os.setxattr("fa", "system.posix_acl_access", ACL)"#,
        check: r#"need(os.getxattr("fa", "system.posix_acl_access") == ACL and os.stat("fa").st_mode & 0o777 == 0o660, oct(os.stat("fa").st_mode))"#,
    },
    Case {
        // Inheritance from a default ACL, in place of the umask.
        name: "create under a default ACL",
        setup: r#"os.mkdir("da", 0o755); os.setxattr("da", "system.posix_acl_default", ACL)"#,
        op: r#"os.umask(0o077); put("da/f", b"F")"#,
        check: r#"need(os.getxattr("da/f", "system.posix_acl_access") == ACL and os.stat("da/f").st_mode & 0o777 == 0o660, oct(os.stat("da/f").st_mode))"#,
    },
    Case {
        // A stray device number on a FIFO (mknod(2) ignores it) must not
        // make the journal record unreadable.
        name: "mkfifo",
        setup: "",
        op: r#"os.mknod("fifo", 0o640 | 0o010000, os.makedev(5, 5))"#,
        check: r#"st = os.lstat("fifo"); need(st.st_mode == 0o010640 and st.st_rdev == 0, (oct(st.st_mode), st.st_rdev))"#,
    },
    Case {
        name: "mknod (character device)",
        setup: "",
        op: r#"os.mknod("null", 0o666 | 0o020000, os.makedev(1, 3))"#,
        check: r#"st = os.lstat("null"); need(st.st_mode & 0o170000 == 0o020000 and st.st_rdev == os.makedev(1, 3), (oct(st.st_mode), st.st_rdev))"#,
    },
];

/// Runs `program` (after the prelude) in `dir` and asserts it succeeded.
fn py_in(m: &Mounted, dir: &std::path::Path, program: &str) {
    let o = m
        .cmd("python3")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{program}\n"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{program}\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// Starts `program` in the mount; returns once it printed `done` (the call
/// it made has returned), with the process still running.
fn until_done(m: &Mounted, program: &str) -> std::process::Child {
    let mut child = m
        .cmd("python3")
        .arg("-c")
        .arg(format!(
            "{PRELUDE}\n{program}\nprint('done', flush=True)\ntime.sleep(60)\n"
        ))
        .current_dir(&m.mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "done", "the operation failed: {program}");
    child
}

#[test]
fn every_acknowledged_operation_survives_a_sigkill_right_after_it() {
    let m = Mounted::new("matrix", &[]);
    for (i, c) in CASES.iter().enumerate() {
        let dir = m.path(&format!("case{i}"));
        std::fs::create_dir(&dir).unwrap();
        py_in(&m, &dir, c.setup);
        // The setup is durable before the operation under test.
        py_in(&m, &dir, "os.fsync(os.open('.', os.O_RDONLY))");
        let mut child = until_done(&m, &format!("os.chdir('case{i}')\n{}", c.op));
        // No sleep: the daemon dies right after the call returned.
        m.signal(Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        let o = m.try_mount();
        assert!(
            o.status.success(),
            "{}: remount: {}",
            c.name,
            text(&o.stderr)
        );
        py_in(&m, &dir, c.check);
        // ... and in a snapshot: the newest one holds it.
        let snap = m.path(&format!(".snapshots/latest/case{i}"));
        py_in(&m, &snap, c.check);
    }
    m.verify();
}

/// Waits until `rx` has `n` lines; returns them.
fn take(rx: &crossbeam_channel::Receiver<String>, n: usize, acked: &mut Vec<String>) {
    while acked.len() < n {
        acked.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the loop stalled"),
        );
    }
}

#[test]
fn atomic_saves_killed_at_random_instants_lose_nothing_acknowledged() {
    let m = Mounted::new("saves", &[]);
    let mut rng = Rng(0x5eed_1234);
    let mut last = -1i64;
    for round in 0..30 {
        let program = format!(
            r#"{PRELUDE}
i = {start}
while True:
    fd = os.open("state.tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, ("%d" % i).encode() * 100)
    os.fsync(fd)
    os.close(fd)
    os.rename("state.tmp", "state.json")
    print(i, flush=True)
    i += 1
"#,
            start = last + 1
        );
        let (mut child, rx) = m.spawn_lines(&["python3", "-c", &program]);
        let mut acked = Vec::new();
        take(&rx, 1 + rng.below(8) as usize, &mut acked);
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        m.signal(Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        acked.extend(rx.try_iter());
        let newest: i64 = acked.last().unwrap().parse().unwrap();
        let o = m.try_mount();
        assert!(o.status.success(), "round {round}: {}", text(&o.stderr));
        let got = std::fs::read_to_string(m.path("state.json")).unwrap();
        let n: i64 = got[..got.len() / 100]
            .parse()
            .unwrap_or_else(|_| panic!("round {round}: state.json is torn: {got:?}"));
        assert_eq!(got, n.to_string().repeat(100), "round {round}: torn");
        assert!(
            n >= newest,
            "round {round}: save {newest} was acknowledged, state.json holds {n}"
        );
        last = n;
    }
    m.verify();
}

#[test]
fn git_commits_killed_at_random_instants_lose_nothing_acknowledged() {
    let m = Mounted::new("gitkill", &[]);
    m.sh("git init -q repo && cd repo && git commit -q --allow-empty -m root");
    let mut rng = Rng(0x9e37_79b9);
    let mut last = 0u64;
    for round in 0..20 {
        let script = format!(
            "cd repo && i={start}; while true; do {{ echo $i > f && git add f && git commit -q -m c$i; }} || {{ echo failed >&2; exit 1; }}; echo $i; i=$((i+1)); done",
            start = last + 1
        );
        let (mut child, rx) = m.spawn_lines(&["sh", "-c", &script]);
        let mut acked = Vec::new();
        take(&rx, 1 + rng.below(3) as usize, &mut acked);
        std::thread::sleep(Duration::from_micros(rng.below(50_000)));
        m.signal(Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        acked.extend(rx.try_iter());
        let newest: u64 = acked.last().unwrap().parse().unwrap();
        let o = m.try_mount();
        assert!(o.status.success(), "round {round}: {}", text(&o.stderr));
        // git itself was killed too: locks it held mid-command are stale,
        // as after any crash; a user removes them.
        m.sh("find repo/.git -name '*.lock' -delete");
        let fsck = m.sh_output("cd repo && git fsck --full --no-dangling");
        assert!(
            fsck.status.success(),
            "round {round}: git fsck: {}{}",
            text(&fsck.stdout),
            text(&fsck.stderr)
        );
        let head = m.sh("cd repo && git log -1 --format=%s");
        let n: u64 = head
            .trim()
            .trim_start_matches('c')
            .parse()
            .unwrap_or_else(|_| panic!("round {round}: HEAD is {head:?}"));
        assert!(
            n >= newest,
            "round {round}: commit c{newest} was acknowledged, HEAD is c{n}"
        );
        // The work tree agrees with HEAD for what was committed.
        m.sh("cd repo && git checkout -q -f HEAD -- f");
        last = n;
    }
    m.verify();
}

/// `durable_seq` as the index records it, and head (read with sqlite3,
/// which reads the WAL as the daemon left it). A seal writes its index
/// rows a moment later; listing `.snapshots/` first makes the daemon write
/// those of every snapshot sealed so far (what any reader of its index
/// gets), without a disk sync.
fn durable_and_head(m: &Mounted) -> (u64, u64) {
    if let Ok(d) = std::fs::read_dir(m.path(".snapshots")) {
        assert!(d.count() > 0);
    }
    let out = m.index_sql(
        "SELECT (SELECT value FROM meta WHERE key = 'durable_seq'), (SELECT MAX(seq) FROM snapshots);",
    );
    let (d, h) = out.trim().split_once('|').unwrap();
    (d.parse().unwrap(), h.parse().unwrap())
}

/// [`durable_and_head`] once the durable point has caught up with head,
/// or as it is after 10 s. A barrier releases its fsync waiters when the
/// disk sync returns and records the durable point (unsynced) a moment
/// after; that the data was on the disk at the reply is what
/// `tests/powercut.rs` checks.
fn durable_and_head_settled(m: &Mounted) -> (u64, u64) {
    let t0 = Instant::now();
    loop {
        let (d, h) = durable_and_head(m);
        if d >= h || t0.elapsed() > Duration::from_secs(10) {
            return (d, h);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_close_seals_without_a_sync_and_fsync_syncs() {
    // A long interval makes the window observable.
    let m = Mounted::new("seal", &["--sync-interval-ms", "60000"]);
    let (d0, h0) = durable_and_head(&m);
    assert_eq!(d0, h0, "durable after the mount started");
    std::fs::write(m.path("a"), b"one").unwrap();
    let (d1, h1) = durable_and_head(&m);
    assert_eq!(h1, h0 + 1, "the close sealed one snapshot");
    assert_eq!(d1, d0, "without a disk sync");
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("a"))
        .unwrap();
    std::io::Write::write_all(&mut &f, b"two").unwrap();
    f.sync_all().unwrap();
    let (d2, h2) = durable_and_head_settled(&m);
    assert_eq!((d2, h2), (h1 + 1, h1 + 1), "fsync made everything durable");
    drop(f);
    // Unmount makes the rest durable.
    std::fs::write(m.path("b"), b"three").unwrap();
    m.unmount();
    let (d3, h3) = durable_and_head(&m);
    assert_eq!(d3, h3);
}

#[test]
fn a_close_after_an_fsync_seals_only_what_was_written_since() {
    use std::io::Write;
    let m = Mounted::new("fsyncclose", &["--sync-interval-ms", "60000"]);
    let (_, h0) = durable_and_head(&m);
    let mut f = std::fs::File::create(m.path("f")).unwrap();
    f.write_all(b"one").unwrap();
    f.sync_all().unwrap();
    let (_, h1) = durable_and_head(&m);
    assert_eq!(h1, h0 + 1, "the fsync sealed one snapshot");
    // Written after the fsync: the close seals it (it does not take the
    // fsync for the handle's last seal).
    f.write_all(b"two").unwrap();
    drop(f);
    let (_, h2) = durable_and_head(&m);
    assert_eq!(h2, h1 + 1, "the close sealed what followed the fsync");
    assert_eq!(
        std::fs::read(m.path(".snapshots/latest/f")).unwrap(),
        b"onetwo"
    );
    // Nothing written since the fsync: the close seals nothing (no empty
    // snapshot), and a later close that writes seals again.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("f"))
        .unwrap();
    f.write_all(b"three").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(durable_and_head(&m).1, h2 + 1, "fsync, then a clean close");
    std::fs::write(m.path("f"), b"four").unwrap();
    assert_eq!(durable_and_head(&m).1, h2 + 2);
    assert_eq!(
        std::fs::read(m.path(".snapshots/latest/f")).unwrap(),
        b"four"
    );
}

#[test]
fn the_interval_makes_sealed_snapshots_durable_without_being_asked() {
    let m = Mounted::new("interval", &["--sync-interval-ms", "300"]);
    let made_durable = |what: &str| {
        let (_, h) = durable_and_head(&m);
        let t0 = Instant::now();
        while durable_and_head(&m).0 < h {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what}: never made durable"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(m.path("a"), b"one").unwrap();
    made_durable("a create");
    // Now nothing is due: a close that changes only file data (no name,
    // no quiet-period request) still gets its barrier within the interval,
    // whichever thread sealed it (a commit thread asleep with nothing due
    // must be told; session 16's leader-led rounds once forgot to).
    std::thread::sleep(Duration::from_millis(500));
    let (_, before) = durable_and_head(&m);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("a"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"two").unwrap();
    drop(f);
    assert_eq!(
        durable_and_head(&m).1,
        before + 1,
        "the close sealed one snapshot"
    );
    made_durable("a data-only close");
}

#[test]
fn durable_close_makes_every_close_durable() {
    for extra in [&["--durable-close"][..], &["-o", "sync_close"][..]] {
        let mut args = vec!["--sync-interval-ms", "60000"];
        args.extend_from_slice(extra);
        let m = Mounted::new("dclose", &args);
        for i in 0..3 {
            std::fs::write(m.path(&format!("f{i}")), b"data").unwrap();
            let (d, h) = durable_and_head_settled(&m);
            assert_eq!(
                d, h,
                "{extra:?}: close {i} returned before its snapshot was durable"
            );
        }
    }
}

#[test]
fn a_mount_right_after_an_unmount_waits_for_the_last_commit() {
    let m = Mounted::new("restart", &[]);
    for i in 0..5 {
        // Pending metadata changes make the old daemon's last commit take
        // a moment after the unmount returns.
        m.sh(&format!(
            "mkdir d{i} && touch d{i}/a d{i}/b && mv d{i}/a d{i}/c"
        ));
        let o = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&m.mnt)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = m.try_mount();
        assert!(
            o.status.success(),
            "round {i}: a mount right after the unmount failed: {}",
            text(&o.stderr)
        );
        assert!(m.path(&format!("d{i}/c")).exists());
    }
    // A live holder (a mount that still serves) is still refused at once.
    let second = m.dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let t0 = Instant::now();
    let o = m
        .cmd(MOUNT)
        .arg(&second)
        .arg("--agent")
        .arg(&m.agent)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(t0.elapsed() < Duration::from_secs(5), "refused late");
}

/// docs/SEMANTICS.md's durability contract lists exactly the operations
/// the SIGKILL matrix checks.
#[test]
fn the_documented_durability_contract_is_the_checked_one() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SEMANTICS.md")).unwrap();
    let table = doc
        .split("### Durability contract (checked)")
        .nth(1)
        .expect("SEMANTICS.md has the durability contract")
        .split("\n\n")
        .find(|p| p.trim_start().starts_with("| id"))
        .expect("a table");
    let rows: Vec<(String, String)> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| id ") && !l.starts_with("|---"))
        .map(|l| {
            let c: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (c[0].to_owned(), c[2].to_owned())
        })
        .collect();
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let cases: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    assert_eq!(
        ids, cases,
        "every checked case has a row, and every row a case"
    );
    for (id, crash) in &rows {
        assert_eq!(crash, "kept", "row {id}: the matrix checks that it is kept");
    }
}
