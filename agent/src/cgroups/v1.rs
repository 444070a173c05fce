//! Limits on v1 per-controller hierarchies.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxResources};

use super::{
    append_line, block_io, cpuset, device_rules, hugetlb, io_err, memory, network, require,
    write_file, CgroupError, CgroupVersion, Result,
};

/// Controllers the container joins, when mounted.
const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices", "blkio", "hugetlb",
    "net_cls", "net_prio",
];

const RT_PERIOD: &str = "linux.resources.cpu.realtimePeriod";
const RT_RUNTIME: &str = "linux.resources.cpu.realtimeRuntime";

/// The mounted controller hierarchies, deduplicated when co-mounted (`cpu,cpuacct`).
pub(super) fn controller_roots(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for name in CONTROLLERS {
        let dir = root.join(name);
        if !dir.is_dir() {
            continue;
        }
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        out.push((*name, dir));
    }
    out
}

/// Refuse, before any directory is made, what needs a controller that is not
/// mounted under `root`, and values out of range.
pub(super) fn validate(root: &Path, resources: &LinuxResources) -> Result<()> {
    let mounted = |controller: &str, setting: &'static str| {
        let dir = root.join(controller);
        if dir.is_dir() {
            Ok(())
        } else {
            Err(CgroupError::Unsupported {
                setting,
                reason: format!(
                    "no {controller} controller is mounted ({} is missing)",
                    dir.display()
                ),
            })
        }
    };
    if let Some(memory) = resources.memory() {
        memory::validate(memory, CgroupVersion::V1)?;
    }
    if let Some(setting) = resources.cpu().as_ref().and_then(cpuset::first_requested) {
        mounted("cpuset", setting)?;
    }
    if !hugetlb::limits(resources).is_empty() {
        mounted("hugetlb", hugetlb::HUGEPAGE_LIMITS)?;
    }
    if let Some(net) = resources.network() {
        network::validate(net, false)?;
        for (controller, setting) in network::v1_controllers(net) {
            mounted(controller, setting)?;
        }
    }
    Ok(())
}

/// Make the cgroup `path` in the controller hierarchy `hierarchy`; in a cpuset
/// hierarchy, every level also gets CPUs and memory nodes.
pub(super) fn create_dir(hierarchy: &Path, path: &Path) -> Result<()> {
    if hierarchy.join("cpuset.cpus").exists() {
        return cpuset::create_v1(hierarchy, path);
    }
    let dir = hierarchy.join(path);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))
}

pub(super) fn apply(
    root: &Path,
    path: &Path,
    resources: &LinuxResources,
    kernel_has_swap: bool,
) -> Result<()> {
    if let Some(memory) = resources.memory() {
        memory::apply_v1(&root.join("memory").join(path), memory, kernel_has_swap)?;
    }
    if let Some(cpu) = resources.cpu() {
        let dir = root.join("cpu").join(path);
        if let Some(shares) = cpu.shares() {
            write_file(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(period) = cpu.period() {
            write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let Some(quota) = cpu.quota() {
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        apply_realtime(&dir, cpu)?;
        if cpuset::first_requested(cpu).is_some() {
            cpuset::apply(&root.join("cpuset").join(path), cpu)?;
        }
    }
    let hugepage_limits = hugetlb::limits(resources);
    if !hugepage_limits.is_empty() {
        hugetlb::apply_v1(&root.join("hugetlb").join(path), hugepage_limits)?;
    }
    if let Some(net) = resources.network() {
        network::apply_v1(root, path, net)?;
    }
    if let Some(pids) = resources.pids() {
        let dir = root.join("pids").join(path);
        write_file(&dir.join("pids.max"), &pids_max(pids.limit()))?;
    }
    if let Some(io) = resources.block_io() {
        block_io::apply_v1(&root.join("blkio").join(path), io)?;
    }
    if let Some(rules) = resources.devices() {
        let dir = root.join("devices").join(path);
        if dir.is_dir() {
            apply_devices(&dir, rules)?;
        } else {
            tracing::debug!("no v1 devices controller: device rules not applied");
        }
    }
    Ok(())
}

/// Real-time group scheduling (needs CONFIG_RT_GROUP_SCHED). The kernel
/// checks a new period against the current runtime and the other way round, so
/// a period it refuses is tried again after the runtime.
fn apply_realtime(dir: &Path, cpu: &LinuxCpu) -> Result<()> {
    let period = cpu.realtime_period().filter(|p| *p != 0);
    let runtime = cpu.realtime_runtime().filter(|r| *r != 0);
    let mut period_left = None;
    if let Some(period) = period {
        let file = require(dir, "cpu.rt_period_us", RT_PERIOD)?;
        match write_file(&file, &period.to_string()) {
            Ok(()) => {}
            Err(CgroupError::Io { source, .. })
                if runtime.is_some() && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                period_left = Some((file, period));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(runtime) = runtime {
        let file = require(dir, "cpu.rt_runtime_us", RT_RUNTIME)?;
        write_file(&file, &runtime.to_string())?;
    }
    if let Some((file, period)) = period_left {
        write_file(&file, &period.to_string())?;
    }
    Ok(())
}

/// Like runc's v1 manager: deny everything, then the spec's rules in order, then
/// the always-allowed nodes ([`device_rules::effective_rules`]).
fn apply_devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let rules = device_rules::effective_rules(rules)?;
    append_line(&dir.join("devices.deny"), "a")?;
    for rule in rules {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        append_line(&dir.join(file), &rule.to_string())?;
    }
    Ok(())
}

pub(super) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
    }
}
