//! The processes that change the tree, named for provenance: the pid the
//! kernel gives each request, and that process's name and executable,
//! read from `/proc` at its first request and kept briefly (a pid is
//! reused only after its process is gone, and an entry lives
//! [`TTL`]), in a table of bounded size.

use crate::seal::tree::Writer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a process's name and executable are kept.
const TTL: Duration = Duration::from_secs(2);
/// Processes kept at most (the table is emptied when it fills).
const MAX: usize = 4096;

/// When a process was read, its name and its executable.
type Known = (Instant, Vec<u8>, Vec<u8>);

/// Name and executable by pid.
#[derive(Default)]
pub(super) struct Writers {
    known: Mutex<HashMap<u32, Known>>,
}

impl Writers {
    /// The writer a request from `pid` (with its effective ids) is.
    pub(super) fn writer(&self, pid: u32, uid: u32, gid: u32) -> Writer {
        let (comm, exe) = if pid == 0 {
            (Vec::new(), Vec::new())
        } else {
            self.identify(pid)
        };
        Writer {
            pid,
            uid,
            gid,
            comm,
            exe,
        }
    }

    fn identify(&self, pid: u32) -> (Vec<u8>, Vec<u8>) {
        let now = Instant::now();
        if let Some((at, comm, exe)) = self.known.lock().expect("writers").get(&pid)
            && now.duration_since(*at) < TTL
        {
            return (comm.clone(), exe.clone());
        }
        // Read outside the lock: /proc may be slow for a busy process.
        let comm = std::fs::read(format!("/proc/{pid}/comm"))
            .map(|mut c| {
                if c.last() == Some(&b'\n') {
                    c.pop();
                }
                c
            })
            .unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| std::os::unix::ffi::OsStringExt::into_vec(p.into_os_string()))
            .unwrap_or_default();
        let mut known = self.known.lock().expect("writers");
        if known.len() >= MAX {
            known.clear();
        }
        known.insert(pid, (now, comm.clone(), exe.clone()));
        (comm, exe)
    }
}
