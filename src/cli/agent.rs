//! `sovseal init`, `snapshots`, `cat`, `ls`, `status`: an agent and its snapshots.

use super::args::*;
use super::open_agent;
use crate::config::{AgentName, Home};
use crate::custody;
use crate::engine::Engine;
use crate::time::rfc3339_ms;
use crate::{Error, Result};
use std::io::Write;

/// `sovseal init`.
pub(super) fn init(args: InitArgs, out: &mut dyn Write) -> Result<()> {
    let InitArgs { agent, json } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let home = Home::from_env()?;
    let c = custody::Custody::from_env()?;
    let (m, created) = custody::init(&home, &c)?;
    let place = match c {
        custody::Custody::Keychain => "the OS keychain".to_string(),
        custody::Custody::File => home.key_file().display().to_string(),
    };
    if created {
        if !json {
            writeln!(out, "created a new master key in {place}").map_err(w)?;
        }
        eprintln!(
            "WARNING: there is no escrow and no reset. If this master key is lost, every snapshot, local and replicated, is permanently unreadable. Back it up now: sovseal key export --out FILE"
        );
    } else if !json {
        writeln!(out, "master key already present in {place}; left unchanged").map_err(w)?;
    }
    let mut v = serde_json::json!({
        "master_key": if created { "created" } else { "present" },
        "custody": place,
        "fingerprint": m.fingerprint(),
    });
    if let Some(a) = agent {
        let name = AgentName::new(&a)?;
        super::use_lazy_remote(&home, &name, None);
        let e = Engine::open(&home, &name, &m)?;
        crate::history::redact::guard_lazy(e.agent(), true)?;
        if json {
            v["agent"] = name.to_string().into();
            v["data_dir"] = e.agent().data_dir().display().to_string().into();
            v["head_seq"] = e.head().seq().into();
            return writeln!(out, "{v}").map_err(w);
        }
        writeln!(
            out,
            "agent {name} ready at {} (head {})",
            e.agent().data_dir().display(),
            e.head().seq()
        )
        .map_err(w)?;
    }
    if json {
        writeln!(out, "{v}").map_err(w)?;
    }
    Ok(())
}

