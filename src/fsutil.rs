//! Durable, symlink-safe file-system helpers: checked directories, atomic
//! writes, directory fsync.
//!
//! Architecture Invariant: every file sovseal creates or writes under
//! `SOVSEAL_HOME` goes through a [`Dir`]: a directory descriptor opened
//! once, not through a symlink, and checked (owned by the running user,
//! not writable by group or others). Files are opened relative to it with
//! `O_NOFOLLOW | O_CLOEXEC`; new files with `O_EXCL`; temp names carry 64
//! random bits. A symlink where sovseal writes is a refusal
//! ([`Error::UnsafePath`]), never followed.
//!
//! The durable-write recipe (stage, fsync, rename, fsync the directory)
//! lives here once and is used by everything that must survive a crash.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A checked directory: a descriptor plus the path it was opened at (for
/// messages and for SQLite, which opens by name).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Whether a directory must pass the ownership check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Owned by the running user, no group/other write.
    Private,
    /// Any owner (a directory the user named outside SOVSEAL_HOME, such as
    /// the metrics file's). Still never a symlink at the last component.
    Any,
}

fn nix_io(path: &Path, e: Errno) -> Error {
    Error::io(path, std::io::Error::from(e))
}

fn unsafe_path(path: &Path, detail: impl Into<String>) -> Error {
    Error::UnsafePath {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Maps `ELOOP` (what `O_NOFOLLOW` gives on a symlink) and `ENOTDIR` (what
/// `O_DIRECTORY | O_NOFOLLOW` gives on a symlink) to a refusal.
fn open_err(path: &Path, e: Errno) -> Error {
    match e {
        Errno::ELOOP => unsafe_path(
            path,
            "is a symlink; sovseal never follows one where it writes",
        ),
        Errno::ENOTDIR => unsafe_path(path, "is not a directory (a symlink or a file)"),
        _ => nix_io(path, e),
    }
}

fn one_component(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::Invalid(format!(
            "{name:?} is not a single file name"
        )));
    }
    Ok(())
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NOFOLLOW);

impl Dir {
    fn checked(fd: OwnedFd, path: PathBuf, check: Check) -> Result<Dir> {
        let st = fstat(&fd).map_err(|e| nix_io(&path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(unsafe_path(&path, "is not a directory"));
        }
        if check == Check::Private {
            let me = nix::unistd::geteuid().as_raw();
            if st.st_uid != me {
                return Err(unsafe_path(
                    &path,
                    format!(
                        "is owned by uid {}, not by the running user (uid {me}); sovseal keeps its data only in directories it owns",
                        st.st_uid
                    ),
                ));
            }
            if st.st_mode & 0o022 != 0 {
                return Err(unsafe_path(
                    &path,
                    format!(
                        "has mode {:o}: group or others may write in it; chmod go-w {}",
                        st.st_mode & 0o7777,
                        path.display()
                    ),
                ));
            }
        }
        Ok(Dir { fd, path })
    }

    /// Opens and checks a root directory (`SOVSEAL_HOME`, a restore temp
    /// dir): symlinks in the path leading to it are the user's choice and
    /// are followed, the directory itself must be owned by the running user
    /// and not writable by group or others.
    pub fn open_root(path: &Path) -> Result<Dir> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_err(path, e))?;
        Dir::checked(fd, path.to_owned(), Check::Private)
    }

    /// Creates a root directory (and its missing parents) with mode 0700 if
    /// missing, then opens and checks it as [`Dir::open_root`] does. The
    /// parent of each directory it made is synced, so that what is made in
    /// them does not lose its path to a power cut (fsync(2): a file's sync
    /// does not cover the entry naming it, nor the directories above). When
    /// a sync fails, what it made is removed again (best effort), so that
    /// the next call makes and syncs it.
    pub fn create_root(path: &Path) -> Result<Dir> {
        use std::os::unix::fs::DirBuilderExt;
        let missing: Vec<&Path> = path
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_err())
            .collect();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io(path, e))?;
        for made in &missing {
            match sync_parent(made) {
                Ok(()) => {}
                // A parent we may search and write but not read (mode
                // 0733): it cannot be opened to be synced.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    tracing::warn!(
                        "{} made, but its directory cannot be synced: {source}",
                        made.display()
                    );
                }
                Err(e) => {
                    for made in &missing {
                        let _ = std::fs::remove_dir(made);
                    }
                    return Err(e);
                }
            }
        }
        Dir::open_root(path)
    }

    /// Opens the parent directory of `path` for an atomic write: not
    /// through a symlink at its last component, and checked as private
    /// unless `any_owner` (a directory the user named outside the home).
    fn open_parent(path: &Path, any_owner: bool) -> Result<(Dir, OsString)> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let fd = openat(nix::fcntl::AT_FDCWD, parent, DIR_FLAGS, Mode::empty())
            .map_err(|e| open_err(parent, e))?;
        let check = if any_owner {
            Check::Any
        } else {
            Check::Private
        };
        Ok((Dir::checked(fd, parent.to_owned(), check)?, name.to_owned()))
    }

    /// The path this directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of entry `name` (for messages and for SQLite).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens and checks the subdirectory `name`; a symlink is a refusal.
    pub fn sub(&self, name: impl AsRef<OsStr>) -> Result<Dir> {
        let name = name.as_ref();
        one_component(name)?;
        let path = self.path.join(name);
        let fd =
            openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| open_err(&path, e))?;
        Dir::checked(fd, path, Check::Private)
    }

    /// Opens the subdirectory `name`, or `None` when it does not exist.
    pub fn sub_if_exists(&self, name: impl AsRef<OsStr>) -> Result<Option<Dir>> {
        match self.sub(name) {
            Ok(d) => Ok(Some(d)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the subdirectory `name` (mode 0700) if missing, then opens
    /// and checks it. One it made is synced into this directory first (see
    /// [`Dir::create_root`]).
    pub fn ensure_sub(&self, name: impl AsRef<OsStr>) -> Result<Dir> {
        self.make_sub(name.as_ref(), true)
    }

    /// [`Dir::ensure_sub`] without the sync: for a cache, whose directory
    /// lost to a power cut costs only fetching again what it held.
    pub fn ensure_sub_unsynced(&self, name: impl AsRef<OsStr>) -> Result<Dir> {
        self.make_sub(name.as_ref(), false)
    }

    fn make_sub(&self, name: &OsStr, sync: bool) -> Result<Dir> {
        one_component(name)?;
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) if sync => {
                if let Err(e) = self.sync() {
                    // Removed (unless something was made in it meanwhile),
                    // so that the next call makes and syncs it.
                    let _ = unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir);
                    return Err(e);
                }
            }
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(nix_io(&self.path.join(name), e)),
        }
        self.sub(name)
    }

    /// Opens `name` with `flags` plus `O_NOFOLLOW | O_CLOEXEC`; creation
    /// uses `mode`. The result must be a regular file.
    pub fn open_file(&self, name: impl AsRef<OsStr>, flags: OFlag, mode: u32) -> Result<File> {
        let name = name.as_ref();
        one_component(name)?;
        let path = self.path.join(name);
        let fd = openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| open_err(&path, e))?;
        let st = fstat(&fd).map_err(|e| nix_io(&path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(unsafe_path(&path, "is not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Creates `name`, which must not exist (`O_EXCL`), for writing.
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        self.open_file(name, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL, mode)
    }

    /// Opens `name` for reading.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> Result<File> {
        self.open_file(name, OFlag::O_RDONLY, 0)
    }

    /// Reads all of `name`; `None` when it does not exist.
    pub fn read(&self, name: impl AsRef<OsStr>) -> Result<Option<Vec<u8>>> {
        let name = name.as_ref();
        let mut f = match self.open_read(name) {
            Ok(f) => f,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).map_err(|e| Error::io(self.join(name), e))?;
        Ok(Some(out))
    }

    /// Whether entry `name` exists (any type; symlinks are not followed).
    pub fn exists(&self, name: impl AsRef<OsStr>) -> bool {
        nix::sys::stat::fstatat(
            &self.fd,
            name.as_ref(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Writes `bytes` to `name` atomically with `mode`: a new temp file with
    /// a random name (`O_EXCL`), renamed over `name`. With `durable`, the
    /// file and then the directory are fsynced. A symlink at `name` is
    /// replaced, never followed.
    pub fn write_atomic(
        &self,
        name: impl AsRef<OsStr>,
        bytes: &[u8],
        mode: u32,
        durable: bool,
    ) -> Result<()> {
        let name = name.as_ref();
        one_component(name)?;
        let path = self.path.join(name);
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd)
            .map_err(|e| Error::Failed(format!("the OS random source failed: {e}")))?;
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".tmp.{}", crate::hex::encode(&rnd)));
        let f = self.create_new(&tmp, mode)?;
        let res = (|| {
            fchmod(&f, Mode::from_bits_truncate(mode)).map_err(std::io::Error::from)?;
            (&f).write_all(bytes)?;
            if durable {
                f.sync_all()?;
            }
            renameat(&self.fd, tmp.as_os_str(), &self.fd, name).map_err(std::io::Error::from)
        })();
        if let Err(e) = res {
            let _ = unlinkat(&self.fd, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(Error::io(&path, e));
        }
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Renames entry `from` to `to` inside this directory.
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        one_component(from)?;
        one_component(to)?;
        renameat(&self.fd, from, &self.fd, to).map_err(|e| nix_io(&self.join(from), e))
    }

    /// Moves entry `from` of this directory to `to` in `dest`.
    pub fn rename_to(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        one_component(from)?;
        one_component(to)?;
        renameat(&self.fd, from, &dest.fd, to).map_err(|e| nix_io(&self.join(from), e))
    }

    /// Removes file `name`; a missing one is not an error.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        one_component(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(nix_io(&self.join(name), e)),
        }
    }

    /// fsyncs the directory so that entries created or renamed in it are
    /// durable.
    pub fn sync(&self) -> Result<()> {
        nix::unistd::fsync(&self.fd).map_err(|e| nix_io(&self.path, e))
    }

    /// The names in this directory, sorted (without `.` and `..`).
    pub fn names(&self) -> Result<Vec<OsString>> {
        // Listing through /proc/self/fd/N reads the directory this
        // descriptor holds, whatever now sits at its path.
        let via = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ));
        let rd = std::fs::read_dir(&via).map_err(|e| Error::io(&self.path, e))?;
        let mut out = Vec::new();
        for e in rd {
            out.push(e.map_err(|er| Error::io(&self.path, er))?.file_name());
        }
        out.sort();
        Ok(out)
    }

    /// The `*.json` entries, sorted by name. (Other names, such as the temp
    /// file left by an interrupted atomic write, are not listed.)
    pub fn json_names(&self) -> Result<Vec<OsString>> {
        Ok(self
            .names()?
            .into_iter()
            .filter(|n| Path::new(n).extension().is_some_and(|x| x == "json"))
            .collect())
    }
}

