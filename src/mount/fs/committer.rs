//! Group commit: one thread turns commit requests into snapshots, and
//! snapshots into durable ones.
//!
//! Two steps, kept apart (DESIGN.md, invariant 3):
//! - **seal**: the overlay becomes the next snapshot, written to the packs
//!   and the index in the page cache. It survives a crash of the daemon.
//!   `commit_sync` (close of a written file) returns once a seal that
//!   started after the request is done; requests that arrive while a
//!   commit runs share the next one. `commit_soon` (metadata-only changes)
//!   asks for a seal after a quiet period, pushed back by further changes
//!   but never beyond `max_delay` after the first.
//! - **barrier**: every sealed snapshot made durable against a power cut
//!   (the packs synced: one disk sync, since they hold each snapshot's
//!   commit record; the durable point recorded after, without a sync).
//!   `commit_durable` (fsync, fdatasync, fsyncdir, unmount, and close with
//!   `durable_close`) returns once a seal and then a barrier's disk sync
//!   that started after the request are done; every waiter that arrives
//!   meanwhile shares the next barrier. Without being asked, a barrier
//!   runs `interval` after the first snapshot that is not durable yet.
//!
//! A seal leaves the snapshot's index rows to a flush (`repo`'s module
//! doc), which this thread runs [`FLUSH_AFTER`] the first one waits, so
//! that the index read by other processes (the CLI beside the mount)
//! follows within that. The durable point (unsynced, like the rows) is
//! recorded with that flush too, once for every barrier meanwhile: a
//! stream of fsyncs pays one index transaction per flush, not one per
//! fsync. Only when durable waiters also wait for replication does each
//! barrier record its point (and the rows) before it answers them.
//!
//! A second thread checkpoints the index's WAL into its database a moment
//! after commits, on a connection of its own, so that SQLite's checkpoint
//! (a copy and two disk syncs) does not land inside about one commit in a
//! hundred and hold up the close or fsync waiting for it.

use crate::engine::Engine;
use crate::mount::metrics::Metrics;
use crate::{Error, Result};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Seal requests so far, and the last one served (`ok`: succeeded).
    requested: u64,
    done: u64,
    ok: u64,
    /// Barrier requests, by the seal request count they cover.
    durable_requested: u64,
    durable_done: u64,
    durable_ok: u64,
    /// Quiet-period seal: (first request, due).
    soon: Option<(Instant, Instant)>,
    /// When the oldest snapshot that is not durable yet was sealed.
    undurable_since: Option<Instant>,
    /// When the oldest snapshot whose index rows are not written was sealed.
    unindexed_since: Option<Instant>,
    /// The newest head a barrier synced whose durable point is not recorded
    /// yet ([`Config::release_at_sync`]).
    unrecorded: Option<Synced>,
    last_error: Option<String>,
    commits: u64,
    barriers: u64,
    stop: bool,
}

/// A head on stable storage whose durable point waits to be recorded.
#[derive(Clone, Copy)]
struct Synced {
    seq: u64,
    hash: [u8; 32],
    /// When the first barrier whose durable point waits synced.
    since: Instant,
}

/// Called after every commit that made a snapshot.
pub type OnCommit = Arc<dyn Fn(&crate::engine::CommitInfo) + Send + Sync>;
/// Called with the sequence number now durable once its durable point is
/// recorded: after a barrier, or after the record that follows the
/// barriers since the last one ([`Config::release_at_sync`]).
pub type OnDurable = Arc<dyn Fn(u64) + Send + Sync>;

/// What the commit thread is told.
#[derive(Clone, Copy)]
pub struct Config {
    /// Quiet period after metadata-only changes.
    pub quiet: Duration,
    /// Longest delay of a metadata-only change under continuous activity.
    pub max_delay: Duration,
    /// Longest time a sealed snapshot waits for a barrier.
    pub interval: Duration,
    /// Durable waiters are released once the disk sync returns, and the
    /// durable point is recorded (and [`OnDurable`] told) with the next
    /// index flush, about [`FLUSH_AFTER`] after the sync: once for every
    /// barrier meanwhile. Off when a waiter also waits for what
    /// `OnDurable` starts (replication with `sync_replication`): each
    /// barrier then records its durable point before it answers, and one
    /// whose index write fails fails its waiters rather than leaving them
    /// waiting for an upload that the missing durable point holds back.
    pub release_at_sync: bool,
}

/// The durable waiters a barrier answers: the barrier request count they
/// are at, and whether the seal covering them succeeded.
#[derive(Clone, Copy)]
struct Release {
    target: u64,
    sealed: bool,
}

impl Release {
    /// Answers the waiters: they succeed if their seal and `ok` did.
    fn answer(self, st: &mut State, ok: bool) {
        st.durable_done = st.durable_done.max(self.target);
        if self.sealed && ok {
            st.durable_ok = st.durable_ok.max(self.target);
        }
    }
}

