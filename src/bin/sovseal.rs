//! `sovseal`: the command-line tool (init, snapshots, verify, cat, ls).

fn main() {
    std::process::exit(sovseal::cli::main());
}
