//! Stable process exit codes of the `sovseal` and `sovseal-mount` binaries.
//!
//! Scripts and units depend on these numbers; never renumber, only add.

use crate::Error;

/// Success.
pub const OK: i32 = 0;
/// Any error not listed below.
pub const FAILURE: i32 = 1;
/// Bad command line or bad input (clap uses 2 as well).
pub const USAGE: i32 = 2;
/// Verification failed: tag, hash, chain, rollback or missing object; or a
/// refusal to write through a symlink or into a directory others control.
pub const INTEGRITY: i32 = 3;
/// Key custody failed: no key, keychain unreachable, unsafe key file.
pub const KEYS: i32 = 4;
/// The agent is locked by another process.
pub const LOCKED: i32 = 5;

/// The start of both binaries: hardens the process (no core dumps), then
/// parses the command line. `Err` carries the exit code after clap printed
/// help, the version, or a usage error.
pub fn start<P: clap::Parser>(prog: &str) -> Result<P, i32> {
    if let Err(e) = crate::sys::harden_process() {
        eprintln!("{prog}: warning: {e}");
    }
    P::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { USAGE } else { OK }
    })
}

/// The exit code for an error.
pub fn code_for(err: &Error) -> i32 {
    match err {
        e if e.is_integrity() => INTEGRITY,
        Error::UnsafePath { .. } => INTEGRITY,
        Error::KeychainUnavailable { .. }
        | Error::NoMasterKey { .. }
        | Error::Custody(_)
        | Error::UnknownKeyVersion(..) => KEYS,
        Error::Locked { .. } | Error::WriterAlive { .. } => LOCKED,
        Error::Daemon { code, .. } => *code,
        Error::Invalid(_)
        | Error::NoSuchAgent(_)
        | Error::NoSuchSnapshot(_)
        | Error::Forgotten(_) => USAGE,
        _ => FAILURE,
    }
}
