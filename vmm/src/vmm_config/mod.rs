//! Typed VM configuration, loadable from JSON or built from CLI flags, and validated before any
//! VM object exists.

mod boot_source;
mod drive;
mod machine;
mod net;
mod serial;
mod vsock;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use boot_source::{BootSourceConfig, DEFAULT_KERNEL_CMDLINE};
pub use drive::DriveConfig;
pub use machine::{MachineConfig, MAX_VCPUS};
pub use net::{parse_mac, NetConfig};
pub use serial::SerialConfig;
pub use vsock::{VsockConfig, MIN_GUEST_CID};

/// Errors found while loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("could not read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid JSON for [`VmConfig`].
    #[error("configuration file {path} is not a valid VM configuration")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The vCPU count is zero or above [`MAX_VCPUS`].
    #[error("vcpu_count {0} is out of range 1..={MAX_VCPUS}")]
    VcpuCount(u8),
    /// The memory size is below the minimum.
    #[error("mem_size_mib {0} is below the minimum of {min} MiB", min = crate::memory::MIN_MEM_MIB)]
    MemoryTooSmall(usize),
    /// The memory size does not fit the guest address space.
    #[error("mem_size_mib {0} is too large")]
    MemoryTooLarge(usize),
    /// A file named by the configuration is missing or unreadable.
    #[error("{what} {path} cannot be opened")]
    MissingFile {
        /// What the file is for (kernel image, initramfs, drive).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Two drives share an id.
    #[error("drive id {0} is used twice")]
    DuplicateDrive(String),
    /// A tap name is empty or too long.
    #[error("tap name {0:?} must be 1 to 15 bytes")]
    TapName(String),
    /// A MAC address does not parse.
    #[error("MAC address {0:?} is not of the form aa:bb:cc:dd:ee:ff")]
    Mac(String),
    /// Two network interfaces share an id.
    #[error("network interface id {0} is used twice")]
    DuplicateIface(String),
    /// The vsock guest CID is reserved or too large.
    #[error("vsock guest_cid {0} is out of range {MIN_GUEST_CID}..{max}", max = u32::MAX)]
    VsockCid(u64),
    /// The vsock Unix socket path cannot be listened on.
    #[error("vsock uds_path cannot be used")]
    VsockPath(#[source] crate::devices::virtio::vsock::muxer::MuxerError),
    /// The kernel command line is not acceptable.
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
}

/// Everything needed to build one VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// vCPUs and memory.
    #[serde(rename = "machine-config", default)]
    pub machine: MachineConfig,
    /// Kernel, initramfs and command line; `None` for harness VMs whose code the caller loads.
    #[serde(rename = "boot-source", default)]
    pub boot_source: Option<BootSourceConfig>,
    /// Block devices, in the order they appear on the MMIO bus.
    #[serde(default)]
    pub drives: Vec<DriveConfig>,
    /// Where the guest's COM1 output goes.
    #[serde(default)]
    pub serial: SerialConfig,
    /// Network interfaces, on the MMIO bus after the drives.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// A debug-exit I/O port: a guest write there ends the VM ([`crate::VmmExit::ExitPort`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_on_port: Option<u16>,
}

impl VmConfig {
    /// Parses a JSON configuration file (does not validate it).
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks everything that can be checked before building: ranges, files, unique ids.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.machine.validate()?;
        if let Some(boot) = &self.boot_source {
            boot.validate()?;
        }
        let mut ids = HashSet::new();
        for drive in &self.drives {
            if !ids.insert(drive.drive_id.as_str()) {
                return Err(ConfigError::DuplicateDrive(drive.drive_id.clone()));
            }
            drive.validate()?;
        }
        let mut ifaces = HashSet::new();
        for net in &self.net {
            if !ifaces.insert(net.iface_id.as_str()) {
                return Err(ConfigError::DuplicateIface(net.iface_id.clone()));
            }
            net.validate()?;
        }
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        Ok(())
    }
}

fn check_readable(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConfigError::MissingFile {
            what,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_json_config() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        let disk = dir.path().join("rootfs.ext4");
        std::fs::write(&kernel, b"x").unwrap();
        std::fs::write(&disk, vec![0; 4096]).unwrap();
        let json = serde_json::json!({
            "machine-config": { "vcpu_count": 2, "mem_size_mib": 256 },
            "boot-source": { "kernel_image_path": kernel, "boot_args": "console=ttyS0" },
            "drives": [ { "drive_id": "rootfs", "path_on_host": disk, "is_read_only": true } ],
            "serial": { "file": dir.path().join("serial.log") }
        });
        let path = dir.path().join("vm.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let cfg = VmConfig::from_json_file(&path).unwrap();
        assert_eq!(cfg.machine.vcpu_count, 2);
        assert_eq!(cfg.machine.mem_size_mib, 256);
        assert!(cfg.drives[0].is_read_only);
        assert_eq!(
            cfg.serial,
            SerialConfig::File(dir.path().join("serial.log"))
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let cfg: VmConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg.machine, MachineConfig::default());
        assert_eq!(cfg.serial, SerialConfig::Stdout);
        assert!(serde_json::from_str::<VmConfig>(r#"{"bogus": 1}"#).is_err());
        let off: VmConfig = serde_json::from_str(r#"{"serial": "off"}"#).unwrap();
        assert_eq!(off.serial, SerialConfig::Off);
    }

    #[test]
    fn bad_configs_are_refused_with_a_clear_error() {
        let mut cfg = VmConfig::default();
        cfg.machine.mem_size_mib = 4;
        let err = cfg.validate().unwrap_err();
        assert!(matches!(err, ConfigError::MemoryTooSmall(4)), "{err}");

        let mut cfg = VmConfig::default();
        cfg.machine.vcpu_count = 0;
        assert!(matches!(cfg.validate(), Err(ConfigError::VcpuCount(0))));

        let cfg = VmConfig {
            boot_source: Some(BootSourceConfig {
                kernel_image_path: "/nonexistent/vmlinux".into(),
                initrd_path: None,
                boot_args: None,
            }),
            ..Default::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::MissingFile {
                    what: "kernel image",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "kernel image /nonexistent/vmlinux cannot be opened"
        );

        let mut cfg = VmConfig::default();
        cfg.drives.push(DriveConfig {
            drive_id: "ro".into(),
            path_on_host: "/nonexistent/disk".into(),
            is_read_only: true,
        });
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::MissingFile { what: "drive", .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d");
        std::fs::write(&disk, b"").unwrap();
        let mut cfg = VmConfig::default();
        for _ in 0..2 {
            cfg.drives.push(DriveConfig {
                drive_id: "same".into(),
                path_on_host: disk.clone(),
                is_read_only: false,
            });
        }
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::DuplicateDrive(_))
        ));
    }
}
