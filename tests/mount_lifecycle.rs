//! sovseal-mount's life: preflight errors, background start, the lock,
//! clean unmount (fusermount3 -u, SIGTERM, SIGINT) with pending changes
//! committed, stale mounts of a killed daemon, read-only mounts.

mod support;
use nix::sys::signal::Signal;
use std::process::Command;
use support::mount::{MOUNT, Mounted, SOVSEAL, text};

#[test]
fn bad_mountpoints_get_clear_messages() {
    let m = Mounted::new("agent-a", &[]);
    let run = |p: &std::path::Path, extra: &[&str]| {
        let o = m.cmd(MOUNT).arg(p).args(extra).output().unwrap();
        assert!(!o.status.success());
        text(&o.stderr)
    };
    assert!(run(&m.dir.path().join("missing"), &[]).contains("does not exist"));
    let full = m.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    assert!(run(&full, &["--agent", "other"]).contains("is not empty"));
    assert!(run(&m.mnt, &[]).contains("already mounted"));
    let file = m.dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert!(run(&file, &[]).contains("not a directory"));
    // The same agent elsewhere: the write lock names the running daemon.
    let second = m.dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let err = run(&second, &["--agent", "agent-a"]);
    let pid = m.daemon_pid().unwrap().to_string();
    assert!(
        err.contains("already open for writing") && err.contains(&pid),
        "{err}"
    );
    assert!(run(&second, &["--agent", "bad/name"]).contains("not allowed"));
    assert!(run(&second, &["-o", "bogus"]).contains("unknown mount option"));
}

#[test]
fn agent_defaults_to_the_basename_and_state_survives_remount() {
    let m = Mounted::new("notes", &[]);
    std::fs::write(m.path("a.txt"), b"hello\n").unwrap();
    m.remount();
    assert_eq!(std::fs::read(m.path("a.txt")).unwrap(), b"hello\n");
    assert!(m.home.join("agents/notes/index.db").exists());
    m.verify();
}

#[test]
fn unmount_commits_pending_metadata_changes() {
    // A quiet period far longer than the test: only the unmount can commit.
    for how in ["fusermount", "SIGTERM", "SIGINT"] {
        let m = Mounted::new("pending", &["--quiet-ms", "600000"]);
        let before = m.head();
        std::fs::create_dir(m.path("made-before-unmount")).unwrap();
        assert_eq!(
            m.head(),
            before,
            "{how}: the metadata change waits for the quiet period"
        );
        match how {
            "fusermount" => m.unmount(),
            "SIGTERM" => m.signal(Signal::SIGTERM),
            _ => m.signal(Signal::SIGINT),
        }
        assert!(!m.is_mounted(), "{how}: still mounted");
        assert_eq!(
            m.head(),
            before + 1,
            "{how}: the change was committed at unmount"
        );
        let o = m.sovseal(&["ls", "--agent", "pending"]);
        assert!(text(&o.stdout).contains("made-before-unmount"), "{how}");
        m.mount();
        assert!(m.path("made-before-unmount").is_dir());
    }
}

#[test]
fn stale_mount_of_a_killed_daemon_is_cleaned() {
    let m = Mounted::new("stale", &[]);
    std::fs::write(m.path("kept"), b"synced").unwrap();
    m.signal(Signal::SIGKILL);
    // readdir is never answered from the kernel's attribute cache.
    let err = std::fs::read_dir(&m.mnt).unwrap_err();
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "a dead daemon leaves a stale mount: {err}"
    );
    let o = m.try_mount();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cleaned a stale mount"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(m.path("kept")).unwrap(), b"synced");
}

#[test]
fn read_only_mount_refuses_writes() {
    let m = Mounted::new("ro", &[]);
    std::fs::write(m.path("f"), b"x").unwrap();
    m.unmount();
    let ro = m
        .cmd(MOUNT)
        .arg(&m.mnt)
        .args(["-o", "ro"])
        .output()
        .unwrap();
    assert!(ro.status.success(), "{}", text(&ro.stderr));
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"x");
    let e = std::fs::write(m.path("g"), b"y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn foreground_mode_stays_attached_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mnt = dir.path().join("fg");
    std::fs::create_dir(&mnt).unwrap();
    let env = |c: &mut Command| {
        c.env("SOVSEAL_HOME", &home)
            .env("SOVSEAL_KEY_FALLBACK", "file");
    };
    let mut init = Command::new(SOVSEAL);
    env(&mut init);
    assert!(init.arg("init").output().unwrap().status.success());
    let mut c = Command::new(MOUNT);
    env(&mut c);
    let mut child = c.arg(&mnt).arg("--foreground").spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(mnt.to_str().unwrap())
    {
        assert!(
            t0.elapsed().as_secs() < 20,
            "foreground mount never appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "foreground daemon exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(mnt.join("x"), b"1").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(mnt.to_str().unwrap())
    );
}

#[test]
fn remount_right_after_sigkill_while_the_kernel_still_caches_attributes() {
    // Regression: stat of a dead daemon's mount is answered from the attribute
    // cache for up to a second, so preflight took it for a live mount.
    let m = Mounted::new("quick", &[]);
    for round in 0..5 {
        std::fs::write(m.path(&format!("f{round}")), b"x").unwrap();
        std::fs::metadata(&m.mnt).unwrap();
        m.signal(Signal::SIGKILL);
        let o = m.try_mount();
        assert!(o.status.success(), "round {round}: {}", text(&o.stderr));
        assert!(m.path(&format!("f{round}")).exists(), "round {round}");
    }
}
