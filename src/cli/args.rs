//! The command line's clap types: what `sovseal` accepts, nothing it does.

use clap::{Args, Parser, Subcommand};

/// sovseal: an encrypted, snapshotting state store for AI agents.
#[derive(Parser, Debug)]
#[command(name = "sovseal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    #[allow(missing_docs)] // a doc here would become clap help text
    pub command: Command,
}

// The commands (no `///`: clap would take it as help text).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the master key (once; never overwrites) and, with --agent, the agent.
    ///
    /// The key goes to the OS keychain, or to $SOVSEAL_HOME/master.key (0600)
    /// with SOVSEAL_KEY_FALLBACK=file. A lost master key loses every snapshot.
    Init(InitArgs),
    /// List an agent's snapshots, oldest first, a page at a time.
    Snapshots(SnapshotsArgs),
    /// Verify the whole chain, every object and every signed checkpoint;
    /// exit 3 naming the first bad snapshot or checkpoint.
    Verify(VerifyArgs),
    /// Sign a checkpoint of the newest replicated snapshot now, store it
    /// locally and on the remote, and run the hook if one is given.
    Checkpoint(CheckpointArgs),
    /// Print a file as of a snapshot (default: head).
    Cat(CatArgs),
    /// Head, replicated and queued snapshots, last error and remote of an agent.
    Status(StatusArgs),
    /// Write a snapshot's tree, or one path of it, into a plain directory.
    ///
    /// From local data when this machine has the agent (that snapshot's
    /// objects are verified first); from the remote, rebuilding and verifying
    /// the whole chain, with --remote or when it has no local data.
    Restore(RestoreArgs),
    /// What changed from snapshot SEQ1 to SEQ2 (default: head): added,
    /// removed and changed paths with sizes.
    Diff(DiffArgs),
    /// Who changed what, newest snapshot first: time, the agent's note, the
    /// processes that wrote, and each changed path (added, removed, what
    /// changed), like `git log --stat`. With PATH, only the snapshots that
    /// changed PATH or something below it. No file content is decrypted.
    Log(LogArgs),
    /// Mount the agent on a private temporary mountpoint, run COMMAND there
    /// (working directory the mount, SOVSEAL_MOUNT set to it), unmount (the
    /// last changes sealed), and exit with COMMAND's status (128 + signal if
    /// a signal ended it). Ctrl-C goes to COMMAND; the unmount follows.
    Exec(ExecArgs),
    /// Print a shell completion script for `sovseal` or `sovseal-mount`
    /// (bash, zsh or fish) to stdout, from the command-line definitions.
    Completions(CompletionsArgs),
    /// Write man pages for both binaries and every `sovseal` subcommand
    /// (sovseal.1, sovseal-log.1, …, sovseal-mount.1) into a directory.
    Man(ManArgs),
    /// Make a new snapshot whose tree equals snapshot SEQ. History is kept:
    /// the snapshots after SEQ stay, and rolling back can itself be undone.
    /// The agent must not be mounted.
    Rollback(RollbackArgs),
    /// Forget snapshots outside a retention policy. They stop being listed
    /// and opened; their envelopes stay, so the chain still verifies; their
    /// content is removed by `prune`. The head is always kept. The agent
    /// must not be mounted.
    Forget(ForgetArgs),
    /// Remove the content no retained snapshot references: rewrite local
    /// packs, delete the remote pack parts of forgotten snapshots. The agent
    /// must not be mounted.
    Prune(PruneArgs),
    /// Erase the content of PATH (a file or directory) from every snapshot,
    /// locally and on the remote, for data that must not be kept. The chain
    /// still verifies; the redaction is recorded (signed, with a keyed hash
    /// of the path). Content other files also use is kept. PATH must no
    /// longer exist in the head; the agent must not be mounted.
    Redact(RedactArgs),
    /// Back up and restore the master key.
    Key {
        #[command(subcommand)]
        #[allow(missing_docs)]
        cmd: KeyCommand,
    },
    /// List a directory as of a snapshot (default: head).
    Ls(LsArgs),
    /// Start an agent over on this machine: its data dir and seen-head
    /// record are moved aside (to $SOVSEAL_HOME/discarded/), never deleted.
    /// The remote keeps its copy; a new history would fork from it.
    Reset(ResetArgs),
    /// Make this machine the agent's writer once the old writer is gone:
    /// restores or catches up its copy from the remote (verified), then
    /// watches the remote for three of the old writer's heartbeat intervals
    /// (at least --quiet-secs) and refuses (exit 5) if the writer is still
    /// alive. Then mount the agent without --follow.
    Takeover(TakeoverArgs),
}

