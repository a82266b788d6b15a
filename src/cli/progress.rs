//! A progress counter for long commands, shown only on a terminal.

/// A one-line progress counter on stderr, only when stderr is a terminal
/// (scripts and logs see nothing); the line is ended when dropped.
pub(super) struct Progress {
    label: &'static str,
    tty: bool,
    shown: bool,
}

impl Progress {
    pub(super) fn new(label: &'static str) -> Self {
        Progress {
            label,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            shown: false,
        }
    }

    pub(super) fn tick(&mut self, i: u64, n: u64) {
        if self.tty && (i.is_multiple_of(100) || i == n) {
            eprint!("\r{} {i}/{n}", self.label);
            self.shown = true;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}
