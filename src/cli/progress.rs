//! Progress bars for long commands (indicatif): drawn on stderr only when
//! it is a terminal and the command does not print JSON, so scripts, logs
//! and `--json` consumers see nothing of them.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar over the snapshots a long command walks (verify, restore,
/// prune, redact); cleared when dropped.
pub(super) struct Progress {
    bar: ProgressBar,
    /// Whether it is drawn (from its first tick, when its length is known).
    shown: bool,
}

impl Progress {
    /// A bar labelled `label`; hidden when `json` or when stderr is not a
    /// terminal.
    pub(super) fn new(label: &'static str, json: bool) -> Self {
        let shown = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label);
        Progress { bar, shown }
    }

    /// A spinner labelled `label`, for work whose length is not known
    /// ahead; hidden as [`Progress::new`].
    pub(super) fn spinner(label: &'static str, json: bool) -> Self {
        let p = Progress::new(label, json);
        p.bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}, {elapsed}").expect("a valid template"),
        );
        if p.shown {
            p.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        p.bar
            .enable_steady_tick(std::time::Duration::from_millis(120));
        p
    }

    /// Snapshot `i` of `n` is being worked on.
    pub(super) fn tick(&self, i: u64, n: u64) {
        if self.bar.length() != Some(n) {
            self.bar.set_length(n);
            if self.shown && self.bar.is_hidden() {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        self.bar.set_position(i);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
