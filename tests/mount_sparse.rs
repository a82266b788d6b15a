//! Sparse files and `fallocate` through a real mount: holes count nothing
//! in `st_blocks` (so `du`, `cp --sparse`, `tar -S` and `rsync -S` see them),
//! `lseek(SEEK_DATA/SEEK_HOLE)` is answered at chunk granularity, and
//! `fallocate` supports the modes ext4 users rely on.
//!
//! Regression (each fails on the main before this change: `st_blocks` was
//! the size, `lseek` with DATA/HOLE was not answered, `fallocate` was
//! EOPNOTSUPP).

mod support;
use support::mount::Mounted;

const MIB: u64 = 1 << 20;
/// Bytes per chunk of a new agent: what a stored chunk counts in st_blocks.
const CHUNK: u64 = sovseal::seal::tree::CHUNK_SIZE as u64;

#[test]
fn a_sparse_file_reports_only_its_data() {
    let m = Mounted::new("sparse", &[]);
    // 5 GiB with data in one chunk at 3 GiB and a few bytes at the end.
    let out = m.py(r#"
import os
with open('big', 'wb') as f:
    f.truncate(5 << 30)
    f.seek(3 << 30); f.write(b'x' * 4096)
    f.seek((5 << 30) - 3); f.write(b'end')
st = os.stat('big')
fd = os.open('big', os.O_RDONLY)
print(st.st_size, st.st_blocks * 512,
      os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE),
      os.lseek(fd, (3 << 30) + 10, os.SEEK_HOLE), os.lseek(fd, (3 << 30) + (1 << 20), os.SEEK_DATA))
try:
    os.lseek(fd, 5 << 30, os.SEEK_DATA)
    print('no-enxio')
except OSError as e:
    print(e.errno)
os.close(fd)
"#);
    let v: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(v[0], 5 << 30);
    // Two stored chunks (the one at 3 GiB, the last one), not 5 GiB.
    assert_eq!(v[1], 2 * CHUNK, "st_blocks counts the stored chunks: {out}");
    assert_eq!(v[2], 3 << 30, "SEEK_DATA from 0: {out}");
    assert_eq!(v[3], 0, "SEEK_HOLE from 0 (a hole there): {out}");
    assert_eq!(v[4], (3 << 30) + CHUNK, "SEEK_HOLE inside data: {out}");
    assert_eq!(
        v[5],
        (5 << 30) - CHUNK,
        "SEEK_DATA to the last chunk: {out}"
    );
    assert_eq!(v[6], libc::ENXIO as u64, "SEEK_DATA at the end: {out}");

    // The tools that look at st_blocks and SEEK_DATA keep it sparse.
    let du = m.sh("du -k big | cut -f1");
    assert!(
        du.trim().parse::<u64>().unwrap() <= 2 * CHUNK / 1024,
        "du: {du}"
    );
    m.sh("cp --sparse=always big copy && tar -S -cf big.tar big");
    let du = m.sh("du -k copy | cut -f1");
    assert!(
        du.trim().parse::<u64>().unwrap() <= 2 * 1024,
        "cp --sparse: {du}"
    );
    let tar = std::fs::metadata(m.path("big.tar")).unwrap().len();
    assert!(tar < 4 * MIB, "tar -S wrote {tar} bytes");
    assert_eq!(
        m.sh("cmp big copy && echo same"),
        "same\n",
        "the copy reads back equal"
    );
    // rsync -S reads the zeros and writes holes (a smaller file: it reads
    // every byte), into the mount and out of it.
    m.py("with open('mid', 'wb') as f:\n    f.truncate(64 << 20)\n    f.seek(32 << 20); f.write(b'y' * 4096)");
    let out = tempfile::tempdir().unwrap();
    m.sh(&format!(
        "rsync -S mid rsynced && rsync -S mid {0}/mid && cmp mid rsynced && cmp mid {0}/mid",
        out.path().display()
    ));
    let du = m.sh(&format!(
        "du -k rsynced {}/mid | cut -f1",
        out.path().display()
    ));
    for kib in du.split_whitespace() {
        assert!(kib.parse::<u64>().unwrap() <= 1024, "rsync -S: {du}");
    }
    // The same in history, after a remount.
    m.unmount();
    m.mount();
    let hist = m.py(
        "import os\nst = os.stat('.snapshots/latest/big')\nfd = os.open('.snapshots/latest/big', os.O_RDONLY)\nprint(st.st_blocks * 512, os.lseek(fd, 0, os.SEEK_DATA))",
    );
    assert_eq!(hist.trim(), format!("{} {}", 2 * CHUNK, 3u64 << 30));
}

