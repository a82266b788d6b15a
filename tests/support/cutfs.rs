//! A pass-through FUSE file system that can lose power.
//!
//! It serves a directory of the real disk ("lower") at a mountpoint, and
//! holds every write of file data (and every size change) in memory until
//! the file is synced (`fsync`/`fdatasync`), as a disk's volatile cache
//! would. [`CutFs::cut`] is the power cut: of each file's unsynced writes,
//! a random prefix reaches the disk and the rest is lost.
//!
//! New names (a file created, a directory made, a symlink, a hard link, and
//! a rename of such a name to a name that did not exist) reach the disk
//! only when their directory is synced (`fsyncdir`), as fsync(2) says: a
//! file's own sync does not cover the entry that names it. A cut keeps a
//! random prefix of the unsynced names, in the order they were made, and
//! removes the rest (a directory with all it holds). A directory's sync
//! covers its own names only (stricter than ext4 or XFS, whose journal
//! commit covers every name made before it too); of the names no sync
//! covered, those kept are the oldest, in the order made (looser than
//! fsync(2), which would also allow a later one kept and an earlier one
//! lost: not modelled). Everything else
//! (unlinks, renames onto an existing name or of a name already on the
//! disk, modes, times) is treated as reaching the disk when it is done:
//! undoing those would need the replaced file kept aside.
//! Files are opened without `FOPEN_KEEP_CACHE` and attributes are never
//! cached, so after a cut the kernel shows what the disk kept.
//!
//! [`CutFs::slow_syncs`] makes every sync wait before it takes its writes
//! (a slow disk), and [`CutFs::cut_dead`] cuts the power while the
//! programs above still run: from then on every change and sync fails
//! until [`CutFs::revive`]. Together they catch a program that reports
//! data durable before the sync below it has returned, which a kill before
//! the cut cannot (a killed process does not exit while a FUSE request it
//! sent is being served, so its sync always completes first).
//!
//! It runs inside the test process (its own FUSE session); the program
//! under test runs on top of it in another process.

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One unsynced change of a file's data.
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// A file with unsynced changes: what readers see, and the changes in order.
struct Dirty {
    file: Arc<File>,
    current: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Default)]
struct State {
    /// Our inode numbers by the lower file's (dev, ino), and back to a path.
    by_lower: HashMap<(u64, u64), u64>,
    paths: HashMap<u64, PathBuf>,
    next_ino: u64,
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
    dirty: HashMap<u64, Dirty>,
    /// Syncs of files that reached the disk (directory syncs are not
    /// counted), for the tests' own checks.
    syncs: u64,
    /// The same, by the file's name.
    syncs_by_name: HashMap<std::ffi::OsString, u64>,
    /// New names no directory sync covered yet, in the order they were
    /// made: (our inode number of the directory, the lower path).
    unsynced_names: Vec<(u64, PathBuf)>,
}

/// What a cut kept of the unsynced changes, and what it lost.
pub struct Cut {
    pub writes_kept: usize,
    pub writes_lost: usize,
    /// New names removed (see the module doc).
    pub names_lost: usize,
}

/// The file system; clone the `Arc` to cut it from the test.
pub struct CutFs {
    root: PathBuf,
    state: Mutex<State>,
    /// How long a sync takes before it starts to write (µs; see
    /// [`CutFs::slow_syncs`]).
    sync_delay_us: std::sync::atomic::AtomicU64,
    /// Cut and not revived: nothing reaches the disk.
    dead: std::sync::atomic::AtomicBool,
    /// Reads of files whose name ends so wait until it is cleared (see
    /// [`CutFs::hold_reads`]).
    held: Mutex<Option<String>>,
    released: std::sync::Condvar,
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn to_time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

impl CutFs {
    /// A file system over `lower` (an existing directory).
    pub fn new(lower: &Path) -> Arc<Self> {
        let mut st = State {
            next_ino: 2,
            next_fh: 1,
            ..State::default()
        };
        st.paths.insert(1, lower.to_owned());
        let m = std::fs::metadata(lower).unwrap();
        st.by_lower.insert((m.dev(), m.ino()), 1);
        Arc::new(CutFs {
            root: lower.to_owned(),
            state: Mutex::new(st),
            sync_delay_us: std::sync::atomic::AtomicU64::new(0),
            dead: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(None),
            released: std::sync::Condvar::new(),
        })
    }

