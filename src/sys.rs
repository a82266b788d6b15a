//! Process hardening shared by both binaries.

/// Disables core dumps and ptrace-style dumping so that keys and plaintext
/// in memory never land in a core file. Best effort: failures are returned
/// for the caller to report.
pub fn harden_process() -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit(RLIMIT_CORE): {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    Ok(())
}
