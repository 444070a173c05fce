use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{check_readable, ConfigError};

/// The command line used when the configuration gives none.
pub const DEFAULT_KERNEL_CMDLINE: &str =
    "reboot=k panic=1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd console=ttyS0";

/// Kernel, initramfs and command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Uncompressed ELF kernel (vmlinux).
    pub kernel_image_path: PathBuf,
    /// Optional initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    /// Kernel command line; [`DEFAULT_KERNEL_CMDLINE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

impl BootSourceConfig {
    /// The command line to pass to the kernel.
    pub fn cmdline(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_KERNEL_CMDLINE)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_readable("kernel image", &self.kernel_image_path)?;
        if let Some(initrd) = &self.initrd_path {
            check_readable("initramfs", initrd)?;
        }
        if self.cmdline().bytes().any(|b| b == 0) {
            return Err(ConfigError::Cmdline("it contains a NUL byte".into()));
        }
        Ok(())
    }
}
