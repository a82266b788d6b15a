//! Retention through the CLI over history made in a real mount: forget by
//! policy (dry run, JSON), what stops being listed, prune locally and on the
//! remote, a fresh machine restoring what remains, the chain still
//! verifying; bad input (no policy, a mounted agent, a forged forget
//! record); a policy from config.json applied when the mount starts.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::mount::{Mounted, SOVSEAL, fails, ok, text};

fn dir_bytes(d: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![d.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += e.metadata().unwrap().len();
            }
        }
    }
    n
}

fn files(d: &Path) -> usize {
    std::fs::read_dir(d).map_or(0, |r| r.count())
}

/// Eight versions of a 256 KiB file (distinct random bytes each), beside a
/// file that never changes; every version replicated.
fn history(name: &str) -> (Mounted, Vec<u64>, Vec<Vec<u8>>) {
    let m = Mounted::new(name, &[]);
    m.sh("printf stable > stable.txt && sync");
    let mut seqs = Vec::new();
    let mut versions = Vec::new();
    for _ in 0..8 {
        m.sh("head -c 262144 /dev/urandom > big.bin && sync");
        seqs.push(m.head());
        versions.push(std::fs::read(m.path("big.bin")).unwrap());
    }
    m.wait_replicated();
    m.unmount();
    (m, seqs, versions)
}

/// Agent "ret" over [`history`], with what it listed before any forget.
struct Ret {
    m: Mounted,
    seqs: Vec<u64>,
    versions: Vec<Vec<u8>>,
    all_before: Vec<u64>,
}

impl Ret {
    fn new() -> Self {
        let (m, seqs, versions) = history("ret");
        let all_before = m.snapshots();
        Ret {
            m,
            seqs,
            versions,
            all_before,
        }
    }

    /// The agent's directory on the default file:// remote.
    fn remote_dir(&self) -> PathBuf {
        let root = self.m.home.join("remote/sovseal-v1");
        std::fs::read_dir(&root)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    }

    /// The three snapshots that `--keep-last 3` retains.
    fn last_three(&self) -> &[u64] {
        &self.all_before[self.all_before.len() - 3..]
    }

