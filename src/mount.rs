//! `sovseal-mount`: argument parsing, preflight checks, daemonizing,
//! signals and a clean unmount. The filesystem itself is `fs` + `fuse`.
//!
//! Without `--foreground` the command re-executes itself in the foreground
//! as a detached child, waits until the child reports that the mount is
//! ready (or why it is not), and exits with that status. The child's
//! messages go to `$SOVSEAL_HOME/logs/<agent>.log`.

use crate::config::{AgentName, Home};
use crate::engine::Engine;
use crate::fs::{Fs, Options};
use crate::keys::custody;
use crate::{Error, Result, exit};
use clap::Parser;
use fuser::{MountOption, SessionACL};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Set in the detached child: report readiness on stdout.
const READY_ENV: &str = "SOVSEAL_MOUNT_REPORT";

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
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Where sealed snapshots are replicated (file:///dir, s3://bucket/prefix,
    /// gs://…, az://…, memory://). Default: config.json, else
    /// $SOVSEAL_HOME/remote. An agent with no local data is restored from it.
    #[arg(long)]
    pub remote: Option<String>,
    /// fsync and close return only once the snapshot is on the remote.
    #[arg(long)]
    pub sync_replication: bool,
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

/// Logs go to stderr as plain lines (the journal under systemd, else
/// `$SOVSEAL_HOME/logs/<agent>.log` for a background mount). Under journald
/// (`JOURNAL_STREAM` set) there is no timestamp: the journal adds its own.
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => s.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("sovseal-mount: ignoring RUST_LOG={s:?}: {e}");
            Targets::new().with_default(level)
        }),
        _ => Targets::new().with_default(level),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let reg = tracing_subscriber::registry().with(filter);
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        reg.with(fmt.without_time()).try_init()
    } else {
        reg.with(fmt).try_init()
    };
}

/// Mount options after translation.
struct Mount {
    options: Vec<MountOption>,
    acl: SessionACL,
    read_only: bool,
}

fn translate(opts: &[String], agent: &AgentName) -> Result<Mount> {
    let mut m = Mount {
        // The kernel checks permissions against the file modes: with
        // allow_other, other users get exactly what the modes allow.
        options: vec![MountOption::DefaultPermissions],
        acl: SessionACL::Owner,
        read_only: false,
    };
    let mut fsname = format!("sovseal:{agent}");
    for o in opts.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let opt = match o {
            "ro" => {
                m.read_only = true;
                MountOption::RO
            }
            "rw" => MountOption::RW,
            "allow_other" => {
                m.acl = SessionACL::All;
                continue;
            }
            "allow_root" => {
                m.acl = SessionACL::RootAndOwner;
                continue;
            }
            "default_permissions" => continue,
            "auto_unmount" => MountOption::AutoUnmount,
            "noatime" => MountOption::NoAtime,
            "atime" => MountOption::Atime,
            "nosuid" => MountOption::NoSuid,
            "suid" => MountOption::Suid,
            "nodev" => MountOption::NoDev,
            "dev" => MountOption::Dev,
            "noexec" => MountOption::NoExec,
            "exec" => MountOption::Exec,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            o if o.starts_with("fsname=") => {
                fsname = o["fsname=".len()..].to_owned();
                continue;
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown mount option {other:?} (known: ro, rw, allow_other, allow_root, default_permissions, auto_unmount, [no]atime, [no]suid, [no]dev, [no]exec, sync, async, dirsync, fsname=)"
                )));
            }
        };
        m.options.push(opt);
    }
    m.options.push(MountOption::FSName(fsname));
    m.options.push(MountOption::Subtype("sovseal".into()));
    Ok(m)
}

/// The mount point field of /proc/self/mountinfo lines, unescaped.
fn mounted_at(path: &Path) -> Option<String> {
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

/// A FUSE mount whose daemon died: the kernel answers ENOTCONN or, for an
/// aborted connection, ECONNABORTED.
fn is_dead_connection(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Detaches the stale mount of a dead daemon at `path`.
fn detach_stale(path: &Path) -> Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => {
            tracing::warn!(
                "cleaned a stale mount at {} left by a dead daemon",
                path.display()
            );
            Ok(())
        }
        Err(err) => Err(Error::Invalid(format!(
            "{} is a stale mount of a dead daemon and could not be detached ({err}); run: fusermount3 -u {}",
            path.display(),
            path.display()
        ))),
    }
}

