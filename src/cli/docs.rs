//! `sovseal completions` and `sovseal man`: shell completion scripts and
//! man pages generated from the clap definitions of both binaries, so
//! they never drift from what the binaries accept.

use super::args::{Cli, CompletionsArgs, ManArgs, Shell};
use crate::{Error, Result};
use clap::CommandFactory;
use std::io::Write;

/// The clap command of `sovseal`, or of `sovseal-mount`.
fn command(mount: bool) -> clap::Command {
    if mount {
        crate::mount::Args::command()
    } else {
        Cli::command()
    }
}

/// `sovseal completions SHELL [--mount]`.
pub(super) fn completions(args: CompletionsArgs, out: &mut dyn Write) -> Result<()> {
    let mut cmd = command(args.mount);
    let name = cmd.get_name().to_string();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf).map_err(|e| Error::io("stdout", e))
}

/// `sovseal man --out DIR`: one page per binary and per subcommand of
/// `sovseal` (`sovseal-log.1`, …). Prints the files written.
pub(super) fn man(args: ManArgs, out: &mut dyn Write) -> Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let mut pages = Vec::new();
    let sovseal = command(false);
    for sub in sovseal.get_subcommands() {
        // clap names are `&'static str` without its `string` feature; this
        // command runs once and exits.
        let name: &'static str = Box::leak(format!("sovseal-{}", sub.get_name()).into_boxed_str());
        pages.push((name.to_string(), sub.clone().name(name)));
    }
    pages.push(("sovseal".into(), sovseal));
    pages.push(("sovseal-mount".into(), command(true)));
    for (name, cmd) in pages {
        let path = args.out.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .map_err(|e| Error::io(&path, e))?;
        std::fs::write(&path, buf).map_err(|e| Error::io(&path, e))?;
        writeln!(out, "{}", path.display()).map_err(|e| Error::io("stdout", e))?;
    }
    Ok(())
}
