//! The kernel's writeback cache (`--writeback-cache`, #15): the kernel
//! keeps small writes in its page cache and sends them later, in larger
//! pieces, through whichever handle is open for writing. Through a real
//! mount with it on: a reference model of random writes, truncates,
//! appends and mmap writes, read back live and after a remount; O_APPEND
//! from two processes; a close commits exactly what was written, also when
//! the kernel sent those writes through another handle; write+close
//! survives a SIGKILL of the daemon.

mod support;
use nix::sys::signal::Signal;
use support::mount::Mounted;

fn mounted(agent: &str) -> Mounted {
    Mounted::new(agent, &["--writeback-cache"])
}

/// The kernel agreed to cache writes (the daemon logs the negotiation).
fn assert_caching(m: &Mounted) {
    let log = m.home.join("logs").join(format!("{}.log", m.agent));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("writeback cache on"), "{log}");
}

/// Random operations on four files, each checked against a model in the
/// program; the model is written out and checked again after a remount.
#[test]
fn a_reference_model_holds_through_the_writeback_cache() {
    let m = mounted("wb-model");
    assert_caching(&m);
    let model = m.py(r#"
import mmap, os, random, json
rng = random.Random(1515)
names = ["a", "b", "c", "d"]
model = {n: bytearray() for n in names}
fds = {n: os.open(n, os.O_RDWR | os.O_CREAT, 0o644) for n in names}
def check(n):
    with open(n, "rb") as f:
        got = f.read()
    assert got == bytes(model[n]), (n, len(got), len(model[n]))
for step in range(1500):
    n = rng.choice(names)
    op = rng.random()
    if op < 0.45:
        off = rng.randrange(0, len(model[n]) + 70000)
        data = rng.randbytes(rng.choice([1, 17, 4096, 5000, 65536, 70001]))
        os.pwrite(fds[n], data, off)
        m = model[n]
        if len(m) < off:
            m.extend(b"\0" * (off - len(m)))
        m[off:off + len(data)] = data
    elif op < 0.55:
        size = rng.randrange(0, len(model[n]) + 10000)
        os.ftruncate(fds[n], size)
        m = model[n]
        if size < len(m):
            del m[size:]
        else:
            m.extend(b"\0" * (size - len(m)))
    elif op < 0.65:
        data = rng.randbytes(rng.randrange(1, 9000))
        with open(n, "ab") as f:
            f.write(data)
        model[n].extend(data)
    elif op < 0.72 and len(model[n]) > 0:
        off = rng.randrange(0, len(model[n]))
        data = rng.randbytes(min(rng.randrange(1, 3000), len(model[n]) - off))
        with open(n, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
            mm[off:off + len(data)] = data
            mm.close()
        model[n][off:off + len(data)] = data
    elif op < 0.80:
        os.close(fds[n])
        fds[n] = os.open(n, os.O_RDWR)
    elif op < 0.85:
        os.fsync(fds[n])
    else:
        off = rng.randrange(0, len(model[n]) + 1)
        got = os.pread(fds[n], 100000, off)
        assert got == bytes(model[n][off:off + 100000]), (n, off)
    assert os.fstat(fds[n]).st_size == len(model[n]), (n, step)
    if step % 100 == 0:
        check(n)
for n in names:
    os.close(fds[n])
    check(n)
print(json.dumps({n: bytes(model[n]).hex() for n in names}))
"#);
    let model: std::collections::BTreeMap<String, String> =
        serde_json::from_str(model.trim()).unwrap();
    let check = |m: &Mounted, root: &str| {
        for (name, hex) in &model {
            let got = std::fs::read(m.path(&format!("{root}{name}"))).unwrap();
            assert_eq!(
                sovseal::hex::encode(&got),
                *hex,
                "{root}{name} differs from the model"
            );
        }
    };
    check(&m, "");
    m.remount();
    check(&m, "");
    check(&m, ".snapshots/latest/");
}

/// Two processes append lines through O_APPEND: every line lands whole,
/// none overwrites another.
#[test]
fn appends_from_two_processes_keep_every_line() {
    let m = mounted("wb-append");
    m.sh(r#"
for w in 1 2; do
  ( for i in $(seq 1 400); do printf 'writer %s line %04d ....................\n' $w $i >> log; done ) &
done
wait
"#);
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 800, "{log}");
    for w in 1..=2 {
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("writer {w} ")))
            .collect();
        assert_eq!(mine.len(), 400);
        for (i, l) in mine.iter().enumerate() {
            assert_eq!(
                *l,
                format!("writer {w} line {:04} ....................", i + 1)
            );
        }
    }
    m.remount();
    assert_eq!(std::fs::read_to_string(m.path("log")).unwrap(), log);
}

