//! The `sovseal` command line: parsing and output only; the work is done by
//! the library.

use crate::agent::Agent;
use crate::config::{AgentName, Home};
use crate::engine::Engine;
use crate::keys::{MasterKey, custody};
use crate::{Error, Result, exit};
use clap::{Parser, Subcommand};

use std::io::Write;

/// sovseal: an encrypted, snapshotting state store for AI agents.
#[derive(Parser, Debug)]
#[command(name = "sovseal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the master key (once; never overwrites) and, with --agent, the agent.
    ///
    /// The key goes to the OS keychain, or to $SOVSEAL_HOME/master.key (0600)
    /// with SOVSEAL_KEY_FALLBACK=file. A lost master key loses every snapshot.
    Init {
        /// Also create this agent's data dir and first snapshot.
        #[arg(long)]
        agent: Option<String>,
    },
    /// List an agent's snapshots, oldest first, a page at a time.
    Snapshots {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Start after this sequence number (the cursor printed by the previous page).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the whole chain, every object and every signed checkpoint;
    /// exit 3 naming the first bad snapshot or checkpoint.
    Verify {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Also check the remote against every checkpoint (its own, this
        /// machine's, --checkpoint files): a remote that dropped or rolled
        /// back snapshots fails. Without a value: the agent's remote.
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
        /// A checkpoint kept elsewhere (e.g. by the checkpoint hook) that the
        /// chain must reach and agree with. Repeatable.
        #[arg(long)]
        checkpoint: Vec<std::path::PathBuf>,
        /// Fail if the newest checkpoint is older than this (e.g. 1h, 7d):
        /// checkpoints stopped, or newer ones are being withheld.
        #[arg(long)]
        max_age: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of the newest replicated snapshot now, store it
    /// locally and on the remote, and run the hook if one is given.
    Checkpoint {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Remote URL (default: the agent's remote).
        #[arg(long)]
        remote: Option<String>,
        /// Hook command (default: config.json `checkpoint_hook`).
        #[arg(long)]
        hook: Option<String>,
    },
    /// Print a file as of a snapshot (default: head).
    Cat {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Sequence number.
        #[arg(long)]
        seq: Option<u64>,
        /// Path inside the agent's tree.
        path: String,
    },
    /// Head, replicated and queued snapshots, last error and remote of an agent.
    Status {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot's tree, or one path of it, into a plain directory.
    ///
    /// From local data when this machine has the agent (that snapshot's
    /// objects are verified first); from the remote, rebuilding and verifying
    /// the whole chain, with --remote or when it has no local data.
    Restore {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Restore from this remote URL (default for an agent with no local
        /// data: config.json, else $SOVSEAL_HOME/remote).
        #[arg(long)]
        remote: Option<String>,
        /// Sequence number to write out (default: the newest).
        #[arg(long)]
        seq: Option<u64>,
        /// `[PATH] DEST`: PATH inside the agent's tree (default: `/`); DEST a
        /// missing or empty directory (for a directory) or a new path (for a
        /// file or symlink).
        #[arg(value_name = "PATH|DEST", num_args = 1..=2, required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// What changed from snapshot SEQ1 to SEQ2 (default: head): added,
    /// removed and changed paths with sizes.
    Diff {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// The older snapshot.
        seq1: u64,
        /// The newer snapshot (default: head).
        seq2: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new snapshot whose tree equals snapshot SEQ. History is kept:
    /// the snapshots after SEQ stay, and rolling back can itself be undone.
    /// The agent must not be mounted.
    Rollback {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// The snapshot to return to.
        #[arg(long)]
        seq: u64,
    },
    /// Forget snapshots outside a retention policy. They stop being listed
    /// and opened; their envelopes stay, so the chain still verifies; their
    /// content is removed by `prune`. The head is always kept. The agent
    /// must not be mounted.
    Forget {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Keep the newest N snapshots.
        #[arg(long)]
        keep_last: Option<u64>,
        /// Keep the newest snapshot of each of the newest N hours.
        #[arg(long)]
        keep_hourly: Option<u64>,
        /// Keep the newest snapshot of each of the newest N days.
        #[arg(long)]
        keep_daily: Option<u64>,
        /// Keep every snapshot newer than this (e.g. 36h, 7d, 2w).
        #[arg(long)]
        keep_within: Option<String>,
        /// Show what would be forgotten; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune right after (see `prune`).
        #[arg(long)]
        prune: bool,
        /// Remote to prune (default: the agent's remote).
        #[arg(long)]
        remote: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the content no retained snapshot references: rewrite local
    /// packs, delete the remote pack parts of forgotten snapshots. The agent
    /// must not be mounted.
    Prune {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Remote (default: the agent's remote).
        #[arg(long)]
        remote: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Erase the content of PATH (a file or directory) from every snapshot,
    /// locally and on the remote, for data that must not be kept. The chain
    /// still verifies; the redaction is recorded (signed, with a keyed hash
    /// of the path). Content other files also use is kept. PATH must no
    /// longer exist in the head; the agent must not be mounted.
    Redact {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Show what would be erased; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remote (default: the agent's remote).
        #[arg(long)]
        remote: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The path, from the agent's root.
        path: String,
    },
    /// Back up and restore the master key.
    Key {
        #[command(subcommand)]
        cmd: KeyCommand,
    },
    /// List a directory as of a snapshot (default: head).
    Ls {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Sequence number.
        #[arg(long)]
        seq: Option<u64>,
        /// Directory inside the agent's tree.
        #[arg(default_value = "/")]
        path: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
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
    },
    /// Print the fingerprint of every version of the master key in custody.
    Fingerprint,
    /// Add a new master key version: data sealed from the next mount or
    /// command on uses it; older snapshots stay readable with the older
    /// versions. Export again afterwards: older exports cannot open the new
    /// data.
    Rotate,
}

/// The passphrase: the first line of `file`, else asked on the terminal
/// (twice when `confirm`), never echoed.
fn passphrase(file: Option<&std::path::Path>, confirm: bool) -> Result<zeroize::Zeroizing<String>> {
    if let Some(f) = file {
        let all = zeroize::Zeroizing::new(std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?);
        let line = all.lines().next().unwrap_or("");
        return Ok(zeroize::Zeroizing::new(line.to_owned()));
    }
    let first = ask("passphrase: ")?;
    if confirm && *ask("passphrase again: ")? != *first {
        return Err(Error::Invalid("the passphrases differ".into()));
    }
    Ok(first)
}

/// Reads one line from /dev/tty with echo off.
fn ask(prompt: &str) -> Result<zeroize::Zeroizing<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::BufRead;
    let no_tty = |e: std::io::Error| {
        Error::Invalid(format!(
            "no terminal to ask for the passphrase ({e}); use --passphrase-file"
        ))
    };
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let saved = tcgetattr(&tty).map_err(|e| no_tty(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(|e| no_tty(e.into()))?;
    let _ = tty.write_all(prompt.as_bytes());
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = tty.write_all(b"\n");
    read.map_err(no_tty)?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok(trimmed)
}

/// A one-line progress counter on stderr, only when stderr is a terminal
/// (scripts and logs see nothing); the line is ended when dropped.
struct Progress {
    label: &'static str,
    tty: bool,
    shown: bool,
}

impl Progress {
    fn new(label: &'static str) -> Self {
        Progress {
            label,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            shown: false,
        }
    }

    fn tick(&mut self, i: u64, n: u64) {
        if self.tty && (i.is_multiple_of(100) || i == n) {
            eprint!("\r{} {i}/{n}", self.label);
            self.shown = true;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// Prunes locally, then on the agent's remote.
fn prune_agent(
    home: &Home,
    a: &crate::agent::Agent,
    remote: Option<&str>,
) -> Result<crate::retention::PruneReport> {
    let mut r = {
        let mut p = Progress::new("pruning: checking snapshot");
        crate::retention::prune_local(a, &mut |s, h| p.tick(s, h))?
    };
    let url = home.remote_for(a.name(), remote)?;
    let rem = crate::remote::Remote::open(&url)?;
    crate::remote::runtime()?.block_on(crate::retention::prune_remote(a, &rem, &mut r))?;
    Ok(r)
}

fn write_prune(out: &mut impl Write, r: &crate::retention::PruneReport) -> std::io::Result<()> {
    writeln!(
        out,
        "pruned {} objects ({} sealed bytes) from {} packs; remote: {} snapshots' parts deleted ({} parts), {} kept (they hold content still in use)",
        r.objects_removed,
        r.bytes_removed,
        r.packs_rewritten,
        r.remote_snapshots_pruned,
        r.remote_parts_deleted,
        r.remote_snapshots_kept
    )
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli: Cli = match exit::start("sovseal") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("sovseal: error: {e}");
            exit::code_for(&e)
        }
    }
}

fn master(home: &Home) -> Result<MasterKey> {
    custody::load(home, &custody::Custody::from_env()?)
}

fn open_agent(name: &str) -> Result<(Home, Agent)> {
    let home = Home::from_env()?;
    let name = AgentName::new(name)?;
    let m = master(&home)?;
    let a = Agent::open_readonly(&home, &name, &m)?;
    Ok((home, a))
}

/// Formats ms since the epoch as RFC 3339 UTC.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let w = |e: std::io::Error| Error::io("stdout", e);
    match cli.command {
        Command::Init { agent } => {
            let home = Home::from_env()?;
            let c = custody::Custody::from_env()?;
            let (m, created) = custody::init(&home, &c)?;
            let place = match c {
                custody::Custody::Keychain => "the OS keychain".to_string(),
                custody::Custody::File => home.key_file().display().to_string(),
            };
            if created {
                writeln!(out, "created a new master key in {place}").map_err(w)?;
                eprintln!(
                    "WARNING: there is no escrow and no reset. If this master key is lost, every snapshot, local and replicated, is permanently unreadable. Back it up now: sovseal key export --out FILE"
                );
            } else {
                writeln!(out, "master key already present in {place}; left unchanged")
                    .map_err(w)?;
            }
            if let Some(a) = agent {
                let name = AgentName::new(&a)?;
                let e = Engine::open(&home, &name, &m)?;
                writeln!(
                    out,
                    "agent {name} ready at {} (head {})",
                    e.agent().data_dir().display(),
                    e.head().seq()
                )
                .map_err(w)?;
            }
        }
        Command::Snapshots {
            agent,
            limit,
            after,
            json,
        } => {
            if limit == 0 {
                return Err(Error::Invalid("--limit must be at least 1".into()));
            }
            let (_, a) = open_agent(&agent)?;
            let page = a.list(after, limit)?;
            let next = if page.len() as u64 == limit {
                page.last().map(|s| s.seq)
            } else {
                None
            };
            if json {
                let items: Vec<_> = page
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "seq": s.seq,
                            "timestamp": rfc3339_ms(s.timestamp_ms),
                            "timestamp_ms": s.timestamp_ms,
                            "hash": crate::hex::encode(&s.hash),
                            "parent": crate::hex::encode(&s.parent),
                            "byte_size": s.byte_size,
                            "key_version": s.key_version,
                        })
                    })
                    .collect();
                let v = serde_json::json!({ "snapshots": items, "next_after": next });
                writeln!(out, "{v}").map_err(w)?;
            } else {
                writeln!(out, "{:>10}  {:<24}  {:>8}  HASH", "SEQ", "TIME", "BYTES").map_err(w)?;
                for s in &page {
                    writeln!(
                        out,
                        "{:>10}  {:<24}  {:>8}  {}",
                        s.seq,
                        rfc3339_ms(s.timestamp_ms),
                        s.byte_size,
                        &crate::hex::encode(&s.hash)[..16]
                    )
                    .map_err(w)?;
                }
                if let Some(n) = next {
                    writeln!(out, "more: --after {n}").map_err(w)?;
                }
            }
        }
        Command::Verify {
            agent,
            remote,
            checkpoint,
            max_age,
            json,
        } => {
            let (home, a) = open_agent(&agent)?;
            let max_age = max_age
                .as_deref()
                .map(crate::config::parse_duration)
                .transpose()?;
            let report = {
                let mut p = Progress::new("verifying snapshot");
                crate::verify::verify(&a, |s, h| p.tick(s, h))?
            };
            // Checkpoints: this machine's, external ones, then the remote's.
            let keys = a.repo().keys().clone();
            let mut cps = crate::checkpoint::list_local(&a)?;
            for f in &checkpoint {
                cps.push(crate::checkpoint::read_file(f, &keys)?);
            }
            for c in &cps {
                crate::checkpoint::check_local(&a, c)?;
            }
            let mut remote_head = None;
            if let Some(r) = remote {
                let url = home.remote_for(
                    a.name(),
                    Some(&r).filter(|r| !r.is_empty()).map(|s| s.as_str()),
                )?;
                let rem = crate::remote::Remote::open(&url)?;
                let rt = crate::remote::runtime()?;
                let theirs = rt.block_on(crate::checkpoint::fetch_remote(&keys, &rem))?;
                cps.extend(theirs);
                remote_head =
                    Some(rt.block_on(crate::checkpoint::check_remote(&keys, &rem, &cps))?);
            }
            if let Some(age) = max_age {
                crate::checkpoint::check_fresh(
                    &cps,
                    age.as_millis() as i64,
                    crate::engine::now_ns() / 1_000_000,
                )?;
            }
            crate::verify::record(&a, &report)?;
            let checkpointed = cps.iter().map(|c| c.seq).max();
            if json {
                let mut v = serde_json::to_value(&report).expect("report encodes");
                v["checkpoints"] = cps.len().into();
                v["checkpointed_seq"] = checkpointed.into();
                v["remote_head_seq"] = remote_head.into();
                writeln!(out, "{v}").map_err(w)?;
            } else {
                writeln!(
                    out,
                    "ok: agent {agent}: snapshots {}..={} ({}), {} objects, {} sealed bytes verified",
                    report.first_seq, report.head_seq, report.snapshots, report.objects, report.sealed_bytes
                )
                .map_err(w)?;
                for (v, c) in &report.key_versions {
                    writeln!(
                        out,
                        "key version {v}: {} snapshots, {} objects",
                        c.snapshots, c.objects
                    )
                    .map_err(w)?;
                }
                match checkpointed {
                    Some(s) => writeln!(
                        out,
                        "ok: {} signed checkpoints verified, newest at snapshot {s}",
                        cps.len()
                    )
                    .map_err(w)?,
                    None => writeln!(out, "no checkpoints yet").map_err(w)?,
                }
                if let Some(h) = remote_head {
                    writeln!(
                        out,
                        "ok: the remote holds snapshots up to {h} and agrees with every checkpoint"
                    )
                    .map_err(w)?;
                }
            }
        }
        Command::Checkpoint {
            agent,
            remote,
            hook,
        } => {
            let (home, a) = open_agent(&agent)?;
            let seq = crate::replicator::replicated_seq(&a)?;
            if seq == 0 {
                return Err(Error::Invalid(format!(
                    "agent {agent} has no replicated snapshot yet: a checkpoint names only snapshots on the remote"
                )));
            }
            let url = home.remote_for(a.name(), remote.as_deref())?;
            let rem = crate::remote::Remote::open(&url)?;
            let rt = crate::remote::runtime()?;
            let c = rt.block_on(crate::checkpoint::create(&a, &rem, seq))?;
            writeln!(out, "signed checkpoint of snapshot {seq} ({})", c.hash).map_err(w)?;
            let hook = match hook {
                Some(h) => Some(h),
                None => home
                    .agent_setting(a.name(), "checkpoint_hook")?
                    .and_then(|v| v.as_str().map(String::from)),
            };
            if let Some(h) = hook {
                crate::checkpoint::run_hook(&h, &c)?;
                writeln!(out, "hook ran").map_err(w)?;
            }
        }
        Command::Cat { agent, seq, path } => {
            let (_, a) = open_agent(&agent)?;
            let v = match seq {
                Some(s) => a.snapshot(s)?,
                None => a.head()?,
            };
            let ino = v.resolve(path.as_bytes())?;
            let size = v.getattr(ino)?.size;
            let mut off = 0;
            while off < size {
                let buf = v.read(ino, off, 1 << 20)?;
                out.write_all(&buf).map_err(w)?;
                off += buf.len() as u64;
            }
        }
        Command::Status { agent, json } => {
            let (home, a) = open_agent(&agent)?;
            let head = a.head()?.seq();
            let replicated = crate::replicator::replicated_seq(&a)?;
            let fork = crate::replicator::fork_seq(&a)?;
            let (queued_objects, queued_bytes) = a.repo().index().objects_after(replicated)?;
            let meta = |k: &str| -> Result<Option<String>> {
                Ok(a.repo()
                    .index()
                    .meta(k)?
                    .map(|v| String::from_utf8_lossy(&v).into_owned()))
            };
            let remote = match meta(crate::replicator::META_REMOTE)? {
                Some(u) => u,
                None => home.remote_for(a.name(), None)?,
            };
            let error = meta(crate::replicator::META_ERROR)?;
            let verified = crate::verify::last_verified(&a);
            let checkpointed = crate::checkpoint::checkpointed_seq(&a)?;
            let checkpoint_error = meta(crate::replicator::META_CHECKPOINT_ERROR)?;
            let daemon = crate::agent::writer_pid(&home, a.name());
            let v = serde_json::json!({
                "agent": agent,
                "mounted_by_pid": daemon,
                "key_version": a.repo().keys().key_version(),
                "head_seq": head,
                "replicated_seq": replicated,
                "verified_seq": verified.map(|v| v.0),
                "verified_at": verified.map(|v| rfc3339_ms(v.1)),
                "checkpointed_seq": checkpointed,
                "checkpoint_error": checkpoint_error,
                "queue_snapshots": head.saturating_sub(replicated),
                "queue_objects": queued_objects,
                "queue_bytes": queued_bytes,
                "last_error": error,
                "fork_at": fork,
                "remote": remote,
            });
            if json {
                writeln!(out, "{v}").map_err(w)?;
            } else {
                writeln!(out, "agent       {agent}").map_err(w)?;
                writeln!(out, "head        {head}").map_err(w)?;
                writeln!(out, "replicated  {replicated}").map_err(w)?;
                match verified {
                    Some((s, at)) => {
                        writeln!(out, "verified    {s} (at {})", rfc3339_ms(at)).map_err(w)?
                    }
                    None => writeln!(out, "verified    never (run sovseal verify)").map_err(w)?,
                }
                match checkpointed {
                    Some(s) => writeln!(out, "checkpoint  {s}").map_err(w)?,
                    None => writeln!(out, "checkpoint  none yet").map_err(w)?,
                }
                if let Some(e) = &checkpoint_error {
                    writeln!(out, "CHECKPOINT ERROR  {e}").map_err(w)?;
                }
                match daemon {
                    Some(pid) => writeln!(out, "mounted     yes (pid {pid})").map_err(w)?,
                    None => writeln!(out, "mounted     no").map_err(w)?,
                }
                writeln!(
                    out,
                    "queue       {} snapshots, {queued_objects} objects, {queued_bytes} bytes",
                    head.saturating_sub(replicated)
                )
                .map_err(w)?;
                writeln!(out, "remote      {remote}").map_err(w)?;
                if let Some(f) = fork {
                    writeln!(out, "FORK        {}", Error::Fork { seq: f }).map_err(w)?;
                }
                if let Some(e) = error {
                    writeln!(out, "last error  {e}").map_err(w)?;
                }
            }
        }
        Command::Restore {
            agent,
            remote,
            seq,
            paths,
        } => {
            let (path, dest) = match &paths[..] {
                [dest] => ("/".to_string(), dest.clone()),
                [path, dest] => (path.to_string_lossy().into_owned(), dest.clone()),
                _ => unreachable!("clap takes one or two"),
            };
            let home = Home::from_env()?;
            let name = AgentName::new(&agent)?;
            let m = master(&home)?;
            let local = home.agent_dir(&name).join("index.db").exists();
            let (n, from) = if remote.is_none() && local {
                let a = crate::agent::Agent::open_readonly(&home, &name, &m)?;
                let n = crate::restore::from_local(&a, seq, &path, &dest)?;
                (n, "local data".to_string())
            } else {
                let url = home.remote_for(&name, remote.as_deref())?;
                let n = crate::restore::to_directory(&home, &name, &m, &url, seq, &path, &dest)?;
                (n, url)
            };
            writeln!(
                out,
                "restored {path} of snapshot {n} of agent {agent} from {from} into {}",
                dest.display()
            )
            .map_err(w)?;
        }
        Command::Diff {
            agent,
            seq1,
            seq2,
            json,
        } => {
            let (_, a) = open_agent(&agent)?;
            let from = a.snapshot(seq1)?;
            let to = match seq2 {
                Some(s) => a.snapshot(s)?,
                None => a.head()?,
            };
            let d = crate::history::diff(&from, &to)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&d).expect("diff encodes")).map_err(w)?;
            } else {
                for e in &d.added {
                    writeln!(out, "+ {:>12}  {}", e.size, e.path).map_err(w)?;
                }
                for e in &d.removed {
                    writeln!(out, "- {:>12}  {}", e.size, e.path).map_err(w)?;
                }
                for c in &d.changed {
                    writeln!(
                        out,
                        "M {:>12}  {}  ({}; was {} bytes)",
                        c.new_size,
                        c.path,
                        c.what.join(", "),
                        c.old_size
                    )
                    .map_err(w)?;
                }
                writeln!(
                    out,
                    "{} -> {}: {} added, {} removed, {} changed",
                    d.from,
                    d.to,
                    d.added.len(),
                    d.removed.len(),
                    d.changed.len()
                )
                .map_err(w)?;
            }
        }
        Command::Rollback { agent, seq } => {
            let home = Home::from_env()?;
            let name = AgentName::new(&agent)?;
            let m = master(&home)?;
            let mut e = Engine::open_with(&home, &name, &m, false)?;
            let before = e.head().seq();
            let info = e.rollback(seq)?;
            writeln!(
                out,
                "agent {agent}: snapshot {} has the tree of snapshot {seq} (snapshots up to {before} are kept)",
                info.seq
            )
            .map_err(w)?;
        }
        Command::Forget {
            agent,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_within,
            dry_run,
            prune,
            remote,
            json,
        } => {
            let policy = crate::retention::Policy {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_within,
            };
            policy.validate()?;
            let home = Home::from_env()?;
            let name = AgentName::new(&agent)?;
            let m = master(&home)?;
            let (a, _lock) = crate::agent::Agent::open_writer(&home, &name, &m, false)?;
            let retained = a.repo().index().retained()?;
            let (keep, forget) =
                crate::retention::plan(&policy, &retained, crate::engine::now_ns() / 1_000_000)?;
            if !dry_run {
                crate::retention::forget(&a, &forget)?;
            }
            let pruned = if prune && !dry_run {
                Some(prune_agent(&home, &a, remote.as_deref())?)
            } else {
                None
            };
            if json {
                let v = serde_json::json!({
                    "dry_run": dry_run,
                    "kept": keep,
                    "forgotten": forget,
                    "prune": pruned,
                });
                writeln!(out, "{v}").map_err(w)?;
            } else {
                let verb = if dry_run { "would forget" } else { "forgot" };
                writeln!(
                    out,
                    "{verb} {} snapshots, keeping {}: {}",
                    forget.len(),
                    keep.len(),
                    keep.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
                .map_err(w)?;
                if let Some(r) = pruned {
                    write_prune(&mut out, &r).map_err(w)?;
                }
            }
        }
        Command::Prune {
            agent,
            remote,
            json,
        } => {
            let home = Home::from_env()?;
            let name = AgentName::new(&agent)?;
            let m = master(&home)?;
            let (a, _lock) = crate::agent::Agent::open_writer(&home, &name, &m, false)?;
            let r = prune_agent(&home, &a, remote.as_deref())?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&r).expect("report encodes")
                )
                .map_err(w)?;
            } else {
                write_prune(&mut out, &r).map_err(w)?;
            }
        }
        Command::Redact {
            agent,
            dry_run,
            remote,
            json,
            path,
        } => {
            let home = Home::from_env()?;
            let name = AgentName::new(&agent)?;
            let m = master(&home)?;
            let (a, _lock) = crate::agent::Agent::open_writer(&home, &name, &m, false)?;
            let plan = {
                let mut p = Progress::new("redact: reading snapshot");
                crate::redact::plan(&a, &path, &mut |s, h| p.tick(s, h))?
            };
            if plan.seqs.is_empty() && !dry_run {
                return Err(Error::Invalid(format!(
                    "{path} has no content in any snapshot of agent {agent}"
                )));
            }
            let mut parts = 0;
            if !dry_run {
                if !plan.erase.is_empty() {
                    crate::redact::apply_local(&a, &path, &plan)?;
                }
                // Every record, not only this one: finishes an earlier run
                // whose remote part was interrupted.
                let url = home.remote_for(a.name(), remote.as_deref())?;
                let rem = crate::remote::Remote::open(&url)?;
                let rt = crate::remote::runtime()?;
                for r in crate::redact::records(&a)? {
                    parts += rt.block_on(crate::redact::apply_remote(&a, &rem, &r)).map_err(|e| {
                        Error::Invalid(format!(
                            "erased locally and recorded, but the remote still holds the content ({e}); run the same command again to finish"
                        ))
                    })?;
                }
            }
            if json {
                let mut v = serde_json::to_value(&plan).expect("plan encodes");
                v["dry_run"] = dry_run.into();
                v["remote_parts_rewritten"] = parts.into();
                writeln!(out, "{v}").map_err(w)?;
            } else {
                let verb = if dry_run { "would erase" } else { "erased" };
                writeln!(
                    out,
                    "{verb} {} objects of {path} from {} snapshots; {} shared with other files kept; {} remote parts rewritten",
                    plan.objects,
                    plan.seqs.len(),
                    plan.shared_kept,
                    parts
                )
                .map_err(w)?;
                if plan.symlinks > 0 {
                    writeln!(
                        out,
                        "note: {} symlinks under {path} keep their targets (inode metadata)",
                        plan.symlinks
                    )
                    .map_err(w)?;
                }
            }
        }
        Command::Key { cmd } => match cmd {
            KeyCommand::Export {
                out: file,
                passphrase_file,
            } => {
                let home = Home::from_env()?;
                let m = master(&home)?;
                if file.symlink_metadata().is_ok() {
                    return Err(Error::Invalid(format!(
                        "{} already exists; export to a new file",
                        file.display()
                    )));
                }
                let pass = passphrase(passphrase_file.as_deref(), true)?;
                let e = crate::keys::export::seal(&m, &pass, crate::keys::export::Kdf::new()?)?;
                let json = serde_json::to_vec_pretty(&e).expect("export encodes");
                let mut f = std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new().write(true),
                    0o600,
                )
                .create_new(true)
                .open(&file)
                .map_err(|er| Error::io(&file, er))?;
                f.write_all(&json)
                    .and_then(|()| f.write_all(b"\n"))
                    .and_then(|()| f.sync_all())
                    .map_err(|er| Error::io(&file, er))?;
                writeln!(
                    out,
                    "exported master key {} to {} (mode 0600). Keep it and its passphrase apart, off this machine.",
                    e.fingerprint,
                    file.display()
                )
                .map_err(w)?;
            }
            KeyCommand::Import {
                file,
                passphrase_file,
            } => {
                let home = Home::from_env()?;
                let c = custody::Custody::from_env()?;
                let raw = std::fs::read(&file).map_err(|er| Error::io(&file, er))?;
                let e: crate::keys::export::Export =
                    serde_json::from_slice(&raw).map_err(|er| {
                        Error::Custody(format!(
                            "{} is not a sovseal key export: {er}",
                            file.display()
                        ))
                    })?;
                let pass = passphrase(passphrase_file.as_deref(), false)?;
                let key = crate::keys::export::open(&e, &pass)?;
                if custody::install(&home, &c, &key)? {
                    writeln!(out, "imported master key {}", key.fingerprint()).map_err(w)?;
                } else {
                    writeln!(
                        out,
                        "master key {} is already in custody; nothing changed",
                        key.fingerprint()
                    )
                    .map_err(w)?;
                }
            }
            KeyCommand::Fingerprint => {
                let home = Home::from_env()?;
                let m = master(&home)?;
                for v in m.versions() {
                    let fp = m.fingerprint_of(v).expect("listed version");
                    let cur = if v == m.current_version() {
                        " (current)"
                    } else {
                        ""
                    };
                    writeln!(out, "version {v}: {fp}{cur}").map_err(w)?;
                }
            }
            KeyCommand::Rotate => {
                let home = Home::from_env()?;
                let c = custody::Custody::from_env()?;
                let (m, v) = custody::rotate(&home, &c)?;
                writeln!(
                    out,
                    "added master key version {v} ({}); new data is sealed under it from the next mount on. Export the key again: older exports cannot open it.",
                    m.fingerprint_of(v).expect("new version")
                )
                .map_err(w)?;
            }
        },
        Command::Ls { agent, seq, path } => {
            let (_, a) = open_agent(&agent)?;
            let v = match seq {
                Some(s) => a.snapshot(s)?,
                None => a.head()?,
            };
            let ino = v.resolve(path.as_bytes())?;
            for (name, e) in v.entries(ino)?.iter() {
                let i = v.getattr(e.ino)?;
                let t = match e.file_type {
                    crate::envelope::tree::FileType::File => '-',
                    crate::envelope::tree::FileType::Dir => 'd',
                    crate::envelope::tree::FileType::Symlink => 'l',
                };
                writeln!(
                    out,
                    "{t}{:04o} {:>12} {}",
                    i.perm,
                    i.size,
                    String::from_utf8_lossy(name)
                )
                .map_err(w)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            super::rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
