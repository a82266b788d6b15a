//! Crash safety: a child process commits in a loop and is SIGKILLed at
//! random instants, 50 times. After each kill the agent opens, `verify`
//! passes, and every commit whose call returned (the child printed it) is
//! present with the right bytes.
//!
//! This target has no libtest harness: `main` is both the parent (the
//! test) and, when `SOVSEAL_CRASH_CHILD` is set, the child.

mod support;
use sovseal::config::{AgentName, Home};
use sovseal::engine::{Engine, SetAttr};
use sovseal::seal::keys::MasterKey;
use sovseal::seal::tree::ROOT_INO;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::home::bytes;

const KILLS: usize = 50;

fn content(n: u64) -> Vec<u8> {
    // Sizes from empty to 3 MiB so that some commits seal early and span chunks.
    let len = if n.is_multiple_of(7) {
        3 << 20
    } else {
        (n * 7919 % 200_000) as usize
    };
    // A random 64 KiB block repeated: cheap to make even in a debug build.
    let block = bytes(n, 64 * 1024);
    block.iter().cycle().take(len).copied().collect()
}

fn child(home: &str, start: u64) {
    let home = Home::at(home);
    let agent = AgentName::new("crash").unwrap();
    let mut e = Engine::open(&home, &agent, &MasterKey::from_bytes([3; 32])).unwrap();
    e.set_dirty_budget(2 << 20);
    let out = std::io::stdout();
    for n in start.. {
        let name = format!("f{}", n % 10);
        let ino = match e.lookup(ROOT_INO, name.as_bytes()).unwrap() {
            Some(d) => d.ino,
            None => {
                e.create(ROOT_INO, name.as_bytes(), 0o644, 0, 0)
                    .unwrap()
                    .ino
            }
        };
        e.setattr(
            ino,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        e.write(ino, 0, &content(n)).unwrap();
        if n.is_multiple_of(5) {
            // A commit that landed just before the previous kill may be redone.
            let d = format!("d{n}");
            if e.lookup(ROOT_INO, d.as_bytes()).unwrap().is_none() {
                e.mkdir(ROOT_INO, d.as_bytes(), 0o755, 0, 0).unwrap();
            }
        }
        let info = e.commit().unwrap().unwrap();
        let mut o = out.lock();
        writeln!(o, "{n} {}", info.seq).unwrap();
        o.flush().unwrap();
    }
}

fn main() {
    if let Ok(home) = std::env::var("SOVSEAL_CRASH_CHILD") {
        let start = std::env::var("SOVSEAL_CRASH_START")
            .unwrap()
            .parse()
            .unwrap();
        child(&home, start);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home_path = dir.path().join("home");
    let home = Home::at(&home_path);
    let agent = AgentName::new("crash").unwrap();
    let master = MasterKey::from_bytes([3; 32]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}");
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut start = 1u64;
    let t0 = Instant::now();
    for round in 0..KILLS {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .env("SOVSEAL_CRASH_CHILD", &home_path)
            .env("SOVSEAL_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|l| {
                    let mut p = l.split(' ');
                    (
                        p.next().unwrap().parse().unwrap(),
                        p.next().unwrap().parse().unwrap(),
                    )
                })
                .collect::<Vec<(u64, u64)>>()
        });
        std::thread::sleep(Duration::from_millis(20 + next() % 200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        let status = c.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the child must die by SIGKILL, not exit or panic ({status})"
        );
        let got = reader.join().unwrap();
        if let Some(&(n, _)) = got.last() {
            start = n + 1;
        }
        acked.extend(got);

        // After the kill: opens (cleaning up), verifies, holds every acknowledged commit.
        let e = Engine::open(&home, &agent, &master)
            .unwrap_or_else(|err| panic!("round {round}: reopen failed: {err}"));
        let report = sovseal::history::verify::verify(e.agent(), |_, _| {})
            .unwrap_or_else(|err| panic!("round {round}: verify failed: {err}"));
        if let Some(&(_, seq)) = acked.last() {
            assert!(
                e.head().seq() >= seq,
                "round {round}: head {} lost acked {seq}",
                e.head().seq()
            );
        }
        for &(n, seq) in acked.iter().rev().take(20) {
            let v = e.agent().snapshot(seq).unwrap();
            let ino = v.resolve(format!("f{}", n % 10).as_bytes()).unwrap();
            let want = content(n);
            assert_eq!(
                v.read(ino, 0, want.len() + 1).unwrap(),
                want,
                "round {round}: commit {n} at seq {seq}"
            );
        }
        drop(e);
        println!(
            "round {round}: {} acked so far, head verified ({} snapshots)",
            acked.len(),
            report.snapshots
        );
    }
    assert!(
        acked.len() >= KILLS,
        "the children committed too little to test anything: {}",
        acked.len()
    );
    // Every acknowledged commit, not only the recent ones, in the final state.
    let e = Engine::open(&home, &agent, &master).unwrap();
    for &(n, seq) in &acked {
        let v = e.agent().snapshot(seq).unwrap();
        let ino = v.resolve(format!("f{}", n % 10).as_bytes()).unwrap();
        assert_eq!(
            v.read(ino, 0, 4 << 20).unwrap(),
            content(n),
            "commit {n} at seq {seq}"
        );
    }
    println!(
        "{} passed, 0 failed ({} kills, {} acknowledged commits checked, {:.1}s)",
        1,
        KILLS,
        acked.len(),
        t0.elapsed().as_secs_f64()
    );
}
