//! Process hardening shared by both binaries, the mount daemon's malloc
//! arenas, the mount table, the groups and `CAP_FSETID` of a calling
//! process, and shrinking emptied tables.

/// Disables core dumps and ptrace-style dumping so that keys and plaintext
/// in memory never land in a core file. Best effort: failures are returned
/// for the caller to report.
pub fn harden_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit(RLIMIT_CORE): {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    Ok(())
}

/// malloc arenas the mount daemon allows (glibc's default is eight per
/// core). Each thread that meets a busy arena gets one of its own, and
/// memory freed into an arena stays with it: with the default, 20,000
/// random 4 KiB overwrites after a 1 GiB write peaked at 316-377 MiB of
/// RSS, with two at 222-257 MiB, near the configured budgets' 224 MiB
/// (docs/PERFORMANCE.md, session 15).
pub const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`], unless
/// `GLIBC_TUNABLES` sets `glibc.malloc.arena_max` (the operator's choice
/// wins). Call first thing in `main`, before any thread exists: glibc
/// fixes the limit when it makes its second arena. Returns whether the
/// cap was set.
pub fn limit_malloc_arenas() -> bool {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max")) {
        return false;
    }
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt takes two integers and changes an allocator
        // parameter under glibc's own lock; it touches no memory of ours.
        // It is the only unsafe call in the crate (it has no safe wrapper
        // in nix or std).
        #[allow(unsafe_code)]
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) } == 1;
        ok
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// The filesystem type of the mount at `path`, if `path` is a mount point.
pub fn mounted_at(path: &std::path::Path) -> Option<String> {
    mount_at(path).map(|m| m.fstype)
}

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device, `major:minor` (for FUSE, the connection's anonymous
    /// device, which also names its entry under `/sys/class/bdi/`).
    pub dev: String,
    /// The filesystem type (`fuse.sovseal`, `ext4`, ...).
    pub fstype: String,
}

/// The mount at `path`, if `path` is a mount point (from
/// `/proc/self/mountinfo`, its escapes undone; the last one listed when
/// several are stacked there, which is the one a lookup reaches).
pub fn mount_at(path: &std::path::Path) -> Option<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let mp = f
            .get(4)?
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\");
        let sep = f.iter().position(|x| *x == "-")?;
        (mp == want).then(|| Mount {
            dev: f.get(2).unwrap_or(&"?").to_string(),
            fstype: f.get(sep + 1).unwrap_or(&"?").to_string(),
        })
    })
}

/// True if process `pid` has `gid` among its supplementary groups (from
/// `/proc/PID/status`). False when that cannot be read: callers use it to
/// decide whether to keep a privilege, so unknown means no.
pub fn in_group(pid: u32, gid: u32) -> bool {
    status_field(pid, "Groups:").is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

/// The value of the line of `/proc/PID/status` that starts with `key`;
/// `None` for pid 0 (the kernel itself) or when it cannot be read.
fn status_field(pid: u32, key: &str) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::to_owned)
}

/// The inode number of the initial user namespace (the kernel's
/// `PROC_USER_INIT_INO`), as `/proc/PID/ns/user` names it.
const INIT_USER_NS: &str = "user:[4026531837]";

/// True if process `pid` holds `CAP_FSETID` as the kernel's
/// `capable(CAP_FSETID)` asks: in its effective set (`/proc/PID/status`)
/// and in the initial user namespace (a namespace's root holds it only
/// there). False when either cannot be read: callers use it to decide
/// whether a set-ID bit survives a change, so unknown means no.
pub fn has_cap_fsetid(pid: u32) -> bool {
    const CAP_FSETID: u32 = 4;
    if pid == 0 {
        return false;
    }
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/user"));
    if !ns.is_ok_and(|l| l.as_os_str() == INIT_USER_NS) {
        return false;
    }
    status_field(pid, "CapEff:")
        .and_then(|c| u64::from_str_radix(c.trim(), 16).ok())
        .is_some_and(|c| c & (1 << CAP_FSETID) != 0)
}

/// Shrinks a hash map that has lost most of its entries, so that a table
/// once filled (the kernel's references to a million inodes) does not keep
/// its peak capacity. Amortized: a map shrinks only when three quarters of
/// its capacity are empty. True when it shrank.
pub fn shrink_sparse<K: Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
) -> bool {
    const KEEP: usize = 1024;
    let cap = map.capacity();
    if cap > KEEP && map.len() < cap / 4 {
        map.shrink_to((map.len() * 2).max(KEEP));
        return map.capacity() < cap;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_map_that_lost_most_entries_shrinks_and_a_full_one_does_not() {
        let mut m: HashMap<u64, u64> = (0..100_000).map(|k| (k, k)).collect();
        let full = m.capacity();
        assert!(!shrink_sparse(&mut m), "a full map keeps its capacity");
        m.retain(|k, _| *k < 30_000);
        assert!(!shrink_sparse(&mut m), "30% used is not sparse");
        m.retain(|k, _| *k < 100);
        assert!(shrink_sparse(&mut m));
        assert!(m.capacity() < full / 50, "{} of {full}", m.capacity());
        assert_eq!(m.len(), 100);
        assert!((0..100).all(|k| m[&k] == k));
    }
}
