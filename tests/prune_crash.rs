//! Prune killed at random instants (SIGKILL): every time, what is retained
//! still reads back and the whole chain verifies; the prune that finally
//! completes frees the space.

mod support;
use sovseal::config::{AgentName, Home};
use sovseal::custody::{self, Custody};
use sovseal::engine::{Engine, SetAttr};
use sovseal::seal::tree::ROOT_INO;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::home::bytes;
use support::mount::{MOUNT, SOVSEAL, ok, sovseal_in as run};

fn pack_bytes(home: &Path) -> u64 {
    std::fs::read_dir(home.join("agents/crashy/packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// `sovseal status --agent crashy --json` in `home`.
fn status(home: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&run(home, &["status", "--agent", "crashy", "--json"]))).unwrap()
}

/// Agent "crashy" in `home`: big.bin (48 MiB, retained) and 40 versions of
/// state.bin (1 MiB of distinct bytes each, one snapshot each), all
/// replicated, then all but the last two snapshots forgotten. Returns the
/// last version of state.bin.
fn forgotten_history(dir: &Path, home: &Path) -> Vec<u8> {
    ok(&run(home, &["init"]));
    let h = Home::at(home);
    let master = custody::load(&h, &Custody::File).unwrap();
    // 40 versions of a 1 MiB file (distinct bytes), one snapshot each.
    let last;
    {
        let mut e = Engine::open(&h, &AgentName::new("crashy").unwrap(), &master).unwrap();
        // A 48 MiB file that stays: prune must copy it out of the pack it
        // shares with the dead versions, which gives the kills time to land.
        let big = e.create(ROOT_INO, b"big.bin", 0o644, 0, 0).unwrap();
        for i in 0..48u64 {
            e.write(big.ino, i << 20, &bytes(1000 + i, 1 << 20))
                .unwrap();
        }
        let f = e.create(ROOT_INO, b"state.bin", 0o644, 0, 0).unwrap();
        let mut v = Vec::new();
        for i in 0..40u64 {
            v = bytes(i + 1, 1 << 20);
            e.setattr(
                f.ino,
                &SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
            e.write(f.ino, 0, &v).unwrap();
            e.commit().unwrap();
        }
        last = v;
    }
    // Prune keeps what has not reached the remote yet: mount once so that
    // the history replicates (to the default remote under the home).
    let mnt = dir.join("crashy");
    std::fs::create_dir(&mnt).unwrap();
    let o = Command::new(MOUNT)
        .arg(&mnt)
        .env("SOVSEAL_HOME", home)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap();
    ok(&o);
    let t0 = std::time::Instant::now();
    loop {
        let s = status(home);
        if s["queue_snapshots"] == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap());
    let t0 = std::time::Instant::now();
    while !status(home)["mounted_by_pid"].is_null() {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&run(
        home,
        &["forget", "--agent", "crashy", "--keep-last", "2"],
    ));
    last
}

/// Starts prunes and SIGKILLs them at instants spread over their run,
/// until one completes (at most 40 rounds). After every round the chain
/// verifies and the head (`last`) reads back. Returns how many were killed.
fn kill_prunes_until_one_completes(home: &Path, last: &[u8]) -> u32 {
    let mut killed = 0;
    let mut completed = false;
    for round in 0..40u64 {
        let mut child = Command::new(SOVSEAL)
            .args(["prune", "--agent", "crashy"])
            .env("SOVSEAL_HOME", home)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the prune's run (startup to ~200 ms).
        std::thread::sleep(Duration::from_micros(5_000 + (round * 7919) % 200_000));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::SIGKILL,
        );
        let st = child.wait().unwrap();
        match st.code() {
            None => killed += 1,
            Some(0) => completed = true,
            Some(c) => panic!("round {round}: prune failed with exit {c}"),
        }
        let v = ok(&run(home, &["verify", "--agent", "crashy"]));
        assert!(v.starts_with("ok:"), "round {round}: {v}");
        let o = run(home, &["cat", "--agent", "crashy", "/state.bin"]);
        assert!(
            o.stdout == last,
            "round {round}: the head no longer reads back"
        );
        if completed {
            break;
        }
    }
    killed
}

#[test]
fn prune_survives_sigkill_at_any_instant() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let last = forgotten_history(dir.path(), &home);
    let before = pack_bytes(&home);

    let killed = kill_prunes_until_one_completes(&home, &last);
    assert!(
        killed > 0,
        "no prune was killed before one completed; the test proved nothing"
    );

    // The prune that finally completes frees the space and keeps big.bin.
    ok(&run(&home, &["prune", "--agent", "crashy"]));
    ok(&run(&home, &["verify", "--agent", "crashy"]));
    let after = pack_bytes(&home);
    assert!(
        after < before - 30 * (1 << 20),
        "prune freed too little: {before} -> {after}"
    );
    let big = run(&home, &["cat", "--agent", "crashy", "/big.bin"]).stdout;
    assert_eq!(big.len(), 48 << 20);
    assert_eq!(&big[..1 << 20], &bytes(1000, 1 << 20)[..]);
    eprintln!("{killed} prunes killed before one completed; packs {before} -> {after} bytes");
}
