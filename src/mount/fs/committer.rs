//! Group commit: one thread turns commit requests into snapshots, and
//! snapshots into durable ones (a second makes them durable when no one
//! asked, so that seals do not wait for that disk sync).
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
//!   runs `interval` after the first snapshot that is not durable yet, on
//!   a thread of its own (the sync thread): its disk sync writes out
//!   everything sealed over that interval (tens of milliseconds under a
//!   stream of closes), and seals go on meanwhile instead of waiting for
//!   it. It covers the head it found when it started; snapshots sealed
//!   during its sync wait for the next barrier.
//!
//! A seal leaves the snapshot's index rows to a flush (`repo`'s module
//! doc), which the commit thread runs [`FLUSH_AFTER`] the first one waits, so
//! that the index read by other processes (the CLI beside the mount)
//! follows within that. The durable point (unsynced, like the rows) is
//! recorded with that flush too, once for every barrier meanwhile: a
//! stream of fsyncs pays one index transaction per flush, not one per
//! fsync. Only when durable waiters also wait for replication does each
//! barrier they wait for record its point (and the rows) before it
//! answers them; the sync thread's barrier, which no one waits for,
//! always leaves its point to the commit thread's next flush, so that
//! durable points are recorded by one thread, in order.
//!
//! A third thread checkpoints the index's WAL into its database a moment
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
    /// yet (with [`Config::release_at_sync`], and after any barrier of the
    /// sync thread).
    unrecorded: Option<Synced>,
    /// The newest sequence number a barrier synced and handed on to be
    /// recorded: a barrier that ends after a later one (the two threads'
    /// barriers overlap), or syncs the same head again, hands on nothing.
    /// Lowered again when recording it fails, so that the next barrier
    /// hands it on once more.
    synced: u64,
    last_error: Option<String>,
    commits: u64,
    barriers: u64,
    stop: bool,
    /// The sync thread is to end (before the commit thread is told to).
    sync_stop: bool,
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
/// recorded: after a barrier that waiters wait for (without
/// [`Config::release_at_sync`]), or after the record that follows the
/// barriers since the last one.
pub type OnDurable = Arc<dyn Fn(u64) + Send + Sync>;

/// What the commit and sync threads are told.
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

/// How often, at most, the idle sync thread looks whether a barrier is
/// due without being woken ([`interval_loop`]).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// How long a sealed snapshot's index rows, and the durable point of a
/// barrier that did not record it before answering (its waiters released
/// at the sync, or none: the sync thread's), wait before the commit thread
/// writes them (with every other snapshot's and barrier's waiting then).
pub const FLUSH_AFTER: Duration = Duration::from_millis(25);

/// The commit thread, the sync thread and their request state.
pub struct Committer {
    shared: Arc<(Mutex<State>, Condvar)>,
    /// Wakes the sync thread when the first snapshot after a barrier is
    /// sealed, and at the end (the waiters of `shared`'s condition
    /// variable are not woken by its comings and goings).
    sync_wake: Arc<Condvar>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The sync thread; it ends before the commit thread.
    syncs: Mutex<Option<JoinHandle<()>>>,
    /// The WAL checkpoint thread; it ends after the commit thread.
    checkpoints: Mutex<Option<JoinHandle<()>>>,
    quiet: Duration,
    max_delay: Duration,
}

