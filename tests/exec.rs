//! `sovseal exec` (issue 17): an agent mounted on a private temporary
//! mountpoint for one command, then unmounted with the command's changes
//! sealed; the command's exit status is the exit status; Ctrl-C goes to the
//! command and the unmount still happens.

mod support;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::mount::{Mounted, SOVSEAL, ok, text};

/// The sovseal FUSE mounts of this machine whose mountpoint contains
/// `needle`.
fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("sovseal-exec-") && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn exec(m: &Mounted, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", "--agent", &m.agent, "--"];
    args.extend_from_slice(cmd);
    m.sovseal(&args)
}

/// The command runs in the mount (its working directory, and
/// SOVSEAL_MOUNT), its changes are sealed and readable once `exec`
/// returns, its exit status is `exec`'s, and nothing stays mounted, also
/// when it fails.
#[test]
fn exec_runs_a_command_in_the_mount_and_returns_its_status() {
    let m = Mounted::unmounted("execa", &[], Vec::new(), None);
    let o = exec(
        &m,
        &[
            "sh",
            "-c",
            r#"test "$PWD" = "$SOVSEAL_MOUNT" && test -d .snapshots && echo kept > f && echo "in $SOVSEAL_MOUNT""#,
        ],
    );
    let out = ok(&o);
    assert!(out.starts_with("in /"), "{out}");
    let mnt = out.trim().trim_start_matches("in ").to_string();
    assert!(mnt.contains("sovseal-exec-"), "{mnt}");
    assert!(
        !std::path::Path::new(&mnt).exists(),
        "the mountpoint is removed"
    );
    assert!(mounts_with("execa").is_empty());
    // Sealed: readable with the agent unmounted.
    assert_eq!(ok(&m.sovseal(&["cat", "--agent", "execa", "f"])), "kept\n");
    let o = exec(&m, &["sh", "-c", "echo more >> f; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o.stderr));
    assert!(mounts_with("execa").is_empty(), "unmounted after a failure");
    assert_eq!(
        ok(&m.sovseal(&["cat", "--agent", "execa", "f"])),
        "kept\nmore\n",
        "what a failing command wrote is kept too"
    );
    // A command that does not exist: an error, and no mount left.
    let o = exec(&m, &["/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(mounts_with("execa").is_empty());
    // While the agent is mounted elsewhere, exec is refused (locked).
    m.mount();
    let o = exec(&m, &["true"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("already open for writing"),
        "{}",
        text(&o.stderr)
    );
}

/// Starts `sovseal exec` on a new agent with a command that writes `f`
/// and then sleeps for a minute (in a process group of its own, led by
/// `exec`), waits until it is mounted, sends `sig` to the group
/// (`group`, as a terminal's Ctrl-C does) or to `exec` alone, and checks
/// that the command was stopped, `exec` exited with 128 + `sig`, nothing
/// stays mounted, and `f` was sealed.
fn signal_exec(agent: &str, sig: nix::sys::signal::Signal, group: bool) {
    let m = Mounted::unmounted(agent, &[], Vec::new(), None);
    let mut child = m
        .cmd(SOVSEAL)
        .args([
            "exec",
            "--agent",
            agent,
            "--",
            "sh",
            "-c",
            "echo x > f; exec sleep 60",
        ])
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Signalled once the command has written `f` (the mount appearing says
    // nothing of whether the command has started yet).
    let t0 = Instant::now();
    let written = || {
        mounts_with(agent).iter().any(|l| {
            let at = l.split(' ').nth(4).unwrap_or_default();
            std::fs::read(std::path::Path::new(at).join("f")).is_ok_and(|b| b == b"x\n")
        })
    };
    while !written() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never mounted, or the command never wrote f"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = child.id() as i32;
    let target = nix::unistd::Pid::from_raw(if group { -id } else { id });
    nix::sys::signal::kill(target, sig).unwrap();
    let status = child.wait().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the command was not stopped"
    );
    assert_eq!(status.code(), Some(128 + sig as i32));
    assert!(mounts_with(agent).is_empty(), "unmounted");
    assert_eq!(ok(&m.sovseal(&["cat", "--agent", agent, "f"])), "x\n");
}

/// Ctrl-C (SIGINT to the foreground process group) ends the command;
/// `exec` unmounts, then exits with 128 + SIGINT.
#[test]
fn exec_unmounts_after_sigint() {
    signal_exec("execi", nix::sys::signal::Signal::SIGINT, true);
}

/// SIGTERM sent to `exec` alone (a service manager, `timeout`) is passed
/// on to the command; `exec` unmounts, then exits with 128 + SIGTERM.
#[test]
fn exec_passes_sigterm_on_and_unmounts() {
    signal_exec("exect", nix::sys::signal::Signal::SIGTERM, false);
}
