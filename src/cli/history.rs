//! `sovseal restore`, `diff`, `rollback`, `forget`, `prune`, `redact`:
//! working with an agent's history.

use super::args::*;
use super::progress::Progress;
use super::{master, open_agent, open_writer};
use crate::config::{AgentName, Home};
use crate::engine::Engine;
use crate::{Error, Result};
use std::io::Write;

/// `sovseal restore`.
pub(super) fn restore(args: RestoreArgs, out: &mut dyn Write) -> Result<()> {
    let RestoreArgs {
        agent,
        remote,
        seq,
        preserve_setuid,
        json,
        paths,
    } = args;
    let opts = crate::history::restore::WriteOptions { preserve_setuid };
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (path, dest) = match &paths[..] {
        [dest] => ("/".to_string(), dest.clone()),
        [path, dest] => (path.to_string_lossy().into_owned(), dest.clone()),
        _ => unreachable!("clap takes one or two"),
    };
    let home = Home::from_env()?;
    let name = AgentName::new(&agent)?;
    let m = master(&home)?;
    let local = home.has_agent(&name);
    let ((n, skipped), from) = if remote.is_none() && local {
        let (_, a) = super::open_agent(&agent)?;
        let _p = Progress::spinner("restore: verifying and writing", json);
        let n = crate::history::restore::from_local(&a, seq, &path, &dest, opts)?;
        (n, "local data".to_string())
    } else {
        let url = home.remote_for(&name, remote.as_deref())?;
        let p = Progress::new("restore: fetching and verifying snapshots", json);
        let n = crate::history::restore::to_directory(
            &home,
            &name,
            &m,
            &url,
            crate::history::restore::Output {
                seq,
                path: &path,
                dest: &dest,
                options: opts,
            },
            &mut |s, h| p.tick(s, h),
        )?;
        (n, crate::repo::remote::shown(&url))
    };
    if json {
        let v = serde_json::json!({
            "agent": agent,
            "path": path,
            "seq": n,
            "from": from,
            "dest": dest.to_string_lossy(),
            "skipped": skipped,
        });
        return writeln!(out, "{v}").map_err(w);
    }
    writeln!(
        out,
        "restored {path} of snapshot {n} of agent {agent} from {from} into {}",
        dest.display()
    )
    .map_err(w)?;
    // Reported, not failed (as tar and restic do): sockets, and device
    // nodes without the right to create them.
    for s in &skipped {
        eprintln!("sovseal: restore: skipped {s}");
    }
    Ok(())
}

/// `sovseal log`.
pub(super) fn log(args: LogArgs, out: &mut dyn Write) -> Result<()> {
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (_, a) = open_agent(&args.agent)?;
    let entries = crate::history::log::log(&a, args.path.as_deref(), args.limit)?;
    if args.json {
        let text = serde_json::to_string(&entries).expect("log encodes");
        return writeln!(out, "{text}").map_err(w);
    }
    for e in &entries {
        let when = crate::time::rfc3339_ms(e.timestamp_ms);
        writeln!(out, "snapshot {}  {when}", e.seq).map_err(w)?;
        if let Some(n) = &e.note {
            writeln!(out, "    note: {n}").map_err(w)?;
        }
        let name = |i: usize| {
            e.writers.get(i).map_or_else(String::new, |p| {
                if p.pid == 0 {
                    "kernel".to_string()
                } else {
                    format!("{}[{}]", p.comm, p.pid)
                }
            })
        };
        for (i, p) in e.writers.iter().enumerate() {
            writeln!(
                out,
                "    by {} ({}, uid {}, gid {})",
                name(i),
                p.exe,
                p.uid,
                p.gid
            )
            .map_err(w)?;
        }
        if e.writers_incomplete {
            writeln!(
                out,
                "    (more writers or changes than a snapshot records: some paths name none)"
            )
            .map_err(w)?;
        }
        for c in &e.changes {
            let mark = match c.change {
                "added" => "A",
                "removed" => "D",
                _ => "M",
            };
            let what = if c.what.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.what.join(", "))
            };
            let by: Vec<String> = c.writers.iter().map(|i| name(*i)).collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!("  by {}", by.join(", "))
            };
            writeln!(out, "  {mark} {}{what}{by}", c.path).map_err(w)?;
        }
        writeln!(out).map_err(w)?;
    }
    Ok(())
}

