//! systemd's service notification protocol (`sd_notify(3)`): one datagram
//! of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`.
//!
//! `sovseal-mount --foreground` under `Type=notify` sends `READY=1` once
//! the mount answers, `STATUS=` lines as it goes and `STOPPING=1` when it
//! starts to commit and unmount. Without `$NOTIFY_SOCKET` every call is a
//! no-op, so the same code runs under a terminal, a test or systemd.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to the service manager's notification socket.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier named by `$NOTIFY_SOCKET`, `Ok(None)` when unset.
    /// A path starts with `/`; an abstract socket with `@`.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os(NOTIFY_SOCKET) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Self::connect(&v.to_string_lossy()).map(Some),
        }
    }

    /// A notifier for the socket address `name` (`/path` or `@abstract`).
    pub fn connect(name: &str) -> io::Result<Self> {
        let addr = if let Some(abs) = name.strip_prefix('@') {
            SocketAddr::from_abstract_name(abs.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{NOTIFY_SOCKET}={name:?} is neither a path nor an abstract socket"),
            ));
        };
        Ok(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one state message, e.g. `"READY=1\nSTATUS=mounted"`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::other("short write to the notification socket"));
        }
        Ok(())
    }
}

/// Sends `state` if a service manager listens; failures are reported on
/// stderr (the journal), never fatal: the mount works without systemd.
pub fn notify(n: Option<&Notifier>, state: &str) {
    if let Some(n) = n
        && let Err(e) = n.send(state)
    {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap())
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("sovseal-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::connect(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn refuses_an_address_it_cannot_use() {
        assert!(Notifier::connect("vsock:2:1234").is_err());
    }
}