/// Checks the mountpoint: exists, is a directory, is empty, is not mounted;
/// cleans a stale mount left by a killed daemon.
fn preflight(raw: &Path) -> Result<PathBuf> {
    let abs = if raw.is_absolute() {
        raw.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(raw)
    };
    let path = match std::fs::metadata(&abs).and_then(|_| std::fs::canonicalize(&abs)) {
        Ok(p) => p,
        Err(e) if is_dead_connection(&e) => {
            detach_stale(&abs)?;
            std::fs::canonicalize(&abs).map_err(|e| Error::io(&abs, e))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Invalid(format!(
                "mountpoint {} does not exist; create it first (mkdir -p {})",
                abs.display(),
                abs.display()
            )));
        }
        Err(e) => return Err(Error::io(&abs, e)),
    };
    if !path.is_dir() {
        return Err(Error::Invalid(format!(
            "mountpoint {} is not a directory",
            path.display()
        )));
    }
    let mut detached = 0;
    while let Some(fstype) = mounted_at(&path) {
        // A daemon that died a moment ago may still have its root attributes
        // cached by the kernel: ask for something uncached before deciding.
        if let Err(e) = std::fs::read_dir(&path)
            && is_dead_connection(&e)
            && detached < 8
        {
            detach_stale(&path)?;
            detached += 1;
            continue;
        }
        return Err(Error::Invalid(format!(
            "{} is already mounted ({fstype}); unmount it first (fusermount3 -u {})",
            path.display(),
            path.display()
        )));
    }
    let mut entries = std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))?;
    if entries.next().is_some() {
        return Err(Error::Invalid(format!(
            "mountpoint {} is not empty; mount on an empty directory",
            path.display()
        )));
    }
    Ok(path)
}

/// Runs `sovseal-mount`; returns the exit code.
pub fn main() -> i32 {
    let args: Args = match exit::start("sovseal-mount") {
        Ok(a) => a,
        Err(code) => return code,
    };
    init_logging(args.verbose);
    let report = std::env::var_os(READY_ENV).is_some();
    match run(&args, report) {
        Ok(()) => exit::OK,
        Err(e) => {
            if report {
                println!("error: {e}");
            }
            eprintln!("sovseal-mount: error: {e}");
            exit::code_for(&e)
        }
    }
}

fn run(args: &Args, report: bool) -> Result<()> {
    let mountpoint = preflight(&args.mountpoint)?;
    let agent = match &args.agent {
        Some(a) => AgentName::new(a)?,
        None => AgentName::new(
            &mountpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )?,
    };
    let mount = translate(&args.options, &agent)?;
    let home = Home::from_env()?;
    let master = custody::load(&home, &custody::Custody::from_env()?)?;
    if !args.foreground {
        drop(master);
        return daemonize(&home, &agent);
    }
    if report {
        // Detach from the terminal's session: the shell's signals are not ours.
        let _ = nix::unistd::setsid();
    }
    serve(args, &home, &agent, &master, &mountpoint, mount, report)
}

