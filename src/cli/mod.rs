//! The `sovseal` command line: parsing and output only; the work is done by
//! the library.
//!
//! - [`args`]: the clap types.
//! - `agent.rs`, `check.rs`, `history.rs`, `keys.rs`: one function per
//!   command, each parsing nothing and calling library functions.
//! - `docs.rs`: shell completions and man pages from the clap types.
//! - `exec.rs`: `sovseal exec`, which runs the two binaries and a command
//!   in turn and returns the command's status.

mod agent;
pub mod args;
mod check;
mod docs;
mod exec;
mod history;
mod keys;
mod progress;

use crate::config::{AgentName, Home};
use crate::custody;
use crate::repo::agent::Agent;
use crate::seal::keys::MasterKey;
use crate::{Error, Result, exit};
use args::{Cli, Command};
use std::io::Write;
use std::time::Duration;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli: Cli = match exit::start("sovseal") {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let args::Command::Exec(a) = cli.command {
        return match exec::exec(a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sovseal: exec: error: {e}");
                exit::code_for(&e)
            }
        };
    }
    match run(cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("sovseal: error: {e}");
            exit::code_for(&e)
        }
    }
}

pub(crate) fn master(home: &Home) -> Result<MasterKey> {
    custody::load(home, &custody::Custody::from_env()?)
}

/// A lazily restored data dir fetches what it lacks, in this process, from
/// `cli` (a command's `--remote`), else the remote it was restored from
/// (kept unless its URL holds a password), else the agent's configured
/// one; without one, reads of content not fetched yet fail and say so.
pub(crate) fn use_lazy_remote(home: &Home, name: &AgentName, cli: Option<&str>) {
    if !home
        .agent_dir(name)
        .join(crate::repo::lazy::LAZY_DIR)
        .exists()
        || (cli.is_none() && crate::repo::lazy::has_process_remote())
    {
        return;
    }
    let url = match cli.filter(|u| !u.is_empty()) {
        Some(u) => Ok(u.to_owned()),
        None => home
            .agent_data(name)
            .and_then(|d| crate::repo::lazy::remote_url(&d))
            .and_then(|u| match u {
                Some(u) => Ok(u),
                None => home.remote_for(name, None),
            }),
    };
    let res = url
        .and_then(|u| crate::repo::remote::Remote::open(&u))
        .and_then(|r| crate::repo::lazy::use_remote(r, crate::repo::lazy::DEFAULT_TIMEOUT));
    if let Err(e) = res {
        tracing::warn!("agent {name} was restored lazily; its remote does not open: {e}");
    }
}

/// The remote a command that changes the agent's remote copy acts on
/// (redact, prune, checkpoint): `--remote`, else the configured one, which
/// is refused when the agent's replicator last replicated elsewhere (a
/// mount given its own `--remote`): such a command must never report its
/// work done on a remote that does not hold the agent.
pub(crate) fn remote_to_change(home: &Home, a: &Agent, cli: Option<&str>) -> Result<String> {
    let url = home.remote_for(a.name(), cli)?;
    if cli.is_none()
        && let Some(last) = crate::repo::replication_state::ReplicationState::read(a)?.remote
        && !same_remote(&last, &url)
    {
        return Err(Error::Invalid(format!(
            "agent {} replicates to {}, not to the configured remote {}: name the remote with --remote",
            a.name(),
            crate::repo::remote::shown(&last),
            crate::repo::remote::shown(&url),
        )));
    }
    Ok(url)
}

/// Whether two remote URLs name the same place: equal but for the
/// password (one of them may be masked, in the user part or a `password=`
/// query) and a trailing `/` of the path.
fn same_remote(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let shown = crate::repo::remote::shown(u);
        match url::Url::parse(&shown) {
            Ok(mut p) => {
                let path = p.path().trim_end_matches('/').to_owned();
                p.set_path(&path);
                p.to_string()
            }
            Err(_) => shown,
        }
    };
    norm(a) == norm(b)
}

/// Opens an agent for writing (no mount may hold it): home, agent, lock.
pub(crate) fn open_writer(name: &str) -> Result<(Home, Agent, crate::repo::agent::WriteLock)> {
    let home = Home::from_env()?;
    let name = AgentName::new(name)?;
    let m = master(&home)?;
    use_lazy_remote(&home, &name, None);
    let (a, lock) = Agent::open_writer(&home, &name, &m, false)?;
    crate::history::redact::guard_lazy(&a, true)?;
    fill_history(&a)?;
    Ok((home, a, lock))
}

/// Opens an agent for reading, with its whole history: a flat start's
/// older history is fetched first ([`whole_history`]).
pub(crate) fn open_agent(name: &str) -> Result<(Home, Agent)> {
    let (home, a) = open_agent_as_is(name)?;
    if whole_history(&home, &a)? {
        // Opened again: this handle's remote index lacks the older part
        // indexes that came meanwhile.
        return open_agent_as_is(name);
    }
    Ok((home, a))
}

/// Opens an agent for reading as it is (`sovseal status`: also while a
/// flat start's older history is being fetched).
pub(crate) fn open_agent_as_is(name: &str) -> Result<(Home, Agent)> {
    let home = Home::from_env()?;
    let name = AgentName::new(name)?;
    let m = master(&home)?;
    use_lazy_remote(&home, &name, None);
    let a = Agent::open_readonly(&home, &name, &m)?;
    crate::history::redact::guard_lazy(&a, false)?;
    Ok((home, a))
}

