//! Signed checkpoints through a real mount and a real remote directory: the
//! mount signs them and runs the hook; `verify` checks them locally, against
//! the remote and against an externally kept copy; a remote that drops or
//! rolls back snapshots is caught on a machine that has never seen the
//! agent; forged, corrupted and stale checkpoints fail closed.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::mount::{MOUNT, Mounted, SOVSEAL, fails, ok, text};

/// The agent's directory on the default file:// remote.
fn remote_agent_dir(m: &Mounted) -> PathBuf {
    let root = m.home.join("remote/sovseal-v1");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn wait_checkpointed(m: &Mounted, seq: u64) {
    let t0 = Instant::now();
    loop {
        let s = m.status();
        if s["checkpointed_seq"].as_u64() >= Some(seq) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no checkpoint: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second machine: a fresh home holding the same master key (as after
/// `key import`), restoring from machine 1's remote directory.
fn fresh_restore(m: &Mounted, name: &str) -> Output {
    let home2 = m.second_home(name);
    let remote = format!("file://{}", m.home.join("remote").display());
    Command::new(SOVSEAL)
        .args(["restore", "--agent", &m.agent, "--remote", &remote])
        .arg(m.dir.path().join(format!("{name}-out")))
        .env("SOVSEAL_HOME", &home2)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap()
}

fn envelope(dir: &Path, seq: u64) -> PathBuf {
    dir.join("envelopes").join(format!("{seq:020}.json"))
}

/// Agent "anchored", mounted with a checkpoint after every snapshot and a
/// hook that keeps each checkpoint in a directory of its own (the external
/// anchor); two snapshots written, replicated, checkpointed; unmounted.
struct Anchored {
    m: Mounted,
    anchors: tempfile::TempDir,
    head: u64,
}

impl Anchored {
    fn new() -> Self {
        let anchors = tempfile::tempdir().unwrap();
        let hook = format!(
            "cat > {}/cp-$SOVSEAL_CHECKPOINT_SEQ.json",
            anchors.path().display()
        );
        let m = Mounted::new(
            "anchored",
            &[
                "--checkpoint-interval-secs",
                "0",
                "--checkpoint-hook",
                &hook,
            ],
        );
        m.sh("echo one > a && sync");
        m.sh("echo two > b && sync");
        let head = m.wait_replicated();
        wait_checkpointed(&m, head);
        let s = m.status();
        assert!(s["checkpoint_error"].is_null(), "{s}");
        m.unmount();
        Anchored { m, anchors, head }
    }

    /// The copy of the head's checkpoint that the hook kept.
    fn anchor(&self) -> PathBuf {
        self.anchors.path().join(format!("cp-{}.json", self.head))
    }

    /// Takes the head's envelope off the remote; returns its bytes.
    fn drop_head_snapshot(&self) -> Vec<u8> {
        let path = envelope(&remote_agent_dir(&self.m), self.head);
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        saved
    }

    /// Puts the envelope back: everything agrees again.
    fn restore_head_snapshot(&self, saved: Vec<u8>) {
        std::fs::write(envelope(&remote_agent_dir(&self.m), self.head), saved).unwrap();
        ok(&self
            .m
            .sovseal(&["verify", "--agent", "anchored", "--remote"]));
    }
}

#[test]
fn the_hook_gets_the_checkpoint_and_verify_checks_it_everywhere() {
    let a = Anchored::new();
    let (m, head) = (&a.m, a.head);
    // The hook got the checkpoint JSON; it is the one stored locally.
    let anchor = a.anchor();
    let hooked: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&anchor).unwrap()).unwrap();
    assert_eq!(hooked["seq"], head);
    assert_eq!(hooked["format"], "sovseal-checkpoint");

    // verify: local checkpoints, the remote, the external anchor.
    let v = ok(&m.sovseal(&[
        "verify",
        "--agent",
        "anchored",
        "--remote",
        "--checkpoint",
        anchor.to_str().unwrap(),
        "--max-age",
        "1h",
    ]));
    assert!(v.contains("signed checkpoints verified"), "{v}");
    assert!(v.contains(&format!("holds snapshots up to {head}")), "{v}");

    // A fresh machine restores it (and keeps the remote's checkpoints).
    ok(&fresh_restore(m, "m2"));
}

/// A restore fetches only the newest checkpoint on the remote (there is
/// one per checkpoint interval of the agent's life, and the newest vouches
/// for every snapshot before it through the parent links): an older one
/// that no longer parses does not stop it; `sovseal verify --remote`,
/// which checks them all, reports it.
#[test]
fn a_restore_fetches_only_the_newest_checkpoint() {
    let a = Anchored::new();
    let m = &a.m;
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let dir = remote_agent_dir(m).join("checkpoints");
    let listed = names(&dir);
    assert!(listed.len() >= 2, "{listed:?}");
    let oldest = dir.join(&listed[0]);
    let saved = std::fs::read(&oldest).unwrap();
    std::fs::write(&oldest, b"nope").unwrap();
    ok(&fresh_restore(m, "n1"));
    fails(
        &m.sovseal(&["verify", "--agent", "anchored", "--remote"]),
        3,
        "not checkpoint JSON",
    );
    std::fs::write(&oldest, saved).unwrap();
}

#[test]
fn a_remote_that_drops_a_checkpointed_snapshot_is_refused() {
    let a = Anchored::new();
    let m = &a.m;
    // The remote drops the newest snapshot but keeps its checkpoint:
    // machine 1 and a fresh machine both refuse.
    let saved = a.drop_head_snapshot();
    fails(
        &m.sovseal(&["verify", "--agent", "anchored", "--remote"]),
        3,
        "snapshots were dropped or rolled back",
    );
    fails(
        &fresh_restore(m, "m3"),
        3,
        "snapshots were dropped or rolled back",
    );
    a.restore_head_snapshot(saved);
}

#[test]
fn a_thorough_rollback_is_caught_by_the_anchor_and_local_checkpoints() {
    let a = Anchored::new();
    let m = &a.m;
    let anchor = a.anchor();
    // The remote drops the newest snapshot and deletes the checkpoints and
    // the copy of the newest (a thorough rollback): a fresh machine can no
    // longer tell from the remote alone, but the anchor kept by the hook,
    // or this machine's own checkpoints, still catch it.
    let saved = a.drop_head_snapshot();
    std::fs::remove_dir_all(remote_agent_dir(m).join("checkpoints")).unwrap();
    std::fs::remove_file(remote_agent_dir(m).join("checkpoint.json")).unwrap();
    ok(&fresh_restore(m, "m4"));
    fails(
        &m.sovseal(&["verify", "--agent", "anchored", "--remote"]),
        3,
        "dropped or rolled back",
    );
    let home5 = m.second_home("m5");
    let m5 = |args: &[&str]| {
        Command::new(SOVSEAL)
            .args(args)
            .env("SOVSEAL_HOME", &home5)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .output()
            .unwrap()
    };
    // Machine 5 mounts the agent (restored from the remote on first mount).
    let remote = format!("file://{}", m.home.join("remote").display());
    let mnt5 = m.dir.path().join("mnt5");
    std::fs::create_dir(&mnt5).unwrap();
    let o = Command::new(MOUNT)
        .args(["--agent", "anchored", "--remote", &remote])
        .arg(&mnt5)
        .env("SOVSEAL_HOME", &home5)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(std::fs::read(mnt5.join("a")).unwrap(), b"one\n");
    assert!(
        !mnt5.join("b").exists(),
        "the rolled-back remote lacks the newest snapshot"
    );
    ok(&Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt5)
        .output()
        .unwrap());
    let t0 = Instant::now();
    while !serde_json::from_str::<serde_json::Value>(&ok(&m5(&[
        "status", "--agent", "anchored", "--json",
    ])))
    .unwrap()["mounted_by_pid"]
        .is_null()
    {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    // On its own, machine 5 cannot tell...
    ok(&m5(&["verify", "--agent", "anchored", "--remote", &remote]));
    fails(
        &m5(&[
            "verify",
            "--agent",
            "anchored",
            "--checkpoint",
            anchor.to_str().unwrap(),
        ]),
        3,
        "dropped or rolled back",
    );
    a.restore_head_snapshot(saved);
}

#[test]
fn forged_corrupted_and_stale_checkpoints_fail_closed() {
    let m = Mounted::new("strict", &["--checkpoint-interval-secs", "0"]);
    m.sh("echo x > x && sync");
    let head = m.wait_replicated();
    wait_checkpointed(&m, head);
    m.unmount();
    let local = m
        .home
        .join("agents/strict/checkpoints")
        .join(format!("{head:020}.json"));
    let good = std::fs::read(&local).unwrap();

    // Stale: the newest checkpoint is older than --max-age.
    std::thread::sleep(Duration::from_millis(2100));
    fails(
        &m.sovseal(&["verify", "--agent", "strict", "--max-age", "1s"]),
        3,
        "the newest checkpoint is",
    );
    fails(
        &m.sovseal(&["verify", "--agent", "strict", "--max-age", "5 parsecs"]),
        2,
        "unknown duration unit",
    );
    ok(&m.sovseal(&["verify", "--agent", "strict", "--max-age", "1h"]));

    // Corrupted locally (a changed hash): the signature no longer verifies.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["hash"] = serde_json::json!("00".repeat(32));
    std::fs::write(&local, serde_json::to_vec(&v).unwrap()).unwrap();
    fails(
        &m.sovseal(&["verify", "--agent", "strict"]),
        3,
        "signature does not verify",
    );
    std::fs::write(&local, &good).unwrap();

    // Forged on the remote: signed by another master key (an attacker's),
    // claiming a later snapshot. A fresh machine refuses to restore.
    let rdir = remote_agent_dir(&m);
    let forged_cp = rdir
        .join("checkpoints")
        .join(format!("{:020}.json", head + 5));
    let mut f: serde_json::Value = serde_json::from_slice(&good).unwrap();
    f["seq"] = serde_json::json!(head + 5);
    std::fs::write(&forged_cp, serde_json::to_vec(&f).unwrap()).unwrap();
    fails(&fresh_restore(&m, "f1"), 3, "signature does not verify");
    fails(
        &m.sovseal(&["verify", "--agent", "strict", "--remote"]),
        3,
        "signature does not verify",
    );
    std::fs::remove_file(&forged_cp).unwrap();
    ok(&fresh_restore(&m, "f2"));

    // A checkpoint from elsewhere that is not JSON.
    let junk = m.dir.path().join("junk.json");
    std::fs::write(&junk, b"nope").unwrap();
    fails(
        &m.sovseal(&[
            "verify",
            "--agent",
            "strict",
            "--checkpoint",
            junk.to_str().unwrap(),
        ]),
        3,
        "not checkpoint JSON",
    );
}

#[test]
fn a_failing_hook_is_reported_and_nothing_is_lost() {
    let m = Mounted::new(
        "hooked",
        &[
            "--checkpoint-interval-secs",
            "0",
            "--checkpoint-hook",
            "echo anchoring service unreachable >&2; exit 7",
        ],
    );
    m.sh("echo data > d && sync");
    let head = m.wait_replicated();
    let t0 = Instant::now();
    let s = loop {
        let s = m.status();
        if !s["checkpoint_error"].is_null() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no hook error: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let e = s["checkpoint_error"].as_str().unwrap();
    assert!(
        e.contains("exit status: 7") && e.contains("anchoring service unreachable"),
        "{e}"
    );
    let human = text(&m.sovseal(&["status", "--agent", "hooked"]).stdout);
    assert!(human.contains("CHECKPOINT ERROR"), "{human}");
    m.unmount();
    let log = std::fs::read_to_string(m.home.join("logs/hooked.log")).unwrap();
    assert!(
        log.contains("ERROR") && log.contains("checkpoint of snapshot"),
        "{log}"
    );
    // The checkpoint itself was signed and stored; the data is intact.
    assert_eq!(m.status()["checkpointed_seq"], head);
    m.verify();

    // The manual command: a checkpoint now, with a hook that works.
    let out = m.dir.path().join("manual.json");
    let o = ok(&m.sovseal(&[
        "checkpoint",
        "--agent",
        "hooked",
        "--hook",
        &format!("cat > {}", out.display()),
    ]));
    assert!(o.contains(&format!("checkpoint of snapshot {head}")), "{o}");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(c["seq"], head);
    let j: serde_json::Value = serde_json::from_str(
        ok(&m.sovseal(&[
            "checkpoint",
            "--agent",
            "hooked",
            "--hook",
            "true",
            "--json",
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(
        (j["seq"].as_u64(), j["hook_ran"].as_bool()),
        (Some(head), Some(true))
    );
    assert_eq!(j["hash"].as_str().map(str::len), Some(64), "{j}");
    // Its failure is an error, not a warning.
    fails(
        &m.sovseal(&["checkpoint", "--agent", "hooked", "--hook", "exit 3"]),
        2,
        "exit status: 3",
    );
    fails(
        &m.sovseal(&["checkpoint", "--agent", "nobody"]),
        2,
        "nobody",
    );
}

/// `sovseal verify --remote` reads what a restore reads of the remote's
/// chain (every envelope file, the chain segments and the tail, the part
/// indexes and upload batch indexes, the forget and redaction records) and
/// holds each envelope against this machine's: an altered snapshot that no
/// checkpoint names, or a damaged chain or tail segment, part index or
/// batch index, is reported by the machine that wrote it, as a restore
/// elsewhere would refuse it (or, for a segment, read around it).
#[test]
fn verify_remote_holds_every_envelope_and_segment_against_this_chain() {
    let m = Mounted::new("audited", &[]);
    // A chain segment (1..=256) and a tail (from 257: 64 or more).
    m.py("for i in range(330):\n    open('n', 'w').write(str(i))");
    // And, past the tail, a snapshot of two pack parts of its own (9 MiB:
    // never in a batch).
    m.py("import os\nb = os.urandom(9 << 20)\nopen('big', 'wb').write(b)");
    let head = m.wait_replicated();
    m.unmount();
    let rdir = remote_agent_dir(&m);
    let segments = rdir.join("segments");
    let (chain, tail) = (
        segments.join(format!("{:020}.seg", 1)),
        segments.join("tail.seg"),
    );
    // (Written as the replicator uploaded 256 and 320, before
    // `wait_replicated` returned.)
    assert!(chain.exists() && tail.exists(), "{head}");
    let verify = || m.sovseal(&["verify", "--agent", "audited", "--remote"]);
    let v = ok(&verify());
    assert!(
        v.contains(&format!("chain is this machine's up to snapshot {head}")),
        "{v}"
    );
    assert!(v.contains("2 chain segments"), "{v}");
    // A snapshot no checkpoint names: the checkpoints alone cannot tell.
    let checkpointed: Vec<String> = std::fs::read_dir(rdir.join("checkpoints"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let n = (2..head)
        .find(|s| !checkpointed.contains(&format!("{s:020}.json")))
        .unwrap();

    // Its envelope file altered (its timestamp): verify names it, and a
    // fresh machine's restore (which reads the files) refuses it (at it,
    // or at the next one's parent link).
    let path = envelope(&rdir, n);
    let good = std::fs::read(&path).unwrap();
    let mut e: serde_json::Value = serde_json::from_slice(&good).unwrap();
    e["timestamp"] = serde_json::json!(e["timestamp"].as_i64().unwrap() + 1);
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    fails(
        &verify(),
        3,
        &format!("the envelope file on the remote differs from this machine's snapshot {n}"),
    );
    let o = fresh_restore(&m, "a1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("snapshot {n}")) || err.contains(&format!("snapshot {}", n + 1)),
        "{err}"
    );
    std::fs::write(&path, &good).unwrap();
    ok(&verify());

    // A chain segment, then the tail (what a lazy restore reads instead
    // of the files), altered in a member's envelope.
    for (seg, named) in [
        (&chain, "chain segment 1"),
        (&tail, "the tail segment (from 257)"),
    ] {
        let good = std::fs::read(seg).unwrap();
        let key = b"\"timestamp\":";
        let at = good.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 3;
        let mut bad = good.clone();
        bad[at] = if bad[at] == b'9' { b'8' } else { b'9' };
        std::fs::write(seg, &bad).unwrap();
        fails(&verify(), 3, named);
        std::fs::write(seg, &good).unwrap();
        ok(&verify());
    }

    // Cut short: the part index file of the snapshot past the tail (what
    // a lazy restore reads for it), and an upload batch's index (what it
    // reads for the batch's members).
    let prefix = format!("{head:020}-");
    let own = support::home::files_under(&rdir.join("indexes"))
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        });
    let in_batch = support::home::files_under(&rdir.join("batches"))
        .into_iter()
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            let seqs = |r: std::ops::Range<usize>| n.get(r).and_then(|d| d.parse::<u64>().ok());
            n.ends_with(".bix") && seqs(0..20).is_some_and(|f| f <= head)
        });
    assert!(own.is_some(), "no part index of {head}");
    assert!(in_batch.is_some(), "no upload batch");
    let cases = [
        (own, format!("snapshot {head}")),
        (in_batch, "upload batch".to_owned()),
    ];
    for (index, named) in cases.iter().filter_map(|(f, n)| Some((f.as_ref()?, n))) {
        let good = std::fs::read(index).unwrap();
        std::fs::write(index, &good[..good.len() - 1]).unwrap();
        fails(&verify(), 3, named);
        std::fs::write(index, &good).unwrap();
        ok(&verify());
    }

    // A snapshot's content where no restore finds it, though every index
    // decodes: either pack part of its own moved away, the part of the
    // upload batch holding it moved away, or its member's hash changed in
    // the batch index (the member then reads as absent).
    let nowhere = |seq: u64| format!("snapshot {seq}: its content is on the remote nowhere");
    for part in [1, 0] {
        let own = support::home::files_under(&rdir.join("packs"))
            .into_iter()
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(&prefix) && n.ends_with(&format!("-{part:04}.pack"))
            })
            .unwrap_or_else(|| panic!("part {part} of snapshot {head}"));
        let aside = own.with_extension("aside");
        std::fs::rename(&own, &aside).unwrap();
        fails(&verify(), 3, &nowhere(head));
        std::fs::rename(&aside, &own).unwrap();
        ok(&verify());
    }
    let bix = support::home::files_under(&rdir.join("batches"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".bix"))
        .expect("the loop's snapshots went up in batches");
    let first: u64 = bix.file_name().unwrap().to_string_lossy()[..20]
        .parse()
        .unwrap();
    let part = bix.with_extension("pack");
    let aside = part.with_extension("aside");
    std::fs::rename(&part, &aside).unwrap();
    fails(&verify(), 3, &nowhere(first));
    std::fs::rename(&aside, &part).unwrap();
    ok(&verify());
    // "SOVBIX01", the first snapshot, the count, then the first member's
    // envelope hash.
    let good = std::fs::read(&bix).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1;
    std::fs::write(&bix, &bad).unwrap();
    fails(&verify(), 3, &nowhere(first));
    std::fs::write(&bix, &good).unwrap();
    ok(&verify());

    // Snapshots forgotten and pruned here and there: the remote must keep
    // the forget record of each (a restore without it finds the content
    // missing). Both copies of one dropped (its file and the bundle).
    ok(&m.sovseal(&[
        "forget",
        "--agent",
        "audited",
        "--keep-last",
        "300",
        "--prune",
    ]));
    let v = ok(&verify());
    assert!(v.contains(&format!("{} forget", head - 300)), "{v}");
    let record = rdir.join("forgotten").join(format!("{:020}.json", 5));
    let (saved, bundle) = (
        std::fs::read(&record).unwrap(),
        std::fs::read(segments.join("forgotten.fgb")).unwrap(),
    );
    std::fs::remove_file(&record).unwrap();
    std::fs::remove_file(segments.join("forgotten.fgb")).unwrap();
    fails(
        &verify(),
        3,
        "snapshot 5: its forget record is missing on the remote",
    );
    std::fs::write(&record, saved).unwrap();
    std::fs::write(segments.join("forgotten.fgb"), bundle).unwrap();
    ok(&verify());
}
