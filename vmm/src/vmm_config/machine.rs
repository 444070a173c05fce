use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::memory::MIN_MEM_MIB;

/// The most vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 32;

/// vCPU count and memory size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u8,
    /// Guest RAM in MiB.
    pub mem_size_mib: usize,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
        }
    }
}

impl MachineConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpu_count));
        }
        if self.mem_size_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall(self.mem_size_mib));
        }
        // 1 TiB is far more than a container VM needs and keeps the arithmetic trivially safe.
        if self.mem_size_mib > (1 << 20) {
            return Err(ConfigError::MemoryTooLarge(self.mem_size_mib));
        }
        Ok(())
    }
}
