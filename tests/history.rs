//! History management through the CLI, over history made by real programs
//! in a real mount: `diff`, `restore [PATH] DEST` from local data,
//! `rollback`; and their bad input.

mod support;
use support::mount::{Mounted, fails, ok, text};

/// An agent whose history has three labelled states:
/// A: notes/a.md "alpha", notes/b.md "beta", link -> notes/a.md
/// B: a.md changed, b.md removed, c.bin added (100 KiB), mode of a.md 0600
/// C: everything under notes/ removed, top.txt added.
fn history() -> (Mounted, u64, u64, u64) {
    let m = Mounted::new("hist", &["--quiet-ms", "20"]);
    m.sh("mkdir notes && printf alpha > notes/a.md && printf beta > notes/b.md && ln -s notes/a.md link && sync");
    m.unmount();
    let a = m.head();
    m.mount();
    m.sh("printf 'alpha two' > notes/a.md && rm notes/b.md && head -c 102400 /dev/urandom > notes/c.bin && chmod 600 notes/a.md && sync");
    m.unmount();
    let b = m.head();
    m.mount();
    m.sh("rm -r notes && printf top > top.txt && sync");
    m.unmount();
    let c = m.head();
    assert!(a < b && b < c, "{a} {b} {c}");
    (m, a, b, c)
}

