//! Where things live: `SOVSEAL_HOME`, `config.json`, agent names and data dirs.
//!
//! `SOVSEAL_HOME` (default `~/.sovseal`, mode 0700) holds `config.json`
//! (0600, identity and routing only, never key material), the optional
//! fallback key file, and one data dir per agent under `agents/<name>/`.
//! Agent names become paths, unit instances and keyed ids, so they are
//! checked here once: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.

use crate::fsutil::Dir;
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Longest agent name accepted.
pub const MAX_AGENT_NAME: usize = 64;
/// Version of the `config.json` schema written by this build.
pub const CONFIG_SCHEMA_VERSION: u64 = 1;

/// Parses a duration: a number with a unit `s`, `m`, `h`, `d` or `w`
/// (`90s`, `15m`, `36h`, `7d`, `2w`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| {
        Error::Invalid(format!(
            "{s:?} is not a duration (use a number and s, m, h, d or w: 90s, 15m, 36h, 7d)"
        ))
    })?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(Error::Invalid(format!(
                "{s:?}: unknown duration unit {unit:?} (use s, m, h, d or w)"
            )));
        }
    };
    n.checked_mul(mult)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| Error::Invalid(format!("{s:?} is too long a duration")))
}

/// A validated agent name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// Checks a name: 1..=64 bytes of letters, digits, `.`, `_`, `-`,
    /// starting with a letter or digit.
    pub fn new(name: &str) -> Result<Self> {
        let ok_first = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let ok_rest = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok_first || !ok_rest || name.len() > MAX_AGENT_NAME {
            return Err(Error::Invalid(format!(
                "agent name {name:?} is not allowed: use 1 to {MAX_AGENT_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"
            )));
        }
        Ok(AgentName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AgentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The file name of an agent's SQLite index inside its data dir.
pub const INDEX_FILE: &str = "index.db";

/// The sovseal home directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$SOVSEAL_HOME`, else `$HOME/.sovseal`.
    pub fn from_env() -> Result<Self> {
        if let Some(h) = std::env::var_os("SOVSEAL_HOME").filter(|h| !h.is_empty()) {
            return Ok(Home { root: h.into() });
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Invalid("neither SOVSEAL_HOME nor HOME is set".into()))?;
        Ok(Home {
            root: PathBuf::from(home).join(".sovseal"),
        })
    }

    /// A home at an explicit path.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the home (0700) if missing, then opens and checks it: owned
    /// by the running user, not writable by group or others.
    pub fn ensure(&self) -> Result<Dir> {
        Dir::create_root(&self.root)
    }

    /// Opens and checks the existing home (see [`Home::ensure`]).
    pub fn dir(&self) -> Result<Dir> {
        Dir::open_root(&self.root)
    }

    /// Opens and checks an agent's existing data dir: `agents` and the
    /// agent's directory must be real directories (not symlinks) that the
    /// running user owns and nobody else may write in.
    pub fn agent_data(&self, agent: &AgentName) -> Result<Dir> {
        self.dir()?.sub("agents")?.sub(agent.as_str())
    }

    /// Like [`Home::agent_data`], creating what is missing (mode 0700).
    pub fn ensure_agent_data(&self, agent: &AgentName) -> Result<Dir> {
        self.ensure()?
            .ensure_sub("agents")?
            .ensure_sub(agent.as_str())
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// The fallback key file (`SOVSEAL_KEY_FALLBACK=file`).
    pub fn key_file(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The data dir of an agent.
    pub fn agent_dir(&self, agent: &AgentName) -> PathBuf {
        self.root.join("agents").join(agent.as_str())
    }

    /// The SQLite index of an agent's data dir: its presence is what makes
    /// a data dir an agent's (see [`Home::has_agent`]).
    pub fn index_path(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join(INDEX_FILE)
    }

    /// True when the agent has local data (its index exists).
    pub fn has_agent(&self, agent: &AgentName) -> bool {
        self.index_path(agent).exists()
    }

    /// The seen-head record of an agent, kept outside its data dir so that
    /// rolling the data dir back is noticed.
    pub fn seen_head_path(&self, agent: &AgentName) -> PathBuf {
        self.root.join("seen").join(agent.as_str())
    }

    /// A setting of an agent in `config.json`: `agents.<name>.<key>`, else
    /// the top-level `<key>`.
    pub fn agent_setting(&self, agent: &AgentName, key: &str) -> Result<Option<Value>> {
        let cfg = self.read_config()?;
        let per_agent = cfg
            .get("agents")
            .and_then(|a| a.get(agent.as_str()))
            .and_then(|a| a.get(key))
            .cloned();
        Ok(per_agent.or_else(|| cfg.get(key).cloned()))
    }

    /// The remote URL of an agent: `cli` if given, else `agents.<name>.remote`
    /// in `config.json`, else its top-level `remote`, else a local directory
    /// under the home (`file://$SOVSEAL_HOME/remote`), so that replication
    /// runs from the first mount.
    pub fn remote_for(&self, agent: &AgentName, cli: Option<&str>) -> Result<String> {
        if let Some(u) = cli {
            return Ok(u.to_owned());
        }
        let cfg = self.read_config()?;
        let per_agent = cfg
            .get("agents")
            .and_then(|a| a.get(agent.as_str()))
            .and_then(|a| a.get("remote"))
            .and_then(Value::as_str);
        if let Some(u) = per_agent.or_else(|| cfg.get("remote").and_then(Value::as_str)) {
            return Ok(u.to_owned());
        }
        let dir = self.root.join("remote");
        let abs = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(".", e))?
                .join(dir)
        };
        url::Url::from_directory_path(&abs)
            .map(|u| u.to_string())
            .map_err(|_| {
                Error::Invalid(format!("{} is not a usable directory path", abs.display()))
            })
    }

    /// Reads `config.json` as a JSON object (empty when absent). Refuses a
    /// file readable by others, since it may hold an API key.
    pub fn read_config(&self) -> Result<Map<String, Value>> {
        let path = self.config_path();
        if !path.exists() {
            return Ok(Map::new());
        }
        let dir = self.dir()?;
        let mut f = match dir.open_read("config.json") {
            Ok(f) => f,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Map::new());
            }
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).map_err(|e| Error::io(&path, e))?;
        let mode = f
            .metadata()
            .map_err(|e| Error::io(&path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(Error::Custody(format!(
                "{} has mode {:o}; it must not be readable by others: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::Invalid(format!(
                "{} is not a JSON object",
                path.display()
            ))),
            Err(e) => Err(Error::Invalid(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes `config.json` atomically with mode 0600, stamping `schema_version`.
    pub fn write_config(&self, mut cfg: Map<String, Value>) -> Result<()> {
        let dir = self.ensure()?;
        cfg.entry("schema_version")
            .or_insert(Value::from(CONFIG_SCHEMA_VERSION));
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(cfg)).expect("JSON map encodes");
        bytes.push(b'\n');
        dir.write_atomic("config.json", &bytes, 0o600, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        for ok in ["a", "agent-1", "My.Agent_2", &"x".repeat(64)] {
            AgentName::new(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            let e = AgentName::new(bad).unwrap_err().to_string();
            assert!(e.contains("not allowed"), "{bad:?}: {e}");
        }
    }
}
