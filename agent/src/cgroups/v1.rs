//! Limits on v1 per-controller hierarchies.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{write_file, Result};

/// Controllers the container joins, when mounted.
const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer"];

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
    Ok(())
}

pub(super) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
    }
}
