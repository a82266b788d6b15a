//! Inode lifetimes as FUSE defines them: every entry reply is a kernel
//! reference that only FORGET gives back. A name replaced by a rename
//! never vanishes for a reader that already looked it up, and the
//! `.snapshots` inode table shrinks again once the kernel forgets what it
//! browsed.

mod support;
use support::metrics::{metric, wait_for, wait_rewritten_after};
use support::mount::Mounted;

/// A writer replaces `state.json` by rename (write a temp file, rename it
/// over) for 10 s while three reader processes open and read it in a loop:
/// on a local file system the name always resolves to the old or the new
/// file, never to nothing.
///
/// Regression (fails on the main before this change: an inode that lost
/// its last name was dropped at once although the kernel still referenced
/// it, and a reader's open of it got ENOENT).
#[test]
fn replace_by_rename_never_shows_enoent_to_readers() {
    let m = Mounted::new("replace", &[]);
    m.sh("echo '{\"v\": 0}' > state.json");
    let out = m.py(r#"
import os, time, multiprocessing as mp

def reader(q, end):
    n = missing = 0
    while time.time() < end:
        try:
            with open('state.json') as f:
                f.read()
            n += 1
        except FileNotFoundError:
            missing += 1
    q.put((n, missing))

end = time.time() + 10
q = mp.Queue()
readers = [mp.Process(target=reader, args=(q, end)) for _ in range(3)]
for r in readers:
    r.start()
writes = 0
while time.time() < end:
    with open('state.tmp', 'w') as f:
        f.write('{"v": %d}' % writes)
    os.replace('state.tmp', 'state.json')
    writes += 1
results = [q.get() for _ in readers]
for r in readers:
    r.join()
print(writes, sum(n for n, _ in results), sum(m for _, m in results))
"#);
    let nums: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    let (writes, reads, enoent) = (nums[0], nums[1], nums[2]);
    eprintln!("{writes} replaces, {reads} reads, {enoent} ENOENT");
    assert!(writes > 100 && reads > 100, "the loops ran: {out}");
    assert_eq!(enoent, 0, "a reader saw the name vanish: {out}");
    // The replaced files are gone once the kernel forgot them: only the
    // last state remains, in the tree and in the next snapshot.
    assert_eq!(m.sh("ls"), "state.json\n");
    m.unmount();
    m.mount();
    assert_eq!(m.sh("cat state.json"), format!("{{\"v\": {}}}", writes - 1));
}

/// Browsing 10,000 files of a snapshot grows the `.snapshots` inode table;
/// once the kernel drops its caches (and sends FORGET) the table is back to
/// a handful. Regression (fails on the main before this change: the table
/// only ever grew).
#[test]
fn the_history_inode_table_is_bounded_by_what_the_kernel_holds() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.prom");
    let m = Mounted::new("hist", &["--metrics-file", metrics.to_str().unwrap()]);
    m.py(
        "import os\nos.mkdir('d')\nfor i in range(10000):\n    open('d/f%05d' % i, 'w').write('x')",
    );
    // Browse the newest snapshot: a lookup (stat) of every file.
    let n = m.sh("find .snapshots/latest/d -type f -size -2c | wc -l");
    assert_eq!(n.trim(), "10000");
    let grown = wait_for(&metrics, "sovseal_history_inodes{", |v| v >= 10_000);
    let held = wait_for(&metrics, "sovseal_kernel_inodes{", |v| v >= 10_000);
    eprintln!("after browsing: {grown} history inodes, {held} kernel references");
    // Drop the kernel's dentry and inode caches: it forgets what it holds.
    std::process::Command::new("sh")
        .args(["-c", "sync; echo 2 > /proc/sys/vm/drop_caches"])
        .status()
        .unwrap();
    let shrunk = wait_for(&metrics, "sovseal_history_inodes{", |v| v < 100);
    let released = wait_for(&metrics, "sovseal_kernel_inodes{", |v| v < 100);
    eprintln!("after dropping caches: {shrunk} history inodes, {released} kernel references");
    // What was forgotten is looked up again on demand, with the same content.
    assert_eq!(m.sh("cat .snapshots/latest/d/f09999"), "x");
    assert_eq!(m.sh("cat d/f00000"), "x");
}

/// A process whose working directory is removed by another keeps a
/// directory that stats (no links), lists empty and takes no new entries,
/// as on a local file system (the same program runs on both).
///
/// Regression (fails on the main before this change: the removed
/// directory was dropped at once and `stat(".")` got ENOENT).
#[test]
fn a_removed_working_directory_behaves_as_on_a_local_file_system() {
    const PROGRAM: &str = r#"
import errno, os, subprocess
def t(f):
    try:
        r = f()
        return 'ok' if r is None else str(r)
    except OSError as e:
        return errno.errorcode[e.errno]
os.mkdir('gone')
os.mkdir('gone/inner')
os.chdir('gone/inner')
subprocess.check_call(['rmdir', '../inner'])
s = os.stat('.')
print('stat', s.st_nlink, oct(s.st_mode))
print('list', t(lambda: os.listdir('.')))
print('create', t(lambda: open('x', 'w').close()))
print('mkdir', t(lambda: os.mkdir('y')))
print('symlink', t(lambda: os.symlink('t', 'z')))
print('parent', t(lambda: sorted(os.listdir('..'))))
os.chdir('../..')
print('after', t(lambda: os.listdir('gone')))
"#;
    let run = |dir: &std::path::Path| {
        let o = std::process::Command::new("python3")
            .arg("-c")
            .arg(PROGRAM)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let local = tempfile::tempdir().unwrap();
    let want = run(local.path());
    assert!(
        want.starts_with("stat 0 0o40755\nlist []\ncreate ENOENT\n"),
        "{want}"
    );
    let m = Mounted::new("rmcwd", &[]);
    assert_eq!(run(&m.mnt), want);
    // Nothing of it reaches a snapshot.
    m.unmount();
    m.mount();
    assert_eq!(m.sh("ls -A gone"), "");
}

/// Listing `.snapshots/` (3,000 snapshots, `ls` and `ls -l`) adds nothing
/// to the `.snapshots` inode table: a snapshot's root directory has a
/// number computed from its sequence, so the daemon's memory does not
/// grow with the history a listing walks through (it would hold one entry
/// per snapshot listed, until a sweep). Its files still get table entries,
/// dropped when the kernel forgets them.
#[test]
fn listing_snapshots_allocates_no_inode_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("m.prom");
    let m = Mounted::new("hist-ls", &["--metrics-file", metrics.to_str().unwrap()]);
    m.py("for i in range(3000):\n    open('f', 'w').write(str(i))");
    let n = m.sh("ls .snapshots | wc -l; ls -l .snapshots > /dev/null");
    assert!(n.trim().parse::<u64>().unwrap() >= 3001, "{n}");
    // The metrics file is rewritten periodically: wait for a rewrite that
    // happened after the listing.
    let listed = std::time::SystemTime::now();
    wait_rewritten_after(&metrics, listed);
    let table = metric(&metrics, "sovseal_history_inodes{").unwrap();
    assert!(
        table < 10,
        "{table} history inodes after listing 3,000 snapshots"
    );
    assert_eq!(m.sh("cat .snapshots/0000000100/f"), "98");
    assert_eq!(m.sh("cat .snapshots/latest/f"), "2999");
}
