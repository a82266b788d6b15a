//! Fail closed (issue: an emptied index, a fork, local data without an
//! index): an agent never starts over on top of evidence that it had
//! history, and a longer fork never replaces the history this machine saw.

mod support;
use support::mount::{Mounted, fails, ok, text};

/// Regression (fails on the main before this change: the mount succeeded
/// with an empty tree and overwrote the seen-head record with seq 1).
#[test]
fn an_emptied_index_is_refused_until_reset() {
    let m = Mounted::new("emptied", &[]);
    m.sh("echo one > a && echo two > b");
    m.unmount();
    let seen = m.home.join("seen").join(&m.agent);
    let seen_before = std::fs::read(&seen).unwrap();
    m.index_sql("DELETE FROM snapshots");
    let o = m.try_mount();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("had history") && err.contains("seen-head record"),
        "{err}"
    );
    assert!(
        err.contains("sovseal reset"),
        "says how to start over: {err}"
    );
    assert!(!m.is_mounted());
    assert_eq!(
        std::fs::read(&seen).unwrap(),
        seen_before,
        "the record is untouched"
    );
    // Prune refuses too: nothing would be live.
    fails(
        &m.sovseal(&["prune", "--agent", &m.agent]),
        3,
        "had history",
    );
    // Starting over is explicit, and keeps the old data aside.
    fails(
        &m.sovseal(&["reset", "--agent", &m.agent]),
        2,
        "--discard-local-history",
    );
    let out = ok(&m.sovseal(&["reset", "--agent", &m.agent, "--discard-local-history"]));
    assert!(out.contains("discarded"), "{out}");
    let kept = std::fs::read_dir(m.home.join("discarded")).unwrap().count();
    assert_eq!(kept, 1);
    // With the local data aside, the next mount restores from the remote.
    m.mount();
    assert_eq!(std::fs::read_to_string(m.path("a")).unwrap(), "one\n");
    m.unmount();
    // With no remote copy either, it starts over.
    ok(&m.sovseal(&["reset", "--agent", &m.agent, "--discard-local-history"]));
    let empty = m.dir.path().join("empty-remote");
    std::fs::create_dir(&empty).unwrap();
    let o = m
        .cmd(support::mount::MOUNT)
        .arg(&m.mnt)
        .arg("--remote")
        .arg(format!("file://{}", empty.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!m.path("a").exists(), "started over");
    assert_eq!(m.head(), 1);
}

/// Regression: objects and replication markers in an index with no
/// snapshots are evidence too, even without the seen-head record.
#[test]
fn index_traces_alone_are_evidence() {
    let m = Mounted::new("traces", &[]);
    m.sh("echo one > a");
    m.unmount();
    m.index_sql("DELETE FROM snapshots");
    std::fs::remove_file(m.home.join("seen").join(&m.agent)).unwrap();
    let o = m.try_mount();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("sealed objects"),
        "{}",
        text(&o.stderr)
    );
}

/// Regression: a data dir whose index.db is gone, with packs left and the
/// remote holding the agent, is not restored over; moved aside, it is.
#[test]
fn local_data_without_an_index_is_not_restored_over() {
    let m = Mounted::new("noindex", &[]);
    m.sh("echo kept > a");
    m.wait_replicated();
    m.unmount();
    let data = m.home.join("agents").join(&m.agent);
    std::fs::remove_file(data.join("index.db")).unwrap();
    let _ = std::fs::remove_file(data.join("index.db-wal"));
    let _ = std::fs::remove_file(data.join("index.db-shm"));
    let o = m.try_mount();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("pack data") && err.contains("remote"), "{err}");
    // Moved aside by hand, the agent is restored from the remote.
    std::fs::rename(&data, m.dir.path().join("aside")).unwrap();
    m.mount();
    assert_eq!(std::fs::read_to_string(m.path("a")).unwrap(), "kept\n");
}

