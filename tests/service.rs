//! The service integration as shipped: the systemd units pass
//! `systemd-analyze verify`; the template unit's command lines, run as
//! systemd runs them, notify readiness only once the mount answers and
//! commit on stop; the mount(8) helper mounts from `mount -t`, from an
//! fstab line, and `umount` unmounts; bad input fails clearly.

mod support;
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};
use support::mount::{MOUNT, SOVSEAL, text};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bin_dir() -> PathBuf {
    Path::new(MOUNT).parent().unwrap().to_owned()
}

/// A unit file with the install prefix of the binaries on its `ExecStart=`
/// line pointed at this build; nothing else changes.
fn unit_for_this_build(rel: &str) -> String {
    let orig = std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap();
    let bins = format!("{}/", bin_dir().display());
    orig.lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                l.replace("/usr/local/bin/", &bins)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn analyze(args: &[&str], unit: &Path, xdg: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg("verify")
        .arg(unit)
        .env("XDG_RUNTIME_DIR", xdg)
        .output()
        .expect("systemd-analyze (package systemd) must be installed")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&xdg).unwrap().permissions(),
        0o700,
    );
    let cases: [(&str, &str, &str, &[&str]); 3] = [
        (
            "systemd/sovseal@.service",
            "sovseal@.service",
            "sovseal@demo.service",
            &[],
        ),
        (
            "systemd/mnt-sovseal-agent.mount",
            "mnt-sovseal-agent.mount",
            "mnt-sovseal-agent.mount",
            &[],
        ),
        (
            "systemd/user/sovseal-agent-state.service",
            "sovseal-agent-state.service",
            "sovseal-agent-state.service",
            &["--user"],
        ),
    ];
    for (src, file, instance, args) in cases {
        let text_ = unit_for_this_build(src);
        std::fs::write(dir.path().join(file), &text_).unwrap();
        let o = analyze(args, &dir.path().join(instance), &xdg);
        assert!(
            o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(),
            "systemd-analyze verify {src}:\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // The check itself catches a mistake: a misspelt key is reported.
        let broken = text_.replace("Restart=on-failure", "Restart=on-failure\nRestrat=always");
        if broken != text_ {
            std::fs::write(dir.path().join(file), &broken).unwrap();
            let o = analyze(args, &dir.path().join(instance), &xdg);
            assert!(
                text(&o.stderr).contains("Restrat"),
                "a misspelt key went unreported in {src}"
            );
        }
    }
}

/// The [Service] settings of the template unit, with `%i` = `agent`, the
/// state directory and mount root moved under `root` (the only changes).
struct ServiceLines {
    env: Vec<(String, String)>,
    pre: Vec<Vec<String>>,
    start: Vec<String>,
    stop: Vec<String>,
    stop_may_fail: bool,
    prevent_restart: Vec<i32>,
}

fn service_lines(agent: &str, root: &Path) -> ServiceLines {
    let unit = unit_for_this_build("systemd/sovseal@.service");
    let sub = |s: &str| {
        s.replace("%i", agent)
            .replace(
                "/var/lib/sovseal",
                &root.join("state").display().to_string(),
            )
            .replace("/mnt/sovseal/", &format!("{}/", root.join("mnt").display()))
    };
    let words = |s: &str| -> Vec<String> { sub(s).split_whitespace().map(String::from).collect() };
    let mut l = ServiceLines {
        env: Vec::new(),
        pre: Vec::new(),
        start: Vec::new(),
        stop: Vec::new(),
        stop_may_fail: false,
        prevent_restart: Vec::new(),
    };
    let mut in_service = false;
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Environment" => {
                let (ek, ev) = v.split_once('=').unwrap();
                l.env.push((ek.to_owned(), sub(ev)));
            }
            "ExecStartPre" => l.pre.push(words(v)),
            "ExecStart" => l.start = words(v),
            "ExecStop" => {
                l.stop_may_fail = v.starts_with('-');
                l.stop = words(v.trim_start_matches('-'));
            }
            "RestartPreventExitStatus" => {
                l.prevent_restart = v.split_whitespace().map(|c| c.parse().unwrap()).collect()
            }
            _ => {}
        }
    }
    assert!(!l.start.is_empty(), "no ExecStart in the unit");
    l
}