    /// Dry run of `--keep-last 3`: the plan (the snapshots it would
    /// forget), and nothing changes.
    fn planned_forget(&self) -> Vec<u64> {
        let m = &self.m;
        let v: serde_json::Value = serde_json::from_str(&ok(&m.sovseal(&[
            "forget",
            "--agent",
            "ret",
            "--keep-last",
            "3",
            "--dry-run",
            "--json",
        ])))
        .unwrap();
        let forgotten: Vec<u64> = v["forgotten"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(forgotten.len(), self.all_before.len() - 3);
        assert_eq!(m.snapshots(), self.all_before);
        forgotten
    }

    /// Forget for real: three listed, the rest refused by name, chain intact.
    fn forget_keeps_the_last_three(&self, forgotten: &[u64]) {
        let (m, seqs, all_before) = (&self.m, &self.seqs, &self.all_before);
        let o = ok(&m.sovseal(&["forget", "--agent", "ret", "--keep-last", "3"]));
        assert!(
            o.contains(&format!("forgot {} snapshots", forgotten.len())),
            "{o}"
        );
        assert_eq!(m.snapshots(), self.last_three());
        fails(
            &m.sovseal(&[
                "cat",
                "--agent",
                "ret",
                "--seq",
                &seqs[0].to_string(),
                "/big.bin",
            ]),
            2,
            "was forgotten",
        );
        fails(
            &m.sovseal(&["rollback", "--agent", "ret", "--seq", &seqs[0].to_string()]),
            2,
            "was forgotten",
        );
        let rep: serde_json::Value =
            serde_json::from_str(&ok(&m.sovseal(&["verify", "--agent", "ret", "--json"]))).unwrap();
        assert_eq!(rep["forgotten"], forgotten.len());
        assert_eq!(rep["snapshots"], all_before.len());
    }

    /// Prune: local packs shrink by about the forgotten versions; the remote
    /// loses their parts; what is retained reads back exactly.
    fn prune_frees_the_forgotten_versions(&self, forgotten: &[u64]) {
        let (m, seqs, versions) = (&self.m, &self.seqs, &self.versions);
        let packs = m.home.join("agents/ret/packs");
        let rdir = self.remote_dir();
        let local_before = dir_bytes(&packs);
        // (Pack parts of their own, and upload batches.)
        let remote_bytes = || dir_bytes(&rdir.join("packs")) + dir_bytes(&rdir.join("batches"));
        let remote_before = remote_bytes();
        let r: serde_json::Value =
            serde_json::from_str(&ok(&m.sovseal(&["prune", "--agent", "ret", "--json"]))).unwrap();
        let freed = local_before - dir_bytes(&packs);
        assert!(
            freed >= 5 * 262_144,
            "freed {freed} bytes of {local_before}: {r}"
        );
        assert!(r["objects_removed"].as_u64().unwrap() >= 5, "{r}");
        assert!(r["remote_snapshots_pruned"].as_u64().unwrap() >= 5, "{r}");
        // (Parts of forgotten snapshots go, or are written again with what
        // a kept snapshot still reads: a delta of its chain.)
        let remote_after = remote_bytes();
        assert!(
            remote_after + 5 * 262_144 <= remote_before,
            "remote packs {remote_before} -> {remote_after} bytes: {r}"
        );
        assert_eq!(files(&rdir.join("forgotten")), forgotten.len());
        for (i, seq) in seqs.iter().enumerate().skip(5) {
            let o = m.sovseal(&[
                "cat",
                "--agent",
                "ret",
                "--seq",
                &seq.to_string(),
                "/big.bin",
            ]);
            assert_eq!(o.stdout, versions[i], "snapshot {seq}");
        }
        let o = m.sovseal(&["cat", "--agent", "ret", "/stable.txt"]);
        assert_eq!(
            o.stdout, b"stable",
            "content first written in a forgotten snapshot"
        );
        m.verify();
        // Pruning again finds nothing.
        let r: serde_json::Value =
            serde_json::from_str(&ok(&m.sovseal(&["prune", "--agent", "ret", "--json"]))).unwrap();
        assert_eq!(r["objects_removed"], 0);
    }

    /// The mount lists only what is retained, refuses prune, and goes on
    /// writing (more.txt, one new snapshot).
    fn the_mount_lists_only_what_is_retained(&self) {
        let (m, seqs) = (&self.m, &self.seqs);
        let head = *self.all_before.last().unwrap();
        m.mount();
        let mut listed: Vec<String> = std::fs::read_dir(m.path(".snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .collect();
        listed.sort();
        let want: Vec<String> = self
            .last_three()
            .iter()
            .map(|s| format!("{s:010}"))
            .collect();
        assert_eq!(listed, want);
        assert!(!m.path(&format!(".snapshots/{:010}", seqs[0])).exists());
        // Prune while mounted: refused, nothing changed.
        fails(
            &m.sovseal(&["prune", "--agent", "ret"]),
            5,
            "already open for writing",
        );
        m.sh("echo more > more.txt && sync");
        m.wait_replicated();
        m.unmount();
        assert_eq!(m.head(), head + 1);
        m.verify();
    }

    /// A fresh machine (same master key) restores from the pruned remote;
    /// a remote cannot pass a deletion off as a forget.
    fn a_fresh_machine_restores_what_remains(&self) {
        let (m, seqs, versions, all_before) =
            (&self.m, &self.seqs, &self.versions, &self.all_before);
        let rdir = self.remote_dir();
        let home2 = m.second_home("home2");
        let remote = format!("file://{}", m.home.join("remote").display());
        let restore = |dest: &str| {
            Command::new(SOVSEAL)
                .args(["restore", "--agent", "ret", "--remote", &remote])
                .arg(m.dir.path().join(dest))
                .env("SOVSEAL_HOME", &home2)
                .env("SOVSEAL_KEY_FALLBACK", "file")
                .output()
                .unwrap()
        };
        ok(&restore("r1"));
        assert_eq!(
            std::fs::read(m.dir.path().join("r1/big.bin")).unwrap(),
            versions[7]
        );
        assert_eq!(
            std::fs::read(m.dir.path().join("r1/more.txt")).unwrap(),
            b"more\n"
        );

        // A forged record for a retained snapshot is refused.
        let kept = all_before[all_before.len() - 2];
        let fake = rdir.join("forgotten").join(format!("{kept:020}.json"));
        let mut rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(rdir.join("forgotten").join(format!("{:020}.json", seqs[0]))).unwrap(),
        )
        .unwrap();
        rec["seq"] = kept.into();
        std::fs::write(&fake, serde_json::to_vec(&rec).unwrap()).unwrap();
        fails(&restore("r2"), 3, "signature does not verify");
        std::fs::remove_file(&fake).unwrap();
    }
}

#[test]
fn forget_without_a_policy_or_in_a_dry_run_changes_nothing() {
    let r = Ret::new();
    let m = &r.m;
    // No policy: refused; nothing changes.
    fails(
        &m.sovseal(&["forget", "--agent", "ret"]),
        2,
        "refusing to forget every snapshot",
    );
    fails(
        &m.sovseal(&["forget", "--agent", "ret", "--keep-within", "3 fortnights"]),
        2,
        "duration",
    );
    // Dry run: the plan, and nothing changes.
    r.planned_forget();
}

/// One history through every step, each step checking what the one before
/// it left: forget, prune, the mount after, a fresh machine restoring.
#[test]
fn forget_and_prune_keep_the_chain_and_free_the_space() {
    let r = Ret::new();
    let forgotten = r.planned_forget();
    r.forget_keeps_the_last_three(&forgotten);
    r.prune_frees_the_forgotten_versions(&forgotten);
    r.the_mount_lists_only_what_is_retained();
    r.a_fresh_machine_restores_what_remains();
}

#[test]
fn a_policy_in_config_is_applied_when_the_mount_starts() {
    let (m, _seqs, versions) = history("auto");
    let before = m.snapshots().len();
    assert!(before >= 9);
    let config = |text: &str| {
        let p = m.home.join("config.json");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    };
    config(r#"{"agents": {"auto": {"retention": {"keep_last": 2}}}}"#);
    m.mount();
    assert_eq!(m.snapshots().len(), 2);
    assert_eq!(std::fs::read(m.path("big.bin")).unwrap(), versions[7]);
    let log = std::fs::read_to_string(m.home.join("logs/auto.log")).unwrap();
    assert!(
        log.contains(&format!("retention: forgot {}", before - 2)),
        "{log}"
    );
    m.unmount();
    m.verify();
    // A policy that would forget everything is refused, and the mount with it.
    config(r#"{"retention": {}}"#);
    let o = m.try_mount();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("refusing to forget"),
        "{}",
        text(&o.stderr)
    );
}

/// A rollback's snapshot reads its target's fold pages with no chain (or
/// a shorter one) while a later delta snapshot replaced a record of those
/// pages: a prune must still keep what the rollback's head reads (the
/// replaced record's content), although the snapshot walked first reached
/// those pages through its chain (planted: the walk skipping the fold's
/// records a chain replaced lost the file's old bytes).
#[test]
fn a_prune_keeps_what_a_rollback_reads_of_pages_a_chain_replaced() {
    use sovseal::history::{retention, rollback};
    use sovseal::seal::tree::ROOT_INO;
    let env = support::home::Env::new();
    let mut e = env.open();
    e.set_fold_every(0);
    let x = e.create(ROOT_INO, b"x", 0o644, 0, 0).unwrap().ino;
    e.write(x, 0, &support::home::bytes(1, 200_000)).unwrap();
    e.commit().unwrap();
    let fold = e.head().seq();
    // Delta commits on the fold's pages, one replacing x's record.
    e.set_fold_every(8);
    e.write(x, 0, &support::home::bytes(2, 200_000)).unwrap();
    e.commit().unwrap();
    let replaced = e.head().seq();
    rollback::rollback(&mut e, fold).unwrap();
    let head = e.head().seq();
    assert_eq!(
        e.read(x, 0, 200_000).unwrap(),
        support::home::bytes(1, 200_000)
    );
    // Replicated (a forgotten snapshot's content goes only once it is up).
    e.sync().unwrap();
    let remote = sovseal::repo::remote::Remote::open("memory://").unwrap();
    let r = sovseal::replication::replicator::Replicator::start(e.shared_agent(), remote).unwrap();
    r.notify(head);
    r.wait_for(head).unwrap();
    r.stop();
    drop(r);
    retention::forget(e.agent(), &[fold]).unwrap();
    assert!(head > replaced);
    retention::prune_local(e.agent(), &mut |_, _| {}).unwrap();
    drop(e);
    let e = env.open();
    assert_eq!(
        e.read(x, 0, 200_000).unwrap(),
        support::home::bytes(1, 200_000)
    );
    sovseal::history::verify::verify(e.agent(), |_, _| {}).unwrap();
}
