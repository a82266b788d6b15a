//! `sovseal-mount`: mounts an agent's sealed state as a FUSE filesystem.

fn main() {
    std::process::exit(sovseal::mount::main());
}