fn run(argv: &[String], env: &[(String, String)]) -> Output {
    Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

/// What systemd's notification socket received, in order.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    got: Vec<HashMap<String, String>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            got: Vec::new(),
        }
    }

    /// Waits for a message with `key`; returns it. Fails after 60 s.
    fn wait_for(&mut self, key: &str, child: &mut Child) -> HashMap<String, String> {
        let t0 = Instant::now();
        loop {
            if let Some(m) = self.got.iter().find(|m| m.contains_key(key)) {
                return m.clone();
            }
            let mut buf = [0u8; 4096];
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let m = text(&buf[..n])
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    self.got.push(m);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("notify socket: {e}"),
            }
            // Nothing queued: only now is an exited service a failure.
            if let Some(st) = child.try_wait().unwrap() {
                panic!("the service exited ({st}) without sending {key}");
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no {key} in 60 s");
        }
    }
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "service did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cat(l: &ServiceLines, agent: &str, path: &str) -> Output {
    Command::new(SOVSEAL)
        .args(["cat", "--agent", agent, path])
        .envs(l.env.iter().cloned())
        .output()
        .unwrap()
}

/// Creates what the unit expects to exist (StateDirectory=, 0700) and the
/// master key, as the unit's header tells the operator to.
fn prepare_state(l: &ServiceLines) {
    let home = &l.env.iter().find(|(k, _)| k == "SOVSEAL_HOME").unwrap().1;
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let o = Command::new(SOVSEAL)
        .arg("init")
        .envs(l.env.iter().cloned())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn start_service(l: &ServiceLines, notify: &NotifySocket) -> Child {
    for argv in &l.pre {
        let o = run(argv, &l.env);
        assert!(
            o.status.success(),
            "ExecStartPre {argv:?}: {}",
            text(&o.stderr)
        );
    }
    Command::new(&l.start[0])
        .args(&l.start[1..])
        .envs(l.env.iter().cloned())
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn template_unit_notifies_ready_once_mounted_and_commits_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let agent = "svc-agent";
    let l = service_lines(agent, dir.path());
    let mnt = dir.path().join("mnt").join(agent);
    prepare_state(&l);
    let mut notify = NotifySocket::bind(dir.path());

    // Start 1: stopped by ExecStop (unmount).
    let mut child = start_service(&l, &notify);
    let ready = notify.wait_for("READY", &mut child);
    // READY comes after the mount answers, never before.
    assert!(mounted(&mnt), "READY=1 before the mount was listed");
    assert_eq!(ready["READY"], "1");
    assert_eq!(ready["MAINPID"], child.id().to_string());
    assert!(ready["STATUS"].contains(agent), "{ready:?}");
    std::fs::write(mnt.join("state.json"), b"{\"step\": 1}").unwrap();
    let o = run(&l.stop, &l.env);
    assert!(o.status.success(), "ExecStop: {}", text(&o.stderr));
    assert!(wait_exit(&mut child).success());
    assert_eq!(notify.wait_for("STOPPING", &mut child)["STOPPING"], "1");
    let o = cat(&l, agent, "/state.json");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"{\"step\": 1}");

    // Start 2: a file is still open, so ExecStop fails (EBUSY) and the unit
    // allows it ('-'); systemd then sends SIGTERM: commit, then unmount.
    let mut notify = {
        std::fs::remove_file(&notify.path).unwrap();
        NotifySocket::bind(dir.path())
    };
    let mut child = start_service(&l, &notify);
    notify.wait_for("READY", &mut child);
    let mut held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(mnt.join("busy.log"))
        .unwrap();
    std::io::Write::write_all(&mut held, b"line 1\n").unwrap();
    held.sync_all().unwrap();
    let o = run(&l.stop, &l.env);
    assert!(!o.status.success(), "unmount with an open file should fail");
    assert!(l.stop_may_fail, "ExecStop must be allowed to fail ('-')");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let stopping = notify.wait_for("STOPPING", &mut child);
    assert_eq!(stopping["STOPPING"], "1");
    // Detached: gone from the mount table, while the open file still works
    // and its last write is committed on close; then the daemon exits.
    let t0 = Instant::now();
    while mounted(&mnt) {
        assert!(t0.elapsed() < Duration::from_secs(30), "not detached");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a file open"
    );
    std::io::Write::write_all(&mut held, b"line 2\n").unwrap();
    drop(held);
    let st = wait_exit(&mut child);
    assert!(st.success(), "SIGTERM stop exited {st}");
    let o = cat(&l, agent, "/busy.log");
    assert_eq!(o.stdout, b"line 1\nline 2\n", "{}", text(&o.stderr));
    let o = cat(&l, agent, "/state.json");
    assert_eq!(o.stdout, b"{\"step\": 1}");
}

