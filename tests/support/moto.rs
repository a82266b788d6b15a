//! A real S3-compatible server on loopback for the tests: moto, installed
//! by the test command (`SOVSEAL_TEST_MOTO`), else `moto_server` on PATH.
//! The test fails, never skips, when neither exists.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    pub child: Child,
    pub port: u16,
    pub bucket: String,
}

impl Moto {
    pub fn start() -> Self {
        let bin = std::env::var("SOVSEAL_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the S3 test server {bin:?} ({e}); scripts/test installs it")
            });
        // Ready when it answers an S3 request, not when it accepts a
        // connection: on a loaded machine the first requests to a server
        // that is still starting can fail (CI once saw the bucket creation
        // fail right after the port opened).
        let bucket = format!("b{}", port);
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the S3 test server exited at start ({status})");
            }
            // Created, or created by an earlier try whose answer was lost.
            let curl = |args: &[&str]| {
                Command::new("curl")
                    .args(["-sf", "-o", "/dev/null"])
                    .args(args)
                    .arg(format!("http://127.0.0.1:{port}/{bucket}"))
                    .status()
                    .unwrap()
                    .success()
            };
            if curl(&["-X", "PUT"]) || curl(&["-I"]) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "could not create the test bucket within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            port,
            bucket,
        }
    }

    /// Sets the standard AWS variables for this server in `cmd`.
    pub fn env(&self, cmd: &mut Command) {
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
    }

    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            // Never look for instance credentials off this machine.
            ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9".into()),
        ]
    }

    /// The same settings as object_store options, for in-process remotes.
    pub fn options(&self) -> Vec<(String, String)> {
        self.vars()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    }

    /// [`Moto::vars`] as owned pairs, as `Mounted::with_env` takes them.
    pub fn owned_vars(&self) -> Vec<(String, String)> {
        self.vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    pub fn pause(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGSTOP,
        )
        .unwrap();
    }

    pub fn resume(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGCONT,
        )
        .unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
