//! Start-up policy of a mount: what happens before the filesystem serves.
//! A fresh machine restores from the remote; a retention policy in
//! config.json is applied; the checkpoint policy is settled; a follower
//! catches up and applies the writer's redactions and retention.

use super::Args;
use crate::config::{AgentName, Home};
use crate::engine::Engine;
use crate::repo::remote::Remote;
use crate::seal::keys::MasterKey;
use crate::seal::tree::ROOT_INO;
use crate::{Error, Result};
use std::time::Duration;

/// A fresh machine: if the remote holds this agent, rebuild it (verified)
/// before mounting; otherwise the agent starts empty. With `lazy`, only
/// the chain is fetched and checked, and content on first read
/// ([`crate::history::restore::restore_lazy`]), unless the remote holds
/// snapshots replicated before lazy restores existed.
pub fn restore_if_remote_has(
    home: &Home,
    agent: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    lazy: bool,
) -> Result<()> {
    let rt = crate::repo::remote::runtime()?;
    let id = master.agent_id(agent.as_str());
    if !rt.block_on(remote.has_envelopes(&id))? {
        return Ok(());
    }
    // Only into a data dir that is truly absent: local data without an
    // index is not overwritten by a restore.
    let local = crate::repo::agent::history_evidence(home, agent, None, false)?;
    if !local.is_empty() {
        return Err(Error::HistoryMissing {
            agent: agent.to_string(),
            evidence: format!(
                "{} (and snapshots on the remote {})",
                local.join("; "),
                remote.shown_url()
            ),
        });
    }
    tracing::info!("restoring agent {agent} from {}", remote.shown_url());
    if lazy {
        let progress = |seq: u64, head: u64| {
            if seq.is_multiple_of(1000) || seq == head {
                tracing::info!("checked snapshot {seq}/{head}");
            }
        };
        let restored = rt.block_on(crate::history::restore::restore_lazy(
            home, agent, master, remote, progress,
        ))?;
        if let Some(head) = restored {
            tracing::info!(
                "restored agent {agent} at snapshot {head} lazily: the chain is checked, content is fetched and verified on first read"
            );
            return Ok(());
        }
    }
    let head = rt.block_on(crate::history::restore::restore(
        home,
        agent,
        master,
        remote,
        |seq, head| {
            if seq % 100 == 0 || seq == head {
                tracing::info!("verified snapshot {seq}/{head}");
            }
        },
    ))?;
    tracing::info!("restored agent {agent} at snapshot {head}");
    Ok(())
}

/// A follower before it serves: refuses a data dir whose journal holds
/// operations on its head (a writer's, not yet committed: committing them
/// here would fork from the remote), fetches what the writer replicated
/// since the last run (verified, as the follower thread does), then carries
/// out here what the writer's records say ([`restore::carry_out_records`]).
/// A remote that cannot be read or does not verify is left to the follower
/// thread, which polls it again, reports it, and stops there. Returns what
/// the mount's own handle must refuse to serve (what the records erased,
/// or, when it cannot be told what was written again, all they name).
///
/// [`restore::carry_out_records`]: crate::history::restore::carry_out_records
pub fn catch_up_follower(
    home: &Home,
    agent: &AgentName,
    master: &MasterKey,
    remote: &Remote,
) -> Result<std::collections::HashSet<crate::seal::tree::ObjectId>> {
    let (a, _lock) = crate::repo::agent::Agent::open_writer(home, agent, master, false)?;
    let head = a.head()?;
    let (_, records) = crate::repo::journal::Journal::open(&a.data_dir())?;
    if records
        .iter()
        .any(|r| r.seq == head.seq() && r.hash == head.hash())
    {
        return Err(Error::Invalid(format!(
            "agent {agent} has operations a writer made here that are not yet in a snapshot: mount it once without --follow (as the writer) before following"
        )));
    }
    let rt = crate::repo::remote::runtime()?;
    let erasing = match rt.block_on(crate::history::restore::pull(&a, remote)) {
        Ok(mut p) => {
            if p.head > p.from {
                tracing::info!("following: fetched snapshots {}..={}", p.from + 1, p.head)
            }
            crate::history::restore::Erasing::after(&mut p)
        }
        Err(e) => {
            tracing::warn!(
                "following {}: {e}; serving what is here",
                remote.shown_url()
            );
            crate::history::restore::Erasing::Find
        }
    };
    let crate::history::restore::CarriedOut {
        erased,
        pruned,
        refused,
        ..
    } = crate::history::restore::carry_out_records(&a, erasing)?;
    if erased > 0 {
        tracing::info!("redaction: erased {erased} objects here, as the writer did");
    }
    if pruned > 0 {
        tracing::info!("retention: removed {pruned} objects of snapshots the writer forgot");
    }
    Ok(refused)
}

