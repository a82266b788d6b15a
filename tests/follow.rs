//! Follower mounts (#16): a second home holding the writer's master key
//! mounts the agent with `--follow` from the writer's remote (a real S3
//! server, a real PostgreSQL server, a directory) and sees each snapshot
//! the writer replicates, in order and never torn; a remote that stops
//! verifying stops the follower, which keeps serving what it verified.

mod support;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::home::files_under;
use support::moto::Moto;
use support::mount::{Mounted, fails, text, tree};
use support::postgres::Postgres;

/// A follower of `w`'s agent from `url`: a second home with the same key.
fn follower(w: &Mounted, url: &str, name: &str) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("view");
    std::fs::create_dir(&mnt).unwrap();
    let home = w.second_home(name);
    let extra = [
        "--agent",
        &w.agent,
        "--remote",
        url,
        "--follow",
        "--poll-ms",
        "100",
    ];
    Mounted {
        dir,
        home,
        mnt,
        agent: w.agent.clone(),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        env: w.env.clone(),
    }
}

/// The content of `state` in snapshot `i`: the number repeated, at a size
/// that changes with `i`, so that a mix of two snapshots shows.
fn state(i: u64) -> Vec<u8> {
    let token = format!("{i:05};");
    token.repeat(2000 + (i as usize % 7) * 3000).into_bytes()
}

/// The snapshot number a `state` file holds; panics if it is torn.
fn state_seq(b: &[u8]) -> u64 {
    let s = std::str::from_utf8(b).expect("utf-8");
    let first = &s[..6];
    let i: u64 = first[..5].parse().unwrap_or_else(|_| panic!("{first:?}"));
    assert!(
        b == state(i).as_slice(),
        "torn read: starts as snapshot {i}, {} bytes",
        b.len()
    );
    i
}