#[test]
fn diff_lists_exactly_what_changed_between_snapshots() {
    let (m, a, b, c) = history();
    let ag = m.agent.clone();

    // diff, JSON: exact sets of paths.
    let d: serde_json::Value = serde_json::from_str(&ok(&m.sovseal(&[
        "diff",
        "--agent",
        &ag,
        &a.to_string(),
        &b.to_string(),
        "--json",
    ])))
    .unwrap();
    let paths = |k: &str| -> Vec<String> {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(paths("added"), ["/notes/c.bin"]);
    assert_eq!(paths("removed"), ["/notes/b.md"]);
    assert_eq!(paths("changed"), ["/notes/a.md"]);
    assert_eq!(d["added"][0]["size"], 102400);
    assert_eq!(d["removed"][0]["size"], 4);
    let ch = &d["changed"][0];
    assert_eq!(
        (ch["old_size"].as_u64(), ch["new_size"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(ch["what"], serde_json::json!(["content", "mode"]));
    // Text form; SEQ2 defaults to head.
    let t = ok(&m.sovseal(&["diff", "--agent", &ag, &b.to_string()]));
    assert!(t.contains("+            3  /top.txt"), "{t}");
    assert!(t.contains("-            0  /notes"), "{t}");
    assert!(
        t.contains(&format!("{b} -> {c}: 1 added, 3 removed, 0 changed")),
        "{t}"
    );
    // A snapshot against itself: nothing.
    let t = ok(&m.sovseal(&["diff", "--agent", &ag, &a.to_string(), &a.to_string()]));
    assert!(t.contains("0 added, 0 removed, 0 changed"), "{t}");
}

#[test]
fn restore_from_local_data_brings_back_a_tree_a_directory_or_a_file() {
    let (m, a, b, _c) = history();
    let ag = m.agent.clone();

    // restore from local data: the whole tree, a directory, a file.
    let out = m.dir.path().join("out");
    ok(&m.sovseal(&[
        "restore",
        "--agent",
        &ag,
        "--seq",
        &a.to_string(),
        out.join("all").to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(out.join("all/notes/a.md")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(out.join("all/notes/b.md")).unwrap(), b"beta");
    assert_eq!(
        std::fs::read_link(out.join("all/link")).unwrap(),
        std::path::Path::new("notes/a.md")
    );
    let o = ok(&m.sovseal(&[
        "restore",
        "--agent",
        &ag,
        "--seq",
        &b.to_string(),
        "/notes",
        out.join("notes-b").to_str().unwrap(),
    ]));
    assert!(o.contains("from local data"), "{o}");
    let mut names: Vec<_> = std::fs::read_dir(out.join("notes-b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.md", "c.bin"]);
    let restored = out.join("a-from-b.md");
    ok(&m.sovseal(&[
        "restore",
        "--agent",
        &ag,
        "--seq",
        &b.to_string(),
        "notes/a.md",
        restored.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(&restored).unwrap(), b"alpha two");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&restored).unwrap().permissions()
        ) & 0o777,
        0o600
    );
}

#[test]
fn rollback_commits_an_old_tree_as_a_new_snapshot_and_keeps_history() {
    let (m, a, _b, c) = history();
    let ag = m.agent.clone();

    // rollback to A: a new snapshot equal to A; history kept; verifies.
    let o = ok(&m.sovseal(&["rollback", "--agent", &ag, "--seq", &a.to_string()]));
    let r = c + 1;
    assert!(
        o.contains(&format!("snapshot {r} has the tree of snapshot {a}")),
        "{o}"
    );
    assert_eq!(m.head(), r);
    let t = ok(&m.sovseal(&["diff", "--agent", &ag, &a.to_string(), &r.to_string()]));
    assert!(t.contains("0 added, 0 removed, 0 changed"), "{t}");
    m.verify();
    m.mount();
    assert_eq!(std::fs::read(m.path("notes/b.md")).unwrap(), b"beta");
    assert!(!m.path("top.txt").exists());
    // The snapshots in between are still browsable.
    assert_eq!(
        std::fs::read(m.path(&format!(".snapshots/{c:010}/top.txt"))).unwrap(),
        b"top"
    );
    // New writes go on from the rolled-back tree.
    m.sh("printf gamma > notes/g.md && sync");

    // While mounted, rollback is refused (the writer lock), nothing changes.
    let head = m.head();
    fails(
        &m.sovseal(&["rollback", "--agent", &ag, "--seq", "1"]),
        5,
        "already open for writing",
    );
    assert_eq!(m.head(), head);
    m.unmount();
    m.verify();
}

#[test]
fn history_commands_refuse_bad_input_clearly() {
    let m = Mounted::new("bad", &[]);
    m.sh("printf x > f && sync");
    m.unmount();
    let head = m.head();
    let out = m.dir.path().join("out");
    let beyond = (head + 5).to_string();
    let o = m.sovseal(&["diff", "--agent", "nobody", "1", "2"]);
    fails(&o, 2, "nobody");
    fails(
        &m.sovseal(&["diff", "--agent", "bad", "1", &beyond]),
        2,
        &format!("snapshot {beyond}"),
    );
    fails(
        &m.sovseal(&["rollback", "--agent", "nobody", "--seq", "1"]),
        2,
        "nobody",
    );
    fails(
        &m.sovseal(&["rollback", "--agent", "bad", "--seq", &beyond]),
        2,
        "out of range",
    );
    fails(
        &m.sovseal(&["rollback", "--agent", "bad", "--seq", "0"]),
        2,
        "out of range",
    );
    assert_eq!(m.head(), head, "a refused rollback committed something");
    // restore into a non-empty directory, over an existing file, of a path
    // that does not exist in the snapshot, of a snapshot out of range.
    std::fs::create_dir_all(out.join("full")).unwrap();
    std::fs::write(out.join("full/keep"), b"mine").unwrap();
    fails(
        &m.sovseal(&[
            "restore",
            "--agent",
            "bad",
            out.join("full").to_str().unwrap(),
        ]),
        2,
        "is not empty",
    );
    fails(
        &m.sovseal(&[
            "restore",
            "--agent",
            "bad",
            "/f",
            out.join("full/keep").to_str().unwrap(),
        ]),
        2,
        "already exists",
    );
    assert_eq!(std::fs::read(out.join("full/keep")).unwrap(), b"mine");
    let o = m.sovseal(&[
        "restore",
        "--agent",
        "bad",
        "/missing",
        out.join("m").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("No such file"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.join("m").exists());
    fails(
        &m.sovseal(&[
            "restore",
            "--agent",
            "bad",
            "--seq",
            &beyond,
            out.join("n").to_str().unwrap(),
        ]),
        2,
        &format!("snapshot {beyond}"),
    );
    assert!(!out.join("n").exists());
}
