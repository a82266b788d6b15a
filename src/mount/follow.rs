//! A follower mount (`sovseal-mount --follow`): a read-only view of an
//! agent written on another machine, advancing to each snapshot the writer
//! replicates.
//!
//! One thread polls the remote every interval. Each poll fetches and
//! verifies the new snapshots into the local data dir
//! ([`crate::history::restore::pull`]), then the mount shows the new head at
//! once ([`Fs::advance`]) and the kernel drops what it cached of the old
//! one. A remote that fails verification (tampered, forked, rolled back)
//! stops the follower from advancing for good: the last verified snapshot
//! stays served, and the error is logged and recorded for `sovseal status`.
//! A remote that cannot be reached is retried at the next poll. The
//! writer's new forget and redaction records are carried out while the
//! mount serves: erased content is refused at once and the kernel drops
//! what it cached. The follower never writes to the remote.

use crate::history::restore;
use crate::mount::fs::Fs;
use crate::mount::fuse::Invalidator;
use crate::repo::agent::Agent;
use crate::repo::remote::Remote;
use crate::repo::replication_state::FollowState;
use crate::time::now_ms;
use crate::{Error, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The polling thread; stopped when dropped.
pub struct Follower {
    stop: Option<Sender<()>>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// How long a stopping mount waits for a poll in flight before it leaves
/// the thread behind (the process is about to exit; what the poll had not
/// committed is cut back at the next open, like any unclean stop).
const STOP_WAIT: Duration = Duration::from_secs(2);

impl Follower {
    /// Starts following `remote` every `poll` for the mount `fs` served by
    /// `kernel`; `agent` is the mount's agent.
    pub fn start(
        fs: Arc<Fs>,
        kernel: Invalidator,
        agent: Arc<Agent>,
        remote: Remote,
        poll: Duration,
    ) -> Result<Self> {
        let rt = crate::repo::remote::runtime()?;
        let (stop, stopped) = bounded::<()>(1);
        let (finished, done) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sovseal-follow".into())
            .spawn(move || {
                let _finished = finished;
                let mut state = FollowState::read(&agent).ok().flatten().unwrap_or_default();
                // A stall recorded by an earlier run is judged again: the
                // first poll re-verifies what the remote holds.
                state.stalled = false;
                loop {
                    step(&fs, &kernel, &agent, &remote, &rt, &mut state);
                    if state.stalled {
                        let _ = stopped.recv();
                        return;
                    }
                    // A message or a dropped sender: stop.
                    if !matches!(stopped.recv_timeout(poll), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("follow thread", e))?;
        Ok(Follower {
            stop: Some(stop),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        drop(self.stop.take());
        // The thread drops its end of `done` as it returns.
        if let Err(RecvTimeoutError::Disconnected) = self.done.recv_timeout(STOP_WAIT) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::warn!("following: a poll is still waiting for the remote; not waiting for it");
        }
    }
}

/// Longest time one poll may take before it counts as failed (and is
/// retried at the next poll).
const POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// One poll: pull, advance the mount, record what happened.
fn step(
    fs: &Fs,
    kernel: &Invalidator,
    agent: &Agent,
    remote: &Remote,
    rt: &tokio::runtime::Runtime,
    state: &mut FollowState,
) {
    let pulled = rt.block_on(async {
        tokio::time::timeout(POLL_TIMEOUT, restore::pull(agent, remote))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Failed(format!(
                    "no answer within {} s",
                    POLL_TIMEOUT.as_secs()
                )))
            })
    });
    let (moved, records, known, err) = match pulled {
        Ok(p) => {
            state.remote_head = p.remote_head;
            state.polled_at_ms = now_ms();
            state.remote = Some(remote.shown_url());
            (
                p.head > p.from,
                (p.forgotten, p.redactions),
                p.erasable,
                p.stopped,
            )
        }
        Err(e) => (false, (0, 0), None, Some(e)),
    };
    // What was pulled is whole and verified, even if the pull then
    // stopped: show it.
    if moved {
        match fs.advance() {
            Ok(Some(a)) => {
                kernel.invalidate(&a.invalidate);
                fs.publish(a.to);
                tracing::info!("following: snapshot {} (was {})", a.to, a.from);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("following: cannot show the new head: {e}");
                state.error = Some(e.to_string());
                state.stalled = true;
            }
        }
    }
    if records != (0, 0) {
        // The erasures in force were found at the start and kept current
        // by each pull: walked again only when a new redaction came in.
        let erasing = if records.1 > 0 {
            restore::Erasing::after(known)
        } else {
            restore::Erasing::Unchanged
        };
        carry_out(fs, kernel, agent, records.0 > 0, erasing);
    }
    match err {
        None if !state.stalled => state.error = None,
        None => {}
        Some(e) if e.is_integrity() => {
            tracing::error!(
                "following {}: the remote does not verify; staying at the last verified snapshot: {e}",
                remote.shown_url()
            );
            state.error = Some(e.to_string());
            state.stalled = true;
        }
        Some(e) => {
            tracing::warn!("following {}: {e}; retrying", remote.shown_url());
            state.error = Some(e.to_string());
        }
    }
    if let Err(e) = state.write(agent) {
        tracing::warn!("following: cannot record the follower's state: {e}");
    }
}

/// Carries out new forget and redaction records of the writer while the
/// mount serves: what a redaction erased is refused at once (and leaves the
/// local packs), forgotten content is pruned (`prune`), then the kernel
/// drops every page and attribute it cached, history included, so that no
/// erased byte is served from its cache either.
fn carry_out(fs: &Fs, kernel: &Invalidator, agent: &Agent, prune: bool, erasing: restore::Erasing) {
    match restore::carry_out_records(agent, prune, erasing) {
        Ok(restore::CarriedOut { erased, pruned, .. }) => {
            kernel.invalidate(&fs.everything_cached());
            if erased > 0 {
                tracing::info!("redaction: erased {erased} objects here, as the writer did");
            }
            if pruned > 0 {
                tracing::info!(
                    "retention: removed {pruned} objects of snapshots the writer forgot"
                );
            }
        }
        // Reads of erased objects are refused already (the erasure comes
        // first); the packs are rewritten at the next start.
        Err(e) => tracing::warn!("following: carrying out the writer's records: {e}"),
    }
}
