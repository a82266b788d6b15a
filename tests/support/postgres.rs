//! A real PostgreSQL server for the tests, listening on a Unix socket
//! only (no TCP): the Debian `postgresql` package the test command
//! installs, a fresh cluster per server in a temporary directory, run as
//! the `postgres` user (the server refuses root). The test fails, never
//! skips, when the server cannot be found or started.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    pub dir: PathBuf,
    /// The directory of the server's socket.
    pub socket_dir: PathBuf,
}

/// The server's binaries: `SOVSEAL_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SOVSEAL_TEST_PG_BIN") {
        return d.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("postgres").exists());
    dirs.sort();
    dirs.pop()
        .expect("no PostgreSQL server in /usr/lib/postgresql (scripts/test installs the postgresql package)")
}

/// Runs `cmd` as the `postgres` user.
fn as_postgres(bin: PathBuf) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--clear-groups",
        "--",
    ])
    .arg(bin);
    c
}

impl Postgres {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "sovseal-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let socket_dir = dir.join("sock");
        std::fs::create_dir_all(&socket_dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let data = dir.join("data");
        let init = as_postgres(bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut pg = Postgres {
            child: Command::new("true").spawn().unwrap(),
            dir,
            socket_dir,
        };
        pg.run();
        pg
    }

    /// Starts the server on the cluster and waits until it accepts.
    fn run(&mut self) {
        let bin = bin_dir();
        self.child = as_postgres(bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", "listen_addresses=", "-c", "fsync=off", "-k"])
            .arg(&self.socket_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.socket_dir)
                .arg("-q")
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `postgres://` remote URL for the default database.
    pub fn url(&self) -> String {
        format!(
            "postgres:///postgres?host={}&user=postgres",
            self.socket_dir.display()
        )
    }

    /// Runs SQL with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let o = Command::new(bin_dir().join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Stops the server (fast shutdown) and starts it again on the same
    /// cluster: open connections are cut.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
