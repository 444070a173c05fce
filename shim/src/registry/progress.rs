//! What pull and push print: bars on a terminal, plain lines otherwise.

use std::io::{self, IsTerminal};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress reporting: bars on a terminal, plain lines otherwise, nothing when quiet.
pub(super) struct Progress {
    quiet: bool,
    bars: bool,
    on_stderr: bool,
}

impl Progress {
    pub(super) fn new(quiet: bool, on_stderr: bool) -> Progress {
        Progress {
            quiet,
            bars: !quiet && io::stderr().is_terminal(),
            on_stderr,
        }
    }

    pub(super) fn line(&self, msg: &str) {
        match (self.quiet, self.on_stderr) {
            (true, _) => {}
            (false, true) => eprintln!("{msg}"),
            (false, false) => println!("{msg}"),
        }
    }

    pub(super) fn bar(&self, prefix: &str, total: u64, msg: &'static str) -> Option<ProgressBar> {
        if !self.bars {
            return None;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix}: {msg:12} [{bar:40}] {bytes}/{total_bytes}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_string());
        bar.set_message(msg);
        Some(bar)
    }

    pub(super) fn done(&self, bar: Option<ProgressBar>, prefix: &str, msg: &str) {
        match bar {
            Some(bar) => bar.finish_with_message(msg.to_string()),
            None => self.line(&format!("{prefix}: {msg}")),
        }
    }
}
