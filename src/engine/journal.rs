//! The operations the journal records, their encoding, and the engine's
//! side of the journal: every namespace and attribute operation is one
//! [`Op`], applied, then sealed into the journal before it is acknowledged;
//! at the next open the operations recorded on top of head are applied
//! again, in order and at their recorded times, and committed.
//!
//! File data is not journaled: the close of a written file seals a
//! snapshot, which holds it (docs/SEMANTICS.md, "Durability").

use super::{RenameFlags, SetAttr, XattrFlags};
use crate::Result;
use crate::seal::codec::{Reader, Writer};
use crate::seal::tree::FileType;

/// Version byte of an encoded operation.
const OP_VERSION: u8 = 1;

/// One acknowledged operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `create(parent, name, perm, uid, gid)`.
    Create {
        parent: u64,
        name: Vec<u8>,
        perm: u32,
        uid: u32,
        gid: u32,
    },
    /// `mkdir(parent, name, perm, uid, gid)`.
    Mkdir {
        parent: u64,
        name: Vec<u8>,
        perm: u32,
        uid: u32,
        gid: u32,
    },
    /// `symlink(parent, name, target, uid, gid)`.
    Symlink {
        parent: u64,
        name: Vec<u8>,
        target: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    /// `link(ino, newparent, newname)`.
    Link {
        ino: u64,
        newparent: u64,
        newname: Vec<u8>,
    },
    /// `unlink(parent, name)`.
    Unlink { parent: u64, name: Vec<u8> },
    /// `rmdir(parent, name)`.
    Rmdir { parent: u64, name: Vec<u8> },
    /// `rename(parent, name, newparent, newname, flags)`.
    Rename {
        parent: u64,
        name: Vec<u8>,
        newparent: u64,
        newname: Vec<u8>,
        flags: RenameFlags,
    },
    /// `setattr(ino, attrs)`.
    Setattr { ino: u64, attrs: SetAttr },
    /// `setxattr(ino, name, value, flags)`.
    Setxattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: XattrFlags,
    },
    /// `removexattr(ino, name)`.
    Removexattr { ino: u64, name: Vec<u8> },
    /// `mknod(parent, name, kind, perm, rdev, uid, gid)` of a FIFO, socket
    /// or device node (`kind` is a `FileType` value).
    Mknod {
        parent: u64,
        name: Vec<u8>,
        kind: FileType,
        perm: u32,
        rdev: u64,
        uid: u32,
        gid: u32,
    },
}

fn opt_u32(w: &mut Writer, v: Option<u32>) {
    w.u8(u8::from(v.is_some()));
    w.u32(v.unwrap_or(0));
}

fn opt_u64(w: &mut Writer, v: Option<u64>) {
    w.u8(u8::from(v.is_some()));
    w.u64(v.unwrap_or(0));
}

fn opt_i64(w: &mut Writer, v: Option<i64>) {
    w.u8(u8::from(v.is_some()));
    w.i64(v.unwrap_or(0));
}

fn read_flag(r: &mut Reader<'_>) -> Result<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(r.err("flag is neither 0 nor 1")),
    }
}

fn read_opt_u32(r: &mut Reader<'_>) -> Result<Option<u32>> {
    let some = read_flag(r)?;
    let v = r.u32()?;
    if !some && v != 0 {
        return Err(r.err("absent field with a value"));
    }
    Ok(some.then_some(v))
}

fn read_opt_u64(r: &mut Reader<'_>) -> Result<Option<u64>> {
    let some = read_flag(r)?;
    let v = r.u64()?;
    if !some && v != 0 {
        return Err(r.err("absent field with a value"));
    }
    Ok(some.then_some(v))
}

fn read_opt_i64(r: &mut Reader<'_>) -> Result<Option<i64>> {
    let some = read_flag(r)?;
    let v = r.i64()?;
    if !some && v != 0 {
        return Err(r.err("absent field with a value"));
    }
    Ok(some.then_some(v))
}

/// An operation as recorded: what was done, when (ns since the epoch), and
/// the inode it created (0 when it created none), which the replay checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The operation.
    pub op: Op,
    /// Its time, ns.
    pub time_ns: i64,
    /// The inode number it created, or 0.
    pub created: u64,
}

