//! Master key custody (seed 003): the OS keychain, or an opt-in file.
//!
//! - Default: the `keyring` crate's platform store (Secret Service on Linux),
//!   service `sovseal`, user `master`, the key as base64 text. After every
//!   write the key is read back, so a store that silently drops secrets
//!   fails here and not at the next boot.
//! - `SOVSEAL_KEY_FALLBACK=file`: `$SOVSEAL_HOME/master.key`, mode 0600 in a
//!   0700 dir; a wider mode, another owner, or bad content is refused.
//! - Keychain unreachable and no flag: fail closed, naming the flag.
//! - A legacy `encryption_key_b64` field in `config.json` is moved into the
//!   chosen custody and replaced by a tombstone; a legacy key that differs
//!   from a key already in custody is refused, never overwritten.

use crate::config::Home;
pub mod export;

use crate::fsutil::Dir;
use crate::seal::keys::{KEY_LEN, MasterKey};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use zeroize::Zeroizing;

/// Keychain service name.
pub const KEYCHAIN_SERVICE: &str = "sovseal";
/// Keychain user name of the master key.
pub const KEYCHAIN_USER: &str = "master";
/// The legacy config field that once held the raw key.
pub const LEGACY_FIELD: &str = "encryption_key_b64";
/// What replaces the legacy key in `config.json` after migration.
pub const TOMBSTONE_PREFIX: &str = "sovseal-tombstone:migrated-to-";
/// Environment variable that selects the file fallback.
pub const FALLBACK_ENV: &str = "SOVSEAL_KEY_FALLBACK";

/// Where the master key is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Custody {
    /// The OS keychain through the `keyring` crate.
    Keychain,
    /// `$SOVSEAL_HOME/master.key`, mode 0600.
    File,
}

impl Custody {
    /// Reads `SOVSEAL_KEY_FALLBACK`: unset or empty means keychain, `file`
    /// means the file; anything else is refused.
    pub fn from_env() -> Result<Self> {
        match std::env::var(FALLBACK_ENV).as_deref() {
            Err(_) | Ok("") => Ok(Custody::Keychain),
            Ok("file") => Ok(Custody::File),
            Ok(other) => Err(Error::Invalid(format!(
                "{FALLBACK_ENV}={other:?} is not understood; the only value is \"file\""
            ))),
        }
    }

