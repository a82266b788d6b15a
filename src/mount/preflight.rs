//! The mountpoint around a mount: checks before it (exists, a directory,
//! empty, not mounted; a dead daemon's stale mount cleaned), readiness
//! after it (the kernel lists it and answers), and the unmount.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A FUSE mount whose daemon died: the kernel answers ENOTCONN or, for an
/// aborted connection, ECONNABORTED.
fn is_dead_connection(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Detaches the stale mount of a dead daemon at `path`.
fn detach_stale(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => {
            tracing::warn!(
                "cleaned a stale mount at {} left by a dead daemon",
                path.display()
            );
            Ok(())
        }
        Err(err) => Err(Error::Failed(format!(
            "{} is a stale mount of a dead daemon and could not be detached ({err}); run: fusermount3 -u {}",
            path.display(),
            path.display()
        ))),
    }
}

/// Checks the mountpoint: exists, is a directory, is empty, is not mounted;
/// cleans a stale mount left by a killed daemon.
pub fn preflight(raw: &Path) -> Result<PathBuf> {
    let abs = if raw.is_absolute() {
        raw.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(raw)
    };
    let path = match std::fs::metadata(&abs).and_then(|_| std::fs::canonicalize(&abs)) {
        Ok(p) => p,
        Err(e) if is_dead_connection(&e) => {
            detach_stale(&abs)?;
            std::fs::canonicalize(&abs).map_err(|e| Error::io(&abs, e))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "mountpoint {} does not exist; create it first (mkdir -p {})",
                abs.display(),
                abs.display()
            )));
        }
        Err(e) => return Err(Error::io(&abs, e)),
    };
    if !path.is_dir() {
        return Err(Error::Invalid(format!(
            "mountpoint {} is not a directory",
            path.display()
        )));
    }
    let mut detached = 0;
    while let Some(fstype) = crate::sys::mounted_at(&path) {
        // A daemon that died a moment ago may still have its root attributes
        // cached by the kernel: ask for something uncached before deciding.
        if let Err(e) = std::fs::read_dir(&path)
            && is_dead_connection(&e)
            && detached < 8
        {
            detach_stale(&path)?;
            detached += 1;
            continue;
        }
        return Err(Error::Invalid(format!(
            "{} is already mounted ({fstype}); unmount it first (fusermount3 -u {})",
            path.display(),
            path.display()
        )));
    }
    let mut entries = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
    if entries.next().is_some() {
        return Err(Error::Invalid(format!(
            "mountpoint {} is not empty; mount on an empty directory",
            path.display()
        )));
    }
    Ok(path)
}

/// Waits until the kernel lists a FUSE mount at `mountpoint` and a request
/// through it is answered: readiness means the mount works, not merely that
/// the mount call returned.
pub fn wait_answering(mountpoint: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let listed = crate::sys::mounted_at(mountpoint).is_some_and(|t| t.starts_with("fuse"));
        if listed && std::fs::read_dir(mountpoint).is_ok() {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(Error::Failed(format!(
                "the mount at {} did not answer within 30 s",
                mountpoint.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Unmounts `mountpoint`; when files are still open there (EBUSY), detaches
/// it instead, so that new lookups fail while open files keep working until
/// closed (each close still commits). Returns whether it detached. Without
/// the privilege to unmount (a user mount), asks fusermount3.
pub fn unmount(mountpoint: &Path) -> Result<bool> {
    use nix::mount::{MntFlags, umount2};
    match umount2(mountpoint, MntFlags::empty()) {
        Ok(()) => Ok(false),
        // Unmounted by someone else in the meantime: nothing left to do.
        Err(nix::errno::Errno::EINVAL) if crate::sys::mounted_at(mountpoint).is_none() => Ok(false),
        Err(nix::errno::Errno::EBUSY) => umount2(mountpoint, MntFlags::MNT_DETACH)
            .map(|()| true)
            .map_err(|e| Error::io(mountpoint, e.into())),
        Err(nix::errno::Errno::EPERM) => {
            let run = |lazy: bool| {
                let mut c = std::process::Command::new("fusermount3");
                c.arg("-u");
                if lazy {
                    c.arg("-z");
                }
                c.arg(mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if run(false) {
                Ok(false)
            } else if run(true) {
                Ok(true)
            } else {
                Err(Error::Failed(format!(
                    "could not unmount {}: fusermount3 -u failed",
                    mountpoint.display()
                )))
            }
        }
        Err(e) => Err(Error::io(mountpoint, e.into())),
    }
}
