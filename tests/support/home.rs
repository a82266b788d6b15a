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

    /// A copy of a golden home written by an older build
    /// (`tests/fixtures/v2/<name>/`: a file-custody master key and the agent
    /// `old`), with the modes a home has.
    pub fn golden(name: &str) -> Self {
        use sovseal::custody::{self, Custody};
        use std::os::unix::fs::PermissionsExt;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/v2")
            .join(name);
        let dir = tempfile::tempdir().unwrap();
        let home_dir = dir.path().join("home");
        for f in files_under(&fixture) {
            let to = home_dir.join(f.strip_prefix(&fixture).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::create_dir_all(home_dir.join("agents/old/checkpoints")).unwrap();
        for d in [
            "",
            "agents",
            "agents/old",
            "agents/old/packs",
            "agents/old/checkpoints",
            "seen",
        ] {
            std::fs::set_permissions(home_dir.join(d), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        let home = Home::at(&home_dir);
        let master = custody::load(&home, &Custody::File).unwrap();
        Env {
            dir,
            home,
            master,
            agent: AgentName::new("old").unwrap(),
        }
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

/// The bytes of every file under `dir`, recursively.
pub fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum()
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
