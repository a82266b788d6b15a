//! Uploads held back while programs sync through the mount: a real mount
//! with the default `file://` remote, a real program streaming atomic
//! saves. A binary of its own, so that no other test's load (an S3 or
//! PostgreSQL server starting beside it) pauses the stream.

mod support;
use std::time::Duration;
use support::mount::Mounted;

/// While a program keeps syncing, the replicator holds pending snapshots
/// back (its own disk syncs, one per envelope on a `file://` remote, would
/// land between the program's), for at most `YIELD_MAX` (1 s): a stream
/// of atomic saves samples the remote's envelopes every 50 ms for 2.5 s.
/// In its first 0.8 s they change at no more than a third of the samples
/// (a pause of the stream longer than `YIELD_QUIET` on a loaded machine
/// lets a batch go; without the hold they change at nearly every sample,
/// a batch going up every ~20 ms); they grow before 1.5 s (the hold is
/// bounded; since a pause also ends it, the bound itself is checked
/// deterministically by the replicator's unit test, and the upload of
/// the whole backlog once it ends by tests/replication.rs); after the
/// stream, everything replicates and verifies.
#[test]
fn replication_holds_back_while_programs_sync_and_catches_up_after() {
    let m = Mounted::new("hold", &[]);
    m.sh("echo x > f");
    std::thread::sleep(Duration::from_millis(300));
    let before = m.wait_replicated();
    let agents = m.home.join("remote/sovseal-v1");
    let agent = std::fs::read_dir(&agents)
        .unwrap()
        .next()
        .expect("the agent's remote directory")
        .unwrap()
        .path();
    let envelopes = agent.join("envelopes");
    assert!(envelopes.is_dir(), "{}", envelopes.display());
    let out = m.py(&format!(
        r#"
import json, os, time
def count():
    return sum(1 for e in os.scandir({dir:?}) if e.name.endswith('.json'))
samples, t0, next_at, i = [], time.monotonic(), 0.0, 0
while True:
    now = time.monotonic() - t0
    if now >= next_at:
        samples.append((now, count(), i))
        next_at += 0.05
        if now >= 2.5:
            break
    fd = os.open('state.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, json.dumps({{'i': i}}).encode())
    os.fsync(fd)
    os.close(fd)
    os.rename('state.tmp', 'state.json')
    i += 1
print(json.dumps({{'saves': i, 'samples': samples}}))
"#,
        dir = envelopes.to_str().unwrap()
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // (seconds into the stream, envelopes on the remote, saves made)
    let samples: Vec<(f64, u64, u64)> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let n = |i: usize| s[i].as_u64().unwrap();
            (s[0].as_f64().unwrap(), n(1), n(2))
        })
        .collect();
    let saves = v["saves"].as_u64().unwrap();
    assert!(saves >= 100, "{saves} saves in 2.5 s");
    let early: Vec<u64> = samples.iter().filter(|s| s.0 < 0.8).map(|s| s.1).collect();
    let changes = early.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        early.len() >= 10 && changes <= early.len() / 3,
        "envelopes uploaded while the program synced (changes {changes}): {samples:?}"
    );
    // The hold is bounded: uploads start by about 1 s into the stream
    // (0.5 s of slack), whether or not the stream paused.
    let first = samples[0].1;
    let grew = samples.iter().find(|s| s.1 > first).map(|s| s.0);
    assert!(
        grew.is_some_and(|t| t < 1.5),
        "no upload within 1.5 s of syncs: the hold is not bounded: {samples:?}"
    );
    // Done syncing: everything goes up, and checks.
    let head = m.wait_replicated();
    assert!(head >= before + saves, "{head} < {before} + {saves}");
    m.verify();
}