/// `sovseal diff`.
pub(super) fn diff(args: DiffArgs, out: &mut dyn Write) -> Result<()> {
    let DiffArgs {
        agent,
        seq1,
        seq2,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (_, a) = open_agent(&agent)?;
    let from = a.snapshot(seq1)?;
    let to = match seq2 {
        Some(s) => a.snapshot(s)?,
        None => a.head()?,
    };
    let d = crate::history::diff::diff(&from, &to)?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&d).expect("diff encodes")).map_err(w)?;
    } else {
        for e in &d.added {
            writeln!(out, "+ {:>12}  {}", e.size, e.path).map_err(w)?;
        }
        for e in &d.removed {
            writeln!(out, "- {:>12}  {}", e.size, e.path).map_err(w)?;
        }
        for c in &d.changed {
            writeln!(
                out,
                "M {:>12}  {}  ({}; was {} bytes)",
                c.new_size,
                c.path,
                c.what.join(", "),
                c.old_size
            )
            .map_err(w)?;
        }
        writeln!(
            out,
            "{} -> {}: {} added, {} removed, {} changed",
            d.from,
            d.to,
            d.added.len(),
            d.removed.len(),
            d.changed.len()
        )
        .map_err(w)?;
    }
    Ok(())
}

/// `sovseal rollback`.
pub(super) fn rollback(args: RollbackArgs, out: &mut dyn Write) -> Result<()> {
    let RollbackArgs { agent, seq, json } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let home = Home::from_env()?;
    let name = AgentName::new(&agent)?;
    let m = master(&home)?;
    super::use_lazy_remote(&home, &name, None);
    let mut e = Engine::open_with(&home, &name, &m, false)?;
    crate::history::redact::guard_lazy(e.agent(), true)?;
    super::fill_history(e.agent())?;
    let before = e.head().seq();
    let info = crate::history::rollback::rollback(&mut e, seq)?;
    if json {
        let v = serde_json::json!({ "agent": agent, "seq": info.seq, "tree_of": seq, "kept_up_to": before });
        return writeln!(out, "{v}").map_err(w);
    }
    writeln!(
        out,
        "agent {agent}: snapshot {} has the tree of snapshot {seq} (snapshots up to {before} are kept)",
        info.seq
    )
    .map_err(w)?;
    Ok(())
}

/// `sovseal forget`.
pub(super) fn forget(args: ForgetArgs, out: &mut dyn Write) -> Result<()> {
    let ForgetArgs {
        agent,
        keep_last,
        keep_hourly,
        keep_daily,
        keep_within,
        dry_run,
        prune,
        remote,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let policy = crate::history::retention::Policy {
        keep_last,
        keep_hourly,
        keep_daily,
        keep_within,
    };
    policy.validate()?;
    super::use_lazy_remote(
        &Home::from_env()?,
        &AgentName::new(&agent)?,
        remote.as_deref(),
    );
    let (home, a, _lock) = open_writer(&agent)?;
    if prune && !dry_run {
        // Which remote, before anything is forgotten here.
        super::remote_to_change(&home, &a, remote.as_deref())?;
    }
    let (keep, forget) = crate::history::retention::apply(&a, &policy, dry_run)?;
    let pruned = if prune && !dry_run {
        Some(prune_agent(&home, &a, remote.as_deref(), json)?)
    } else {
        None
    };
    if json {
        let v = serde_json::json!({
            "dry_run": dry_run,
            "kept": keep,
            "forgotten": forget,
            "prune": pruned,
        });
        writeln!(out, "{v}").map_err(w)?;
    } else {
        let verb = if dry_run { "would forget" } else { "forgot" };
        writeln!(
            out,
            "{verb} {} snapshots, keeping {}: {}",
            forget.len(),
            keep.len(),
            keep.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )
        .map_err(w)?;
        if let Some(r) = pruned {
            write_prune(out, &r).map_err(w)?;
        }
    }
    Ok(())
}

/// `sovseal prune`.
pub(super) fn prune(args: PruneArgs, out: &mut dyn Write) -> Result<()> {
    let PruneArgs {
        agent,
        remote,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    super::use_lazy_remote(
        &Home::from_env()?,
        &AgentName::new(&agent)?,
        remote.as_deref(),
    );
    let (home, a, _lock) = open_writer(&agent)?;
    let r = prune_agent(&home, &a, remote.as_deref(), json)?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&r).expect("report encodes")
        )
        .map_err(w)?;
    } else {
        write_prune(out, &r).map_err(w)?;
    }
    Ok(())
}

