//! Limits on the v2 unified hierarchy.

use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::{
    block_io, bpf_attach, cpuset, device_program, device_rules, hugetlb, io_err, memory, network,
    read_file, v1::pids_max, write_file, BpfError, CgroupError, CgroupVersion, Result,
};

/// Controllers delegated down to container cgroups, when available.
const CONTROLLERS: &[&str] = &["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];

/// Refuse, before the cgroup is made, settings v2 does not have.
pub(super) fn validate(resources: &LinuxResources) -> Result<()> {
    if let Some(memory) = resources.memory() {
        memory::validate(memory, CgroupVersion::V2)?;
    }
    if let Some(cpu) = resources.cpu() {
        let realtime = [
            (
                "linux.resources.cpu.realtimeRuntime",
                cpu.realtime_runtime().unwrap_or(0) != 0,
            ),
            (
                "linux.resources.cpu.realtimePeriod",
                cpu.realtime_period().unwrap_or(0) != 0,
            ),
        ];
        if let Some((setting, _)) = realtime.into_iter().find(|(_, set)| *set) {
            return Err(CgroupError::Unsupported {
                setting,
                reason: "cgroup v2 has no real-time group scheduling".to_owned(),
            });
        }
    }
    if let Some(net) = resources.network() {
        network::validate(net, true)?;
    }
    Ok(())
}

/// Enable the controllers in every ancestor's `cgroup.subtree_control`.
pub(super) fn enable_controllers(root: &Path, dir: &Path) -> Result<()> {
    let Ok(relative) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut current = root.to_path_buf();
    for component in relative.components() {
        let Ok(available) = read_file(&current.join("cgroup.controllers")) else {
            return Ok(());
        };
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            write_file(&current.join("cgroup.subtree_control"), &wanted.join(" "))?;
        }
        current.push(component);
        std::fs::create_dir_all(&current).map_err(super::io_err("create", &current))?;
    }
    Ok(())
}

/// Apply to the cgroup directory `dir` (after [`validate`]).
pub(super) fn apply(dir: &Path, resources: &LinuxResources, kernel_has_swap: bool) -> Result<()> {
    if let Some(memory) = resources.memory() {
        memory::apply_v2(dir, memory, kernel_has_swap)?;
    }
    if let Some(cpu) = resources.cpu() {
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = cpu.quota().map_or_else(|| "max".to_owned(), max_or);
            let period = cpu.period().unwrap_or(100_000);
            write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(shares) = cpu.shares() {
            // The conversion runc and crun use.
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            write_file(&dir.join("cpu.weight"), &weight.to_string())?;
        }
        cpuset::apply(dir, cpu)?;
    }
    let hugepage_limits = hugetlb::limits(resources);
    if !hugepage_limits.is_empty() {
        hugetlb::apply_v2(dir, hugepage_limits)?;
    }
    if let Some(pids) = resources.pids() {
        write_file(&dir.join("pids.max"), &pids_max(pids.limit()))?;
    }
    if let Some(io) = resources.block_io() {
        block_io::apply_v2(dir, io)?;
    }
    if let Some(rules) = resources.devices() {
        apply_devices(dir, rules)?;
    }
    Ok(())
}

/// Load a device program for the rules and make it the one attached to the cgroup.
/// A kernel without cgroup device programs is only an error when the rules would
/// deny something.
fn apply_devices(dir: &Path, spec_rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let rules = device_rules::effective_rules(spec_rules)?;
    let cgroup = std::fs::File::open(dir).map_err(io_err("open", dir))?;
    let attached = bpf_attach::load(&device_program::build(&rules))
        .and_then(|program| bpf_attach::replace(cgroup.as_fd(), program.as_fd()));
    match attached {
        Ok(()) => Ok(()),
        Err(BpfError::Unsupported(errno)) if !device_rules::denies_anything(&rules) => {
            tracing::debug!(
                "cgroup v2: device rules allow everything; no device program ({errno})"
            );
            Ok(())
        }
        Err(source) => Err(CgroupError::DeviceProgram {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// `value`, or `max` for a negative (unlimited) one.
pub(super) fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}