    /// Mounts it at `mnt`; the session ends when the returned value drops.
    pub fn mount(self: &Arc<Self>, mnt: &Path) -> fuser::BackgroundSession {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("cutfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(4);
        fuser::spawn_mount(Shared(self.clone()), mnt, &config).expect("mount cutfs")
    }

    /// Makes every sync wait `d` before it takes the writes it covers, as a
    /// slow disk would: a cut meanwhile loses them, so a sync that has not
    /// returned guarantees nothing, and a program told its data is durable
    /// before the sync below returned is caught.
    pub fn slow_syncs(&self, d: Duration) {
        self.sync_delay_us
            .store(d.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds every read of a file whose name ends with `suffix` until the
    /// next call (`None`: releases them), as a server that does not answer
    /// yet would.
    pub fn hold_reads(&self, suffix: Option<&str>) {
        *self.held.lock().unwrap() = suffix.map(str::to_owned);
        self.released.notify_all();
    }

    /// Makes every pending write and name durable (as if each file and
    /// directory were synced).
    pub fn sync_all(&self) {
        let mut st = self.state.lock().unwrap();
        st.unsynced_names.clear();
        let dirty: Vec<u64> = st.dirty.keys().copied().collect();
        for ino in dirty {
            let d = st.dirty.remove(&ino).unwrap();
            apply(&d.file, &d.pending, d.pending.len());
        }
    }

    /// The power cut: of each file's unsynced changes a prefix chosen by
    /// `pick(count)` (in `0..=count`) reaches the disk, the rest is lost;
    /// then of the unsynced new names a prefix so chosen stays, and the
    /// rest are removed, newest first.
    pub fn cut(&self, mut pick: impl FnMut(usize) -> usize) -> Cut {
        let mut st = self.state.lock().unwrap();
        let (mut kept, mut lost) = (0, 0);
        for (_, d) in st.dirty.drain() {
            let k = pick(d.pending.len()).min(d.pending.len());
            apply(&d.file, &d.pending, k);
            kept += k;
            lost += d.pending.len() - k;
        }
        let names = std::mem::take(&mut st.unsynced_names);
        let k = pick(names.len()).min(names.len());
        for (_, path) in names[k..].iter().rev() {
            let gone = match path.symlink_metadata() {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
                Ok(_) => std::fs::remove_file(path),
                Err(_) => Ok(()),
            };
            gone.unwrap_or_else(|e| panic!("cutfs: losing {}: {e}", path.display()));
        }
        Cut {
            writes_kept: kept,
            writes_lost: lost,
            names_lost: names.len() - k,
        }
    }

    /// Unsynced new names so far (see the module doc).
    pub fn unsynced_names(&self) -> usize {
        self.state.lock().unwrap().unsynced_names.len()
    }

    /// The power cut of a machine whose programs are still running: as
    /// [`CutFs::cut`], and from then on nothing reaches the disk (every
    /// change and sync fails with `EIO`, including a sync already waiting
    /// in [`CutFs::slow_syncs`]) until [`CutFs::revive`].
    pub fn cut_dead(&self, pick: impl FnMut(usize) -> usize) -> Cut {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut(pick)
    }

    /// Power back after [`CutFs::cut_dead`], once the programs that ran at
    /// the cut are gone.
    pub fn revive(&self) {
        self.dead.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_dead(&self) -> bool {
        self.dead.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Syncs that reached the disk so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }

    /// Syncs so far of the files whose name `pick` picks.
    pub fn syncs_of(&self, pick: impl Fn(&str) -> bool) -> u64 {
        let st = self.state.lock().unwrap();
        st.syncs_by_name
            .iter()
            .filter(|(n, _)| pick(&n.to_string_lossy()))
            .map(|(_, c)| c)
            .sum()
    }

    /// The lower path of `ino`.
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.state
            .lock()
            .unwrap()
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// Our attributes of the lower file at `path` (registering its inode).
    /// A file this file system just created (`new`) gets an inode number of
    /// its own even when the lower one reuses the number of a file deleted
    /// since (ext4 does at once: an SQLite `-wal` created where the `-shm`
    /// was removed). Our number must not be reused: the kernel, finding the
    /// same number and generation, would take the new file for the old one
    /// (its page cache, its mmap writes still to come), and the old file's
    /// unsynced writes would be filed under the new one.
    fn attr_of(&self, path: &Path, new: bool) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(path).map_err(|e| io_errno(&e))?;
        let mut st = self.state.lock().unwrap();
        let known = match new {
            true => None,
            false => st.by_lower.get(&(m.dev(), m.ino())).copied(),
        };
        let ino = match known {
            Some(i) => i,
            None => {
                let i = st.next_ino;
                st.next_ino += 1;
                st.by_lower.insert((m.dev(), m.ino()), i);
                i
            }
        };
        st.paths.insert(ino, path.to_owned());
        let size = st
            .dirty
            .get(&ino)
            .map_or(m.len(), |d| d.current.len() as u64);
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            fuser::FileType::Directory
        } else if ft.is_symlink() {
            fuser::FileType::Symlink
        } else {
            fuser::FileType::RegularFile
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: to_time(m.atime(), m.atime_nsec()),
            mtime: to_time(m.mtime(), m.mtime_nsec()),
            ctime: to_time(m.ctime(), m.ctime_nsec()),
            crtime: to_time(m.ctime(), m.ctime_nsec()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn open_lower(
        &self,
        ino: u64,
        path: &Path,
        flags: i32,
        create: Option<u32>,
    ) -> Result<u64, Errno> {
        let mut o = std::fs::OpenOptions::new();
        let acc = flags & libc::O_ACCMODE;
        // Always open for writing when possible: a later sync may go through it.
        o.read(true)
            .write(acc != libc::O_RDONLY || create.is_some());
        if let Some(mode) = create {
            o.create(true).mode(mode);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
        }
        let f = match o.open(path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                std::fs::File::open(path).map_err(|e| io_errno(&e))?
            }
            Err(e) => return Err(io_errno(&e)),
        };
        let mut st = self.state.lock().unwrap();
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, (ino, Arc::new(f)));
        Ok(fh)
    }

    /// Runs `f` on the file's dirty state, creating it from the lower
    /// content first.
    fn with_dirty<R>(
        &self,
        ino: u64,
        file: &Arc<File>,
        f: impl FnOnce(&mut Dirty) -> R,
    ) -> Result<R, Errno> {
        let mut st = self.state.lock().unwrap();
        if self.is_dead() {
            // Checked under the lock the cut drains under.
            return Err(Errno::EIO);
        }
        let d = match st.dirty.entry(ino) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let len = file.metadata().map_err(|e| io_errno(&e))?.len();
                let mut current = vec![0u8; len as usize];
                file.read_exact_at(&mut current, 0)
                    .map_err(|e| io_errno(&e))?;
                v.insert(Dirty {
                    file: file.clone(),
                    current,
                    pending: Vec::new(),
                })
            }
        };
        Ok(f(d))
    }

    fn handle(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        self.state
            .lock()
            .unwrap()
            .handles
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// What a sync waits before it takes its writes ([`CutFs::slow_syncs`]).
    fn slow_disk(&self) {
        let delay = self
            .sync_delay_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
    }

    /// A file's unsynced changes reach the disk, then the disk syncs.
    fn sync_ino(&self, ino: u64) -> Result<(), Errno> {
        self.slow_disk();
        let d = {
            // Checked under the lock `cut` drains under: a sync either
            // took its writes before the cut or fails.
            let mut st = self.state.lock().unwrap();
            if self.is_dead() {
                return Err(Errno::EIO);
            }
            st.dirty.remove(&ino)
        };
        if let Some(d) = d {
            apply(&d.file, &d.pending, d.pending.len());
            d.file.sync_data().map_err(|e| io_errno(&e))?;
        }
        let name = self
            .path(INodeNo(ino))
            .ok()
            .and_then(|p| p.file_name().map(Into::into));
        let mut st = self.state.lock().unwrap();
        st.syncs += 1;
        *st.syncs_by_name
            .entry(name.unwrap_or_default())
            .or_default() += 1;
        Ok(())
    }

    /// A new name, durable at the next sync of its directory `parent`.
    fn made(&self, parent: INodeNo, path: &Path) {
        let mut st = self.state.lock().unwrap();
        st.unsynced_names.push((parent.0, path.to_owned()));
    }

    /// The sync of directory `dir`: the new names in it reach the disk.
    fn names_synced(&self, dir: INodeNo) -> Result<(), Errno> {
        self.slow_disk();
        let mut st = self.state.lock().unwrap();
        if self.is_dead() {
            return Err(Errno::EIO);
        }
        st.unsynced_names.retain(|(parent, _)| *parent != dir.0);
        Ok(())
    }

    /// `path` (and everything under it) was removed: nothing of it is left
    /// to lose.
    fn unnamed(&self, path: &Path) {
        let mut st = self.state.lock().unwrap();
        st.unsynced_names.retain(|(_, p)| !p.starts_with(path));
    }

    /// A rename of `from` to `to` in directory `newparent`: an unsynced new
    /// name stays one under its new name when `to` did not exist; onto an
    /// existing name it is treated as durable (see the module doc). Names
    /// under a renamed directory follow it.
    fn renamed(&self, from: &Path, to: &Path, newparent: INodeNo, replaced: bool) {
        let mut st = self.state.lock().unwrap();
        st.unsynced_names.retain_mut(|(parent, p)| {
            if replaced && p.as_path() == to {
                // The file it named is gone; what replaced it is durable.
                return false;
            }
            if p.as_path() == from {
                if replaced {
                    return false;
                }
                *parent = newparent.0;
                *p = to.to_owned();
            } else if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
            true
        });
    }

    /// Renames in the path table: `from` (and everything under it) is now `to`.
    fn moved(&self, from: &Path, to: &Path) {
        let mut st = self.state.lock().unwrap();
        for p in st.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_owned()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

/// Writes the first `n` changes to the lower file (no sync: the lower disk
/// is "the disk").
fn apply(file: &File, pending: &[Pending], n: usize) {
    for p in &pending[..n] {
        match p {
            Pending::Write(off, data) => file.write_all_at(data, *off).unwrap(),
            Pending::SetLen(len) => file.set_len(*len).unwrap(),
        }
    }
}

/// The FUSE face of a shared [`CutFs`].
struct Shared(Arc<CutFs>);

const TTL: Duration = Duration::ZERO;

impl Filesystem for Shared {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .0
            .child(parent, name)
            .and_then(|p| self.0.attr_of(&p, false))
        {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.path(ino).and_then(|p| self.0.attr_of(&p, false)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = (|| {
            let path = self.0.path(ino)?;
            if let Some(m) = mode {
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(m))
                    .map_err(|e| io_errno(&e))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(|e| io_errno(&e))?;
            }
            if let Some(len) = size {
                let file = match fh.map(|f| self.0.handle(f)) {
                    Some(Ok((_, f))) => f,
                    _ => Arc::new(
                        std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&path)
                            .map_err(|e| io_errno(&e))?,
                    ),
                };
                self.0.with_dirty(ino.0, &file, |d| {
                    d.current.resize(len as usize, 0);
                    d.pending.push(Pending::SetLen(len));
                })?;
            }
            if atime.is_some() || mtime.is_some() {
                use nix::sys::time::TimeSpec;
                let ts = |t: Option<TimeOrNow>| match t {
                    None => TimeSpec::UTIME_OMIT,
                    Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
                    Some(TimeOrNow::SpecificTime(t)) => {
                        TimeSpec::from_duration(t.duration_since(UNIX_EPOCH).unwrap_or_default())
                    }
                };
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    &ts(atime),
                    &ts(mtime),
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| Errno::from_i32(e as i32))?;
            }
            self.0.attr_of(&path, false)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .0
            .path(ino)
            .and_then(|p| std::fs::read_link(p).map_err(|e| io_errno(&e)))
        {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = self.0.child(parent, name).and_then(|p| {
            std::fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(&p)
                .map_err(|e| io_errno(&e))?;
            self.0.made(parent, &p);
            self.0.attr_of(&p, true)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        match self.0.child(parent, name).and_then(|p| {
            std::fs::remove_file(&p).map_err(|e| io_errno(&e))?;
            self.0.unnamed(&p);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        match self.0.child(parent, name).and_then(|p| {
            std::fs::remove_dir(&p).map_err(|e| io_errno(&e))?;
            self.0.unnamed(&p);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = self.0.child(parent, link_name).and_then(|p| {
            std::os::unix::fs::symlink(target, &p).map_err(|e| io_errno(&e))?;
            self.0.made(parent, &p);
            self.0.attr_of(&p, true)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = (|| {
            let from = self.0.child(parent, name)?;
            let to = self.0.child(newparent, newname)?;
            let replaced = to.symlink_metadata().is_ok();
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &from,
                nix::fcntl::AT_FDCWD,
                &to,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(|e| Errno::from_i32(e as i32))?;
            if flags.contains(fuser::RenameFlags::RENAME_EXCHANGE) {
                let tmp = from.with_extension("cutfs-swap");
                self.0.moved(&from, &tmp);
                self.0.moved(&to, &from);
                self.0.moved(&tmp, &to);
                // Both names existed: treated as durable, with what
                // they hold.
                self.0.unnamed(&from);
                self.0.unnamed(&to);
            } else {
                self.0.moved(&from, &to);
                self.0.renamed(&from, &to, newparent, replaced);
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = (|| {
            let from = self.0.path(ino)?;
            let to = self.0.child(newparent, newname)?;
            std::fs::hard_link(&from, &to).map_err(|e| io_errno(&e))?;
            self.0.made(newparent, &to);
            self.0.attr_of(&to, false)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Reading what the disk kept goes on after a cut (the test reads
        // the daemon's pid); writing does not.
        let writes = flags.0 & (libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC) != 0;
        if writes && self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        match self
            .0
            .path(ino)
            .and_then(|p| self.0.open_lower(ino.0, &p, flags.0, None))
        {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = (|| {
            let p = self.0.child(parent, name)?;
            let existed = p.symlink_metadata().is_ok();
            // Register the inode first, then open the file it names.
            let fh = self.0.open_lower(0, &p, flags, Some(mode & !umask))?;
            if !existed {
                self.0.made(parent, &p);
            }
            let a = self.0.attr_of(&p, !existed)?;
            self.0.state.lock().unwrap().handles.get_mut(&fh).unwrap().0 = a.ino.0;
            Ok::<_, Errno>((a, fh))
        })();
        match r {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let (ino, file) = self.0.handle(fh)?;
            let named = self.0.state.lock().unwrap().paths.get(&ino).cloned();
            let named = named.map(|p| p.to_string_lossy().into_owned());
            let mut held = self.0.held.lock().unwrap();
            while held
                .as_ref()
                .is_some_and(|s| named.as_ref().is_some_and(|n| n.ends_with(s.as_str())))
            {
                held = self.0.released.wait(held).unwrap();
            }
            drop(held);
            let st = self.0.state.lock().unwrap();
            if let Some(d) = st.dirty.get(&ino) {
                let start = (offset as usize).min(d.current.len());
                let end = (start + size as usize).min(d.current.len());
                return Ok(d.current[start..end].to_vec());
            }
            drop(st);
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return Err(io_errno(&e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        })();
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        let r = self.0.handle(fh).and_then(|(ino, file)| {
            self.0.with_dirty(ino, &file, |d| {
                let end = offset as usize + data.len();
                if d.current.len() < end {
                    d.current.resize(end, 0);
                }
                d.current[offset as usize..end].copy_from_slice(data);
                d.pending.push(Pending::Write(offset, data.to_vec()));
            })
        });
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.state.lock().unwrap().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        match self.0.handle(fh).and_then(|(ino, _)| self.0.sync_ino(ino)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Ok(dir) = self.0.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries: Vec<(u64, fuser::FileType, std::ffi::OsString)> = vec![
            (ino.0, fuser::FileType::Directory, ".".into()),
            (ino.0, fuser::FileType::Directory, "..".into()),
        ];
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return reply.error(io_errno(&e)),
        };
        let mut names: Vec<_> = rd.filter_map(Result::ok).map(|e| e.file_name()).collect();
        names.sort();
        for n in names {
            if let Ok(a) = self.0.attr_of(&dir.join(&n), false) {
                entries.push((a.ino.0, a.kind, n));
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.0.is_dead() {
            return reply.error(Errno::EIO);
        }
        match self.0.names_synced(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.0.root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}
