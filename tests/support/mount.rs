//! A real mount for tests: a private SOVSEAL_HOME (file fallback for the
//! key), `sovseal-mount` in the background, helpers to run programs in it
//! and to run `sovseal` in any home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const SOVSEAL: &str = env!("CARGO_BIN_EXE_sovseal");
pub const MOUNT: &str = env!("CARGO_BIN_EXE_sovseal-mount");

pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub mnt: PathBuf,
    pub agent: String,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sovseal ARGS` with SOVSEAL_HOME=`home` and the key file custody.
pub fn sovseal_in(home: &Path, args: &[&str]) -> Output {
    Command::new(SOVSEAL)
        .args(args)
        .env("SOVSEAL_HOME", home)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap()
}

/// path -> bytes (or link target, or "<dir>") for every entry under `root`
/// (a mount's `.snapshots` left out).
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".snapshots" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let v = if meta.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                stack.push(p);
                b"<dir>".to_vec()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(rel, v);
        }
    }
    out
}

/// Asserts that a command succeeded; returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Asserts that a command failed with exit `code` and `needle` on stderr.
pub fn fails(o: &Output, code: i32, needle: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}{}", text(&o.stdout));
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

impl Mounted {
    /// Mounts a new agent; extra arguments go to sovseal-mount.
    pub fn new(agent: &str, extra: &[&str]) -> Self {
        Self::with_env(agent, extra, Vec::new())
    }

    /// Like `new`, with extra environment for every command (e.g. AWS_*).
    pub fn with_env(agent: &str, extra: &[&str], env: Vec<(String, String)>) -> Self {
        let m = Self::unmounted(agent, extra, env, None);
        m.mount();
        m
    }

    /// `sovseal init` done, not mounted yet; SOVSEAL_HOME is `home` when
    /// given (it must not exist yet, its parent must), else a new one.
    pub fn unmounted(
        agent: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
        home: Option<PathBuf>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = home.unwrap_or_else(|| dir.path().join("home"));
        let mnt = dir.path().join(agent);
        std::fs::create_dir(&mnt).unwrap();
        let m = Mounted {
            dir,
            home,
            mnt,
            agent: agent.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
        };
        let o = m.sovseal(&["init"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        m
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SOVSEAL_HOME", &self.home)
            .env("SOVSEAL_KEY_FALLBACK", "file");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn sovseal(&self, args: &[&str]) -> Output {
        self.cmd(SOVSEAL).args(args).output().unwrap()
    }

    /// `sovseal status --json` of this agent.
    pub fn status(&self) -> serde_json::Value {
        let o = self.sovseal(&["status", "--agent", &self.agent, "--json"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Waits until every snapshot is replicated; returns the head.
    pub fn wait_replicated(&self) -> u64 {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if s["replicated_seq"] == s["head_seq"] && s["queue_snapshots"] == 0 {
                return s["head_seq"].as_u64().unwrap();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "replication did not drain: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn try_mount(&self) -> Output {
        self.cmd(MOUNT)
            .arg(&self.mnt)
            .args(&self.extra)
            .output()
            .unwrap()
    }

    /// Mounts and asserts that it worked (the test fails, never skips, if
    /// /dev/fuse cannot be used).
    pub fn mount(&self) {
        let o = self.try_mount();
        assert!(
            o.status.success(),
            "sovseal-mount failed (is /dev/fuse usable?): {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(
            self.is_mounted(),
            "mount reported ready but is not in the mount table"
        );
    }

    pub fn is_mounted(&self) -> bool {
        let want = self.mnt.to_str().unwrap();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(want))
    }

    /// The daemon's pid, from the agent's lock file (its first word).
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("agents").join(&self.agent).join("lock"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The daemon's peak resident memory so far, in bytes (`VmHWM`).
    pub fn daemon_peak_rss(&self) -> usize {
        let pid = self.daemon_pid().expect("a daemon");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: usize = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("VmHWM in /proc/PID/status")
            .parse()
            .unwrap();
        kib << 10
    }

    /// Waits until the daemon `pid` is gone: reaped, or a zombie whose
    /// every thread has exited. The leader of a killed process shows as a
    /// zombie while its other threads still finish what they were in (a
    /// FUSE request already sent, say): until the last one exits, the
    /// process's files stay open, its locks held, and its writes can still
    /// land. Seen often with two `powercut` drills side by side (up to nine
    /// threads left; with the old wait, under load, [`Mounted::signal`]
    /// found the lock still held): the power cut then came before the
    /// daemon's last writes, and the check after it could find the agent
    /// locked and read it unrecovered (a CI run failed so: `verify` read
    /// past a pack's end).
    fn wait_gone(pid: i32) {
        assert!(
            wait_until_gone(pid, Duration::from_secs(30)),
            "daemon {pid} did not exit"
        );
    }

    /// `fusermount3 -u`, then waits for the daemon to exit.
    pub fn unmount(&self) {
        let pid = self.daemon_pid();
        // A file this test process closed a moment ago can still be held
        // by a child another test is spawning (between fork and exec):
        // EBUSY then is the test harness's, not sovseal's; retry briefly.
        let t0 = Instant::now();
        let o = loop {
            let o = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .unwrap();
            if o.status.success()
                || !text(&o.stderr).contains("busy")
                || t0.elapsed() > Duration::from_secs(5)
            {
                break o;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(o.status.success(), "fusermount3 -u: {}", text(&o.stderr));
        if let Some(pid) = pid {
            Self::wait_gone(pid);
        }
    }

    /// Sends `sig` to the daemon and waits for it to exit: every thread
    /// gone, the agent's lock no longer held by it.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.signal_pid(self.daemon_pid().expect("daemon pid"), sig);
    }

    /// [`Mounted::signal`] to the daemon `pid` (read before its lock file
    /// could go, as in a power cut).
    pub fn signal_pid(&self, pid: i32, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
        Self::wait_gone(pid);
        let holder = sovseal::repo::agent::writer_pid(
            &sovseal::config::Home::at(&self.home),
            &sovseal::config::AgentName::new(&self.agent).unwrap(),
        );
        assert_ne!(
            holder,
            Some(pid as u32),
            "daemon {pid} has exited but still holds the agent's lock"
        );
    }

    pub fn remount(&self) {
        self.unmount();
        self.mount();
    }

    /// A second machine: a fresh SOVSEAL_HOME (0700) holding this one's
    /// master key file, as after `sovseal key import`.
    pub fn second_home(&self, name: &str) -> PathBuf {
        let h = self.dir.path().join(name);
        std::fs::create_dir(&h).unwrap();
        std::fs::set_permissions(&h, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::copy(self.home.join("master.key"), h.join("master.key")).unwrap();
        h
    }

    /// Every file of every snapshot under `.snapshots/`, by snapshot name.
    pub fn history(&self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        std::fs::read_dir(self.path(".snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .map(|n| (n.clone(), tree(&self.path(&format!(".snapshots/{n}")))))
            .collect()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Runs `sh -c script` inside the mount; asserts success; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let o = self.sh_output(script);
        assert!(
            o.status.success(),
            "script failed: {script}\nstdout: {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    pub fn sh_output(&self, script: &str) -> Output {
        self.cmd("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.mnt)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs `sql` with the sqlite3 CLI on the agent's index (as the daemon
    /// left it, WAL included); asserts success; returns stdout.
    pub fn index_sql(&self, sql: &str) -> String {
        let db = self.home.join("agents").join(&self.agent).join("index.db");
        let o = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        assert!(o.status.success(), "sqlite3: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// Removes from the index the metadata objects of `kind` (an
    /// `ObjectKind` byte) that the newest commit storing one listed in its
    /// `homes` rows (tree format 6): as if the disk lost those rows.
    pub fn drop_homed(&self, kind: u8) {
        const ENTRY: usize = 49;
        let db = self.home.join("agents").join(&self.agent).join("index.db");
        let c = rusqlite::Connection::open(db).unwrap();
        let rows: Vec<(u64, Vec<u8>, Vec<u8>)> = c
            .prepare("SELECT seq, first, objects FROM homes ORDER BY seq DESC")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let seq = rows
            .iter()
            .find(|(_, _, b)| b.chunks(ENTRY).any(|e| e[32] == kind))
            .expect("a commit that stored one")
            .0;
        for (_, first, objects) in rows.iter().filter(|r| r.0 == seq) {
            let kept: Vec<u8> = objects
                .chunks(ENTRY)
                .filter(|e| e[32] != kind)
                .flatten()
                .copied()
                .collect();
            c.execute(
                "UPDATE homes SET objects = ?3, count = ?4 WHERE seq = ?1 AND first = ?2",
                rusqlite::params![seq, first, kept, (kept.len() / ENTRY) as u64],
            )
            .unwrap();
        }
    }

    /// `prog ARGS` run in the mount as `uid` with group `uid` and no
    /// supplementary groups (setpriv), for tests of what other users may
    /// do through `-o allow_other`.
    pub fn as_user(&self, uid: u32, prog: &str, args: &[&str]) -> Output {
        self.cmd("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                prog,
            ])
            .args(args)
            .current_dir(&self.mnt)
            .output()
            .unwrap()
    }

    /// Runs a python3 program in the mount as `uid` (see [`Self::as_user`];
    /// the system interpreter: a user's shims are not readable by others);
    /// asserts success; returns stdout.
    pub fn py_as(&self, uid: u32, program: &str) -> String {
        let o = self.as_user(uid, "/usr/bin/python3", &["-c", program]);
        assert!(
            o.status.success(),
            "python as {uid}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Runs a python3 program inside the mount; asserts success; returns stdout.
    pub fn py(&self, program: &str) -> String {
        let o = self
            .cmd("python3")
            .arg("-c")
            .arg(program)
            .current_dir(&self.mnt)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "python failed:\nstdout: {}\nstderr: {}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// Sequence numbers of all snapshots, from the CLI (reads while mounted).
    pub fn snapshots(&self) -> Vec<u64> {
        let o = self.sovseal(&[
            "snapshots",
            "--agent",
            &self.agent,
            "--limit",
            "1000000",
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["seq"].as_u64().unwrap())
            .collect()
    }

    pub fn head(&self) -> u64 {
        *self.snapshots().last().unwrap()
    }

    pub fn verify(&self) {
        let o = self.sovseal(&["verify", "--agent", &self.agent]);
        assert!(
            o.status.success(),
            "verify: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

impl Mounted {
    /// Starts `args` in the mount (git identity and HOME set), its stderr
    /// passed through; returns the process and its stdout lines as they
    /// come (a program that prints one line per acknowledged step).
    pub fn spawn_lines(
        &self,
        args: &[&str],
    ) -> (std::process::Child, crossbeam_channel::Receiver<String>) {
        use std::io::BufRead;
        let mut child = self
            .cmd(args[0])
            .args(&args[1..])
            .current_dir(&self.mnt)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env("HOME", self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        (child, rx)
    }
}

/// A small deterministic generator (kill instants, cut points): no
/// dependency, the same sequence every run.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

impl Mounted {
    /// If mounted: detaches the mount and kills its daemon, returning the
    /// daemon's pid. Never panics (it runs in drops).
    fn detach_and_kill(&self) -> Option<i32> {
        if !self.is_mounted() {
            return None;
        }
        let pid = self.daemon_pid();
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .output();
        let pid = pid?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        Some(pid)
    }

    /// What dropping does, and then waits (at most 30 s, never panicking)
    /// until the daemon has exited: for a test whose home or remote goes
    /// away right after (a daemon still running writes its heartbeat into
    /// the remote while the directory is being removed).
    pub fn stop_daemon(&self) {
        if let Some(pid) = self.detach_and_kill() {
            wait_until_gone(pid, Duration::from_secs(30));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.detach_and_kill();
    }
}

/// Waits at most `limit` for process `pid` to end ([`process_gone`]);
/// whether it did.
fn wait_until_gone(pid: i32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !process_gone(pid) {
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether process `pid` has ended: no longer listed, or a zombie that has
/// no thread left but its leader (`/proc/PID/task` lists the threads still
/// there; the process's files close as the last of them exits).
fn process_gone(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.count() <= 1
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
}
