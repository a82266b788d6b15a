//! Who writes an agent: the writer's heartbeat on the remote, and the
//! takeover that moves the writer to a follower's machine once the old one
//! is gone.
//!
//! A writer mount replaces `writer.json` on the remote every heartbeat
//! interval (a random id per mount, the time, its interval), and once more
//! when it stops with every snapshot replicated, saying so. A
//! takeover catches the follower's data dir up to the remote's head
//! (verified), then watches the remote for three of the writer's intervals
//! (at least `--quiet-secs`): a heartbeat that changes, or a snapshot that
//! appears, means the writer is alive, and the takeover is refused. The
//! heartbeat is advice, not the safety: a writer that comes back later, or
//! a remote that hides its heartbeat, is still stopped by the conditional
//! create of each envelope (whoever creates a number first wins; the other
//! sees a fork and stops replicating).

use crate::config::{AgentName, Home};
use crate::repo::agent::Agent;
use crate::repo::remote::Remote;
use crate::seal::keys::{AgentId, MasterKey};
use crate::{Error, Result};
use crossbeam_channel::{RecvTimeoutError, Sender, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a writer puts in its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// Random per writer mount.
    pub writer: String,
    /// When it was written (ms since the epoch, the writer's clock).
    pub at_ms: i64,
    /// How often the writer renews it, ms.
    pub interval_ms: u64,
    /// The writer's mount stopped cleanly (its last beat).
    #[serde(default)]
    pub stopped: bool,
}

/// Longest wait for one heartbeat put (an unmount waits for the last).
const PUT_TIMEOUT: Duration = Duration::from_secs(2);

/// The writer's heartbeat thread; stopped when dropped.
pub struct Heartbeats {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    clean: Arc<AtomicBool>,
}