/// The kernel sends a file's cached writes through the handle opened last
/// for writing. A program that writes through its first descriptor and
/// closes it still gets exactly one snapshot holding what it wrote, at
/// that close; the later close of the other descriptor seals nothing more.
#[test]
fn a_close_commits_what_the_kernel_sent_through_another_handle() {
    let m = mounted("wb-handles");
    assert_caching(&m);
    m.py("import os\nopen('f', 'wb').close()\nos.fsync(os.open('.', os.O_RDONLY))");
    let before = m.head();
    m.py(r#"
import os
a = os.open("f", os.O_WRONLY)
b = os.open("f", os.O_RDWR)
data = b"".join(b"%05d written through the first descriptor\n" % i for i in range(64))
os.write(a, data)
os.close(a)
with open(".snapshots/latest/f", "rb") as f:
    assert f.read() == data, "the close of the first descriptor committed its writes"
os.close(b)
"#);
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(
        m.head(),
        before + 1,
        "one snapshot for the one close that wrote"
    );
}

/// `echo x > f` is one snapshot under the writeback cache too, and
/// write+close survives a SIGKILL of the daemon sent right after.
#[test]
fn write_close_is_one_snapshot_and_survives_a_kill() {
    let m = mounted("wb-kill");
    let before = m.head();
    m.sh("echo x > f");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(m.head(), before + 1);
    m.py(r#"
with open("g", "wb") as f:
    for i in range(2000):
        f.write(b"%06d" % i * 50)
"#);
    m.signal(Signal::SIGKILL);
    m.remount();
    let want: Vec<u8> = (0..2000)
        .flat_map(|i| format!("{i:06}").repeat(50).into_bytes())
        .collect();
    assert_eq!(std::fs::read(m.path("g")).unwrap(), want);
    assert_eq!(std::fs::read(m.path(".snapshots/latest/g")).unwrap(), want);
}

/// With the writeback cache the kernel takes writes at the largest file
/// size (1 TiB) into its page cache and reports success; what the daemon
/// then refuses must reach the program's `fsync`, not vanish: a write
/// past the limit (refused whole) and one that crosses it (the daemon
/// stores up to the limit, and answers the kernel's writeback, which does
/// not look at a short count, with an error). The daemon serves on.
#[test]
fn writes_past_the_size_limit_fail_at_the_fsync() {
    let m = mounted("wb-far");
    assert_caching(&m);
    let out = m.py(r#"
import errno, os
def result(f):
    try:
        f()
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
for name, off in (('past', 1 << 40), ('crossing', (1 << 40) - 2)):
    fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    wrote = result(lambda: os.pwrite(fd, b'xyz', off))
    synced = result(lambda: os.fsync(fd))
    # (Nothing kept near the limit: its commit would hold 16M references.)
    os.ftruncate(fd, 0)
    os.close(fd)
    print(name, wrote, synced)
with open('after', 'w') as f:
    f.write('still here')
print(open('after').read())
"#);
    let lines: Vec<&str> = out.lines().collect();
    for (line, name) in lines.iter().zip(["past", "crossing"]) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], name, "{out}");
        assert!(
            f[1] != "ok" || f[2] != "ok",
            "{name}: the write and its fsync both succeeded: {out}"
        );
    }
    assert_eq!(lines[2], "still here", "{out}");
}
