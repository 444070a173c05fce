//! Limits on the v2 unified hierarchy.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{read_file, v1::pids_max, write_file, Result};

/// Controllers delegated down to container cgroups, when available.
const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

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

pub(super) fn apply(dir: &Path, resources: &LinuxResources) -> Result<()> {
    if let Some(memory) = resources.memory() {
        if let Some(limit) = memory.limit() {
            write_file(&dir.join("memory.max"), &max_or(limit))?;
            let swap_file = dir.join("memory.swap.max");
            if swap_file.exists() {
                // OCI swap is memory+swap; v2 counts swap alone.
                let swap = match memory.swap() {
                    None => "0".to_owned(),
                    Some(total) if total < 0 || limit < 0 => "max".to_owned(),
                    Some(total) => (total - limit).max(0).to_string(),
                };
                write_file(&swap_file, &swap)?;
            }
        }
        if let Some(reservation) = memory.reservation() {
            write_file(&dir.join("memory.low"), &max_or(reservation))?;
        }
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
    }
    if let Some(pids) = resources.pids() {
        write_file(&dir.join("pids.max"), &pids_max(pids.limit()))?;
    }
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        // v2 device control is an eBPF program attached to the cgroup; not implemented.
        tracing::debug!("cgroup v2: linux.resources.devices not enforced (needs eBPF)");
    }
    Ok(())
}

fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}
