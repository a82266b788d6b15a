//! Extended attributes in every namespace Linux local file systems store
//! (`user.*`, `trusted.*`, `security.*`), through a real mount with
//! `allow_other`, as root and as other users: the kernel's rules about who
//! may read and write each namespace hold, the values are sealed into
//! snapshots like everything else, and a write, truncate or chown clears
//! set-id bits and file capabilities as on ext4 (sovseal applies the rules
//! itself, so the kernel stops asking for `security.capability` before
//! every write).
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

/// On a mount that runs no set-ID programs (`nosuid`, the default) the
/// file system, not the kernel, drops set-ID bits and file capabilities
/// (`FUSE_HANDLE_KILLPRIV_V2`, `src/mount/fs/privileges.rs`), by Linux's
/// rules for each change and caller, and in return the kernel stops asking
/// for `security.capability` before every write.
#[test]
fn privileges_drop_as_on_ext4_and_the_kernel_stops_asking_before_each_write() {
    let m = Mounted::new("killpriv2", &["-o", "allow_other"]);
    let log = std::fs::read_to_string(m.home.join("logs").join("killpriv2.log")).unwrap();
    assert!(log.contains("privileges dropped by sovseal"), "{log}");
    let set_cap = |f: &str| {
        m.py(&format!(
            "import os, struct\nos.setxattr('{f}', 'security.capability', struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0))"
        ));
    };
    let state = |f: &str| {
        m.py(&format!(
            "import errno, os\ntry:\n    c = len(os.getxattr('{f}', 'security.capability'))\nexcept OSError as e:\n    c = errno.errorcode[e.errno]\nprint(oct(os.stat('{f}').st_mode & 0o7777), c)"
        ))
        .trim()
        .to_string()
    };
    let make = |f: &str, mode: &str| {
        m.sh(&format!(
            "echo x > {f} && chown 1000:1000 {f} && chmod {mode} {f}"
        ))
    };

    // A write by root (CAP_FSETID) keeps the set-ID bits; the capability
    // goes whoever writes.
    make("root_write", "06777");
    set_cap("root_write");
    m.py("open('root_write', 'a').write('y')");
    assert_eq!(state("root_write"), "0o6777 ENODATA");
    // A truncate by another user drops them; by root it keeps them.
    make("user_trunc", "06777");
    m.py_as(2000, "import os\nos.truncate('user_trunc', 1)");
    assert_eq!(state("user_trunc"), "0o777 ENODATA");
    make("open_trunc", "06777");
    m.py_as(2000, "open('open_trunc', 'w').close()");
    assert_eq!(state("open_trunc"), "0o777 ENODATA");
    make("root_trunc", "06777");
    set_cap("root_trunc");
    m.py("import os\nos.truncate('root_trunc', 1)");
    assert_eq!(state("root_trunc"), "0o6777 ENODATA");
    // Set-group-ID without group execute (a locking marker): kept for a
    // writer in the group, dropped for one outside it.
    make("sgid", "02767");
    m.py_as(1000, "open('sgid', 'a').write('y')");
    assert_eq!(state("sgid"), "0o2767 ENODATA");
    m.py_as(2000, "open('sgid', 'a').write('y')");
    assert_eq!(state("sgid"), "0o767 ENODATA");
    // After writes have taught the kernel that a file holds nothing to drop,
    // a set-ID bit or capability set later is still dropped by the next
    // write.
    make("later", "0666");
    m.py_as(
        2000,
        "for _ in range(3):\n    open('later', 'a').write('y')",
    );
    m.sh("chmod 04777 later");
    m.py_as(2000, "open('later', 'a').write('y')");
    assert_eq!(state("later"), "0o777 ENODATA");
    set_cap("later");
    m.py("open('later', 'a').write('y')");
    assert_eq!(state("later"), "0o777 ENODATA");
    // fallocate is a write the kernel does not describe: as a truncate.
    make("falloc", "06777");
    m.py_as(
        2000,
        "import os\nfd = os.open('falloc', os.O_WRONLY)\nos.posix_fallocate(fd, 0, 8192)",
    );
    assert_eq!(state("falloc"), "0o777 ENODATA");
    // A chgrp by the owner into a group it is in drops a group-executable
    // set-group-ID bit.
    make("chgrp", "02775");
    m.as_user(1000, "/usr/bin/chgrp", &["1000", "chgrp"]);
    assert_eq!(state("chgrp"), "0o775 ENODATA");
    // What was dropped stays dropped in the next snapshot.
    m.unmount();
    m.mount();
    assert_eq!(state("user_trunc"), "0o777 ENODATA");
    assert_eq!(state("root_write"), "0o6777 ENODATA");

    // The kernel's requests while 200 writes go to a file written before:
    // no GETXATTR among them but after a refresh of its attributes
    // (without the capability, one per write).
    m.sh("echo x > many");
    let counts = fuse_requests(&m, || {
        m.py("import os\nfd = os.open('many', os.O_WRONLY)\nfor i in range(200):\n    os.pwrite(fd, b'y' * 4096, i * 4096)\nos.close(fd)");
    });
    let n = |op: u32| counts.get(&op).copied().unwrap_or(0);
    assert!(n(FUSE_WRITE) >= 200, "the count saw the writes: {counts:?}");
    // At most one or two: the open may refresh the file's attributes,
    // after which its next write asks once.
    assert!(n(FUSE_GETXATTR) <= 2, "requests by opcode: {counts:?}");
}

