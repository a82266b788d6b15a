//! `sovseal exec`: mounts an agent on a private temporary mountpoint, runs
//! a command there, unmounts (the daemon's last commit seals what the
//! command left), and exits with the command's status.

use super::args::ExecArgs;
use crate::config::{AgentName, Home};
use crate::{Error, Result};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest wait for the daemon's last commit after the unmount.
const DAEMON_EXIT: Duration = Duration::from_secs(120);

/// Runs `sovseal exec`; returns the exit code (the command's, 128 + the
/// signal that ended it, or an error of the mount or unmount).
pub(super) fn exec(args: ExecArgs) -> Result<i32> {
    let home = Home::from_env()?;
    let name = AgentName::new(&args.agent)?;
    let Some((prog, rest)) = args.command.split_first() else {
        return Err(Error::Invalid("no command to run".into()));
    };
    let dir = private_dir()?;
    let mnt = dir.0.join(name.as_str());
    std::fs::create_dir(&mnt).map_err(|e| Error::io(&mnt, e))?;
    let mount = mount_binary();
    // In a process group of its own: the terminal's Ctrl-C is for the
    // command, not for the daemon, which must outlive it to seal its
    // changes at the unmount.
    let out = Command::new(&mount)
        .arg("--agent")
        .arg(name.as_str())
        .arg(&mnt)
        .process_group(0)
        .output()
        .map_err(|e| Error::io(&mount, e))?;
    if !out.status.success() {
        // Its message and exit code (5: the agent is mounted elsewhere).
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return Ok(out.status.code().unwrap_or(1));
    }
    let daemon = crate::repo::agent::writer_pid(&home, &name);
    // The terminal's Ctrl-C reaches the command (the same process group);
    // this process waits for it to end, then unmounts.
    let _held = hold_interrupts();
    let status = Command::new(prog)
        .args(rest)
        .current_dir(&mnt)
        .env("SOVSEAL_MOUNT", &mnt)
        .status();
    let unmounted = unmount(&mnt, daemon);
    let status = status.map_err(|e| Error::io(prog, e))?;
    unmounted?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// A new directory of mode 0700 in the temporary directory, removed (when
/// empty) on drop.
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn private_dir() -> Result<PrivateDir> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = base.join(format!(
            "sovseal-exec-{}-{nanos:x}{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(PrivateDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    Err(Error::Invalid(
        "no temporary mountpoint could be made".into(),
    ))
}

/// `sovseal-mount` beside this executable, else from `PATH`.
fn mount_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sovseal-mount")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("sovseal-mount"))
}

/// Unmounts `mnt` and waits until the daemon `pid` (the agent's writer)
/// has exited, its last commit done.
fn unmount(mnt: &Path, pid: Option<u32>) -> Result<()> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mnt)
        .output()
        .map_err(|e| Error::io("fusermount3", e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "unmounting {} failed: {}",
            mnt.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let Some(pid) = pid else { return Ok(()) };
    let t0 = Instant::now();
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    while nix::sys::signal::kill(pid, None).is_ok() {
        if t0.elapsed() > DAEMON_EXIT {
            return Err(Error::Invalid(format!(
                "the mount daemon (pid {pid}) did not exit after the unmount"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Catches SIGINT and SIGQUIT in this process for as long as the returned
/// runtime lives, so that Ctrl-C does not end it before the unmount. A
/// caught signal (unlike an ignored or blocked one) is back to its default
/// in a program this process starts: Ctrl-C still ends the command.
fn hold_interrupts() -> Option<(tokio::runtime::Runtime, Vec<tokio::signal::unix::Signal>)> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = crate::repo::remote::runtime().ok()?;
    let held = rt.block_on(async {
        [SignalKind::interrupt(), SignalKind::quit()]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect::<Vec<_>>()
    });
    Some((rt, held))
}
