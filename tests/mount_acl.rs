//! POSIX ACLs through a real mount, checked against ext4 (or whatever local
//! file system holds the test's temporary directory) running the very same
//! script: `setfacl`/`getfacl`, the kernel enforcing them for other users,
//! the mode kept in step (mask, chmod, an ACL that says no more than the
//! mode), default ACLs inherited in place of the umask, and the
//! set-group-ID bit dropped when a non-member sets an ACL; `sovseal
//! restore` writes them back.
//!
//! Regression (fails on the main before this change: `setfacl` got
//! EOPNOTSUPP and the umask was applied by the kernel).

mod support;
use std::process::Command;
use support::mount::{Mounted, text};

/// The script, run as root in the directory under test; other users act
/// through `setpriv`. Every line it prints is compared.
const SCRIPT: &str = r#"
set -u
umask 022
as() { u=$1; shift; if setpriv --reuid=$u --regid=$u --clear-groups sh -c "$*" 2>/dev/null; then echo ok; else echo denied; fi; }
show() { printf '%s ' "$(stat -c '%n %a %u %g' "$1")"; getfacl -cpEn "$1" 2>/dev/null | tr '\n' ' '; echo; }
names() { python3 -c "import os, sys; print(sys.argv[1], sorted(n for n in os.listxattr(sys.argv[1]) if n.startswith('system.')))" "$1"; }
mkdir d && chmod 0755 d
echo hi > d/f && chmod 0600 d/f
setfacl -m u:1000:rw d/f; show d/f; names d/f
echo "1000 appends: $(as 1000 'echo x >> d/f')"
echo "1001 appends: $(as 1001 'echo x >> d/f')"
chmod 0640 d/f; show d/f
echo "1000 appends after chmod 640: $(as 1000 'echo x >> d/f')"
echo "1000 reads after chmod 640: $(as 1000 'cat d/f > /dev/null')"
setfacl --set u::rw,g::r,o::- d/f; show d/f; names d/f
setfacl -m g:1234:rx d/f; show d/f
setfacl -x g:1234 d/f; show d/f
setfacl -b d/f; show d/f; names d/f
setfacl -d -m u:1000:rwx,g::rx,o::- d; show d; names d
(umask 077; touch d/new; mkdir d/sub; ln -s new d/link; mkfifo d/pipe)
show d/new; show d/sub; show d/pipe; names d/new; names d/sub
getfacl -cpnd d/sub | tr '\n' ' '; echo
echo "1000 writes inherited: $(as 1000 'echo y > d/new')"
setfacl -k d; show d; names d
(umask 027; touch plain; mkdir plaind); show plain; show plaind
mkdir g && chmod 0777 g
touch g/s && chown 1000:1234 g/s && chmod 2770 g/s
echo "owner outside the group sets an ACL: $(as 1000 'setfacl -m u:1001:r g/s')"; show g/s
touch g/t && chown 1000:1000 g/t && chmod 2770 g/t
echo "owner in the group sets an ACL: $(as 1000 'setfacl -m u:1001:r g/t')"; show g/t
echo "1001 sets an ACL on a file it does not own: $(as 1001 'setfacl -m u:1001:rwx g/t')"
echo "default ACL on a file: $(setfacl -d -m u:1000:r plain 2>/dev/null && echo ok || echo refused)"
"#;

fn run_script(dir: &std::path::Path) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn acls_behave_as_on_a_local_file_system() {
    // The reference: the same script on the local file system.
    let local = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        local.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let want = run_script(local.path());
    // The script itself checks something: ACLs work there.
    for line in [
        "d/f 660 0 0 user::rw- user:1000:rw- group::--- mask::rw- other::---",
        "1000 appends: ok",
        "1001 appends: denied",
        "1000 appends after chmod 640: denied",
        "d/new 660 0 0 user::rw- user:1000:rwx group::r-x mask::rw- other::---",
        "owner outside the group sets an ACL: ok",
        "g/s 770 1000 1234",
    ] {
        assert!(want.contains(line), "reference lacks {line:?}:\n{want}");
    }

    let m = Mounted::new("acl", &["-o", "allow_other"]);
    let got = run_script(&m.mnt);
    assert_eq!(
        got, want,
        "mount (left) against the local file system (right)"
    );

    // Kept in the snapshot and after a remount, and shown in history.
    let acls = "getfacl -cpn d/f d/new d/sub; getfacl -cpnd d/sub";
    let before = m.sh(acls);
    assert!(before.contains("user:1000:rwx"), "{before}");
    m.unmount();
    m.mount();
    assert_eq!(m.sh(acls), before);
    let hist = m.sh("cd .snapshots/latest && getfacl -cpn d/f d/new d/sub; getfacl -cpnd d/sub");
    assert_eq!(hist, before);
    // The kernel enforces them in history too: d/new (mode 0660, root's)
    // is readable by uid 1000 through its ACL entry, not by uid 1001.
    let read_as = |uid| {
        m.as_user(uid, "cat", &[".snapshots/latest/d/new"])
            .status
            .success()
    };
    assert_eq!((read_as(1000), read_as(1001)), (true, false));

    // `sovseal restore` writes the ACLs and other attributes back.
    m.py("import os\nos.setxattr('d/f', 'user.note', b'kept')\nos.setxattr('d/new', 'security.capability', bytes.fromhex('0100000200040000000000000000000000000000'))");
    m.unmount();
    let dest = m.dir.path().join("restored");
    let o = m.sovseal(&["restore", "--agent", &m.agent, "/", dest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("d/new: security.capability not restored"),
        "a file capability is a privilege, reported and not restored: {}",
        text(&o.stderr)
    );
    let restored = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && {acls} && python3 -c \"import os; print(os.getxattr('d/f', 'user.note'), 'security.capability' in os.listxattr('d/new'))\"",
            dest.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&restored.stdout),
        format!("{before}b'kept' False\n"),
        "{}",
        text(&restored.stderr)
    );
}