#[test]
fn fallocate_modes_behave_as_on_ext4() {
    let m = Mounted::new("falloc", &[]);
    let out = m.py(r#"
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
KEEP, PUNCH, COLLAPSE, ZERO, INSERT = 1, 2, 8, 16, 32
def fa(fd, mode, off, n):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(n)) == -1:
        e = ctypes.get_errno()
        # ENOTSUP and EOPNOTSUPP are one number on Linux.
        return 'EOPNOTSUPP' if e == errno.EOPNOTSUPP else errno.errorcode[e]
    return 'ok'
M = 1 << 20
fd = os.open('f', os.O_CREAT | os.O_RDWR)
res = {}
res['mode0'] = fa(fd, 0, 0, 3 * M)
res['size0'] = os.fstat(fd).st_size
res['zeros'] = os.pread(fd, 3 * M, 0) == bytes(3 * M)
os.pwrite(fd, b'a' * (3 * M), 0)
res['keep'] = fa(fd, KEEP, 0, 8 * M)
res['size_keep'] = os.fstat(fd).st_size
res['punch'] = fa(fd, PUNCH | KEEP, M // 2, 2 * M)
data = os.pread(fd, 3 * M, 0)
res['punched'] = data == b'a' * (M // 2) + bytes(2 * M) + b'a' * (M // 2)
res['size_punch'] = os.fstat(fd).st_size
res['zero'] = fa(fd, ZERO, 0, 4 * M)
res['size_zero'] = os.fstat(fd).st_size
res['zeroed'] = os.pread(fd, 4 * M, 0) == bytes(4 * M)
res['punch_nokeep'] = fa(fd, PUNCH, 0, M)
res['collapse'] = fa(fd, COLLAPSE, 0, M)
res['insert'] = fa(fd, INSERT, 0, M)
res['posix'] = os.posix_fallocate(fd, 0, 6 * M) or 'ok'
res['size_posix'] = os.fstat(fd).st_size
os.pwrite(fd, b'tail', 6 * M - 4)
os.close(fd)
print(json.dumps(res))
"#);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let want = serde_json::json!({
        "mode0": "ok", "size0": 3 * MIB, "zeros": true,
        "keep": "ok", "size_keep": 3 * MIB,
        "punch": "ok", "punched": true, "size_punch": 3 * MIB,
        "zero": "ok", "size_zero": 4 * MIB, "zeroed": true,
        "punch_nokeep": "EOPNOTSUPP", "collapse": "EOPNOTSUPP", "insert": "EOPNOTSUPP",
        "posix": "ok", "size_posix": 6 * MIB,
    });
    assert_eq!(got, want);
    // What fallocate left is what the next snapshot holds: zeros, then the
    // tail, and no stored chunk for the zeroed range.
    m.unmount();
    m.mount();
    let back = m.py(
        "import os\nd = open('f', 'rb').read()\nprint(len(d), d[:(6 << 20) - 4] == bytes((6 << 20) - 4), d[-4:], os.stat('f').st_blocks * 512)",
    );
    assert_eq!(back.trim(), format!("{} True b'tail' {}", 6 * MIB, CHUNK));
}

/// A program writing at a far offset (past `MAX_FILE_SIZE`, 1 TiB) gets
/// `EFBIG`, as past ext4's largest file, and so do an fallocate and a
/// truncate past it (the file unchanged);
/// the daemon serves on (before the limit, one such write of a byte took
/// memory in proportion to the offset: the OOM killer at 64 TiB), and
/// what it serves survives a remount.
#[test]
fn a_write_past_the_size_limit_fails_and_the_daemon_serves_on() {
    let m = Mounted::new("far", &[]);
    let out = m.py(r#"
import errno, os
def attempt(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
def far_write():
    fd = os.open('far', os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b'x', 1 << 50)
    finally:
        os.close(fd)
def far_fallocate():
    fd = os.open('far', os.O_WRONLY)
    try:
        os.posix_fallocate(fd, (1 << 40) - 10, 20)
    finally:
        os.close(fd)
print(attempt(far_write), attempt(far_fallocate), os.stat('far').st_size,
      attempt(lambda: os.truncate('far', (1 << 40) + 1)),
      attempt(lambda: os.truncate('far', 1 << 40)))
with open('after', 'w') as f:
    f.write('still here')
print(open('after').read(), os.stat('far').st_size)
"#);
    assert_eq!(
        out.trim(),
        "EFBIG EFBIG 0 EFBIG ok\nstill here 1099511627776"
    );
    m.unmount();
    m.mount();
    assert_eq!(std::fs::read(m.path("after")).unwrap(), b"still here");
    assert_eq!(std::fs::metadata(m.path("far")).unwrap().len(), 1 << 40);
}
