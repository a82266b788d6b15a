//! Power cuts (DESIGN.md, invariants 3 and 6): SOVSEAL_HOME lives on a
//! pass-through file system that holds every unsynced write in memory
//! (`support::cutfs`). Each round runs a workload in the mount, kills the
//! daemon at a random instant, then cuts the power: of every file's
//! unsynced writes a random prefix reaches the disk, the rest is lost, and
//! so are the new names no directory sync covered (a prefix of them stays).
//! After each cut `sovseal verify` must pass before any mount (a reader
//! recovers an agent no writer holds), the agent must mount without error
//! (no false rollback), `sovseal verify` must pass again, everything an fsync acknowledged must be
//! there byte for byte, and the remote (outside the cut file system, but
//! for one test) must never be ahead of the local chain. Some rounds cut the power while the
//! daemon still runs, over a disk whose syncs are slow
//! (`an_fsync_waits_for_a_slow_disk_sync`).

mod support;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;
use support::cutfs::CutFs;
use support::mount::{Mounted, Rng, text};

/// The cut file system, its session, and an agent whose home is on it.
struct Rig {
    fs: Arc<CutFs>,
    remote: String,
    m: Mounted,
    _session: fuser::BackgroundSession,
    _lower: tempfile::TempDir,
}

impl Drop for Rig {
    /// Stops the daemon, then detaches the cut file system, before the
    /// fields go (the daemon, then the session, then the directories). The
    /// daemon's pid is in its lock file on the cut file system, so it is
    /// read first; a daemon left running would write its heartbeat into
    /// the remote while the directory is removed (a temp dir stayed behind
    /// after each run). A process still holding a file on the cut file
    /// system (a workload's child) would make the session's own unmount
    /// fail with EBUSY and leave a dead mount behind the test.
    fn drop(&mut self) {
        self.m.stop_daemon();
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(self._lower.path().join("cut"))
            .output();
    }
}

/// A cut file system over a fresh directory: the temporary directory that
/// holds its disk and its mountpoint, the mountpoint, the file system, and
/// its session.
fn cut_disk() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<CutFs>,
    fuser::BackgroundSession,
) {
    let lower = tempfile::tempdir().unwrap();
    let (disk, at) = (lower.path().join("disk"), lower.path().join("cut"));
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&at).unwrap();
    let fs = CutFs::new(&disk);
    let session = fs.mount(&at);
    (lower, at, fs, session)
}

impl Rig {
    /// An agent whose remote is another machine: not on the cut file
    /// system.
    fn new(agent: &str, extra: &[&str]) -> Rig {
        Rig::with_remote(agent, extra, false)
    }

    /// With `near`, the remote is a directory on the cut file system, as
    /// the default remote (`$SOVSEAL_HOME/remote/`) is on the data dir's
    /// disk: a cut takes what it was given and did not sync too.
    fn with_remote(agent: &str, extra: &[&str], near: bool) -> Rig {
        let (lower, at, fs, session) = cut_disk();
        let dir = match near {
            true => at.join("remote"),
            false => lower.path().join("remote"),
        };
        let remote = format!("file://{}", dir.display());
        std::fs::create_dir(&dir).unwrap();
        let mut args = vec!["--remote", remote.as_str()];
        args.extend_from_slice(extra);
        let m = Mounted::unmounted(agent, &args, Vec::new(), Some(at.join("home")));
        // The key was made long ago: it is on the disk.
        fs.sync_all();
        m.mount();
        Rig {
            fs,
            remote,
            m,
            _session: session,
            _lower: lower,
        }
    }

    /// Lets the workload acknowledge a few steps, kills the daemon at a
    /// random instant, cuts the power, and mounts again. Returns the last
    /// step acknowledged before the cut.
    fn cut_during(&self, rng: &mut Rng, args: &[&str], round: usize) -> u64 {
        self.cut_during_with(rng, args, round, false)
    }

