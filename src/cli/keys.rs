//! `sovseal key`: export, import, fingerprint and rotation of the master key.

use super::args::*;
use super::master;
use crate::config::Home;
use crate::custody;
use crate::{Error, Result};
use std::io::Write;

/// The passphrase: the first line of `file`, else asked on the terminal
/// (twice when `confirm`), never echoed.
fn passphrase(file: Option<&std::path::Path>, confirm: bool) -> Result<zeroize::Zeroizing<String>> {
    if let Some(f) = file {
        let all = zeroize::Zeroizing::new(std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?);
        let line = all.lines().next().unwrap_or("");
        return Ok(zeroize::Zeroizing::new(line.to_owned()));
    }
    let first = ask("passphrase: ")?;
    if confirm && *ask("passphrase again: ")? != *first {
        return Err(Error::Invalid("the passphrases differ".into()));
    }
    Ok(first)
}

/// Reads one line from /dev/tty with echo off.
fn ask(prompt: &str) -> Result<zeroize::Zeroizing<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    use std::io::BufRead;
    let no_tty = |e: std::io::Error| {
        Error::Invalid(format!(
            "no terminal to ask for the passphrase ({e}); use --passphrase-file"
        ))
    };
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let saved = tcgetattr(&tty).map_err(|e| no_tty(e.into()))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(|e| no_tty(e.into()))?;
    let _ = tty.write_all(prompt.as_bytes());
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = tty.write_all(b"\n");
    read.map_err(no_tty)?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok(trimmed)
}

/// `sovseal key ...`.
pub(super) fn key(cmd: KeyCommand, out: &mut dyn Write) -> Result<()> {
    let w = |e: std::io::Error| Error::io("stdout", e);
    match cmd {
        KeyCommand::Export {
            out: file,
            passphrase_file,
            json,
        } => {
            let home = Home::from_env()?;
            let m = master(&home)?;
            if file.symlink_metadata().is_ok() {
                return Err(Error::Invalid(format!(
                    "{} already exists; export to a new file",
                    file.display()
                )));
            }
            let pass = passphrase(passphrase_file.as_deref(), true)?;
            let e = crate::custody::export::write_new(&file, &m, &pass)?;
            if json {
                let v = serde_json::json!({
                    "fingerprint": e.fingerprint,
                    "file": file.to_string_lossy(),
                });
                return writeln!(out, "{v}").map_err(w);
            }
            writeln!(
                out,
                "exported master key {} to {} (mode 0600). Keep it and its passphrase apart, off this machine.",
                e.fingerprint,
                file.display()
            )
            .map_err(w)?;
        }
        KeyCommand::Import {
            file,
            passphrase_file,
            json,
        } => {
            let home = Home::from_env()?;
            let c = custody::Custody::from_env()?;
            let e = crate::custody::export::read(&file)?;
            let pass = passphrase(passphrase_file.as_deref(), false)?;
            let key = crate::custody::export::open(&e, &pass)?;
            let imported = custody::install(&home, &c, &key)?;
            if json {
                let v = serde_json::json!({
                    "fingerprint": key.fingerprint(),
                    "imported": imported,
                });
                writeln!(out, "{v}").map_err(w)?;
            } else if imported {
                writeln!(out, "imported master key {}", key.fingerprint()).map_err(w)?;
            } else {
                writeln!(
                    out,
                    "master key {} is already in custody; nothing changed",
                    key.fingerprint()
                )
                .map_err(w)?;
            }
        }
        KeyCommand::Fingerprint { json } => {
            let home = Home::from_env()?;
            let m = master(&home)?;
            if json {
                let versions: Vec<_> = m
                    .versions()
                    .into_iter()
                    .map(|v| {
                        serde_json::json!({
                            "version": v,
                            "fingerprint": m.fingerprint_of(v).expect("listed version"),
                            "current": v == m.current_version(),
                        })
                    })
                    .collect();
                let v = serde_json::json!({ "versions": versions });
                return writeln!(out, "{v}").map_err(w);
            }
            for v in m.versions() {
                let fp = m.fingerprint_of(v).expect("listed version");
                let cur = if v == m.current_version() {
                    " (current)"
                } else {
                    ""
                };
                writeln!(out, "version {v}: {fp}{cur}").map_err(w)?;
            }
        }
        KeyCommand::Rotate { json } => {
            let home = Home::from_env()?;
            let c = custody::Custody::from_env()?;
            let (m, v) = custody::rotate(&home, &c)?;
            if json {
                let j = serde_json::json!({
                    "version": v,
                    "fingerprint": m.fingerprint_of(v).expect("new version"),
                });
                return writeln!(out, "{j}").map_err(w);
            }
            writeln!(
                out,
                "added master key version {v} ({}); new data is sealed under it from the next mount on. Export the key again: older exports cannot open it.",
                m.fingerprint_of(v).expect("new version")
            )
            .map_err(w)?;
        }
    }
    Ok(())
}
