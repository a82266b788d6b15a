//! `sovseal verify` and `sovseal checkpoint`: the chain, checked and signed.

use super::args::*;
use super::open_agent;
use super::progress::Progress;
use crate::{Error, Result};
use std::io::Write;

/// `sovseal verify`.
pub(super) fn verify(args: VerifyArgs, out: &mut dyn Write) -> Result<()> {
    let VerifyArgs {
        agent,
        remote,
        checkpoint,
        max_age,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    super::use_lazy_remote(
        &crate::config::Home::from_env()?,
        &crate::config::AgentName::new(&agent)?,
        remote.as_deref(),
    );
    let (home, a) = open_agent(&agent)?;
    let max_age = max_age
        .as_deref()
        .map(crate::config::parse_duration)
        .transpose()?;
    let report = {
        let p = Progress::new("verify: checking snapshots", json);
        crate::history::verify::verify(&a, |s, h| p.tick(s, h))?
    };
    let rem = match remote {
        Some(r) => Some(crate::repo::remote::Remote::open(&home.remote_for(
            a.name(),
            Some(&r).filter(|r| !r.is_empty()).map(|s| s.as_str()),
        )?)?),
        None => None,
    };
    let crate::history::checkpoint::Checked {
        checkpoints: cps,
        remote_head,
    } = crate::history::checkpoint::check_all(&a, &checkpoint, rem.as_ref(), max_age)?;
    let chain = match &rem {
        Some(r) => {
            let _p = Progress::spinner("verify: comparing the remote's chain", json);
            Some(
                crate::repo::remote::runtime()?
                    .block_on(crate::history::audit::check_remote_chain(&a, r))?,
            )
        }
        None => None,
    };
    crate::history::verify::record(&a, &report)?;
    let checkpointed = cps.iter().map(|c| c.seq).max();
    if json {
        let mut v = serde_json::to_value(&report).expect("report encodes");
        v["checkpoints"] = cps.len().into();
        v["checkpointed_seq"] = checkpointed.into();
        v["remote_head_seq"] = remote_head.into();
        v["remote_chain"] = serde_json::to_value(chain).expect("report encodes");
        writeln!(out, "{v}").map_err(w)?;
    } else {
        writeln!(
            out,
            "ok: agent {agent}: snapshots {}..={} ({}), {} objects, {} sealed bytes verified",
            report.first_seq,
            report.head_seq,
            report.snapshots,
            report.objects,
            report.sealed_bytes
        )
        .map_err(w)?;
        for (v, c) in &report.key_versions {
            writeln!(
                out,
                "key version {v}: {} snapshots, {} objects",
                c.snapshots, c.objects
            )
            .map_err(w)?;
        }
        match checkpointed {
            Some(s) => writeln!(
                out,
                "ok: {} signed checkpoints verified, newest at snapshot {s}",
                cps.len()
            )
            .map_err(w)?,
            None => writeln!(out, "no checkpoints yet").map_err(w)?,
        }
        if let Some(h) = remote_head {
            writeln!(
                out,
                "ok: the remote holds snapshots up to {h} and agrees with every checkpoint"
            )
            .map_err(w)?;
        }
        if let Some(c) = chain {
            writeln!(
                out,
                "ok: the remote's chain is this machine's up to snapshot {} ({} envelope files, {} chain segments, {} upload batch indexes, {} forget and {} redaction records checked)",
                c.compared, c.compared, c.segments, c.batch_indexes, c.forget_records, c.redaction_records
            )
            .map_err(w)?;
        }
    }
    Ok(())
}

/// `sovseal checkpoint`.
pub(super) fn checkpoint(args: CheckpointArgs, out: &mut dyn Write) -> Result<()> {
    let CheckpointArgs {
        agent,
        remote,
        hook,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (home, a) = open_agent(&agent)?;
    let seq = crate::repo::replication_state::replicated_seq(&a)?;
    if seq == 0 {
        return Err(Error::Invalid(format!(
            "agent {agent} has no replicated snapshot yet: a checkpoint names only snapshots on the remote"
        )));
    }
    let url = super::remote_to_change(&home, &a, remote.as_deref())?;
    let rem = crate::repo::remote::Remote::open(&url)?;
    let rt = crate::repo::remote::runtime()?;
    let c = rt.block_on(crate::history::checkpoint::create(&a, &rem, seq))?;
    if !json {
        writeln!(out, "signed checkpoint of snapshot {seq} ({})", c.hash).map_err(w)?;
    }
    let hook = match hook {
        Some(h) => Some(h),
        None => home
            .agent_setting(a.name(), "checkpoint_hook")?
            .and_then(|v| v.as_str().map(String::from)),
    };
    if let Some(h) = &hook {
        crate::history::checkpoint::run_hook(h, &c)?;
        if !json {
            writeln!(out, "hook ran").map_err(w)?;
        }
    }
    if json {
        let v = serde_json::json!({ "seq": seq, "hash": c.hash, "hook_ran": hook.is_some() });
        writeln!(out, "{v}").map_err(w)?;
    }
    Ok(())
}