impl Entry {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(OP_VERSION);
        w.i64(self.time_ns);
        w.u64(self.created);
        match &self.op {
            Op::Create {
                parent,
                name,
                perm,
                uid,
                gid,
            }
            | Op::Mkdir {
                parent,
                name,
                perm,
                uid,
                gid,
            } => {
                w.u8(if matches!(self.op, Op::Create { .. }) {
                    1
                } else {
                    2
                });
                w.u64(*parent);
                w.bytes(name);
                w.u32(*perm);
                w.u32(*uid);
                w.u32(*gid);
            }
            Op::Symlink {
                parent,
                name,
                target,
                uid,
                gid,
            } => {
                w.u8(3);
                w.u64(*parent);
                w.bytes(name);
                w.bytes(target);
                w.u32(*uid);
                w.u32(*gid);
            }
            Op::Link {
                ino,
                newparent,
                newname,
            } => {
                w.u8(4);
                w.u64(*ino);
                w.u64(*newparent);
                w.bytes(newname);
            }
            Op::Unlink { parent, name } | Op::Rmdir { parent, name } => {
                w.u8(if matches!(self.op, Op::Unlink { .. }) {
                    5
                } else {
                    6
                });
                w.u64(*parent);
                w.bytes(name);
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            } => {
                w.u8(7);
                w.u64(*parent);
                w.bytes(name);
                w.u64(*newparent);
                w.bytes(newname);
                w.u8(u8::from(flags.noreplace));
                w.u8(u8::from(flags.exchange));
            }
            Op::Setattr { ino, attrs } => {
                w.u8(8);
                w.u64(*ino);
                opt_u32(&mut w, attrs.perm);
                opt_u32(&mut w, attrs.uid);
                opt_u32(&mut w, attrs.gid);
                opt_u64(&mut w, attrs.size);
                opt_i64(&mut w, attrs.atime);
                opt_i64(&mut w, attrs.mtime);
            }
            Op::Setxattr {
                ino,
                name,
                value,
                flags,
            } => {
                w.u8(9);
                w.u64(*ino);
                w.bytes(name);
                w.bytes(value);
                w.u8(u8::from(flags.create));
                w.u8(u8::from(flags.replace));
            }
            Op::Removexattr { ino, name } => {
                w.u8(10);
                w.u64(*ino);
                w.bytes(name);
            }
            Op::Mknod {
                parent,
                name,
                kind,
                perm,
                rdev,
                uid,
                gid,
            } => {
                w.u8(11);
                w.u64(*parent);
                w.bytes(name);
                w.u8(*kind as u8);
                w.u32(*perm);
                w.u64(*rdev);
                w.u32(*uid);
                w.u32(*gid);
            }
        }
        w.0
    }

    /// Decodes [`Entry::encode`]'s bytes; anything else is a typed error.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf, "journal record");
        if r.u8()? != OP_VERSION {
            return Err(r.err("unknown operation version"));
        }
        let time_ns = r.i64()?;
        let created = r.u64()?;
        let op = match r.u8()? {
            k @ (1 | 2) => {
                let parent = r.u64()?;
                let name = r.bytes()?.to_vec();
                let (perm, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
                if k == 1 {
                    Op::Create {
                        parent,
                        name,
                        perm,
                        uid,
                        gid,
                    }
                } else {
                    Op::Mkdir {
                        parent,
                        name,
                        perm,
                        uid,
                        gid,
                    }
                }
            }
            3 => Op::Symlink {
                parent: r.u64()?,
                name: r.bytes()?.to_vec(),
                target: r.bytes()?.to_vec(),
                uid: r.u32()?,
                gid: r.u32()?,
            },
            4 => Op::Link {
                ino: r.u64()?,
                newparent: r.u64()?,
                newname: r.bytes()?.to_vec(),
            },
            k @ (5 | 6) => {
                let parent = r.u64()?;
                let name = r.bytes()?.to_vec();
                if k == 5 {
                    Op::Unlink { parent, name }
                } else {
                    Op::Rmdir { parent, name }
                }
            }
            7 => Op::Rename {
                parent: r.u64()?,
                name: r.bytes()?.to_vec(),
                newparent: r.u64()?,
                newname: r.bytes()?.to_vec(),
                flags: RenameFlags {
                    noreplace: read_flag(&mut r)?,
                    exchange: read_flag(&mut r)?,
                },
            },
            8 => Op::Setattr {
                ino: r.u64()?,
                attrs: SetAttr {
                    perm: read_opt_u32(&mut r)?,
                    uid: read_opt_u32(&mut r)?,
                    gid: read_opt_u32(&mut r)?,
                    size: read_opt_u64(&mut r)?,
                    atime: read_opt_i64(&mut r)?,
                    mtime: read_opt_i64(&mut r)?,
                },
            },
            9 => Op::Setxattr {
                ino: r.u64()?,
                name: r.bytes()?.to_vec(),
                value: r.bytes()?.to_vec(),
                flags: XattrFlags {
                    create: read_flag(&mut r)?,
                    replace: read_flag(&mut r)?,
                },
            },
            10 => Op::Removexattr {
                ino: r.u64()?,
                name: r.bytes()?.to_vec(),
            },
            11 => {
                let parent = r.u64()?;
                let name = r.bytes()?.to_vec();
                let kind = match r.u8()? {
                    4 => FileType::Fifo,
                    5 => FileType::Socket,
                    6 => FileType::CharDev,
                    7 => FileType::BlockDev,
                    _ => return Err(r.err("mknod of a type that is not special")),
                };
                let (perm, rdev, uid, gid) = (r.u32()?, r.u64()?, r.u32()?, r.u32()?);
                if !matches!(kind, FileType::CharDev | FileType::BlockDev) && rdev != 0 {
                    return Err(r.err("a device number on a FIFO or socket"));
                }
                Op::Mknod {
                    parent,
                    name,
                    kind,
                    perm,
                    rdev,
                    uid,
                    gid,
                }
            }
            _ => return Err(r.err("unknown operation")),
        };
        r.finish()?;
        Ok(Entry {
            op,
            time_ns,
            created,
        })
    }
}

