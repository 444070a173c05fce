use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where COM1 output goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialConfig {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded (the device still exists so the guest driver behaves).
    Off,
}
