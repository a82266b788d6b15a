//! An independent POSIX conformance suite against a real mount: pjdfstest
//! (the Rust rewrite, pinned at 0.2.2, installed by `scripts/test` and
//! found through `SOVSEAL_TEST_PJDFSTEST`), run as root with
//! `-o allow_other` (its tests act as `nobody`, `daemon` and `bin` too),
//! with every opt-in feature Linux has. Every test it runs must pass, and
//! the only ones it may skip are those named in [`SKIPS_ALLOWED`], each
//! with its reason.
//!
//! The test fails, never skips, when the suite is missing.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::mount::{Mounted, text};

/// Tests pjdfstest skips here, and why.
const SKIPS_ALLOWED: &[(&str, &str)] = &[
    // EROFS tests remount the file system read-only under the suite's
    // feet; `-o ro` is checked in tests/mount_lifecycle.rs instead.
    ("erofs_", "needs allow_remount"),
    // pathconf(_PC_LINK_MAX) is not reported by FUSE file systems.
    ("link::link_count_max", "LINK_MAX unknown"),
];

const CONFIG: &str = r#"
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [
  ["nobody", "nogroup"],
  ["daemon", "daemon"],
  ["bin", "bin"],
]
"#;

#[test]
fn pjdfstest_passes_on_the_mount() {
    let bin = std::env::var("SOVSEAL_TEST_PJDFSTEST").unwrap_or_else(|_| "pjdfstest".into());
    let m = Mounted::new("pjdfstest", &["-o", "allow_other"]);
    // The suite's other users must reach the mount point.
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = m.path("suite");
    std::fs::create_dir(&work).unwrap();
    // A second file system for the EXDEV tests: the local one.
    let second = tempfile::tempdir().unwrap();
    std::fs::set_permissions(second.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = m.dir.path().join("pjdfstest.toml");
    std::fs::write(&conf, CONFIG).unwrap();
    let o = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&work)
        .arg("-s")
        .arg(second.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test installs it)"));
    let out = text(&o.stdout);
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED") || l.trim_end().ends_with("failed"))
        .collect();
    assert!(
        o.status.success() && failed.is_empty(),
        "pjdfstest failed on the mount:\n{}\n{}\n{}",
        failed.join("\n"),
        out.lines().last().unwrap_or(""),
        text(&o.stderr)
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{out}"));
    let count = |what: &str| -> u64 {
        summary
            .split(',')
            .find_map(|p| {
                p.trim()
                    .trim_start_matches("Summary:")
                    .trim()
                    .strip_suffix(what)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what} in {summary:?}"))
    };
    assert_eq!(count("failed"), 0, "{summary}");
    assert!(count("passed") >= 380, "the suite ran: {summary}");
    // Nothing is skipped but what is allowed.
    for l in out.lines().filter(|l| l.trim_end().ends_with("skipped")) {
        let name = l.split_whitespace().next().unwrap_or("");
        assert!(
            SKIPS_ALLOWED.iter().any(|(p, _)| name.contains(p)),
            "pjdfstest skipped {name}, which is not allowed:\n{out}"
        );
    }
}
