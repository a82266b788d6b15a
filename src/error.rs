//! The one error type of the crate.
//!
//! Every failure that a user can meet has a variant here with a message that
//! says what happened and, where there is one, what to do. Integrity failures
//! (`Tag`, `VsrHashMismatch`, `ChainBroken`, `Rollback`) are distinct variants
//! so that callers and tests can tell the kinds of damage apart; they are
//! never turned into "not found" or partial data.

use std::io;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An AEAD tag did not verify: the bytes were altered, moved from another
    /// position or agent, or sealed under another key.
    #[error(
        "authentication failed for {what}: the sealed bytes were altered, moved, or sealed with another key"
    )]
    Tag {
        /// Which blob failed (kind and id or sequence).
        what: String,
    },
    /// The decrypted payload does not hash to the envelope's `client_payload_hash`.
    #[error("vsr_hash_mismatch: snapshot {seq}: payload hash does not match the envelope")]
    VsrHashMismatch {
        /// Sequence number of the snapshot.
        seq: u64,
    },
    /// The hash chain does not hold (parent link, dense sequence, envelope hash).
    #[error("broken chain at snapshot {seq}: {detail}")]
    ChainBroken {
        /// First sequence number at which the chain fails.
        seq: u64,
        /// What exactly does not hold.
        detail: String,
    },
    /// The head on disk is older than one this machine has already seen.
    #[error(
        "rollback detected: this machine saw snapshot {seen} but the index head is {found}; refusing to open (restore the newer data dir or from the remote)"
    )]
    Rollback {
        /// Highest sequence recorded as seen.
        seen: u64,
        /// Head sequence found in the index.
        found: u64,
    },
    /// A referenced object is missing from the store.
    #[error("missing object {id} ({kind}) referenced by snapshot {seq}")]
    MissingObject {
        /// Hex object id.
        id: String,
        /// Object kind name.
        kind: &'static str,
        /// Referencing snapshot (0 when unknown).
        seq: u64,
    },
    /// Bytes that authenticated or came from a trusted place do not parse.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: String,
        /// Why it does not parse.
        detail: String,
    },
    /// A format version this build does not know.
    #[error("unknown format version {0} (this build reads version {1}); upgrade sovseal")]
    UnknownFormatVersion(u32, u32),
    /// A key version this build or this keychain does not have.
    #[error(
        "key version {0} is not in custody (the newest held is {1}); nothing is sealed under an older version: import the key export made after that rotation"
    )]
    UnknownKeyVersion(u32, u32),
    /// The OS keychain cannot be used and no fallback was requested.
    #[error(
        "the OS keychain is unreachable ({detail}); refusing to fall back silently. Start a Secret Service (e.g. gnome-keyring) or set SOVSEAL_KEY_FALLBACK=file to keep the master key in {home}/master.key (mode 0600)"
    )]
    KeychainUnavailable {
        /// What the keychain said.
        detail: String,
        /// The SOVSEAL_HOME in use.
        home: String,
    },
    /// No master key exists yet.
    #[error("no master key found in {custody}; run `sovseal init` first")]
    NoMasterKey {
        /// Where we looked.
        custody: String,
    },
    /// Key custody is unsafe or inconsistent (wrong mode, conflicting copies).
    #[error("key custody: {0}")]
    Custody(String),
    /// Another process holds the agent's write lock.
    #[error(
        "agent {agent:?} is already open for writing by pid {pid} (lock {lock}); stop it first"
    )]
    Locked {
        /// Agent name.
        agent: String,
        /// Holder pid as written in the lock file (0 if unreadable).
        pid: u32,
        /// Lock file path.
        lock: PathBuf,
    },
    /// The agent has no data dir yet.
    #[error("agent {0:?} has no data here; create it by mounting or with `sovseal init --agent`")]
    NoSuchAgent(String),
    /// A sequence number that is not retained.
    #[error("no snapshot {0}")]
    NoSuchSnapshot(u64),
    /// The snapshot was forgotten (retention): listed nowhere, content pruned.
    #[error("snapshot {0} was forgotten (retention); its content is gone or going")]
    Forgotten(u64),
    /// Bad user input (agent name, path, option).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The index holds no snapshots, but something else says the agent had
    /// history: starting it over is refused.
    #[error(
        "agent {agent} has no snapshots in its index, but it had history ({evidence}); refusing to start it over. To get the history back, restore it from the remote (sovseal-mount restores an agent whose data dir is absent; move the data dir aside first). To start over on purpose: sovseal reset --agent {agent} --discard-local-history"
    )]
    HistoryMissing {
        /// Agent name.
        agent: String,
        /// What was found.
        evidence: String,
    },
    /// A path where sovseal would write is a symlink, not a directory, or
    /// a directory another user owns or may write in: refused, never
    /// followed.
    #[error("refusing to use {path}: it {detail}")]
    UnsafePath {
        /// The path refused.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// An operation failed for a reason other than bad input: a final
    /// commit, an unmount, a mount that did not answer.
    #[error("{0}")]
    Failed(String),
    /// The detached mount daemon stopped before the mount was ready; `code`
    /// is the exit code its error maps to, so the parent exits with it.
    #[error("{message}")]
    Daemon {
        /// The daemon's exit code for its error.
        code: i32,
        /// The daemon's message.
        message: String,
    },
    /// A filesystem-level error with its POSIX errno (ENOENT, EEXIST...).
    #[error("{op}: {}", std::io::Error::from_raw_os_error(*errno))]
    Fs {
        /// Operation that failed.
        op: &'static str,
        /// POSIX errno.
        errno: i32,
    },
    /// The remote object store failed (network, credentials, server).
    #[error("remote {op}: {detail}")]
    Remote {
        /// What was being done.
        op: String,
        /// What the store said.
        detail: String,
    },
    /// Another machine is still writing this agent to the remote (its
    /// heartbeat or new snapshots appeared while a takeover watched).
    #[error(
        "agent {agent} is still being written to the remote ({evidence}): takeover refused. Stop the writer, or wait until it has been gone longer than its heartbeat interval, then try again"
    )]
    WriterAlive {
        /// Agent name.
        agent: String,
        /// What showed the writer alive.
        evidence: String,
    },
    /// The remote already holds a different envelope for this sequence
    /// number: another writer forked the chain.
    #[error(
        "fork detected at snapshot {seq}: the remote already holds a different envelope for it (another machine wrote this agent). Replication is stopped; nothing on the remote was overwritten. Decide which history to keep: restore from the remote on this machine, or move the other writer's agent aside"
    )]
    Fork {
        /// Sequence number at which the histories differ.
        seq: u64,
    },
    /// SQLite failed.
    #[error("index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

impl Error {
    /// Shorthand for a filesystem errno.
    pub fn fs(op: &'static str, errno: i32) -> Self {
        Error::Fs { op, errno }
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for corrupt data.
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// The POSIX errno this error stands for, when it is a plain filesystem
    /// error; integrity errors map to `EIO` so that nothing unverified is read.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Fs { errno, .. } => *errno,
            Error::NoSuchSnapshot(_) | Error::Forgotten(_) => libc::ENOENT,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    /// True for errors that mean stored data failed verification.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::Tag { .. }
                | Error::VsrHashMismatch { .. }
                | Error::ChainBroken { .. }
                | Error::Rollback { .. }
                | Error::MissingObject { .. }
                | Error::Corrupt { .. }
                | Error::HistoryMissing { .. }
        )
    }
}
