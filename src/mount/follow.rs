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
                let mut walk_due = false;
                loop {
                    step(
                        &fs,
                        &kernel,
                        &agent,
                        &remote,
                        &rt,
                        &mut state,
                        &mut walk_due,
                    );
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

/// One poll: pull, advance the mount, record what happened. `walk_due`:
/// a pull failed since the records were last carried out (it may have
/// taken in a redaction record, or committed snapshots whose content
/// written again it did not get to serve again), so the next pull that
/// ends is followed by a walk of what the records erase.
fn step(
    fs: &Fs,
    kernel: &Invalidator,
    agent: &Agent,
    remote: &Remote,
    rt: &tokio::runtime::Runtime,
    state: &mut FollowState,
    walk_due: &mut bool,
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
    let (moved, records, err) = match pulled {
        Ok(mut p) => {
            state.remote_head = p.remote_head;
            state.polled_at_ms = now_ms();
            state.remote = Some(remote.shown_url());
            let records = Records {
                forgotten: p.forgotten,
                redactions: p.redactions,
                erasing: restore::Erasing::after(&mut p),
            };
            (p.head > p.from, Some(records), p.stopped)
        }
        Err(e) => (false, None, Some(e)),
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
    if let Some(erasing) = to_carry_out(records, walk_due) {
        *walk_due = !carry_out(fs, kernel, agent, erasing);
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

/// The writer's records a pull that ended took in, and what it found
/// erasable.
struct Records {
    forgotten: usize,
    redactions: usize,
    erasing: restore::Erasing,
}

/// What a poll carries out, if anything, given the records its pull took
/// in (`None`: the pull failed). New records are carried out as the pull
/// found them. A failed pull may have taken in a redaction record, stored
/// forget rows, or committed snapshots whose content written again it did
/// not get to serve again: the next pull that ends is followed by a walk
/// (and a prune, when one is due: [`restore::carry_out_records`]). So is a
/// carrying out that failed (`walk_due` set by the caller).
fn to_carry_out(records: Option<Records>, walk_due: &mut bool) -> Option<restore::Erasing> {
    let Some(r) = records else {
        *walk_due = true;
        return None;
    };
    let due = std::mem::take(walk_due);
    if r.forgotten > 0 || r.redactions > 0 {
        Some(r.erasing)
    } else if due {
        Some(restore::Erasing::Find)
    } else {
        None
    }
}

/// Carries out new forget and redaction records of the writer while the
/// mount serves: what a redaction erased is refused at once (and leaves the
/// local packs), forgotten content is pruned, then, if what is served
/// changed, the kernel drops every page and attribute it cached, history
/// included, so that no erased byte is served from its cache either.
/// Returns false when it failed (to be tried again after the next poll).
fn carry_out(fs: &Fs, kernel: &Invalidator, agent: &Agent, erasing: restore::Erasing) -> bool {
    match restore::carry_out_records(agent, erasing) {
        Ok(restore::CarriedOut {
            erased,
            pruned,
            changed,
            ..
        }) => {
            if changed {
                kernel.invalidate(&fs.everything_cached());
            }
            if erased > 0 {
                tracing::info!("redaction: erased {erased} objects here, as the writer did");
            }
            if pruned > 0 {
                tracing::info!(
                    "retention: removed {pruned} objects of snapshots the writer forgot"
                );
            }
            true
        }
        // Reads of erased objects are refused already (the erasure comes
        // first); the packs are rewritten after the next poll.
        Err(e) => {
            tracing::warn!("following: carrying out the writer's records: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use restore::Erasing::{Find, Found};

    fn records(forgotten: usize, redactions: usize) -> Option<Records> {
        Some(Records {
            forgotten,
            redactions,
            erasing: Found(Default::default(), true),
        })
    }

    /// New records are carried out as the pull found them; nothing else
    /// is, until a pull fails: then the next one that ends is followed by
    /// a walk, once.
    #[test]
    fn a_failed_pull_is_followed_by_one_walk() {
        let mut due = false;
        assert!(to_carry_out(records(0, 0), &mut due).is_none());
        assert!(matches!(
            to_carry_out(records(0, 1), &mut due),
            Some(Found(..))
        ));
        assert!(matches!(
            to_carry_out(records(2, 0), &mut due),
            Some(Found(..))
        ));
        assert!(to_carry_out(None, &mut due).is_none());
        assert!(to_carry_out(None, &mut due).is_none());
        assert!(matches!(to_carry_out(records(0, 0), &mut due), Some(Find)));
        assert!(to_carry_out(records(0, 0), &mut due).is_none());
        // New records after a failure: carried out as found, and the walk
        // is no longer due (their pull walked).
        assert!(to_carry_out(None, &mut due).is_none());
        assert!(matches!(
            to_carry_out(records(0, 1), &mut due),
            Some(Found(..))
        ));
        assert!(to_carry_out(records(0, 0), &mut due).is_none());
    }
}
