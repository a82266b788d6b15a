//! POSIX behaviour through a real mount, asserted from separate processes
//! (python3), with the errno Linux programs expect; then the same state
//! checked again after a remount.

mod support;
use support::mount::Mounted;

const OPS: &str = r#"
import errno, fcntl, mmap, os, ctypes, stat

def err(e, f, *a):
    try:
        f(*a)
    except OSError as x:
        assert x.errno == e, (f, a, x)
        return
    raise AssertionError(("no error", f, a))

# a name found absent (the kernel may cache that) appears once created,
# renamed onto, linked or made a directory, and is absent again once removed
for make, kind in ((lambda n: open(n, "wb").close(), stat.S_ISREG), (os.mkdir, stat.S_ISDIR),
                   (lambda n: (open("src", "wb").close(), os.rename("src", n)), stat.S_ISREG),
                   (lambda n: os.symlink("target", n), stat.S_ISLNK)):
    err(errno.ENOENT, os.lstat, "absent")
    make("absent")
    assert kind(os.lstat("absent").st_mode)
    (os.rmdir if kind is stat.S_ISDIR else os.unlink)("absent")
    err(errno.ENOENT, os.lstat, "absent")
# create / write at offsets / read
with open("f", "wb") as f:
    f.write(b"0123456789")