impl Committer {
    /// Starts the commit and sync threads, and the WAL checkpoint thread
    /// when a checkpointer opens.
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
        let sync_wake = Arc::new(Condvar::new());
        let (s2, w2, engine2) = (shared.clone(), sync_wake.clone(), engine.clone());
        let syncs = std::thread::Builder::new()
            .name("sovseal-sync".into())
            .spawn(move || interval_loop(&s2, &w2, &engine2, &config))
            .expect("spawn sync thread");
        let w1 = sync_wake.clone();
        let thread = std::thread::Builder::new()
            .name("sovseal-commit".into())
            .spawn(move || {
                run(
                    &s,
                    &w1,
                    &engine,
                    &config,
                    (on_commit.as_ref(), &metrics),
                    (on_durable.as_ref(), nudge.as_ref()),
                )
            })
            .expect("spawn commit thread");
        Committer {
            shared,
            sync_wake,
            thread: Mutex::new(Some(thread)),
            syncs: Mutex::new(Some(syncs)),
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

    /// Commits what is pending, makes it durable and stops the threads. Once
    /// stopped, further calls do nothing and succeed (the first call
    /// reported the outcome).
    pub fn shutdown(&self) -> Result<()> {
        if self.shared.0.lock().expect("committer").stop {
            return Ok(());
        }
        let r = self.commit_durable();
        let (m, cv) = &*self.shared;
        // The sync thread ends first, then the commit thread, which records
        // the durable point of the last barrier, whichever thread ran it.
        m.lock().expect("committer").sync_stop = true;
        self.sync_wake.notify_all();
        if let Some(t) = self.syncs.lock().expect("sync thread").take() {
            let _ = t.join();
        }
        m.lock().expect("committer").stop = true;
        cv.notify_all();
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
    sync_wake: &Condvar,
    engine: &RwLock<Engine>,
    config: &Config,
    (on_commit, metrics): (Option<&OnCommit>, &Metrics),
    (on_durable, nudge): (Option<&OnDurable>, Option<&crossbeam_channel::Sender<()>>),
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
        // never puts off a flush past its time. (The barrier that is due
        // `interval` after a seal is the sync thread's.)
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
                        if st.undurable_since.is_none() {
                            // The sync thread's next barrier to time.
                            sync_wake.notify_all();
                        }
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
        let wake = [st.soon.map(|(_, at)| at), flush_due]
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

/// The sync thread: a barrier `interval` after the first snapshot that is
/// not durable yet, so that the commit thread goes on sealing through its
/// disk sync. Its durable point is recorded with the commit thread's next
/// flush, also without [`Config::release_at_sync`] (no one waits for it),
/// so that only that thread records durable points. Ends when the
/// committer stops. Idle, it looks again every `interval`, at most once
/// a second ([`IDLE_LOOK`]): a failed barrier or record of the commit
/// thread asks for another barrier without waking it.
fn interval_loop(
    shared: &(Mutex<State>, Condvar),
    wake: &Condvar,
    engine: &RwLock<Engine>,
    config: &Config,
) {
    let (m, cv) = shared;
    let mut st = m.lock().expect("committer");
    loop {
        if st.sync_stop {
            return;
        }
        let due = st.undurable_since.map(|t| t + config.interval);
        st = match due {
            Some(at) if at <= Instant::now() => {
                // No waiters: nothing is recorded or told here (the commit
                // thread's flush records its durable point).
                let st = barrier(st, shared, engine, config, (None, None), None);
                cv.notify_all();
                st
            }
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                wake.wait_timeout(st, wait).expect("committer").0
            }
            None => {
                let idle = config.interval.max(IDLE_LOOK);
                wake.wait_timeout(st, idle).expect("committer").0
            }
        };
    }
}

/// Makes every snapshot sealed so far durable, without holding the engine
/// while the disk works (FUSE requests go on, and seals while the sync
/// thread runs it). Barriers of the two threads may overlap; the store
/// runs their disk syncs one at a time.
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
            if seq > st.synced {
                st.synced = seq;
                let since = st.unrecorded.map_or_else(Instant::now, |s| s.since);
                st.unrecorded = Some(Synced { seq, hash, since });
            }
        }
        Err(e) => report_error(&mut st, format!("{BARRIER_FAILED}: {e}")),
    }
    // Without waiters (the sync thread's barrier) the durable point waits
    // for the commit thread's next flush too: only that thread records
    // durable points, so that they are written in order.
    let Some(release) = release else {
        return st;
    };
    if config.release_at_sync || sync.is_err() {
        release.answer(&mut st, sync.is_ok());
        return st;
    }
    let (mut st, recorded) = record_synced(st, shared, engine, (on_durable, nudge));
    release.answer(&mut st, recorded);
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
        Err(e) => {
            // The next barrier (asked for here) synced this head too: it
            // records it again, unless a later one is waiting already.
            if st.unrecorded.is_none() {
                st.synced = st.synced.min(seq.saturating_sub(1));
            }
            report_error(&mut st, format!("{RECORD_FAILED}: {e}"))
        }
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
/// the next interval, by the sync thread (the index rows are flushed on
/// the usual schedule meanwhile; a failed record hands its head on again,
/// see `State::synced`).
fn report_error(st: &mut State, msg: String) {
    tracing::error!("{msg}");
    st.last_error = Some(msg);
    st.undurable_since = Some(Instant::now());
    st.unindexed_since.get_or_insert(Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentName, Home};
    use crate::seal::keys::MasterKey;
    use std::sync::atomic::Ordering::SeqCst;

    /// A seal does not wait for the barrier the interval started: with the
    /// store's syncs slowed to 2 s, a change sealed while that barrier is
    /// in its sync is sealed at once, the sync still under way; the
    /// unmount's barrier makes it durable. (On a real disk the append can
    /// still wait for the sync: ext4 without a journal allocates the
    /// sync's blocks holding a lock the append needs; docs/PERFORMANCE.md,
    /// session 53.) Planted once (the interval's barrier run on the commit thread, as
    /// before the sync thread): the seal waited for the sync.
    #[test]
    fn a_seal_does_not_wait_for_the_intervals_disk_sync() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        let name = AgentName::new("slow").unwrap();
        let engine = Engine::open(&home, &name, &MasterKey::from_bytes([5; 32])).unwrap();
        let agent = engine.shared_agent();
        let engine = Arc::new(RwLock::new(engine));
        let config = Config {
            quiet: Duration::from_secs(5),
            max_delay: Duration::from_secs(5),
            interval: Duration::from_millis(20),
            release_at_sync: true,
        };
        let c = Committer::start(engine.clone(), config, None, None, Arc::default());
        let write = |file: &[u8]| {
            let mut e = engine.write().unwrap();
            let i = e
                .create(crate::seal::tree::ROOT_INO, file, 0o644, 0, 0)
                .unwrap();
            e.write(i.ino, 0, file).unwrap();
        };
        let slow = &agent.repo().store().slow;
        slow.delay_ms.store(2000, SeqCst);
        write(b"first");
        c.commit_sync().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while slow.in_sync.load(SeqCst) == 0 {
            assert!(
                Instant::now() < until,
                "the interval never started a barrier"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        write(b"second");
        let t = Instant::now();
        c.commit_sync().unwrap();
        let took = t.elapsed();
        let still = slow.in_sync.load(SeqCst) > 0;
        assert!(
            took < Duration::from_millis(1000),
            "the seal took {took:?}: it waited for the interval's disk sync"
        );
        assert!(still, "the disk sync was over before the seal returned");
        slow.delay_ms.store(0, SeqCst);
        let head = engine.read().unwrap().durability_point().1.seq();
        c.shutdown().unwrap();
        assert_eq!(
            agent.repo().index().unwrap().durable_seq().unwrap(),
            Some(head)
        );
    }
}