/// `sovseal redact`.
pub(super) fn redact(args: RedactArgs, out: &mut dyn Write) -> Result<()> {
    let RedactArgs {
        agent,
        dry_run,
        remote,
        json,
        path,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    // A lazily restored data dir reads what the plan needs through the
    // remote named here.
    super::use_lazy_remote(
        &Home::from_env()?,
        &AgentName::new(&agent)?,
        remote.as_deref(),
    );
    let (home, a, _lock) = open_writer(&agent)?;
    let plan = {
        let p = Progress::new("redact: reading snapshots", json);
        crate::history::redact::plan(&a, &path, &mut |s, h| p.tick(s, h))?
    };
    if plan.seqs.is_empty() && !dry_run {
        return Err(Error::Invalid(format!(
            "{path} has no content in any snapshot of agent {agent}"
        )));
    }
    let mut parts = 0;
    if !dry_run {
        // Which remote, before anything is erased here.
        let url = super::remote_to_change(&home, &a, remote.as_deref())?;
        if !plan.erase.is_empty() {
            crate::history::redact::apply_local(&a, &path, &plan)?;
        }
        // Every record, not only this one: finishes an earlier run
        // whose remote part was interrupted.
        let rem = crate::repo::remote::Remote::open(&url)?;
        let rt = crate::repo::remote::runtime()?;
        for r in crate::history::redact::records(&a)? {
            parts += rt.block_on(crate::history::redact::apply_remote(&a, &rem, &r)).map_err(|e| {
                Error::Invalid(format!(
                    "erased locally and recorded, but the remote still holds the content ({e}); run the same command again to finish"
                ))
            })?;
        }
    }
    if json {
        let mut v = serde_json::to_value(&plan).expect("plan encodes");
        v["dry_run"] = dry_run.into();
        v["remote_parts_rewritten"] = parts.into();
        writeln!(out, "{v}").map_err(w)?;
    } else {
        let verb = if dry_run { "would erase" } else { "erased" };
        writeln!(
            out,
            "{verb} {} objects of {path} from {} snapshots; {} shared with other files kept; {} remote parts rewritten",
            plan.objects,
            plan.seqs.len(),
            plan.shared_kept,
            parts
        )
        .map_err(w)?;
        if plan.symlinks > 0 {
            writeln!(
                out,
                "note: {} symlinks under {path} keep their targets (inode metadata)",
                plan.symlinks
            )
            .map_err(w)?;
        }
    }
    Ok(())
}

/// Prunes locally, then on the agent's remote (a progress bar unless
/// `json`).
fn prune_agent(
    home: &Home,
    a: &crate::repo::agent::Agent,
    remote: Option<&str>,
    json: bool,
) -> Result<crate::history::retention::PruneReport> {
    let rem = crate::repo::remote::Remote::open(&super::remote_to_change(home, a, remote)?)?;
    let p = Progress::new("prune: checking snapshots", json);
    crate::history::retention::prune(a, &rem, &mut |s, h| p.tick(s, h))
}

fn write_prune(
    out: &mut dyn Write,
    r: &crate::history::retention::PruneReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "pruned {} objects ({} sealed bytes) from {} packs; remote: {} snapshots pruned ({} of them trimmed; {} parts deleted, {} written again with what kept snapshots still read), {} kept as they are (all they hold is still read, or a lazy restore may fetch from them)",
        r.objects_removed,
        r.bytes_removed,
        r.packs_rewritten,
        r.remote_snapshots_pruned,
        r.remote_snapshots_trimmed,
        r.remote_parts_deleted,
        r.remote_parts_rewritten,
        r.remote_snapshots_kept
    )
}
