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

use crate::repo::agent::Agent;
use crate::{Error, Result};
use crossbeam_channel::{Receiver, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The fetching thread; stopped when dropped.
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
        let agent = Arc::downgrade(agent);
        let stop = Arc::new(AtomicBool::new(false));
        let (finished, done) = bounded::<()>(1);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sovseal-warm".into())
            .spawn(move || {
                let _finished = finished;
                let Some(agent) = agent.upgrade() else {
                    return;
                };
                let t = Instant::now();
                let res = agent.head().and_then(|h| h.fetch_metadata(&stopping));
                drop(agent);
                match res {
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
            .map_err(|e| Error::io("metadata thread", e))?;
        Ok(Warmer {
            stop,
            done,
            thread: Some(thread),
        })
    }
}

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
