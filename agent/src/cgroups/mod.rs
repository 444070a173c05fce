//! Container cgroups on v1 (one directory per controller) and v2 (one unified directory).
//!
//! Settings a hierarchy cannot apply fail with a clear error when the spec asks
//! for them, and what can be checked before anything is created (a controller
//! that is not mounted, a setting v2 does not have, a malformed value) is
//! checked first, so a refused spec leaves no cgroup behind.
//!
//! `linux.resources.devices` is enforced through the v1 devices controller's
//! allow/deny files, or on v2 by an eBPF device program attached to the cgroup;
//! both follow the same rules ([`device_rules`]).
//!
//! All access goes through a root directory (`/sys/fs/cgroup` for real), so the
//! file-level behaviour is unit-tested against a temporary directory.

mod block_io;
mod bpf_attach;
mod cpuset;
mod device_program;
mod device_rules;
mod hugetlb;
mod memory;
mod network;
mod v1;
mod v2;

pub use bpf_attach::BpfError;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

/// Where the cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where the kernel lists the huge page sizes it supports.
pub const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// Present when the kernel supports swap (CONFIG_SWAP), whether or not any is on.
pub const PROC_SWAPS: &str = "/proc/swaps";

/// A failure while managing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// statfs of the cgroup root failed.
    #[error("failed to detect the cgroup version at {path}")]
    Detect {
        /// The root examined.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// A filesystem operation on a cgroup file or directory failed.
    #[error("failed to {op} {path}")]
    Io {
        /// The operation, e.g. `write 100 to`.
        op: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `linux.resources.devices` entry that cannot be enforced as written.
    #[error("invalid device rule {rule}: {reason}")]
    InvalidDeviceRule {
        /// The rule as the spec has it.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A spec value that is malformed or out of range.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The spec setting, e.g. `linux.resources.memory.swappiness`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec asks for something this kernel or hierarchy cannot do.
    #[error("{setting} is not supported here: {reason}")]
    Unsupported {
        /// The spec setting, e.g. `linux.resources.blockIO.weight`.
        setting: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The v2 device program could not be loaded or attached.
    #[error("failed to apply the device rules to {path}")]
    DeviceProgram {
        /// The cgroup directory.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: BpfError,
    },
    /// A control file whose content could not be parsed.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was read.
        content: String,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

/// Which cgroup hierarchy layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Per-controller hierarchies (possibly with a v2 hierarchy beside them).
    V1,
    /// The unified hierarchy only.
    V2,
}

/// One container's cgroup, e.g. `/berth/<id>`.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: PathBuf,
    version: CgroupVersion,
    path: PathBuf,
    /// The kernel's huge page sizes (`hugepages-<N>kB` directories).
    hugepages: PathBuf,
    /// The kernel's swap areas: absent when it has no swap at all.
    swaps: PathBuf,
}

impl Cgroup {
    /// The cgroup `cgroups_path` under `/sys/fs/cgroup`, detecting v1 or v2.
    pub fn open(cgroups_path: &str) -> Result<Cgroup> {
        let root = Path::new(CGROUP_ROOT);
        let stat = nix::sys::statfs::statfs(root).map_err(|source| CgroupError::Detect {
            path: root.to_path_buf(),
            source,
        })?;
        let version = if stat.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        Ok(Cgroup::at(root, version, cgroups_path))
    }

    /// The cgroup `cgroups_path` under an explicit root and version.
    pub fn at(root: impl Into<PathBuf>, version: CgroupVersion, cgroups_path: &str) -> Cgroup {
        let path = PathBuf::from(cgroups_path.trim_start_matches('/'));
        Cgroup {
            root: root.into(),
            version,
            path,
            hugepages: PathBuf::from(HUGEPAGES_DIR),
            swaps: PathBuf::from(PROC_SWAPS),
        }
    }

    /// The hierarchy layout in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directories that make up this cgroup: one per v1 controller, or the v2 one.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self.version {
            CgroupVersion::V1 => v1::controller_roots(&self.root)
                .into_iter()
                .map(|(_, root)| root.join(&self.path))
                .collect(),
            CgroupVersion::V2 => vec![self.root.join(&self.path)],
        }
    }

    /// Create the cgroup (or find it, when updating) and apply `resources`:
    /// memory, cpu and cpuset, pids, block I/O, huge pages, network classes and
    /// device rules. Settings a hierarchy lacks are refused before any directory
    /// is made, where that can be known up front.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        if let Some(resources) = resources {
            hugetlb::validate(resources, &self.hugepages)?;
            match self.version {
                CgroupVersion::V1 => v1::validate(&self.root, resources)?,
                CgroupVersion::V2 => v2::validate(resources)?,
            }
        }
        match self.version {
            CgroupVersion::V1 => {
                for (_, controller_root) in v1::controller_roots(&self.root) {
                    v1::create_dir(&controller_root, &self.path)?;
                }
            }
            CgroupVersion::V2 => {
                let dir = self.root.join(&self.path);
                v2::enable_controllers(&self.root, &dir)?;
                std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            }
        }
        let Some(resources) = resources else {
            return Ok(());
        };
        let kernel_has_swap = self.swaps.exists();
        match self.version {
            CgroupVersion::V1 => v1::apply(&self.root, &self.path, resources, kernel_has_swap),
            CgroupVersion::V2 => v2::apply(&self.root.join(&self.path), resources, kernel_has_swap),
        }
    }

    /// Move `pid` into the cgroup (every controller directory on v1).
    pub fn add_process(&self, pid: Pid) -> Result<()> {
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// How many times the OOM killer fired in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64> {
        let file = match self.version {
            CgroupVersion::V1 => self
                .root
                .join("memory")
                .join(&self.path)
                .join("memory.oom_control"),
            CgroupVersion::V2 => self.root.join(&self.path).join("memory.events"),
        };
        let content = read_file(&file)?;
        let Some(line) = content.lines().find(|l| l.starts_with("oom_kill ")) else {
            return Ok(0);
        };
        line["oom_kill ".len()..]
            .trim()
            .parse()
            .map_err(|_| CgroupError::Parse {
                path: file.clone(),
                content: line.to_owned(),
            })
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Result<Vec<Pid>> {
        let Some(dir) = self.dirs().into_iter().next() else {
            return Ok(Vec::new());
        };
        let file = dir.join("cgroup.procs");
        let content = read_file(&file)?;
        content
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.trim()
                    .parse()
                    .map(Pid::from_raw)
                    .map_err(|_| CgroupError::Parse {
                        path: file.clone(),
                        content: l.to_owned(),
                    })
            })
            .collect()
    }

    /// Remove the cgroup directories; absent ones are fine, busy ones are retried.
    pub fn destroy(&self) -> Result<()> {
        for dir in self.dirs() {
            let mut attempt = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 20 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(10 * attempt));
                    }
                    Err(e) => return Err(io_err("remove", &dir)(e)),
                }
            }
        }
        Ok(())
    }
}

fn io_err(op: &str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let op = op.to_owned();
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// Write a control file that must already exist (as cgroupfs files do).
fn write_file(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err(&format!("write {value:?} to"), path))
}

/// One write per line (cgroup files parse each write on its own); appending keeps
/// every line when the files are plain files under a test root.
fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(io_err(&format!("write {line:?} to"), path))
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

/// The control file `name` in `dir`, which `setting` needs: an error naming both
/// when this kernel does not provide it.
fn require(dir: &Path, name: &str, setting: &'static str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(CgroupError::Unsupported {
            setting,
            reason: format!("this kernel provides no {name} in {}", dir.display()),
        })
    }
}

#[cfg(test)]
mod tests;
