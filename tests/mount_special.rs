//! FIFOs, Unix sockets and device nodes through a real mount: created,
//! used for real (a writer and a reader through a FIFO, a client talking to
//! a server's socket), changed like any file, kept in snapshots, shown in
//! `.snapshots/`, and recreated by `sovseal restore` (FIFOs; device nodes as
//! root; sockets reported and skipped, as tar and restic do).
//!
//! Regression (fails on the main before this change: `mkfifo`, `mknod` and
//! `bind()` got EPERM).

mod support;
use support::mount::{Mounted, ok, text};

#[test]
fn fifos_sockets_and_devices_are_first_class_inodes() {
    let m = Mounted::new("special", &["-o", "allow_other"]);
    let out = m.py(r#"
import os, socket, stat, threading
os.umask(0o022)
# A FIFO, used by a writer process and a reader.
os.mkfifo('fifo', 0o640)
pid = os.fork()
if pid == 0:
    with open('fifo', 'w') as f:
        f.write('through the pipe')
    os._exit(0)
with open('fifo') as f:
    got = f.read()
os.waitpid(pid, 0)
print('fifo', got)
# A Unix socket: a server bound in the mount, a client connecting to it.
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind('sock')
srv.listen(1)
def serve():
    c, _ = srv.accept()
    c.sendall(c.recv(100).upper())
    c.close()
t = threading.Thread(target=serve)
t.start()
cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cli.connect('sock')
cli.sendall(b'hello')
print('sock', cli.recv(100).decode())
t.join()
# A character device (as root) keeps its device number.
os.mknod('null', 0o666 | stat.S_IFCHR, os.makedev(1, 3))
os.mknod('blk', 0o600 | stat.S_IFBLK, os.makedev(7, 0))
for n in ('fifo', 'sock', 'null', 'blk'):
    st = os.lstat(n)
    print(n, stat.filemode(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev), st.st_size)
# Changed like any file: chmod, chown, link, rename, unlink.
os.chmod('fifo', 0o600)
os.chown('fifo', 1000, 1000)
os.link('fifo', 'fifo2')
os.rename('null', 'null2')
os.unlink('blk')
st = os.lstat('fifo2')
print('changed', stat.filemode(st.st_mode), st.st_uid, st.st_nlink)
"#);
    assert_eq!(
        out,
        "fifo through the pipe\nsock HELLO\n\
         fifo prw-r----- 0 0 0\nsock srwxr-xr-x 0 0 0\nnull crw-r--r-- 1 3 0\nblk brw------- 7 0 0\n\
         changed prw------- 1000 2\n"
    );
    // Another user may make a FIFO where it can write, not a device node
    // (the kernel asks for CAP_MKNOD before the daemon sees anything).
    m.sh("mkdir pub && chmod 0777 pub");
    assert_eq!(
        m.py_as(
            1000,
            "import errno, os, stat\nos.mkfifo('pub/f')\ntry:\n    os.mknod('pub/d', 0o600 | stat.S_IFCHR, os.makedev(1, 3))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        ),
        "EPERM\n"
    );

    // Kept in the next snapshot, and shown in history; opening a FIFO
    // there with O_NONBLOCK returns at once (the kernel serves FIFOs; the
    // daemon is never asked to read one).
    m.unmount();
    m.mount();
    let listing = "import os, stat\nfor p in ('fifo', 'fifo2', 'null2', 'sock', '.snapshots/latest/fifo', '.snapshots/latest/null2'):\n    st = os.lstat(p)\n    print(p, stat.filemode(st.st_mode)[0], os.major(st.st_rdev), os.minor(st.st_rdev))\nfd = os.open('.snapshots/latest/fifo', os.O_RDONLY | os.O_NONBLOCK)\nprint('read', os.read(fd, 10))\nos.close(fd)";
    assert_eq!(
        m.py(listing),
        "fifo p 0 0\nfifo2 p 0 0\nnull2 c 1 3\nsock s 0 0\n.snapshots/latest/fifo p 0 0\n.snapshots/latest/null2 c 1 3\nread b''\n"
    );
    assert!(!m.path("blk").exists());

    // Restore: the FIFOs and the device node come back (as root), the
    // socket is reported and skipped.
    m.unmount();
    let dest = m.dir.path().join("restored");
    let o = m.sovseal(&["restore", "--agent", &m.agent, "/", dest.to_str().unwrap()]);
    ok(&o);
    assert!(
        text(&o.stderr).contains("sock") && text(&o.stderr).contains("not restored"),
        "the skipped socket is reported: {}",
        text(&o.stderr)
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let f = std::fs::symlink_metadata(dest.join("fifo")).unwrap();
    assert!(f.file_type().is_fifo());
    assert_eq!(f.permissions().mode() & 0o7777, 0o600);
    let n = std::fs::symlink_metadata(dest.join("null2")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), libc::makedev(1, 3));
    assert!(!dest.join("sock").exists());
}
