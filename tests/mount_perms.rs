//! Permissions as other users see them through `-o allow_other`: set-group-ID
//! directories hand down their group (and the bit, to subdirectories),
//! sticky directories protect other users' names, and ownership changes
//! by non-owners are refused, as on ext4.
//!
//! Regression (the set-group-ID inheritance fails on the main before this
//! change: new files took the creator's group).

mod support;
use support::mount::Mounted;

const TRY: &str = "import errno, os\ndef t(f):\n    try:\n        f()\n        return 'ok'\n    except OSError as e:\n        return errno.errorcode[e.errno]\n";

#[test]
fn setgid_and_sticky_directories_behave_as_on_ext4() {
    let m = Mounted::new("perms", &["-o", "allow_other"]);
    m.sh("mkdir shared tmp other && chgrp 1234 shared && chmod 2777 shared && chmod 1777 tmp && chmod 0777 other");
    // uid 1000 makes things in each.
    let a = m.py_as(
        1000,
        &format!(
            "{TRY}open('shared/f', 'w').close()\nos.mkdir('shared/sub')\nopen('tmp/mine', 'w').close()\nopen('tmp/stay', 'w').close()\nprint(t(lambda: os.rename('tmp/mine', 'other/mine')), t(lambda: os.rename('other/mine', 'tmp/back')))"
        ),
    );
    assert_eq!(
        a.trim(),
        "ok ok",
        "renames of one's own file out of and into a sticky directory"
    );
    // What was made in the set-group-ID directory has its group; the
    // subdirectory inherits the bit too.
    let st = m.py("import os\nfor p in ('shared/f', 'shared/sub'):\n    s = os.stat(p)\n    print(p, s.st_uid, s.st_gid, oct(s.st_mode & 0o7777))");
    assert_eq!(
        st,
        "shared/f 1000 1234 0o644\nshared/sub 1000 1234 0o2755\n"
    );
    // uid 1001 may not rename, remove or take over uid 1000's names in the
    // sticky directory, nor give its own file away.
    let b = m.py_as(
        1001,
        &format!(
            "{TRY}open('tmp/theirs', 'w').close()\nprint(t(lambda: os.rename('tmp/stay', 'tmp/gone')), t(lambda: os.unlink('tmp/stay')), t(lambda: os.chown('tmp/stay', 1001, 1001)), t(lambda: os.chown('tmp/theirs', 1000, -1)), t(lambda: os.rename('tmp/theirs', 'other/theirs')))"
        ),
    );
    assert_eq!(b.trim(), "EPERM EPERM EPERM EPERM ok");
    // Kept after a remount.
    m.unmount();
    m.mount();
    assert_eq!(
        m.py("import os\ns = os.stat('shared/sub')\nprint(s.st_gid, oct(s.st_mode & 0o7777), sorted(os.listdir('tmp')), sorted(os.listdir('other')))"),
        "1234 0o2755 ['back', 'stay'] ['theirs']\n"
    );
}
