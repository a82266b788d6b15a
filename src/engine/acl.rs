//! POSIX access control lists, kept in step with the mode as Linux local
//! file systems keep them.
//!
//! With FUSE's POSIX ACL support the kernel enforces ACLs itself and hands
//! them to the file system as the extended attributes
//! `system.posix_acl_access` and `system.posix_acl_default`, in the kernel's
//! xattr encoding (a little-endian version word, 2, then 8-byte entries:
//! tag, permission bits, id). What the kernel leaves to the file system is
//! done here, following `fs/posix_acl.c`:
//! - setting an access ACL sets the mode's permission bits from it, and an
//!   ACL that says no more than the mode is not stored
//!   ([`Acl::equiv_mode`]);
//! - `chmod` rewrites the owner, mask (or group) and other entries
//!   ([`Acl::chmod`]);
//! - a node made in a directory with a default ACL inherits it: the
//!   requested mode (no umask) is masked by it, the node gets it as its
//!   access ACL, and a subdirectory as its default ACL too
//!   ([`Acl::create_masq`]).
//!
//! ACLs are stored, sealed and snapshotted like every other attribute.

use crate::{Error, Result};

/// The access ACL attribute.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL attribute (directories only).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id field of entries that name no user or group.
const UNDEFINED_ID: u32 = u32::MAX;