#[test]
fn template_unit_with_a_bad_agent_name_fails_clearly_and_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // A valid systemd instance name that is not a valid agent name.
    let agent = "-leading-dash";
    let l = service_lines(agent, dir.path());
    prepare_state(&l);
    let notify = NotifySocket::bind(dir.path());
    let mut child = start_service(&l, &notify);
    let st = wait_exit(&mut child);
    let code = st.code().unwrap();
    assert_eq!(code, 2, "exit status {st}");
    assert!(
        l.prevent_restart.contains(&code),
        "Restart=on-failure would loop on a bad name"
    );
    let o = Command::new(&l.start[0])
        .args(&l.start[1..])
        .envs(l.env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        text(&o.stderr).contains("agent name \"-leading-dash\" is not allowed"),
        "{}",
        text(&o.stderr)
    );
    let mut buf = [0u8; 256];
    assert!(
        notify.sock.recv(&mut buf).is_err(),
        "a failed start must not send READY"
    );
    let home = &l.env.iter().find(|(k, _)| k == "SOVSEAL_HOME").unwrap().1;
    assert!(!Path::new(home).join("agents").join(agent).exists());
}

/// Installs the helper where mount(8) looks for it for the test's lifetime,
/// restoring whatever was there.
struct InstalledHelper {
    path: PathBuf,
    saved: Option<Vec<u8>>,
}

impl InstalledHelper {
    fn install() -> Self {
        let path = PathBuf::from("/usr/sbin/mount.fuse.sovseal");
        let saved = std::fs::read(&path).ok();
        std::fs::copy(
            Path::new(ROOT).join("mount-helpers/mount.fuse.sovseal"),
            &path,
        )
        .expect("install the helper (tests run as root)");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        InstalledHelper { path, saved }
    }
}

impl Drop for InstalledHelper {
    fn drop(&mut self) {
        match &self.saved {
            Some(b) => drop(std::fs::write(&self.path, b)),
            None => drop(std::fs::remove_file(&self.path)),
        }
    }
}

fn mount8(args: &[&str]) -> Output {
    Command::new("mount")
        .args(args)
        // mount(8) clears PATH for its helpers; this variable survives.
        .env("SOVSEAL_MOUNT", MOUNT)
        .output()
        .unwrap()
}