// The key commands (no `///`: clap would take it as help text).
#[allow(missing_docs)]
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write the master key, sealed under a passphrase (Argon2id,
    /// AES-256-GCM), to a new file of mode 0600. Keep it off this machine.
    Export {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Read the passphrase from the first line of this file instead of
        /// asking on the terminal.
        #[arg(long)]
        passphrase_file: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put the master key from an export file into custody (keychain, or
    /// the key file with SOVSEAL_KEY_FALLBACK=file). Never replaces a
    /// different key.
    Import {
        /// The export file.
        file: std::path::PathBuf,
        /// Read the passphrase from the first line of this file.
        #[arg(long)]
        passphrase_file: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the fingerprint of every version of the master key in custody.
    Fingerprint {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a new master key version: data sealed from the next mount or
    /// command on uses it; older snapshots stay readable with the older
    /// versions. Export again afterwards: older exports cannot open the new
    /// data.
    Rotate {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `sovseal init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Also create this agent's data dir and first snapshot.
    #[arg(long)]
    pub agent: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Page size.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Start after this sequence number (the cursor printed by the previous page).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Also check the remote against every checkpoint (its own, this
    /// machine's, --checkpoint files): a remote that dropped or rolled
    /// back snapshots fails; and its chain against this one (every
    /// envelope file, chain segment, part index, forget and redaction
    /// record up to this head; no content): an altered or forked
    /// snapshot fails.
    /// Without a value: the agent's remote.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub remote: Option<String>,
    /// A checkpoint kept elsewhere (e.g. by the checkpoint hook) that the
    /// chain must reach and agree with. Repeatable.
    #[arg(long)]
    pub checkpoint: Vec<std::path::PathBuf>,
    /// Fail if the newest checkpoint is older than this (e.g. 1h, 7d):
    /// checkpoints stopped, or newer ones are being withheld.
    #[arg(long)]
    pub max_age: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal checkpoint`.
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Remote URL (default: the agent's remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Hook command (default: config.json `checkpoint_hook`).
    #[arg(long)]
    pub hook: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal cat`.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Sequence number.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Path inside the agent's tree.
    pub path: String,
}

/// Arguments of `sovseal status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Restore from this remote URL (default for an agent with no local
    /// data: config.json, else $SOVSEAL_HOME/remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Sequence number to write out (default: the newest).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Keep setuid/setgid bits and file capabilities (`security.capability`)
    /// (root only; stripped by default).
    #[arg(long)]
    pub preserve_setuid: bool,
    /// Print JSON (no progress bar; skipped entries listed in it).
    #[arg(long)]
    pub json: bool,
    /// `[PATH] DEST`: PATH inside the agent's tree (default: `/`); DEST a
    /// missing or empty directory (for a directory) or a new path (for a
    /// file or symlink).
    #[arg(value_name = "PATH|DEST", num_args = 1..=2, required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

/// Arguments of `sovseal completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
    /// Complete `sovseal-mount` instead of `sovseal`.
    #[arg(long)]
    pub mount: bool,
}

/// A shell `sovseal completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    /// bash (install into /usr/share/bash-completion/completions/).
    Bash,
    /// zsh (install as `_sovseal` into a directory on $fpath).
    Zsh,
    /// fish (install into ~/.config/fish/completions/).
    Fish,
}

/// Arguments of `sovseal man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Arguments of `sovseal exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Arguments of `sovseal log`.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Only the snapshots that changed this path (from the mount root).
    pub path: Option<String>,
    /// At most this many snapshots.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON (one array).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// The older snapshot.
    pub seq1: u64,
    /// The newer snapshot (default: head).
    pub seq2: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// The snapshot to return to.
    #[arg(long)]
    pub seq: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Keep the newest N snapshots.
    #[arg(long)]
    pub keep_last: Option<u64>,
    /// Keep the newest snapshot of each of the newest N hours.
    #[arg(long)]
    pub keep_hourly: Option<u64>,
    /// Keep the newest snapshot of each of the newest N days.
    #[arg(long)]
    pub keep_daily: Option<u64>,
    /// Keep every snapshot newer than this (e.g. 36h, 7d, 2w).
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Show what would be forgotten; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune right after (see `prune`).
    #[arg(long)]
    pub prune: bool,
    /// Remote to prune (default: the agent's remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Remote (default: the agent's remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal redact`.
#[derive(Args, Debug)]
pub struct RedactArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Show what would be erased; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remote (default: the agent's remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The path, from the agent's root.
    pub path: String,
}

/// Arguments of `sovseal ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Sequence number.
    #[arg(long)]
    pub seq: Option<u64>,
    /// Directory inside the agent's tree.
    #[arg(default_value = "/")]
    pub path: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal takeover`.
#[derive(Args, Debug)]
pub struct TakeoverArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// The remote the agent is written to (default: config.json, else
    /// $SOVSEAL_HOME/remote).
    #[arg(long)]
    pub remote: Option<String>,
    /// Least seconds to watch the remote for a live writer (default 30
    /// when the writer left no heartbeat, else 3 of its intervals).
    #[arg(long, default_value_t = 0)]
    pub quiet_secs: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sovseal reset`.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Required: says that the local history is to be set aside.
    #[arg(long)]
    pub discard_local_history: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