/// Syncs the directory that holds `path` (`.` for a bare name): a new name
/// in it is durable when this returns (fsync(2)).
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Syncs directory `dir` by its path (for a directory outside the checked
/// home, or one a library wrote in): the names made in it are durable when
/// this returns. [`Dir::sync`] for a checked one.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Creates `dir` and its missing parents with mode 0700 (an existing `dir`
/// is left as it is), then checks it: owned by the running user, not
/// writable by group or others, not a symlink.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    Dir::create_root(dir).map(drop)
}

/// Refuses a tree under `root` that holds a symlink in its first `levels`
/// levels (looked at, never followed; the directories of the last level
/// are not read): for directories written by code that follows them, such
/// as `object_store`'s local backend (a file remote, whose files all sit
/// three levels down). A symlink planted later, while in use, is not
/// caught here.
pub fn refuse_symlinks_below(root: &Path, levels: usize) -> Result<()> {
    let mut dirs = vec![(root.to_path_buf(), 1)];
    while let Some((dir, level)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if kind.is_symlink() {
                return Err(unsafe_path(
                    &entry.path(),
                    "is a symlink inside a file remote; sovseal never writes through one",
                ));
            }
            if kind.is_dir() && level < levels {
                dirs.push((entry.path(), level + 1));
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably with `mode`:
/// a temp file in the same dir, fsync, rename over `path`, fsync the dir.
/// The parent must be a private directory ([`Dir`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, name) = Dir::open_parent(path, false)?;
    dir.write_atomic(name, bytes, mode, true)
}

/// Like [`write_atomic`] but without fsync: atomic, not durable. For records
/// whose loss on power failure is harmless.
pub fn write_atomic_nosync(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, name) = Dir::open_parent(path, false)?;
    dir.write_atomic(name, bytes, mode, false)
}

/// [`write_atomic_nosync`] into a directory the user named outside the
/// home (the metrics file's): any owner, still no symlink followed.
pub fn write_atomic_anywhere(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (dir, name) = Dir::open_parent(path, true)?;
    dir.write_atomic(name, bytes, mode, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn a_symlink_in_the_levels_read_is_found() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"x").unwrap();
        refuse_symlinks_below(t.path(), 4).unwrap();
        let other = tempfile::tempdir().unwrap();
        symlink(other.path(), t.path().join("a/b/link")).unwrap();
        let e = refuse_symlinks_below(t.path(), 3).unwrap_err();
        assert!(
            matches!(e, Error::UnsafePath { ref path, .. } if path.ends_with("a/b/link")),
            "{e}"
        );
        std::fs::remove_file(t.path().join("a/b/link")).unwrap();
        // A file link four levels down: found when four are read, not three.
        symlink(deep.join("f"), deep.join("g")).unwrap();
        assert!(refuse_symlinks_below(t.path(), 4).is_err());
        refuse_symlinks_below(t.path(), 3).unwrap();
    }

    #[test]
    fn writes_never_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let home = t.path().join("home");
        let d = Dir::create_root(&home).unwrap();
        symlink(&victim, home.join("lock")).unwrap();
        let e = d
            .open_file("lock", OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
            .unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(d.create_new("lock", 0o600).is_err());
        // An atomic write replaces the link itself.
        d.write_atomic("lock", b"new", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(home.join("lock")).unwrap(), b"new");
        // A symlinked subdirectory is refused.
        symlink(t.path(), home.join("sub")).unwrap();
        let e = d.sub("sub").unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(matches!(d.ensure_sub("sub"), Err(Error::UnsafePath { .. })));
        // No temp file is left behind, and names stay single components.
        assert_eq!(d.names().unwrap(), ["lock", "sub"]);
        assert!(d.open_read("../victim").is_err());
    }

    #[test]
    fn loose_directories_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        Dir::create_root(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::open_root(&home).unwrap_err().to_string();
        assert!(e.contains("group or others may write"), "{e}");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir::open_root(&home).unwrap();
    }
}