fd = os.open("f", os.O_RDWR)
os.pwrite(fd, b"AB", 3)
os.pwrite(fd, b"Z", 20)
assert os.pread(fd, 100, 0) == b"012AB56789" + b"\0" * 10 + b"Z"
os.close(fd)
# O_APPEND, O_TRUNC, O_EXCL
fd = os.open("f", os.O_WRONLY | os.O_APPEND)
os.write(fd, b"tail")
os.close(fd)
assert open("f", "rb").read().endswith(b"Ztail")
fd = os.open("f", os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"new")
os.close(fd)
assert open("f", "rb").read() == b"new"
err(errno.EEXIST, os.open, "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
# chmod, utimens, truncate
os.chmod("f", 0o640)
assert stat.S_IMODE(os.stat("f").st_mode) == 0o640
os.utime("f", ns=(1_000_000_000, 2_000_000_123))
assert os.stat("f").st_mtime_ns == 2_000_000_123
os.truncate("f", 2)
assert open("f", "rb").read() == b"ne"
os.truncate("f", 5)
assert open("f", "rb").read() == b"ne\0\0\0"
# sparse file larger than 4 GiB
fd = os.open("big", os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"end", 5 * 2**30)
os.fsync(fd)
assert os.fstat(fd).st_size == 5 * 2**30 + 3
assert os.pread(fd, 8, 5 * 2**30 - 5) == b"\0" * 5 + b"end"
assert os.pread(fd, 4096, 2**32) == b"\0" * 4096
os.close(fd)
# mkdir / rmdir
os.mkdir("d")
open("d/x", "w").close()
err(errno.ENOTEMPTY, os.rmdir, "d")
err(errno.ENOTDIR, os.rmdir, "f")
err(errno.EISDIR, os.unlink, "d")
err(errno.ENOENT, os.unlink, "nope")
os.mkdir("e")
os.rmdir("e")
# rename: over an existing target, NOREPLACE, EXCHANGE
open("r1", "w").write("one")
open("r2", "w").write("two")
os.rename("r1", "r2")
assert open("r2").read() == "one" and not os.path.exists("r1")
libc = ctypes.CDLL(None, use_errno=True)
AT = -100
open("r1", "w").write("ONE")
rc = libc.renameat2(AT, b"r1", AT, b"r2", 1)  # RENAME_NOREPLACE
assert rc == -1 and ctypes.get_errno() == errno.EEXIST
rc = libc.renameat2(AT, b"r1", AT, b"r2", 2)  # RENAME_EXCHANGE
assert rc == 0, ctypes.get_errno()
assert open("r1").read() == "one" and open("r2").read() == "ONE"
err(errno.EINVAL, os.rename, "d", "d/inside")
# unlink and rename of open files: the fd keeps working
fd = os.open("open-unlinked", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"still")
os.unlink("open-unlinked")
os.pwrite(fd, b"STILL", 0)
assert os.pread(fd, 10, 0) == b"STILL"
assert os.fstat(fd).st_nlink == 0
os.close(fd)
fd = os.open("r2", os.O_RDWR)
os.rename("r2", "r3")
os.pwrite(fd, b"moved", 0)
os.close(fd)
assert open("r3").read() == "moved"
# symlinks, hard links
os.symlink("r3", "ln")
assert os.readlink("ln") == "r3" and open("ln").read() == "moved"
os.link("r3", "hard")
assert os.stat("r3").st_nlink == 2 and os.stat("hard").st_ino == os.stat("r3").st_ino
err(errno.EPERM, os.link, "d", "dlink")
# xattrs: user.* works; namespaces no local file system stores are refused
os.setxattr("r3", "user.k", b"v")
assert os.getxattr("r3", "user.k") == b"v"
assert "user.k" in os.listxattr("r3")
err(errno.ENODATA, os.getxattr, "r3", "user.none")
err(errno.EOPNOTSUPP, os.setxattr, "r3", "system.k", b"v")
os.removexattr("r3", "user.k")
err(errno.ENODATA, os.getxattr, "r3", "user.k")
# readdir with stable offsets while the directory changes
os.mkdir("many")
for i in range(300):
    open(f"many/{i:04}", "w").close()
seen = []
with os.scandir("many") as it:
    for n, e in enumerate(it):
        seen.append(e.name)
        if n % 10 == 0:
            open(f"many/new-{n}", "w").close()
            os.unlink(f"many/{n:04}") if os.path.exists(f"many/{n:04}") else None
assert len(seen) == len(set(seen)), "no entry twice"
assert all(f"{i:04}" in seen for i in range(300)), "no original entry missed"
# statfs
s = os.statvfs(".")
assert s.f_bsize > 0 and s.f_blocks > 0 and s.f_namemax == 255
# shared writable mmap
with open("mm", "wb") as f:
    f.write(b"\0" * 8192)
fd = os.open("mm", os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[100:105] = b"mmap!"
m.flush()
m.close()
os.close(fd)
assert open("mm", "rb").read()[100:105] == b"mmap!"
# POSIX and flock locks
fd = os.open("f", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
pid = os.fork()
if pid == 0:
    fd2 = os.open("f", os.O_RDWR)
    try:
        fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os._exit(1)
    except OSError as e:
        os._exit(0 if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else 2)
_, st = os.waitpid(pid, 0)
assert os.WEXITSTATUS(st) == 0, "flock must exclude another open file description"
os.close(fd)
# names: 255 bytes, not UTF-8, 256 bytes; paths of 4096 bytes
open("n" * 255, "w").write("long")
assert open("n" * 255).read() == "long"
err(errno.ENAMETOOLONG, open, "n" * 256, "w")
raw = b"\xff\xfe-not-utf8"
with open(raw, "wb") as f:
    f.write(b"bytes")
assert raw in os.listdir(b".")
comp = "p" * 254
path = "/".join([comp] * 16)
os.makedirs(path)
deep = path + "/" + "x" * 15
assert len(deep.encode()) == 4095  # PATH_MAX, counting the NUL
open(deep, "w").write("deep")
assert open(deep).read() == "deep"
err(errno.ENAMETOOLONG, open, deep + "y", "w")
print("ok")
"#;

const CHECK: &str = r#"
import os, stat
assert open("f", "rb").read() == b"ne\0\0\0"
assert stat.S_IMODE(os.stat("f").st_mode) == 0o640
assert os.stat("big").st_size == 5 * 2**30 + 3
fd = os.open("big", os.O_RDONLY)
assert os.pread(fd, 3, 5 * 2**30) == b"end"
os.close(fd)
assert open("r1").read() == "one" and open("r3").read() == "moved"
assert os.readlink("ln") == "r3"
assert os.stat("hard").st_nlink == 2 and os.stat("hard").st_ino == os.stat("r3").st_ino
assert not os.path.exists("open-unlinked")
assert open("mm", "rb").read()[100:105] == b"mmap!"
assert open("n" * 255).read() == "long"
assert open(b"\xff\xfe-not-utf8", "rb").read() == b"bytes"
assert os.listxattr("r3") == []
assert sorted(os.listdir(".")) == sorted([".snapshots", "f", "big", "d", "r1", "r3", "ln", "hard", "many", "mm", "n" * 255, "\udcff\udcfe-not-utf8", "p" * 254])
print("ok")
"#;

#[test]
fn posix_operations_from_another_process_and_after_remount() {
    let m = Mounted::new("posix", &[]);
    assert_eq!(m.py(OPS).trim(), "ok");
    assert_eq!(m.py(CHECK).trim(), "ok", "before remount");
    m.remount();
    assert_eq!(m.py(CHECK).trim(), "ok", "after remount");
    m.verify();
}

/// A large directory read with readdir while it changes under the reader:
/// between two `getdents` calls, 1,500 names are added (the directory
/// splits into more leaves) and 1,500 removed (leaves merge). POSIX leaves
/// it open whether the reader sees those, but every name present
/// throughout must come back exactly once, as on a local file system.
/// Then `ls`, a lookup of every name, and the same after a remount and in
/// `.snapshots/latest` list exactly what is there.
#[test]
fn readdir_of_a_large_directory_that_changes_under_the_reader() {
    let m = Mounted::new("bigdir", &[]);
    let out = m.py(r#"
import os
os.mkdir("big")
for i in range(1500):
    open(f"big/keep-{i:05d}", "w").close()
    open(f"big/gone-{i:05d}", "w").close()
it = os.scandir("big")
seen = [next(it).name for _ in range(50)]
for i in range(1500):
    open(f"big/new-{i:05d}", "w").close()
    os.unlink(f"big/gone-{i:05d}")
seen += [e.name for e in it]
keep = {f"keep-{i:05d}" for i in range(1500)}
assert len(seen) == len(set(seen)), "a name came back twice"
assert keep <= set(seen), sorted(keep - set(seen))[:5]
assert all(n.startswith(("keep-", "gone-", "new-")) for n in seen)
print("ok")
"#);
    assert_eq!(out.trim(), "ok");
    let check = r#"
import os
for d in ("big", ".snapshots/latest/big"):
    names = set(os.listdir(d))
    want = {f"keep-{i:05d}" for i in range(1500)} | {f"new-{i:05d}" for i in range(1500)}
    assert names == want, (d, len(names))
    assert all(os.path.exists(f"{d}/{n}") for n in want)
    assert not os.path.exists(f"{d}/gone-00007")
print("ok")
"#;
    // `.snapshots/latest` shows the newest snapshot: wait until the
    // quiet-period commit of the last unlink has made it.
    m.sh("sync big");
    assert_eq!(m.py(check).trim(), "ok", "before remount");
    m.remount();
    assert_eq!(m.py(check).trim(), "ok", "after remount");
    m.verify();
}

/// Inode numbers through the kernel (tree format 3 reuses them): a file
/// unlinked while open keeps its number and content while the descriptor
/// is open, and a directory removed while it is a working directory (held
/// by a kernel reference only) keeps its number, whatever is created
/// meanwhile; live files never share a number; and once the kernel has let go of a deleted file (FORGET) its
/// number comes back, so a create/unlink loop of 300 files uses far fewer
/// than 300 numbers. After a remount the files read back under their
/// names and the history verifies.
#[test]
fn inode_numbers_are_reused_only_after_the_kernel_lets_go() {
    let m = Mounted::new("inos", &[]);
    let out = m.py(r#"
import os
fd = os.open("held", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"held content")
held = os.fstat(fd).st_ino
os.unlink("held")
made = {}
for i in range(200):
    with open(f"n{i}", "w") as f:
        f.write(str(i))
    made[f"n{i}"] = os.stat(f"n{i}").st_ino
assert held not in made.values(), "the number of an open file was reused"
assert len(set(made.values())) == 200, "two live files share a number"
assert os.pread(fd, 100, 0) == b"held content"
assert os.fstat(fd).st_ino == held
os.close(fd)
# A directory removed while it is this process's working directory is
# held by a kernel reference alone (no open handle): its number stays its.
os.mkdir("cwd")
cwd = os.stat("cwd").st_ino
os.chdir("cwd")
os.rmdir("../cwd")
made_in_between = set()
for i in range(50):
    os.mkdir(f"../d{i}")
    made_in_between.add(os.stat(f"../d{i}").st_ino)
assert cwd not in made_in_between, "the number of a working directory was reused"
assert os.stat(".").st_ino == cwd and os.stat(".").st_nlink == 0
os.chdir("..")
for i in range(50):
    os.rmdir(f"d{i}")
for i in range(100, 200):
    os.unlink(f"n{i}")
seen = set()
for i in range(300):
    with open("churn", "w") as f:
        f.write(str(i))
    seen.add(os.stat("churn").st_ino)
    os.unlink("churn")
assert len(seen) < 150, f"{len(seen)} numbers for 300 files one after another"
live = {os.stat(f"n{i}").st_ino for i in range(100)}
assert not (live & seen), "a live file's number was handed out"
print(len(seen))
"#);
    eprintln!("numbers used by 300 create/unlink rounds: {}", out.trim());
    m.remount();
    let check = m.py(r#"
import os
for i in range(100):
    assert open(f"n{i}").read() == str(i)
assert not os.path.exists("held") and not os.path.exists("churn")
assert sorted(os.listdir(".")) == sorted([".snapshots"] + [f"n{i}" for i in range(100)])
print("ok")
"#);
    assert_eq!(check.trim(), "ok");
    m.verify();
}
