//! Privileges a write, truncate or chown takes away, when the file system
//! drops them instead of the kernel (`FUSE_HANDLE_KILLPRIV_V2`).
//!
//! Why: without it the kernel asks the file system for
//! `security.capability` (a `GETXATTR` round trip) before every `write(2)`,
//! to learn whether the write must drop a file capability. With it the
//! kernel marks the super block `SB_NOSEC`: once a write has found nothing
//! to drop, the inode's later writes skip the question until a set-ID bit
//! or a `security.*` attribute is set, or the kernel fetches the inode's
//! attributes again (at most once a second while it is in use). 200 writes
//! to one file made 200 `GETXATTR`s, now none (docs/PERFORMANCE.md,
//! session 39).
//!
//! The price is that the file system must then apply Linux's rules itself
//! (`setattr_should_drop_suidgid`, `chown_common` in the kernel):
//!
//! | change | set-user-ID | set-group-ID | file capability |
//! |---|---|---|---|
//! | write, `fallocate` | dropped unless the caller has `CAP_FSETID` | dropped unless the caller has `CAP_FSETID`, when group-executable or the caller is not in the file's group | dropped |
//! | truncate (`truncate`, `O_TRUNC`) | as a write | as a write | dropped |
//! | chown or chgrp (not of a directory) | dropped, even by root | dropped when group-executable, or the caller is neither in the file's group nor has `CAP_FSETID` | dropped |
//!
//! Who has `CAP_FSETID`: the kernel says so per write
//! (`FUSE_WRITE_KILL_SUIDGID`). For the other changes it says so in flags
//! the FUSE library does not pass on (`FATTR_KILL_SUIDGID`), so a caller
//! is taken to hold it only when it acts as root and `/proc` shows the
//! capability in the initial user namespace ([`crate::sys::has_cap_fsetid`];
//! asked only when the file has a set-ID bit). Anything unknown counts as
//! not held: the rules may drop more than Linux would, never less.
//!
//! Two more duties come with it. The kernel takes `exec`'s set-ID bits from
//! its cached copy of the mode, which a write does not refresh, so the
//! attributes of a live file with a set-ID bit are never cached
//! (`mount::fuse`'s `ttl`). And a `chown(f, -1, -1)` reaches the file
//! system as no change at all, so it keeps a set-user-ID bit that ext4
//! would drop (nothing changes hands, so nothing is gained by it).

use crate::engine::{Privileges, SETGID, SETUID};

/// A change that may drop privileges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A write; `kill` is the kernel's word that the caller lacks
    /// `CAP_FSETID` (`FUSE_WRITE_KILL_SUIDGID`).
    Write {
        /// The caller lacks `CAP_FSETID`.
        kill: bool,
    },
    /// A truncate, or a write whose caller the kernel does not describe
    /// (`fallocate`).
    Truncate,
    /// A change of owner or group.
    Chown,
}

/// The set-ID bits `change` by `who` takes from a file with `p`.
/// `in_group` and `capable` are asked only when the answer depends on them.
pub fn setid_dropped(
    p: &Privileges,
    change: Change,
    in_group: impl FnOnce() -> bool,
    capable: impl FnOnce() -> bool,
) -> u32 {
    let setid = p.perm & (SETUID | SETGID);
    if setid == 0 {
        return 0;
    }
    let group_exec = p.perm & 0o010 != 0;
    match change {
        Change::Write { kill: false } => 0,
        Change::Write { kill: true } => setid & (SETUID | sgid_if(group_exec || !in_group())),
        Change::Truncate => {
            if capable() {
                0
            } else {
                setid & (SETUID | sgid_if(group_exec || !in_group()))
            }
        }
        Change::Chown => setid & (SETUID | sgid_if(group_exec || !(in_group() || capable()))),
    }
}

fn sgid_if(yes: bool) -> u32 {
    if yes { SETGID } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(perm: u32) -> Privileges {
        Privileges {
            perm,
            gid: 100,
            capability: false,
        }
    }

    /// The table in the module doc, row by row.
    #[test]
    fn linux_rules() {
        let (yes, no) = (|| true, || false);
        // Writes: the kernel's flag decides; sgid needs group-exec or an
        // outsider.
        assert_eq!(
            setid_dropped(&p(0o6755), Change::Write { kill: false }, no, no),
            0
        );
        assert_eq!(
            setid_dropped(&p(0o6755), Change::Write { kill: true }, yes, no),
            0o6000
        );
        assert_eq!(
            setid_dropped(&p(0o6745), Change::Write { kill: true }, yes, no),
            0o4000
        );
        assert_eq!(
            setid_dropped(&p(0o2745), Change::Write { kill: true }, no, no),
            0o2000
        );
        assert_eq!(
            setid_dropped(&p(0o0755), Change::Write { kill: true }, no, no),
            0
        );
        // Truncates: as a write, with the capability read instead.
        assert_eq!(setid_dropped(&p(0o6755), Change::Truncate, yes, yes), 0);
        assert_eq!(setid_dropped(&p(0o6755), Change::Truncate, yes, no), 0o6000);
        assert_eq!(setid_dropped(&p(0o6745), Change::Truncate, yes, no), 0o4000);
        // Chown: suid always (root too); sgid when group-exec, or by an
        // outsider without the capability.
        assert_eq!(setid_dropped(&p(0o6755), Change::Chown, yes, yes), 0o6000);
        assert_eq!(setid_dropped(&p(0o6745), Change::Chown, yes, no), 0o4000);
        assert_eq!(setid_dropped(&p(0o6745), Change::Chown, no, yes), 0o4000);
        assert_eq!(setid_dropped(&p(0o6745), Change::Chown, no, no), 0o6000);
    }
}