    /// [`Rig::cut_during`]; with `live`, the power goes while the daemon
    /// still runs (a sync it is waiting for then fails), and the daemon is
    /// killed after.
    fn cut_during_with(&self, rng: &mut Rng, args: &[&str], round: usize, live: bool) -> u64 {
        let (mut child, rx) = self.m.spawn_lines(args);
        let want = 1 + rng.below(5) as usize;
        let mut acked = Vec::new();
        while acked.len() < want {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => acked.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "round {round}: the workload stopped after {} acks (its stderr is above)",
                        acked.len()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(40_000)));
        let cut = if live {
            // Its lock file may lose its content in the cut.
            let pid = self.m.daemon_pid().expect("daemon pid");
            let cut = self.fs.cut_dead(|n| rng.below(n as u64 + 1) as usize);
            self.m.signal_pid(pid, Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            self.fs.revive();
            cut
        } else {
            self.m.signal(Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            self.fs.cut(|n| rng.below(n as u64 + 1) as usize)
        };
        acked.extend(rx.try_iter());
        eprintln!(
            "round {round}: cut after {} acks; {} writes kept, {} lost; {} names lost",
            acked.len(),
            cut.writes_kept,
            cut.writes_lost,
            cut.names_lost
        );
        // Read-only first, before any mount recovered the agent: no false
        // rollback, nothing torn.
        self.m.verify();
        let o = self.m.try_mount();
        assert!(
            o.status.success(),
            "round {round}: the agent does not mount after a power cut: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        self.m.verify();
        let s = self.m.status();
        assert!(s["fork_at"].is_null(), "round {round}: {s}");
        assert!(
            s["replicated_seq"].as_u64().unwrap() <= s["head_seq"].as_u64().unwrap(),
            "round {round}: the remote is ahead of the local chain: {s}"
        );
        acked.last().unwrap().parse().unwrap()
    }
}

const CREATE: &str = r#"
import os, sys
os.makedirs("c", exist_ok=True)
i = int(sys.argv[1])
while True:
    fd = os.open("c/%06d" % i, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, ("%06d" % i).encode() * 300)
    os.fsync(fd)
    os.close(fd)
    print(i, flush=True)
    i += 1
"#;

const SAVE: &str = r#"
import os, sys
i = int(sys.argv[1])
d = os.open(".", os.O_RDONLY)
while True:
    fd = os.open("state.tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, ("%d," % i).encode() * 200)
    os.fsync(fd)
    os.close(fd)
    os.rename("state.tmp", "state.json")
    os.fsync(d)
    print(i, flush=True)
    i += 1
"#;

const SQLITE: &str = r#"
import os, sqlite3, sys
i = int(sys.argv[1])
db = sqlite3.connect("app.db", isolation_level=None)
db.execute("PRAGMA journal_mode=DELETE")
# EXTRA: the journal's unlink (the commit point in DELETE mode) is followed
# by a directory sync. Under FULL the last transaction may roll back after a
# power cut, here as on ext4.
db.execute("PRAGMA synchronous=EXTRA")
db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v TEXT)")
# SQLite's own directory sync is skipped without an error when the
# directory cannot be opened (as after the daemon is killed): a commit
# would be reported that no barrier covered. A directory descriptor opened
# once, synced after each commit, makes every printed row one the file
# system acknowledged.
d = os.open(".", os.O_RDONLY)
while True:
    db.execute("BEGIN")
    db.execute("INSERT INTO t VALUES (?, ?)", (i, "v%d" % i * 50))
    db.execute("COMMIT")
    os.fsync(d)
    print(i, flush=True)
    i += 1
"#;

const CLOSE: &str = r#"
import os, sys
os.makedirs("d", exist_ok=True)
i = int(sys.argv[1])
while True:
    with open("d/%06d" % i, "wb") as f:
        f.write(("%06d" % i).encode() * 300)
    print(i, flush=True)
    i += 1
"#;

/// Every file `dir/000001` to `dir/{upto}` the CREATE or CLOSE workload
/// acknowledged is there, whole.
fn assert_numbered(m: &Mounted, dir: &str, upto: u64, round: usize) {
    for i in 1..=upto {
        let got = std::fs::read(m.path(&format!("{dir}/{i:06}")))
            .unwrap_or_else(|e| panic!("round {round}: {dir}/{i:06} lost: {e}"));
        assert_eq!(
            got,
            format!("{i:06}").repeat(300).into_bytes(),
            "round {round}"
        );
    }
}

/// `state.json` of the SAVE workload is whole and at or after save
/// `acked`; returns the save it holds.
fn assert_saved(m: &Mounted, acked: u64, round: usize) -> u64 {
    let got = std::fs::read_to_string(m.path("state.json")).unwrap();
    let n: u64 = got.split(',').next().unwrap().parse().unwrap();
    assert_eq!(got, format!("{n},").repeat(200), "round {round}: torn save");
    assert!(
        n >= acked,
        "round {round}: save {acked} was acknowledged, {n} is there"
    );
    n
}

/// 52 cuts over create, atomic save, sqlite3 and git. Planted: the data
/// dir's directories not synced into their parents when made (before
/// session 48, `fsutil::Dir::create_root` and `ensure_sub`): the first cut
/// loses the whole agent ("has no data here"), as it does in the durable
/// close test below.
#[test]
fn power_cuts_lose_nothing_an_fsync_acknowledged() {
    let rig = Rig::new("cut", &[]);
    let mut rng = Rng(0xc0ff_ee11);
    let m = &rig.m;
    m.sh("git init -q repo && cd repo && git commit -q --allow-empty -m c0 && python3 -c \"import os; os.fsync(os.open('.git', os.O_RDONLY))\"");
    let (mut created, mut saved, mut rows, mut commits) = (0u64, 0u64, 0u64, 0u64);
    let mut round = 0;
    for kind in (0..52).map(|i| i % 4) {
        round += 1;
        match kind {
            0 => {
                let start = (created + 1).to_string();
                created = rig.cut_during(&mut rng, &["python3", "-c", CREATE, &start], round);
                assert_numbered(m, "c", created, round);
            }
            1 => {
                let start = (saved + 1).to_string();
                let acked = rig.cut_during(&mut rng, &["python3", "-c", SAVE, &start], round);
                saved = assert_saved(m, acked, round);
            }
            2 => {
                let start = (rows + 1).to_string();
                let acked = rig.cut_during(&mut rng, &["python3", "-c", SQLITE, &start], round);
                let out = m.py(
                    "import sqlite3\ndb = sqlite3.connect('app.db')\nprint(db.execute('PRAGMA integrity_check').fetchone()[0], db.execute('SELECT COUNT(*), MAX(i) FROM t').fetchone())",
                );
                assert!(out.starts_with("ok "), "round {round}: {out}");
                let (count, max) = out["ok (".len()..out.trim_end().len() - 1]
                    .split_once(", ")
                    .unwrap();
                let (count, max): (u64, u64) = (count.parse().unwrap(), max.parse().unwrap());
                assert!(
                    max >= acked,
                    "round {round}: row {acked} was committed, max is {max}"
                );
                assert_eq!(count, max, "round {round}: rows missing");
                rows = max;
            }
            _ => {
                let script = format!(
                    "cd repo && i={}; while true; do {{ echo $i > f && git add f && git commit -q -m c$i && python3 -c \"import os; os.fsync(os.open('.git', os.O_RDONLY))\"; }} || {{ echo failed >&2; exit 1; }}; echo $i; i=$((i+1)); done",
                    commits + 1
                );
                let acked = rig.cut_during(&mut rng, &["sh", "-c", &script], round);
                // git was killed too: locks it held mid-command are stale,
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
                let n: u64 = head.trim().trim_start_matches('c').parse().unwrap();
                assert!(
                    n >= acked,
                    "round {round}: commit c{acked} was acknowledged, HEAD is c{n}"
                );
                m.sh("cd repo && git checkout -q -f HEAD -- f");
                commits = n;
            }
        }
    }
    assert!(rig.fs.syncs() > 0);
    // The remote holds a prefix of the local chain: it drains and verifies.
    m.wait_replicated();
    let o = m.sovseal(&["verify", "--agent", &m.agent, "--remote", &rig.remote]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

/// A `file://` remote on the data dir's disk (the default remote is one)
/// loses to a power cut what it was given and did not sync, while the
/// index can keep the marker that says it went up. Its puts return once
/// synced, as a cloud store's do: after every cut the agent mounts with no
/// false fork (a torn envelope under its name read as another writer's),
/// every envelope the replicator's marker counts is on the remote,
/// the agent replicates what is pending, and the remote verifies whole. The harness
/// loses new names no directory sync covered, so this checks the
/// directory syncs too (object_store's after each put, the one after an
/// upload batch's envelopes, this crate's after a delete). Planted: the
/// remote opened without syncs (as before session 44) fails at round 1, a
/// torn checkpoint; no sync after a batch's envelopes fails at round 2 or
/// 4 (envelopes the marker counted lost).
#[test]
fn a_remote_on_the_same_disk_keeps_what_went_up_through_power_cuts() {
    let rig = Rig::with_remote("near", &[], true);
    let mut rng = Rng(0x0ea5_d15c);
    let m = &rig.m;
    let (mut created, mut saved) = (0u64, 0u64);
    for round in 1..=8 {
        if round % 2 == 1 {
            let start = (created + 1).to_string();
            created = rig.cut_during(&mut rng, &["python3", "-c", CREATE, &start], round);
            assert_numbered(m, "c", created, round);
        } else {
            let start = (saved + 1).to_string();
            let acked = rig.cut_during(&mut rng, &["python3", "-c", SAVE, &start], round);
            saved = assert_saved(m, acked, round);
        }
        assert_remote_holds_replicated(&rig, round);
        m.wait_replicated();
        let o = m.sovseal(&["verify", "--agent", &m.agent, "--remote", &rig.remote]);
        assert!(
            o.status.success(),
            "round {round}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

/// Every envelope up to the `replicated_seq` the index records is on the
/// near remote (`Rig::with_remote`): the replicator's marker never counts
/// a snapshot the remote lost.
fn assert_remote_holds_replicated(rig: &Rig, round: usize) {
    let replicated = rig.m.status()["replicated_seq"].as_u64().unwrap();
    let root = rig._lower.path().join("cut/remote/sovseal-v1");
    let mut held = std::collections::BTreeSet::new();
    let agents = std::fs::read_dir(&root).into_iter().flatten();
    for agent in agents {
        let Ok(envelopes) = std::fs::read_dir(agent.unwrap().path().join("envelopes")) else {
            continue;
        };
        for e in envelopes {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(seq) = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok())
            {
                held.insert(seq);
            }
        }
    }
    let missing: Vec<u64> = (1..=replicated).filter(|s| !held.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "round {round}: the marker counts snapshots up to {replicated}, the remote lost envelopes {missing:?}"
    );
}

#[test]
fn with_durable_close_a_cut_right_after_close_loses_nothing() {
    let rig = Rig::new("dcut", &["--durable-close"]);
    let mut rng = Rng(0xd00d_f00d);
    let mut closed = 0u64;
    for round in 1..=12 {
        let start = (closed + 1).to_string();
        closed = rig.cut_during(&mut rng, &["python3", "-c", CLOSE, &start], round);
        assert_numbered(&rig.m, "d", closed, round);
    }
}

/// An fsync returns only after the disk sync below it has returned, even
/// when that sync is slow: each sync of the cut file system waits 5 ms
/// before it takes the writes it covers, and the power goes while the
/// daemon runs (a kill first would wait for the sync it is in). Planted
/// once (the committer releasing fsync waiters just before its disk sync
/// instead of just after): fails at round 4, an acknowledged save lost.
#[test]
fn an_fsync_waits_for_a_slow_disk_sync() {
    let rig = Rig::new("slow", &[]);
    rig.fs.slow_syncs(Duration::from_millis(5));
    let mut rng = Rng(0x5105_5eed);
    let (mut created, mut saved) = (0u64, 0u64);
    for round in 1..=8 {
        if round % 2 == 1 {
            let start = (created + 1).to_string();
            let args = ["python3", "-c", CREATE, &start];
            created = rig.cut_during_with(&mut rng, &args, round, true);
            assert_numbered(&rig.m, "c", created, round);
        } else {
            let start = (saved + 1).to_string();
            let args = ["python3", "-c", SAVE, &start];
            let acked = rig.cut_during_with(&mut rng, &args, round, true);
            saved = assert_saved(&rig.m, acked, round);
        }
    }
}

/// Two syncs of one pack store at once, over a disk whose syncs take
/// 200 ms: each returns only once the disk sync of what was appended
/// before it has returned, also when the other sync had taken that work.
/// Planted once (the store's syncs not one at a time): the second sync
/// returned at once, with no disk sync done.
#[test]
fn concurrent_store_syncs_each_wait_for_the_disk() {
    use sovseal::repo::store::Store;
    use sovseal::seal::tree::{ObjectId, ObjectKind};
    let (_lower, at, fs, _session) = cut_disk();
    let packs = sovseal::fsutil::Dir::create_root(&at.join("packs")).unwrap();
    let store = Arc::new(Store::open_writer(packs, &Default::default()).unwrap());
    store
        .append(&ObjectId([7; 32]), ObjectKind::Chunk, b"sealed bytes")
        .unwrap();
    fs.slow_syncs(Duration::from_millis(200));
    let before = fs.syncs();
    let syncers: Vec<_> = (0..2)
        .map(|_| {
            let (store, fs) = (store.clone(), fs.clone());
            std::thread::spawn(move || {
                store.sync().unwrap();
                fs.syncs() - before
            })
        })
        .collect();
    for t in syncers {
        let done = t.join().unwrap();
        assert!(
            done >= 1,
            "a sync returned before any disk sync was done ({done})"
        );
    }
    drop(store);
}

/// The harness can fail: without --durable-close, closes that were never
/// synced are lost in a cut that keeps no unsynced write.
#[test]
fn the_harness_loses_what_no_sync_covered() {
    let rig = Rig::new("lose", &["--sync-interval-ms", "60000"]);
    std::fs::write(rig.m.path("unsynced"), b"gone after the cut").unwrap();
    rig.m.signal(Signal::SIGKILL);
    let lost = rig.fs.cut(|_| 0).writes_lost;
    assert!(lost > 0, "the close left unsynced writes");
    let o = rig.m.try_mount();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !rig.m.path("unsynced").exists(),
        "a close that no sync covered survived a cut that kept nothing"
    );
    rig.m.verify();
}

/// The harness can fail on names: a new name that no sync of its
/// directory covered is gone after a cut (with the file's synced data),
/// one that a directory sync covered stays, and a new name renamed stays
/// new under its new name.
#[test]
fn the_harness_loses_names_no_directory_sync_covered() {
    use std::io::Write;
    let (_lower, at, fs, session) = cut_disk();
    let synced = |path: &std::path::Path| std::fs::File::open(path).unwrap().sync_all().unwrap();
    let write = |name: &str| {
        let mut f = std::fs::File::create(at.join("d").join(name)).unwrap();
        f.write_all(name.as_bytes()).unwrap();
        f.sync_all().unwrap();
    };
    std::fs::create_dir(at.join("d")).unwrap();
    synced(&at);
    write("kept");
    synced(&at.join("d"));
    write("lost");
    std::fs::hard_link(at.join("d/kept"), at.join("d/link")).unwrap();
    write("moved");
    std::fs::rename(at.join("d/moved"), at.join("d/renamed")).unwrap();
    assert_eq!(fs.unsynced_names(), 3, "lost, link, renamed");
    let cut = fs.cut(|_| 0);
    assert_eq!(cut.writes_lost, 0, "every file was synced");
    assert_eq!(cut.names_lost, 3);
    assert_eq!(std::fs::read(at.join("d/kept")).unwrap(), b"kept");
    for gone in ["lost", "link", "moved", "renamed"] {
        assert!(!at.join("d").join(gone).exists(), "{gone} survived the cut");
    }
    drop(session);
}

/// A file remote's envelope names through a cut: one an upload batch put
/// without syncing its name is lost, unless its directory is synced after
/// (`Remote::sync_envelopes`); a put that finds it there (a snapshot going
/// up again alone after its batch failed) syncs it. Planted (no sync when
/// the put finds its own envelope there): the envelope is lost.
#[test]
fn an_envelope_found_there_has_its_name_synced() {
    use sovseal::repo::remote::{Created, Remote, runtime};
    use sovseal::seal::keys::AgentId;
    let (_lower, at, fs, session) = cut_disk();
    let remote = Remote::open(&format!("file://{}", at.join("remote").display())).unwrap();
    let agent = AgentId([9; 32]);
    let rt = runtime().unwrap();
    // The envelopes' directory is made (and synced) by the first put.
    let made = rt.block_on(remote.put_envelope(&agent, 1, b"{\"s\":1}".to_vec()));
    assert_eq!(made.unwrap(), Created::New);
    let unsynced = |seq: u64| {
        let json = format!("{{\"s\":{seq}}}").into_bytes();
        let put = rt.block_on(remote.put_envelope_unsynced(&agent, seq, json));
        assert_eq!(put.unwrap(), Created::New);
    };
    let listed = || rt.block_on(remote.list_envelopes(&agent, 0, 100)).unwrap();
    unsynced(2);
    fs.cut(|_| 0);
    assert_eq!(listed(), vec![1], "a name no sync covered survived");
    unsynced(3);
    rt.block_on(remote.sync_envelopes(&agent)).unwrap();
    fs.cut(|_| 0);
    assert_eq!(listed(), vec![1, 3], "the directory's sync did not keep it");
    unsynced(2);
    let again = rt.block_on(remote.put_envelope(&agent, 2, b"{\"s\":2}".to_vec()));
    assert_eq!(again.unwrap(), Created::AlreadyThere);
    fs.cut(|_| 0);
    assert_eq!(
        listed(),
        vec![1, 2, 3],
        "the put that found it did not sync it"
    );
    drop(session);
}

/// Group commit: fsyncs that arrive while a round (a seal and its disk
/// sync) runs share the next round. Eight threads each fsync their own file
/// 25 times at once: fewer disk syncs than fsyncs (measured: 74-75), and
/// every fsynced write is there. Rounds that served one fsync each, each
/// with its disk sync, cost 204-205 (planted once).
#[test]
fn concurrent_fsyncs_share_disk_syncs() {
    let rig = Rig::new("group", &["--sync-interval-ms", "60000"]);
    let before = rig.fs.syncs();
    rig.m.py(
        "import os, threading\nos.makedirs('g')\ndef w(t):\n    fd = os.open('g/%d' % t, os.O_CREAT | os.O_WRONLY, 0o644)\n    for i in range(25):\n        os.write(fd, b'%d.%d\\n' % (t, i))\n        os.fsync(fd)\n    os.close(fd)\nts = [threading.Thread(target=w, args=(t,)) for t in range(8)]\nfor t in ts: t.start()\nfor t in ts: t.join()\n",
    );
    let syncs = rig.fs.syncs() - before;
    eprintln!("200 concurrent fsyncs cost {syncs} disk syncs");
    assert!(syncs < 180, "200 concurrent fsyncs cost {syncs} disk syncs");
    for t in 0..8 {
        let want: String = (0..25).map(|i| format!("{t}.{i}\n")).collect();
        assert_eq!(
            std::fs::read_to_string(rig.m.path(&format!("g/{t}"))).unwrap(),
            want
        );
    }
}

/// One disk sync per durable commit (the packs are the commit record; the
/// index does not sync): 40 files each written, fsynced and closed in turn
/// cost 40 syncs of the data dir's files, not 80 (packs, then the index's
/// WAL), with a small allowance for SQLite's own checkpoints.
#[test]
fn each_fsync_costs_one_disk_sync() {
    let rig = Rig::new("onesync", &["--sync-interval-ms", "60000"]);
    // The index's syncs come from its checkpoints (the WAL, then the
    // database), whose number depends on the machine's speed: counted apart.
    let index = |n: &str| n.starts_with("index.db");
    let wal = |n: &str| n == "index.db-wal";
    let db = |n: &str| n == "index.db";
    let (before, wal0, db0) = (
        rig.fs.syncs_of(|n| !index(n)),
        rig.fs.syncs_of(wal),
        rig.fs.syncs_of(db),
    );
    rig.m.py(
        "import os\nos.makedirs('s')\nfor i in range(40):\n    fd = os.open('s/%d' % i, os.O_CREAT | os.O_WRONLY, 0o644)\n    os.write(fd, b'x' * 1000)\n    os.fsync(fd)\n    os.close(fd)\n",
    );
    let syncs = rig.fs.syncs_of(|n| !index(n)) - before;
    let (wals, dbs) = (rig.fs.syncs_of(wal) - wal0, rig.fs.syncs_of(db) - db0);
    eprintln!("40 fsyncs cost {syncs} disk syncs, the index's checkpoints {wals} + {dbs}");
    assert!(
        (40..=43).contains(&syncs),
        "40 fsyncs cost {syncs} disk syncs"
    );
    // No sync of the WAL of its own: each one is a checkpoint's, which
    // syncs the database too.
    assert!(
        wals <= dbs + 5,
        "the WAL synced {wals} times, the database {dbs}"
    );
}
