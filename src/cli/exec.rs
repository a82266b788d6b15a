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
    // Held from before the mount: a signal that would end this process
    // must not leave the agent mounted.
    let mut held = Held::new()?;
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
    let status = match held.signalled() {
        // Asked to stop while mounting: unmount without running anything.
        Some(sig) => Ok(128 + sig),
        None => run(&mut held, prog, rest, &mnt),
    };
    let unmounted = unmount(&home, &name, &mnt);
    let status = status?;
    unmounted?;
    Ok(status)
}

/// Runs the command in the mount; returns its exit code (127 when it is
/// not found, 128 + the signal that ended it). SIGTERM and SIGHUP sent to
/// this process are passed on to it; SIGINT and SIGQUIT reach it from the
/// terminal (the same process group).
fn run(held: &mut Held, prog: &str, rest: &[String], mnt: &Path) -> Result<i32> {
    let mut child = match Command::new(prog)
        .args(rest)
        .current_dir(mnt)
        .env("SOVSEAL_MOUNT", mnt)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("sovseal: exec: {prog}: command not found");
            return Ok(127);
        }
        Err(e) => return Err(Error::io(prog, e)),
    };
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io(prog, e))? {
            return Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1));
        }
        if let Some(sig) = held.wait(Duration::from_millis(50))
            && (sig == libc::SIGTERM || sig == libc::SIGHUP)
            && let Ok(sig) = nix::sys::signal::Signal::try_from(sig)
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        }
    }
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

/// Unmounts `mnt` and waits until the agent's writer lock is free: the
/// daemon has exited, its last commit done (a lock, unlike a pid, is
/// released by an exited process that nobody reaped).
fn unmount(home: &Home, name: &AgentName, mnt: &Path) -> Result<()> {
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
    let t0 = Instant::now();
    while let Some(pid) = crate::repo::agent::writer_pid(home, name) {
        if t0.elapsed() > DAEMON_EXIT {
            return Err(Error::Invalid(format!(
                "the mount daemon (pid {pid}) did not exit after the unmount"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// SIGINT, SIGQUIT, SIGTERM and SIGHUP caught (not ignored or blocked: a
/// caught signal is back to its default in a program this process starts,
/// so Ctrl-C still ends the command) for as long as this lives.
struct Held {
    rt: tokio::runtime::Runtime,
    signals: Vec<(i32, tokio::signal::unix::Signal)>,
    first: Option<i32>,
}

impl Held {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = crate::repo::remote::runtime()?;
        let signals = rt.block_on(async {
            [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP]
                .into_iter()
                .map(|s| signal(SignalKind::from_raw(s)).map(|h| (s, h)))
                .collect::<std::io::Result<Vec<_>>>()
        });
        let signals = signals.map_err(|e| Error::io("signal handlers", e))?;
        Ok(Held {
            rt,
            signals,
            first: None,
        })
    }

    /// The first signal received so far, if any (without waiting).
    fn signalled(&mut self) -> Option<i32> {
        if self.first.is_none() {
            self.first = self.wait(Duration::ZERO);
        }
        self.first
    }

    /// A signal received within `d`, if any.
    fn wait(&mut self, d: Duration) -> Option<i32> {
        let Held { rt, signals, first } = self;
        let got = rt.block_on(async {
            let any = futures::future::select_all(
                signals
                    .iter_mut()
                    .map(|(n, s)| Box::pin(async move { s.recv().await.map(|_| *n) })),
            );
            tokio::time::timeout(d.max(Duration::from_millis(1)), any)
                .await
                .ok()
                .and_then(|(n, _, _)| n)
        });
        if first.is_none() {
            *first = got;
        }
        got
    }
}
