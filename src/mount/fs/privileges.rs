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
//! to an open file made 200 `GETXATTR`s, now at most one, after a refresh
//! of its attributes (docs/PERFORMANCE.md, session 39).
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
//! (`FUSE_WRITE_KILL_SUIDGID`), and for a truncate in a flag the FUSE
//! library does not pass on (`FATTR_KILL_SUIDGID`); for `fallocate` and
//! chown it says nothing. So outside a write a caller is taken to hold it
//! only when it acts as root and `/proc` shows the capability in the
//! initial user namespace ([`crate::sys::has_cap_fsetid`]; asked only when
//! the file has a set-ID bit). Anything unknown counts as not held: the
//! rules may drop more than Linux would, never less.
//!
//! Only on a mount that runs no set-ID programs (`nosuid`, the default).
//! `exec` takes set-ID bits from the kernel's copy of the mode, which a
//! write does not refresh; the kernel's own drop changes that copy before
//! the write lands, so on a `suid` mount the kernel keeps the job (and asks
//! before every write). The attributes of a live set-ID file are never
//! cached either (`mount::fuse`'s `ttl`), for a mount remounted `suid`.
//! And a `chown(f, -1, -1)` reaches the file system as no change at all,
//! so it keeps set-ID bits that ext4 would drop (nothing changes hands).

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
    /// A change of owner or group; `gid` the new group, if it changes.
    Chown {
        /// The new group.
        gid: Option<u32>,
    },
}

/// The set-ID bits `change` by a caller takes from a file with `p`.
/// `in_group(gid)` says whether the caller is in group `gid`, `capable`
/// whether it holds `CAP_FSETID`; each is asked only when the answer
/// depends on it.
pub fn setid_dropped(
    p: &Privileges,
    change: Change,
    in_group: impl Fn(u32) -> bool,
    capable: impl Fn() -> bool,
) -> u32 {
    let setid = p.perm & (SETUID | SETGID);
    if setid == 0 {
        return 0;
    }
    let group_exec = p.perm & 0o010 != 0;
    match change {
        Change::Write { kill: false } => 0,
        Change::Write { kill: true } => setid & (SETUID | sgid_if(group_exec || !in_group(p.gid))),
        Change::Truncate => {
            if capable() {
                0
            } else {
                setid & (SETUID | sgid_if(group_exec || !in_group(p.gid)))
            }
        }
        Change::Chown { gid } => {
            let mut bits =
                setid & (SETUID | sgid_if(group_exec || !(in_group(p.gid) || capable())));
            // Linux writes the mode again when it drops a bit, and then
            // keeps set-group-ID only for a caller in the new group or
            // holding CAP_FSETID (`setattr_copy`).
            let new_gid = gid.unwrap_or(p.gid);
            if bits != 0 && setid & !bits & SETGID != 0 && !(in_group(new_gid) || capable()) {
                bits |= SETGID;
            }
            bits
        }
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
        let w = |kill| Change::Write { kill };
        let chown = |gid| Change::Chown { gid };
        // A caller in group 100 only, and one in no group.
        let member = |g: u32| g == 100;
        let outsider = |_: u32| false;
        let (cap, nocap) = (|| true, || false);
        let dropped = |perm, c, in_group: &dyn Fn(u32) -> bool, capable: &dyn Fn() -> bool| {
            setid_dropped(&p(perm), c, in_group, capable)
        };
        // Writes: the kernel's flag decides; set-group-ID goes when
        // group-executable or written by an outsider.
        assert_eq!(dropped(0o6755, w(false), &outsider, &nocap), 0);
        assert_eq!(dropped(0o6755, w(true), &member, &nocap), 0o6000);
        assert_eq!(dropped(0o6745, w(true), &member, &nocap), 0o4000);
        assert_eq!(dropped(0o2745, w(true), &outsider, &nocap), 0o2000);
        assert_eq!(dropped(0o0755, w(true), &outsider, &nocap), 0);
        // Truncates: as a write, with the capability asked instead.
        assert_eq!(dropped(0o6755, Change::Truncate, &member, &cap), 0);
        assert_eq!(dropped(0o6755, Change::Truncate, &member, &nocap), 0o6000);
        assert_eq!(dropped(0o6745, Change::Truncate, &member, &nocap), 0o4000);
        // Chown: set-user-ID always (root too); set-group-ID when
        // group-executable, or by an outsider without the capability.
        assert_eq!(dropped(0o6755, chown(None), &member, &cap), 0o6000);
        assert_eq!(dropped(0o6745, chown(None), &member, &nocap), 0o4000);
        assert_eq!(dropped(0o6745, chown(None), &outsider, &cap), 0o4000);
        assert_eq!(dropped(0o6745, chown(None), &outsider, &nocap), 0o6000);
        // ... and when a bit goes, set-group-ID is kept only for a caller
        // in the new group or with the capability.
        assert_eq!(dropped(0o6745, chown(Some(200)), &member, &nocap), 0o6000);
        assert_eq!(dropped(0o6745, chown(Some(200)), &member, &cap), 0o4000);
        assert_eq!(dropped(0o2745, chown(Some(200)), &member, &nocap), 0);
    }
}