/// How long the checkpoint thread lets commits gather before it
/// checkpoints what they wrote.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// How long a sealed snapshot's index rows, and the durable point of a
/// barrier that released its waiters at the sync, wait before this thread
/// writes them (with every other snapshot's and barrier's waiting then).
pub const FLUSH_AFTER: Duration = Duration::from_millis(25);

/// The commit thread and its request state.
pub struct Committer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The WAL checkpoint thread; it ends after the commit thread.
    checkpoints: Mutex<Option<JoinHandle<()>>>,
    quiet: Duration,
    max_delay: Duration,
}

impl Committer {
    /// Starts the thread.
    pub fn start(
        engine: Arc<RwLock<Engine>>,
        config: Config,
        on_commit: Option<OnCommit>,
        on_durable: Option<OnDurable>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        // Without a checkpointer the index checkpoints inline, as before.
        let (nudge, checkpoints) = match checkpointer(&engine) {
            Some(c) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let t = std::thread::Builder::new()
                    .name("sovseal-wal".into())
                    .spawn(move || checkpoint_loop(&c, &rx))
                    .expect("spawn checkpoint thread");
                (Some(tx), Some(t))
            }
            None => (None, None),
        };
        let thread = std::thread::Builder::new()
            .name("sovseal-commit".into())
            .spawn(move || {
                run(
                    &s,
                    &engine,
                    &config,
                    on_commit.as_ref(),
                    on_durable.as_ref(),
                    &metrics,
                    nudge.as_ref(),
                )
            })
            .expect("spawn commit thread");
        Committer {
            shared,
            thread: Mutex::new(Some(thread)),
            checkpoints: Mutex::new(checkpoints),
            quiet: config.quiet,
            max_delay: config.max_delay,
        }
    }

    /// Seals everything changed so far into a snapshot; returns once it
    /// would survive a crash of the daemon (not yet a power cut).
    pub fn commit_sync(&self) -> Result<()> {
        self.request(false)
    }

    /// Seals everything changed so far and makes it durable; returns once
    /// it is on stable storage.
    pub fn commit_durable(&self) -> Result<()> {
        self.request(true)
    }

    fn request(&self, durable: bool) -> Result<()> {
        let (m, cv) = &*self.shared;
        let mut st = m.lock().expect("committer");
        if st.stop {
            return Err(Error::Fs {
                op: "commit after unmount",
                errno: libc::EIO,
            });
        }
        st.requested += 1;
        let want = st.requested;
        if durable {
            st.durable_requested = want;
        }
        cv.notify_all();
        let (done, ok) = loop {
            let (done, ok) = if durable {
                (st.durable_done, st.durable_ok)
            } else {
                (st.done, st.ok)
            };
            if done >= want || st.stop {
                break (done, ok);
            }
            st = cv.wait(st).expect("committer");
        };
        if done >= want && ok >= want {
            Ok(())
        } else {
            Err(Error::Fs {
                op: "commit",
                errno: libc::EIO,
            })
        }
    }

    /// Asks for a commit after the quiet period.
    pub fn commit_soon(&self) {
        let (m, cv) = &*self.shared;
        let mut st = m.lock().expect("committer");
        let now = Instant::now();
        let first = st.soon.map_or(now, |(f, _)| f);
        let at = (now + self.quiet).min(first + self.max_delay);
        st.soon = Some((first, at));
        cv.notify_all();
    }

    /// The last commit error, if the latest commit or barrier failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.0.lock().expect("committer").last_error.clone()
    }

    /// Snapshots made by this committer so far.
    pub fn commits(&self) -> u64 {
        self.shared.0.lock().expect("committer").commits
    }

    /// Barriers (disk syncs of the packs) run by this committer so far.
    pub fn barriers(&self) -> u64 {
        self.shared.0.lock().expect("committer").barriers
    }

    /// Commits what is pending, makes it durable and stops the thread. Once
    /// stopped, further calls do nothing and succeed (the first call
    /// reported the outcome).
    pub fn shutdown(&self) -> Result<()> {
        if self.shared.0.lock().expect("committer").stop {
            return Ok(());
        }
        let r = self.commit_durable();
        {
            let (m, cv) = &*self.shared;
            m.lock().expect("committer").stop = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.lock().expect("committer thread").take() {
            let _ = t.join();
        }
        // The commit thread dropped its end of the nudges: this one makes a
        // last checkpoint and ends.
        if let Some(t) = self.checkpoints.lock().expect("checkpoint thread").take() {
            let _ = t.join();
        }
        r
    }
}