/// How long a command waits for a mount to finish fetching a flat start's
/// older history.
const HISTORY_WAIT: Duration = Duration::from_secs(600);

/// Makes sure reader `a`'s index holds its whole history: a flat start's
/// older snapshots ([`crate::history::older`]) are fetched here when no
/// process holds the agent, else waited for (the mount that holds it
/// fetches them), up to [`HISTORY_WAIT`]. Their failure to check is the
/// error. Returns whether they came now (`a` must then be opened again
/// to read their content).
pub(crate) fn whole_history(home: &Home, a: &Agent) -> Result<bool> {
    if crate::history::older::pending(a)?.is_none() {
        return Ok(false);
    }
    let m = master(home)?;
    let until = std::time::Instant::now() + HISTORY_WAIT;
    let mut told = false;
    loop {
        // Fetched here whenever no process holds the agent (also when the
        // mount that was fetching it stopped); a holder's fetch that
        // stopped at a snapshot that does not check is the error.
        match Agent::open_writer(home, a.name(), &m, false) {
            Ok((w, _lock)) => {
                crate::history::redact::guard_lazy(&w, true)?;
                return fill_history(&w).map(|()| true);
            }
            Err(Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        let Some((from, failed)) = crate::history::older::pending(a)? else {
            return Ok(true);
        };
        refuse_failed(a, from, failed)?;
        if std::time::Instant::now() >= until {
            return Err(Error::Invalid(format!(
                "the history of agent {} before snapshot {from} is still being fetched by its mount (`sovseal status` shows it): try again later",
                a.name()
            )));
        }
        if !told {
            eprintln!(
                "waiting for the mount of agent {} to fetch its history before snapshot {from}",
                a.name()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error of a flat start's older history that did not check.
fn refuse_failed(a: &Agent, from: u64, failed: Option<String>) -> Result<()> {
    match failed {
        Some(why) => Err(Error::Invalid(format!(
            "the history of agent {} before snapshot {from} did not check: {why}",
            a.name()
        ))),
        None => Ok(()),
    }
}

/// Fetches a flat start's older history of writer `a` here, if it has one
/// to fetch.
pub(crate) fn fill_history(a: &Agent) -> Result<()> {
    // (One that did not check before is tried again.)
    let Some((from, _)) = crate::history::older::pending(a)? else {
        return Ok(());
    };
    let remote = crate::repo::lazy::process_remote().ok_or_else(|| {
        Error::Invalid(format!(
            "agent {} holds its history from snapshot {from} on only (restored lazily), and no remote is attached to fetch the rest",
            a.name()
        ))
    })?;
    eprintln!(
        "fetching the history of agent {} before snapshot {from} from {}",
        a.name(),
        remote.shown_url()
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    crate::repo::remote::runtime()?.block_on(crate::history::older::fill(a, &remote, &stop))
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let out: &mut dyn Write = &mut out;
    match cli.command {
        Command::Init(a) => agent::init(a, out),
        Command::Snapshots(a) => agent::snapshots(a, out),
        Command::Verify(a) => check::verify(a, out),
        Command::Checkpoint(a) => check::checkpoint(a, out),
        Command::Cat(a) => agent::cat(a, out),
        Command::Status(a) => agent::status(a, out),
        Command::Restore(a) => history::restore(a, out),
        Command::Diff(a) => history::diff(a, out),
        Command::Log(a) => history::log(a, out),
        Command::Rollback(a) => history::rollback(a, out),
        Command::Forget(a) => history::forget(a, out),
        Command::Prune(a) => history::prune(a, out),
        Command::Redact(a) => history::redact(a, out),
        Command::Key { cmd } => keys::key(cmd, out),
        Command::Ls(a) => agent::ls(a, out),
        Command::Reset(a) => agent::reset(a, out),
        Command::Takeover(a) => agent::takeover(a, out),
        Command::Exec(_) => unreachable!("run by main"),
        Command::Completions(a) => docs::completions(a, out),
        Command::Man(a) => docs::man(a, out),
    }
}

#[cfg(test)]
mod tests {
    use super::same_remote;

    #[test]
    fn a_remote_is_the_same_but_for_its_password_and_a_trailing_slash() {
        assert!(same_remote("file:///srv/remote/", "file:///srv/remote"));
        assert!(same_remote("s3://b/p", "s3://b/p/"));
        assert!(same_remote(
            "postgres://u:***@h/db?sslmode=require",
            "postgres://u:secret@h/db?sslmode=require"
        ));
        assert!(same_remote(
            "postgres:///db?host=/run/postgresql&user=a&password=***",
            "postgres:///db?host=/run/postgresql&user=a&password=s3cr3t"
        ));
        assert!(same_remote(
            "postgres://a:***@/db?host=/sock",
            "postgres://a:pw@/db?host=/sock"
        ));
        assert!(!same_remote("file:///srv/remote", "file:///srv/other"));
        assert!(!same_remote("s3://b/p", "s3://c/p"));
        assert!(!same_remote("postgres://u@h/db", "postgres://v@h/db"));
        assert!(!same_remote("postgres://u@h/a", "postgres://u@h/b"));
    }
}