/// Regression (fails on the main before this change: the longer history
/// was accepted): the seen-head record pins (seq, hash), so a longer fork
/// put in place of the data dir is refused, naming both hashes.
#[test]
fn a_longer_fork_is_refused() {
    let m = Mounted::new("fork", &[]);
    m.sh("echo mine > a");
    m.unmount();
    let mine = m.head();
    // Another machine with the same key writes a longer history.
    let other = m.second_home("other");
    let mnt2 = m.dir.path().join("fork2");
    std::fs::create_dir(&mnt2).unwrap();
    let mount2 = |args: &[&str]| {
        m.cmd(support::mount::MOUNT)
            .env("SOVSEAL_HOME", &other)
            .args(args)
            .output()
            .unwrap()
    };
    let o = mount2(&[mnt2.to_str().unwrap(), "--agent", "fork"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for i in 0..4 {
        std::fs::write(mnt2.join(format!("theirs{i}")), b"x").unwrap();
    }
    let o = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt2)
        .output()
        .unwrap();
    assert!(o.status.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let data = m.home.join("agents").join(&m.agent);
    std::fs::remove_dir_all(&data).unwrap();
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(other.join("agents").join("fork"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = m.try_mount();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("recorded snapshot {mine} as")) && err.contains("forked"),
        "{err}"
    );
}

/// Regression (fails on the main before this change: restore recreated
/// set-id bits): `sovseal restore` strips setuid/setgid unless asked, as
/// root, with --preserve-setuid.
#[test]
fn restore_strips_setuid_unless_asked() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mounted::new("suid", &[]);
    m.sh("echo '#!/bin/sh' > tool && chmod 6755 tool && sync");
    m.unmount();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let plain = m.dir.path().join("plain");
    ok(&m.sovseal(&[
        "restore",
        "--agent",
        &m.agent,
        "/tool",
        plain.to_str().unwrap(),
    ]));
    assert_eq!(mode(&plain), 0o755);
    let kept = m.dir.path().join("kept");
    ok(&m.sovseal(&[
        "restore",
        "--agent",
        &m.agent,
        "--preserve-setuid",
        "/tool",
        kept.to_str().unwrap(),
    ]));
    assert_eq!(mode(&kept), 0o6755);
}

/// Regression (fails on the main before this change, when the race is won:
/// restore opened paths with File::create, which follows symlinks): a
/// symlink planted in DEST while a restore writes there is never followed.
#[test]
fn a_symlink_planted_in_dest_during_restore_is_not_followed() {
    let m = Mounted::new("plant", &[]);
    m.py("import os\nos.mkdir('t')\nfor i in range(1500):\n    open('t/f%04d' % i, 'w').write('x' * 100)");
    m.unmount();
    let victim = m.dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let dest = m.dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (dest, victim, stop) = (dest.clone(), victim.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in (0..1500).rev().step_by(7) {
                    let _ = std::os::unix::fs::symlink(&victim, dest.join(format!("t/f{i:04}")));
                }
            }
        })
    };
    let o = m.sovseal(&["restore", "--agent", &m.agent, "/", dest.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "restore wrote through a planted symlink (exit {:?}: {})",
        o.status.code(),
        text(&o.stderr)
    );
}

/// A symlink planted at `path` pointing at a victim file outside the home;
/// returns the victim and its bytes.
fn plant_symlink(
    m: &Mounted,
    path: &std::path::Path,
    bytes: &[u8],
) -> (std::path::PathBuf, Vec<u8>) {
    let victim = m.dir.path().join("victim");
    std::fs::write(&victim, bytes).unwrap();
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(&victim, path).unwrap();
    (victim, bytes.to_vec())
}

/// Regression (fails on the main before this change: the mount truncated
/// the lock's target and wrote its pid there): a symlinked lock file is a
/// refusal and its target is untouched.
#[test]
fn a_symlinked_lock_is_refused() {
    let m = Mounted::new("lock", &[]);
    m.sh("echo one > a");
    m.unmount();
    let data = m.home.join("agents").join(&m.agent);
    let (victim, before) = plant_symlink(&m, &data.join("lock"), b"precious bytes\n");
    let o = m.try_mount();
    fails(&o, 3, "symlink");
    assert!(!m.is_mounted());
    assert_eq!(std::fs::read(&victim).unwrap(), before);
    // Offline writers take the same lock.
    fails(&m.sovseal(&["prune", "--agent", &m.agent]), 3, "symlink");
    assert_eq!(std::fs::read(&victim).unwrap(), before);
}

/// Regression (fails on the main before this change: the writer opened the
/// pack through the link and cut the target back to the committed length):
/// a symlinked pack is a refusal.
#[test]
fn a_symlinked_pack_is_refused() {
    let m = Mounted::new("pack", &[]);
    m.sh("echo one > a");
    m.unmount();
    let pack = m
        .home
        .join("agents")
        .join(&m.agent)
        .join("packs/00000001.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes.extend_from_slice(b"-- the victim's own tail, longer than the committed pack --");
    let (victim, before) = plant_symlink(&m, &pack, &bytes);
    fails(&m.try_mount(), 3, "symlink");
    assert!(!m.is_mounted());
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        before,
        "the target was cut"
    );
}

