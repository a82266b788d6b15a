//! Durable file-system helpers: private dirs, atomic writes, directory fsync.
//!
//! The durable-write recipe (stage, fsync, rename, fsync the directory)
//! lives here once and is used by everything that must survive a crash.

use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700; an existing `dir`
/// is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` atomically and durably with `mode`:
/// a temp file in the same dir, fsync, rename over `path`, fsync the dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_inner(path, bytes, mode, true)
}

/// Like [`write_atomic`] but without fsync: atomic, not durable. For records
/// whose loss on power failure is harmless.
pub fn write_atomic_nosync(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_inner(path, bytes, mode, false)
}

fn write_atomic_inner(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The `*.json` files in `dir`, sorted by name; none if `dir` is missing.
/// (Other names, such as the `.tmp` left by an interrupted atomic write,
/// are not listed.)
pub fn json_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(|er| Error::io(dir, er))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}
