//! Real programs inside the mount: git, sqlite3, tar, rsync, and a python
//! atomic-save loop. Each result is checked by the program itself (fsck,
//! integrity_check) and by comparing with a copy outside the mount.

mod support;
use support::mount::Mounted;

#[test]
fn git_init_commit_clone_fsck_checkout() {
    let m = Mounted::new("git", &[]);
    let src = m.dir.path().join("src-repo");
    std::fs::create_dir(&src).unwrap();
    let src = src.to_str().unwrap().to_owned();
    m.sh(&format!(
        "set -e; cd {src}; git init -q -b main .; for i in $(seq 1 50); do echo $i > f$i; done; git add .; git commit -qm one;
         git checkout -q -b other; echo changed > f1; mkdir sub; echo s > sub/s; git add .; git commit -qm two; git checkout -q main"
    ));
    let out = m.sh(&format!(
        "set -e; git init -q -b main work; cd work; for d in $(seq 1 10); do mkdir d$d; for i in $(seq 1 30); do echo \"$d $i\" > d$d/f$i; done; done;
         git add .; git commit -qm 'three hundred files'; git fsck --full; git log --oneline | wc -l; cd ..;
         git clone -q {src} clone; cd clone; git fsck --full; git checkout -q other; cat f1 sub/s; git checkout -q main; cat f1"
    ));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["1", "changed", "s", "1"],
        "{out}"
    );
    m.remount();
    let st = m.sh("cd work && git status --porcelain && git fsck --full && git ls-files | wc -l");
    assert_eq!(st.trim(), "300", "{st}");
    m.verify();
}

#[test]
fn sqlite_rollback_journal_and_wal() {
    let m = Mounted::new("sqlite", &[]);
    for mode in ["delete", "wal"] {
        let db = format!("{mode}.db");
        let mut sql = format!(
            "PRAGMA journal_mode={mode};\nCREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT);\n"
        );
        for b in 0..100 {
            sql.push_str("BEGIN;\n");
            for i in 0..100 {
                sql.push_str(&format!("INSERT INTO t(v) VALUES ('row {b} {i}');\n"));
            }
            sql.push_str("COMMIT;\n");
        }
        std::fs::write(m.dir.path().join("load.sql"), &sql).unwrap();
        let load = m.dir.path().join("load.sql");
        m.sh(&format!("sqlite3 {db} < {}", load.display()));
        let out = m.sh(&format!(
            "sqlite3 {db} 'PRAGMA integrity_check; SELECT count(*) FROM t;'"
        ));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            vec!["ok", "10000"],
            "{mode}: {out}"
        );
    }
    m.remount();
    for mode in ["delete", "wal"] {
        let out = m.sh(&format!(
            "sqlite3 {mode}.db 'PRAGMA integrity_check; SELECT count(*), max(v) FROM t;'"
        ));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            vec!["ok", "10000|row", "99", "99"],
            "{mode}: {out}"
        );
    }
}

#[test]
fn tar_and_rsync_round_trip() {
    let m = Mounted::new("tar", &[]);
    let src = m.dir.path().join("src");
    let long = "l".repeat(150);
    m.sh(&format!(
        "set -e; mkdir -p {s}/a/b {s}/{long}; cd {s}; head -c 3000000 /dev/urandom > a/big; echo small > a/b/small;
         ln -s ../a/b/small a/link; ln a/big a/hardlink; echo deep > {long}/{long}; chmod 600 a/b/small; touch -d 2001-02-03 a/b/small;
         cd ..; tar -cf src.tar -C src .",
        s = src.display()
    ));
    let tarball = m.dir.path().join("src.tar");
    m.sh(&format!(
        "mkdir x && tar -xpf {} -C x && diff -r --no-dereference {} x",
        tarball.display(),
        src.display()
    ));
    let inodes = m.sh("stat -c %i x/a/big x/a/hardlink");
    let v: Vec<&str> = inodes.split_whitespace().collect();
    assert_eq!(v[0], v[1], "hard link kept");
    assert_eq!(m.sh("readlink x/a/link").trim(), "../a/b/small");
    assert_eq!(m.sh("stat -c '%a %Y' x/a/b/small").trim(), "600 981158400");
    // rsync in, and back out, compare.
    let out = m.dir.path().join("out");
    m.sh(&format!(
        "rsync -aH {}/ r/ && rsync -aH r/ {}/ && diff -r --no-dereference {} {}",
        src.display(),
        out.display(),
        src.display(),
        out.display()
    ));
    m.remount();
    m.sh(&format!(
        "diff -r --no-dereference {} x && diff -r --no-dereference {} r",
        src.display(),
        src.display()
    ));
    m.verify();
}

#[test]
fn python_atomic_save_loop() {
    let m = Mounted::new("atomic", &[]);
    let before = m.head();
    let out = m.py(r#"
import json, os
for i in range(300):
    tmp = "state.json.tmp"
    with open(tmp, "w") as f:
        json.dump({"step": i, "pad": "x" * 2000}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, "state.json")
print(json.load(open("state.json"))["step"])
"#);
    assert_eq!(out.trim(), "299");
    assert!(
        m.head() - before >= 300,
        "each fsync is a snapshot: {}",
        m.head() - before
    );
    m.remount();
    assert_eq!(
        m.py("import json; print(json.load(open('state.json'))['step'])")
            .trim(),
        "299"
    );
    assert!(!m.path("state.json.tmp").exists());
}