/// A directory of the (default, file) remote replaced by a symlink: the
/// remote is written by `object_store`'s local backend, which would follow
/// it; the mount and every command that opens the remote refuse it.
#[test]
fn a_symlink_inside_a_file_remote_is_refused() {
    let m = Mounted::new("remote-link", &[]);
    m.sh("echo one > a");
    m.wait_replicated();
    m.unmount();
    let packs = support::home::files_under(&m.home.join("remote"))
        .into_iter()
        .find(|p| p.parent().is_some_and(|d| d.ends_with("packs")))
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let victim = m.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::rename(&packs, packs.with_file_name("packs.real")).unwrap();
    std::os::unix::fs::symlink(&victim, &packs).unwrap();
    fails(&m.try_mount(), 3, "symlink inside a file remote");
    assert!(!m.is_mounted());
    fails(
        &m.sovseal(&["verify", "--agent", &m.agent, "--remote"]),
        3,
        "symlink inside a file remote",
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);

    // Upload batches sit one level deeper, a directory per range of 256:
    // a range directory linked elsewhere is refused too.
    std::fs::remove_file(&packs).unwrap();
    std::fs::rename(packs.with_file_name("packs.real"), &packs).unwrap();
    let batches = packs.with_file_name("batches");
    std::fs::create_dir_all(&batches).unwrap();
    std::os::unix::fs::symlink(&victim, batches.join(format!("{:020}", 1))).unwrap();
    fails(&m.try_mount(), 3, "symlink inside a file remote");
    assert!(!m.is_mounted());
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
}

/// Regression (fails on the main before this change: records were written
/// through the symlinked directory, outside the home): a symlinked records
/// directory, agent directory or index is a refusal.
#[test]
fn symlinked_directories_and_index_are_refused() {
    let m = Mounted::new("dirs", &[]);
    m.sh("echo one > a");
    m.unmount();
    let data = m.home.join("agents").join(&m.agent);
    let elsewhere = m.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let _ = std::fs::remove_dir_all(data.join("checkpoints"));
    std::os::unix::fs::symlink(&elsewhere, data.join("checkpoints")).unwrap();
    fails(
        &m.sovseal(&["checkpoint", "--agent", &m.agent]),
        3,
        "symlink",
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    std::fs::remove_file(data.join("checkpoints")).unwrap();

    // The whole data dir moved out and linked back.
    let moved = m.dir.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &data).unwrap();
    fails(&m.try_mount(), 3, "symlink");
    fails(&m.sovseal(&["verify", "--agent", &m.agent]), 3, "symlink");
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();

    // The index.
    let idx = data.join("index.db");
    let kept = m.dir.path().join("index.db");
    std::fs::rename(&idx, &kept).unwrap();
    std::os::unix::fs::symlink(&kept, &idx).unwrap();
    fails(&m.try_mount(), 3, "symlink");
    std::fs::remove_file(&idx).unwrap();
    std::fs::rename(&kept, &idx).unwrap();
    m.mount();
    assert_eq!(m.sh("cat a"), "one\n");
}