/// On a mount that runs set-ID programs (`-o suid`) the kernel keeps
/// dropping privileges itself: `exec` takes set-user-ID from the kernel's
/// own copy of the mode, which only the kernel's drop changes before the
/// write lands. A set-user-ID program another user writes runs as that
/// user straight after the write, not as its owner.
#[test]
fn on_a_suid_mount_the_kernel_drops_privileges_and_exec_sees_it_at_once() {
    let m = Mounted::new("killpriv_suid", &["-o", "allow_other", "-o", "suid"]);
    m.sh("cp /usr/bin/id idprog && chmod 04777 idprog");
    let run = "import subprocess\nprint(subprocess.run(['./idprog', '-u'], capture_output=True, text=True, check=True).stdout.strip())";
    assert_eq!(
        m.py_as(2000, run).trim(),
        "0",
        "set-user-ID runs as the owner"
    );
    let append_then_run = format!("open('idprog', 'ab').write(b'\\0')\n{run}");
    assert_eq!(m.py_as(2000, &append_then_run).trim(), "2000");
    assert_eq!(
        m.py("import os\nprint(oct(os.stat('idprog').st_mode & 0o7777))")
            .trim(),
        "0o777"
    );
    // The kernel asks before every write here.
    m.sh("echo x > many");
    let counts = fuse_requests(&m, || {
        m.py("import os\nfd = os.open('many', os.O_WRONLY)\nfor i in range(50):\n    os.pwrite(fd, b'y' * 4096, i * 4096)\nos.close(fd)");
    });
    let n = |op: u32| counts.get(&op).copied().unwrap_or(0);
    assert!(n(FUSE_WRITE) >= 50, "the count saw the writes: {counts:?}");
    assert!(n(FUSE_GETXATTR) >= 50, "requests by opcode: {counts:?}");
}

const FUSE_WRITE: u32 = 16;
const FUSE_GETXATTR: u32 = 22;

/// The FUSE requests the daemon reads while `run` runs, by opcode, seen
/// through `strace` of its reads of `/dev/fuse`.
fn fuse_requests(m: &Mounted, run: impl FnOnce()) -> std::collections::BTreeMap<u32, u64> {
    use std::io::BufRead;
    let pid = m.daemon_pid().expect("the daemon runs");
    let out = m.dir.path().join("strace.txt");
    /// Stops strace however the test ends.
    struct Tracer(std::process::Child);
    impl Drop for Tracer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut st = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-y",
            "-xx",
            "-s",
            "8",
            "-e",
            "trace=read",
            "-o",
        ])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace (scripts/test installs it)");
    // strace writes its first line once attached to every thread.
    let t = std::time::Instant::now();
    while std::fs::metadata(&out).map_or(0, |m| m.len()) == 0 {
        if let Some(status) = st.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut st.stderr.take().unwrap(), &mut err).unwrap();
            panic!("strace ended before attaching ({status}): {err}");
        }
        assert!(t.elapsed().as_secs() < 30, "strace did not attach");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut st = Tracer(st);
    run();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(st.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    st.0.wait().unwrap();
    // A read of /dev/fuse is one request; its first 8 bytes are its length
    // and opcode. A thread's read may show as started, then resumed.
    let mut fuse_tids = std::collections::HashSet::new();
    let mut counts = std::collections::BTreeMap::new();
    for line in std::io::BufReader::new(std::fs::File::open(&out).unwrap()).lines() {
        let line = line.unwrap();
        let tid = line.split_whitespace().next().unwrap_or("").to_string();
        // `-xx` writes the path in hex too (strace 5.x and later).
        let on_fuse = line.contains(r"<\x2f\x64\x65\x76\x2f\x66\x75\x73\x65>")
            || line.contains("</dev/fuse>");
        if on_fuse && line.ends_with("<unfinished ...>") {
            fuse_tids.insert(tid);
            continue;
        }
        let resumed = line.contains("<... read resumed>") && fuse_tids.remove(&tid);
        if !(on_fuse || resumed) {
            continue;
        }
        let Some(start) = line.find("\"\\x") else {
            continue;
        };
        let bytes: Vec<u8> = line[start + 1..]
            .split('"')
            .next()
            .unwrap()
            .split("\\x")
            .skip(1)
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        if bytes.len() == 8 {
            let op = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            *counts.entry(op).or_insert(0) += 1;
        }
    }
    counts
}