/// One of every operation (tests and the fuzz targets start from these).
#[doc(hidden)]
pub fn examples() -> Vec<Op> {
    vec![
        Op::Create {
            parent: 1,
            name: b"a".to_vec(),
            perm: 0o644,
            uid: 5,
            gid: 6,
        },
        Op::Mkdir {
            parent: 1,
            name: b"d".to_vec(),
            perm: 0o755,
            uid: 0,
            gid: 0,
        },
        Op::Symlink {
            parent: 2,
            name: b"l".to_vec(),
            target: b"../t".to_vec(),
            uid: 1,
            gid: 1,
        },
        Op::Link {
            ino: 3,
            newparent: 1,
            newname: b"h".to_vec(),
        },
        Op::Unlink {
            parent: 1,
            name: b"h".to_vec(),
        },
        Op::Rmdir {
            parent: 1,
            name: b"d".to_vec(),
        },
        Op::Rename {
            parent: 1,
            name: b"a".to_vec(),
            newparent: 2,
            newname: b"b".to_vec(),
            flags: RenameFlags {
                noreplace: false,
                exchange: true,
            },
        },
        Op::Setattr {
            ino: 3,
            attrs: SetAttr {
                perm: Some(0o600),
                size: Some(0),
                mtime: Some(-5),
                ..SetAttr::default()
            },
        },
        Op::Setxattr {
            ino: 3,
            name: b"user.x".to_vec(),
            value: vec![0, 1, 2],
            flags: XattrFlags {
                create: true,
                replace: false,
            },
        },
        Op::Removexattr {
            ino: 3,
            name: b"user.x".to_vec(),
        },
        Op::Mknod {
            parent: 1,
            name: b"fifo".to_vec(),
            kind: FileType::Fifo,
            perm: 0o600,
            rdev: 0,
            uid: 1,
            gid: 2,
        },
        Op::Mknod {
            parent: 1,
            name: b"null".to_vec(),
            kind: FileType::CharDev,
            perm: 0o666,
            rdev: 0x0103,
            uid: 0,
            gid: 0,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_round_trips_and_damage_is_an_error() {
        for (i, op) in examples().into_iter().enumerate() {
            let e = Entry {
                op,
                time_ns: 1_700_000_000_000_000_000 + i as i64,
                created: i as u64,
            };
            let b = e.encode();
            assert_eq!(Entry::decode(&b).unwrap(), e);
            for cut in 0..b.len() {
                assert!(Entry::decode(&b[..cut]).is_err(), "{e:?} cut at {cut}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(Entry::decode(&longer).is_err());
        }
        assert!(
            Entry::decode(&[
                OP_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99
            ])
            .is_err()
        );
    }

    /// The encoding is a format (docs/FORMAT.md, "Operation journal"): a
    /// record written by this version must decode the same later.
    #[test]
    fn golden_encoding() {
        let e = Entry {
            op: Op::Rename {
                parent: 1,
                name: b"a".to_vec(),
                newparent: 2,
                newname: b"bc".to_vec(),
                flags: RenameFlags {
                    noreplace: true,
                    exchange: false,
                },
            },
            time_ns: 0x0102_0304_0506_0708,
            created: 0,
        };
        let hex: String = e.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "01",               // version
                "0807060504030201", // time_ns
                "0000000000000000", // created
                "07",               // rename
                "0100000000000000",
                "01000000",
                "61", // parent, name
                "0200000000000000",
                "02000000",
                "6263", // newparent, newname
                "01",
                "00" // noreplace, exchange
            )
        );
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }
}
