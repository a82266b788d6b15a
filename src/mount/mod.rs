//! The mount layer: `sovseal-mount` and the filesystem it serves.
//!
//! Architecture Invariant: only [`fuse`] imports the FUSE library; [`fs`]
//! is the filesystem in plain types, driven by the adapter.
//!
//! - [`fuse`]: `impl fuser::Filesystem`, replies and errnos, the session.
//! - [`fs`]: handles, commit triggers (`fs/committer.rs`), `.snapshots/`
//!   (`fs/snapshots.rs`), the state xattr.
//! - [`options`]: `-o` options in sovseal's own types.
//! - [`preflight`]: the mountpoint before (checks, stale mounts), readiness
//!   after, and the unmount.
//! - [`daemon`]: the detached child and its readiness report; logging.
//! - [`startup`]: restore on a fresh machine, retention, checkpoint policy.
//! - [`follow`]: a follower mount's polling thread (`--follow`).
//! - [`warm`]: after a lazy restore, the head's metadata fetched ahead,
//!   and a flat start's older history.
//! - [`notify`], [`metrics`]: systemd readiness; counters and their file.
//! - this file: the command line, and serving until a signal or unmount.

pub mod daemon;
pub mod follow;
pub mod fs;
pub mod fuse;
pub mod metrics;
pub mod notify;
pub mod options;
pub mod preflight;
pub mod readahead;
pub mod startup;
pub mod warm;

