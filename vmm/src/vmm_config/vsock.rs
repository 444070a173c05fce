use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::devices::virtio::vsock::muxer::check_uds_path;

/// Lowest CID a guest may have (0-2 are reserved: hypervisor, local, host).
pub const MIN_GUEST_CID: u64 = 3;

/// A virtio-vsock device with Firecracker's hybrid host side: host clients connect to `uds_path`
/// and write `CONNECT <port>\n`; guest connections to host port P go to `<uds_path>_P`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id (3 or more, below 2^32 - 1).
    pub guest_cid: u64,
    /// The Unix socket the VMM listens on.
    pub uds_path: PathBuf,
}

impl VsockConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_GUEST_CID..u64::from(u32::MAX)).contains(&self.guest_cid) {
            return Err(ConfigError::VsockCid(self.guest_cid));
        }
        check_uds_path(&self.uds_path).map_err(ConfigError::VsockPath)
    }
}
