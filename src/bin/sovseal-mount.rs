//! `sovseal-mount`: mounts an agent's state as a FUSE filesystem.
//!
//! The FUSE adapter is tracked as its own issue; until it lands this binary
//! refuses to run rather than pretend to mount.

fn main() {
    eprintln!(
        "sovseal-mount: the FUSE mount is not available in this build yet; use the `sovseal` CLI (init, snapshots, verify, cat, ls)"
    );
    std::process::exit(sovseal::exit::FAILURE);
}
