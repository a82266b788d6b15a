//! Running in the background: the detached child and its readiness
//! report, and where logs go.
//!
//! Without `--foreground`, `sovseal-mount` re-executes itself in the
//! foreground as a detached child with [`READY_ENV`] set; the child reports
//! `ready` or `error <code>: <message>` on its stdout and logs to
//! `$SOVSEAL_HOME/logs/<agent>.log`.

use crate::config::{AgentName, Home};
use crate::{Error, Result};
use std::io::{BufRead, BufReader};

/// Set in the detached child: report readiness on stdout.
pub const READY_ENV: &str = "SOVSEAL_MOUNT_REPORT";

/// The child's report of an error that ends it before readiness.
pub fn error_report(code: i32, e: &Error) -> String {
    format!("error {code}: {e}")
}

/// Parses a line written by [`error_report`].
fn parse_error_report(line: &str) -> Option<(i32, String)> {
    let rest = line.strip_prefix("error ")?;
    let (code, msg) = rest.split_once(": ")?;
    Some((code.parse().ok()?, msg.to_owned()))
}

/// Re-executes `sovseal-mount` in the foreground as a detached child and
/// waits for its report: `ready`, or its error with the exit code that
/// error maps to (so the parent exits as the daemon would have).
pub fn daemonize(home: &Home, agent: &AgentName) -> Result<()> {
    let logs = home.ensure()?.ensure_sub("logs")?;
    let log_path = logs.join(format!("{agent}.log"));
    let log = logs.open_file(
        format!("{agent}.log"),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_APPEND,
        0o600,
    )?;
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(READY_ENV, "1")
        // The parent reports readiness by exiting; a service manager
        // watching this process must not hear from the child instead.
        .env_remove(crate::mount::notify::NOTIFY_SOCKET)
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
        if let Some((code, message)) = parse_error_report(&line) {
            let _ = child.wait();
            return Err(Error::Daemon { code, message });
        }
    }
    let status = child.wait().map_err(|e| Error::io("child", e))?;
    Err(Error::Failed(format!(
        "the mount daemon exited ({status}) before the mount was ready; see {}",
        log_path.display()
    )))
}

/// Logs go to stderr as plain lines (the journal under systemd, else
/// `$SOVSEAL_HOME/logs/<agent>.log` for a background mount). Under journald
/// (`JOURNAL_STREAM` set) there is no timestamp: the journal adds its own.
pub fn init_logging(verbose: u8) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_round_trip() {
        let e = Error::Locked {
            agent: "a".into(),
            pid: 7,
            lock: "/x/lock".into(),
        };
        let line = error_report(crate::exit::code_for(&e), &e);
        let (code, msg) = parse_error_report(&line).unwrap();
        assert_eq!(code, crate::exit::LOCKED);
        assert_eq!(msg, e.to_string());
        assert_eq!(parse_error_report("ready"), None);
    }
}
