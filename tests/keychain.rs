//! Key custody against a real Secret Service: gnome-keyring inside
//! dbus-run-session, started here for each test (the test fails, never
//! skips, if they are missing), and the fail-closed path with no keychain.

use std::path::Path;
use std::process::{Command, Output};

const SOVSEAL: &str = env!("CARGO_BIN_EXE_sovseal");

/// Runs `sh -c script` in a fresh D-Bus session with an unlocked
/// gnome-keyring whose keyrings live under `home`.
fn in_session(home: &Path, script: &str) -> Output {
    std::fs::create_dir_all(home.join("run")).unwrap();
    let inner = format!(
        "set -e; eval $(printf pw | gnome-keyring-daemon --unlock --components=secrets); export GNOME_KEYRING_CONTROL; {script}"
    );
    Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &inner])
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("share"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("SOVSEAL_HOME", home.join("sov"))
        .env("SOVSEAL", SOVSEAL)
        .env_remove("SOVSEAL_KEY_FALLBACK")
        .output()
        .expect(
            "dbus-run-session must be installed (the test command installs dbus and gnome-keyring)",
        )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn master_key_lives_in_the_secret_service_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let a = in_session(
        home,
        r#""$SOVSEAL" init --agent k1; secret-tool lookup service sovseal username master"#,
    );
    assert!(a.status.success(), "{}{}", text(&a.stdout), text(&a.stderr));
    let out = text(&a.stdout);
    assert!(
        out.contains("created a new master key in the OS keychain"),
        "{out}"
    );
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert_eq!(secret.len(), 44, "a base64 32-byte key: {secret:?}");
    assert!(text(&a.stderr).contains("no escrow and no reset"));
    assert!(
        !home.join("sov/master.key").exists(),
        "no key file with the keychain"
    );
    let cfg = home.join("sov");
    for f in std::fs::read_dir(&cfg).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            assert!(
                !std::fs::read_to_string(&p)
                    .unwrap_or_default()
                    .contains(&secret)
            );
        }
    }

    // A new session (new D-Bus, new daemon) finds the same key on disk.
    let b = in_session(
        home,
        r#""$SOVSEAL" init && "$SOVSEAL" verify --agent k1 && secret-tool lookup service sovseal username master"#,
    );
    assert!(b.status.success(), "{}{}", text(&b.stdout), text(&b.stderr));
    let out = text(&b.stdout);
    assert!(out.contains("already present"), "{out}");
    assert!(out.contains("ok: agent k1"), "{out}");
    assert_eq!(
        out.lines().last().unwrap().trim(),
        secret,
        "init must never replace the key"
    );
}

#[test]
fn legacy_config_key_migrates_into_the_keychain() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let sov = home.join("sov");
    std::fs::create_dir_all(&sov).unwrap();
    let legacy = base64::engine::general_purpose::STANDARD.encode([0x61u8; 32]);
    let cfg = sov.join("config.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"schema_version":1,"project_id":"p","encryption_key_b64":"{legacy}"}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = in_session(
        home,
        r#""$SOVSEAL" init; secret-tool lookup service sovseal username master"#,
    );
    assert!(r.status.success(), "{}{}", text(&r.stdout), text(&r.stderr));
    assert_eq!(text(&r.stdout).lines().last().unwrap().trim(), legacy);
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert!(!after.contains(&legacy), "{after}");
    assert!(
        after.contains("sovseal-tombstone:migrated-to-keychain"),
        "{after}"
    );
    assert!(after.contains("\"project_id\": \"p\""), "{after}");
}

#[test]
fn no_keychain_and_no_flag_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SOVSEAL)
        .arg("init")
        .env("SOVSEAL_HOME", dir.path().join("sov"))
        .env("HOME", dir.path())
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}/no-bus", dir.path().display()),
        )
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("SOVSEAL_KEY_FALLBACK")
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("keychain is unreachable"), "{err}");
    assert!(err.contains("SOVSEAL_KEY_FALLBACK=file"), "{err}");
    assert!(
        !dir.path().join("sov/master.key").exists(),
        "no silent downgrade to a file"
    );
}

#[test]
fn rotated_versions_live_in_the_secret_service_too() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // One session: init, rotate, then read both entries back.
    let a = in_session(
        home,
        r#""$SOVSEAL" init; "$SOVSEAL" key rotate; "$SOVSEAL" key fingerprint; echo v1=$(secret-tool lookup service sovseal username master | wc -c); echo v2=$(secret-tool lookup service sovseal username master-v2 | wc -c)"#,
    );
    let out = text(&a.stdout);
    assert!(a.status.success(), "{out}{}", text(&a.stderr));
    assert!(out.contains("added master key version 2"), "{out}");
    assert!(
        out.contains("version 2: ") && out.contains("(current)"),
        "{out}"
    );
    assert!(out.contains("v1=44") && out.contains("v2=44"), "{out}");
    assert!(!home.join("sov/master.v2.key").exists());
}

/// Regression (fails on the main before this change: with the `master-v2`
/// entry deleted, new data went back to version 1 without a word): a home
/// that has held key version 2 refuses to seal under version 1 alone, with
/// the keychain as custody too.
#[test]
fn a_deleted_newest_keychain_entry_is_refused_not_downgraded() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let a = in_session(
        home,
        r#""$SOVSEAL" init; "$SOVSEAL" key rotate; secret-tool clear service sovseal username master-v2; set +e; "$SOVSEAL" init --agent after; echo "exit=$?""#,
    );
    let (out, err) = (text(&a.stdout), text(&a.stderr));
    assert!(a.status.success(), "{out}{err}");
    assert!(out.contains("exit=4"), "{out}{err}");
    assert!(err.contains("key version 2 is not in custody"), "{err}");
    assert!(!home.join("sov/agents/after").exists());
}
