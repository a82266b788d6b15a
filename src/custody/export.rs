//! Key backup (seed 003: a lost master key loses everything): the master
//! key sealed under a passphrase, for `sovseal key export` / `key import`.
//!
//! The export file is JSON (docs/FORMAT.md, "Key export"):
//! `{"format":"sovseal-key-export","version":1,"kdf":{"alg":"argon2id",
//! "m_kib":…,"t_cost":…,"p_cost":…,"salt":b64},"fingerprint":hex,
//! "sealed":b64}` where `sealed` = AES-256-GCM(`IV || ct || tag`) of the
//! 32 key bytes under Argon2id(passphrase, salt), with every header field
//! bound as AAD. A wrong passphrase and a damaged file look the same: the
//! tag does not verify, and nothing is imported.

use crate::seal::aead;
use crate::seal::keys::{KEY_LEN, MasterKey};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

/// The `format` field of an export file.
pub const FORMAT: &str = "sovseal-key-export";
/// The export format version this build writes for a key with one version
/// (the 32 key bytes sealed).
pub const VERSION: u32 = 1;
/// The export format version for a rotated key: the sealed plaintext is
/// `version u32 BE || 32 key bytes` for every key version, ascending.
pub const VERSION_ROTATED: u32 = 2;
/// Shortest passphrase accepted for a new export.
pub const MIN_PASSPHRASE: usize = 12;

/// Argon2id parameters. The defaults follow RFC 9106's second recommended
/// option (64 MiB, 3 passes), with one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// Always `argon2id`.
    pub alg: String,
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// 16 random bytes, base64.
    pub salt: String,
}

impl Kdf {
    /// Fresh parameters with a random salt.
    pub fn new() -> Result<Self> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| Error::Custody(format!("random: {e}")))?;
        Ok(Kdf {
            alg: "argon2id".into(),
            m_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
            salt: B64.encode(salt),
        })
    }

    /// Parameters a file may ask for: enough to be safe, bounded so that a
    /// crafted file cannot make import use gigabytes or hours.
    fn check(&self) -> Result<Vec<u8>> {
        let bad = |d: String| Err(Error::Custody(format!("key export file: {d}")));
        if self.alg != "argon2id" {
            return bad(format!("unknown KDF {:?} (expected argon2id)", self.alg));
        }
        if !(8 * 1024..=4 * 1024 * 1024).contains(&self.m_kib)
            || !(1..=64).contains(&self.t_cost)
            || !(1..=16).contains(&self.p_cost)
        {
            return bad(format!(
                "KDF parameters out of bounds (m_kib {}, t_cost {}, p_cost {})",
                self.m_kib, self.t_cost, self.p_cost
            ));
        }
        let salt = B64
            .decode(&self.salt)
            .or_else(|_| bad("salt is not base64".into()))?;
        if salt.len() < 16 {
            return bad("salt shorter than 16 bytes".into());
        }
        Ok(salt)
    }

    fn derive(&self, passphrase: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let salt = self.check()?;
        let params = argon2::Params::new(self.m_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|e| Error::Custody(format!("Argon2id parameters: {e}")))?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        a.hash_password_into(passphrase, &salt, &mut out[..])
            .map_err(|e| Error::Custody(format!("Argon2id: {e}")))?;
        Ok(out)
    }
}

/// An export file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Export {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// How the sealing key comes from the passphrase.
    pub kdf: Kdf,
    /// The key's fingerprint (not secret), to tell exports apart.
    pub fingerprint: String,
    /// `IV || ciphertext || tag`, base64.
    pub sealed: String,
}

fn aad(format: &str, version: u32, kdf: &Kdf, fingerprint: &str) -> Vec<u8> {
    format!(
        "{format}\n{version}\n{}\n{}\n{}\n{}\n{}\n{fingerprint}",
        kdf.alg, kdf.m_kib, kdf.t_cost, kdf.p_cost, kdf.salt
    )
    .into_bytes()
}

/// Seals `key` under `passphrase` (at least [`MIN_PASSPHRASE`] characters).
pub fn seal(key: &MasterKey, passphrase: &str, kdf: Kdf) -> Result<Export> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(Error::Invalid(format!(
            "the passphrase is too short: use at least {MIN_PASSPHRASE} characters"
        )));
    }
    let k = kdf.derive(passphrase.as_bytes())?;
    let fingerprint = key.fingerprint();
    let (version, plain) = if key.versions() == [1] {
        (VERSION, Zeroizing::new(key.expose().to_vec()))
    } else {
        let mut p = Zeroizing::new(Vec::new());
        for v in key.versions() {
            p.extend_from_slice(&v.to_be_bytes());
            p.extend_from_slice(key.expose_version(v).expect("listed version"));
        }
        (VERSION_ROTATED, p)
    };
    let sealed = aead::seal(&k, &aad(FORMAT, version, &kdf, &fingerprint), &plain);
    Ok(Export {
        format: FORMAT.into(),
        version,
        kdf,
        fingerprint,
        sealed: B64.encode(sealed),
    })
}

