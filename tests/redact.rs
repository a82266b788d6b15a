//! Redaction over history made in a real mount: a file's content is erased
//! from every snapshot, locally and on the remote (its object ids appear in
//! no pack), the chain still verifies, the redaction is recorded, a fresh
//! machine restores the rest; bad input refused.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::mount::{Mounted, SOVSEAL, fails, ok, text};

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Writes secret.bin: 150,000 random bytes, a hole, and 100 random bytes
/// at 9 MiB: 145 chunk references at 64 KiB chunks, so a chunk tree (tree
/// format 7: a chunk-index node over lists of 128 and 17 references) over
/// four stored chunks. One open and close: one snapshot.
const WRITE_SECRET: &str = "python3 -c \"import os; f = open('secret.bin', 'wb'); f.write(os.urandom(150000)); f.seek(9 << 20); f.write(os.urandom(100))\"";
/// The size of secret.bin.
const SECRET_LEN: usize = (9 << 20) + 100;
/// Objects of one version of secret.bin: four chunks, two chunk lists,
/// one chunk-index node.
const SECRET_OBJECTS: u64 = 7;

/// Agent "red": other.txt "keep me" and secret.bin in two versions
/// (snapshots v1, v2), then secret.bin deleted; replicated, unmounted.
/// On the way, redact refuses while the path is still in the head and
/// while the agent is mounted. Returns the agent and (v1, v2).
fn deleted_secret() -> (Mounted, u64, u64) {
    let m = Mounted::new("red", &[]);
    m.sh(&format!(
        "printf 'keep me' > other.txt && {WRITE_SECRET} && sync"
    ));
    let v1 = m.head();
    m.sh(&format!("{WRITE_SECRET} && sync"));
    let v2 = m.head();
    m.wait_replicated();
    // Still in the head: refused.
    m.unmount();
    fails(
        &m.sovseal(&["redact", "--agent", "red", "/secret.bin"]),
        2,
        "still exists in the head",
    );
    m.mount();
    m.sh("rm secret.bin && sync");
    // While mounted: refused (the writer lock).
    fails(
        &m.sovseal(&["redact", "--agent", "red", "/secret.bin"]),
        5,
        "already open for writing",
    );
    m.wait_replicated();
    m.unmount();
    (m, v1, v2)
}

/// `sovseal cat` of `path` in snapshot `seq`.
fn cat(m: &Mounted, seq: u64, path: &str) -> std::process::Output {
    m.sovseal(&["cat", "--agent", "red", "--seq", &seq.to_string(), path])
}

/// `sovseal cat` of secret.bin in snapshot `seq` fails as erased content
/// does (exit 3).
fn secret_unreadable(m: &Mounted, seq: u64) {
    let o = cat(m, seq, "/secret.bin");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
}

/// The dry run's plan, as JSON: it covers both snapshots.
fn plan(m: &Mounted, v1: u64, v2: u64) -> serde_json::Value {
    let plan: serde_json::Value = serde_json::from_str(&ok(&m.sovseal(&[
        "redact",
        "--agent",
        "red",
        "--dry-run",
        "--json",
        "/secret.bin",
    ])))
    .unwrap();
    assert_eq!(plan["seqs"], serde_json::json!([v1, v2]), "{plan}");
    // Every object of both versions: chunks, lists and the index node.
    assert_eq!(plan["objects"], 2 * SECRET_OBJECTS, "{plan}");
    plan
}

/// Redacts /secret.bin for real; returns the redaction record's directory
/// and the record.
fn redact_secret(m: &Mounted) -> (PathBuf, serde_json::Value) {
    let (o, rec) = redact_secret_once(m);
    assert!(o.contains("from 2 snapshots"), "{o}");
    (m.home.join("agents/red/redactions"), rec)
}

