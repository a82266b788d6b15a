//! Keeps docs/SEMANTICS.md honest: every row of its checked table is probed
//! on a real mount, and every probe here has a row there.

mod support;
use std::collections::BTreeMap;
use support::mount::Mounted;

const PROBES: &str = r#"
import ctypes, errno, json, os, stat, struct, time
libc = ctypes.CDLL(None, use_errno=True)
open("f", "w").write("x")
os.mkdir("d"); open("d/x", "w").close()
open("a", "w").write("a"); open("b", "w").write("b")
os.setxattr("f", "user.k", b"v")
time.sleep(0.6)  # let the files reach a snapshot for the history probes

def c_call(rc):
    if rc == -1:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

def fallocate(mode):
    def call():
        fd = os.open("f", os.O_RDWR)
        try:
            c_call(libc.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(4096)))
        finally:
            os.close(fd)
    return call

def seek(whence):
    def call():
        open("sk", "w").write("data")
        fd = os.open("sk", os.O_RDONLY)
        try:
            os.lseek(fd, 0, whence)
        finally:
            os.close(fd)
    return call

def acl(*entries):
    # The kernel's xattr encoding: version 2, then (tag, perm, id) entries.
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)

FULL_ACL = acl((1, 6, 0), (2, 6, 1000), (4, 4, 0), (16, 6, 0), (32, 4, 0))

def create_in_removed_cwd():
    os.mkdir("rm-cwd")
    os.chdir("rm-cwd")
    try:
        os.rmdir("../rm-cwd")
        open("x", "w").close()
    finally:
        os.chdir("..")

def far_write(off):
    def call():
        fd = os.open("far", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.pwrite(fd, b"x", off)
        finally:
            os.close(fd)
    return call

def unlink_open():
    fd = os.open("u", os.O_CREAT | os.O_RDWR)
    os.unlink("u")
    os.write(fd, b"abc")
    assert os.pread(fd, 3, 0) == b"abc"
    os.close(fd)

probes = {
    "mkfifo": lambda: os.mkfifo("fifo"),
    "mknod-chr": lambda: os.mknod("dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3)),
    "mknod-reg": lambda: os.mknod("reg", 0o600 | stat.S_IFREG),
    "mknod-sock": lambda: os.mknod("s", 0o600 | stat.S_IFSOCK),
    "xattr-user": lambda: os.setxattr("f", "user.k2", b"v"),
    "xattr-state-set": lambda: os.setxattr("f", "user.sovseal.state", b"x"),
    "note-set": lambda: os.setxattr(".", "user.sovseal.note", b"tool call 1"),
    "note-too-long": lambda: os.setxattr(".", "user.sovseal.note", b"n" * 4097),
    "note-reserved": lambda: os.setxattr(".", "user.sovseal.other", b"x"),
    "xattr-trusted": lambda: os.setxattr("f", "trusted.k", b"v"),
    "xattr-security": lambda: os.setxattr("f", "security.k", b"v"),
    "xattr-system": lambda: os.setxattr("f", "system.k", b"v"),
    "acl-access": lambda: os.setxattr("f", "system.posix_acl_access", FULL_ACL),
    "acl-invalid": lambda: os.setxattr("f", "system.posix_acl_access", acl((4, 4, 0), (32, 4, 0))),
    "acl-default-file": lambda: os.setxattr("f", "system.posix_acl_default", FULL_ACL),
    "create-in-removed-cwd": create_in_removed_cwd,
    "xattr-missing": lambda: os.getxattr("f", "user.none"),
    "xattr-create-existing": lambda: os.setxattr("f", "user.k", b"w", os.XATTR_CREATE),
    "link-dir": lambda: os.link("d", "dl"),
    "name-255": lambda: open("n" * 255, "w").close(),
    "name-256": lambda: open("n" * 256, "w").close(),
    "rmdir-nonempty": lambda: os.rmdir("d"),
    "rmdir-file": lambda: os.rmdir("f"),
    "unlink-dir": lambda: os.unlink("d"),
    "rename-into-self": lambda: os.rename("d", "d/sub"),
    "rename-noreplace": lambda: c_call(libc.renameat2(-100, b"a", -100, b"b", 1)),
    "rename-exchange": lambda: c_call(libc.renameat2(-100, b"a", -100, b"b", 2)),
    "open-excl": lambda: os.open("f", os.O_CREAT | os.O_EXCL | os.O_WRONLY),
    "fallocate": fallocate(0),
    "fallocate-punch": fallocate(3),
    "fallocate-collapse": fallocate(8),
    "seek-data": seek(os.SEEK_DATA),
    "seek-hole": seek(os.SEEK_HOLE),
    "write-history": lambda: os.open(".snapshots/latest/f", os.O_WRONLY),
    "mkdir-snapshots": lambda: os.mkdir(".snapshots"),
    "rmdir-snapshots": lambda: os.rmdir(".snapshots"),
    "rename-snapshots": lambda: os.rename(".snapshots", "x"),
    "unlink-open": unlink_open,
    "write-past-limit": far_write(1 << 40),
    "truncate-to-limit": lambda: os.truncate("far", 1 << 40),
    "truncate-past-limit": lambda: os.truncate("far", (1 << 40) + 1),
}
out = {}
for k, f in probes.items():
    try:
        f()
        out[k] = "ok"
    except OSError as e:
        # ENOTSUP and EOPNOTSUPP are one number on Linux; the doc says EOPNOTSUPP.
        out[k] = "EOPNOTSUPP" if e.errno == errno.EOPNOTSUPP else errno.errorcode[e.errno]
print(json.dumps(out))
"#;

fn documented() -> BTreeMap<String, String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SEMANTICS.md")).unwrap();
    let table = doc
        .split("## Checked table")
        .nth(1)
        .expect("SEMANTICS.md has a checked table");
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| id ") && !l.starts_with("|---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].to_owned(), cells[cells.len() - 1].to_owned())
        })
        .collect()
}

#[test]
fn every_documented_result_is_what_the_mount_does() {
    let want = documented();
    assert!(want.len() >= 20, "table parsed: {want:?}");
    let m = Mounted::new("semantics", &[]);
    let got: BTreeMap<String, String> = serde_json::from_str(m.py(PROBES).trim()).unwrap();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "every probe has a row in docs/SEMANTICS.md and every row a probe"
    );
    for (id, result) in &want {
        assert_eq!(&got[id], result, "docs/SEMANTICS.md row {id}");
    }
}
