//! Provenance and notes (issue 17): every snapshot seals which process
//! changed each path and the note the agent set through the mount
//! (`user.sovseal.note` on the root); `sovseal log` joins them with the
//! paths each snapshot changed. Real mounts, real programs.

mod support;
use serde_json::Value;
use support::mount::{Mounted, ok, text};

/// `sovseal log --json` of the mounted agent (with `extra` arguments),
/// after an fsync of the root seals the changes still waiting for the
/// quiet period.
fn log(m: &Mounted, extra: &[&str]) -> Vec<Value> {
    m.py("import os\nos.fsync(os.open('.', os.O_RDONLY))");
    let mut args = vec!["log", "--agent", &m.agent, "--json"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--limit") {
        args.extend_from_slice(&["--limit", "100000"]);
    }
    let out = ok(&m.sovseal(&args));
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The log entries that change `path`, with that change.
fn changes_of<'a>(log: &'a [Value], path: &str) -> Vec<(&'a Value, &'a Value)> {
    log.iter()
        .flat_map(|e| {
            e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(move |c| c["path"] == path)
                .map(move |c| (e, c))
        })
        .collect()
}

/// The process names recorded for one change of a log entry.
fn names(entry: &Value, change: &Value) -> Vec<String> {
    change["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            entry["writers"][i.as_u64().unwrap() as usize]["comm"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Different programs change different paths in one burst: each path
/// names its own program (name and executable), as removals and renames
/// name theirs.
#[test]
fn each_path_names_the_program_that_changed_it() {
    let m = Mounted::new("prov", &[]);
    m.sh("printf 'from dd' | dd of=a status=none & cp /etc/hostname b & wait; mkdir d");
    m.sh("mv b d/b2 && rm a && ln -s d/b2 l");
    let log = log(&m, &[]);
    let a = changes_of(&log, "/a");
    let added = a.iter().find(|(_, c)| c["change"] == "added").unwrap();
    assert_eq!(names(added.0, added.1), ["dd"], "{log:?}");
    let w = &added.0["writers"][added.1["writers"][0].as_u64().unwrap() as usize];
    assert!(w["exe"].as_str().unwrap().ends_with("/dd"), "{w}");
    assert_eq!(w["uid"], 0);
    assert!(w["pid"].as_u64().unwrap() > 0);
    let b = changes_of(&log, "/b");
    let b_added = b.iter().find(|(_, c)| c["change"] == "added").unwrap();
    assert_eq!(names(b_added.0, b_added.1), ["cp"]);
    let d = changes_of(&log, "/d");
    assert!(!d.is_empty(), "{log:#?}");
    assert_eq!(names(d[0].0, d[0].1), ["mkdir"]);
    let removed = a.iter().find(|(_, c)| c["change"] == "removed").unwrap();
    assert_eq!(names(removed.0, removed.1), ["rm"]);
    let moved = changes_of(&log, "/d/b2");
    assert_eq!(names(moved[0].0, moved[0].1), ["mv"]);
    let l = changes_of(&log, "/l");
    assert_eq!(names(l[0].0, l[0].1), ["ln"]);
    // The text form says the same.
    let t = ok(&m.sovseal(&["log", "--agent", "prov", "a"]));
    assert!(t.contains("  D /a  by rm["), "{t}");
    assert!(t.contains("  A /a  by dd["), "{t}");
}

/// Paths below a renamed directory name the program that renamed it (on
/// their old paths, removed, and their new ones, added): nothing touched
/// their own inodes.
#[test]
fn paths_below_a_renamed_directory_name_the_renaming_program() {
    let m = Mounted::new("pmv", &[]);
    m.sh("mkdir -p d/e && echo one > d/e/f && echo two > d/g");
    m.py("import os, time\nos.fsync(os.open('.', os.O_RDONLY))\nos.rename('d', 'moved')");
    let log = log(&m, &[]);
    for path in ["/moved", "/moved/e", "/moved/e/f", "/moved/g"] {
        let c = changes_of(&log, path);
        assert_eq!(c.len(), 1, "{path}: {log:#?}");
        assert_eq!(c[0].1["change"], "added", "{path}");
        assert_eq!(names(c[0].0, c[0].1), ["python3"], "{path}");
    }
    for path in ["/d", "/d/e/f"] {
        let c = changes_of(&log, path);
        let gone = c.iter().find(|(_, c)| c["change"] == "removed").unwrap();
        assert_eq!(names(gone.0, gone.1), ["python3"], "{path}");
    }
}

/// A note set on the mount root waits for the next snapshot that holds a
/// change, and is on exactly that one; it is readable until then, not an
/// attribute of the root, and other `user.sovseal.*` names are reserved.
#[test]
fn a_note_is_sealed_with_exactly_the_next_change() {
    let m = Mounted::new("note", &[]);
    m.sh("echo one > first");
    let out = m.py(r#"
import errno, os
os.setxattr('.', 'user.sovseal.note', b'tool call 42: write_file report.md')
print(os.getxattr('.', 'user.sovseal.note').decode())
print('user.sovseal.note' in os.listxattr('.'))
for name, value, want in [('user.sovseal.other', b'x', errno.EOPNOTSUPP),
                          ('user.sovseal.note', b'n' * 4097, errno.E2BIG)]:
    try:
        os.setxattr('.', name, value)
        print('accepted', name)
    except OSError as e:
        print(e.errno == want)
"#);
    assert_eq!(
        out, "tool call 42: write_file report.md\nFalse\nTrue\nTrue\n",
        "{out}"
    );
    // Setting the note made no snapshot.
    let before = m.head();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(m.head(), before, "a note alone is not a change");
    m.sh("echo report > report.md");
    m.sh("echo later > later.md");
    let log = log(&m, &[]);
    let with: Vec<u64> = log
        .iter()
        .filter(|e| e["note"] == "tool call 42: write_file report.md")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let report = changes_of(&log, "/report.md");
    assert_eq!(with, [report[0].0["seq"].as_u64().unwrap()], "{log:?}");
    let later = changes_of(&log, "/later.md");
    assert!(later[0].0["note"].is_null());
    // Sealed and gone: nothing pending, and the snapshot's root has no
    // such attribute.
    let out = m.py(r#"
import os
for p in ['.', '.snapshots/latest']:
    try:
        os.getxattr(p, 'user.sovseal.note')
        print('present', p)
    except OSError as e:
        print(e.errno)
"#);
    assert_eq!(out, format!("{0}\n{0}\n", libc::ENODATA));
    let t = ok(&m.sovseal(&["log", "--agent", "note", "report.md"]));
    assert!(
        t.contains("    note: tool call 42: write_file report.md"),
        "{t}"
    );
}

/// `sovseal log PATH` lists exactly the snapshots in which PATH (or
/// something below it) was added, removed or changed, as `sovseal diff`
/// of each snapshot against the one before finds them.
#[test]
fn log_of_a_path_lists_exactly_the_snapshots_that_changed_it() {
    let m = Mounted::new("plog", &[]);
    for step in [
        "echo 1 > p",
        "echo 1 > q",
        "echo 2 >> p",
        "chmod 600 q",
        "mkdir p.d && echo x > p.d/in",
        "rm p",
        "echo 3 > p",
        "echo 2 >> q",
        "echo y > p.d/in",
    ] {
        m.sh(step);
    }
    let head = m.head();
    for path in ["p", "q", "p.d", "/p.d/in"] {
        let got: Vec<u64> = log(&m, &[path])
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let want_path = format!("/{}", path.trim_start_matches('/'));
        let mut want = Vec::new();
        for seq in (2..=head).rev() {
            let d = ok(&m.sovseal(&[
                "diff",
                "--agent",
                "plog",
                &(seq - 1).to_string(),
                &seq.to_string(),
                "--json",
            ]));
            let d: Value = serde_json::from_str(&d).unwrap();
            let hit = ["added", "removed", "changed"].iter().any(|k| {
                d[k].as_array().unwrap().iter().any(|c| {
                    let p = c["path"].as_str().unwrap();
                    p == want_path || p.starts_with(&format!("{want_path}/"))
                })
            });
            if hit {
                want.push(seq);
            }
        }
        assert!(!want.is_empty());
        assert_eq!(got, want, "log {path}");
    }
    let limited = log(&m, &["p", "--limit", "2"]);
    assert_eq!(limited.len(), 2);
    // The root is the whole tree: the same as no path.
    assert_eq!(log(&m, &["/"]), log(&m, &[]));
}

/// Notes and the names of the writing programs are sealed: neither is
/// anywhere in SOVSEAL_HOME (index, packs, journal, the default remote)
/// in clear, while `sovseal log` shows both.
#[test]
fn provenance_and_notes_are_never_in_clear() {
    let m = Mounted::new("pclear", &[]);
    let prog = m.dir.path().join("provmark-4e1c");
    std::fs::copy("/bin/cp", &prog).unwrap();
    let note = "NOTEMARK-9b27d1 the agent's own words";
    m.py(&format!(
        "import os\nos.setxattr('.', 'user.sovseal.note', b\"{note}\")"
    ));
    m.sh(&format!("{} /etc/hostname copied", prog.display()));
    m.sh("sync");
    m.wait_replicated();
    let t = ok(&m.sovseal(&["log", "--agent", "pclear"]));
    assert!(t.contains(note), "{t}");
    assert!(t.contains("provmark-4e1c"), "{t}");
    m.unmount();
    let mut files = 0;
    for f in support::home::files_under(&m.home) {
        let b = std::fs::read(&f).unwrap();
        files += 1;
        for marker in [&b"NOTEMARK-9b27d1"[..], b"provmark-4e1c"] {
            assert!(
                !b.windows(marker.len()).any(|w| w == marker),
                "{} in clear in {}",
                text(marker),
                f.display()
            );
        }
    }
    assert!(files > 3, "scanned {files} files");
}

/// One snapshot names at most `WRITERS_MAX` processes and `CHANGES_MAX`
/// (inode, writer) pairs per list: a burst beyond that (hundreds of
/// programs, an `rm` of a large tree in one quiet period) keeps what fits,
/// attributed exactly, and the snapshot says its record is incomplete,
/// so the manifest and the mount's memory stay bounded. Driven through the
/// engine: a mount cannot place tens of thousands of changes in one quiet
/// period reliably.
#[test]
fn a_burst_beyond_one_record_keeps_what_fits_and_says_so() {
    use sovseal::engine::SetAttr;
    use sovseal::repo::agent::Agent;
    use sovseal::seal::tree::{CHANGES_MAX, ROOT_INO, WRITERS_MAX, Writer};
    let env = support::home::Env::new();
    let mut e = env.open();
    let writer = |k: usize| Writer {
        pid: 1000 + k as u32,
        uid: 1000,
        gid: 1000,
        comm: format!("tool{k}").into_bytes(),
        exe: b"/usr/bin/tool".to_vec(),
    };
    let many = CHANGES_MAX + 50;
    let inos: Vec<u64> = (0..many)
        .map(|k| {
            e.create(ROOT_INO, format!("f{k:05}").as_bytes(), 0o644, 0, 0)
                .unwrap()
                .ino
        })
        .collect();
    e.commit().unwrap();
    // Snapshot 3: each of WRITERS_MAX + 20 programs changes one file.
    for (k, ino) in inos.iter().enumerate().take(WRITERS_MAX + 20) {
        let perm = SetAttr {
            perm: Some(0o600),
            ..Default::default()
        };
        e.setattr(*ino, &perm).unwrap();
        e.attribute(*ino, &writer(k));
    }
    e.commit().unwrap();
    // Snapshot 4: one program removes every file.
    for (k, ino) in inos.iter().enumerate() {
        e.unlink(ROOT_INO, format!("f{k:05}").as_bytes()).unwrap();
        e.attribute_removal(*ino, &writer(0));
    }
    e.commit().unwrap();
    drop(e);
    let a = Agent::open_readonly(&env.home, &env.agent, &env.master).unwrap();
    let log = sovseal::history::log::log(&a, None, 3).unwrap();
    let [removal, chmods, creates] = &log[..] else {
        panic!("{} entries", log.len())
    };
    assert_eq!((removal.seq, chmods.seq, creates.seq), (4, 3, 2));
    assert!(!creates.writers_incomplete && creates.writers.is_empty());

    assert!(chmods.writers_incomplete);
    assert_eq!(chmods.writers.len(), WRITERS_MAX);
    assert_eq!(chmods.changes.len(), WRITERS_MAX + 20);
    for c in &chmods.changes {
        let k: usize = c.path.trim_start_matches("/f").parse().unwrap();
        let names: Vec<&str> = c
            .writers
            .iter()
            .map(|i| chmods.writers[*i].comm.as_str())
            .collect();
        if k < WRITERS_MAX {
            assert_eq!(names, [format!("tool{k}")], "{}", c.path);
        } else {
            assert!(names.is_empty(), "{} names {names:?}", c.path);
        }
    }

    assert!(removal.writers_incomplete);
    assert_eq!(removal.changes.len(), many);
    let named = removal.changes.iter().filter(|c| !c.writers.is_empty());
    assert_eq!(named.count(), CHANGES_MAX);
}
