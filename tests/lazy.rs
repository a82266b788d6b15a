//! Lazy restore (#16): a machine without local data mounts an agent from
//! its remote (a real S3 server, or a directory to tamper with) once the
//! chain is fetched and checked, before any content; file contents are
//! fetched on first read, verified, and kept locally sealed. A remote that
//! does not answer gives EIO after the timeout, a tampered object is never
//! served, and snapshots replicated without part indexes are restored
//! whole until the writer's mount writes the indexes.

mod support;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::home::files_under;
use support::moto::Moto;
use support::mount::Mounted;

/// Bytes stored under `dir` (every file below it).
fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

/// The fetched objects of the lazily restored agent `m`.
fn fetched(m: &Mounted) -> Vec<PathBuf> {
    files_under(&m.home.join(format!("agents/{}/lazy/objects", m.agent)))
}

/// Every file of every snapshot, by snapshot name (`Mounted::history`).
type History = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>>;

/// A writer's history: a 3 MB file patched in place, a tree, and 20
/// snapshots of a small state file; replicated, then unmounted. Returns
/// every file of every snapshot.
fn write_history(m: &Mounted) -> History {
    m.sh("head -c 3000000 /dev/urandom > big && mkdir -p d/e && echo two > d/e/b && ln -s d/e/b link");
    m.py("import os\nfd = os.open('big', os.O_WRONLY)\nos.pwrite(fd, b'patched', 1048000)\nos.fsync(fd)\nos.close(fd)");
    for i in 0..20 {
        m.sh(&format!("echo state {i} > state"));
    }
    std::thread::sleep(Duration::from_millis(400));
    let head = m.wait_replicated();
    assert!(head >= 20, "{head}");
    let history = m.history();
    assert_eq!(history.len() as u64, head);
    m.unmount();
    history
}

/// The log of `m`'s agent.
fn log(m: &Mounted) -> String {
    std::fs::read_to_string(m.home.join(format!("logs/{}.log", m.agent))).unwrap_or_default()
}

#[test]
fn a_fresh_machine_mounts_before_fetching_content_and_reads_every_snapshot() {
    let s3 = Moto::start();
    let url = s3.url("lazy");
    let m = Mounted::with_env("lz", &["--remote", &url], s3.owned_vars());
    let before = write_history(&m);
    let head = before.len() as u64;

    // A fresh machine: no data dir, the same key, the remote.
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.mount();
    let l = log(&m);
    assert!(
        l.contains(&format!("restored agent lz at snapshot {head} lazily")),
        "{l}"
    );
    // Served before any content came: the packs hold the snapshots'
    // commit records only, and what was fetched is the little the mount
    // read (the root's metadata), not the 3 MB.
    let packs = bytes_under(&m.home.join("agents/lz/packs"));
    let got = bytes_under(&m.home.join("agents/lz/lazy/objects"));
    assert!(
        packs + got < 200_000,
        "packs {packs} + fetched {got} bytes before any read"
    );
    assert_eq!(m.head(), head);

    // First reads fetch, verify and keep what they read.
    let n = fetched(&m).len();
    let latest = format!("{head:010}");
    assert_eq!(
        std::fs::read(m.path("big")).unwrap(),
        before[&latest]["big"]
    );
    assert!(
        fetched(&m).len() > n + 40,
        "{} objects after reading 3 MB",
        fetched(&m).len()
    );
    let lazy = &m.status()["lazy"];
    assert_eq!(lazy["fetched_objects"], fetched(&m).len() as u64, "{lazy}");
    assert!(
        lazy["remote_objects"].as_u64().unwrap() > lazy["fetched_objects"].as_u64().unwrap(),
        "{lazy}"
    );
    // Every file of every snapshot, byte for byte.
    assert_eq!(m.history(), before);
    for f in fetched(&m) {
        let b = std::fs::read(&f).unwrap();
        assert!(
            !b.windows(7).any(|w| w == b"patched"),
            "plaintext in {}",
            f.display()
        );
    }
    m.verify();

    // Writing goes on after a lazy restore, and replicates.
    m.sh("echo after > after");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.wait_replicated(), head + 1);
    assert_eq!(
        std::fs::read(m.path("big")).unwrap(),
        before[&latest]["big"]
    );
}