/// A whole file, at once or (`slow`) 8 KiB at a time with pauses, so that
/// the read spans the follower's advances.
fn read_file(path: &Path, slow: bool) -> Vec<u8> {
    use std::io::Read;
    if !slow {
        return std::fs::read(path).unwrap();
    }
    let mut f = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the follower's mount shows snapshot `seq` as `latest`.
fn wait_latest(f: &Mounted, seq: u64) {
    let want = PathBuf::from(format!("{seq:010}"));
    let t0 = Instant::now();
    loop {
        if std::fs::read_link(f.path(".snapshots/latest"))
            .ok()
            .as_ref()
            == Some(&want)
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the follower did not reach snapshot {seq}: {}",
            f.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_follower_sees_each_snapshot_of_the_writer_in_order_through_s3() {
    let s3 = Moto::start();
    let env = s3.owned_vars();
    follows_in_order(&s3.url("follow"), env);
}

#[test]
fn a_follower_sees_each_snapshot_of_the_writer_in_order_through_postgres() {
    let pg = Postgres::start();
    follows_in_order(&pg.url(), Vec::new());
}

fn follows_in_order(url: &str, env: Vec<(String, String)>) {
    // Only durable snapshots replicate: a short interval lets them out one
    // by one rather than a second's worth at a time.
    let w = Mounted::with_env("fol", &["--remote", url, "--sync-interval-ms", "100"], env);
    w.sh("mkdir -p notes && echo hello > notes/a");
    std::fs::write(w.path("state"), state(0)).unwrap();
    let base = w.wait_replicated();

    let f = follower(&w, url, "machine-b");
    f.mount();
    wait_latest(&f, base);
    assert_eq!(text(&std::fs::read(f.path("notes/a")).unwrap()), "hello\n");
    // Read-only, to every program.
    let o = f.sh_output("echo x > new");
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Read-only"), "{}", text(&o.stderr));

    // Readers on the follower the whole time, one fast and one slow (a
    // read that spans advances): each read is one snapshot (never half of
    // two), and the snapshots only move forward.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|slow| {
            let (stop, path) = (stop.clone(), f.path("state"));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = state_seq(&read_file(&path, slow));
                    if seen.last() != Some(&i) {
                        assert!(
                            seen.last().is_none_or(|l| *l < i),
                            "went back: {seen:?} then {i}"
                        );
                        seen.push(i);
                    }
                    if i == 200 {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    // 200 snapshots, about 20 a second.
    for i in 1..=200u64 {
        std::fs::write(w.path("state"), state(i)).unwrap();
        if i % 50 == 0 {
            w.sh(&format!(
                "echo {i} > notes/n{i} && mv notes/a notes/b{i} && echo {i} > notes/a"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(400));
    let head = w.wait_replicated();
    assert!(head >= base + 200, "{head}");
    wait_latest(&f, head);
    // Each reader stops once it has read the last snapshot.
    let t0 = Instant::now();
    while readers.iter().any(|r| !r.is_finished()) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let seen = r.join().unwrap();
        assert_eq!(seen.last(), Some(&200), "{seen:?}");
        // It followed along, not once at the end.
        assert!(
            seen.len() >= 5,
            "the follower advanced only {} times",
            seen.len()
        );
    }

    // The same files, and every snapshot byte for byte.
    assert_eq!(tree(&f.mnt), tree(&w.mnt));
    assert_eq!(f.history(), w.history());
    let s = f.status();
    assert_eq!(s["head_seq"], head, "{s}");
    assert_eq!(s["following"]["remote_head"], head, "{s}");
    assert_eq!(s["following"]["behind"], 0, "{s}");
    assert!(s["following"]["error"].is_null(), "{s}");
    f.verify();

    // A restart of the follower starts where it was and keeps following.
    f.remount();
    std::fs::write(w.path("state"), state(201)).unwrap();
    let head = w.wait_replicated();
    wait_latest(&f, head);
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 201);

    // The writer's checkpoints are checked as they come and kept here.
    let o = w.sovseal(&["checkpoint", "--agent", "fol", "--remote", url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let t0 = Instant::now();
    while f.status()["checkpointed_seq"] != head {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", f.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(f.status()["following"]["error"].is_null());
}

/// Copies what `from` holds into `to`, keeping what `to` holds already,
/// as a writer replicates (a follower may be polling `to`): each file
/// whole (written aside, then renamed into place), pack parts first, then
/// envelopes, the other records, the checkpoints, and last the copy of
/// the newest checkpoint (the one file replaced).
fn copy_tree(from: &Path, to: &Path) {
    let newest = |p: &Path| p.file_name().is_some_and(|n| n == "checkpoint.json");
    let rank = |p: &Path| match p.parent().and_then(|d| d.file_name()) {
        _ if newest(p) => 4,
        Some(d) if d == "packs" => 0,
        Some(d) if d == "envelopes" => 1,
        Some(d) if d == "checkpoints" => 3,
        _ => 2,
    };
    let mut files: Vec<PathBuf> = files_under(from)
        .into_iter()
        .map(|p| p.strip_prefix(from).unwrap().to_owned())
        .filter(|rel| newest(rel) || !to.join(rel).exists())
        .collect();
    files.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    let aside = tempfile::tempdir_in(to.parent().unwrap()).unwrap();
    for rel in files {
        let staged = aside.path().join("f");
        std::fs::copy(from.join(&rel), &staged).unwrap();
        std::fs::create_dir_all(to.join(&rel).parent().unwrap()).unwrap();
        std::fs::rename(&staged, to.join(&rel)).unwrap();
    }
}

/// The writer `w` goes on against a copy of `remote` (which stays as it
/// was): writes `states` to `state`, each its own snapshot, and stops
/// (signing a checkpoint of its head there). Returns the copy.
fn goes_on_elsewhere(w: &mut Mounted, remote: &Path, states: &[u64]) -> tempfile::TempDir {
    let staging = tempfile::tempdir().unwrap();
    copy_tree(remote, staging.path());
    w.extra = vec![
        "--remote".into(),
        format!("file://{}", staging.path().display()),
    ];
    w.mount();
    let before = w.status()["head_seq"].as_u64().unwrap();
    for &i in states {
        std::fs::write(w.path("state"), state(i)).unwrap();
    }
    assert_eq!(w.wait_replicated(), before + states.len() as u64);
    w.unmount();
    staging
}

/// The one file `<sub>/<seq, 20 digits>.json` under the remote `root`.
fn remote_file(root: &Path, sub: &str, seq: u64) -> PathBuf {
    let found: Vec<PathBuf> = files_under(root)
        .into_iter()
        .filter(|p| p.ends_with(format!("{sub}/{seq:020}.json")))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Waits until the follower reports itself stalled with an error that
/// says `why` (a stall an earlier run recorded shows until the first poll
/// judges it again); its status then.
fn wait_stalled(f: &Mounted, why: &str) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let s = f.status();
        let err = s["following"]["error"].as_str().unwrap_or_default();
        if s["following"]["stalled"] == true && err.contains(why) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not stalled: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Changes one hex digit of an envelope file's payload hash.
fn tamper_envelope(path: &Path) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let h = v["client_payload_hash"].as_str().unwrap().to_owned();
    let first = if h.starts_with('0') { "1" } else { "0" };
    v["client_payload_hash"] = format!("{first}{}", &h[1..]).into();
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn a_tampered_remote_stops_the_follower_which_keeps_serving() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("tam", &["--remote", &url]);
    std::fs::write(w.path("state"), state(1)).unwrap();
    let head = w.wait_replicated();
    w.unmount();

    let mut f = follower(&w, &url, "machine-b");
    let metrics = f.dir.path().join("metrics.prom");
    f.extra
        .extend(["--metrics-file".into(), metrics.display().to_string()]);
    f.mount();
    wait_latest(&f, head);
    let before = tree(remote.path());

    // The writer goes on against a copy of the remote; two snapshots, the
    // second tampered on its way to the remote the follower reads.
    let mut w = w;
    let staging = goes_on_elsewhere(&mut w, remote.path(), &[2, 3]);
    tamper_envelope(&remote_file(staging.path(), "envelopes", head + 2));
    copy_tree(staging.path(), remote.path());

    // The follower takes the good snapshot, stops at the tampered one,
    // reports it, and keeps serving.
    wait_latest(&f, head + 1);
    wait_stalled(&f, &format!("snapshot {}", head + 2));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 2);
    assert_eq!(
        std::fs::read_link(f.path(".snapshots/latest")).unwrap(),
        PathBuf::from(format!("{:010}", head + 1))
    );
    assert!(f.path(&format!(".snapshots/{:010}", head + 1)).exists());
    assert!(!f.path(&format!(".snapshots/{:010}", head + 2)).exists());
    let log = std::fs::read_to_string(f.home.join("logs/tam.log")).unwrap();
    assert!(log.contains("does not verify"), "{log}");
    let o = f.sovseal(&["status", "--agent", "tam"]);
    assert!(
        text(&o.stdout).contains("FOLLOW STALLED"),
        "{}",
        text(&o.stdout)
    );
    // And in the metrics file, every 2 s.
    let t0 = Instant::now();
    loop {
        let m = std::fs::read_to_string(&metrics).unwrap_or_default();
        if m.contains("sovseal_follow_stalled{agent=\"tam\"} 1\n") {
            assert!(
                m.contains("sovseal_follow_lag_snapshots{agent=\"tam\"} 1\n"),
                "{m}"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{m}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The follower wrote nothing to the remote: only the writer's files
    // arrived since it started (and its copy of the newest checkpoint was
    // replaced by the writer's).
    let after = tree(remote.path());
    let written = tree(staging.path());
    for (k, v) in &before {
        let v = if k.ends_with("/checkpoint.json") {
            &written[k]
        } else {
            v
        };
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }
    assert_eq!(after.len(), written.len());
}

/// A writer of `agent` with one snapshot (state 1) on a directory remote,
/// stopped, and a follower mounted that shows it: the remote, the writer,
/// the head, the follower.
fn followed_from_a_directory(agent: &str) -> (tempfile::TempDir, Mounted, u64, Mounted) {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new(agent, &["--remote", &url]);
    std::fs::write(w.path("state"), state(1)).unwrap();
    let head = w.wait_replicated();
    w.unmount();
    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    (remote, w, head, f)
}

/// The writer's signed checkpoints are checked while the follower runs:
/// a remote that withholds snapshots a checkpoint vouches for (or rolled
/// them back and kept the checkpoint), or that holds a forged checkpoint,
/// stops the follower, which keeps serving what it verified.
#[test]
fn a_remote_withholding_checkpointed_snapshots_stops_the_follower() {
    let (remote, mut w, head, f) = followed_from_a_directory("held");

    // The writer goes on against a copy of the remote, and signs a
    // checkpoint of its new head as it stops.
    let staging = goes_on_elsewhere(&mut w, remote.path(), &[2, 3]);
    let signed = remote_file(staging.path(), "checkpoints", head + 2);
    let place = remote
        .path()
        .join(signed.strip_prefix(staging.path()).unwrap());

    // The follower's remote receives the checkpoint, not the snapshots.
    std::fs::copy(&signed, &place).unwrap();
    wait_stalled(
        &f,
        &format!("signed checkpoint says snapshot {} existed", head + 2),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 1);
    assert_eq!(
        std::fs::read_link(f.path(".snapshots/latest")).unwrap(),
        PathBuf::from(format!("{head:010}"))
    );

    // A forged checkpoint (the signature of the writer's newest snapshot
    // over the number of the one before): also a stop, judged again at the
    // next start.
    f.unmount();
    std::fs::remove_file(&place).unwrap();
    let forged = std::fs::read_to_string(&signed).unwrap().replace(
        &format!("\"seq\":{}", head + 2),
        &format!("\"seq\":{}", head + 1),
    );
    assert!(
        forged.contains(&format!("\"seq\":{}", head + 1)),
        "{forged}"
    );
    std::fs::write(
        place.with_file_name(format!("{:020}.json", head + 1)),
        forged,
    )
    .unwrap();
    f.mount();
    let s = wait_stalled(&f, "forged or altered");
    let err = s["following"]["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("checkpoint {} on the remote", head + 1)),
        "{err}"
    );
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 1);
}

/// Two writers forked at snapshot `head + 1` (one on each copy of the
/// remote); the follower's remote holds the second one's snapshot and the
/// first one's checkpoint of that number: the follower never shows it.
#[test]
fn a_checkpoint_naming_another_snapshot_stops_the_follower_before_it_shows_it() {
    let (remote, mut w, head, f) = followed_from_a_directory("fork");

    // The first writer, on one copy: snapshot head + 1, checkpointed as it
    // stops.
    let two = tempfile::tempdir().unwrap();
    copy_tree(remote.path(), two.path());
    let one = goes_on_elsewhere(&mut w, remote.path(), &[2]);
    // The second, another machine with the key, on the other copy.
    let mut other = follower(&w, &format!("file://{}", two.path().display()), "machine-c");
    other.extra.truncate(4); // `--agent A --remote URL`, not following: a writer
    other.mount();
    std::fs::write(other.path("state"), state(3)).unwrap();
    assert_eq!(other.wait_replicated(), head + 1);
    other.unmount();

    // The second's snapshot arrives with the first's checkpoint of it, both
    // at once: while the follower is down (live, a poll between the two
    // would rightly show the snapshot, alone on the remote then).
    std::fs::copy(
        remote_file(one.path(), "checkpoints", head + 1),
        remote_file(two.path(), "checkpoints", head + 1),
    )
    .unwrap();
    f.unmount();
    copy_tree(two.path(), remote.path());
    f.mount();
    wait_stalled(
        &f,
        "the remote holds a different snapshot than the writer's signed checkpoint",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_link(f.path(".snapshots/latest")).unwrap(),
        PathBuf::from(format!("{head:010}"))
    );
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 1);
    assert_eq!(f.status()["head_seq"], head);
}

/// A writer that rotated its key, followed by a machine that was not
/// given the new version: the follower takes every snapshot sealed under
/// the key it holds (the writer's checkpoints signed under the new one
/// are left for later, not a reason to take nothing), then reports the
/// missing version and keeps serving.
#[test]
fn a_follower_without_the_rotated_key_follows_up_to_the_rotation() {
    let (_remote, w, head, f) = followed_from_a_directory("rot");
    f.unmount();
    w.mount();
    std::fs::write(w.path("state"), state(2)).unwrap();
    assert_eq!(w.wait_replicated(), head + 1);
    w.unmount();
    let o = w.sovseal(&["key", "rotate"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    w.mount();
    std::fs::write(w.path("state"), state(3)).unwrap();
    assert_eq!(w.wait_replicated(), head + 2);
    w.unmount(); // signs a checkpoint of head + 2 under version 2

    f.mount();
    wait_latest(&f, head + 1);
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 2);
    let t0 = Instant::now();
    loop {
        let s = f.status();
        let err = s["following"]["error"].as_str().unwrap_or_default();
        if err.contains("key version 2 is not in custody") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 2);
}

#[test]
fn following_an_agent_the_remote_does_not_hold_is_refused() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::unmounted("none", &[], Vec::new(), None);
    let f = follower(&w, &url, "machine-b");
    fails(&f.try_mount(), 2, "nothing to follow");
    assert!(!f.home.join("agents/none").exists());
}

/// What the kernel cached of the old snapshot (names, sizes) is dropped as
/// the follower advances, not a second later when its cache times out.
#[test]
fn the_kernel_sees_the_new_snapshot_as_soon_as_the_follower_shows_it() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("inv", &["--remote", &url, "--sync-interval-ms", "50"]);
    w.sh("mkdir notes && echo hello > notes/a");
    std::fs::write(w.path("state"), state(1)).unwrap();
    let head = w.wait_replicated();
    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    for round in 0..5u64 {
        let new = format!("round {round}: a longer second content\n").repeat(round as usize + 2);
        w.sh(&format!(
            "mv notes/a notes/old{round} && printf '{}' > notes/a",
            new.replace('\n', "\\n")
        ));
        std::fs::write(w.path("state"), state(10 + round)).unwrap();
        let head = w.wait_replicated();
        // Keep the kernel's entries and attributes fresh while waiting, so
        // that only an invalidation can drop them in time.
        let want = PathBuf::from(format!("{head:010}"));
        let t0 = Instant::now();
        while std::fs::read_link(f.path(".snapshots/latest")).unwrap() != want {
            let _ = std::fs::metadata(f.path("notes/a")).unwrap();
            let _ = std::fs::metadata(f.path("state")).unwrap();
            assert!(t0.elapsed() < Duration::from_secs(30), "not followed");
        }
        assert_eq!(
            std::fs::metadata(f.path("notes/a")).unwrap().len(),
            new.len() as u64,
            "round {round}: the old name's size"
        );
        assert_eq!(text(&std::fs::read(f.path("notes/a")).unwrap()), new);
        assert_eq!(
            std::fs::metadata(f.path("state")).unwrap().len(),
            state(10 + round).len() as u64
        );
        assert!(f.path(&format!("notes/old{round}")).exists());
    }
}

/// The writer's redaction reaches the followers: at its next start a
/// follower that had the erased content drops it from its packs too, and
/// one that was behind takes the snapshots whose objects the redaction
/// removed from the remote (the record says they are gone, so that is not
/// a gap). What remains verifies on both.
/// The writer `w` writes `secret.bin` (300,000 bytes), then removes it;
/// each replicated, then `w` unmounts. Returns the snapshot that held it
/// and the head.
fn secret_then_removed(w: &Mounted) -> (u64, u64) {
    w.sh("head -c 300000 /dev/urandom > secret.bin");
    let with_secret = w.wait_replicated();
    w.sh("rm secret.bin && echo more >> keep.txt");
    std::thread::sleep(Duration::from_millis(400));
    let head = w.wait_replicated();
    w.unmount();
    (with_secret, head)
}

/// The objects in `m`'s local index.
fn objects(m: &Mounted) -> u64 {
    m.index_sql("SELECT count(*) FROM objects")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_redaction_by_the_writer_is_carried_out_on_the_followers() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("red", &["--remote", &url]);
    w.sh("echo keep > keep.txt");
    let base = w.wait_replicated();
    // Behind: it last saw the head before the secret.
    let g = follower(&w, &url, "machine-c");
    g.mount();
    wait_latest(&g, base);
    g.unmount();

    let (with_secret, head) = secret_then_removed(&w);

    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    let old = format!(".snapshots/{with_secret:010}/secret.bin");
    assert_eq!(std::fs::read(f.path(&old)).unwrap().len(), 300000);
    f.unmount();
    let before = objects(&f);

    let o = w.sovseal(&["redact", "--agent", "red", "--remote", &url, "/secret.bin"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for m in [&f, &g] {
        m.mount();
        wait_latest(m, head);
        assert!(m.status()["following"]["error"].is_null(), "{}", m.status());
        let e = std::fs::read(m.path(&old)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert_eq!(
            text(&std::fs::read(m.path("keep.txt")).unwrap()),
            "keep\nmore\n"
        );
        m.unmount();
        m.verify();
    }
    assert!(objects(&f) < before, "nothing erased on the follower");
    let log = std::fs::read_to_string(f.home.join("logs/red.log")).unwrap();
    assert!(log.contains("redaction: erased"), "{log}");
}

/// The same bytes written again after a redaction are the same objects
/// (an object's id is a keyed hash of its content; a stretch of holes is
/// one chunk list in every sparse file). The writer stores them again, and
/// a snapshot that references them needs them: a follower that held them
/// before the redaction, a fresh follower and a fresh machine's restore
/// keep them (not erased from the packs, not refused to readers), also a
/// follower that carried out the redaction while it served; the new file
/// reads back byte for byte, the writer and the followers verify, and the
/// restore (into a directory, verifying as it fetches) succeeds. Before the fix the
/// followers erased them again at every start (EIO on the new file).
#[test]
fn content_written_again_after_a_redaction_is_kept_everywhere() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("again", &["--remote", &url]);
    w.sh("echo keep > keep.txt");
    let (with_secret, head) = secret_then_removed(&w);
    let secret = w
        .sovseal(&[
            "cat",
            "--agent",
            "again",
            "--seq",
            &with_secret.to_string(),
            "/secret.bin",
        ])
        .stdout;
    assert_eq!(secret.len(), 300000);
    // It holds the secret's objects, and serves while the writer redacts
    // and writes the same bytes again.
    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    let o = w.sovseal(&[
        "redact",
        "--agent",
        "again",
        "--remote",
        &url,
        "/secret.bin",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let old = f.path(&format!(".snapshots/{with_secret:010}/secret.bin"));
    let t0 = Instant::now();
    while std::fs::read(&old).is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not redacted: {}",
            f.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    w.mount();
    std::fs::write(w.path("again.bin"), &secret).unwrap();
    let again = w.wait_replicated();
    w.unmount();
    w.verify();
    wait_latest(&f, again);
    assert!(
        std::fs::read(f.path("again.bin")).unwrap() == secret,
        "again.bin differs on the serving follower"
    );
    f.unmount();

    let g = follower(&w, &url, "machine-c");
    for m in [&f, &g] {
        // Twice: the records are carried out at every start.
        for _ in 0..2 {
            m.mount();
            wait_latest(m, again);
            assert!(m.status()["following"]["error"].is_null(), "{}", m.status());
            assert!(
                std::fs::read(m.path("again.bin")).unwrap() == secret,
                "again.bin differs"
            );
            m.unmount();
        }
        m.verify();
    }
    let home2 = w.second_home("machine-d");
    let dest = w.dir.path().join("restored");
    let o = std::process::Command::new(support::mount::SOVSEAL)
        .args(["restore", "--agent", "again", "--remote", &url])
        .arg(&dest)
        .env("SOVSEAL_HOME", &home2)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        std::fs::read(dest.join("again.bin")).unwrap() == secret,
        "restored again.bin differs"
    );
}

/// When a follower cannot tell which of the erased objects a later
/// snapshot holds again (here: index rows of a middle snapshot lost, so
/// the walk fails), it refuses everything the redaction names and keeps
/// its packs: the mount serving the data dir refuses the redacted file
/// (EIO, not its bytes, though the packs still hold them), everything
/// else reads on, the log says why, and `sovseal takeover` is refused
/// there (a new writer would keep the erased content).
#[test]
fn a_follower_that_cannot_tell_what_was_written_again_refuses_all_named() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    // (Commits that fold: the middle snapshot's metadata is nothing the
    // head reads, as no delta chain runs through it.)
    let w = Mounted::new("unsure", &["--remote", &url, "--fold-every", "0"]);
    w.sh("echo keep > keep.txt");
    let (with_secret, _) = secret_then_removed(&w);
    // A middle snapshot whose metadata the head no longer uses.
    w.mount();
    w.sh("mkdir d && echo 1 > d/f");
    let middle = w.wait_replicated();
    w.sh("rm -r d && echo again >> keep.txt");
    std::thread::sleep(Duration::from_millis(400));
    let head = w.wait_replicated();
    assert!(middle > with_secret + 1 && head > middle);
    w.unmount();

    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    let old = format!(".snapshots/{with_secret:010}/secret.bin");
    let secret = std::fs::read(f.path(&old)).unwrap();
    assert_eq!(secret.len(), 300000);
    f.unmount();
    f.index_sql(&format!("DELETE FROM homes WHERE seq = {middle}"));
    let before = objects(&f);

    let o = w.sovseal(&[
        "redact",
        "--agent",
        "unsure",
        "--remote",
        &url,
        "/secret.bin",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    f.mount();
    wait_latest(&f, head);
    let e = match std::fs::read(f.path(&old)) {
        Ok(b) => panic!("the redacted file was served ({} bytes)", b.len()),
        Err(e) => e,
    };
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        text(&std::fs::read(f.path("keep.txt")).unwrap()),
        "keep\nmore\nagain\n"
    );
    f.unmount();
    let log = std::fs::read_to_string(f.home.join("logs/unsure.log")).unwrap();
    assert!(
        log.contains("cannot tell which erased objects were written again"),
        "{log}"
    );
    assert_eq!(objects(&f), before, "the packs were rewritten");
    let o = support::mount::sovseal_in(
        &f.home,
        &[
            "takeover",
            "--agent",
            "unsure",
            "--remote",
            &url,
            "--quiet-secs",
            "1",
        ],
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("cannot tell which objects the writer's redactions erased here"),
        "{err}"
    );
}

/// A redaction the writer makes while a follower serves is carried out
/// there at the next poll, without a restart: the erased content is
/// refused (EIO) in history, also through a handle opened before and a
/// read the kernel and the follower had cached; it leaves the follower's
/// packs; everything else reads on.
#[test]
fn a_redaction_reaches_a_follower_while_it_serves() {
    use std::os::unix::fs::FileExt;
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("live", &["--remote", &url]);
    w.sh("echo keep > keep.txt");
    let (with_secret, head) = secret_then_removed(&w);

    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    let old = f.path(&format!(".snapshots/{with_secret:010}/secret.bin"));
    // In the kernel's page cache and the follower's chunk cache, and a
    // handle held open across the redaction. The kernel reads whole chunks
    // (which the daemon does not cache); a direct read of part of one puts
    // that chunk in the chunk cache.
    let secret = std::fs::read(&old).unwrap();
    assert_eq!(secret.len(), 300000);
    let held = std::fs::File::open(&old).unwrap();
    let mut buf = vec![0u8; 4096];
    held.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, secret[..4096]);
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&old)
            .unwrap()
    };
    direct.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, secret[4096..8192]);
    let before = objects(&f);

    let o = w.sovseal(&["redact", "--agent", "live", "--remote", &url, "/secret.bin"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let t0 = Instant::now();
    while std::fs::read(&old).is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the follower still serves the redacted file: {}",
            f.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = std::fs::read(&old).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = held.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "through the held handle: {e}"
    );
    let e = direct.read_exact_at(&mut buf, 4096).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "a chunk the follower had cached: {e}"
    );
    assert_eq!(
        text(&std::fs::read(f.path("keep.txt")).unwrap()),
        "keep\nmore\n"
    );
    assert_eq!(
        std::fs::read_link(f.path(".snapshots/latest")).unwrap(),
        PathBuf::from(format!("{head:010}"))
    );
    let st = f.status();
    assert!(st["following"]["error"].is_null(), "{st}");
    // The remote it follows, not its home's default remote.
    let shown = st["following"]["remote"].as_str().unwrap_or_default();
    assert!(shown.contains(&*remote.path().to_string_lossy()), "{st}");
    assert_eq!(st["remote"], st["following"]["remote"], "{st}");
    assert!(
        objects(&f) < before,
        "nothing erased from the follower's packs"
    );
    drop((held, direct));
    f.unmount();
    f.verify();
    let log = std::fs::read_to_string(f.home.join("logs/live.log")).unwrap();
    assert!(log.contains("redaction: erased"), "{log}");
}

/// The writer's forgets reach a follower while it serves: at the next poll
/// the forgotten snapshots leave its `.snapshots/` and their content its
/// packs; the snapshots kept read on, byte for byte.
#[test]
fn a_forget_reaches_a_follower_while_it_serves() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("fgt", &["--remote", &url]);
    let mut versions = Vec::new();
    for _ in 0..5 {
        w.sh("head -c 200000 /dev/urandom > big.bin");
        versions.push((
            w.wait_replicated(),
            std::fs::read(w.path("big.bin")).unwrap(),
        ));
    }
    w.unmount();
    let head = versions.last().unwrap().0;
    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    let at = |seq: u64| f.path(&format!(".snapshots/{seq:010}/big.bin"));
    for (seq, bytes) in &versions {
        assert!(std::fs::read(at(*seq)).unwrap() == *bytes, "snapshot {seq}");
    }
    let before = objects(&f);

    let o = w.sovseal(&["forget", "--agent", "fgt", "--keep-last", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = w.sovseal(&["prune", "--agent", "fgt", "--remote", &url]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The writer uploads one forget record after another, so a poll may
    // meet only the first ones: wait until no forgotten snapshot is listed.
    let gone: Vec<u64> = versions[..3].iter().map(|v| v.0).collect();
    let list = || -> Vec<u64> {
        std::fs::read_dir(f.path(".snapshots"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
            .collect()
    };
    let t0 = Instant::now();
    while gone.iter().any(|s| at(*s).exists() || list().contains(s)) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the follower still shows a forgotten snapshot of {gone:?}: {}",
            f.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = list();
    for (seq, bytes) in &versions {
        if versions[3..].iter().any(|v| v.0 == *seq) {
            assert!(std::fs::read(at(*seq)).unwrap() == *bytes, "kept {seq}");
        } else {
            assert!(!listed.contains(seq), "forgotten {seq} listed: {listed:?}");
        }
    }
    assert!(
        objects(&f) < before,
        "nothing pruned from the follower's packs"
    );
    assert!(f.status()["following"]["error"].is_null(), "{}", f.status());
    f.unmount();
    f.verify();
}

/// A remote that lacks a snapshot's objects (a pack part deleted) never
/// gets that snapshot shown, not even after the follower restarts: it is
/// not committed until every object it references is here.
#[test]
fn a_snapshot_missing_objects_on_the_remote_is_never_shown() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("gap", &["--remote", &url]);
    std::fs::write(w.path("state"), state(1)).unwrap();
    let head = w.wait_replicated();
    let f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    f.unmount();
    // Replicated one at a time, so that head + 2 has parts of its own (a
    // batch would hold head + 1's records too).
    std::fs::write(w.path("state"), state(2)).unwrap();
    assert_eq!(w.wait_replicated(), head + 1);
    std::fs::write(w.path("state"), state(3)).unwrap();
    assert_eq!(w.wait_replicated(), head + 2);
    w.unmount();
    let parts: Vec<PathBuf> = files_under(remote.path())
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{:020}-", head + 2)) && n.ends_with(".pack")
        })
        .collect();
    assert!(!parts.is_empty());
    for p in &parts {
        std::fs::remove_file(p).unwrap();
    }
    for _ in 0..2 {
        f.mount();
        wait_latest(&f, head + 1);
        let t0 = Instant::now();
        let s = loop {
            let s = f.status();
            if s["following"]["stalled"] == true {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "not stalled: {s}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(s["head_seq"], head + 1, "{s}");
        let err = s["following"]["error"].as_str().unwrap();
        assert!(err.contains(&format!("snapshot {}", head + 2)), "{err}");
        assert_eq!(state_seq(&std::fs::read(f.path("state")).unwrap()), 2);
        f.unmount();
    }
    f.verify();
}

/// Promotion: a follower that caught up becomes the writer by mounting
/// without `--follow`; the remote's conditional create fences two writers,
/// so the one that did not win its first snapshot stops replicating
/// (a fork), and the winner's history stays whole.
#[test]
fn a_promoted_follower_and_the_old_writer_never_both_win() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("pro", &["--remote", &url]);
    w.sh("echo one > a");
    let head = w.wait_replicated();

    // The old writer still alive and writing: the promoted follower's
    // first snapshot loses the race for its number, and it says so.
    let mut f = follower(&w, &url, "machine-b");
    f.mount();
    wait_latest(&f, head);
    f.unmount();
    w.sh("echo two > a");
    let w_head = w.wait_replicated();
    assert_eq!(w_head, head + 1);
    f.extra = vec![
        "--agent".into(),
        "pro".into(),
        "--remote".into(),
        url.clone(),
    ];
    f.mount();
    f.sh("echo mine > a");
    let t0 = Instant::now();
    let s = loop {
        let s = f.status();
        if !s["fork_at"].is_null() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no fork seen: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(s["fork_at"], head + 1, "{s}");
    f.unmount();
    // The old writer's history on the remote is untouched and goes on.
    w.sh("echo three > a");
    assert_eq!(w.wait_replicated(), w_head + 1);
    assert!(w.status()["fork_at"].is_null());
    w.unmount();

    // The old writer gone: a follower that caught up takes over.
    let g = follower(&w, &url, "machine-c");
    g.mount();
    wait_latest(&g, w_head + 1);
    g.unmount();
    let mut g = g;
    g.extra = vec![
        "--agent".into(),
        "pro".into(),
        "--remote".into(),
        url.clone(),
    ];
    g.mount();
    g.sh("echo four > a");
    assert_eq!(g.wait_replicated(), w_head + 2);
    assert!(g.status()["fork_at"].is_null());
    // The old writer coming back cannot write over it.
    w.mount();
    assert_eq!(text(&std::fs::read(w.path("a")).unwrap()), "three\n");
    w.sh("echo stale > a");
    let t0 = Instant::now();
    while w.status()["fork_at"].is_null() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the old writer was not fenced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    g.unmount();
    g.verify();
}

/// `sovseal takeover`: refused while the writer's heartbeat is renewed;
/// once it stopped (cleanly, or killed and silent for three of its
/// intervals) the new machine takes over and writes on from its head.
#[test]
fn takeover_is_refused_while_the_writer_lives_and_works_once_it_is_gone() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let w = Mounted::new("tak", &["--remote", &url, "--heartbeat-secs", "1"]);
    w.sh("echo one > a");
    let head = w.wait_replicated();
    let b = w.second_home("machine-b");
    let takeover = |home: &Path| {
        support::mount::sovseal_in(
            home,
            &[
                "takeover",
                "--agent",
                "tak",
                "--remote",
                &url,
                "--quiet-secs",
                "1",
            ],
        )
    };
    // Alive (idle, but beating): refused, after restoring a verified copy.
    let t0 = Instant::now();
    fails(&takeover(&b), 5, "still being written");
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "watched only {:?}",
        t0.elapsed()
    );
    assert!(b.join("agents/tak").exists());

    // Killed: silent for three of its intervals, then taken over.
    w.signal(nix::sys::signal::Signal::SIGKILL);
    let o = takeover(&b);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("from snapshot {head}")),
        "{}",
        text(&o.stdout)
    );

    // Stopped cleanly: no wait beyond --quiet-secs.
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&w.mnt)
        .output();
    w.mount();
    w.sh("echo two > a");
    let head = w.wait_replicated();
    w.unmount();
    let t0 = Instant::now();
    let o = takeover(&b);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        text(&o.stdout).contains(&format!("from snapshot {head}")),
        "{}",
        text(&o.stdout)
    );

    // The new writer writes on, and replicates without a fork.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tak");
    std::fs::create_dir(&mnt).unwrap();
    let n = Mounted {
        dir,
        home: b,
        mnt,
        agent: "tak".into(),
        extra: vec!["--remote".into(), url.clone()],
        env: Vec::new(),
    };
    n.mount();
    assert_eq!(text(&std::fs::read(n.path("a")).unwrap()), "two\n");
    n.sh("echo three > a");
    assert_eq!(n.wait_replicated(), head + 1);
    assert!(n.status()["fork_at"].is_null());
    // A mount holds it now: a takeover here is refused at once.
    fails(&takeover(&n.home), 5, "already open for writing");
}

/// A data dir whose journal holds a writer's acknowledged operations (a
/// writer killed within its quiet period) is not followed: committing them
/// here would fork from the remote. Mounted as the writer, they are kept.
#[test]
fn a_writers_uncommitted_operations_are_not_followed_over() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let mut w = Mounted::new("jr", &["--remote", &url, "--quiet-ms", "60000"]);
    w.sh("echo a > a");
    w.wait_replicated();
    w.sh("mkdir d");
    w.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&w.mnt)
        .output();
    w.extra = vec!["--remote".into(), url.clone(), "--follow".into()];
    fails(&w.try_mount(), 2, "not yet in a snapshot");
    w.extra = vec!["--remote".into(), url];
    w.mount();
    assert!(w.path("d").is_dir());
}