use crate::config::{AgentName, Home};
use crate::custody;
use crate::engine::Engine;
use crate::seal::keys::MasterKey;
use crate::{Error, Result, exit};
use clap::Parser;
use daemon::READY_ENV;
use fs::{Fs, Options};
use options::MountOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Mount an agent's sealed state as a filesystem.
#[derive(Parser, Debug)]
#[command(name = "sovseal-mount", version, about, long_about = None)]
pub struct Args {
    /// Where to mount (an existing, empty directory).
    pub mountpoint: PathBuf,
    /// Agent name; defaults to the mountpoint's last component.
    #[arg(long)]
    pub agent: Option<String>,
    /// Stay attached to the terminal instead of running in the background.
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options, comma-separated: ro, rw, allow_other, allow_root,
    /// default_permissions, noatime, nosuid, nodev, noexec, ...
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// Quiet period in ms after metadata-only changes before they are committed.
    #[arg(long, default_value_t = 200)]
    pub quiet_ms: u64,
    /// Dirty file data kept in memory before it is sealed early, in MiB.
    #[arg(long, default_value_t = 64)]
    pub dirty_budget_mib: usize,
    /// Longest chain of delta commits before a commit writes whole inode
    /// pages and directory trees again (a fold; 0: every commit does).
    /// Longer chains seal less per commit; a reader of a snapshot reads
    /// its chain back to the fold once (docs/PERFORMANCE.md, sessions 45-46).
    /// At most 65,536.
    #[arg(long, default_value_t = crate::engine::FOLD_EVERY,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::seal::tree::DELTA_CHAIN_MAX)))]
    pub fold_every: u32,
    /// FUSE worker threads (of which up to half may wait for a lazily
    /// restored agent's older history under `.snapshots/`; with one, none
    /// does).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Where sealed snapshots are replicated (file:///dir, s3://bucket/prefix,
    /// gs://…, az://…, postgres://…, memory://). Default: config.json, else
    /// $SOVSEAL_HOME/remote. An agent with no local data is restored from it.
    #[arg(long)]
    pub remote: Option<String>,
    /// On a machine without local data, fetch every snapshot's content and
    /// verify all of it before mounting, instead of mounting once the chain
    /// is checked and fetching content on first read (a lazy restore).
    #[arg(long)]
    pub full_restore: bool,
    /// How long a read of content not fetched yet (after a lazy restore)
    /// waits for the remote before it fails with EIO, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub fetch_timeout_secs: u64,
    /// fsync and close return only once the snapshot is on the remote.
    #[arg(long)]
    pub sync_replication: bool,
    /// Upload every snapshot as its own objects (pack part, part index,
    /// envelope) instead of letting snapshots committed faster than they
    /// upload go up together in batches (one batch part and one batch
    /// index for the run, then each envelope). For a remote that builds
    /// older than the batches (CHANGELOG) still read: they do not find a
    /// batched snapshot's content.
    #[arg(long)]
    pub no_batch_uploads: bool,
    /// Follow an agent written elsewhere: a read-only view of the snapshots
    /// on the remote (which needs the writer's master key), advancing to
    /// each new one as it is replicated. Restores first on a machine
    /// without local data; never writes to the remote.
    #[arg(long)]
    pub follow: bool,
    /// How often a writer mount renews its heartbeat on the remote, in
    /// seconds (`sovseal takeover` on another machine watches it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// How often a follower asks the remote for new snapshots, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub poll_ms: u64,
    /// The close of a written file returns only once its snapshot is on
    /// stable storage (one disk sync per close, shared by concurrent
    /// closes). Without it a close seals the snapshot (it survives a crash
    /// of the daemon) and the disk sync follows within --sync-interval-ms.
    /// Also `-o sync_close`.
    #[arg(long)]
    pub durable_close: bool,
    /// Let the kernel cache writes in its page cache and send them in
    /// larger pieces (FUSE writeback cache): small writes return without a
    /// round trip to the daemon. A close or an fsync still commits exactly
    /// what was written before it. Written data not yet closed or fsynced
    /// is then held by the kernel instead of the daemon (a crash of the
    /// daemon loses it either way). Also `-o writeback_cache`.
    #[arg(long)]
    pub writeback_cache: bool,
    /// The kernel's read-ahead window for this mount, in KiB: how far ahead
    /// of a sequential reader it asks for data, in requests of up to 1 MiB
    /// answered in parallel. Setting it needs root; 0 keeps the kernel's
    /// default (128 KiB). Default 4096; also `-o readahead_kib=N`.
    #[arg(long)]
    pub readahead_kib: Option<u32>,
    /// Longest time in ms before a sealed snapshot is made durable against
    /// a power cut without being asked (fsync always syncs at once).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub sync_interval_ms: u64,
    /// Least seconds between two signed checkpoints (default: config.json
    /// `checkpoint_interval_secs`, else 60). One is also made at unmount.
    #[arg(long)]
    pub checkpoint_interval_secs: Option<u64>,
    /// Command (`sh -c`) run with each checkpoint for external anchoring:
    /// the checkpoint JSON on stdin, SOVSEAL_CHECKPOINT_SEQ/_HASH/_AGENT_ID
    /// in the environment (default: config.json `checkpoint_hook`). Its
    /// failure is logged and shown by `sovseal status`.
    #[arg(long)]
    pub checkpoint_hook: Option<String>,
    /// Write Prometheus text metrics (commits, commit latency, sealed bytes,
    /// replication lag and errors) to this file every 2 s and at exit,
    /// replacing it atomically (for node_exporter's textfile collector).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// More log detail: -v debug (every commit and upload), -vv trace.
    /// RUST_LOG (e.g. `debug` or `sovseal=debug`) overrides it.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Runs `sovseal-mount`; returns the exit code.
pub fn main() -> i32 {
    // Before any thread (glibc fixes the arena limit at its second arena).
    let arenas_capped = crate::sys::limit_malloc_arenas();
    let args: Args = match exit::start("sovseal-mount") {
        Ok(a) => a,
        Err(code) => return code,
    };
    daemon::init_logging(args.verbose);
    if arenas_capped {
        tracing::debug!(arenas = crate::sys::MALLOC_ARENAS, "malloc arenas capped");
    }
    let report = std::env::var_os(READY_ENV).is_some();
    match run(&args, report) {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = exit::code_for(&e);
            if report {
                println!("{}", daemon::error_report(code, &e));
            }
            eprintln!("sovseal-mount: error: {e}");
            code
        }
    }
}

fn run(args: &Args, report: bool) -> Result<()> {
    let mountpoint = preflight::preflight(&args.mountpoint)?;
    let agent = match &args.agent {
        Some(a) => AgentName::new(a)?,
        None => AgentName::new(
            &mountpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )?,
    };
    let mount = options::parse(&args.options, &agent)?;
    let home = Home::from_env()?;
    let master = custody::load(&home, &custody::Custody::from_env()?)?;
    if !args.foreground {
        drop(master);
        return daemon::daemonize(&home, &agent);
    }
    if report {
        // Detach from the terminal's session: the shell's signals are not ours.
        let _ = nix::unistd::setsid();
    }
    serve(args, &home, &agent, &master, &mountpoint, mount, report)
}

