//! What a container was created with: written once at create time, never changed after.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The process to run, after the image's defaults were merged with the user's options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessConfig {
    /// Entrypoint and command, joined: what is executed.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// As the user typed it (`1000:1000`, `nobody`), resolved at start against the rootfs.
    pub user: String,
    pub tty: bool,
    pub interactive: bool,
}

/// A host folder or file bind-mounted into the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Limits and host-side options, named after Docker's `HostConfig`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HostConfig {
    pub runtime: String,
    /// Bytes; 0 means no limit.
    pub memory: i64,
    /// Billionths of a CPU; 0 means no limit.
    pub nano_cpus: i64,
    /// None means no limit.
    pub pids_limit: Option<i64>,
    pub read_only: bool,
    pub binds: Vec<BindMount>,
    pub auto_remove: bool,
    /// Bytes of the writable layer's own disk (`--storage-opt size=`, vm only); 0: none.
    #[serde(default)]
    pub storage_size: i64,
    /// `--runtime=vm`: the program that runs the VM (`builtin` or `qemu`); empty otherwise.
    #[serde(default)]
    pub hypervisor: String,
    /// `--runtime=vm`: how the VM runs guest code (`kvm` or `tcg`); empty otherwise.
    #[serde(default)]
    pub accel: String,
}

/// Everything fixed at `create`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub created: chrono::DateTime<chrono::Utc>,
    /// Image id (`sha256:…` of its config).
    pub image_id: String,
    /// The image as the user named it.
    pub image_name: String,
    pub hostname: String,
    pub process: ProcessConfig,
    pub host: HostConfig,
}

impl ContainerRecord {
    /// The first 12 hex digits, as `ps` shows.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// The cgroup path this container's processes live in.
    pub fn cgroups_path(&self) -> String {
        format!("/berth/{}", self.id)
    }
}
