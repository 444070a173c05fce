//! `linux.resources.cpu.cpus` and `.mems`: the CPUs and memory nodes a
//! container may use, through the cpuset controller.
//!
//! A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`,
//! and no task can join it until both are set. So every level of a container's
//! path takes its parent's values when it has none, whether berth just made it
//! or found it empty. A v2 cpuset inherits its parent's and needs no set-up.

use std::io::ErrorKind;
use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use super::{io_err, read_file, require, write_file, Result};

/// The spec settings, as error messages name them.
pub(super) const CPUS: &str = "linux.resources.cpu.cpus";
pub(super) const MEMS: &str = "linux.resources.cpu.mems";

/// The cpuset files and the settings that fill them, when the spec sets them
/// (an empty list asks for nothing, as in runc).
fn requested(cpu: &LinuxCpu) -> impl Iterator<Item = (&'static str, &'static str, &str)> {
    [
        ("cpuset.cpus", CPUS, cpu.cpus()),
        ("cpuset.mems", MEMS, cpu.mems()),
    ]
    .into_iter()
    .filter_map(|(file, setting, value)| {
        let value = value.as_deref()?.trim();
        (!value.is_empty()).then_some((file, setting, value))
    })
}

/// The first setting the spec asks for, if any.
pub(super) fn first_requested(cpu: &LinuxCpu) -> Option<&'static str> {
    requested(cpu).next().map(|(_, setting, _)| setting)
}

/// Make each directory of `path` under the v1 cpuset hierarchy `hierarchy`,
/// giving every level without CPUs or memory nodes its parent's.
pub(super) fn create_v1(hierarchy: &Path, path: &Path) -> Result<()> {
    let mut parent = hierarchy.to_path_buf();
    for component in path.components() {
        let dir = parent.join(component);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read_file(&dir.join(file))?.trim().is_empty() {
                let inherited = read_file(&parent.join(file))?;
                write_file(&dir.join(file), inherited.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}

/// Write the spec's CPUs and memory nodes into the cgroup directory `dir` (the
/// same files on v1 and v2; the kernel refuses ones outside the parent's).
pub(super) fn apply(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    for (file, setting, value) in requested(cpu) {
        write_file(&require(dir, file, setting)?, value)?;
    }
    Ok(())
}