/// Waits until the mount of `m` has fetched its head's metadata ahead
/// (its log says so).
fn wait_metadata_fetched(m: &Mounted) -> String {
    let t0 = Instant::now();
    loop {
        let l = log(m);
        if let Some(line) = l
            .lines()
            .find(|l| l.contains("the head's metadata fetched ahead"))
        {
            return line.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every path of the tree in `m`'s mount (`.snapshots/` left out) with
/// its type, size, mode and link count: what `find` and `ls -l` read.
fn tree_listing(m: &Mounted) -> String {
    m.sh("find . -path ./.snapshots -prune -o -printf '%p %y %s %m %n\\n' | sort")
}

#[test]
fn a_fresh_machine_fetches_the_heads_metadata_ahead_and_no_content() {
    let s3 = Moto::start();
    let url = s3.url("warm");
    let mut m = Mounted::with_env("lz", &["--remote", &url], s3.owned_vars());
    // 40 directories two deep and three levels of them, a file in each
    // and one more below: about 170 inodes over many snapshots.
    m.sh(
        "for a in 1 2 3 4; do for b in 1 2 3 4 5 6 7 8 9 10; do mkdir -p t$a/u$b/v && echo $a$b > t$a/u$b/f && head -c 5000 /dev/urandom > t$a/u$b/v/g; done; done",
    );
    std::thread::sleep(Duration::from_millis(400));
    m.wait_replicated();
    let listing = tree_listing(&m);
    assert_eq!(listing.lines().count(), 1 + 4 + 40 * 4, "{listing}");
    let g = std::fs::read(m.path("t3/u7/v/g")).unwrap();
    m.unmount();

    // A fresh machine; once its mount has fetched the head's metadata
    // ahead, the remote stops answering.
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.extra
        .extend(["--fetch-timeout-secs".to_string(), "2".to_string()]);
    m.mount();
    let line = wait_metadata_fetched(&m);
    s3.pause();
    // The whole tree lists and stats without the remote (an object not
    // here would wait for it, then fail the listing)...
    let seen = tree_listing(&m);
    // ...and no content came with it: a file's content waits for the
    // remote and gives EIO.
    let out = m.py(
        "import errno\ntry:\n    open('t3/u7/v/g', 'rb').read()\n    print('read')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
    );
    s3.resume();
    assert_eq!(seen, listing, "{line}");
    assert_eq!(out.trim(), "EIO", "content fetched ahead too ({line})");
    assert_eq!(std::fs::read(m.path("t3/u7/v/g")).unwrap(), g);
    m.unmount();
}

/// A data dir where nothing fetched can be kept (`lazy/objects/` a full
/// filesystem: a tmpfs without a free inode): the fetch ahead asks for
/// each object once and ends, and the tree still reads (each read fetches
/// what it needs).
#[test]
fn fetching_the_heads_metadata_ahead_ends_when_nothing_can_be_kept() {
    /// A tmpfs mounted at a path, unmounted when dropped.
    struct Full(PathBuf);
    impl Drop for Full {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let (_dir, _remote, url, m, before) = written_to_dir_remote();
    let f = fresh_machine(&m, &url);
    f.mount();
    wait_metadata_fetched(&f);
    f.unmount();
    let objects = f.home.join("agents/lz/lazy/objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::create_dir(&objects).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "nr_inodes=1,size=64k,mode=700",
            "tmpfs",
        ])
        .arg(&objects)
        .status()
        .unwrap();
    assert!(ok.success(), "mount a full tmpfs (the tests run as root)");
    let _full = Full(objects.clone());
    std::fs::write(f.home.join("logs/lz.log"), b"").unwrap();
    f.mount();
    let line = wait_metadata_fetched(&f);
    assert!(
        log(&f).contains("not kept"),
        "nothing could be kept: {line}"
    );
    assert_eq!(f.history(), before);
    f.unmount();
}

#[test]
fn a_read_the_remote_does_not_answer_fails_with_eio_after_the_timeout() {
    let s3 = Moto::start();
    let url = s3.url("slow");
    let mut m = Mounted::with_env("lz", &["--remote", &url], s3.owned_vars());
    let before = write_history(&m);
    let latest = format!("{:010}", before.len());
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.extra
        .extend(["--fetch-timeout-secs".to_string(), "2".to_string()]);
    m.mount();

    s3.pause();
    let t0 = Instant::now();
    let out = m.py(
        "import errno\ntry:\n    open('big', 'rb').read()\n    print('read')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
    );
    let waited = t0.elapsed();
    s3.resume();
    assert_eq!(out.trim(), "EIO", "a read the remote never answered");
    assert!(waited >= Duration::from_secs(2), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    let l = log(&m);
    assert!(
        l.contains("lazy restore:") && l.contains("no answer within 2 s"),
        "{l}"
    );
    // Nothing wrong was kept: once the remote answers, the file reads.
    assert_eq!(
        std::fs::read(m.path("big")).unwrap(),
        before[&latest]["big"]
    );
    m.unmount();
}

/// A directory remote (its files can be read and edited in place): the
/// temporary directory holding it, its path, its URL.
fn dir_remote() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let url = format!("file://{}", remote.display());
    (dir, remote, url)
}

/// A writer of agent `lz` on a directory remote after [`write_history`]:
/// the directory holding the remote, its path, its URL, the (unmounted)
/// writer and its history.
fn written_to_dir_remote() -> (tempfile::TempDir, PathBuf, String, Mounted, History) {
    written_to_dir_remote_with(&[])
}

/// [`written_to_dir_remote`], the writer mounted with `extra` options too.
fn written_to_dir_remote_with(
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, String, Mounted, History) {
    let (dir, remote, url) = dir_remote();
    let args: Vec<&str> = ["--remote", url.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let m = Mounted::new("lz", &args);
    let before = write_history(&m);
    (dir, remote, url, m, before)
}

/// A second machine holding `m`'s key, to mount agent `lz` from `url`
/// (not mounted yet).
fn fresh_machine(m: &Mounted, url: &str) -> Mounted {
    another_machine(m, url, "fresh")
}

/// As [`fresh_machine`], one of several (each `name` once).
fn another_machine(m: &Mounted, url: &str, name: &str) -> Mounted {
    let f = Mounted {
        dir: tempfile::tempdir().unwrap(),
        home: m.second_home(name),
        mnt: m.dir.path().join(format!("{name}-view")),
        agent: "lz".into(),
        extra: ["--agent", "lz", "--remote", url]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: Vec::new(),
    };
    std::fs::create_dir(&f.mnt).unwrap();
    f
}

#[test]
fn an_object_tampered_with_on_the_remote_is_never_served() {
    let (_dir, remote, _, m, _) = written_to_dir_remote();
    // Flip the last byte of every chunk record in every pack part.
    let mut flipped = 0;
    for f in files_under(&remote)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "pack"))
    {
        let mut b = std::fs::read(&f).unwrap();
        let mut at = 8;
        while at < b.len() {
            let kind = b[at + 32];
            let len = u32::from_le_bytes(b[at + 33..at + 37].try_into().unwrap()) as usize;
            let end = at + 37 + len;
            if kind == 1 {
                b[end - 1] ^= 1;
                flipped += 1;
            }
            at = end;
        }
        std::fs::write(&f, b).unwrap();
    }
    assert!(flipped > 40, "{flipped} chunks");
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.mount();
    let out = m.py(
        "import errno\nfor name in ['big', 'state', 'd/e/b']:\n    try:\n        open(name, 'rb').read()\n        print(name, 'read')\n    except OSError as e:\n        print(name, errno.errorcode[e.errno])",
    );
    assert_eq!(out.trim(), "big EIO\nstate EIO\nd/e/b EIO", "{out}");
    // The tree still lists (metadata verified), content never arrives.
    assert!(m.path("d/e/b").exists());
    // No chunk was kept: each fetched file starts with its kind byte.
    assert!(
        fetched(&m)
            .iter()
            .all(|f| std::fs::read(f).unwrap()[0] != 1),
        "a tampered chunk was kept"
    );
    let l = log(&m);
    assert!(l.contains("lazy restore: chunk"), "{l}");
    m.unmount();
}

/// A remote some of whose snapshots have no part index (replicated by an
/// older build) restores whole; the writer's mount then writes the missing
/// indexes (the same bytes the replicator wrote at upload), and the next
/// machine restores lazily.
#[test]
fn snapshots_without_part_indexes_restore_whole_until_the_writer_indexes_them() {
    // Uploaded one by one, as the builds before part indexes (and
    // batches) did.
    let (_dir, remote, url, m, before) = written_to_dir_remote_with(&["--no-batch-uploads"]);
    // As a build before lazy restores left it: no part index.
    let indexes: Vec<_> = files_under(&remote)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "idx"))
        .collect();
    assert_eq!(indexes.len(), before.len(), "one part index per snapshot");
    let gone: Vec<(PathBuf, Vec<u8>)> = [0, indexes.len() / 2, indexes.len() - 1]
        .iter()
        .map(|&i| (indexes[i].clone(), std::fs::read(&indexes[i]).unwrap()))
        .collect();
    for (f, _) in &gone {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.mount();
    let l = log(&m);
    assert!(
        l.contains("has no part index") && l.contains("restoring whole"),
        "{l}"
    );
    assert!(!m.home.join("agents/lz/lazy").exists());
    assert!(bytes_under(&m.home.join("agents/lz/packs")) > 3_000_000);
    assert_eq!(m.history(), before);

    // The writer's replicator, with nothing to upload, writes them again.
    let t0 = Instant::now();
    while !gone.iter().all(|(f, _)| f.exists()) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", log(&m));
        std::thread::sleep(Duration::from_millis(100));
    }
    for (f, b) in &gone {
        assert_eq!(&std::fs::read(f).unwrap(), b, "{}", f.display());
    }
    assert!(
        log(&m).contains("3 replicated snapshots have no part index"),
        "{}",
        log(&m)
    );
    m.unmount();
    let f = fresh_machine(&m, &url);
    f.mount();
    assert!(log(&f).contains("lazily"), "{}", log(&f));
    assert!(bytes_under(&f.home.join("agents/lz/packs")) < 200_000);
    assert_eq!(f.history(), before);
    f.unmount();
}

