use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check_readable, ConfigError};

/// One virtio-blk drive backed by a host file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    /// Unique id; also the serial number the guest reads with GET_ID (first 20 bytes).
    pub drive_id: String,
    /// Backing file on the host.
    pub path_on_host: PathBuf,
    /// Refuse guest writes.
    #[serde(default)]
    pub is_read_only: bool,
}

impl DriveConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_readable("drive", &self.path_on_host)
    }
}
