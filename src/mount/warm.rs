//! The head's metadata fetched ahead in a lazily restored data dir (#16).
//!
//! A lazily restored data dir fetches each object on first use: a lookup
//! or a listing of a fresh machine's mount waits one round trip per inode
//! page and directory node on its path. Once a mount of such a data dir
//! serves (the first after the restore, and every later one: what is
//! already here then costs a local walk), this thread
//! fetches the head's page map, inode pages, directory nodes and chunk
//! lists level by level, each level together
//! ([`crate::repo::view::SnapshotView::fetch_metadata`]), so that browsing
//! soon waits for no round trip. File content stays on the remote until
//! read. A failure (the remote gone) only ends it: what it did not fetch
//! is fetched on first use, as before.
//!
//! Also here, the same kind of thread for a flat start's older history
//! ([`Warmer::older_history`], [`crate::history::older`]): started when the
//! mount opens the agent, before it serves, so that a read of an object
//! stored before the checkpoint waits for its part index instead of
//! failing.

use crate::repo::agent::Agent;
use crate::repo::remote::Remote;
use crate::{Error, Result};
use crossbeam_channel::{Receiver, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A fetching thread; stopped when dropped.
pub struct Warmer {
    stop: Arc<AtomicBool>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// How long a stopping mount waits for a batch in flight before it leaves
/// the thread behind (the process is about to exit).
const STOP_WAIT: Duration = Duration::from_secs(2);

impl Warmer {
    /// Starts fetching the head's metadata of `agent` (it holds the agent
    /// only while it works: the mount's end does not wait for it).
    pub fn start(agent: &Arc<Agent>) -> Result<Self> {
        Self::spawn("sovseal-warm", agent, |agent, stopping| {
            let t = Instant::now();
            match agent.head().and_then(|h| h.fetch_metadata(stopping)) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "lazy restore: the head's metadata fetched ahead: {n} objects in {} ms",
                    t.elapsed().as_millis()
                ),
                Err(e) => tracing::info!(
                    "lazy restore: the head's metadata not all fetched ahead ({e}): the rest is fetched on first use"
                ),
            }
        })
    }

    /// Starts fetching the history before a flat start of `agent` from
    /// `remote` ([`crate::history::older::fill`]), when it has one to
    /// fetch: reads of objects without a place wait for it from now on. A
    /// remote (or disk) that fails is tried again every 5 s; a snapshot
    /// that does not check ends it.
    pub fn older_history(agent: &Arc<Agent>, remote: Remote) -> Result<Option<Self>> {
        let Some((from, _)) = crate::history::older::pending(agent)? else {
            return Ok(None);
        };
        if let Some(l) = agent.repo().lazy() {
            l.set_filling(true);
        }
        let w = Self::spawn("sovseal-history", agent, move |agent, stopping| {
            let t = Instant::now();
            let rt = match crate::repo::remote::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    stop_waiting(agent);
                    return tracing::error!("older history: {e}");
                }
            };
            loop {
                match rt.block_on(crate::history::older::fill(agent, &remote, stopping)) {
                    Ok(()) if stopping.load(Ordering::Relaxed) => return,
                    Ok(()) => {
                        return tracing::info!(
                            "older history: the {} snapshots before {from} fetched and checked in {} ms",
                            from - 1,
                            t.elapsed().as_millis()
                        );
                    }
                    Err(e) if crate::history::older::worth_retrying(&e) => {
                        tracing::warn!("older history: {e}; trying again in {} s", RETRY.as_secs());
                        let until = Instant::now() + RETRY;
                        while Instant::now() < until {
                            if stopping.load(Ordering::Relaxed) {
                                return stop_waiting(agent);
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    Err(e) => {
                        return tracing::error!(
                            "older history: stopped ({e}): the snapshots before it are not served"
                        );
                    }
                }
            }
        })?;
        Ok(Some(w))
    }

    /// Runs `work` on a thread named `name` with `agent` (held only while
    /// it works) and the stop flag.
    fn spawn(
        name: &str,
        agent: &Arc<Agent>,
        work: impl FnOnce(&Agent, &AtomicBool) + Send + 'static,
    ) -> Result<Self> {
        let agent = Arc::downgrade(agent);
        let stop = Arc::new(AtomicBool::new(false));
        let (finished, done) = bounded::<()>(1);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _finished = finished;
                if let Some(agent) = agent.upgrade() {
                    work(&agent, &stopping);
                }
            })
            .map_err(|e| Error::io(name, e))?;
        Ok(Warmer {
            stop,
            done,
            thread: Some(thread),
        })
    }
}

/// Reads stop waiting for the older history (its thread ends without it).
fn stop_waiting(agent: &Agent) {
    if let Some(l) = agent.repo().lazy() {
        l.set_filling(false);
    }
}

/// How long the older history's thread waits before it asks a failing
/// remote again.
const RETRY: Duration = Duration::from_secs(5);

impl Warmer {
    /// Asks the thread to stop after the batch in flight (a mount stopping
    /// on a signal asks before its last commit, and waits for it after).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.stop();
        // Finished (or its sender dropped): joined; else left behind.
        if !matches!(
            self.done.recv_timeout(STOP_WAIT),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        ) && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}
