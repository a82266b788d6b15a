//! Group commit: one thread turns commit requests into snapshots.
//!
//! `commit_sync` (fsync, fdatasync, fsyncdir, close of a written file,
//! unmount) returns once a commit that started after the request is durable;
//! requests that arrive while a commit runs share the next one. `commit_soon`
//! (metadata-only changes) asks for a commit after a quiet period, pushed back
//! by further changes but never beyond `max_delay` after the first.

use crate::engine::Engine;
use crate::mount::metrics::Metrics;
use crate::{Error, Result};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    requested: u64,
    done: u64,
    ok: u64,
    soon: Option<(Instant, Instant)>,
    last_error: Option<String>,
    commits: u64,
    stop: bool,
}

/// Called after every commit that made a snapshot.
pub type OnCommit = Arc<dyn Fn(&crate::engine::CommitInfo) + Send + Sync>;

/// The commit thread and its request state.
pub struct Committer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    quiet: Duration,
    max_delay: Duration,
}

impl Committer {
    /// Starts the thread.
    pub fn start(
        engine: Arc<RwLock<Engine>>,
        quiet: Duration,
        max_delay: Duration,
        on_commit: Option<OnCommit>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sovseal-commit".into())
            .spawn(move || run(&s, &engine, on_commit.as_ref(), &metrics))
            .expect("spawn commit thread");
        Committer {
            shared,
            thread: Mutex::new(Some(thread)),
            quiet,
            max_delay,
        }
    }

    /// Commits everything changed so far; returns when it is durable.
    pub fn commit_sync(&self) -> Result<()> {
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
        cv.notify_all();
        while st.done < want && !st.stop {
            st = cv.wait(st).expect("committer");
        }
        if st.ok >= want {
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

    /// The last commit error, if the latest commit failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.0.lock().expect("committer").last_error.clone()
    }

    /// Snapshots made by this committer so far.
    pub fn commits(&self) -> u64 {
        self.shared.0.lock().expect("committer").commits
    }

    /// Commits what is pending and stops the thread. Once stopped, further
    /// calls do nothing and succeed (the first call reported the outcome).
    pub fn shutdown(&self) -> Result<()> {
        if self.shared.0.lock().expect("committer").stop {
            return Ok(());
        }
        let r = self.commit_sync();
        {
            let (m, cv) = &*self.shared;
            m.lock().expect("committer").stop = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.lock().expect("committer thread").take() {
            let _ = t.join();
        }
        r
    }
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
    on_commit: Option<&OnCommit>,
    metrics: &Metrics,
) {
    let (m, cv) = shared;
    let mut st = m.lock().expect("committer");
    loop {
        if st.stop {
            return;
        }
        let due = st.soon.is_some_and(|(_, at)| at <= Instant::now());
        if st.requested > st.done || due {
            let target = st.requested;
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
            st = m.lock().expect("committer");
            if let (Ok(Some(info)), Some(f)) = (&res, on_commit) {
                f(info);
            }
            match res {
                Ok(made) => {
                    st.ok = target;
                    st.last_error = None;
                    st.commits += u64::from(made.is_some());
                }
                Err(e) => {
                    tracing::error!("commit failed: {e}");
                    st.last_error = Some(e.to_string());
                }
            }
            st.done = target;
            cv.notify_all();
            continue;
        }
        st = match st.soon {
            Some((_, at)) => {
                let wait = at.saturating_duration_since(Instant::now());
                cv.wait_timeout(st, wait).expect("committer").0
            }
            None => cv.wait(st).expect("committer"),
        };
    }
}
