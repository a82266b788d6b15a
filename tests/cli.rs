//! The `sovseal` CLI end to end, with the file fallback for custody.

mod support;
use sovseal::config::{AgentName, Home};
use sovseal::custody::{self, Custody};
use sovseal::engine::Engine;
use sovseal::seal::tree::ROOT_INO;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use support::mount::{SOVSEAL, fails, ok, sovseal_in as run};

/// An agent "a1" with snapshots 1..=4: v1, v2, v3 of notes/today.md.
fn populated() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    ok(&run(&home, &["init"]));
    let h = Home::at(&home);
    let master = custody::load(&h, &Custody::File).unwrap();
    let mut e = Engine::open(&h, &AgentName::new("a1").unwrap(), &master).unwrap();
    let d = e.mkdir(ROOT_INO, b"notes", 0o755, 0, 0).unwrap();
    let f = e.create(d.ino, b"today.md", 0o644, 0, 0).unwrap();
    for v in 1..=3 {
        e.setattr(
            f.ino,
            &sovseal::engine::SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        e.write(f.ino, 0, format!("version {v}\n").as_bytes())
            .unwrap();
        e.commit().unwrap();
    }
    (dir, home)
}

#[test]
fn init_is_idempotent_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = run(&home, &["init"]);
    assert!(ok(&o).contains("created a new master key"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no escrow and no reset"));
    let key = std::fs::read(home.join("master.key")).unwrap();
    assert_eq!(
        std::fs::metadata(home.join("master.key")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
    assert!(ok(&run(&home, &["init"])).contains("already present"));
    assert_eq!(
        std::fs::read(home.join("master.key")).unwrap(),
        key,
        "never overwritten"
    );
    std::fs::set_permissions(
        home.join("master.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fails(&run(&home, &["init"]), 4, "wider than 0600");
}

#[test]
fn snapshots_pages_by_cursor() {
    let (_d, home) = populated();
    let all = ok(&run(&home, &["snapshots", "--agent", "a1"]));
    assert_eq!(all.lines().count(), 1 + 4, "{all}");
    let p1: serde_json::Value = serde_json::from_str(&ok(&run(
        &home,
        &["snapshots", "--agent", "a1", "--limit", "3", "--json"],
    )))
    .unwrap();
    let seqs: Vec<u64> = p1["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(p1["next_after"], 3);
    let p2: serde_json::Value = serde_json::from_str(&ok(&run(
        &home,
        &[
            "snapshots",
            "--agent",
            "a1",
            "--limit",
            "3",
            "--after",
            "3",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(p2["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(p2["snapshots"][0]["seq"], 4);
    assert_eq!(
        p2["snapshots"][0]["parent"], p1["snapshots"][2]["hash"],
        "chained"
    );
    assert!(p2["next_after"].is_null());
}

#[test]
fn cat_and_ls_read_any_snapshot() {
    let (_d, home) = populated();
    assert_eq!(
        ok(&run(&home, &["cat", "--agent", "a1", "notes/today.md"])),
        "version 3\n"
    );
    assert_eq!(
        ok(&run(
            &home,
            &["cat", "--agent", "a1", "--seq", "2", "notes/today.md"]
        )),
        "version 1\n"
    );
    let ls = ok(&run(&home, &["ls", "--agent", "a1", "--seq", "4", "notes"]));
    assert!(ls.contains("today.md") && ls.starts_with('-'), "{ls}");
    fails(
        &run(
            &home,
            &["cat", "--agent", "a1", "--seq", "1", "notes/today.md"],
        ),
        1,
        "No such file",
    );
    fails(
        &run(&home, &["cat", "--agent", "a1", "--seq", "99", "x"]),
        2,
        "no snapshot 99",
    );
}

#[test]
fn verify_passes_then_names_the_damage() {
    let (_d, home) = populated();
    assert!(
        ok(&run(&home, &["verify", "--agent", "a1"])).starts_with("ok: agent a1: snapshots 1..=4")
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&run(&home, &["verify", "--agent", "a1", "--json"]))).unwrap();
    assert_eq!(j["snapshots"], 4);
    let c = rusqlite::Connection::open(home.join("agents/a1/index.db")).unwrap();
    let mut s: Vec<u8> = c
        .query_row("SELECT sealed FROM snapshots WHERE seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    s[40] ^= 2;
    c.execute("UPDATE snapshots SET sealed = ?1 WHERE seq = 3", [&s])
        .unwrap();
    fails(&run(&home, &["verify", "--agent", "a1"]), 3, "snapshot 3");
}

#[test]
fn bad_input_gets_clear_errors() {
    let (_d, home) = populated();
    fails(
        &run(&home, &["verify", "--agent", "../etc"]),
        2,
        "not allowed",
    );
    fails(
        &run(&home, &["verify", "--agent", "nobody"]),
        2,
        "has no data",
    );
    fails(
        &run(&home, &["snapshots", "--agent", "a1", "--limit", "0"]),
        2,
        "--limit",
    );
    fails(&run(&home, &["frobnicate"]), 2, "unrecognized subcommand");
    let empty = tempfile::tempdir().unwrap();
    fails(
        &run(empty.path(), &["verify", "--agent", "a1"]),
        4,
        "run `sovseal init` first",
    );
    let o = Command::new(SOVSEAL)
        .args(["init"])
        .env("SOVSEAL_HOME", empty.path())
        .env("SOVSEAL_KEY_FALLBACK", "yes")
        .output()
        .unwrap();
    fails(&o, 2, "SOVSEAL_KEY_FALLBACK");
}

#[test]
fn help_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        &[][..],
        &["init"],
        &["snapshots"],
        &["verify"],
        &["cat"],
        &["ls"],
    ] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let out = ok(&run(dir.path(), &args));
        assert!(out.contains("Usage:"), "{sub:?}: {out}");
    }
}

/// Completion scripts for bash, zsh and fish, for both binaries, come from
/// the clap definitions: they name every subcommand, and the bash one,
/// sourced into a real bash, completes `sovseal lo` to `log`.
#[test]
fn completions_for_three_shells_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    for (shell, head) in [
        ("bash", "_sovseal()"),
        ("zsh", "#compdef sovseal"),
        ("fish", "complete -c sovseal"),
    ] {
        let s = ok(&run(&home, &["completions", shell]));
        assert!(s.contains(head), "{shell}: {s}");
        for sub in ["log", "exec", "verify", "restore", "completions", "man"] {
            assert!(s.contains(sub), "{shell} completes {sub}");
        }
        let m = ok(&run(&home, &["completions", shell, "--mount"]));
        assert!(
            m.contains("sovseal-mount") && m.contains("durable-close"),
            "{shell}: {m}"
        );
    }
    let script = dir.path().join("sovseal.bash");
    std::fs::write(&script, ok(&run(&home, &["completions", "bash"]))).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; COMP_WORDS=(sovseal lo); COMP_CWORD=1; _sovseal sovseal lo sovseal; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        ok(&out).trim(),
        "log",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sovseal man --out DIR` writes a page per binary and per subcommand,
/// each a roff man page naming itself and its options.
#[test]
fn man_pages_for_both_binaries_and_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = ok(&run(
        &dir.path().join("h"),
        &["man", "--out", out.to_str().unwrap()],
    ));
    for (page, option) in [
        ("sovseal", "log"),
        ("sovseal-log", "--limit"),
        ("sovseal-exec", "--agent"),
        ("sovseal-verify", "--checkpoint"),
        ("sovseal-mount", "--durable-close"),
    ] {
        let path = out.join(format!("{page}.1"));
        assert!(listed.contains(path.to_str().unwrap()), "{listed}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!(
                ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH {page} 1"
            )),
            "{page}: {}",
            &text[..80.min(text.len())]
        );
        assert!(text.contains(".SH SYNOPSIS"), "{page}");
        // roff escapes each dash of an option: `\-\-limit`.
        let roff = option.replace('-', "\\-");
        assert!(text.contains(&roff), "{page} names {option}");
    }
    let n = std::fs::read_dir(&out).unwrap().count();
    assert!(n >= 20, "{n} pages");
}

/// Every command that prints data prints one JSON value with `--json`
/// and nothing else on stdout (#17); the text forms are checked by the
/// other tests. `checkpoint --json` needs a replicated snapshot and is
/// checked in tests/checkpoints.rs.
#[test]
fn every_data_command_prints_json() {
    let (d, home) = populated();
    let json = |home: &std::path::Path, args: &[&str]| -> serde_json::Value {
        let out = ok(&run(home, args));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let j = |args: &[&str]| json(&home, args);
    let init = j(&["init", "--json"]);
    assert_eq!(init["master_key"], "present");
    let fp = init["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(j(&["init", "--agent", "a2", "--json"])["agent"], "a2");
    let snaps = j(&["snapshots", "--agent", "a1", "--json"]);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 4);
    assert_eq!(j(&["status", "--agent", "a1", "--json"])["head_seq"], 4);
    let ls = j(&["ls", "--agent", "a1", "--seq", "3", "--json", "notes"]);
    assert_eq!(ls["seq"], 3);
    assert_eq!(ls["entries"][0]["name"], "today.md");
    assert_eq!(ls["entries"][0]["type"], "file");
    assert_eq!(ls["entries"][0]["mode"], "0644");
    assert_eq!(ls["entries"][0]["size"], "version 2\n".len());
    let diff = j(&["diff", "--agent", "a1", "2", "4", "--json"]);
    let changed = diff["changed"][0]["path"].as_str().unwrap();
    assert!(changed.ends_with("notes/today.md"), "{diff}");
    let log = j(&["log", "--agent", "a1", "--json", "notes/today.md"]);
    assert_eq!(log[0]["seq"], 4, "{log}");
    assert_eq!(j(&["verify", "--agent", "a1", "--json"])["head_seq"], 4);
    let dest = d.path().join("restored");
    let r = j(&[
        "restore",
        "--agent",
        "a1",
        "--json",
        "--seq",
        "3",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        (r["seq"].as_u64(), r["from"].as_str()),
        (Some(3), Some("local data"))
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("notes/today.md")).unwrap(),
        "version 2\n"
    );
    let forget = j(&[
        "forget",
        "--agent",
        "a1",
        "--keep-last",
        "2",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(forget["forgotten"], serde_json::json!([1, 2]), "{forget}");
    let rb = j(&["rollback", "--agent", "a1", "--seq", "3", "--json"]);
    assert_eq!(
        (rb["seq"].as_u64(), rb["tree_of"].as_u64()),
        (Some(5), Some(3))
    );
    assert!(j(&["prune", "--agent", "a1", "--json"]).is_object());
    let keys = j(&["key", "fingerprint", "--json"]);
    assert_eq!(keys["versions"][0]["fingerprint"], fp.as_str());
    assert_eq!(keys["versions"][0]["current"], true);
    let (file, pass) = (d.path().join("key.export"), d.path().join("pass"));
    std::fs::write(&pass, "correct horse battery\n").unwrap();
    let ex = j(&[
        "key",
        "export",
        "--out",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(ex["fingerprint"], fp.as_str());
    let other = d.path().join("other");
    let im = json(
        &other,
        &[
            "key",
            "import",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        (im["fingerprint"].as_str(), im["imported"].as_bool()),
        (Some(fp.as_str()), Some(true))
    );
    let rot = j(&["key", "rotate", "--json"]);
    assert_eq!(rot["version"], 2);
    let reset = j(&[
        "reset",
        "--agent",
        "a2",
        "--discard-local-history",
        "--json",
    ]);
    assert!(std::path::Path::new(reset["moved_to"].as_str().unwrap()).is_dir());
}

/// Progress bars (indicatif) are drawn on a terminal only, and never with
/// `--json`: `verify` run under a pseudo-terminal (script(1)) draws its
/// bar; the same with `--json`, or with stderr a pipe, draws nothing.
#[test]
fn progress_bars_only_on_a_terminal_and_never_with_json() {
    let (_d, home) = populated();
    let on_tty = |cmd: &str| -> String {
        let o = Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .env("SOVSEAL_HOME", &home)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .output()
            .unwrap();
        ok(&o)
    };
    let shown = on_tty(&format!("{SOVSEAL} verify --agent a1"));
    assert!(shown.contains("verify: checking snapshots"), "{shown:?}");
    assert!(shown.contains("ok: agent a1"), "{shown:?}");
    let quiet = on_tty(&format!("{SOVSEAL} verify --agent a1 --json"));
    assert!(!quiet.contains("checking snapshots"), "{quiet:?}");
    let v: serde_json::Value = serde_json::from_str(quiet.trim()).unwrap();
    assert_eq!(v["head_seq"], 4);
    let piped = run(&home, &["verify", "--agent", "a1"]);
    ok(&piped);
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("checking snapshots"),
        "no bar into a pipe"
    );
}