/// Opens an export with `passphrase`. A wrong passphrase or any changed
/// byte fails with the same error.
pub fn open(e: &Export, passphrase: &str) -> Result<MasterKey> {
    if e.format != FORMAT {
        return Err(Error::Custody(format!(
            "not a sovseal key export (format {:?})",
            e.format
        )));
    }
    if e.version != VERSION && e.version != VERSION_ROTATED {
        return Err(Error::Custody(format!(
            "key export version {} is not supported by this build (it reads {VERSION} and {VERSION_ROTATED})",
            e.version
        )));
    }
    let k = e.kdf.derive(passphrase.as_bytes())?;
    let sealed = B64
        .decode(&e.sealed)
        .map_err(|_| Error::Custody("key export file: sealed key is not base64".into()))?;
    let plain = Zeroizing::new(
        aead::open(&k, &aad(&e.format, e.version, &e.kdf, &e.fingerprint), &sealed).map_err(
            |_| {
                Error::Custody(
                    "wrong passphrase, or the key export file is damaged (the tag does not verify); nothing was imported".into(),
                )
            },
        )?,
    );
    let wrong = || Error::Custody("key export file: sealed key has the wrong length".into());
    let key = if e.version == VERSION {
        let bytes: [u8; KEY_LEN] = plain[..].try_into().map_err(|_| wrong())?;
        MasterKey::from_bytes(bytes)
    } else {
        let mut key: Option<MasterKey> = None;
        if plain.is_empty() || plain.len() % (4 + KEY_LEN) != 0 {
            return Err(wrong());
        }
        for (i, rec) in plain.chunks(4 + KEY_LEN).enumerate() {
            let v = u32::from_be_bytes(rec[..4].try_into().expect("4 bytes"));
            let bytes: [u8; KEY_LEN] = rec[4..].try_into().expect("32 bytes");
            match (&mut key, v) {
                (None, 1) if i == 0 => key = Some(MasterKey::from_bytes(bytes)),
                (Some(k), v) if v == k.current_version() + 1 => k.add_version(v, bytes),
                _ => {
                    return Err(Error::Custody(
                        "key export file: key versions are not 1, 2, 3, ...".into(),
                    ));
                }
            }
        }
        key.ok_or_else(wrong)?
    };
    if key.fingerprint() != e.fingerprint {
        return Err(Error::Custody(
            "key export file: the key does not match its fingerprint".into(),
        ));
    }
    Ok(key)
}

/// Seals `key` under `passphrase` (fresh Argon2id parameters) into a new
/// file at `path`, mode 0600, created exclusively (an existing file, or a
/// symlink there, is refused, never followed or replaced), synced.
pub fn write_new(path: &Path, key: &MasterKey, passphrase: &str) -> Result<Export> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.symlink_metadata().is_ok() {
        return Err(Error::Invalid(format!(
            "{} already exists; export to a new file",
            path.display()
        )));
    }
    let e = seal(key, passphrase, Kdf::new()?)?;
    let json = serde_json::to_vec_pretty(&e).expect("export encodes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|er| Error::io(path, er))?;
    f.write_all(&json)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|er| Error::io(path, er))?;
    // Its name too: an export is what a lost keychain is recovered from.
    crate::fsutil::sync_parent(path).map_err(|er| {
        Error::Invalid(format!(
            "{} written, but its directory could not be synced: {er}",
            path.display()
        ))
    })?;
    Ok(e)
}

/// Reads a key export file (not yet opened: see [`open`]).
pub fn read(path: &Path) -> Result<Export> {
    let raw = std::fs::read(path).map_err(|er| Error::io(path, er))?;
    serde_json::from_slice(&raw).map_err(|er| {
        Error::Custody(format!(
            "{} is not a sovseal key export: {er}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Kdf {
        Kdf {
            m_kib: 8 * 1024,
            t_cost: 1,
            ..Kdf::new().unwrap()
        }
    }

    #[test]
    fn roundtrip_wrong_passphrase_and_tampering() {
        let key = MasterKey::from_bytes([7; 32]);
        let e = seal(&key, "correct horse battery", fast()).unwrap();
        assert_eq!(open(&e, "correct horse battery").unwrap(), key);
        assert!(matches!(
            open(&e, "correct horse batterx"),
            Err(Error::Custody(_))
        ));
        // Every header field is bound: change one, the tag fails.
        let mut t = e.clone();
        t.kdf.t_cost = 2;
        assert!(open(&t, "correct horse battery").is_err());
        let mut t = e.clone();
        t.fingerprint = "00".repeat(8);
        assert!(open(&t, "correct horse battery").is_err());
        let mut t = e.clone();
        let mut raw = B64.decode(&t.sealed).unwrap();
        raw[20] ^= 1;
        t.sealed = B64.encode(raw);
        assert!(open(&t, "correct horse battery").is_err());
    }

    #[test]
    fn a_rotated_key_exports_every_version() {
        let mut key = MasterKey::from_bytes([7; 32]);
        key.add_version(2, [8; 32]);
        key.add_version(3, [9; 32]);
        let e = seal(&key, "correct horse battery", fast()).unwrap();
        assert_eq!(e.version, VERSION_ROTATED);
        let back = open(&e, "correct horse battery").unwrap();
        assert_eq!(back, key);
        assert_eq!(back.versions(), [1, 2, 3]);
    }

    #[test]
    fn refuses_short_passphrases_and_unbounded_parameters() {
        let key = MasterKey::from_bytes([7; 32]);
        assert!(matches!(
            seal(&key, "short", fast()),
            Err(Error::Invalid(m)) if m.contains("too short")
        ));
        let mut e = seal(&key, "correct horse battery", fast()).unwrap();
        e.kdf.m_kib = u32::MAX;
        assert!(matches!(
            open(&e, "correct horse battery"),
            Err(Error::Custody(m)) if m.contains("out of bounds")
        ));
    }
}
