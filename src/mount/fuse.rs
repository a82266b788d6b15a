//! The FUSE adapter: `impl fuser::Filesystem`, replies and errnos only.
//!
//! Architecture Invariant: this is the only module that imports `fuser`.
//! Every method calls one [`crate::mount::fs::Fs`] operation and turns its result
//! into a reply; errors become their errno through [`Error::errno`], where
//! integrity failures are `EIO` (and logged: nothing unverified is served).

use crate::Error;
use crate::engine::{RenameFlags, SETGID, SETUID, SetAttr, XattrFlags};
use crate::mount::fs::privileges::Change;
use crate::mount::fs::{Attr, Caller, Fs, Invalidation, PageCache};
use crate::mount::options::{Access, Flag, MountOptions};
use crate::seal::tree::FileType;
use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    SessionACL, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attribute and entry cache lifetime for the live tree (every change goes
/// through this process, which returns fresh attributes on each change).
const TTL_LIVE: Duration = Duration::from_secs(1);
/// Cache lifetime for history, which never changes.
const TTL_HISTORY: Duration = Duration::from_secs(3600);

/// A running FUSE session (the kernel connection and its worker threads).
pub struct Session {
    inner: fuser::BackgroundSession,
    mountpoint: std::path::PathBuf,
}

/// Mounts `fs` at `mountpoint` with `opts`, served by `threads` workers.
pub fn spawn(
    fs: Arc<Fs>,
    mountpoint: &Path,
    opts: &MountOptions,
    threads: usize,
) -> crate::Result<Session> {
    let mut config = fuser::Config::default();
    // The kernel checks permissions against the file modes.
    config.mount_options = vec![MountOption::DefaultPermissions];
    config
        .mount_options
        .extend(opts.flags.iter().map(|f| match f {
            Flag::ReadOnly => MountOption::RO,
            Flag::ReadWrite => MountOption::RW,
            Flag::AutoUnmount => MountOption::AutoUnmount,
            Flag::NoAtime => MountOption::NoAtime,
            Flag::Atime => MountOption::Atime,
            Flag::NoSuid => MountOption::NoSuid,
            Flag::Suid => MountOption::Suid,
            Flag::NoDev => MountOption::NoDev,
            Flag::Dev => MountOption::Dev,
            Flag::NoExec => MountOption::NoExec,
            Flag::Exec => MountOption::Exec,
            Flag::Sync => MountOption::Sync,
            Flag::Async => MountOption::Async,
            Flag::DirSync => MountOption::DirSync,
        }));
    config
        .mount_options
        .push(MountOption::FSName(opts.fsname.clone()));
    config
        .mount_options
        .push(MountOption::Subtype("sovseal".into()));
    config.acl = match opts.access {
        Access::Owner => SessionACL::Owner,
        Access::All => SessionACL::All,
        Access::RootAndOwner => SessionACL::RootAndOwner,
    };
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let inner = fuser::spawn_mount(Adapter::new(fs), mountpoint, &config)
        .map_err(|e| Error::io(mountpoint, e))?;
    Ok(Session {
        inner,
        mountpoint: mountpoint.to_owned(),
    })
}

impl Session {
    /// What tells the kernel to drop cached entries of this mount.
    pub fn invalidator(&self) -> Invalidator {
        Invalidator(self.inner.notifier())
    }

    /// True once the kernel ended the connection (unmounted).
    pub fn is_finished(&self) -> bool {
        self.inner.guard.is_finished()
    }

    /// Joins the session after an unmount. The kernel ends a connection
    /// with ENODEV, or ECONNABORTED when the last file of a lazily detached
    /// mount closes: both are a normal end, not an error.
    pub fn join(self) -> crate::Result<()> {
        match self.inner.join() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::ENODEV)) => {
                tracing::debug!("FUSE session ended: {e}");
                Ok(())
            }
            r => r.map_err(|e| Error::io(&self.mountpoint, e)),
        }
    }
}

/// Sends cache invalidations to the kernel for one mount.
pub struct Invalidator(fuser::Notifier);

impl Invalidator {
    /// Tells the kernel to drop what it cached and no longer holds (a
    /// follower advanced). An inode or name the kernel no longer caches is
    /// not an error.
    pub fn invalidate(&self, what: &[Invalidation]) {
        for w in what {
            let r = match w {
                Invalidation::Inode(ino) => self.0.inval_inode(INodeNo(*ino), 0, 0),
                Invalidation::Entry(parent, name) => self
                    .0
                    .inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
            };
            if let Err(e) = r
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                tracing::debug!("invalidating {w:?}: {e}");
            }
        }
    }
}

