//! Seeing at a glance that state is sealed and replicated: `sovseal status`
//! fields, the `user.sovseal.state` attribute, the Prometheus metrics file,
//! and the daemon's log levels; with a working remote and with one that is
//! down.

mod support;
use std::time::{Duration, Instant};
use support::mount::{Mounted, text};

fn state(m: &Mounted, rel: &str) -> String {
    m.py(&format!(
        "import os; print(os.getxattr({rel:?}, 'user.sovseal.state').decode())"
    ))
    .trim()
    .to_owned()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A sample's value from Prometheus text (`name{...} value`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn status_xattr_and_metrics_follow_commits_and_replication() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("sovseal.prom");
    let m = Mounted::new("seen", &["--metrics-file", metrics.to_str().unwrap(), "-v"]);

    // A file being written is dirty; after close it is committed, then
    // replicated, naming the snapshot that holds it.
    let out = m.py("import os\n\
         f = open('notes.md', 'w'); f.write('draft'); f.flush()\n\
         print(os.getxattr('notes.md', 'user.sovseal.state').decode())\n\
         f.close()\n\
         print(os.getxattr('notes.md', 'user.sovseal.state').decode())");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "dirty", "{out}");
    let seq = m.head();
    assert!(
        lines[1] == format!("committed:{seq}") || lines[1] == format!("replicated:{seq}"),
        "{out} (head {seq})"
    );
    m.wait_replicated();
    assert_eq!(state(&m, "notes.md"), format!("replicated:{seq}"));
    // An untouched file keeps the snapshot it was written in.
    m.sh("echo other > other.txt");
    let later = m.head();
    assert!(later > seq);
    m.wait_replicated();
    assert_eq!(state(&m, "notes.md"), format!("replicated:{seq}"));
    assert_eq!(state(&m, "other.txt"), format!("replicated:{later}"));
    // Not listed, not settable, not removable.
    let o = m.py(
        "import os\n\
         print('user.sovseal.state' in os.listxattr('notes.md'))\n\
         for f in (lambda: os.setxattr('notes.md', 'user.sovseal.state', b'x'), lambda: os.removexattr('notes.md', 'user.sovseal.state')):\n\
         \x20   try:\n\
         \x20       f(); print('allowed')\n\
         \x20   except PermissionError: print('EPERM')",
    );
    assert_eq!(
        o.split_whitespace().collect::<Vec<_>>(),
        ["False", "EPERM", "EPERM"]
    );

    // status: mounted, head, replicated; verified only after a verify.
    let s = m.status();
    assert_eq!(s["mounted_by_pid"].as_i64(), m.daemon_pid().map(i64::from));
    assert_eq!(s["head_seq"], later);
    assert_eq!(s["replicated_seq"], later);
    assert!(s["verified_seq"].is_null(), "{s}");
    assert!(s["last_error"].is_null(), "{s}");
    m.verify();
    let s = m.status();
    assert_eq!(s["verified_seq"], later, "{s}");
    assert!(s["verified_at"].as_str().unwrap().ends_with('Z'));
    let human = text(&m.sovseal(&["status", "--agent", "seen"]).stdout);
    assert!(human.contains(&format!("verified    {later}")), "{human}");
    assert!(human.contains("mounted     yes (pid"), "{human}");

    // Metrics: commits counted, lag 0, the histogram consistent.
    wait_until("metrics show the head", || {
        std::fs::read_to_string(&metrics)
            .is_ok_and(|t| sample(&t, "sovseal_head_seq") == Some(later as f64))
    });
    let t = std::fs::read_to_string(&metrics).unwrap();
    let commits = sample(&t, "sovseal_commits_total").unwrap();
    assert!(commits >= 2.0, "{t}");
    assert_eq!(
        sample(&t, "sovseal_commit_duration_seconds_count"),
        Some(commits),
        "{t}"
    );
    assert!(sample(&t, "sovseal_sealed_bytes_total").unwrap() > 0.0);
    wait_until("metrics show lag 0", || {
        std::fs::read_to_string(&metrics)
            .is_ok_and(|t| sample(&t, "sovseal_replication_lag_snapshots") == Some(0.0))
    });
    assert!(t.contains("# TYPE sovseal_commit_duration_seconds histogram"));

    // -v: every commit is logged at debug level in the daemon's log.
    let log = std::fs::read_to_string(m.home.join("logs/seen.log")).unwrap();
    assert!(log.contains("committed") && log.contains("DEBUG"), "{log}");
    assert!(log.contains("INFO") && log.contains("mounted at"), "{log}");

    m.unmount();
    assert!(m.status()["mounted_by_pid"].is_null());
    // The last metrics are written at exit.
    let t = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(sample(&t, "sovseal_head_seq"), Some(m.head() as f64));
}

#[test]
fn a_remote_that_is_down_shows_as_committed_lag_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.prom");
    let env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        // Nothing listens on port 9 of loopback: every request is refused.
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9"),
        ("RUST_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // The agent exists locally first: a fresh agent asks the remote whether
    // it has a history to restore, and a remote that is down fails that.
    let mut m = Mounted::with_env("down", &[], env);
    m.unmount();
    m.extra = [
        "--remote",
        "s3://nowhere/x",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    m.mount();
    m.sh("echo kept > kept.txt");
    let head = m.head();
    wait_until("a replication error is recorded", || {
        !m.status()["last_error"].is_null()
    });
    let s = m.status();
    assert!(s["replicated_seq"].as_u64().unwrap() < head, "{s}");
    assert!(s["queue_snapshots"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(state(&m, "kept.txt"), format!("committed:{head}"));
    wait_until("metrics count replication errors", || {
        std::fs::read_to_string(&metrics).is_ok_and(|t| {
            sample(&t, "sovseal_replication_errors_total").is_some_and(|v| v >= 1.0)
                && sample(&t, "sovseal_replication_lag_snapshots").is_some_and(|v| v >= 1.0)
        })
    });
    m.unmount();
    // RUST_LOG=warn: the retries are logged, the routine lines are not.
    let log = std::fs::read_to_string(m.home.join("logs/down.log")).unwrap();
    assert!(log.contains("WARN") && log.contains("retrying"), "{log}");
    assert!(!log.contains("mounted at"), "{log}");
    // Nothing lost: the snapshot is sealed locally and verifies.
    m.verify();
    let o = m.sovseal(&["cat", "--agent", "down", "/kept.txt"]);
    assert_eq!(o.stdout, b"kept\n");
}