fn daemonize(home: &Home, agent: &AgentName) -> Result<()> {
    let logs = home.root().join("logs");
    crate::fsutil::create_private_dir(&logs)?;
    let log_path = logs.join(format!("{agent}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode_0600()
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(READY_ENV, "1")
        // The parent reports readiness by exiting; a service manager
        // watching this process must not hear from the child instead.
        .env_remove(crate::notify::NOTIFY_SOCKET)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io("sovseal-mount", e))?;
    let out = BufReader::new(child.stdout.take().expect("piped"));
    for line in out.lines() {
        let line = line.map_err(|e| Error::io("child", e))?;
        if line == "ready" {
            return Ok(());
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            let _ = child.wait();
            return Err(Error::Invalid(msg.to_owned()));
        }
    }
    let status = child.wait().map_err(|e| Error::io("child", e))?;
    Err(Error::Invalid(format!(
        "the mount daemon exited ({status}) before the mount was ready; see {}",
        log_path.display()
    )))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// A fresh machine: if the remote holds this agent, rebuild it (verified)
/// before mounting; otherwise the agent starts empty.
fn restore_if_remote_has(
    home: &Home,
    agent: &AgentName,
    master: &crate::keys::MasterKey,
    remote: &crate::remote::Remote,
) -> Result<()> {
    let rt = crate::remote::runtime()?;
    let id = master.agent_id(agent.as_str());
    if rt.block_on(remote.list_envelopes(&id, 0, 1))?.is_empty() {
        return Ok(());
    }
    tracing::info!("restoring agent {agent} from {}", remote.url());
    let head = rt.block_on(crate::restore::restore(
        home,
        agent,
        master,
        remote,
        |seq, head| {
            if seq % 100 == 0 || seq == head {
                tracing::info!("verified snapshot {seq}/{head}");
            }
        },
    ))?;
    tracing::info!("restored agent {agent} at snapshot {head}");
    Ok(())
}

/// Unmounts `mountpoint`; when files are still open there (EBUSY), detaches
/// it instead, so that new lookups fail while open files keep working until
/// closed (each close still commits). Returns whether it detached. Without
/// the privilege to unmount (a user mount), asks fusermount3.
fn unmount(mountpoint: &Path) -> Result<bool> {
    use nix::mount::{MntFlags, umount2};
    match umount2(mountpoint, MntFlags::empty()) {
        Ok(()) => Ok(false),
        // Unmounted by someone else in the meantime: nothing left to do.
        Err(nix::errno::Errno::EINVAL) if mounted_at(mountpoint).is_none() => Ok(false),
        Err(nix::errno::Errno::EBUSY) => umount2(mountpoint, MntFlags::MNT_DETACH)
            .map(|()| true)
            .map_err(|e| Error::io(mountpoint, e.into())),
        Err(nix::errno::Errno::EPERM) => {
            let run = |lazy: bool| {
                let mut c = std::process::Command::new("fusermount3");
                c.arg("-u");
                if lazy {
                    c.arg("-z");
                }
                c.arg(mountpoint)
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if run(false) {
                Ok(false)
            } else if run(true) {
                Ok(true)
            } else {
                Err(Error::Invalid(format!(
                    "could not unmount {}: fusermount3 -u failed",
                    mountpoint.display()
                )))
            }
        }
        Err(e) => Err(Error::io(mountpoint, e.into())),
    }
}

/// Applies the retention policy of config.json (`retention`), if one is
/// set, before the mount starts: forget, then prune locally and on the
/// remote. A remote that cannot be reached is logged and left for the next
/// mount; anything else stops the mount.
fn apply_retention(
    home: &Home,
    agent: &AgentName,
    master: &crate::keys::MasterKey,
    remote: &crate::remote::Remote,
) -> Result<()> {
    let Some(policy) =
        crate::retention::Policy::from_config(home.agent_setting(agent, "retention")?)?
    else {
        return Ok(());
    };
    if !home.agent_dir(agent).join("index.db").exists() {
        return Ok(());
    }
    let (a, _lock) = crate::agent::Agent::open_writer(home, agent, master, false)?;
    let retained = a.repo().index().retained()?;
    let (_, forget) =
        crate::retention::plan(&policy, &retained, crate::engine::now_ns() / 1_000_000)?;
    crate::retention::forget(&a, &forget)?;
    let mut r = crate::retention::prune_local(&a, &mut |_, _| {})?;
    let rt = crate::remote::runtime()?;
    if let Err(e) = rt.block_on(crate::retention::prune_remote(&a, remote, &mut r)) {
        tracing::warn!("retention: remote prune left for later: {e}");
    }
    tracing::info!(
        "retention: forgot {} snapshots, removed {} objects ({} bytes); remote: {} snapshots pruned",
        forget.len(),
        r.objects_removed,
        r.bytes_removed,
        r.remote_snapshots_pruned
    );
    Ok(())
}

/// The checkpoint policy: flags, else config.json, else the defaults.
fn checkpoint_policy(
    args: &Args,
    home: &Home,
    agent: &AgentName,
) -> Result<crate::replicator::CheckpointPolicy> {
    let mut p = crate::replicator::CheckpointPolicy::default();
    let secs = match args.checkpoint_interval_secs {
        Some(s) => Some(s),
        None => match home.agent_setting(agent, "checkpoint_interval_secs")? {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::Invalid("config.json: checkpoint_interval_secs must be a number".into())
            })?),
        },
    };
    if let Some(s) = secs {
        p.interval = Duration::from_secs(s);
    }
    p.hook = match &args.checkpoint_hook {
        Some(h) => Some(h.clone()),
        None => match home.agent_setting(agent, "checkpoint_hook")? {
            None => None,
            Some(serde_json::Value::String(h)) => Some(h),
            Some(_) => {
                return Err(Error::Invalid(
                    "config.json: checkpoint_hook must be a string (a shell command)".into(),
                ));
            }
        },
    };
    Ok(p)
}

/// Joins the FUSE session after an unmount. The kernel ends a connection
/// with ENODEV, or ECONNABORTED when the last file of a lazily detached
/// mount closes: both are a normal end, not an error.
fn join_session(session: fuser::BackgroundSession, mountpoint: &Path) -> Result<()> {
    match session.join() {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::ENODEV)) => {
            tracing::debug!("FUSE session ended: {e}");
            Ok(())
        }
        r => r.map_err(|e| Error::io(mountpoint, e)),
    }
}

