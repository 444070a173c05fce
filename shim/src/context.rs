//! What every command needs to know about where berth keeps its state.

use std::path::PathBuf;

/// The default berth root, like Docker's `/var/lib/docker`.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Global settings shared by every command.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where images, layers and containers live (`--root`, `BERTH_ROOT`).
    pub root: PathBuf,
    /// Whether `--debug` was given.
    pub debug: bool,
}

impl Context {
    /// Folder holding one sub-folder per container.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
}
