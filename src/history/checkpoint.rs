//! Signed checkpoints (seed 002): statements "agent A's snapshot N has hash
//! H", signed with the agent's Ed25519 key (derived from the master key), so
//! that any machine holding the master key can check them, including one
//! that has never seen the agent.
//!
//! A checkpoint names only a snapshot that is already on the remote. It is
//! kept locally (`<data dir>/checkpoints/<seq>.json`), on the remote
//! (`…/checkpoints/<seq>.json`, and the newest also as `…/checkpoint.json`,
//! which a restore reads instead of listing them all), and optionally
//! handed to a hook command for external anchoring. Verification (`check_chain`, `check_remote`) fails
//! closed when a signature does not verify, or when a chain is shorter than
//! a checkpoint or disagrees with it: that is a remote (or a disk) that
//! dropped or rolled back snapshots.

use crate::repo::agent::Agent;
use crate::repo::remote::Remote;
use crate::seal::keys::AgentKeys;
use crate::seal::record::{self, Signed};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` field.
pub const FORMAT: &str = "sovseal-checkpoint";
/// The version this build writes and reads.
pub const VERSION: u32 = 2;

/// A signed checkpoint, as stored (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The agent's keyed id, hex.
    pub agent_id: String,
    /// The key version whose signing key signed it (left out, meaning 1,
    /// in version-1 records).
    #[serde(
        default = "record::key_version_1",
        skip_serializing_if = "record::is_key_version_1"
    )]
    pub key_version: u32,
    /// The snapshot's sequence number.
    pub seq: u64,
    /// The snapshot's envelope hash, hex.
    pub hash: String,
    /// When it was signed, ms since the epoch.
    pub issued_at_ms: i64,
    /// The agent's checkpoint public key, hex (for external verifiers; this
    /// program checks against the key it derives, never this field alone).
    pub public_key: String,
    /// Ed25519 signature over [`Checkpoint::message`], hex.
    pub signature: String,
}

fn bad(what: &str, detail: impl Into<String>) -> Error {
    Error::corrupt(format!("checkpoint {what}"), detail.into())
}

impl Signed for Checkpoint {
    const FORMAT: &'static str = FORMAT;
    const VERSION: u32 = VERSION;
    const KIND: &'static str = "checkpoint";

    fn format(&self) -> &str {
        &self.format
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn key_version(&self) -> u32 {
        self.key_version
    }
    fn set_versions(&mut self, version: u32, key_version: u32) {
        self.version = version;
        self.key_version = key_version;
    }
    fn agent_id(&self) -> &str {
        &self.agent_id
    }
    fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.seq, self.hash, self.issued_at_ms)
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn set_signature(&mut self, public_key: String, signature: String) {
        self.public_key = public_key;
        self.signature = signature;
    }
    fn label(&self) -> String {
        format!(" {}", self.seq)
    }
}

impl Checkpoint {
    /// The signed bytes: every field but the key and the signature.
    pub fn message(&self) -> Vec<u8> {
        record::message(self)
    }

    /// Signs snapshot `seq` with envelope hash `hash`.
    pub fn sign(keys: &AgentKeys, seq: u64, hash: &[u8; 32], issued_at_ms: i64) -> Self {
        let mut c = Checkpoint {
            format: FORMAT.into(),
            version: 1,
            agent_id: keys.agent_id().to_hex(),
            key_version: 1,
            seq,
            hash: crate::hex::encode(hash),
            issued_at_ms,
            public_key: String::new(),
            signature: String::new(),
        };
        record::sign(keys, &mut c);
        c
    }

    /// Checks format, agent and signature under `keys`.
    pub fn verify(&self, keys: &AgentKeys) -> Result<()> {
        record::verify(self, keys)
    }

    /// The snapshot hash as bytes.
    pub fn hash_bytes(&self) -> Result<[u8; 32]> {
        crate::hex::decode32(&self.hash)
            .ok_or_else(|| bad(&self.seq.to_string(), "hash is not 32 hex bytes"))
    }

    /// Parses and verifies checkpoint JSON.
    pub fn parse(raw: &[u8], keys: &AgentKeys) -> Result<Self> {
        record::parse(raw, keys)
    }

    /// JSON, one line.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoint encodes")
    }
}

const LOCAL_DIR: &str = "checkpoints";

/// Stores a checkpoint in the agent's data dir (atomically, durably).
pub fn save_local(agent: &Agent, c: &Checkpoint) -> Result<()> {
    let dir = agent.data()?.ensure_sub(LOCAL_DIR)?;
    dir.write_atomic(format!("{:020}.json", c.seq), &c.to_json(), 0o600, true)
}

/// Every local checkpoint, ascending, each verified.
pub fn list_local(agent: &Agent) -> Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
    let Some(dir) = agent.data()?.sub_if_exists(LOCAL_DIR)? else {
        return Ok(out);
    };
    for name in dir.json_names()? {
        let raw = dir.read(&name)?.unwrap_or_default();
        out.push(parse_at(&raw, &dir.join(&name), agent.repo().keys())?);
    }
    out.sort_by_key(|c| c.seq);
    Ok(out)
}

/// Reads and verifies a checkpoint file (local, or kept elsewhere by a hook).
pub fn read_file(path: &Path, keys: &AgentKeys) -> Result<Checkpoint> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_at(&raw, path, keys)
}

/// Parses and verifies checkpoint bytes read from `path` (named in errors).
fn parse_at(raw: &[u8], path: &Path, keys: &AgentKeys) -> Result<Checkpoint> {
    Checkpoint::parse(raw, keys).map_err(|e| match e {
        Error::Corrupt { what, detail } => Error::Corrupt {
            what: format!("{what} ({})", path.display()),
            detail,
        },
        e => e,
    })
}

/// The newest local checkpoint's sequence, if any.
pub fn checkpointed_seq(agent: &Agent) -> Result<Option<u64>> {
    Ok(list_local(agent)?.last().map(|c| c.seq))
}

/// Like [`checkpointed_seq`], reading and verifying only the newest local
/// checkpoint (the one its file name says is newest), not all of them: what
/// a follower's every poll asks.
pub fn newest_local_seq(agent: &Agent) -> Result<Option<u64>> {
    let Some(dir) = agent.data()?.sub_if_exists(LOCAL_DIR)? else {
        return Ok(None);
    };
    let newest = dir
        .json_names()?
        .into_iter()
        .filter_map(|n| {
            let seq = n.to_str()?.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((seq, n))
        })
        .max();
    let Some((seq, name)) = newest else {
        return Ok(None);
    };
    let raw = dir.read(&name)?.unwrap_or_default();
    let c = parse_at(&raw, &dir.join(&name), agent.repo().keys())?;
    if c.seq != seq {
        return Err(bad(
            &seq.to_string(),
            format!("the local file for {seq} holds a checkpoint of {}", c.seq),
        ));
    }
    Ok(Some(seq))
}

/// Checks `c` against a chain given by its head and a lookup of recorded
/// hashes: the chain must reach `c.seq` and hold `c.hash` there.
pub fn check(
    c: &Checkpoint,
    head: u64,
    hash_at: impl Fn(u64) -> Result<Option<[u8; 32]>>,
    where_: &str,
) -> Result<()> {
    if head < c.seq {
        return Err(Error::ChainBroken {
            seq: c.seq,
            detail: format!(
                "{where_} ends at snapshot {head}, but a signed checkpoint says snapshot {} existed: snapshots were dropped or rolled back",
                c.seq
            ),
        });
    }
    match hash_at(c.seq)? {
        Some(h) if h == c.hash_bytes()? => Ok(()),
        Some(_) => Err(Error::ChainBroken {
            seq: c.seq,
            detail: format!("{where_} holds a different snapshot than the signed checkpoint"),
        }),
        None => Err(Error::ChainBroken {
            seq: c.seq,
            detail: format!("{where_} lacks the snapshot of a signed checkpoint"),
        }),
    }
}

/// Checks `c` against the local chain of `agent`.
pub fn check_local(agent: &Agent, c: &Checkpoint) -> Result<()> {
    c.verify(agent.repo().keys())?;
    let head = agent.repo().index()?.head_seq()?.unwrap_or(0);
    check(
        c,
        head,
        |s| agent.repo().index()?.stored_hash(s),
        "the local chain",
    )?;
    record::check_in_force(c, c.seq, agent.envelope(c.seq)?.key_version)
}

/// Signs snapshot `seq` (already on the remote), stores the checkpoint on
/// the remote, then locally. What is signed is the hash of the envelope
/// after it verified (recorded hash, tag, payload hash), never the index's
/// recorded hash alone.
pub async fn create(agent: &Agent, remote: &Remote, seq: u64) -> Result<Checkpoint> {
    let hash = agent.snapshot_unchecked(seq)?.hash();
    let keys = agent.repo().keys();
    // Only of a snapshot this remote holds: followers of it take a
    // checkpoint of a snapshot it does not list for one it withholds.
    let held = match remote.get_envelope(&keys.agent_id(), seq).await? {
        Some(raw) => crate::seal::envelope::Envelope::from_json(&raw)?.hash() == hash,
        None => false,
    };
    if !held {
        return Err(Error::Invalid(format!(
            "the remote {} does not hold snapshot {seq} as this machine does: a checkpoint names only snapshots on its remote (replicate there first)",
            remote.shown_url()
        )));
    }
    let c = Checkpoint::sign(keys, seq, &hash, crate::time::now_ms());
    let id = keys.agent_id();
    remote.put_checkpoint(&id, seq, c.to_json()).await?;
    save_local(agent, &c)?;
    // Then the copy a restore reads. After the file: a copy never names a
    // checkpoint the listing lacks. Only a cost when it fails (a restore
    // lists the checkpoints after the copy's, or all without one): a
    // warning, not the checkpoint's failure.
    if let Err(e) = put_copy(keys, remote, &c).await {
        tracing::warn!(
            "checkpoint {seq}: its copy as the newest on {} was not stored ({e}): a fresh machine lists the checkpoints after the copy there",
            remote.shown_url()
        );
    }
    Ok(c)
}

/// Stores `c` as the copy of the newest checkpoint on `remote`, unless the
/// copy there names a later snapshot (a checkpoint of an older one signed
/// on request). Two processes signing at once may leave the older of
/// theirs: a restore then takes the newer from the listing after it.
async fn put_copy(keys: &AgentKeys, remote: &Remote, c: &Checkpoint) -> Result<()> {
    let id = keys.agent_id();
    let newer = match remote.get_newest_checkpoint(&id).await? {
        Some(raw) => Checkpoint::parse(&raw, keys).is_ok_and(|n| n.seq > c.seq),
        None => false,
    };
    if !newer {
        remote.put_newest_checkpoint(&id, c.to_json()).await?;
    }
    Ok(())
}

/// The copy of the newest checkpoint on `remote`, verified (one that does
/// not verify is an error, naming it); `None` when there is none.
pub async fn fetch_remote_copy(keys: &AgentKeys, remote: &Remote) -> Result<Option<Checkpoint>> {
    let Some(raw) = remote.get_newest_checkpoint(&keys.agent_id()).await? else {
        return Ok(None);
    };
    // (Named by the snapshot it claims, when that much parses.)
    let claimed = serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["seq"].as_u64());
    let what = match claimed {
        Some(seq) => {
            format!("checkpoint {seq}'s copy as the newest on the remote (checkpoint.json)")
        }
        None => "the copy of the newest checkpoint on the remote (checkpoint.json)".into(),
    };
    parse_as(&raw, keys, &what).map(Some)
}

/// Every checkpoint on the remote, ascending, each verified: one that does
/// not verify is an error (a forged or altered checkpoint), never skipped.
pub async fn fetch_remote(keys: &AgentKeys, remote: &Remote) -> Result<Vec<Checkpoint>> {
    fetch_remote_after(keys, remote, 0, false).await
}

/// The newest checkpoint on the remote, verified (one that does not verify
/// is an error, as in [`fetch_remote`]); `None` if there is none. What a
/// restore needs: the chain it fetches must reach it and hold its hash,
/// which vouches for every snapshot before it through the parent links, so
/// the older ones (one per checkpoint interval of the agent's whole life)
/// are not fetched. Nor are they listed: the writer keeps a copy of its
/// newest one beside them ([`Remote::get_newest_checkpoint`]), and only
/// the checkpoints after the copy's snapshot are listed (one page, mostly
/// empty; all of them, one page per 1,000, on a remote without a copy,
/// whose writer's build predates it).
///
/// So a checkpoint listed after the copy is taken (a writer stopped
/// between the two puts; or a remote that put an old copy back while it
/// kept a newer checkpoint, whose dropped snapshots are then caught), and
/// any copy only vouches for what the key signed. A remote that deletes
/// every newer checkpoint and its copy is a rollback that only this
/// machine's seen-head record, its own checkpoints or an anchor catch, as
/// before the copy.
pub async fn fetch_remote_newest(keys: &AgentKeys, remote: &Remote) -> Result<Option<Checkpoint>> {
    let id = keys.agent_id();
    let copy = fetch_remote_copy(keys, remote).await?;
    let after = copy.as_ref().map_or(0, |c| c.seq);
    let listed = remote.list_checkpoints(&id, after).await?;
    for seq in listed.into_iter().rev() {
        // (Deleted between list and get: as if not listed.)
        if let Some(raw) = remote.get_checkpoint(&id, seq).await? {
            return parse_remote(&raw, keys, seq).map(Some);
        }
    }
    Ok(copy)
}

/// Checkpoint files fetched at once.
const FETCHES: usize = 16;

/// Like [`fetch_remote`], the checkpoints of snapshots after `after` only.
/// With `up_to_known_key`, the list ends at the first one signed under a
/// key version this machine does not hold (a follower that has not been
/// given the writer's rotated key yet: the later ones are too), instead
/// of failing.
pub async fn fetch_remote_after(
    keys: &AgentKeys,
    remote: &Remote,
    after: u64,
    up_to_known_key: bool,
) -> Result<Vec<Checkpoint>> {
    use futures::StreamExt;
    let id = keys.agent_id();
    let mut out = Vec::new();
    let listed = remote.list_checkpoints(&id, after).await?;
    let mut fetched = futures::stream::iter(listed)
        .map(|seq| {
            let id = &id;
            async move { (seq, remote.get_checkpoint(id, seq).await) }
        })
        .buffered(FETCHES);
    while let Some((seq, raw)) = fetched.next().await {
        let Some(raw) = raw? else {
            continue; // deleted between list and get: as if not listed
        };
        let parsed = parse_remote(&raw, keys, seq);
        if up_to_known_key && matches!(parsed, Err(Error::UnknownKeyVersion(..))) {
            break;
        }
        out.push(parsed?);
    }
    Ok(out)
}

/// Parses and verifies the remote's checkpoint file of snapshot `seq`.
fn parse_remote(raw: &[u8], keys: &AgentKeys, seq: u64) -> Result<Checkpoint> {
    let c = parse_as(raw, keys, &format!("checkpoint {seq} on the remote"))?;
    if c.seq != seq {
        return Err(bad(
            &seq.to_string(),
            format!("the remote file for {seq} holds a checkpoint of {}", c.seq),
        ));
    }
    Ok(c)
}

/// A checkpoint from the remote, verified, its errors naming `what`.
fn parse_as(raw: &[u8], keys: &AgentKeys, what: &str) -> Result<Checkpoint> {
    Checkpoint::parse(raw, keys).map_err(|e| match e {
        Error::Corrupt { detail, .. } => Error::Corrupt {
            what: what.into(),
            detail,
        },
        Error::UnknownFormatVersion(found, known) => Error::Corrupt {
            what: what.into(),
            detail: format!("format version {found} (this build reads up to {known})"),
        },
        e => e,
    })
}

/// Checks the remote's chain against `cps` (verified checkpoints from the
/// remote, this machine or an external anchor): the remote must still hold
/// every checkpointed snapshot, with the checkpointed hash. Returns the
/// remote's newest sequence.
pub async fn check_remote(keys: &AgentKeys, remote: &Remote, cps: &[Checkpoint]) -> Result<u64> {
    let id = keys.agent_id();
    // One listing (a paged loop would list the whole directory per page).
    let head = remote
        .list_envelopes(&id, 0, usize::MAX)
        .await?
        .last()
        .copied()
        .unwrap_or(0);
    for c in cps {
        let env = if c.seq <= head {
            match remote.get_envelope(&id, c.seq).await? {
                Some(raw) => Some(crate::seal::envelope::Envelope::from_json(&raw)?),
                None => None,
            }
        } else {
            None
        };
        check(
            c,
            head,
            |_| Ok(env.as_ref().map(|e| e.hash())),
            "the remote",
        )?;
        if let Some(env) = &env {
            record::check_in_force(c, c.seq, env.key_version)?;
        }
    }
    Ok(head)
}

/// Fails if the newest of `cps` was issued more than `max_age_ms` ago.
pub fn check_fresh(cps: &[Checkpoint], max_age_ms: i64, now_ms: i64) -> Result<()> {
    let Some(newest) = cps.iter().max_by_key(|c| c.issued_at_ms) else {
        return Err(Error::Invalid(
            "no checkpoint exists to check the age of".into(),
        ));
    };
    let age = now_ms - newest.issued_at_ms;
    if age > max_age_ms {
        return Err(Error::ChainBroken {
            seq: newest.seq,
            detail: format!(
                "the newest checkpoint is {} s old (limit {} s): checkpoints stopped, or newer ones are being withheld",
                age / 1000,
                max_age_ms / 1000
            ),
        });
    }
    Ok(())
}

/// The hook command's environment and input: the checkpoint JSON on stdin,
/// `SOVSEAL_CHECKPOINT_SEQ`, `_HASH`, `_AGENT_ID`. Runs `sh -c HOOK`; a
/// non-zero exit, a signal or a timeout (60 s) is an error naming it.
pub fn run_hook(hook: &str, c: &Checkpoint) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("SOVSEAL_CHECKPOINT_SEQ", c.seq.to_string())
        .env("SOVSEAL_CHECKPOINT_HASH", &c.hash)
        .env("SOVSEAL_CHECKPOINT_AGENT_ID", &c.agent_id)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Invalid(format!("checkpoint hook {hook:?} did not start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&c.to_json());
    }
    let t0 = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(Error::Invalid(format!(
                    "checkpoint hook {hook:?} failed ({st}) for snapshot {}: {}",
                    c.seq,
                    err.trim()
                )));
            }
            Ok(None) if t0.elapsed() > std::time::Duration::from_secs(60) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Invalid(format!(
                    "checkpoint hook {hook:?} timed out after 60 s for snapshot {}",
                    c.seq
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(Error::io("checkpoint hook", e)),
        }
    }
}

/// What [`check_all`] found.
#[derive(Debug)]
pub struct Checked {
    /// Every checkpoint checked: local, external files, then the remote's.
    pub checkpoints: Vec<Checkpoint>,
    /// The remote's head, when a remote was checked.
    pub remote_head: Option<u64>,
}

/// Checks the chain against every checkpoint there is: this machine's,
/// the `external` files (kept elsewhere by a hook), then, with `remote`,
/// the remote's (and the remote against all of them); with `max_age`, the
/// newest checkpoint must be younger than that.
pub fn check_all(
    agent: &Agent,
    external: &[PathBuf],
    remote: Option<&Remote>,
    max_age: Option<std::time::Duration>,
) -> Result<Checked> {
    let keys = agent.repo().keys();
    let mut cps = list_local(agent)?;
    for f in external {
        cps.push(read_file(f, keys)?);
    }
    for c in &cps {
        check_local(agent, c)?;
    }
    let mut remote_head = None;
    if let Some(rem) = remote {
        let rt = crate::repo::remote::runtime()?;
        // Every checkpoint file, and the copy of the newest a restore reads.
        let (theirs, copy) = rt.block_on(async {
            futures::try_join!(fetch_remote(keys, rem), fetch_remote_copy(keys, rem))
        })?;
        cps.extend(theirs);
        cps.extend(copy);
        remote_head = Some(rt.block_on(check_remote(keys, rem, &cps))?);
    }
    if let Some(age) = max_age {
        check_fresh(&cps, age.as_millis() as i64, crate::time::now_ms())?;
    }
    Ok(Checked {
        checkpoints: cps,
        remote_head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::keys::MasterKey;

    #[test]
    fn signs_verifies_and_refuses_changes_and_other_agents() {
        let m = MasterKey::from_bytes([3; 32]);
        let k = m.agent_keys("a");
        let c = Checkpoint::sign(&k, 7, &[9; 32], 1_700_000_000_000);
        c.verify(&k).unwrap();
        assert_eq!(Checkpoint::parse(&c.to_json(), &k).unwrap(), c);
        for f in [
            |c: &mut Checkpoint| c.seq = 8,
            |c: &mut Checkpoint| c.hash = "00".repeat(32),
            |c: &mut Checkpoint| c.issued_at_ms += 1,
        ] {
            let mut t = c.clone();
            f(&mut t);
            assert!(t.verify(&k).is_err());
        }
        // Another agent's key, or another master: refused.
        assert!(c.verify(&m.agent_keys("b")).is_err());
        assert!(
            c.verify(&MasterKey::from_bytes([4; 32]).agent_keys("a"))
                .is_err()
        );
        // Signed by another master but carrying that master's public key:
        // the embedded key is not trusted.
        let other = Checkpoint::sign(
            &MasterKey::from_bytes([4; 32]).agent_keys("a"),
            7,
            &[9; 32],
            0,
        );
        let mut forged = other.clone();
        forged.agent_id = c.agent_id.clone();
        assert!(forged.verify(&k).is_err());
    }

    #[test]
    fn chain_checks_and_freshness() {
        let k = MasterKey::from_bytes([3; 32]).agent_keys("a");
        let c = Checkpoint::sign(&k, 5, &[1; 32], 1000);
        let ok = |s: u64| Ok((s <= 5).then_some([1u8; 32]));
        check(&c, 5, ok, "x").unwrap();
        assert!(matches!(
            check(&c, 4, ok, "x"),
            Err(Error::ChainBroken { seq: 5, .. })
        ));
        assert!(check(&c, 9, |_| Ok(Some([2; 32])), "x").is_err());
        check_fresh(std::slice::from_ref(&c), 10_000, 5_000).unwrap();
        assert!(check_fresh(std::slice::from_ref(&c), 1_000, 5_000).is_err());
        assert!(check_fresh(&[], 1_000, 5_000).is_err());
    }
}
