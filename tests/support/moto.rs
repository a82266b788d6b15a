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
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the S3 test server {bin:?} ({e}); scripts/test installs it")
            });
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let bucket = format!("b{}", port);
        let ok = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                &format!("http://127.0.0.1:{port}/{bucket}"),
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "could not create the test bucket");
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
