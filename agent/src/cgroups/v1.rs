//! Limits on v1 per-controller hierarchies.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::{io_err, write_file, Result};

/// Controllers the container joins, when mounted.
const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "freezer", "devices"];

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

/// Always allowed after the spec's rules, as runc's spec conversion appends them:
/// mknod of any node, and the nodes every container gets (null, zero, full,
/// random, urandom, tty, the pty multiplexer and ptys).
const ALWAYS_ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Like runc's v1 manager: deny everything, then apply the spec's rules in order,
/// then [`ALWAYS_ALLOWED`].
fn apply_devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    append_line(&dir.join("devices.deny"), "a")?;
    for rule in rules {
        let Some(line) = device_rule(rule) else {
            tracing::debug!("device rule {rule} has no devices cgroup form: skipped");
            continue;
        };
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        append_line(&dir.join(file), &line)?;
    }
    for line in ALWAYS_ALLOWED {
        append_line(&dir.join("devices.allow"), line)?;
    }
    Ok(())
}

/// A rule as the devices controller reads it, e.g. `c 1:3 rwm`; `None` for FIFOs.
pub(super) fn device_rule(rule: &LinuxDeviceCgroup) -> Option<String> {
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => return None,
    };
    let number = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_owned(), |n| n.to_string())
    };
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    Some(format!(
        "{typ} {}:{} {access}",
        number(rule.major()),
        number(rule.minor())
    ))
}

/// One write per rule (the controller parses each write on its own); appending
/// keeps every rule when the files are plain files under a test root.
fn append_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        .map_err(io_err(&format!("write {line:?} to"), path))
}

pub(super) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_owned()
    }
}