/// Redacts /secret.bin for real (its only redaction); returns what the
/// command printed and the record.
fn redact_secret_once(m: &Mounted) -> (String, serde_json::Value) {
    let o = ok(&m.sovseal(&["redact", "--agent", "red", "/secret.bin"]));
    let rec_dir = m.home.join("agents/red/redactions");
    let rec_file = std::fs::read_dir(&rec_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_file).unwrap()).unwrap();
    assert!(
        !text(&std::fs::read(&rec_file).unwrap()).contains("secret"),
        "the record names the path in the clear"
    );
    (o, rec)
}

#[test]
fn a_dry_run_shows_the_plan_and_erases_nothing() {
    let (m, v1, v2) = deleted_secret();
    // Dry run: the plan (checked inside), nothing changes.
    plan(&m, v1, v2);
    // Long work shows progress on a terminal (here a pty from script(1)),
    // and nothing when stderr is not one.
    let o = m
        .cmd("script")
        .args([
            "-qec",
            &format!("{SOVSEAL} redact --agent red --dry-run /secret.bin"),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let tty_out = text(&o.stdout);
    assert!(
        tty_out.contains("redact: reading snapshot") && tty_out.contains("would erase"),
        "{tty_out}"
    );
    let o = m.sovseal(&["redact", "--agent", "red", "--dry-run", "/secret.bin"]);
    assert!(
        !text(&o.stderr).contains("reading snapshot"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        m.sovseal(&[
            "cat",
            "--agent",
            "red",
            "--seq",
            &v1.to_string(),
            "/secret.bin"
        ])
        .stdout
        .len(),
        SECRET_LEN
    );
}

#[test]
fn redact_erases_a_path_from_all_history_and_the_remote() {
    let (m, v1, v2) = deleted_secret();
    let plan = plan(&m, v1, v2);
    let (rec_dir, rec) = redact_secret(&m);
    // No erased object id is left in any local pack or remote pack part.
    for id in rec["objects"].as_array().unwrap() {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&id.as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(files_containing(&m.home.join("agents/red/packs"), &bytes).is_empty());
        assert!(files_containing(&m.home.join("remote"), &bytes).is_empty());
    }
    // The history reads, except the erased content; the chain verifies.
    for seq in [v1, v2] {
        secret_unreadable(&m, seq);
        assert_eq!(cat(&m, seq, "/other.txt").stdout, b"keep me");
    }
    let rep: serde_json::Value =
        serde_json::from_str(&ok(&m.sovseal(&["verify", "--agent", "red", "--json"]))).unwrap();
    assert_eq!(rep["redacted"], plan["objects"]);
    // Again: nothing left to erase, no new record.
    let o = ok(&m.sovseal(&["redact", "--agent", "red", "/secret.bin"]));
    assert!(o.contains("erased 0 objects"), "{o}");
    assert_eq!(std::fs::read_dir(&rec_dir).unwrap().count(), 1);
}

#[test]
fn a_fresh_machine_restores_the_rest_and_a_forged_record_excuses_nothing() {
    let (m, v1, v2) = deleted_secret();
    plan(&m, v1, v2);
    let (_, rec) = redact_secret(&m);
    // A fresh machine restores from the remote and verifies.
    let home2 = m.second_home("home2");
    let remote = format!("file://{}", m.home.join("remote").display());
    let restore = |dest: &str| {
        Command::new(SOVSEAL)
            .args(["restore", "--agent", "red", "--remote", &remote])
            .arg(m.dir.path().join(dest))
            .env("SOVSEAL_HOME", &home2)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .output()
            .unwrap()
    };
    ok(&restore("r1"));
    assert_eq!(
        std::fs::read(m.dir.path().join("r1/other.txt")).unwrap(),
        b"keep me"
    );
    // A forged record cannot excuse missing content.
    let rdir = std::fs::read_dir(m.home.join("remote/sovseal-v1"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut forged = rec.clone();
    forged["at_ms"] = serde_json::json!(1);
    std::fs::write(
        rdir.join("redactions/00000000000000000001-forged.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    fails(&restore("r2"), 3, "signature does not verify");
}

#[test]
fn redact_refuses_bad_input() {
    let (m, v1, v2) = deleted_secret();
    plan(&m, v1, v2);
    redact_secret(&m);
    // Bad input.
    fails(
        &m.sovseal(&["redact", "--agent", "red", "/never-was"]),
        2,
        "has no content",
    );
    fails(
        &m.sovseal(&["redact", "--agent", "red", "/"]),
        2,
        "whole tree",
    );
    fails(
        &m.sovseal(&["redact", "--agent", "nobody", "/x"]),
        2,
        "nobody",
    );
}

/// The same bytes written again after a redaction are the same objects,
/// stored again: a redaction of their new path erases them again (the
/// first record does not make them count as gone, nor the redacted file's
/// old snapshots as users that keep them). A rollback to a snapshot whose
/// content a redaction erased is refused: its head could not be read, and
/// followers holding the content would take it for content written again.
#[test]
fn content_written_again_is_redacted_again_and_a_rollback_to_erased_content_is_refused() {
    let (m, v1, v2) = deleted_secret();
    let secret = m
        .sovseal(&[
            "cat",
            "--agent",
            "red",
            "--seq",
            &v2.to_string(),
            "/secret.bin",
        ])
        .stdout;
    assert_eq!(secret.len(), SECRET_LEN);
    redact_secret(&m);
    fails(
        &m.sovseal(&["rollback", "--agent", "red", "--seq", &v1.to_string()]),
        2,
        "a redaction erased",
    );
    m.mount();
    // Exactly as secret.bin was written (its hole too): the same objects,
    // its chunk lists and chunk-index node included.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(m.path("copy.bin")).unwrap();
        f.write_all(&secret[..150_000]).unwrap();
        f.seek(SeekFrom::Start(9 << 20)).unwrap();
        f.write_all(&secret[9 << 20..]).unwrap();
    }
    let with_copy = m.wait_replicated();
    m.sh("rm copy.bin && sync");
    m.wait_replicated();
    m.unmount();
    let o = ok(&m.sovseal(&["redact", "--agent", "red", "/copy.bin"]));
    assert!(
        o.contains(&format!("erased {SECRET_OBJECTS} objects")),
        "{o}"
    );
    let o = m.sovseal(&[
        "cat",
        "--agent",
        "red",
        "--seq",
        &with_copy.to_string(),
        "/copy.bin",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    m.verify();
}

/// The raw bytes of each erased object id a redaction record lists.
fn erased_ids(rec: &serde_json::Value) -> Vec<Vec<u8>> {
    rec["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let id = id.as_str().unwrap();
            (0..32)
                .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

/// Content first stored by a snapshot that was forgotten since (the prune
/// keeps that snapshot's remote parts while a retained snapshot still uses
/// the content, and removes its tree here, so the redaction's plan cannot
/// name it) leaves the remote too. And a machine that restores whole from
/// a remote still holding it (redacted by a build that did not rewrite
/// those parts) neither keeps nor serves it.
#[test]
fn content_first_stored_by_a_forgotten_snapshot_leaves_the_remote_and_no_restore_keeps_it() {
    let m = Mounted::new("red", &[]);
    m.sh(&format!("{WRITE_SECRET} && sync"));
    let first = m.head();
    for i in 0..3 {
        m.sh(&format!("echo {i} > other.txt && sync"));
    }
    m.wait_replicated();
    m.unmount();
    // The snapshot that stored secret.bin is forgotten and pruned; the
    // remote keeps its parts (the next snapshots use its chunks).
    ok(&m.sovseal(&["forget", "--agent", "red", "--keep-last", "2", "--prune"]));
    let remote = m.home.join("remote");
    let parts_of = |seq: u64| {
        support::home::files_under(&remote)
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{seq:020}-"))
                    && f.extension().is_some_and(|e| e == "pack")
            })
            .count()
    };
    assert!(
        parts_of(first) > 0,
        "kept on the remote: its chunks are used"
    );
    m.mount();
    m.sh("rm secret.bin && sync");
    m.wait_replicated();
    m.unmount();
    let before: Vec<(PathBuf, Vec<u8>)> = support::home::files_under(&remote)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "pack"))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    let (_, rec) = redact_secret_once(&m);
    let ids = erased_ids(&rec);
    assert!(!ids.is_empty());
    let holding = |b: &[u8]| ids.iter().any(|id| b.windows(32).any(|w| w == &id[..]));
    let stored_first: Vec<&(PathBuf, Vec<u8>)> =
        before.iter().filter(|(_, b)| holding(b)).collect();
    assert!(
        stored_first.iter().any(|(f, _)| f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{first:020}-"))),
        "the forgotten snapshot's parts held the content"
    );
    for id in &ids {
        assert!(files_containing(&m.home.join("agents/red/packs"), id).is_empty());
        assert!(
            files_containing(&remote, id).is_empty(),
            "left on the remote"
        );
    }
    // A prune walks the retained snapshots that held the file without
    // reading what the redaction erased from them.
    ok(&m.sovseal(&["prune", "--agent", "red"]));

    // A remote as a build that did not rewrite them left it.
    for (f, b) in &stored_first {
        std::fs::write(f, b).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let fresh = Mounted {
        home: m.second_home("fresh"),
        mnt: dir.path().join("view"),
        agent: "red".into(),
        extra: [
            "--agent",
            "red",
            "--remote",
            &format!("file://{}", remote.display()),
            "--full-restore",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        env: Vec::new(),
        dir,
    };
    std::fs::create_dir(&fresh.mnt).unwrap();
    fresh.mount();
    assert_eq!(
        std::fs::read(fresh.path("other.txt")).unwrap(),
        b"2\n",
        "the rest restored"
    );
    fresh.unmount();
    for id in &ids {
        assert!(
            files_containing(&fresh.home.join("agents/red/packs"), id).is_empty(),
            "an erased object restored"
        );
    }
    for seq in first + 2..=first + 3 {
        secret_unreadable(&fresh, seq);
    }
    ok(&fresh.sovseal(&["verify", "--agent", "red"]));
}

/// A mount given its own `--remote` replicates there. A redaction, prune
/// or checkpoint run without `--remote` would act on the configured remote
/// (here the home's default directory) and report its work done while the
/// agent's remote keeps everything: refused before anything changes here,
/// naming the remote; with `--remote` the redaction runs and rewrites the
/// parts there.
#[test]
fn commands_that_change_the_remote_refuse_one_the_agent_does_not_replicate_to() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let url = format!("file://{}", remote.display());
    let m = Mounted::new("away", &["--remote", &url]);
    m.sh("head -c 5000 /dev/urandom > secret.bin && echo keep > keep");
    m.sh("rm secret.bin");
    m.wait_replicated();
    m.unmount();
    let shown = format!("replicates to {url}");
    fails(
        &m.sovseal(&["redact", "--agent", "away", "/secret.bin"]),
        2,
        &shown,
    );
    assert!(
        !m.home.join("agents/away/redactions").exists()
            || std::fs::read_dir(m.home.join("agents/away/redactions"))
                .unwrap()
                .next()
                .is_none(),
        "a refused redaction erased here"
    );
    fails(&m.sovseal(&["prune", "--agent", "away"]), 2, &shown);
    let snapshots = m.snapshots();
    fails(
        &m.sovseal(&["forget", "--agent", "away", "--keep-last", "1", "--prune"]),
        2,
        &shown,
    );
    assert_eq!(m.snapshots(), snapshots, "a refused forget forgot");
    fails(&m.sovseal(&["checkpoint", "--agent", "away"]), 2, &shown);
    let o = ok(&m.sovseal(&["redact", "--agent", "away", "--remote", &url, "/secret.bin"]));
    assert!(o.contains("1 remote parts rewritten"), "{o}");
}

/// A secret that a fold holds and a delta commit after it removed (tree
/// format 8), then redacted: the snapshots of that chain still reach the
/// fold's record of it (a walk reads a fold's pages whole), so the record
/// lists them too, and they verify without it (planted: a plan listing only
/// the snapshots where the path resolves fails `verify_snapshot` of the
/// head).
#[test]
fn a_secret_a_fold_holds_and_a_delta_removed_is_redacted_for_the_whole_chain() {
    use sovseal::history::{redact, verify};
    use sovseal::seal::tree::ROOT_INO;
    let env = support::home::Env::new();
    let mut e = env.open();
    e.set_fold_every(0);
    let s = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(s, 0, &support::home::bytes(7, 100_000)).unwrap();
    let k = e.create(ROOT_INO, b"keep", 0o644, 0, 0).unwrap().ino;
    e.write(k, 0, b"kept").unwrap();
    e.commit().unwrap();
    let fold = e.head().seq();
    e.set_fold_every(8);
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    e.write(k, 0, b"kept again").unwrap();
    e.commit().unwrap();
    let head = e.head().seq();
    // A follower: a copy of the data dir from before the redaction.
    drop(e);
    let follower = support::home::Env::new();
    copy_tree(env.home.root(), follower.home.root());
    let e = env.open();
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    assert!(!plan.erase.is_empty());
    assert_eq!(plan.seqs, (fold..=head).collect::<Vec<_>>());
    let rec = redact::apply_local(e.agent(), "secret", &plan).unwrap();
    let v = e.agent().head().unwrap();
    verify::verify_snapshot(e.agent(), &v).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(e.read(k, 0, 100).unwrap(), b"kept again");
    // The fold forgotten and pruned, the chain still reads through its
    // pages: verify and a prune accept what is erased there.
    sovseal::history::retention::forget(e.agent(), &[fold]).unwrap();
    sovseal::history::retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    sovseal::history::retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    assert_eq!(e.read(k, 0, 100).unwrap(), b"kept again");
    // The follower, given the record, erases every object it names: the
    // chain's snapshots that reach them through the fold's pages are
    // listed, so none of them keeps them.
    let f = follower.open();
    redact::save_fetched(f.agent(), std::slice::from_ref(&rec)).unwrap();
    let allowed = redact::allowances(f.agent()).unwrap();
    let erasable = redact::erasable(f.agent(), &allowed).unwrap();
    assert_eq!(erasable, plan.erase.iter().copied().collect());
    // The writer's next commit folds: a delta on these pages would reach
    // the erased content again, in a snapshot the record does not list.
    // With every listed snapshot forgotten and pruned, verify walks it.
    drop(e);
    let mut e = env.open();
    e.write(k, 0, b"kept a third time").unwrap();
    e.commit().unwrap();
    assert!(e.head().manifest().delta.is_none(), "a fold");
    let listed: Vec<u64> = plan.seqs.iter().copied().filter(|&s| s != fold).collect();
    sovseal::history::retention::forget(e.agent(), &listed).unwrap();
    sovseal::history::retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    // And the chain goes on as deltas.
    e.write(k, 0, b"kept a fourth time").unwrap();
    e.commit().unwrap();
    assert!(e.head().manifest().delta.is_some(), "a delta");
    verify::verify(e.agent(), |_, _| {}).unwrap();
}

/// Content a fold's pages hold under another file, which a chain removed
/// and a later snapshot stored again under the redacted path: the
/// snapshots on those pages reach it (their objects include the fold's
/// records) and are listed, though the path never existed there. With the
/// fold forgotten, verify walks those pages from the chain's snapshot.
#[test]
fn content_a_fold_holds_under_another_name_is_allowed_missing_where_its_pages_are_read() {
    use sovseal::history::{redact, retention, verify};
    use sovseal::seal::tree::ROOT_INO;
    let env = support::home::Env::new();
    let mut e = env.open();
    let content = support::home::bytes(11, 100_000);
    e.set_fold_every(0);
    let a = e.create(ROOT_INO, b"a", 0o600, 0, 0).unwrap().ino;
    e.write(a, 0, &content).unwrap();
    e.commit().unwrap();
    let f0 = e.head().seq();
    e.set_fold_every(8);
    e.unlink(ROOT_INO, b"a").unwrap();
    e.commit().unwrap();
    let s1 = e.head().seq();
    assert!(e.head().manifest().delta.is_some());
    // A later fold, on which the secret comes and goes.
    e.set_fold_every(0);
    let k = e.create(ROOT_INO, b"keep", 0o644, 0, 0).unwrap().ino;
    e.write(k, 0, b"kept").unwrap();
    e.commit().unwrap();
    e.set_fold_every(8);
    let s = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(s, 0, &content).unwrap();
    e.commit().unwrap();
    let s2 = e.head().seq();
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    retention::forget(e.agent(), &[f0]).unwrap();
    retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    assert!(!plan.erase.is_empty());
    assert_eq!(plan.seqs, vec![s1, s2]);
    redact::apply_local(e.agent(), "secret", &plan).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(e.read(k, 0, 100).unwrap(), b"kept");
}

/// The fold holds a file whose chunk list a redaction keeps while it
/// erases chunks below it (shared with the redacted file): the writer's
/// next commit must still fold, or a delta on those pages reaches the
/// erased chunks in a snapshot no record lists.
#[test]
fn a_commit_after_a_redaction_folds_when_the_fold_holds_chunks_it_erased_below_a_kept_list() {
    use sovseal::history::{redact, retention, verify};
    use sovseal::seal::tree::ROOT_INO;
    const CHUNK: usize = 1 << 16;
    let env = support::home::Env::new();
    let mut e = env.open();
    // Nine chunks: a chunk list of its own. The secret shares five.
    let a_bytes = support::home::bytes(21, 9 * CHUNK);
    let mut secret = a_bytes[..5 * CHUNK].to_vec();
    secret.extend(support::home::bytes(22, 4 * CHUNK));
    e.set_fold_every(0);
    let a = e.create(ROOT_INO, b"a", 0o600, 0, 0).unwrap().ino;
    e.write(a, 0, &a_bytes).unwrap();
    let k = e.create(ROOT_INO, b"keep", 0o644, 0, 0).unwrap().ino;
    e.write(k, 0, b"kept").unwrap();
    e.commit().unwrap();
    let fold = e.head().seq();
    e.set_fold_every(8);
    e.unlink(ROOT_INO, b"a").unwrap();
    e.commit().unwrap();
    let s = e.create(ROOT_INO, b"secret", 0o600, 0, 0).unwrap().ino;
    e.write(s, 0, &secret).unwrap();
    e.commit().unwrap();
    e.unlink(ROOT_INO, b"secret").unwrap();
    e.commit().unwrap();
    let head = e.head().seq();
    retention::forget(e.agent(), &[fold]).unwrap();
    retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    let plan = redact::plan(e.agent(), "secret", &mut |_, _| {}).unwrap();
    assert_eq!(plan.seqs, (fold + 1..=head).collect::<Vec<_>>());
    redact::apply_local(e.agent(), "secret", &plan).unwrap();
    drop(e);
    let mut e = env.open();
    e.write(k, 0, b"kept again").unwrap();
    e.commit().unwrap();
    assert!(e.head().manifest().delta.is_none(), "a fold");
    retention::forget(e.agent(), &plan.seqs).unwrap();
    retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    verify::verify(e.agent(), |_, _| {}).unwrap();
    assert_eq!(e.read(k, 0, 100).unwrap(), b"kept again");
}

/// Copies the tree at `from` to `to` (which must not exist), modes kept.
fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}