fn serve(
    args: &Args,
    home: &Home,
    agent: &AgentName,
    master: &MasterKey,
    mountpoint: &Path,
    mut mount: MountOptions,
    report: bool,
) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    if args.follow && !mount.read_only {
        mount.flags.retain(|f| *f != options::Flag::ReadWrite);
        mount.flags.push(options::Flag::ReadOnly);
        mount.read_only = true;
    }
    // Block the shutdown signals in every thread; one thread waits for them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| Error::io("sigprocmask", e.into()))?;

    // A restore that stopped part-way left a data dir of nothing but what
    // it fetched: started over, never served.
    if crate::repo::agent::discard_stopped_restore(home, agent)? {
        tracing::warn!("a restore of agent {agent} stopped before it finished; starting it over");
    }
    let remote =
        crate::repo::remote::Remote::open(&home.remote_for(agent, args.remote.as_deref())?)?;
    if !home.has_agent(agent) {
        let lazy = !args.full_restore && !args.follow;
        startup::restore_if_remote_has(home, agent, master, &remote, lazy)?;
    } else {
        startup::refuse_start_over_on_remote(home, agent, master, &remote)?;
    }
    if args.follow && !home.has_agent(agent) {
        return Err(Error::Invalid(format!(
            "nothing to follow: the remote {} holds no snapshots of agent {agent} (for this master key)",
            remote.shown_url()
        )));
    }
    let lazy_dir = home
        .agent_dir(agent)
        .join(crate::repo::lazy::LAZY_DIR)
        .exists();
    if lazy_dir {
        // A lazily restored data dir (now or before) fetches from the
        // mount's remote.
        crate::repo::lazy::use_remote(
            remote.clone(),
            Duration::from_secs(args.fetch_timeout_secs),
        )?;
    }
    if args.follow && lazy_dir {
        // A pull checks each new snapshot against what is stored here.
        return Err(Error::Invalid(format!(
            "agent {agent} was restored lazily here (its content stays on the remote until read): a follower needs all of it; mount it without --follow, or remove its data dir and mount with --follow to restore it whole"
        )));
    }
    let refused = if args.follow {
        startup::catch_up_follower(home, agent, master, &remote)?
    } else {
        startup::apply_retention(home, agent, master, &remote, lazy_dir)?;
        Default::default()
    };
    let mut engine = Engine::open_with(home, agent, master, !args.follow)?;
    // A lazily restored data dir: what the redaction records here erase
    // is never fetched, also after a redaction stopped between its record
    // and the remote index.
    crate::history::redact::guard_lazy(engine.agent(), true)?;
    // A flat start's older history, fetched from now on (reads of what
    // it holds wait for it).
    let older = match lazy_dir && !args.follow {
        true => warm::Warmer::older_history(&engine.shared_agent(), remote.clone())?,
        false => None,
    };
    // The handle that serves refuses what the follower's catch-up erased
    // (its own handle is gone); the polls keep the set current.
    engine.agent().repo().erase(&refused);
    startup::check_head_readable(&engine)?;
    engine.mark_serving(mountpoint);
    engine.set_dirty_budget(args.dirty_budget_mib << 20);
    engine.set_fold_every(args.fold_every);
    let shared_agent = engine.shared_agent();
    let mut follow_remote = None;
    let mut heartbeats = None;
    let replicator = if args.follow {
        follow_remote = Some(remote);
        None
    } else if mount.read_only {
        None
    } else {
        let policy = startup::checkpoint_policy(args, home, agent)?;
        heartbeats = Some(crate::replication::takeover::Heartbeats::start(
            remote.clone(),
            master.agent_id(agent.as_str()),
            Duration::from_secs(args.heartbeat_secs),
        )?);
        let r = crate::replication::replicator::Replicator::start_with(
            engine.shared_agent(),
            remote,
            crate::replication::replicator::Options {
                checkpoints: policy,
                batch_uploads: !args.no_batch_uploads,
            },
        )?;
        r.notify(engine.head().seq());
        Some(Arc::new(r))
    };
    let fs = Arc::new(Fs::new(
        engine,
        Options {
            read_only: mount.read_only,
            quiet: Duration::from_millis(args.quiet_ms),
            sync_replication: args.sync_replication,
            durable_close: args.durable_close || mount.sync_close,
            writeback_cache: args.writeback_cache || mount.writeback_cache,
            honors_setid: mount.honors_setid(),
            sync_interval: Duration::from_millis(args.sync_interval_ms),
            follow: args.follow,
            history_waiters: args.threads / 2,
            ..Options::default()
        },
        replicator,
    ));
    let notifier = notify::Notifier::from_env()
        .map_err(|e| Error::Invalid(format!("{}: {e}", notify::NOTIFY_SOCKET)))?;
    let notifier = notifier.as_ref();
    let session = fuse::spawn(fs.clone(), mountpoint, &mount, args.threads)?;
    preflight::wait_answering(mountpoint)?;
    // A lazily restored data dir (a writer's): the head's metadata fetched
    // ahead while the mount serves.
    let warmer = match lazy_dir && !args.follow {
        true => Some(warm::Warmer::start(&shared_agent)?),
        false => None,
    };
    let follower = match follow_remote {
        Some(remote) => Some(follow::Follower::start(
            fs.clone(),
            session.invalidator(),
            shared_agent,
            remote,
            Duration::from_millis(args.poll_ms),
        )?),
        None => None,
    };
    readahead::set(
        mountpoint,
        args.readahead_kib
            .or(mount.readahead_kib)
            .unwrap_or(readahead::DEFAULT_KIB),
    );
    let metrics = args.metrics_file.clone().map(|p| {
        let fs = fs.clone();
        metrics::MetricsWriter::start(move || fs.render_metrics(), p)
    });
    tracing::info!("agent {agent} mounted at {}", mountpoint.display());
    if report {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready").and_then(|_| out.flush());
    }
    notify::notify(
        notifier,
        &format!(
            "READY=1\nMAINPID={}\nSTATUS=agent {agent} mounted at {}",
            std::process::id(),
            mountpoint.display()
        ),
    );

    let (tx, rx) = crossbeam_channel::bounded::<Signal>(1);
    std::thread::Builder::new()
        .name("sovseal-signals".into())
        .spawn(move || {
            if let Ok(s) = sigs.wait() {
                let _ = tx.send(s);
            }
        })
        .map_err(|e| Error::io("signal thread", e))?;
    loop {
        crossbeam_channel::select! {
            recv(rx) -> sig => {
                let sig = sig.map(|s| s.as_str()).unwrap_or("?");
                tracing::info!("{sig}: committing and unmounting");
                notify::notify(notifier, "STOPPING=1\nSTATUS=committing and unmounting");
                drop(follower);
                for w in warmer.iter().chain(older.iter()) {
                    w.stop();
                }
                let committed = fs.sync();
                if preflight::unmount(mountpoint)? {
                    tracing::warn!(
                        "files are still open under {}: detached it; serving them until they are closed",
                        mountpoint.display()
                    );
                }
                while !session.is_finished() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                session.join()?;
                drop((warmer, older));
                return finish(&fs, heartbeats, metrics, committed);
            }
            default(Duration::from_millis(200)) => {
                if session.is_finished() {
                    tracing::info!("unmounted externally");
                    notify::notify(notifier, "STOPPING=1\nSTATUS=unmounted; final commit");
                    drop(follower);
                    drop((warmer, older));
                    session.join()?;
                    return finish(&fs, heartbeats, metrics, Ok(()));
                }
            }
        }
    }
}

/// The end of a mount once FUSE has stopped serving, however it stopped: the
/// final commit (DESTROY normally ran it; this makes sure), a last beat,
/// the metrics file's last write, then the first error of the pre-unmount
/// commit (`committed`), the final commit, or any commit before it.
fn finish(
    fs: &Fs,
    heartbeats: Option<crate::replication::takeover::Heartbeats>,
    metrics: Option<metrics::MetricsWriter>,
    committed: Result<()>,
) -> Result<()> {
    let last = fs.shutdown();
    // A last beat says "stopped" only if nothing is left to replicate: a
    // takeover then waits for nothing else.
    if let Some(h) = heartbeats {
        h.finish(fs.all_replicated());
    }
    drop(metrics);
    committed?;
    last?;
    match fs.last_commit_error() {
        Some(e) => Err(Error::Failed(format!("final commit failed: {e}"))),
        None => Ok(()),
    }
}