/// The index's checkpointer, if one can be opened (else SQLite goes on
/// checkpointing inside commits, and the mount says so).
fn checkpointer(engine: &RwLock<Engine>) -> Option<crate::repo::index::Checkpointer> {
    let agent = engine.read().expect("engine lock").shared_agent();
    match agent.wal_checkpointer() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("WAL checkpoints stay inside commits: {e}");
            None
        }
    }
}

/// Checkpoints the WAL [`CHECKPOINT_AFTER`] a commit, once for all the
/// commits made meanwhile, until the commit thread ends; then once more.
fn checkpoint_loop(c: &crate::repo::index::Checkpointer, nudges: &crossbeam_channel::Receiver<()>) {
    let run = || match c.run() {
        Ok(Some((frames, copied))) => tracing::trace!(frames, copied, "WAL checkpoint"),
        Ok(None) => tracing::trace!("WAL checkpoint skipped: a commit was in the way"),
        Err(e) => tracing::warn!("WAL checkpoint failed (retried after the next commit): {e}"),
    };
    while nudges.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_AFTER);
        while nudges.try_recv().is_ok() {}
        run();
    }
    run();
}

impl Drop for Committer {
    fn drop(&mut self) {
        if self.thread.lock().expect("committer thread").is_some() {
            let _ = self.shutdown();
        }
    }
}

fn run(
    shared: &(Mutex<State>, Condvar),
    engine: &RwLock<Engine>,
    config: &Config,
    on_commit: Option<&OnCommit>,
    on_durable: Option<&OnDurable>,
    metrics: &Metrics,
    nudge: Option<&crossbeam_channel::Sender<()>>,
) {
    let (m, cv) = shared;
    let mut st = m.lock().expect("committer");
    loop {
        if st.stop {
            // The last barrier's durable point is recorded before the end.
            if st.unrecorded.is_some() {
                drop(record_synced(st, shared, engine, (on_durable, nudge)).0);
            }
            return;
        }
        let now = Instant::now();
        // Work that is due comes first, so that a stream of seal requests
        // never puts off a barrier or a flush past its time.
        let barrier_due = st.undurable_since.map(|t| t + config.interval);
        if barrier_due.is_some_and(|t| t <= now) {
            st = barrier(st, shared, engine, config, (on_durable, nudge), None);
            cv.notify_all();
            continue;
        }
        let flush_due = [st.unindexed_since, st.unrecorded.map(|s| s.since)]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + FLUSH_AFTER);
        if flush_due.is_some_and(|t| t <= now) {
            if st.unrecorded.is_some() {
                // The durable point, with the index rows waiting.
                st = record_synced(st, shared, engine, (on_durable, nudge)).0;
                cv.notify_all();
                continue;
            }
            st.unindexed_since = None;
            drop(st);
            let agent = engine.read().expect("engine lock").shared_agent();
            match agent.repo().flush() {
                // What it wrote is checkpointed a moment later.
                Ok(()) => {
                    if let Some(n) = nudge {
                        let _ = n.try_send(());
                    }
                }
                // Left for the next record or barrier, which reports it.
                Err(e) => tracing::warn!("index rows of sealed snapshots not written yet: {e}"),
            }
            st = m.lock().expect("committer");
            continue;
        }
        let due = st.soon.is_some_and(|(_, at)| at <= now);
        if st.requested > st.done || due {
            let target = st.requested;
            let durable_target = st.durable_requested;
            st.soon = None;
            drop(st);
            let t0 = Instant::now();
            let res = engine.write().expect("engine lock").commit();
            match &res {
                Ok(Some(info)) => {
                    metrics.commit(t0.elapsed(), true);
                    tracing::debug!(
                        seq = info.seq,
                        inodes = info.inodes.len(),
                        micros = t0.elapsed().as_micros() as u64,
                        "committed"
                    );
                }
                Ok(None) => {}
                Err(_) => metrics.commit(t0.elapsed(), false),
            }
            if let (Ok(Some(info)), Some(f)) = (&res, on_commit) {
                f(info);
            }
            if let (Ok(Some(_)), Some(n)) = (&res, nudge) {
                let _ = n.try_send(());
            }
            st = m.lock().expect("committer");
            match res {
                Ok(made) => {
                    st.ok = target;
                    st.last_error = None;
                    st.commits += u64::from(made.is_some());
                    if made.is_some() {
                        let now = Instant::now();
                        st.undurable_since.get_or_insert(now);
                        st.unindexed_since.get_or_insert(now);
                    }
                }
                Err(e) => {
                    tracing::error!("commit failed: {e}");
                    st.last_error = Some(e.to_string());
                }
            }
            st.done = target;
            cv.notify_all();
            if durable_target > st.durable_done {
                // The waiters succeed when the seal covering them and the
                // barrier after it both did; the barrier releases them.
                let release = Release {
                    target: durable_target,
                    sealed: st.ok >= durable_target,
                };
                st = barrier(
                    st,
                    shared,
                    engine,
                    config,
                    (on_durable, nudge),
                    Some(release),
                );
                cv.notify_all();
            }
            continue;
        }
        let wake = [st.soon.map(|(_, at)| at), barrier_due, flush_due]
            .into_iter()
            .flatten()
            .min();
        st = match wake {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                cv.wait_timeout(st, wait).expect("committer").0
            }
            None => cv.wait(st).expect("committer"),
        };
    }
}