/// Regression (fails on the main before this change: any owner and mode
/// were accepted): a home another user owns, or a data dir others may
/// write in, is refused: whoever could write there could plant symlinks.
#[test]
fn a_home_or_data_dir_others_control_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mounted::new("owner", &[]);
    m.sh("echo one > a");
    m.unmount();
    let agents = m.home.join("agents");
    std::fs::set_permissions(&agents, std::fs::Permissions::from_mode(0o777)).unwrap();
    fails(&m.try_mount(), 3, "group or others may write");
    std::fs::set_permissions(&agents, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Another owner (as root the test can chown; as a user it cannot).
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(&m.home, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let o = m.try_mount();
        nix::unistd::chown(&m.home, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        fails(&o, 3, "owned by uid 65534");
    }
    m.mount();
    assert_eq!(m.sh("cat a"), "one\n");
}

/// Regression (fails on the main before this change: a forget row hid a
/// snapshot whatever its record said): a forged "forgotten" row hides
/// nothing; reading the snapshot is an integrity error naming the record.
#[test]
fn a_forged_forget_row_hides_nothing() {
    let m = Mounted::new("forgetrow", &[]);
    m.sh("echo one > a");
    m.unmount();
    m.mount();
    m.sh("echo two > a");
    m.unmount();
    let listed = ok(&m.sovseal(&["snapshots", "--agent", &m.agent, "--json"]));
    assert!(
        listed.contains("\"seq\":1") || listed.contains("\"seq\": 1"),
        "{listed}"
    );
    m.index_sql("INSERT INTO forgotten (seq, at_ms, record) VALUES (1, 0, CAST('{\"format\":\"sovseal-forget\"}' AS BLOB))",
    );
    fails(
        &m.sovseal(&["snapshots", "--agent", &m.agent]),
        3,
        "forget record",
    );
    fails(
        &m.sovseal(&["cat", "--agent", &m.agent, "--seq", "1", "a"]),
        3,
        "forget record",
    );
}

/// Regression (fails on the main before this change: the checkpoint signed
/// whatever hash the index recorded): a checkpoint is made only over an
/// envelope that verifies. (The head is checked on every open; the hole was
/// a replicated snapshot below it, the usual case while replication lags.)
#[test]
fn a_checkpoint_is_made_only_over_a_verified_envelope() {
    let m = Mounted::new("cpverify", &[]);
    m.sh("echo one > a");
    m.unmount();
    m.mount();
    m.sh("echo two > a");
    m.unmount();
    m.mount();
    m.sh("echo three > a");
    m.wait_replicated();
    m.unmount();
    // Two below the head: opening checks only the head and its parent link.
    let below = m.head() - 2;
    let cps = m.home.join("agents").join(&m.agent).join("checkpoints");
    let count = || std::fs::read_dir(&cps).map_or(0, |d| d.count());
    let before = count();
    // The replication marker says only `below` reached the remote, and the
    // disk altered its recorded hash.
    m.index_sql(&format!(
        "UPDATE meta SET value = CAST('{below}' AS BLOB) WHERE key = 'replicated_seq';
             UPDATE snapshots SET hash = randomblob(32) WHERE seq = {below}"
    ));
    fails(
        &m.sovseal(&["checkpoint", "--agent", &m.agent]),
        3,
        &format!("snapshot {below}"),
    );
    assert_eq!(count(), before, "no checkpoint was stored");
}

/// Regression (fails on the main before this change: a redaction record
/// allowed its objects to be missing from every snapshot): content equal to
/// redacted content, written again later, is checked like any other.
#[test]
fn redaction_allowances_cover_only_the_listed_snapshots() {
    let m = Mounted::new("redscope", &[]);
    let write = |name: &str| {
        m.py(&format!(
            "open('{name}', 'wb').write(bytes(range(256)) * 40)"
        ));
    };
    write("s");
    m.sh("echo keep > k");
    m.unmount();
    m.mount();
    m.sh("rm s");
    m.wait_replicated();
    m.unmount();
    ok(&m.sovseal(&["redact", "--agent", &m.agent, "/s"]));
    let recs = m.home.join("agents").join(&m.agent).join("redactions");
    let rec = std::fs::read_dir(&recs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    let erased = rec["objects"][0].as_str().unwrap().to_owned();
    // The same content again, in a new snapshot.
    m.mount();
    write("again");
    m.unmount();
    let later = m.head();
    m.verify();
    // The disk loses it: the later snapshot must not verify.
    m.index_sql(&format!("DELETE FROM objects WHERE id = x'{erased}'"));
    fails(
        &m.sovseal(&["verify", "--agent", &m.agent]),
        3,
        &format!("snapshot {later}"),
    );
}

/// A data dir whose head lost an object the mount needs first (the root's
/// inode page) is refused at once, exit 3, naming the object and the head
/// snapshot, instead of being mounted as a tree nothing can list (it used
/// to wait 30 s and fail with "did not answer", exit 1).
#[test]
fn a_head_that_lost_its_root_is_refused_at_mount_naming_it() {
    // Commits that fold (the root's record in an inode page), then delta
    // commits (in the head's delta).
    for (fold, kind, named) in [("0", 4, "inode page"), ("64", 9, "delta")] {
        let m = Mounted::new("lost-root", &["--fold-every", fold]);
        m.sh("echo hello > f && mkdir d");
        m.unmount();
        let head = m.head();
        // What the last commit stored of that kind (the root's record
        // among it).
        m.drop_homed(kind);
        let o = m.try_mount();
        fails(&o, 3, &format!("({named}) referenced by snapshot {head}"));
        assert!(!m.is_mounted());
    }
}