    fn describe(&self, home: &Home) -> String {
        match self {
            Custody::Keychain => format!("the OS keychain (service {KEYCHAIN_SERVICE:?})"),
            Custody::File => home.key_file().display().to_string(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Custody::Keychain => "keychain",
            Custody::File => "file",
        }
    }
}

/// Loads the master key, every version; errors with [`Error::NoMasterKey`]
/// if none exists.
///
/// No downgrade: `config.json` records the newest key version this home
/// has held ([`NEWEST_FIELD`]); if custody now returns an older newest
/// version (a keychain entry or key file was deleted), loading fails
/// instead of sealing new data under the older version.
pub fn load(home: &Home, custody: &Custody) -> Result<MasterKey> {
    migrate_legacy(home, custody)?;
    let key = read_all(home, custody)?.ok_or_else(|| Error::NoMasterKey {
        custody: custody.describe(home),
    })?;
    let newest = recorded_newest(home)?;
    if newest > key.current_version() {
        return Err(Error::UnknownKeyVersion(newest, key.current_version()));
    }
    Ok(key)
}

/// The `config.json` field that records the newest key version held.
pub const NEWEST_FIELD: &str = "key_version_newest";

fn recorded_newest(home: &Home) -> Result<u32> {
    Ok(home
        .read_config()?
        .get(NEWEST_FIELD)
        .and_then(Value::as_u64)
        .map_or(1, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Records `v` as the newest key version held, if it is newer.
fn record_newest(home: &Home, v: u32) -> Result<()> {
    if v <= recorded_newest(home)? {
        return Ok(());
    }
    let mut cfg = home.read_config()?;
    cfg.insert(NEWEST_FIELD.into(), Value::from(v));
    home.write_config(cfg)
}

/// Loads the master key, creating it if there is none. Never overwrites an
/// existing key. Returns the key and whether it was created now.
pub fn init(home: &Home, custody: &Custody) -> Result<(MasterKey, bool)> {
    home.ensure()?;
    if migrate_legacy(home, custody)? {
        return Ok((load(home, custody)?, false));
    }
    if read(home, custody)?.is_some() {
        // Every version, and the no-downgrade check: what `init` hands on
        // seals under the newest version, like every other command.
        return Ok((load(home, custody)?, false));
    }
    let key = MasterKey::generate()?;
    write_new(home, custody, &key)?;
    Ok((key, true))
}

/// Puts an imported key into custody. Returns false if that very key is
/// already there; a different key already in custody is refused, never
/// overwritten (it may be the only key to some data).
pub fn install(home: &Home, custody: &Custody, key: &MasterKey) -> Result<bool> {
    home.ensure()?;
    migrate_legacy(home, custody)?;
    // Check every version before writing any.
    let mut missing = Vec::new();
    for v in key.versions() {
        let want = key.expose_version(v).expect("listed version");
        match read_version(home, custody, v)? {
            Some(existing) if existing.expose() == want => {}
            Some(existing) => {
                return Err(Error::Custody(format!(
                    "{} already holds a different master key version {v} (fingerprint {}); refusing to overwrite it. Import into another SOVSEAL_HOME, or move the existing key away yourself once nothing depends on it",
                    custody.describe(home),
                    existing.fingerprint()
                )));
            }
            None => missing.push(v),
        }
    }
    for v in &missing {
        let bytes = *key.expose_version(*v).expect("listed version");
        write_version(home, custody, *v, &MasterKey::from_bytes(bytes))?;
    }
    record_newest(home, key.current_version())?;
    Ok(!missing.is_empty())
}

/// Moves a legacy key out of `config.json`. Returns true if it migrated one.
fn migrate_legacy(home: &Home, custody: &Custody) -> Result<bool> {
    let mut cfg = home.read_config()?;
    let legacy = match cfg.get(LEGACY_FIELD) {
        Some(Value::String(s)) if !s.starts_with(TOMBSTONE_PREFIX) => {
            Zeroizing::new(s.trim().to_owned())
        }
        Some(Value::String(_)) | Some(Value::Null) | None => return Ok(false),
        Some(_) => {
            return Err(Error::Custody(format!(
                "{LEGACY_FIELD} in {} is not a string",
                home.config_path().display()
            )));
        }
    };
    let key = decode_key(&legacy, &format!("{LEGACY_FIELD} in config.json"))?;
    match read(home, custody)? {
        Some(existing) if existing != key => {
            return Err(Error::Custody(format!(
                "{} holds a legacy {LEGACY_FIELD} that differs from the master key already in {}; refusing to overwrite either. Keep the one your data was sealed with and remove the other by hand",
                home.config_path().display(),
                custody.describe(home)
            )));
        }
        Some(_) => {}
        None => write_new(home, custody, &key)?,
    }
    cfg.insert(
        LEGACY_FIELD.into(),
        Value::String(format!("{TOMBSTONE_PREFIX}{}", custody.name())),
    );
    home.write_config(cfg)?;
    Ok(true)
}

fn decode_key(b64: &str, what: &str) -> Result<MasterKey> {
    let raw = Zeroizing::new(
        B64.decode(b64.trim())
            .map_err(|_| Error::Custody(format!("{what} is not valid base64")))?,
    );
    let arr: [u8; KEY_LEN] = raw.as_slice().try_into().map_err(|_| {
        Error::Custody(format!(
            "{what} holds {} bytes, a master key has {KEY_LEN}",
            raw.len()
        ))
    })?;
    Ok(MasterKey::from_bytes(arr))
}

/// The keychain user of key version `v`.
fn keychain_user(v: u32) -> String {
    match v {
        1 => KEYCHAIN_USER.to_owned(),
        _ => format!("{KEYCHAIN_USER}-v{v}"),
    }
}

/// The key file of key version `v`.
fn key_file(home: &Home, v: u32) -> std::path::PathBuf {
    match v {
        1 => home.key_file(),
        _ => home.root().join(format!("master.v{v}.key")),
    }
}

/// Version 1 of the master key (the other versions: [`load`]).
fn read(home: &Home, custody: &Custody) -> Result<Option<MasterKey>> {
    read_version(home, custody, 1)
}

/// The bytes of key version `v`, wrapped as a one-version key.
fn read_version(home: &Home, custody: &Custody, v: u32) -> Result<Option<MasterKey>> {
    match custody {
        Custody::Keychain => {
            let user = keychain_user(v);
            let entry = keychain_entry(home, &user)?;
            match entry.get_password() {
                Ok(s) => {
                    let s = Zeroizing::new(s);
                    Ok(Some(decode_key(
                        &s,
                        &format!("the keychain entry sovseal/{user}"),
                    )?))
                }
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(unavailable(home, e)),
            }
        }
        Custody::File => read_file(home, &key_file(home, v)),
    }
}

/// Version 1 and every later version in custody.
fn read_all(home: &Home, custody: &Custody) -> Result<Option<MasterKey>> {
    let Some(mut ring) = read(home, custody)? else {
        return Ok(None);
    };
    for v in 2.. {
        match read_version(home, custody, v)? {
            Some(k) => ring.add_version(v, *k.expose()),
            None => break,
        }
    }
    Ok(Some(ring))
}

/// Adds a new key version (the next number), read back before it counts.
/// Returns the whole key and the new version. Data sealed from then on uses
/// it; what was sealed before stays readable with the older versions.
pub fn rotate(home: &Home, custody: &Custody) -> Result<(MasterKey, u32)> {
    let mut ring = load(home, custody)?;
    let v = ring.current_version() + 1;
    let fresh = MasterKey::generate()?;
    write_version(home, custody, v, &fresh)?;
    record_newest(home, v)?;
    ring.add_version(v, *fresh.expose());
    Ok((ring, v))
}

fn write_new(home: &Home, custody: &Custody, key: &MasterKey) -> Result<()> {
    write_version(home, custody, 1, key)
}

/// Stores `key`'s version-1 bytes as key version `v` (never over an
/// existing one), then reads them back.
fn write_version(home: &Home, custody: &Custody, v: u32, key: &MasterKey) -> Result<()> {
    let text = Zeroizing::new(B64.encode(key.expose()));
    match custody {
        Custody::Keychain => {
            let entry = keychain_entry(home, &keychain_user(v))?;
            entry
                .set_password(&text)
                .map_err(|e| unavailable(home, e))?;
        }
        Custody::File => {
            home.ensure()?;
            let dir = key_dir(home)?;
            let path = key_file(home, v);
            let mut f = dir.create_new(path.file_name().expect("key files have a name"), 0o600)?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            dir.sync()?;
        }
    }
    // Read back: a store that accepts and forgets would fail open later.
    match read_version(home, custody, v)? {
        Some(k) if k.expose() == key.expose() => Ok(()),
        _ => Err(Error::Custody(format!(
            "{} accepted the master key but did not return it; refusing to use a store that forgets keys",
            custody.describe(home)
        ))),
    }
}

fn keychain_entry(home: &Home, user: &str) -> Result<keyring::Entry> {
    keyring::Entry::new(KEYCHAIN_SERVICE, user).map_err(|e| unavailable(home, e))
}

fn unavailable(home: &Home, e: keyring::Error) -> Error {
    let detail = match &e {
        keyring::Error::NoDefaultStore => match keyring::Entry::store_status() {
            Err(inner) if !matches!(inner, keyring::Error::NoDefaultStore) => inner.to_string(),
            _ => e.to_string(),
        },
        _ => e.to_string(),
    };
    Error::KeychainUnavailable {
        detail,
        home: home.root().display().to_string(),
    }
}

/// The home, opened and checked for holding a key file: owned by the
/// running user and mode 0700 (stricter than the data's 0755 allowance).
fn key_dir(home: &Home) -> Result<Dir> {
    let dir = home.dir()?;
    let meta = nix::sys::stat::fstat(dir.fd()).map_err(|e| Error::io(home.root(), e.into()))?;
    if meta.st_mode & 0o077 != 0 {
        return Err(Error::Custody(format!(
            "{} has mode {:o}; the key file's directory must be 0700: chmod 700 {}",
            home.root().display(),
            meta.st_mode & 0o777,
            home.root().display()
        )));
    }
    Ok(dir)
}

/// Reads a key file through the descriptor whose type, mode and owner were
/// checked (never through a symlink).
fn read_file(home: &Home, path: &std::path::Path) -> Result<Option<MasterKey>> {
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(None);
    }
    let dir = key_dir(home)?;
    let name = path.file_name().expect("key files have a name");
    let f = match dir.open_read(name) {
        Ok(f) => f,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(Error::UnsafePath { detail, .. }) => {
            return Err(Error::Custody(format!(
                "{} {detail}; refusing to use it",
                path.display()
            )));
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::Custody(format!(
            "{} has mode {:o}, wider than 0600; refusing to use it. If nobody else could have read it: chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(Error::Custody(format!(
            "{} is owned by uid {}, not by this user (uid {uid})",
            path.display(),
            meta.uid()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &f, &mut text).map_err(|e| Error::io(path, e))?;
    Ok(Some(decode_key(&text, &path.display().to_string())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn file_custody_roundtrip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        let (k1, created) = init(&home, &Custody::File).unwrap();
        assert!(created);
        let (k2, created) = init(&home, &Custody::File).unwrap();
        assert!(!created, "init must never overwrite");
        assert_eq!(k1, k2);
        let mode = std::fs::metadata(home.key_file()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(home.root()).unwrap().mode() & 0o777;
        assert_eq!(dmode, 0o700);

        std::fs::set_permissions(home.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&home, &Custody::File).unwrap_err().to_string();
        assert!(e.contains("wider than 0600"), "{e}");
        std::fs::set_permissions(home.key_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = load(&home, &Custody::File).unwrap_err().to_string();
        assert!(e.contains("must be 0700"), "{e}");
    }

    #[test]
    fn garbage_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        init(&home, &Custody::File).unwrap();
        std::fs::write(home.key_file(), "c2hvcnQ=\n").unwrap();
        let e = load(&home, &Custody::File).unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes"), "{e}");
        std::fs::write(home.key_file(), "!!!\n").unwrap();
        let e = load(&home, &Custody::File).unwrap_err().to_string();
        assert!(e.contains("not valid base64"), "{e}");
    }

    #[test]
    fn legacy_field_migrates_and_is_tombstoned() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure().unwrap();
        let legacy = MasterKey::from_bytes([9; 32]);
        let mut cfg = serde_json::Map::new();
        cfg.insert(LEGACY_FIELD.into(), B64.encode(legacy.expose()).into());
        cfg.insert("project_id".into(), "p-1".into());
        home.write_config(cfg).unwrap();

        let k = load(&home, &Custody::File).unwrap();
        assert_eq!(k, legacy);
        let cfg = home.read_config().unwrap();
        assert_eq!(cfg[LEGACY_FIELD], format!("{TOMBSTONE_PREFIX}file"));
        assert_eq!(cfg["project_id"], "p-1", "other fields are kept");
        let raw = std::fs::read_to_string(home.config_path()).unwrap();
        assert!(!raw.contains(&B64.encode(legacy.expose())));
        // Idempotent.
        assert_eq!(load(&home, &Custody::File).unwrap(), legacy);
    }

    #[test]
    fn conflicting_legacy_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        let (existing, _) = init(&home, &Custody::File).unwrap();
        let mut cfg = serde_json::Map::new();
        cfg.insert(LEGACY_FIELD.into(), B64.encode([1u8; 32]).into());
        home.write_config(cfg).unwrap();
        let e = load(&home, &Custody::File).unwrap_err().to_string();
        assert!(e.contains("differs"), "{e}");
        // Nothing was overwritten.
        std::fs::write(home.config_path(), "{}").unwrap();
        assert_eq!(load(&home, &Custody::File).unwrap(), existing);
    }
}