/// True for the names this module owns.
pub fn is_acl(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

/// One entry: who, and which of read (4), write (2), execute (1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A decoded, valid ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

impl Acl {
    /// Decodes the xattr encoding and checks what `posix_acl_valid` checks:
    /// exactly one owner, group and other entry, a mask when there are
    /// named entries, permissions within rwx, entries sorted by tag and
    /// id with no id twice. Anything else is `EINVAL`.
    pub fn decode(bytes: &[u8]) -> Result<Acl> {
        let bad = || Error::fs("setxattr", libc::EINVAL);
        if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(8) {
            return Err(bad());
        }
        if u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) != VERSION {
            return Err(bad());
        }
        let entries: Vec<Entry> = bytes[4..]
            .chunks_exact(8)
            .map(|e| Entry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let count = |tag| entries.iter().filter(|e| e.tag == tag).count();
        let named = count(USER) + count(GROUP);
        if count(USER_OBJ) != 1
            || count(GROUP_OBJ) != 1
            || count(OTHER) != 1
            || count(MASK) > 1
            || (named > 0 && count(MASK) == 0)
        {
            return Err(bad());
        }
        let mut prev: Option<(u16, u32)> = None;
        for e in &entries {
            let known = matches!(e.tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER);
            if !known || e.perm & !7 != 0 {
                return Err(bad());
            }
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                UNDEFINED_ID
            };
            let key = (e.tag, id);
            if prev.is_some_and(|p| p >= key) {
                return Err(bad());
            }
            prev = Some(key);
        }
        Ok(Acl(entries))
    }

    /// The xattr encoding (ids of unnamed entries as the kernel writes them).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.0.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            let id = if matches!(e.tag, USER | GROUP) {
                e.id
            } else {
                UNDEFINED_ID
            };
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The permission bits this ACL gives `perm` (owner, then mask or
    /// group, then other; set-id and sticky bits kept), and whether it says
    /// more than they can (named entries or a mask): only then is it
    /// stored.
    pub fn equiv_mode(&self, perm: u32) -> (u32, bool) {
        let mut mode = 0u32;
        let mut extended = false;
        for e in &self.0 {
            let p = u32::from(e.perm & 7);
            match e.tag {
                USER_OBJ => mode |= p << 6,
                GROUP_OBJ => mode |= p << 3,
                OTHER => mode |= p,
                MASK => {
                    mode = (mode & !0o070) | (p << 3);
                    extended = true;
                }
                _ => extended = true,
            }
        }
        ((perm & !0o777) | mode, extended)
    }

    /// `chmod` to `perm`: the owner, mask (group when there is no mask)
    /// and other entries take the new bits.
    pub fn chmod(&mut self, perm: u32) {
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm = ((perm >> 6) & 7) as u16,
                MASK => e.perm = ((perm >> 3) & 7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((perm >> 3) & 7) as u16,
                OTHER => e.perm = (perm & 7) as u16,
                _ => {}
            }
        }
    }

    /// Inheritance at creation: this (a directory's default ACL, cloned)
    /// and the requested `perm` mask each other; returns the new mode and
    /// whether the result must be stored as the node's access ACL.
    pub fn create_masq(&mut self, perm: u32) -> (u32, bool) {
        let mut mode = perm & 0o777;
        let mut extended = false;
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((mode >> 6) & 7) as u16;
                    mode &= (u32::from(e.perm) << 6) | !0o700;
                }
                USER | GROUP => extended = true,
                MASK => extended = true,
                OTHER => {
                    e.perm &= (mode & 7) as u16;
                    mode &= u32::from(e.perm) | !0o007;
                }
                _ => {}
            }
        }
        for e in &mut self.0 {
            if e.tag == MASK || (e.tag == GROUP_OBJ && !has_mask) {
                e.perm &= ((mode >> 3) & 7) as u16;
                mode &= (u32::from(e.perm) << 3) | !0o070;
            }
        }
        ((perm & !0o777) | (mode & 0o777), extended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
        .encode()
    }

    #[test]
    fn minimal_acl_is_the_mode() {
        let a = Acl::decode(&acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)])).unwrap();
        assert_eq!(a.equiv_mode(0o4000), (0o4754, false));
    }

    #[test]
    fn mask_sets_the_group_bits() {
        let a = Acl::decode(&acl(&[
            (USER_OBJ, 6, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, 0),
            (MASK, 6, 0),
            (OTHER, 0, 0),
        ]))
        .unwrap();
        assert_eq!(a.equiv_mode(0), (0o660, true));
    }

    #[test]
    fn invalid_acls_are_refused() {
        for bad in [
            acl(&[(USER_OBJ, 7, 0), (OTHER, 4, 0)]),
            acl(&[
                (USER_OBJ, 7, 0),
                (USER, 7, 5),
                (GROUP_OBJ, 5, 0),
                (OTHER, 4, 0),
            ]),
            acl(&[(USER_OBJ, 9, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)]),
            acl(&[(GROUP_OBJ, 5, 0), (USER_OBJ, 7, 0), (OTHER, 4, 0)]),
            acl(&[
                (USER_OBJ, 7, 0),
                (USER, 7, 5),
                (USER, 7, 5),
                (GROUP_OBJ, 5, 0),
                (MASK, 7, 0),
                (OTHER, 4, 0),
            ]),
            vec![1, 0, 0, 0],
            vec![2, 0, 0, 0, 1],
        ] {
            assert!(Acl::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chmod_rewrites_owner_mask_other() {
        let mut a = Acl::decode(&acl(&[
            (USER_OBJ, 7, 0),
            (USER, 7, 1000),
            (GROUP_OBJ, 7, 0),
            (MASK, 7, 0),
            (OTHER, 7, 0),
        ]))
        .unwrap();
        a.chmod(0o640);
        assert_eq!(a.equiv_mode(0), (0o640, true));
        // The named entry and the owning group keep their bits.
        assert_eq!(a.0[1].perm, 7);
        assert_eq!(a.0[2].perm, 7);
    }

    #[test]
    fn inheritance_masks_both_ways() {
        let mut d = Acl::decode(&acl(&[
            (USER_OBJ, 7, 0),
            (GROUP_OBJ, 5, 0),
            (GROUP, 7, 50),
            (MASK, 7, 0),
            (OTHER, 0, 0),
        ]))
        .unwrap();
        // creat(0666): no execute anywhere, other cut to nothing.
        let (mode, store) = d.create_masq(0o100666);
        assert_eq!(mode, 0o100660);
        assert!(store);
        assert_eq!(d.equiv_mode(0).0, 0o660);
        let mut plain =
            Acl::decode(&acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 5, 0)])).unwrap();
        assert_eq!(plain.create_masq(0o2777), (0o2755, false));
    }
}