impl Heartbeats {
    /// Renews `agent`'s heartbeat on `remote` every `interval`, first at
    /// once. A failed put is logged and tried again at the next interval.
    pub fn start(remote: Remote, agent: AgentId, interval: Duration) -> Result<Self> {
        let rt = crate::repo::remote::runtime()?;
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| Error::Custody(format!("random: {e}")))?;
        let writer = crate::hex::encode(&b);
        let (stop, stopped) = bounded::<()>(1);
        let clean = Arc::new(AtomicBool::new(false));
        let finished_clean = clean.clone();
        let thread = std::thread::Builder::new()
            .name("sovseal-heartbeat".into())
            .spawn(move || {
                let beat = |stopped: bool| {
                    let beat = Heartbeat {
                        writer: writer.clone(),
                        at_ms: crate::time::now_ms(),
                        interval_ms: interval.as_millis() as u64,
                        stopped,
                    };
                    let json = serde_json::to_vec(&beat).expect("plain struct serializes");
                    let put = rt.block_on(async {
                        tokio::time::timeout(PUT_TIMEOUT, remote.put_heartbeat(&agent, json)).await
                    });
                    match put {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!("heartbeat: {e}"),
                        Err(_) => tracing::debug!("heartbeat: no answer within {PUT_TIMEOUT:?}"),
                    }
                };
                loop {
                    beat(false);
                    // A message or a dropped sender: stop, with a last beat
                    // that says so if the writer left nothing behind.
                    if !matches!(
                        stopped.recv_timeout(interval),
                        Err(RecvTimeoutError::Timeout)
                    ) {
                        if finished_clean.load(Ordering::Acquire) {
                            beat(true);
                        }
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("heartbeat thread", e))?;
        Ok(Heartbeats {
            stop: Some(stop),
            thread: Some(thread),
            clean,
        })
    }

    /// Stops beating. `clean`: every snapshot of this writer is on the
    /// remote, so a last beat says it stopped and a takeover need not wait
    /// out its intervals. Otherwise it just falls silent, as a killed
    /// writer does.
    pub fn finish(self, clean: bool) {
        self.clean.store(clean, Ordering::Release);
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest heartbeat interval a writer mount takes (`--heartbeat-secs`).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// The least time a takeover watches the remote when the writer left no
/// heartbeat to say how often it beats.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(30);

/// Makes this machine's copy of `name` ready to be its writer once the old
/// writer is gone: restores it (verified) if there is no local data, or
/// catches it up to the remote's head, then watches the remote for
/// `max(quiet, 3 x the writer's heartbeat interval)` (just `quiet` after a
/// writer that stopped cleanly, at least [`DEFAULT_QUIET`] when it left no
/// heartbeat). Refused
/// ([`Error::WriterAlive`]) if the heartbeat is renewed or a snapshot
/// appears meanwhile, and if a mount holds the local data ([`Error::Locked`]).
/// Returns the head this machine now writes on from.
pub fn takeover(
    home: &Home,
    name: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    quiet: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<u64> {
    let rt = crate::repo::remote::runtime()?;
    if crate::repo::agent::discard_stopped_restore(home, name)? {
        progress("a restore that stopped before it finished is started over");
    }
    if !home.has_agent(name) {
        progress("restoring from the remote");
        rt.block_on(crate::history::restore::restore(
            home,
            name,
            master,
            remote,
            |_, _| {},
        ))?;
    }
    if home
        .agent_dir(name)
        .join(crate::repo::lazy::LAZY_DIR)
        .exists()
    {
        // A takeover pulls what the old writer added and checks it against
        // what is stored here.
        return Err(Error::Invalid(format!(
            "agent {name} was restored lazily here (its content stays on the remote until read): a takeover needs all of it; remove its data dir (sovseal reset) and run the takeover again to restore it whole"
        )));
    }
    let (agent, _lock) = Agent::open_writer(home, name, master, false)?;
    let id = agent.repo().keys().agent_id();
    let mut pulled = catch_up(&rt, &agent, remote)?;
    let head = pulled.head;
    // The new writer holds nothing the old one erased.
    if !crate::history::restore::carry_out_records(
        &agent,
        crate::history::restore::Erasing::after(&mut pulled),
    )?
    .exact
    {
        return Err(Error::Failed(format!(
            "cannot tell which objects the writer's redactions erased here (see the log); a new writer would keep them: run `sovseal verify --agent {name}` and take over once it passes"
        )));
    }
    let first = rt.block_on(remote.get_heartbeat(&id))?;
    let beat: Option<Heartbeat> = first
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok());
    let wait = match &beat {
        None => quiet.max(DEFAULT_QUIET),
        // Its mount stopped cleanly: only a restart would show now.
        Some(b) if b.stopped => quiet,
        // Capped at the longest interval a mount accepts: the file is not
        // signed, and a forged one must not hold a takeover for ever.
        Some(b) => quiet.max(Duration::from_millis(
            b.interval_ms.min(MAX_INTERVAL_MS).saturating_mul(3),
        )),
    };
    progress(&format!(
        "at snapshot {head}; watching the remote {} for {} s for a live writer",
        remote.shown_url(),
        wait.as_secs_f64().ceil()
    ));
    std::thread::sleep(wait);
    let second = rt.block_on(remote.get_heartbeat(&id))?;
    let alive = |evidence: String| Error::WriterAlive {
        agent: name.to_string(),
        evidence,
    };
    if second != first {
        return Err(alive(format!(
            "its heartbeat was renewed within {} s",
            wait.as_secs_f64().ceil()
        )));
    }
    let newer = rt.block_on(remote.list_envelopes(&id, head, 1))?;
    if let Some(s) = newer.first() {
        return Err(alive(format!("snapshot {s} appeared on the remote")));
    }
    Ok(head)
}

/// Pulls everything the remote holds; fails unless all of it verified.
fn catch_up(
    rt: &tokio::runtime::Runtime,
    agent: &Agent,
    remote: &Remote,
) -> Result<crate::history::restore::Pulled> {
    let mut p = rt.block_on(crate::history::restore::pull(agent, remote))?;
    if let Some(e) = p.stopped.take() {
        return Err(e);
    }
    Ok(p)
}