/// The adapter; cheap to clone around the shared [`Fs`].
pub struct Adapter {
    fs: Arc<Fs>,
}

impl Adapter {
    /// Wraps the filesystem core.
    pub fn new(fs: Arc<Fs>) -> Self {
        Adapter { fs }
    }
}

fn errno(e: &Error) -> Errno {
    if e.is_integrity() {
        tracing::error!("refusing unverified data: {e}");
    } else if !matches!(e, Error::Fs { .. }) {
        tracing::warn!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.stored.div_ceil(512),
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        // The kernel's device-number encoding fits 32 bits (12 major, 20 minor).
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharDev => fuser::FileType::CharDevice,
        FileType::BlockDev => fuser::FileType::BlockDevice,
    }
}

/// How long the kernel may trust attributes. Never for a live file with a
/// set-ID bit: where the file system drops those bits (`fs::privileges`,
/// on `nosuid` mounts) a write does not refresh the kernel's copy of the
/// mode, and a mount remounted `suid` would let `exec` take the bits from
/// that copy.
fn ttl(a: &Attr) -> Duration {
    if a.immutable {
        TTL_HISTORY
    } else if u32::from(a.perm) & (SETUID | SETGID) != 0 && a.kind != FileType::Dir {
        Duration::ZERO
    } else {
        TTL_LIVE
    }
}

fn time_or_now(t: Option<TimeOrNow>) -> Option<i64> {
    t.map(|t| match t {
        TimeOrNow::Now => crate::time::now_ns(),
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        },
    })
}