/// Writes the metrics file every 2 s, and once more when dropped.
struct MetricsWriter {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsWriter {
    fn start(fs: Arc<Fs>, path: PathBuf) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let write = move || {
            let text = fs.render_metrics();
            if let Err(e) = crate::fsutil::write_atomic_nosync(&path, text.as_bytes(), 0o644) {
                tracing::warn!("metrics file {}: {e}", path.display());
            }
        };
        let thread = std::thread::Builder::new()
            .name("sovseal-metrics".into())
            .spawn(move || {
                loop {
                    write();
                    match rx.recv_timeout(Duration::from_secs(2)) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                write();
            })
            .ok();
        MetricsWriter {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the kernel lists a FUSE mount at `mountpoint` and a request
/// through it is answered: readiness means the mount works, not merely that
/// the mount call returned.
fn wait_answering(mountpoint: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    loop {
        let listed = mounted_at(mountpoint).is_some_and(|t| t.starts_with("fuse"));
        if listed && std::fs::read_dir(mountpoint).is_ok() {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(Error::Invalid(format!(
                "the mount at {} did not answer within 30 s",
                mountpoint.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn serve(
    args: &Args,
    home: &Home,
    agent: &AgentName,
    master: &crate::keys::MasterKey,
    mountpoint: &Path,
    mount: Mount,
    report: bool,
) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Block the shutdown signals in every thread; one thread waits for them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| Error::io("sigprocmask", e.into()))?;

    let remote = crate::remote::Remote::open(&home.remote_for(agent, args.remote.as_deref())?)?;
    if !home.agent_dir(agent).join("index.db").exists() {
        restore_if_remote_has(home, agent, master, &remote)?;
    }
    apply_retention(home, agent, master, &remote)?;
    let mut engine = Engine::open(home, agent, master)?;
    engine.set_dirty_budget(args.dirty_budget_mib << 20);
    let replicator = if mount.read_only {
        None
    } else {
        let policy = checkpoint_policy(args, home, agent)?;
        let r = crate::replicator::Replicator::start_with(engine.shared_agent(), remote, policy)?;
        r.notify(engine.head().seq());
        Some(Arc::new(r))
    };
    let fs = Arc::new(Fs::new(
        engine,
        Options {
            read_only: mount.read_only,
            quiet: Duration::from_millis(args.quiet_ms),
            sync_replication: args.sync_replication,
            ..Options::default()
        },
        replicator,
    ));
    let mut config = fuser::Config::default();
    config.mount_options = mount.options;
    config.acl = mount.acl;
    config.n_threads = Some(args.threads.max(1));
    config.clone_fd = true;
    let notifier = crate::notify::Notifier::from_env()
        .map_err(|e| Error::Invalid(format!("{}: {e}", crate::notify::NOTIFY_SOCKET)))?;
    let notifier = notifier.as_ref();
    let session = fuser::spawn_mount(crate::fuse::Adapter::new(fs.clone()), mountpoint, &config)
        .map_err(|e| Error::io(mountpoint, e))?;
    wait_answering(mountpoint)?;
    let metrics = args
        .metrics_file
        .clone()
        .map(|p| MetricsWriter::start(fs.clone(), p));
    tracing::info!("agent {agent} mounted at {}", mountpoint.display());
    if report {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready").and_then(|_| out.flush());
    }
    crate::notify::notify(
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
                crate::notify::notify(notifier, "STOPPING=1\nSTATUS=committing and unmounting");
                let committed = fs.sync();
                if unmount(mountpoint)? {
                    tracing::warn!(
                        "files are still open under {}: detached it; serving them until they are closed",
                        mountpoint.display()
                    );
                }
                while !session.guard.is_finished() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                join_session(session, mountpoint)?;
                // DESTROY normally ran the final commit; make sure of it.
                let last = fs.shutdown();
                drop(metrics);
                committed?;
                last?;
                return match fs.last_commit_error() {
                    Some(e) => Err(Error::Invalid(format!("final commit failed: {e}"))),
                    None => Ok(()),
                };
            }
            default(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    tracing::info!("unmounted externally");
                    crate::notify::notify(notifier, "STOPPING=1\nSTATUS=unmounted; final commit");
                    join_session(session, mountpoint)?;
                    let last = fs.shutdown();
                    drop(metrics);
                    last?;
                    return match fs.last_commit_error() {
                        Some(e) => Err(Error::Invalid(format!("final commit failed: {e}"))),
                        None => Ok(()),
                    };
                }
            }
        }
    }
}
