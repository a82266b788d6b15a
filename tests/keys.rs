//! Key backup end to end: `sovseal key export` on one machine, `key import`
//! on a second SOVSEAL_HOME, and the agent restored there from its remote
//! with nothing but the export; wrong passphrases, damaged files and
//! existing keys refused.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::mount::{Mounted, SOVSEAL, fails, ok, sovseal_in as run, text};

/// `sovseal key import FILE --passphrase-file PASS` in `home`.
fn import(home: &Path, file: &str, pass: &str) -> Output {
    run(home, &["key", "import", file, "--passphrase-file", pass])
}

/// `sovseal key export --out FILE --passphrase-file PASS` in `home`.
fn export_key(home: &Path, file: &str, pass: &str) -> Output {
    run(
        home,
        &["key", "export", "--out", file, "--passphrase-file", pass],
    )
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Machine 1: agent "keyed" with some state, replicated to its default
/// remote and unmounted; its master key exported under a passphrase.
struct Exported {
    m: Mounted,
    remote: String,
    fp1: String,
    pass: PathBuf,
    export: PathBuf,
}

impl Exported {
    fn new() -> Self {
        let m = Mounted::new("keyed", &[]);
        m.sh("mkdir -p mem && printf 'remember this' > mem/a.txt && head -c 300000 /dev/urandom > mem/b.bin && sync");
        m.wait_replicated();
        m.unmount();
        let remote = format!("file://{}", m.home.join("remote").display());
        let fp = ok(&run(&m.home, &["key", "fingerprint"]));
        let fp1 = fp
            .strip_prefix("version 1: ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{fp}"))
            .to_owned();
        assert_eq!(fp1.len(), 16, "{fp}");

        let dir = m.dir.path();
        let pass = dir.join("pass");
        std::fs::write(&pass, "a long enough passphrase\n").unwrap();
        let export = dir.join("key.export");
        let o = ok(&export_key(
            &m.home,
            export.to_str().unwrap(),
            pass.to_str().unwrap(),
        ));
        assert!(o.contains(&fp1), "{o}");
        Exported {
            m,
            remote,
            fp1,
            pass,
            export,
        }
    }

    /// `key import` of the export into `home` with the passphrase in `pass`.
    fn import_with(&self, home: &Path, pass: &Path) -> Output {
        import(home, self.export.to_str().unwrap(), pass.to_str().unwrap())
    }

    /// `key import` of the export into `home` with the right passphrase.
    fn import(&self, home: &Path) -> Output {
        self.import_with(home, &self.pass)
    }

    /// `restore` of the agent from the remote into `out`, in `home`.
    fn restore(&self, home: &Path, out: &Path) -> Output {
        run(
            home,
            &[
                "restore",
                "--agent",
                "keyed",
                "--remote",
                &self.remote,
                out.to_str().unwrap(),
            ],
        )
    }
}

#[test]
fn an_export_is_sealed_under_the_passphrase_and_never_overwritten() {
    let x = Exported::new();
    let (m, export) = (&x.m, &x.export);
    let meta = std::fs::metadata(export).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // The export holds no key material in the clear.
    let raw_key = std::fs::read(m.home.join("master.key")).unwrap();
    let exported = std::fs::read(export).unwrap();
    let key_text = text(&raw_key).trim().to_owned();
    assert!(!text(&exported).contains(&key_text), "key in the clear");
    let v: serde_json::Value = serde_json::from_slice(&exported).unwrap();
    assert_eq!(v["kdf"]["alg"], "argon2id");
    assert_eq!(v["fingerprint"], x.fp1.as_str());
    // Never overwritten.
    fails(
        &export_key(&m.home, export.to_str().unwrap(), x.pass.to_str().unwrap()),
        2,
        "already exists",
    );
    assert_eq!(std::fs::read(export).unwrap(), exported);
}

/// Machine 2, a fresh home: a wrong passphrase and a damaged file fail
/// with exit 4 and no key appears; without the key the remote is
/// unreadable.
fn bad_imports_are_refused(x: &Exported, home2: &Path) {
    let dir = x.m.dir.path();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "a long enough passphrasf\n").unwrap();
    fails(&x.import_with(home2, &wrong), 4, "wrong passphrase");
    assert!(!home2.join("master.key").exists());
    let damaged = dir.join("damaged.export");
    let mut d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&x.export).unwrap()).unwrap();
    d["kdf"]["t_cost"] = serde_json::json!(4);
    std::fs::write(&damaged, serde_json::to_vec(&d).unwrap()).unwrap();
    fails(
        &import(home2, damaged.to_str().unwrap(), x.pass.to_str().unwrap()),
        4,
        "damaged",
    );
    std::fs::write(&damaged, b"{not json").unwrap();
    fails(
        &import(home2, damaged.to_str().unwrap(), x.pass.to_str().unwrap()),
        4,
        "not a sovseal key export",
    );
    assert!(!home2.join("master.key").exists());
    // Without the key, the remote is unreadable on machine 2.
    assert!(!x.restore(home2, &dir.join("restored")).status.success());
}

