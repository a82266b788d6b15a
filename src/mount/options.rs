//! `-o` mount options, as sovseal understands them (mount(8) style), in
//! types of its own: `fuse.rs` turns them into the FUSE library's.

use crate::config::AgentName;
use crate::{Error, Result};

/// Who may use the mount besides its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The mounting user only (the default).
    Owner,
    /// Everyone the file modes allow (`allow_other`).
    All,
    /// The owner and root (`allow_root`).
    RootAndOwner,
}

/// A kernel mount flag passed through as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Flag {
    ReadOnly,
    ReadWrite,
    AutoUnmount,
    NoAtime,
    Atime,
    NoSuid,
    Suid,
    NoDev,
    Dev,
    NoExec,
    Exec,
    Sync,
    Async,
    DirSync,
}

/// Mount options after parsing. The kernel always checks permissions
/// against the file modes (`default_permissions`): with `allow_other`,
/// other users get exactly what the modes allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags in the order given.
    pub flags: Vec<Flag>,
    /// Who may use the mount.
    pub access: Access,
    /// `ro`: the mount refuses every mutation.
    pub read_only: bool,
    /// The source name shown by mount(8) and /proc/mounts.
    pub fsname: String,
    /// `sync_close`: every close of a written file is durable (sovseal's
    /// own option, not passed to the kernel).
    pub sync_close: bool,
    /// `writeback_cache`: the kernel caches writes and sends them in larger
    /// pieces (sovseal's own option, asked of the kernel at FUSE init).
    pub writeback_cache: bool,
    /// `readahead_kib=N`: the kernel's read-ahead window for the mount
    /// (sovseal's own option, set through sysfs once mounted).
    pub readahead_kib: Option<u32>,
}

impl MountOptions {
    /// True when set-ID bits and file capabilities take effect for
    /// programs run from this mount: `suid` given (a mount is `nosuid`
    /// unless asked; fuser refuses both at once).
    pub fn honors_setid(&self) -> bool {
        self.flags.contains(&Flag::Suid)
    }
}

/// Parses `-o` options (already split at commas) for `agent`.
pub fn parse(opts: &[String], agent: &AgentName) -> Result<MountOptions> {
    let mut m = MountOptions {
        flags: Vec::new(),
        access: Access::Owner,
        read_only: false,
        fsname: format!("sovseal:{agent}"),
        sync_close: false,
        writeback_cache: false,
        readahead_kib: None,
    };
    for o in opts.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let flag = match o {
            "ro" => {
                m.read_only = true;
                Flag::ReadOnly
            }
            "rw" => Flag::ReadWrite,
            "allow_other" => {
                m.access = Access::All;
                continue;
            }
            "allow_root" => {
                m.access = Access::RootAndOwner;
                continue;
            }
            "default_permissions" => continue,
            "sync_close" => {
                m.sync_close = true;
                continue;
            }
            "writeback_cache" => {
                m.writeback_cache = true;
                continue;
            }
            "auto_unmount" => Flag::AutoUnmount,
            "noatime" => Flag::NoAtime,
            "atime" => Flag::Atime,
            "nosuid" => Flag::NoSuid,
            "suid" => Flag::Suid,
            "nodev" => Flag::NoDev,
            "dev" => Flag::Dev,
            "noexec" => Flag::NoExec,
            "exec" => Flag::Exec,
            "sync" => Flag::Sync,
            "async" => Flag::Async,
            "dirsync" => Flag::DirSync,
            o if o.starts_with("readahead_kib=") => {
                let v = &o["readahead_kib=".len()..];
                m.readahead_kib = Some(v.parse().map_err(|_| {
                    Error::Invalid(format!("readahead_kib={v}: not a number of KiB"))
                })?);
                continue;
            }
            o if o.starts_with("fsname=") => {
                m.fsname = o["fsname=".len()..].to_owned();
                continue;
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown mount option {other:?} (known: ro, rw, allow_other, allow_root, default_permissions, sync_close, writeback_cache, readahead_kib=N, auto_unmount, [no]atime, [no]suid, [no]dev, [no]exec, sync, async, dirsync, fsname=)"
                )));
            }
        };
        m.flags.push(flag);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_refuses_unknown() {
        let a = AgentName::new("a").unwrap();
        let o = |s: &[&str]| parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>(), &a);
        let m = o(&["ro", "allow_other", "noatime", "fsname=x"]).unwrap();
        assert!(m.read_only);
        assert_eq!(m.access, Access::All);
        assert_eq!(m.flags, vec![Flag::ReadOnly, Flag::NoAtime]);
        assert_eq!(m.fsname, "x");
        assert_eq!(o(&[]).unwrap().fsname, "sovseal:a");
        assert!(matches!(o(&["bogus"]), Err(Error::Invalid(_))));
        let m = o(&["writeback_cache", "sync_close"]).unwrap();
        assert!(m.writeback_cache && m.sync_close && m.flags.is_empty());
        assert!(!o(&[]).unwrap().writeback_cache);
        let m = o(&["readahead_kib=1024"]).unwrap();
        assert_eq!((m.readahead_kib, m.flags.len()), (Some(1024), 0));
        assert!(!m.honors_setid());
        assert!(o(&["allow_other", "suid"]).unwrap().honors_setid());
        assert_eq!(o(&[]).unwrap().readahead_kib, None);
        assert!(matches!(o(&["readahead_kib=lots"]), Err(Error::Invalid(_))));
    }
}