/// Makes every snapshot sealed so far durable, without holding the engine
/// while the disk works (FUSE requests go on; only this thread seals).
/// `release`: the durable waiters it answers. With
/// [`Config::release_at_sync`] they are released as soon as the disk sync
/// returns, and the durable point (unsynced, so a power cut after the reply
/// loses nothing the packs do not give back) is left to [`record_synced`]
/// with the next index flush; otherwise it is recorded first, and they are
/// answered once all of it succeeded or failed.
fn barrier<'a>(
    mut st: std::sync::MutexGuard<'a, State>,
    shared: &'a (Mutex<State>, Condvar),
    engine: &RwLock<Engine>,
    config: &Config,
    (on_durable, nudge): (Option<&OnDurable>, Option<&crossbeam_channel::Sender<()>>),
    release: Option<Release>,
) -> std::sync::MutexGuard<'a, State> {
    st.undurable_since = None;
    drop(st);
    let (agent, seq, hash) = {
        let e = engine.read().expect("engine lock");
        let (agent, head) = e.durability_point();
        (agent, head.seq(), head.hash())
    };
    let sync = agent.sync_packs();
    let mut st = shared.0.lock().expect("committer");
    st.barriers += 1;
    match &sync {
        Ok(()) => {
            clear_error(&mut st, BARRIER_FAILED);
            let since = st.unrecorded.map_or_else(Instant::now, |s| s.since);
            st.unrecorded = Some(Synced { seq, hash, since });
        }
        Err(e) => report_error(&mut st, format!("{BARRIER_FAILED}: {e}")),
    }
    if config.release_at_sync || sync.is_err() {
        if let Some(r) = release {
            r.answer(&mut st, sync.is_ok());
        }
        return st;
    }
    let (mut st, recorded) = record_synced(st, shared, engine, (on_durable, nudge));
    if let Some(r) = release {
        r.answer(&mut st, recorded);
    }
    st
}

/// Records the durable point of the newest head a barrier synced (with
/// every index row waiting), then tells [`OnDurable`]; whether it
/// succeeded (nothing to record is a success).
fn record_synced<'a>(
    mut st: std::sync::MutexGuard<'a, State>,
    shared: &'a (Mutex<State>, Condvar),
    engine: &RwLock<Engine>,
    (on_durable, nudge): (Option<&OnDurable>, Option<&crossbeam_channel::Sender<()>>),
) -> (std::sync::MutexGuard<'a, State>, bool) {
    let Some(Synced { seq, hash, .. }) = st.unrecorded.take() else {
        return (st, true);
    };
    st.unindexed_since = None;
    drop(st);
    let agent = engine.read().expect("engine lock").shared_agent();
    let res = agent.record_durable(seq, &hash);
    if res.is_ok() {
        if let Some(f) = on_durable {
            f(seq);
        }
        // What it wrote is checkpointed a moment later.
        if let Some(n) = nudge {
            let _ = n.try_send(());
        }
    }
    let mut st = shared.0.lock().expect("committer");
    let recorded = res.is_ok();
    match res {
        Ok(()) => clear_error(&mut st, RECORD_FAILED),
        Err(e) => report_error(&mut st, format!("{RECORD_FAILED}: {e}")),
    }
    (st, recorded)
}

/// How the last error starts when a barrier's disk sync failed, and when
/// recording a durable point did. Each is cleared by its own step's next
/// success only: a record of an earlier sync must not clear a later
/// sync's failure. (A seal that succeeds clears any.)
const BARRIER_FAILED: &str = "barrier failed";
const RECORD_FAILED: &str = "durable point not recorded";

/// A barrier step succeeded: the last error, if one starting with `prefix`
/// (an earlier failure of that step), is no longer one.
fn clear_error(st: &mut State, prefix: &str) {
    if st
        .last_error
        .as_deref()
        .is_some_and(|e| e.starts_with(prefix))
    {
        st.last_error = None;
    }
}

/// A barrier step failed (`msg`): reported, and the barrier tried again at
/// the next interval (the index rows are flushed on the usual schedule
/// meanwhile).
fn report_error(st: &mut State, msg: String) {
    tracing::error!("{msg}");
    st.last_error = Some(msg);
    st.undurable_since = Some(Instant::now());
    st.unindexed_since.get_or_insert(Instant::now());
}