/// The path of snapshot `seq`'s `name` under `.snapshots/`.
fn in_snapshot(m: &Mounted, seq: u64, name: &str) -> PathBuf {
    m.path(&format!(".snapshots/{seq:010}/{name}"))
}

/// What reading `p` gives: its bytes, or the errno's name.
fn attempt(m: &Mounted, p: &Path) -> String {
    m.py(&format!(
        "import errno\ntry:\n    b = open({:?}, 'rb').read()\n    print('read', len(b))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        p.to_str().unwrap()
    ))
    .trim()
    .to_string()
}

#[test]
fn a_redaction_is_never_fetched_back() {
    let (dir, remote, url) = dir_remote();
    let w = Mounted::new("lz", &["--remote", &url]);
    w.sh("head -c 200000 /dev/urandom > secret && echo keep > keep");
    let with_secret = w.head();
    w.sh("rm secret && sync");
    // A history long enough for a fresh machine to start from a signed
    // checkpoint of its head (the flat start), the secret before it.
    // (340: with the snapshots gone up in batches, the tail segment is
    // written once it would hold 64 snapshots past the first range.)
    w.py("for i in range(340):\n    open('n', 'w').write(str(i))");
    std::thread::sleep(Duration::from_millis(400));
    w.wait_replicated();
    let o = w.sovseal(&["checkpoint", "--agent", "lz", "--remote", &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_segments(&w, &remote, 1);
    w.unmount();
    // The remote as it was before any redaction (parts and indexes).
    let before = dir.path().join("before");
    assert!(
        std::process::Command::new("cp")
            .args(["-a", remote.to_str().unwrap(), before.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );

    // The agent moves to a machine that restores it lazily and reads the
    // secret's old version there (fetched and kept), then redacts it.
    std::fs::remove_dir_all(w.home.join("agents/lz")).unwrap();
    w.mount();
    let old = in_snapshot(&w, with_secret, "secret");
    assert_eq!(attempt(&w, &old), "read 200000");
    let names = |m: &Mounted| -> std::collections::BTreeSet<String> {
        fetched(m)
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    };
    let kept = names(&w);
    w.unmount();
    let lazy_dir = w.home.join("agents/lz/lazy");
    let lazy_before = dir.path().join("lazy-before");
    assert!(
        std::process::Command::new("cp")
            .args([
                "-a",
                lazy_dir.to_str().unwrap(),
                lazy_before.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    let o = w.sovseal(&["redact", "--agent", "lz", "--remote", &url, "/secret"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec = files_under(&w.home.join("agents/lz/redactions"));
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec[0]).unwrap()).unwrap();
    let erased: std::collections::BTreeSet<String> = rec["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    assert!(
        erased.intersection(&kept).count() >= 3,
        "the read kept the secret's objects"
    );
    assert_eq!(
        erased.intersection(&names(&w)).count(),
        0,
        "fetched copies of the secret stay"
    );
    // As if the redaction had stopped right after its record: the remote
    // index and the fetched copies as they were. The mount drops what the
    // records here erase before it serves.
    std::fs::remove_dir_all(&lazy_dir).unwrap();
    std::fs::rename(&lazy_before, &lazy_dir).unwrap();
    // So does a command that reads the snapshot (without writing).
    let o = w.sovseal(&[
        "cat",
        "--agent",
        "lz",
        "--seq",
        &with_secret.to_string(),
        "/secret",
    ]);
    assert!(!o.status.success(), "cat served {} bytes", o.stdout.len());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing object"), "{err}");
    w.mount();
    assert_eq!(
        attempt(&w, &old),
        "EIO",
        "the redacted version after remount"
    );
    assert_eq!(attempt(&w, &w.path("keep")), "read 5");
    w.unmount();

    // A fresh machine restoring lazily from a remote whose pack parts still
    // hold the secret (the redaction record is there, the rewrite is not).
    // (The chain segment too: the older history of a fresh machine's flat
    // start comes from it, and it still names the secret's objects.)
    for sub in ["packs", "indexes", "segments"] {
        let agent_dir = files_under(&before)
            .into_iter()
            .find(|f| f.to_str().unwrap().contains(&format!("/{sub}/")))
            .unwrap();
        let from = agent_dir.parent().unwrap().to_path_buf();
        let to = remote.join(from.strip_prefix(&before).unwrap());
        std::fs::remove_dir_all(&to).unwrap();
        assert!(
            std::process::Command::new("cp")
                .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
                .status()
                .unwrap()
                .success()
        );
    }
    let f = fresh_machine(&w, &url);
    f.mount();
    assert!(log(&f).contains("lazily"), "{}", log(&f));
    assert!(
        log(&f).contains("lazy restore from snapshot"),
        "{}",
        log(&f)
    );
    // (Listing the snapshots waits for the older history.)
    assert!(f.snapshots().contains(&with_secret));
    assert_eq!(attempt(&f, &in_snapshot(&f, with_secret, "secret")), "EIO");
    assert_eq!(attempt(&f, &f.path("keep")), "read 5");
    f.unmount();
    // A follower needs every snapshot's content here: refused, saying why.
    let mut follower = f;
    follower.extra.push("--follow".into());
    let o = follower.try_mount();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("was restored lazily here"), "{err}");
    // So does a takeover (it pulls and checks against what is here).
    let o = follower.sovseal(&["takeover", "--agent", "lz", "--remote", &url]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("was restored lazily here"), "{err}");
}

#[test]
fn a_prune_on_a_lazily_restored_agent_keeps_the_remote_parts_it_reads() {
    let (_dir, _, url, m, before) = written_to_dir_remote();
    let latest = format!("{:010}", before.len());
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.mount();
    m.unmount();
    // Everything but the last two snapshots is forgotten and pruned, here
    // and on the remote, while none of the content is here yet: `big`
    // lives in the parts of snapshots now forgotten.
    let o = m.sovseal(&[
        "forget",
        "--agent",
        "lz",
        "--keep-last",
        "2",
        "--prune",
        "--remote",
        &url,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m.mount();
    assert_eq!(m.snapshots().len(), 2);
    assert_eq!(
        std::fs::read(m.path("big")).unwrap(),
        before[&latest]["big"]
    );
    assert_eq!(std::fs::read(m.path("d/e/b")).unwrap(), b"two\n");
    m.unmount();
}

#[test]
fn a_lazily_restored_agent_never_uploads_the_snapshots_it_holds_no_content_of() {
    let (_dir, remote, url, m, before) = written_to_dir_remote();
    let latest = format!("{:010}", before.len());
    let packs = |dir: &Path| -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        files_under(dir)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "pack" || e == "idx"))
            .map(|f| {
                let b = std::fs::read(&f).unwrap();
                (f, b)
            })
            .collect()
    };
    let on_remote = packs(&remote);
    std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
    m.mount();
    m.unmount();
    // As if the restore stopped before it recorded everything as
    // replicated: the replicator goes over every snapshot again.
    m.index_sql("UPDATE meta SET value = X'30' WHERE key = 'replicated_seq'");
    m.mount();
    m.sh("echo after > after");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.wait_replicated(), before.len() as u64 + 1);
    m.unmount();
    let now = packs(&remote);
    for (f, b) in &on_remote {
        assert!(now[f] == *b, "{} was replaced", f.display());
    }
    assert!(now.len() > on_remote.len(), "the new snapshot went up");
    // A fresh machine still reads everything from that remote.
    let m2 = fresh_machine(&m, &url);
    m2.mount();
    assert_eq!(
        std::fs::read(m2.path("big")).unwrap(),
        before[&latest]["big"]
    );
    assert_eq!(std::fs::read(m2.path("after")).unwrap(), b"after\n");
    m2.unmount();
}

/// A restore killed part-way, lazy or whole (`--full-restore`), leaves a
/// data dir marked as such, which no command opens for writing; the next
/// mount starts the restore over and serves the remote's head, never the
/// part of the chain the killed one had committed (a whole restore's
/// prefix would otherwise mount as an older head and fork from the remote).
#[test]
fn a_restore_killed_part_way_is_started_over_by_the_next_mount() {
    let (_dir, remote, _, mut m, before) = written_to_dir_remote_with(&["--no-batch-uploads"]);
    let head = before.len() as u64;
    let marker = m.home.join("agents/lz/restoring");
    for full in [false, true] {
        // Snapshot 10's part index (lazy) or first pack part (whole) is a
        // FIFO: the restore waits at its read until it is killed.
        let ext = if full { "pack" } else { "idx" };
        let f = files_under(&remote)
            .into_iter()
            .find(|f| {
                f.extension().is_some_and(|e| e == ext)
                    && f.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&format!("{:020}-", 10))
            })
            .unwrap();
        let bytes = std::fs::read(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        let mkfifo = std::process::Command::new("mkfifo").arg(&f).status();
        assert!(mkfifo.unwrap().success());
        // A fresh machine: no data dir, no seen-head record either.
        std::fs::remove_dir_all(m.home.join("agents/lz")).unwrap();
        let _ = std::fs::remove_file(m.home.join("seen/lz"));
        if full {
            m.extra.push("--full-restore".into());
        }
        let mut mounting = m
            .cmd(support::mount::MOUNT)
            .arg(&m.mnt)
            .args(&m.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The restore has marked the data dir and holds it; snapshots 1-9
        // go in while it waits at 10 (rows are written in batches, so the
        // index is not where to look).
        let t0 = Instant::now();
        let pid = loop {
            if marker.exists()
                && let Some(pid) = m.daemon_pid()
            {
                break Some(pid);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(pid) = pid else {
            let _ = mounting.kill();
            panic!("full: {full}: no restore marked the data dir: {}", log(&m));
        };
        std::thread::sleep(Duration::from_millis(500));
        m.signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
        let failed = mounting.wait().unwrap();
        assert!(!failed.success(), "full: {full}");
        assert!(
            marker.exists(),
            "full: {full}: the stopped restore is marked"
        );
        // No writer opens it meanwhile.
        let o = m.sovseal(&["forget", "--agent", "lz", "--keep-last", "1"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("stopped before it finished"), "{err}");
        // Nor a reader: its head is not the agent's.
        let o = m.sovseal(&["status", "--agent", "lz"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("stopped before it finished"),
            "{err}"
        );

        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, bytes).unwrap();
        m.mount();
        assert_eq!(
            log(&m)
                .matches("stopped before it finished; starting it over")
                .count(),
            1 + usize::from(full),
            "{}",
            log(&m)
        );
        assert_eq!(m.head(), head, "full: {full}");
        assert!(!marker.exists());
        assert_eq!(
            m.home.join("agents/lz/lazy").exists(),
            !full,
            "full: {full}"
        );
        assert_eq!(m.history(), before, "full: {full}");
        m.unmount();
        m.extra.retain(|a| a != "--full-restore");
    }
}

/// The chain segment files on directory remote `remote`, in order.
fn segment_files(remote: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = files_under(remote)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "seg") && !f.ends_with("tail.seg"))
        .collect();
    v.sort();
    v
}

/// The tail segment file on directory remote `remote`, if any.
fn tail_file(remote: &Path) -> Option<PathBuf> {
    files_under(remote)
        .into_iter()
        .find(|f| f.ends_with("tail.seg"))
}

/// Waits until `m`'s writer has written `n` chain segments and the tail
/// segment to `remote`.
fn wait_segments(m: &Mounted, remote: &Path, n: usize) -> Vec<PathBuf> {
    let t0 = Instant::now();
    loop {
        let v = segment_files(remote);
        if v.len() >= n && tail_file(remote).is_some() {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{}", log(m));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// While a fresh machine's mount fetches the older history of a flat
/// start, `.snapshots/` waits for it, as a read of content stored before
/// the checkpoint does: an old snapshot is found by name once its batch is
/// in (before the rest), and the listing holds every snapshot, where they
/// held only those from the checkpoint on (and ENOENT for the others)
/// until the whole fetch was done. A mount killed meanwhile leaves the
/// rest to the next command that needs the whole history, which fetches
/// it itself. The remote is seen through a pass-through file system that
/// holds the reads of the first chain segment (the oldest batch's) until
/// the test lets them go.
#[test]
fn snapshots_wait_for_the_older_history_of_a_flat_start() {
    let (dir, remote, url) = dir_remote();
    let m = Mounted::new("lz", &["--remote", &url]);
    // Atomic saves: each snapshot rewrites the root directory, so an old
    // snapshot's metadata is stored near it (not in the first segment).
    m.py("import os\nfor i in range(1400):\n    open('t', 'w').write(str(i))\n    os.replace('t', 'n')");
    let head = m.wait_replicated();
    let o = m.sovseal(&["checkpoint", "--agent", "lz", "--remote", &url]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    wait_segments(&m, &remote, 5);
    let at = |seq: u64| std::fs::read_to_string(in_snapshot(&m, seq, "n")).unwrap();
    let (at100, at1000) = (at(100), at(1000));
    m.unmount();
    let mnt = dir.path().join("far");
    std::fs::create_dir(&mnt).unwrap();
    let far = support::cutfs::CutFs::new(&remote);
    let session = far.mount(&mnt);
    let far_url = format!("file://{}", mnt.display());
    // The flat start is at 1,281 or later (five chain segments, maybe a
    // tail): the older history comes in two batches, the newer from 257 or
    // later (holding 1,000), the older from 1 (holding 100), which waits
    // for the first segment.
    let first_segment = "00000000000000000001.seg";
    let waits = |m: &Mounted, what: Box<dyn FnOnce() -> String + Send>| {
        let t = std::thread::spawn(what);
        std::thread::sleep(Duration::from_millis(500));
        assert!(!t.is_finished(), "{}", m.status());
        far.hold_reads(None);
        t.join().unwrap()
    };
    far.hold_reads(Some(first_segment));
    let f = fresh_machine(&m, &far_url);
    f.mount();
    assert!(
        log(&f).contains("lazy restore from snapshot"),
        "{}",
        log(&f)
    );
    let loading = |m: &Mounted| m.status()["older_history"]["loading"] == true;
    assert!(loading(&f), "{}", f.status());
    assert_eq!(
        std::fs::read_to_string(in_snapshot(&f, 1000, "n")).unwrap(),
        at1000
    );
    assert!(loading(&f), "found before the rest came: {}", f.status());
    let snaps = f.path(".snapshots");
    let listed = waits(
        &f,
        Box::new(move || {
            let n = std::fs::read_dir(snaps)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != "latest")
                .count();
            n.to_string()
        }),
    );
    assert_eq!(listed, head.to_string());
    assert!(!loading(&f));
    assert_eq!(
        std::fs::read_to_string(in_snapshot(&f, 100, "n")).unwrap(),
        at100
    );
    f.unmount();
    // An older snapshot looked up by name at once, on another machine.
    far.hold_reads(Some(first_segment));
    let g = another_machine(&m, &far_url, "second");
    g.mount();
    assert!(loading(&g), "{}", g.status());
    let old = in_snapshot(&g, 100, "n");
    let read = waits(&g, Box::new(move || std::fs::read_to_string(old).unwrap()));
    assert_eq!(read, at100);
    g.unmount();
    // A mount killed while the older history comes (a third machine): the
    // next command that needs the whole history fetches the rest itself.
    far.hold_reads(Some(first_segment));
    let h = another_machine(&m, &far_url, "third");
    h.mount();
    let pid = h.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // (A killed process exits once its held read is answered.)
    std::thread::sleep(Duration::from_millis(200));
    far.hold_reads(None);
    h.stop_daemon();
    // (Stopped before its batches or between them: the first segment's
    // snapshots at least are still to come.)
    let stopped = h.status()["older_history"].clone();
    let from = stopped["from_seq"].as_u64().unwrap();
    assert!(from > 256, "{stopped}");
    let o = h.sovseal(&["snapshots", "--agent", "lz", "--limit", "1000000"]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    let fetching = format!("fetching the history of agent lz before snapshot {from}");
    assert!(
        support::mount::text(&o.stderr).contains(&fetching),
        "{}",
        support::mount::text(&o.stderr)
    );
    assert_eq!(h.snapshots().len() as u64, head);
    assert_eq!(h.status()["older_history"], serde_json::Value::Null);
    // (What the mounts wrote to the remote reaches the directory.)
    far.sync_all();
    drop(session);
}

/// A writer that replicated 1,100 snapshots bundles each complete aligned
/// range of them (`SEGMENT_LEN`) into one chain segment of their envelopes
/// and part indexes (the files the remote holds, byte for byte), and the
/// rest into the tail segment; a fresh machine's lazy restore reads the
/// segments instead of those files: with every part index deleted and
/// some envelope files out of the listing, the restore is still lazy and
/// serves head and old snapshots. A segment that
/// does not decode is read around (snapshot by snapshot: here without the
/// indexes, so whole), one of whose envelopes does not check is taken from
/// the files, and a redaction or a prune deletes the segments of the
/// snapshots whose parts it changes there (only those), which the
/// writer's next mount writes again (after a prune: saying which
/// snapshots have nothing left there, and a restore then reads lazily).
#[test]
fn a_long_history_restores_lazily_from_chain_segments() {
    use sovseal::repo::segment::{SEGMENT_LEN, decode};
    let (_dir, remote, url) = dir_remote();
    // (Commits that fold: what the head reads was written lately, not by
    // a fold in the first range, whose segment is made unreadable below.)
    let m = Mounted::new(
        "lz",
        &["--remote", &url, "--no-batch-uploads", "--fold-every", "0"],
    );
    m.sh("head -c 4000000 /dev/urandom > big && echo secret > old");
    m.py("for i in range(1100):\n    open('n', 'w').write(str(i))");
    m.sh("rm old");
    let head = m.wait_replicated();
    assert!(head > 1100, "{head}");
    let n = (head / SEGMENT_LEN) as usize;
    let covered = n as u64 * SEGMENT_LEN;
    assert!(n >= 2, "{n} segments");
    assert!(
        head - covered >= sovseal::repo::segment::TAIL_STEP,
        "a tail is due"
    );
    // (A tail written while the writes went on may stop short of head: a
    // new mount writes it again, up to head, at its first idle moment.)
    m.unmount();
    m.mount();
    let segs = wait_segments(&m, &remote, n);
    assert_eq!(segs.len(), n);
    let tail_of =
        || sovseal::repo::segment::decode_tail(&std::fs::read(tail_file(&remote)?).ok()?).ok();
    let t0 = Instant::now();
    while tail_of().is_none_or(|(_, t)| (t.len() as u64) < head - covered) {
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", log(&m));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The tail: the snapshots after the last complete range, up to head.
    let (tail_first, tail) = tail_of().unwrap();
    assert_eq!(
        (tail_first, tail.len() as u64),
        (covered + 1, head - covered)
    );
    let old_n = std::fs::read_to_string(in_snapshot(&m, 600, "n")).unwrap();
    let big = std::fs::read(in_snapshot(&m, 600, "big")).unwrap();
    assert_eq!(big.len(), 4_000_000);
    m.unmount();
    // What they hold is what the remote holds.
    let by_name = |suffix: &str, seq: u64| {
        let prefix = format!("{seq:020}");
        files_under(&remote).into_iter().find(|f| {
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(suffix) && !n.ends_with(".seg")
        })
    };
    let members = |segs: &[PathBuf]| -> Vec<sovseal::repo::segment::Member> {
        segs.iter()
            .zip((0..).map(|k| k * SEGMENT_LEN + 1))
            .flat_map(|(f, first)| decode(first, &std::fs::read(f).unwrap()).unwrap())
            .collect()
    };
    for (seq, mem) in (1..).zip(members(&segs).into_iter().chain(tail)) {
        assert_eq!(
            mem.envelope,
            std::fs::read(by_name(".json", seq).unwrap()).unwrap(),
            "envelope {seq}"
        );
        assert_eq!(
            mem.index.as_deref(),
            Some(&std::fs::read(by_name(".idx", seq).unwrap()).unwrap()[..]),
            "part index {seq}"
        );
    }
    // The segments alone say where the objects of the snapshots they
    // cover are (one kept: below).
    let indexes: Vec<(PathBuf, Vec<u8>)> = (1..=head)
        .map(|seq| {
            let f = by_name(".idx", seq).unwrap();
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect();
    for (f, _) in indexes.iter().filter(|(f, _)| *f != indexes[9].0) {
        std::fs::remove_file(f).unwrap();
    }
    // An envelope altered inside a segment that still decodes (a base64
    // character of the sealed manifest): that snapshot is taken from its
    // files, and checked.
    let good = std::fs::read(&segs[0]).unwrap();
    let mut first = decode(1, &good).unwrap();
    let env = String::from_utf8(first[9].envelope.clone()).unwrap();
    let at = env.find("\"ciphertext_b64\":\"").unwrap() + 30;
    let swapped = if env.as_bytes()[at] == b'A' { "B" } else { "A" };
    first[9].envelope = format!("{}{swapped}{}", &env[..at], &env[at + 1..]).into_bytes();
    std::fs::write(&segs[0], sovseal::repo::segment::encode(1, &first)).unwrap();
    // The envelopes the segments hold are not listed, only those after
    // them: with files of a segment's range and of the tail's out of the
    // listing, the restore reads them in the segments.
    let hidden: Vec<PathBuf> = (20..=30)
        .chain([covered + 2])
        .map(|seq| by_name(".json", seq).unwrap())
        .collect();
    let aside = |f: &PathBuf| f.with_file_name(format!("{}.aside", f.display()));
    for f in &hidden {
        std::fs::rename(f, aside(f)).unwrap();
    }
    let f = fresh_machine(&m, &url);
    f.mount();
    for f in &hidden {
        std::fs::rename(aside(f), f).unwrap();
    }
    // (The writer's replicator signed checkpoints: the restore started
    // from the newest, and the older history came after, in the mount;
    // listing the snapshots waits for it.)
    assert_eq!(f.head(), head);
    let l = log(&f);
    assert!(
        l.contains("lazily") && !l.contains("restoring whole"),
        "{l}"
    );
    assert!(l.contains("lazy restore from snapshot"), "{l}");
    assert!(
        l.contains("the segment from snapshot 1 on the remote (a chain or the tail segment) holds a snapshot 10 that does not check"),
        "{l}"
    );
    // The commit records of 1,100 snapshots, none of `big`.
    let packs = bytes_under(&f.home.join("agents/lz/packs"));
    assert!(packs < 2_000_000, "{packs}");
    assert_eq!(std::fs::read_to_string(f.path("n")).unwrap(), "1099");
    // `big` was written in the first segment's range.
    assert_eq!(std::fs::read(f.path("big")).unwrap(), big);
    assert_eq!(std::fs::read(in_snapshot(&f, 600, "big")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(in_snapshot(&f, 600, "n")).unwrap(),
        old_n
    );
    f.unmount();

    // A segment that does not decode: read around, never trusted.
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::fs::write(&segs[0], &bad).unwrap();
    // (The part index files are gone but one: the older history reads
    // the parts of that range's snapshots whole instead; the head's `big`,
    // stored there, reads.)
    let g = another_machine(&m, &url, "second");
    g.mount();
    assert_eq!(std::fs::read_to_string(g.path("n")).unwrap(), "1099");
    assert_eq!(g.head(), head);
    assert_eq!(std::fs::read(g.path("big")).unwrap(), big);
    let l = log(&g);
    assert!(
        l.contains("chain segment 1 on the remote is not usable"),
        "{l}"
    );
    assert!(
        l.contains("has no part index on the remote: read from its"),
        "{l}"
    );
    g.unmount();

    // A redaction deletes the segment of a snapshot whose parts it
    // rewrites (`old` was stored once, in the first range) and no other;
    // the writer's next mount writes it again.
    std::fs::write(&segs[0], &good).unwrap();
    for (f, b) in &indexes {
        std::fs::write(f, b).unwrap();
    }
    let o = m.sovseal(&["redact", "--agent", "lz", "--remote", &url, "/old"]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    assert_eq!(segment_files(&remote), segs[1..], "the redaction's deletes");
    assert!(tail_file(&remote).is_none(), "the redaction left the tail");
    m.mount();
    wait_segments(&m, &remote, n);
    m.unmount();
    assert_ne!(std::fs::read(&segs[0]).unwrap(), good, "written again");

    // A prune there deletes the segments of what it prunes; the writer's
    // next mount writes the missing part indexes, then the segments, which
    // say which snapshots have nothing left there.
    let o = m.sovseal(&["forget", "--agent", "lz", "--keep-last", "50"]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    let o = m.sovseal(&["prune", "--agent", "lz", "--remote", &url]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    assert_eq!(
        segment_files(&remote),
        Vec::<PathBuf>::new(),
        "left by the prune"
    );
    assert!(tail_file(&remote).is_none(), "the prune left the tail");
    m.mount();
    let segs = wait_segments(&m, &remote, n);
    m.unmount();
    assert_eq!(
        tail_of().unwrap().1.len() as u64,
        head - covered,
        "the tail written again"
    );
    let pruned = members(&segs).iter().filter(|m| m.index.is_none()).count();
    assert!(pruned > 1000, "{pruned} snapshots without parts there");
    // The prune bundled the forget records, the files byte for byte.
    use sovseal::repo::segment::{decode_forgotten, encode_forgotten};
    let bundle = segs[0].with_file_name("forgotten.fgb");
    let bundled = decode_forgotten(&std::fs::read(&bundle).unwrap()).unwrap();
    let records = segs[0].parent().unwrap().with_file_name("forgotten");
    let record = |seq: u64| records.join(format!("{seq:020}.json"));
    assert_eq!(bundled.len(), std::fs::read_dir(&records).unwrap().count());
    assert!(bundled.len() as u64 > head - 60, "{}", bundled.len());
    for (seq, raw) in &bundled {
        assert_eq!(*raw, std::fs::read(record(*seq)).unwrap(), "record {seq}");
    }
    // A restore takes them from the bundle: with every file but one out of
    // the listing, and that one's copy in the bundle altered (so taken from
    // its file, and checked), the restore is still lazy and exact.
    let aside = |seq: u64| records.join(format!("{seq:020}.json.aside"));
    for (seq, _) in &bundled[1..] {
        std::fs::rename(record(*seq), aside(*seq)).unwrap();
    }
    let mut altered = bundled.clone();
    let mut v: serde_json::Value = serde_json::from_slice(&altered[0].1).unwrap();
    v["at_ms"] = serde_json::json!(v["at_ms"].as_i64().unwrap() + 1);
    altered[0].1 = serde_json::to_vec(&v).unwrap();
    let good_bundle = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, encode_forgotten(&altered)).unwrap();
    // A segment past the end of the chain (planted, here a copy of the
    // first): every envelope is listed, and it is read around.
    let planted = segs[0].with_file_name(format!("{:020}.seg", covered + 1));
    std::fs::copy(&segs[0], &planted).unwrap();
    let h = another_machine(&m, &url, "third");
    h.mount();
    std::fs::remove_file(&planted).unwrap();
    for (seq, _) in &bundled[1..] {
        std::fs::rename(aside(*seq), record(*seq)).unwrap();
    }
    std::fs::write(&bundle, &good_bundle).unwrap();
    let l = log(&h);
    assert!(
        l.contains(&format!(
            "the forget record of snapshot {} in the bundle on the remote does not verify",
            bundled[0].0
        )),
        "{l}"
    );
    assert!(
        l.contains("lazily") && !l.contains("restoring whole"),
        "{l}"
    );
    assert!(
        l.contains(&format!(
            "hold snapshots up to {}, which the remote does not list",
            covered + SEGMENT_LEN
        )),
        "{l}"
    );
    assert_eq!(h.head(), head);
    assert_eq!(std::fs::read_to_string(h.path("n")).unwrap(), "1099");
    assert_eq!(std::fs::read(h.path("big")).unwrap(), big);
    h.unmount();
    // A bundle that does not decode is read around: every record from its
    // file.
    let mut bad = good_bundle.clone();
    bad[0] ^= 1;
    std::fs::write(&bundle, &bad).unwrap();
    let k = another_machine(&m, &url, "fourth");
    k.mount();
    std::fs::write(&bundle, &good_bundle).unwrap();
    let l = log(&k);
    assert!(
        l.contains("fetching every forget record from its file")
            && l.contains("lazily")
            && !l.contains("restoring whole"),
        "{l}"
    );
    assert_eq!(k.head(), head);
    k.unmount();
    // A prune from that machine (which has not seen anything pruned
    // there) finds nothing left of the pruned snapshots, and so deletes
    // no segment.
    let all = || -> Vec<Vec<u8>> {
        segment_files(&remote)
            .iter()
            .chain(&tail_file(&remote))
            .map(|f| std::fs::read(f).unwrap())
            .collect()
    };
    let before = all();
    assert_eq!(before.len(), n + 1);
    let o = h.sovseal(&["prune", "--agent", "lz", "--remote", &url]);
    assert!(o.status.success(), "{}", support::mount::text(&o.stderr));
    let after = all();
    assert_eq!(
        after, before,
        "a prune with nothing to delete deleted segments"
    );
}

/// A writer bundles the snapshots it uploads into chain segments from the
/// part indexes it wrote, without reading them back: with the part index
/// of one snapshot on the remote made unreadable after its upload (a FIFO
/// nobody writes to: a read of it waits for ever), the segment of its
/// range and the tail segment are still written, and hold that index as
/// uploaded and every other as the remote holds it.
#[test]
fn a_writer_writes_chain_segments_from_the_part_indexes_it_uploaded() {
    use sovseal::repo::segment::{SEGMENT_LEN, TAIL_STEP, decode, decode_tail};
    let (_dir, remote, url) = dir_remote();
    let m = Mounted::new("lz", &["--remote", &url, "--no-batch-uploads"]);
    m.py("for i in range(10):\n    open('n', 'w').write(str(i))");
    m.wait_replicated();
    let file = |seq: u64, suffix: &str| {
        let prefix = format!("{seq:020}");
        files_under(&remote).into_iter().find(|f| {
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(suffix)
        })
    };
    let idx = file(5, ".idx").unwrap();
    let uploaded = std::fs::read(&idx).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let mkfifo = std::process::Command::new("mkfifo").arg(&idx).status();
    assert!(mkfifo.unwrap().success());
    m.py("for i in range(10, 350):\n    open('n', 'w').write(str(i))");
    let head = m.wait_replicated();
    assert!(head >= SEGMENT_LEN + TAIL_STEP, "{head}");
    let segs = wait_segments(&m, &remote, 1);
    let tail = decode_tail(&std::fs::read(tail_file(&remote).unwrap()).unwrap()).unwrap();
    // Unreadable still: nothing was written over it.
    assert!(
        std::fs::metadata(&idx).unwrap().file_type().is_fifo(),
        "the part index was written again"
    );
    std::fs::remove_file(&idx).unwrap();
    std::fs::write(&idx, &uploaded).unwrap();
    m.unmount();
    assert_eq!(tail.0, SEGMENT_LEN + 1);
    assert!(tail.1.len() as u64 >= TAIL_STEP, "{}", tail.1.len());
    let members = decode(1, &std::fs::read(&segs[0]).unwrap())
        .unwrap()
        .into_iter()
        .chain(tail.1);
    for (seq, mem) in (1..).zip(members) {
        let envelope = std::fs::read(file(seq, ".json").unwrap()).unwrap();
        assert_eq!(mem.envelope, envelope, "envelope {seq}");
        let index = std::fs::read(file(seq, ".idx").unwrap()).unwrap();
        assert_eq!(mem.index, Some(index), "part index {seq}");
    }
}
