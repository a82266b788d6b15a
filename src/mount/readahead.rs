//! The kernel's read-ahead window for this mount.
//!
//! The kernel reads ahead of a sequential reader in a window per backing
//! device, and a FUSE mount starts with the kernel default of 128 KiB: the
//! FUSE init reply can only lower it (the kernel offers its current window
//! as the most). So a sequential read reaches the daemon as 128 KiB
//! requests, one at a time per reader, each paying a round trip. A larger
//! window makes the kernel send requests of up to `max_pages` (1 MiB) and
//! several at once, which the worker threads then open and verify in
//! parallel: the next chunks are decrypted before the reader asks for them.
//! The window is a property of the mount's anonymous device
//! (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`), gone with the mount, and
//! writable by root only; an unprivileged mount keeps the default.

use std::path::Path;

/// The window a mount asks for unless told otherwise, in KiB. Measured in
/// docs/PERFORMANCE.md (session 14): 1 MiB and more read up to 1.7x as
/// fast as 128 KiB; 16 MiB read no faster than 4 MiB.
pub const DEFAULT_KIB: u32 = 4096;

/// The sysfs file holding the read-ahead window of the mount at
/// `mountpoint`, if it is mounted.
pub fn window_file(mountpoint: &Path) -> Option<std::path::PathBuf> {
    let m = crate::sys::mount_at(mountpoint)?;
    Some(
        Path::new("/sys/class/bdi")
            .join(m.dev)
            .join("read_ahead_kb"),
    )
}

/// Sets the read-ahead window of the mount at `mountpoint` to `kib` (0
/// leaves the kernel's default). Best effort: a window that cannot be set
/// only costs speed, so it is logged, not fatal.
pub fn set(mountpoint: &Path, kib: u32) {
    if kib == 0 {
        return;
    }
    let Some(file) = window_file(mountpoint) else {
        tracing::warn!(
            "read-ahead: {} is not in the mount table",
            mountpoint.display()
        );
        return;
    };
    match std::fs::write(&file, format!("{kib}\n")) {
        Ok(()) => tracing::debug!("read-ahead window {kib} KiB ({})", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => tracing::info!(
            "read-ahead window stays at the kernel's default: setting {} needs root",
            file.display()
        ),
        Err(e) => tracing::warn!("read-ahead window not set ({}): {e}", file.display()),
    }
}
