//! In-process homes: a throwaway SOVSEAL_HOME with a fixed master key to
//! open engines on, and small helpers over files, bytes and paths.

use sovseal::config::{AgentName, Home};
use sovseal::engine::Engine;
use sovseal::seal::keys::MasterKey;
use std::path::{Path, PathBuf};

/// A throwaway SOVSEAL_HOME with a fixed master key.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub home: Home,
    pub master: MasterKey,
    pub agent: AgentName,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("home"));
        Env {
            home,
            dir,
            master: MasterKey::from_bytes([0x5a; 32]),
            agent: AgentName::new("agent-1").unwrap(),
        }
    }

    pub fn open(&self) -> Engine {
        Engine::open(&self.home, &self.agent, &self.master).unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home.agent_dir(&self.agent)
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn path_ino(e: &Engine, p: &str) -> u64 {
    e.resolve(p.as_bytes()).unwrap()
}
