//! Limits on v1 per-controller hierarchies.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::{append_line, block_io, device_rules, write_file, Result};

/// Controllers the container joins, when mounted.
const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "freezer", "devices", "blkio",
];

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

pub(super) fn apply(root: &Path, path: &Path, resources: &LinuxResources) -> Result<()> {
    if let Some(memory) = resources.memory() {
        let dir = root.join("memory").join(path);
        if let Some(limit) = memory.limit() {
            write_file(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
            // Without a memsw limit the container could swap past its limit.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let total = memory.swap().unwrap_or(limit);
                write_file(&memsw, &total.to_string())?;
            }
        }
        if let Some(reservation) = memory.reservation() {
            write_file(
                &dir.join("memory.soft_limit_in_bytes"),
                &reservation.to_string(),
            )?;
        }
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
