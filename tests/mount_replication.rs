//! Replication through a real mount and a real S3 server (moto on
//! loopback) or a real PostgreSQL server (Unix socket): write, wait for replication, wipe the data dir (keeping the
//! key), mount again from the remote alone, and compare every file of every
//! snapshot byte for byte; `sovseal restore` to a plain directory;
//! `--sync-replication`.

mod support;
use std::time::Duration;
use support::moto::Moto;
use support::mount::{Mounted, text, tree};
use support::postgres::Postgres;

#[test]
fn write_replicate_wipe_and_mount_again_from_s3() {
    let s3 = Moto::start();
    let env = s3.owned_vars();
    write_replicate_wipe_and_mount_again(&s3.url("prod"), env);
}

/// The same through a real PostgreSQL server (#16's driver).
#[test]
fn write_replicate_wipe_and_mount_again_from_postgres() {
    let pg = Postgres::start();
    write_replicate_wipe_and_mount_again(&pg.url(), Vec::new());
    let rows: u64 = pg
        .psql("SELECT count(*) FROM sovseal_objects")
        .trim()
        .parse()
        .unwrap();
    assert!(rows >= 12, "{rows} rows");
}

fn write_replicate_wipe_and_mount_again(url: &str, env: Vec<(String, String)>) {
    let url = url.to_string();
    let m = Mounted::with_env("repl", &["--remote", &url], env);
    m.sh("echo one > a && mkdir -p d/e && echo two > d/e/b && ln -s d/e/b link");
    m.sh("head -c 3000000 /dev/urandom > big && cp big d/copy && echo three >> a");
    m.py("import os\nfd = os.open('big', os.O_WRONLY)\nos.pwrite(fd, b'patched', 1048000)\nos.fsync(fd)\nos.close(fd)");
    std::thread::sleep(Duration::from_millis(500));
    let head = m.wait_replicated();
    assert!(head >= 5, "{head}");
    let s = m.status();
    assert_eq!(s["remote"], url.as_str());
    assert!(s["last_error"].is_null(), "{s}");
    let before = m.history();
    assert_eq!(before.len() as u64, head);
    m.unmount();

    // A fresh machine: no data dir, the same key, the remote.
    std::fs::remove_dir_all(m.home.join("agents/repl")).unwrap();
    m.mount();
    assert_eq!(
        m.history(),
        before,
        "every file of every snapshot, byte for byte"
    );
    m.verify();
    let log = std::fs::read_to_string(m.home.join("logs/repl.log")).unwrap();
    assert!(log.contains("restored agent repl at snapshot"), "{log}");

    // Writing goes on after the restore, and replicates.
    m.sh("echo after > after");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.wait_replicated(), head + 1);

    // `sovseal restore` to a plain directory, from the remote alone.
    let dest = m.dir.path().join("restored");
    let o = m.sovseal(&[
        "restore",
        "--agent",
        "repl",
        "--remote",
        &url,
        "--seq",
        "3",
        dest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(tree(&dest), before["0000000003"]);
    let o = m.sovseal(&[
        "restore",
        "--agent",
        "repl",
        "--remote",
        &url,
        dest.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && text(&o.stderr).contains("not empty"));
    // One file of the newest snapshot, from the remote alone.
    let one = m.dir.path().join("after.txt");
    let o = m.sovseal(&[
        "restore",
        "--agent",
        "repl",
        "--remote",
        &url,
        "/after",
        one.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&url), "{}", text(&o.stdout));
    assert_eq!(std::fs::read(&one).unwrap(), b"after\n");
}

#[test]
fn sync_replication_makes_fsync_wait_for_the_remote() {
    let s3 = Moto::start();
    let env = s3.owned_vars();
    let m = Mounted::with_env(
        "syncrep",
        &["--remote", &s3.url("sync"), "--sync-replication"],
        env,
    );
    for i in 0..5 {
        m.sh(&format!("echo {i} > f{i}"));
        // No waiting: close returned only once the snapshot was on the remote.
        let s = m.status();
        assert_eq!(s["replicated_seq"], s["head_seq"], "after close {i}: {s}");
    }
}

#[test]
fn default_remote_is_a_local_directory_under_the_home() {
    let m = Mounted::new("local-default", &[]);
    m.sh("echo x > f");
    std::thread::sleep(Duration::from_millis(300));
    m.wait_replicated();
    let s = m.status();
    let remote = s["remote"].as_str().unwrap();
    assert!(
        remote.starts_with("file://") && remote.contains("/home/remote"),
        "{remote}"
    );
    assert!(m.home.join("remote/sovseal-v1").is_dir());
}
