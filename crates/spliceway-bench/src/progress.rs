//! Progress on stderr: an indicatif bar while data moves (only when stderr is a terminal and
//! without --quiet) and one line per finished run (without --quiet).

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bench's progress reporting; cheap to clone, safe to share between threads.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    quiet: bool,
}

impl Progress {
    /// A bar over `total_bytes` (all runs of all paths).
    pub(crate) fn new(total_bytes: u64, quiet: bool) -> Progress {
        Progress::with_template(
            total_bytes,
            quiet,
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
    }

    /// A bar over `total` requests (round trips or connections) of all runs of all paths.
    pub(crate) fn requests(total: u64, quiet: bool) -> Progress {
        Progress::with_template(
            total,
            quiet,
            "{msg:24} [{bar:30}] {human_pos}/{human_len} requests {per_sec} eta {eta}",
        )
    }

    fn with_template(total: u64, quiet: bool, template: &str) -> Progress {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        };
        Progress { bar, quiet }
    }

    /// Bytes handed to the kernel, or requests answered.
    pub(crate) fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// What is being measured now.
    pub(crate) fn set_stage(&self, stage: String) {
        self.bar.set_message(stage);
    }

    /// A line on stderr (above the bar when it is shown); nothing with --quiet.
    pub(crate) fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