fn umount8(p: &Path) {
    let o = Command::new("umount").arg(p).output().unwrap();
    assert!(o.status.success(), "umount: {}", text(&o.stderr));
    let t0 = Instant::now();
    while mounted(p) {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the daemon of `agent` under `home` released its lock (the
/// final commit is done).
fn wait_unlocked(home: &Path, agent: &str) {
    let t0 = Instant::now();
    loop {
        let o = Command::new(SOVSEAL)
            .args(["status", "--agent", agent])
            .env("SOVSEAL_HOME", home)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .output()
            .unwrap();
        let lock = std::fs::read_to_string(home.join("agents").join(agent).join("lock"))
            .ok()
            .and_then(|p| p.split_whitespace().next()?.parse::<i32>().ok());
        let alive = lock.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if o.status.success() && !alive {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "daemon still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mount8_helper_mounts_from_the_command_line_and_fstab() {
    let _helper = InstalledHelper::install();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let o = Command::new(SOVSEAL)
        .arg("init")
        .env("SOVSEAL_HOME", &home)
        .env("SOVSEAL_KEY_FALLBACK", "file")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = format!(
        "home={},key_fallback=file,noatime,nodev,_netdev,x-systemd.automount,quiet_ms=50",
        home.display()
    );
    let cat = |agent: &str, p: &str| {
        Command::new(SOVSEAL)
            .args(["cat", "--agent", agent, p])
            .env("SOVSEAL_HOME", &home)
            .env("SOVSEAL_KEY_FALLBACK", "file")
            .output()
            .unwrap()
    };

    // mount -t fuse.sovseal AGENT DIR -o ...
    let o = mount8(&[
        "-t",
        "fuse.sovseal",
        "cli-agent",
        mnt.to_str().unwrap(),
        "-o",
        &opts,
    ]);
    assert!(
        o.status.success(),
        "mount: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(mounted(&mnt));
    let line = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == mnt.to_str())
        .unwrap()
        .to_owned();
    assert!(
        line.contains(" cli-agent "),
        "source shown as in fstab: {line}"
    );
    assert!(line.contains("noatime") && line.contains("nodev"), "{line}");
    std::fs::write(mnt.join("a.txt"), b"via mount(8)").unwrap();
    umount8(&mnt);
    wait_unlocked(&home, "cli-agent");
    assert_eq!(cat("cli-agent", "/a.txt").stdout, b"via mount(8)");

    // An fstab line; `mount DIR` finds it; `mount -a` leaves it alone once
    // mounted.
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\nfstab-agent  {}  fuse.sovseal  {opts},noauto,nofail  0 0\n",
            mnt.display()
        ),
    )
    .unwrap();
    let o = mount8(&["-T", fstab.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert!(o.status.success(), "mount (fstab): {}", text(&o.stderr));
    std::fs::write(mnt.join("b.txt"), b"via fstab").unwrap();
    let mut fstab_auto = std::fs::read_to_string(&fstab).unwrap();
    fstab_auto = fstab_auto.replace(",noauto", "");
    std::fs::write(&fstab, fstab_auto).unwrap();
    let o = mount8(&["-a", "-T", fstab.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "mount -a over a mounted entry: {}",
        text(&o.stderr)
    );
    umount8(&mnt);
    wait_unlocked(&home, "fstab-agent");
    assert_eq!(cat("fstab-agent", "/b.txt").stdout, b"via fstab");

    // Bad input: clear messages, mount(8) exit codes, nothing mounted.
    let mp = mnt.to_str().unwrap();
    let bogus = format!("{opts},bogus_option");
    let bad = [
        (
            vec!["-t", "fuse.sovseal", "bad/name", mp, "-o", &opts],
            1,
            "is not allowed",
        ),
        (
            vec!["-t", "fuse.sovseal", "x", mp, "-o", &bogus],
            1,
            "unknown mount option \"bogus_option\"",
        ),
    ];
    for (args, code, msg) in bad {
        let o = mount8(&args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(msg),
            "{args:?}: {}",
            text(&o.stderr)
        );
        assert!(!mounted(&mnt));
    }
    // No master key in this home: custody fails closed; mount failure (32).
    let empty = dir.path().join("empty-home");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let o = mount8(&[
        "-t",
        "fuse.sovseal",
        "x",
        mp,
        "-o",
        &format!("home={},key_fallback=file", empty.display()),
    ]);
    assert_eq!(o.status.code(), Some(32), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("sovseal init"),
        "{}",
        text(&o.stderr)
    );
    // -f (fake) mounts nothing.
    let o = mount8(&["-f", "-t", "fuse.sovseal", "x", mp, "-o", &opts]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!mounted(&mnt));
}
