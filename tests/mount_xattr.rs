//! Extended attributes in every namespace Linux local file systems store
//! (`user.*`, `trusted.*`, `security.*`), through a real mount with
//! `allow_other`, as root and as other users: the kernel's rules about who
//! may read and write each namespace hold, the values are sealed into
//! snapshots like everything else, and a write or chown clears set-id bits
//! and file capabilities as on ext4.
//!
//! Regression (fails on the main before this change: only `user.*` could be
//! set, everything else was EOPNOTSUPP).

mod support;
use support::mount::Mounted;

const TRY: &str = r#"
import errno, os
def t(f):
    try:
        r = f()
        return 'ok' if r is None else r.decode()
    except OSError as e:
        return 'EOPNOTSUPP' if e.errno == errno.EOPNOTSUPP else errno.errorcode[e.errno]
"#;

#[test]
fn every_stored_namespace_round_trips_under_the_kernels_rules() {
    let m = Mounted::new("xattrs", &["-o", "allow_other"]);
    m.sh("echo x > f && chmod 0666 f");
    let root = m.py(&format!(
        "{TRY}
print(t(lambda: os.setxattr('f', 'trusted.t', b'1')),
      t(lambda: os.setxattr('f', 'security.s', b'2')),
      t(lambda: os.setxattr('f', 'user.u', b'3')),
      t(lambda: os.setxattr('f', 'system.x', b'4')),
      ','.join(sorted(os.listxattr('f'))))"
    ));
    assert_eq!(
        root.trim(),
        "ok ok ok EOPNOTSUPP security.s,trusted.t,user.u"
    );
    // Another user: trusted.* is hidden and refused, security.* refused
    // (no capability), user.* allowed on a file it may write.
    let user = m.py_as(
        1000,
        &format!(
            "{TRY}
print(t(lambda: os.getxattr('f', 'trusted.t')),
      t(lambda: os.setxattr('f', 'trusted.t2', b'x')),
      t(lambda: os.getxattr('f', 'security.s')),
      t(lambda: os.setxattr('f', 'security.s2', b'x')),
      t(lambda: os.setxattr('f', 'user.u2', b'5')))"
        ),
    );
    assert_eq!(user.trim(), "ENODATA EPERM 2 EPERM ok");
    // Sealed into the snapshot: after a remount, live and in history.
    m.unmount();
    m.mount();
    let back = m.py(
        "import os\nfor p in ('f', '.snapshots/latest/f'):\n    print(','.join(k + '=' + os.getxattr(p, k).decode() for k in sorted(os.listxattr(p))))",
    );
    assert_eq!(
        back,
        "security.s=2,trusted.t=1,user.u=3,user.u2=5\n".repeat(2)
    );
}

#[test]
fn a_write_or_chown_clears_setid_bits_and_file_capabilities() {
    let m = Mounted::new("killpriv", &["-o", "allow_other"]);
    // A set-id program with a file capability (CAP_NET_RAW permitted and
    // effective, VFS_CAP_REVISION_2), world-writable so that another user
    // can write it.
    m.sh("echo x > prog && chown 1000:1000 prog && chmod 06777 prog");
    let set_cap = "import os, struct\nos.setxattr('prog', 'security.capability', struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0))";
    m.py(set_cap);
    let state = "import errno, os\ntry:\n    c = len(os.getxattr('prog', 'security.capability'))\nexcept OSError as e:\n    c = errno.errorcode[e.errno]\nprint(oct(os.stat('prog').st_mode & 0o7777), c)";
    assert_eq!(m.py(state).trim(), "0o6777 20");
    // A write by another user (not the owner).
    m.py_as(2000, "open('prog', 'a').write('y')");
    assert_eq!(m.py(state).trim(), "0o777 ENODATA");
    // A chown (even by root) clears them too.
    m.sh("chmod 06755 prog");
    m.py(set_cap);
    m.sh("chown 1001 prog");
    assert_eq!(m.py(state).trim(), "0o755 ENODATA");
    // And what was cleared stays cleared in the next snapshot.
    m.unmount();
    m.mount();
    assert_eq!(m.py(state).trim(), "0o755 ENODATA");
}