/// `sovseal snapshots`.
pub(super) fn snapshots(args: SnapshotsArgs, out: &mut dyn Write) -> Result<()> {
    let SnapshotsArgs {
        agent,
        limit,
        after,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    if limit == 0 {
        return Err(Error::Invalid("--limit must be at least 1".into()));
    }
    let (_, a) = open_agent(&agent)?;
    let page = a.list(after, limit)?;
    let next = if page.len() as u64 == limit {
        page.last().map(|s| s.seq)
    } else {
        None
    };
    if json {
        let items: Vec<_> = page
            .iter()
            .map(|s| {
                serde_json::json!({
                    "seq": s.seq,
                    "timestamp": rfc3339_ms(s.timestamp_ms),
                    "timestamp_ms": s.timestamp_ms,
                    "hash": crate::hex::encode(&s.hash),
                    "parent": crate::hex::encode(&s.parent),
                    "byte_size": s.byte_size,
                    "key_version": s.key_version,
                })
            })
            .collect();
        let v = serde_json::json!({ "snapshots": items, "next_after": next });
        writeln!(out, "{v}").map_err(w)?;
    } else {
        writeln!(out, "{:>10}  {:<24}  {:>8}  HASH", "SEQ", "TIME", "BYTES").map_err(w)?;
        for s in &page {
            writeln!(
                out,
                "{:>10}  {:<24}  {:>8}  {}",
                s.seq,
                rfc3339_ms(s.timestamp_ms),
                s.byte_size,
                &crate::hex::encode(&s.hash)[..16]
            )
            .map_err(w)?;
        }
        if let Some(n) = next {
            writeln!(out, "more: --after {n}").map_err(w)?;
        }
    }
    Ok(())
}

/// `sovseal cat`.
pub(super) fn cat(args: CatArgs, out: &mut dyn Write) -> Result<()> {
    let CatArgs { agent, seq, path } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (_, a) = open_agent(&agent)?;
    let v = match seq {
        Some(s) => a.snapshot(s)?,
        None => a.head()?,
    };
    let ino = v.resolve(path.as_bytes())?;
    let size = v.getattr(ino)?.size;
    let mut off = 0;
    while off < size {
        let buf = v.read(ino, off, 1 << 20)?;
        out.write_all(&buf).map_err(w)?;
        off += buf.len() as u64;
    }
    Ok(())
}

/// `sovseal status`.
pub(super) fn status(args: StatusArgs, out: &mut dyn Write) -> Result<()> {
    let StatusArgs { agent, json } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (home, a) = super::open_agent_as_is(&agent)?;
    let head = a.head()?.seq();
    let crate::repo::replication_state::ReplicationState {
        replicated,
        fork,
        remote,
        error,
        checkpoint_error,
    } = crate::repo::replication_state::ReplicationState::read(&a)?;
    let (queued_objects, queued_bytes) = a.repo().index()?.objects_after(replicated)?;
    let follow = crate::repo::replication_state::FollowState::read(&a)?;
    // The remote this data dir follows, else the one it replicates to
    // (or was restored from).
    let remote = match (remote, follow.as_ref().and_then(|f| f.remote.clone())) {
        (_, Some(followed)) => followed,
        (Some(u), None) => crate::repo::remote::shown(&u),
        (None, None) => crate::repo::remote::shown(&home.remote_for(a.name(), None)?),
    };
    let verified = crate::history::verify::last_verified(&a);
    let checkpointed = crate::history::checkpoint::checkpointed_seq(&a)?;
    let daemon = crate::repo::agent::writer_pid(&home, a.name());
    // Written before durability was recorded: all of it is durable.
    let durable = a.repo().index()?.durable_seq()?.unwrap_or(head);
    let following = follow.as_ref().map(|f| {
        serde_json::json!({
            "remote": f.remote,
            "remote_head": f.remote_head,
            "behind": f.remote_head.saturating_sub(head),
            "polled_at": rfc3339_ms(f.polled_at_ms),
            "error": f.error,
            "stalled": f.stalled,
        })
    });
    // A lazily restored data dir: what its remote index names, and how
    // much of it is here.
    let lazy = match a.repo().lazy() {
        Some(l) => {
            let kept = l.kept()?;
            Some(serde_json::json!({
                "remote_objects": l.stats().remote_objects,
                "fetched_objects": kept,
            }))
        }
        None => None,
    };
    // A flat start's older history still being fetched (or stopped).
    let history = crate::history::older::pending(&a)?.map(|(from, failed)| {
        serde_json::json!({ "from_seq": from, "loading": failed.is_none(), "error": failed })
    });
    let v = serde_json::json!({
        "agent": agent,
        "mounted_by_pid": daemon,
        "key_version": a.repo().keys().key_version(),
        "head_seq": head,
        "durable_seq": durable,
        "replicated_seq": replicated,
        "verified_seq": verified.map(|v| v.0),
        "verified_at": verified.map(|v| rfc3339_ms(v.1)),
        "checkpointed_seq": checkpointed,
        "checkpoint_error": checkpoint_error,
        "queue_snapshots": head.saturating_sub(replicated),
        "queue_objects": queued_objects,
        "queue_bytes": queued_bytes,
        "last_error": error,
        "fork_at": fork,
        "remote": remote,
        "following": following,
        "lazy": lazy,
        "older_history": history,
    });
    if json {
        writeln!(out, "{v}").map_err(w)?;
    } else {
        writeln!(out, "agent       {agent}").map_err(w)?;
        writeln!(out, "head        {head}").map_err(w)?;
        if durable < head {
            writeln!(
                out,
                "durable     {durable} ({} sealed, not yet synced)",
                head - durable
            )
            .map_err(w)?;
        } else {
            writeln!(out, "durable     {head}").map_err(w)?;
        }
        writeln!(out, "replicated  {replicated}").map_err(w)?;
        if let Some(l) = &lazy {
            writeln!(
                out,
                "lazy        {} of {} remote objects fetched (content is fetched on first read)",
                l["fetched_objects"], l["remote_objects"]
            )
            .map_err(w)?;
        }
        if let Some(h) = &history {
            match h["error"].as_str() {
                None => writeln!(
                    out,
                    "history     from snapshot {} here; the {} before it are being fetched and checked",
                    h["from_seq"],
                    h["from_seq"].as_u64().unwrap_or(1) - 1
                )
                .map_err(w)?,
                Some(e) => writeln!(
                    out,
                    "HISTORY     from snapshot {} here; the older ones did not check: {e}",
                    h["from_seq"]
                )
                .map_err(w)?,
            }
        }
        match verified {
            Some((s, at)) => writeln!(out, "verified    {s} (at {})", rfc3339_ms(at)).map_err(w)?,
            None => writeln!(out, "verified    never (run sovseal verify)").map_err(w)?,
        }
        match checkpointed {
            Some(s) => writeln!(out, "checkpoint  {s}").map_err(w)?,
            None => writeln!(out, "checkpoint  none yet").map_err(w)?,
        }
        if let Some(e) = &checkpoint_error {
            writeln!(out, "CHECKPOINT ERROR  {e}").map_err(w)?;
        }
        match daemon {
            Some(pid) => writeln!(out, "mounted     yes (pid {pid})").map_err(w)?,
            None => writeln!(out, "mounted     no").map_err(w)?,
        }
        writeln!(
            out,
            "queue       {} snapshots, {queued_objects} objects, {queued_bytes} bytes",
            head.saturating_sub(replicated)
        )
        .map_err(w)?;
        writeln!(out, "remote      {remote}").map_err(w)?;
        if let Some(f) = fork {
            writeln!(out, "FORK        {}", Error::Fork { seq: f }).map_err(w)?;
        }
        if let Some(e) = error {
            writeln!(out, "last error  {e}").map_err(w)?;
        }
        if let Some(f) = follow {
            writeln!(
                out,
                "following   remote head {}, {} behind (polled at {})",
                f.remote_head,
                f.remote_head.saturating_sub(head),
                rfc3339_ms(f.polled_at_ms)
            )
            .map_err(w)?;
            match (&f.error, f.stalled) {
                (Some(e), true) => writeln!(out, "FOLLOW STALLED  {e}").map_err(w)?,
                (Some(e), false) => writeln!(out, "follow error  {e}").map_err(w)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// `sovseal takeover`.
pub(super) fn takeover(args: TakeoverArgs, out: &mut dyn Write) -> Result<()> {
    let TakeoverArgs {
        agent,
        remote,
        quiet_secs,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let home = Home::from_env()?;
    let name = AgentName::new(&agent)?;
    let m = super::master(&home)?;
    let url = home.remote_for(&name, remote.as_deref())?;
    let rem = crate::repo::remote::Remote::open(&url)?;
    let head = crate::replication::takeover::takeover(
        &home,
        &name,
        &m,
        &rem,
        std::time::Duration::from_secs(quiet_secs),
        &mut |msg| {
            if !json {
                eprintln!("takeover: {msg}");
            }
        },
    )?;
    if json {
        let v = serde_json::json!({ "agent": agent, "head_seq": head, "remote": rem.shown_url() });
        writeln!(out, "{v}").map_err(w)?;
    } else {
        writeln!(
            out,
            "no writer seen on {}: this machine can write agent {agent} from snapshot {head}; mount it without --follow",
            rem.shown_url()
        )
        .map_err(w)?;
    }
    Ok(())
}

/// `sovseal ls`.
pub(super) fn ls(args: LsArgs, out: &mut dyn Write) -> Result<()> {
    let LsArgs {
        agent,
        seq,
        path,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    let (_, a) = open_agent(&agent)?;
    let v = match seq {
        Some(s) => a.snapshot(s)?,
        None => a.head()?,
    };
    let ino = v.resolve(path.as_bytes())?;
    let mut items = Vec::new();
    for (name, e) in v.entries(ino)?.iter() {
        let i = v.getattr(e.ino)?;
        use crate::seal::tree::FileType as T;
        let (t, kind) = match e.file_type {
            T::File => ('-', "file"),
            T::Dir => ('d', "dir"),
            T::Symlink => ('l', "symlink"),
            T::Fifo => ('p', "fifo"),
            T::Socket => ('s', "socket"),
            T::CharDev => ('c', "char"),
            T::BlockDev => ('b', "block"),
        };
        if json {
            items.push(serde_json::json!({
                "name": String::from_utf8_lossy(name),
                "type": kind,
                "mode": format!("{:04o}", i.perm),
                "size": i.size,
                "mtime_ns": i.mtime,
                "uid": i.uid,
                "gid": i.gid,
            }));
            continue;
        }
        writeln!(
            out,
            "{t}{:04o} {:>12} {}",
            i.perm,
            i.size,
            String::from_utf8_lossy(name)
        )
        .map_err(w)?;
    }
    if json {
        let j = serde_json::json!({ "seq": v.seq(), "path": path, "entries": items });
        writeln!(out, "{j}").map_err(w)?;
    }
    Ok(())
}

/// `sovseal reset`.
pub(super) fn reset(args: ResetArgs, out: &mut dyn Write) -> Result<()> {
    let ResetArgs {
        agent,
        discard_local_history,
        json,
    } = args;
    let w = |e: std::io::Error| Error::io("stdout", e);
    if !discard_local_history {
        return Err(Error::Invalid(
            "sovseal reset moves this agent's local history aside; say so with --discard-local-history".into(),
        ));
    }
    let home = Home::from_env()?;
    let name = AgentName::new(&agent)?;
    let to = crate::repo::agent::discard_local(&home, &name)?;
    if json {
        let v = serde_json::json!({ "agent": agent, "moved_to": to.to_string_lossy() });
        return writeln!(out, "{v}").map_err(w);
    }
    writeln!(
        out,
        "agent {agent}: local data and seen-head record moved to {}; the next mount restores it from its remote if that holds it, else starts it over",
        to.display()
    )
    .map_err(w)?;
    Ok(())
}