fn entry(reply: ReplyEntry, r: crate::Result<Attr>) {
    match r {
        Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn data(reply: ReplyData, r: crate::Result<Vec<u8>>) {
    match r {
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(errno(&e)),
    }
}

fn attr(reply: ReplyAttr, r: crate::Result<Attr>) {
    match r {
        Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn empty(reply: ReplyEmpty, r: crate::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// The caller of `req`, with the umask the kernel left to us.
fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask,
    }
}

fn writes(flags: OpenFlags) -> bool {
    flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // The kernel offers its current read-ahead window (128 KiB) as the
        // most, so this cannot raise it: `readahead.rs` does, once mounted.
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // POSIX ACLs, enforced by the kernel and kept by the file system,
        // which then also applies the umask (a default ACL replaces it).
        let acls = fuser::InitFlags::FUSE_POSIX_ACL | fuser::InitFlags::FUSE_DONT_MASK;
        match config.add_capabilities(acls) {
            Ok(()) => self.fs.enable_acls(),
            Err(_) => tracing::warn!("the kernel offers no POSIX ACL support: ACLs are refused"),
        }
        // Set-ID bits and file capabilities dropped here on a write,
        // truncate or chown, so that the kernel stops asking for
        // `security.capability` before every write (`fs::privileges`);
        // not on a `suid` mount, whose exec reads the kernel's own mode.
        if self.fs.wants_killpriv()
            && config
                .add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok()
        {
            self.fs.enable_killpriv();
            tracing::info!("privileges dropped by sovseal (FUSE_HANDLE_KILLPRIV_V2)");
        }
        if self.fs.wants_writeback() {
            match config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE) {
                Ok(()) => {
                    self.fs.enable_writeback();
                    tracing::info!("writeback cache on: the kernel caches writes");
                }
                Err(_) => tracing::warn!("the kernel offers no writeback cache: writes go through"),
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.shutdown() {
            tracing::error!("final commit failed: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            // A negative entry (node id 0): saves the round trip that every
            // create, and every rename onto a new name, would make first.
            Err(Error::Fs {
                errno: libc::ENOENT,
                ..
            }) if self.fs.caches_absence(parent.0) => {
                let a = FileAttr {
                    ino: INodeNo(0),
                    size: 0,
                    blocks: 0,
                    atime: UNIX_EPOCH,
                    mtime: UNIX_EPOCH,
                    ctime: UNIX_EPOCH,
                    crtime: UNIX_EPOCH,
                    kind: fuser::FileType::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 4096,
                    flags: 0,
                };
                reply.entry(&TTL_LIVE, &a, Generation(0));
            }
            r => entry(reply, r),
        }
    }

    // BATCH_FORGET: fuser's default calls this once per node.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr(reply, self.fs.getattr(ino.0));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            perm: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: time_or_now(atime),
            mtime: time_or_now(mtime),
        };
        attr(reply, self.fs.setattr(ino.0, &a, caller(req, 0)));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        data(reply, self.fs.readlink(ino.0));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let special = match mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFIFO => Some(FileType::Fifo),
            libc::S_IFSOCK => Some(FileType::Socket),
            libc::S_IFCHR => Some(FileType::CharDev),
            libc::S_IFBLK => Some(FileType::BlockDev),
            _ => return reply.error(Errno::EINVAL),
        };
        if let Some(k) = special {
            let r = self.fs.mknod(
                parent.0,
                name.as_bytes(),
                (k, mode & 0o7777, u64::from(rdev)),
                caller(req, umask),
            );
            return entry(reply, r);
        }
        let r = self
            .fs
            .create(parent.0, name.as_bytes(), mode, caller(req, umask))
            .and_then(|(a, fh)| self.fs.release(fh).map(|()| a));
        entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.fs
                .mkdir(parent.0, name.as_bytes(), mode, caller(req, umask)),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.fs.unlink(parent.0, name.as_bytes(), caller(req, 0)),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.fs.rmdir(parent.0, name.as_bytes(), caller(req, 0)),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.fs.symlink(
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
                caller(req, 0),
            ),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(fuser::RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let f = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        empty(
            reply,
            self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                f,
                caller(req, 0),
            ),
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.fs
                .link(ino.0, newparent.0, newname.as_bytes(), caller(req, 0)),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, writes(flags), caller(req, 0)) {
            Ok(o) => {
                let flags = match o.cache {
                    PageCache::Keep => FopenFlags::FOPEN_KEEP_CACHE,
                    PageCache::Bypass => FopenFlags::FOPEN_DIRECT_IO,
                };
                reply.opened(FileHandle(o.fh), flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let direct = flags.0 & libc::O_DIRECT != 0;
        data(reply, self.fs.read(fh.0, offset, size as usize, direct));
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's writeback of cached pages drops nothing: it dropped
        // privileges itself when the program wrote (or wrote through).
        let change =
            (!write_flags.contains(WriteFlags::FUSE_WRITE_CACHE)).then_some(Change::Write {
                kill: write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
            });
        match self.fs.write(fh.0, offset, data, caller(req, 0), change) {
            // Cut short at the largest file size: a program sees the short
            // count, but the kernel's writeback (`-o writeback_cache`) does
            // not look at it, so the bytes past the limit would be lost
            // unreported. An error reaches the program's fsync or close.
            // A write cut short by a failure: the rest once more, whose
            // error (`EFBIG` at the limit) is the one to report.
            Ok(n) if n < data.len() && write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) => {
                let rest = &data[n..];
                match self
                    .fs
                    .write(fh.0, offset + n as u64, rest, caller(req, 0), None)
                {
                    Ok(m) if m == rest.len() => reply.written(data.len() as u32),
                    Ok(_) => reply.error(Errno::EFBIG),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.fs
                .fallocate(fh.0, offset, length, mode, caller(req, 0)),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // SEEK_SET/CUR/END never reach the daemon; only DATA and HOLE do.
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.fs.seek(ino.0, off, data) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.flush(fh.0));
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
        empty(reply, self.fs.release(fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut offset = offset;
        loop {
            let items = match self.fs.readdir(fh.0, offset, 256) {
                Ok(i) => i,
                Err(e) => return reply.error(errno(&e)),
            };
            if items.is_empty() {
                break;
            }
            for (next, d) in items {
                if reply.add(
                    INodeNo(d.ino),
                    next,
                    kind(d.kind),
                    OsStr::from_bytes(&d.name),
                ) {
                    return reply.ok();
                }
                offset = next;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsyncdir());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                crate::engine::NAME_MAX as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let f = XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        };
        let who = caller(req, 0);
        empty(
            reply,
            self.fs.setxattr(ino.0, name.as_bytes(), value, f, who),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.fs.removexattr(ino.0, name.as_bytes(), caller(req, 0)),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name.as_bytes(), mode, caller(req, umask))
        {
            Ok((a, fh)) => reply.created(
                &ttl(&a),
                &file_attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