/// An index without snapshots while the remote holds some: refused (the
/// mount would start the agent over and fork from its own remote).
pub fn refuse_start_over_on_remote(
    home: &Home,
    agent: &AgentName,
    master: &MasterKey,
    remote: &Remote,
) -> Result<()> {
    // An index whose rows a power cut lost is rebuilt from the packs first:
    // it is not an index that lost its history.
    crate::repo::agent::Agent::recover_if_unheld(home, agent, master)?;
    // An index this check cannot read (an older schema, which the writer
    // migrates) is left to the engine's own checks.
    let Ok(index) = crate::repo::index::Index::open(&home.index_path(agent), false) else {
        return Ok(());
    };
    if index.head_seq()?.is_some() {
        return Ok(());
    }
    let mut evidence = crate::repo::agent::history_evidence(home, agent, Some(&index), true)?;
    let rt = crate::repo::remote::runtime()?;
    let id = master.agent_id(agent.as_str());
    if rt.block_on(remote.has_envelopes(&id))? {
        evidence.push(format!("snapshots on the remote {}", remote.shown_url()));
    }
    if evidence.is_empty() {
        return Ok(());
    }
    Err(Error::HistoryMissing {
        agent: agent.to_string(),
        evidence: evidence.join("; "),
    })
}

/// Applies the retention policy of config.json (`retention`), if one is
/// set, before the mount starts: forget, then prune locally and on the
/// remote. A remote that cannot be reached is logged and left for the next
/// mount; anything else stops the mount. A `lazy` data dir only forgets:
/// its prune would read every kept snapshot's metadata from the remote
/// before the mount serves (`sovseal prune` does it when asked).
pub fn apply_retention(
    home: &Home,
    agent: &AgentName,
    master: &MasterKey,
    remote: &Remote,
    lazy: bool,
) -> Result<()> {
    let Some(policy) =
        crate::history::retention::Policy::from_config(home.agent_setting(agent, "retention")?)?
    else {
        return Ok(());
    };
    if !home.has_agent(agent) {
        return Ok(());
    }
    let (a, _lock) = crate::repo::agent::Agent::open_writer(home, agent, master, false)?;
    if let Some((from, _)) = crate::history::older::pending(&a)? {
        tracing::info!(
            "retention: not applied at this mount (the history before snapshot {from} is still being fetched)"
        );
        return Ok(());
    }
    let (_, forget) = crate::history::retention::apply(&a, &policy, false)?;
    if lazy {
        tracing::info!(
            "retention: forgot {} snapshots; not pruned at mount (restored lazily: run sovseal prune)",
            forget.len()
        );
        return Ok(());
    }
    let mut r = crate::history::retention::prune_local(&a, &mut |_, _| {})?;
    let rt = crate::repo::remote::runtime()?;
    if let Err(e) = rt.block_on(crate::history::retention::prune_remote(&a, remote, &mut r)) {
        tracing::warn!("retention: remote prune left for later: {e}");
    }
    tracing::info!(
        "retention: forgot {} snapshots, removed {} objects ({} bytes); remote: {} snapshots pruned",
        forget.len(),
        r.objects_removed,
        r.bytes_removed,
        r.remote_snapshots_pruned
    );
    Ok(())
}

/// The checkpoint policy: flags, else config.json, else the defaults.
pub fn checkpoint_policy(
    args: &Args,
    home: &Home,
    agent: &AgentName,
) -> Result<crate::replication::replicator::CheckpointPolicy> {
    let mut p = crate::replication::replicator::CheckpointPolicy::default();
    let secs = match args.checkpoint_interval_secs {
        Some(s) => Some(s),
        None => match home.agent_setting(agent, "checkpoint_interval_secs")? {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Error::Invalid("config.json: checkpoint_interval_secs must be a number".into())
            })?),
        },
    };
    if let Some(s) = secs {
        p.interval = Duration::from_secs(s);
    }
    p.hook = match &args.checkpoint_hook {
        Some(h) => Some(h.clone()),
        None => match home.agent_setting(agent, "checkpoint_hook")? {
            None => None,
            Some(serde_json::Value::String(h)) => Some(h),
            Some(_) => {
                return Err(Error::Invalid(
                    "config.json: checkpoint_hook must be a string (a shell command)".into(),
                ));
            }
        },
    };
    Ok(p)
}

/// The head must be readable before the mount serves it: the root's record
/// and the root directory's top node. A data dir whose head lost one of
/// them (a deleted pack, a damaged index) is refused here, naming the
/// object and the snapshot, instead of being mounted as a tree the kernel
/// cannot even list.
pub fn check_head_readable(engine: &Engine) -> Result<()> {
    let seq = engine.head().seq();
    let at_head = |e: Error| match e {
        Error::MissingObject { id, kind, seq: 0 } => Error::MissingObject { id, kind, seq },
        e => e,
    };
    engine.getattr(ROOT_INO).map_err(at_head)?;
    // A name no directory holds: one path from the root node to a leaf.
    engine
        .lookup(ROOT_INO, b".sovseal-mount-check")
        .map_err(at_head)?;
    Ok(())
}