#[test]
fn a_second_home_refuses_bad_imports_then_restores_the_agent_from_the_export() {
    let x = Exported::new();
    let (m, fp1) = (&x.m, &x.fp1);
    let dir = m.dir.path();
    let home2 = dir.join("home2");
    bad_imports_are_refused(&x, &home2);

    // The right passphrase: imported; again: unchanged.
    let o = ok(&x.import(&home2));
    assert!(o.contains(&format!("imported master key {fp1}")), "{o}");
    assert_eq!(
        std::fs::metadata(home2.join("master.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let o = ok(&x.import(&home2));
    assert!(o.contains("already in custody"), "{o}");

    // The agent comes back on machine 2 from the remote and the export alone.
    let out = dir.join("restored");
    let _ = std::fs::remove_dir_all(&out);
    ok(&x.restore(&home2, &out));
    let m_tree = {
        let check = dir.join("check");
        ok(&run(
            &m.home,
            &["restore", "--agent", "keyed", check.to_str().unwrap()],
        ));
        tree(&check)
    };
    assert_eq!(tree(&out), m_tree);
    assert!(
        m_tree
            .iter()
            .any(|(p, b)| p == "mem/a.txt" && b == b"remember this")
    );
}

#[test]
fn import_refuses_to_overwrite_a_different_key() {
    let x = Exported::new();
    // A home that already holds a different key refuses the import.
    let home3 = x.m.dir.path().join("home3");
    ok(&run(&home3, &["init"]));
    let before = std::fs::read(home3.join("master.key")).unwrap();
    fails(&x.import(&home3), 4, "refusing to overwrite");
    assert_eq!(std::fs::read(home3.join("master.key")).unwrap(), before);
}

#[test]
fn export_refuses_short_passphrases_and_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "short\n").unwrap();
    let out = dir.path().join("k.export");
    let args = [
        "key",
        "export",
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ];
    fails(&run(&home, &args), 4, "sovseal init");
    ok(&run(&home, &["init"]));
    fails(&run(&home, &args), 2, "too short");
    assert!(!out.exists());
    // No terminal and no file: a clear message, not a hang.
    // (setsid: no controlling terminal, even when the tests run in one)
    let o = Command::new("setsid")
        .args([
            "--wait",
            SOVSEAL,
            "key",
            "export",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("SOVSEAL_HOME", &home)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    fails(&o, 2, "--passphrase-file");
}

/// Agent "rot": a.txt written under master key version 1 (snapshots up to
/// `before`) and the key exported ("old.export"); then `key rotate`, and
/// b.txt written under version 2. Replicated and unmounted.
struct Rotated {
    m: Mounted,
    before: u64,
    pass: PathBuf,
    old_export: PathBuf,
    remote: String,
}

impl Rotated {
    fn new() -> Self {
        let m = Mounted::new("rot", &[]);
        m.sh("printf before > a.txt && sync");
        m.wait_replicated();
        m.unmount();
        let before = m.head();
        let pass = m.dir.path().join("pass");
        std::fs::write(&pass, "a long enough passphrase\n").unwrap();
        let remote = format!("file://{}", m.home.join("remote").display());
        let mut r = Rotated {
            m,
            before,
            pass,
            old_export: PathBuf::new(),
            remote,
        };
        r.old_export = r.export("old.export");
        let m = &r.m;

        let o = ok(&run(&m.home, &["key", "rotate"]));
        assert!(o.contains("added master key version 2"), "{o}");
        let v2 = m.home.join("master.v2.key");
        assert_eq!(
            std::fs::metadata(&v2).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let fp = ok(&run(&m.home, &["key", "fingerprint"]));
        assert!(
            fp.contains("version 1: ") && fp.contains(" (current)"),
            "{fp}"
        );
        assert_eq!(fp.lines().count(), 2, "{fp}");

        m.mount();
        m.sh("printf after > b.txt && sync");
        m.wait_replicated();
        m.unmount();
        r
    }

    /// `key export` of every version held now, to `name` in the test dir.
    fn export(&self, name: &str) -> PathBuf {
        let p = self.m.dir.path().join(name);
        ok(&export_key(
            &self.m.home,
            p.to_str().unwrap(),
            self.pass.to_str().unwrap(),
        ));
        p
    }

    /// `restore` of the agent from the remote into `dest`, in `home`.
    fn restore(&self, home: &Path, dest: &Path) -> Output {
        run(
            home,
            &[
                "restore",
                "--agent",
                "rot",
                "--remote",
                &self.remote,
                dest.to_str().unwrap(),
            ],
        )
    }
}

#[test]
fn rotation_seals_new_data_under_a_new_version_and_old_data_stays_readable() {
    let r = Rotated::new();
    let (m, before) = (&r.m, r.before);
    // New data is sealed under version 2; old data still reads.
    assert_eq!(m.status()["key_version"], 2);
    let rep: serde_json::Value =
        serde_json::from_str(&ok(&run(&m.home, &["verify", "--agent", "rot", "--json"]))).unwrap();
    let kv = &rep["key_versions"];
    assert_eq!(kv["1"]["snapshots"], before, "{rep}");
    assert!(kv["2"]["snapshots"].as_u64().unwrap() >= 1, "{rep}");
    assert!(kv["2"]["objects"].as_u64().unwrap() >= 1, "{rep}");
    assert!(kv["1"]["objects"].as_u64().unwrap() >= 1, "{rep}");
    let cat = |seq: u64, p: &str| {
        run(
            &m.home,
            &["cat", "--agent", "rot", "--seq", &seq.to_string(), p],
        )
        .stdout
    };
    assert_eq!(cat(before, "/a.txt"), b"before");
    assert_eq!(cat(m.head(), "/b.txt"), b"after");
    assert_eq!(cat(m.head(), "/a.txt"), b"before");
}

#[test]
fn an_export_after_rotation_carries_every_version_to_a_second_home() {
    let r = Rotated::new();
    let dir = r.m.dir.path();
    // A new export carries both versions: a second machine restores all.
    let new_export = r.export("new.export");
    let home2 = dir.join("home2");
    ok(&import(
        &home2,
        new_export.to_str().unwrap(),
        r.pass.to_str().unwrap(),
    ));
    let out = dir.join("restored");
    ok(&r.restore(&home2, &out));
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"before");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"after");
}

#[test]
fn an_export_from_before_rotation_opens_newer_data_only_with_the_new_export() {
    let r = Rotated::new();
    let dir = r.m.dir.path();
    let new_export = r.export("new.export");
    // The export from before the rotation cannot open what came after it.
    let home3 = dir.join("home3");
    ok(&import(
        &home3,
        r.old_export.to_str().unwrap(),
        r.pass.to_str().unwrap(),
    ));
    fails(
        &r.restore(&home3, &dir.join("r3")),
        4,
        "key version 2 is not in custody",
    );
    // Importing the new export there adds version 2 next to version 1.
    let o = ok(&import(
        &home3,
        new_export.to_str().unwrap(),
        r.pass.to_str().unwrap(),
    ));
    assert!(o.contains("imported"), "{o}");
    ok(&r.restore(&home3, &dir.join("r4")));
}

/// What a holder of a leaked key version 1 has: the version-1 master key
/// bytes (from `master.key`), and so the agent's version-1 working keys.
fn leaked_v1(home: &Path, agent: &str) -> sovseal::seal::keys::AgentKeys {
    use base64::Engine as _;
    let b64 = std::fs::read_to_string(home.join("master.key")).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    sovseal::seal::keys::MasterKey::from_bytes(raw.try_into().unwrap()).agent_keys(agent)
}

/// The stored envelope of snapshot `seq` of agent `agent`.
fn stored_envelope(
    home: &Path,
    agent: &str,
    keys: &sovseal::seal::keys::AgentKeys,
    seq: u64,
) -> sovseal::seal::envelope::Envelope {
    let idx =
        sovseal::repo::index::Index::open(&home.join("agents").join(agent).join("index.db"), false)
            .unwrap();
    idx.envelope(&keys.agent_id(), seq).unwrap().unwrap()
}

/// Regression (fails on the main before this change: the snapshot opened
/// and verified, and the mount served the forged tree): after a rotation, a
/// holder of the old key version appends a snapshot sealed under it, made
/// of the pre-rotation tree (whose pages it can read). The chain refuses
/// it: key versions never decrease.
#[test]
fn a_snapshot_forged_with_the_retired_key_is_refused() {
    use sovseal::seal::envelope;
    let r = Rotated::new();
    let m = &r.m;
    let head = m.head();
    let v1 = leaked_v1(&m.home, "rot");
    let old = stored_envelope(&m.home, "rot", &v1, r.before);
    let head_env = {
        let idx =
            sovseal::repo::index::Index::open(&m.home.join("agents/rot/index.db"), false).unwrap();
        idx.envelope(&v1.agent_id(), head).unwrap().unwrap()
    };
    assert_eq!(head_env.key_version, 2);
    let mut forged = envelope::open_manifest(&v1, &old).unwrap();
    forged.seq = head + 1;
    forged.parent = head_env.hash();
    forged.timestamp_ms = head_env.timestamp + 1;
    let env = envelope::seal_manifest(&v1, &forged);
    assert_eq!(env.key_version, 1);
    let db = rusqlite::Connection::open(m.home.join("agents/rot/index.db")).unwrap();
    db.execute(
        "INSERT INTO snapshots (seq, hash, parent, payload_hash, timestamp_ms, format_version, key_version, byte_size, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            env.sequence_number,
            &env.hash()[..],
            &env.parent_snapshot[..],
            &env.client_payload_hash[..],
            env.timestamp,
            env.format_version,
            env.key_version,
            env.byte_size,
            &env.sealed
        ],
    )
    .unwrap();
    drop(db);
    let needle = "retired";
    fails(&run(&m.home, &["verify", "--agent", "rot"]), 3, needle);
    fails(&m.try_mount(), 3, needle);
    assert!(!m.is_mounted());
}

/// Regression (fails on the main before this change: records were signed
/// and checked with version 1's key whatever the rotation): records made
/// after a rotation are signed under the new version, and a record signed
/// with the retired key cannot vouch for a snapshot sealed under the new
/// one (checkpoint or forget record).
#[test]
fn records_signed_with_the_retired_key_vouch_for_nothing_newer() {
    use sovseal::history::checkpoint::Checkpoint;
    use sovseal::seal::forget::ForgetRecord;
    let r = Rotated::new();
    let m = &r.m;
    // A second snapshot under version 2.
    m.mount();
    m.sh("printf more > c.txt");
    m.wait_replicated();
    m.unmount();
    let head = m.head();
    // A checkpoint made now is signed under version 2 and verifies.
    ok(&run(&m.home, &["checkpoint", "--agent", "rot"]));
    let cps = m.home.join("agents/rot/checkpoints");
    let name = format!("{head:020}.json");
    let mine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cps.join(&name)).unwrap()).unwrap();
    assert_eq!(mine["key_version"], 2, "{mine}");
    assert_eq!(mine["version"], 2, "{mine}");
    m.verify();

    // The holder of version 1 signs the same statement: refused.
    let v1 = leaked_v1(&m.home, "rot");
    let head_env = stored_envelope(&m.home, "rot", &v1, head);
    let forged = Checkpoint::sign(&v1, head, &head_env.hash(), 1_800_000_000_000);
    assert_eq!(forged.key_version, 1);
    std::fs::write(cps.join(&name), forged.to_json()).unwrap();
    fails(
        &run(&m.home, &["verify", "--agent", "rot"]),
        3,
        "retired key",
    );
    std::fs::remove_file(cps.join(&name)).unwrap();
    m.verify();

    // A forget record of the post-rotation snapshot below the head.
    let below = head - 1;
    let env = stored_envelope(&m.home, "rot", &v1, below);
    assert_eq!(env.key_version, 2, "snapshot {below} is after the rotation");
    let rec = ForgetRecord::sign(&v1, below, &env.hash(), 1_800_000_000_000);
    let db = rusqlite::Connection::open(m.home.join("agents/rot/index.db")).unwrap();
    db.execute(
        "INSERT INTO forgotten (seq, at_ms, record) VALUES (?1, ?2, ?3)",
        rusqlite::params![below, 0, serde_json::to_vec(&rec).unwrap()],
    )
    .unwrap();
    drop(db);
    fails(
        &run(&m.home, &["snapshots", "--agent", "rot"]),
        3,
        "retired key",
    );
}

/// Regression (fails on the main before this change: with the newest
/// key file gone, new data went back to version 1 without a word): a home
/// that has held key version 2 refuses to run on version 1 alone.
#[test]
fn a_deleted_newest_key_version_is_refused_not_downgraded() {
    let m = Mounted::new("down", &[]);
    m.sh("echo one > a");
    m.unmount();
    ok(&run(&m.home, &["key", "rotate"]));
    std::fs::remove_file(m.home.join("master.v2.key")).unwrap();
    fails(&m.try_mount(), 4, "key version 2 is not in custody");
    assert!(!m.is_mounted());
    fails(
        &run(&m.home, &["init", "--agent", "another"]),
        4,
        "key version 2 is not in custody",
    );
    assert!(!m.home.join("agents/another").exists());
}
