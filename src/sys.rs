//! Process hardening shared by both binaries, the mount table, and the
//! groups of a calling process.

/// Disables core dumps and ptrace-style dumping so that keys and plaintext
/// in memory never land in a core file. Best effort: failures are returned
/// for the caller to report.
pub fn harden_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit(RLIMIT_CORE): {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    Ok(())
}

/// The filesystem type of the mount at `path`, if `path` is a mount point
/// (from `/proc/self/mountinfo`, its escapes undone).
pub fn mounted_at(path: &std::path::Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_str()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let mp = f
            .get(4)?
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\");
        let sep = f.iter().position(|x| *x == "-")?;
        (mp == want).then(|| f.get(sep + 1).unwrap_or(&"?").to_string())
    })
}

/// True if process `pid` has `gid` among its supplementary groups (from
/// `/proc/PID/status`). False when that cannot be read: callers use it to
/// decide whether to keep a privilege, so unknown means no.
pub fn in_group(pid: u32, gid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}
