//! `linux.resources.memory` on the v1 memory controller and v2's memory files.
//!
//! As in runc: the spec's `swap` is memory+swap and 0 means unset; `kernel` is
//! deprecated and ignored; v2 has no swappiness and no OOM-killer switch (the
//! first is refused, the second ignored). Unlike runc, a memory limit without a
//! swap setting allows no swap beyond the limit, where the kernel accounts swap.
//!
//! A swap limit the kernel has no file for (no swap accounting) is refused when
//! it would restrict something, except on a kernel without swap at all (like
//! berth's guest kernel), where no container can swap and the limit holds.

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use super::v2::max_or;
use super::{read_file, require, write_file, CgroupError, CgroupVersion, Result};

const SWAP: &str = "linux.resources.memory.swap";
const SWAPPINESS: &str = "linux.resources.memory.swappiness";
const KERNEL_TCP: &str = "linux.resources.memory.kernelTCP";
const DISABLE_OOM_KILLER: &str = "linux.resources.memory.disableOOMKiller";

/// The memory+swap limit, when set.
fn swap(memory: &LinuxMemory) -> Option<i64> {
    memory.swap().filter(|s| *s != 0)
}

/// The TCP buffer limit, when set.
fn kernel_tcp(memory: &LinuxMemory) -> Option<i64> {
    memory.kernel_tcp().filter(|t| *t != 0)
}

/// Checks that need no cgroup: values in range, settings `version` lacks.
pub(super) fn validate(memory: &LinuxMemory, version: CgroupVersion) -> Result<()> {
    let limit = memory.limit().filter(|l| *l > 0);
    if let (Some(limit), Some(total)) = (limit, swap(memory)) {
        if total > 0 && total < limit {
            return Err(CgroupError::Invalid {
                setting: SWAP,
                reason: format!("memory+swap {total} is below the memory limit {limit}"),
            });
        }
    }
    match version {
        CgroupVersion::V1 => {
            if let Some(swappiness) = memory.swappiness().filter(|s| *s > 100) {
                return Err(CgroupError::Invalid {
                    setting: SWAPPINESS,
                    reason: format!("{swappiness} is not between 0 and 100"),
                });
            }
        }
        CgroupVersion::V2 => {
            if memory.swappiness().is_some() {
                return Err(CgroupError::Unsupported {
                    setting: SWAPPINESS,
                    reason: "cgroup v2 has no per-cgroup swappiness".to_owned(),
                });
            }
            if kernel_tcp(memory).is_some_and(|t| t > 0) {
                return Err(CgroupError::Unsupported {
                    setting: KERNEL_TCP,
                    reason: "cgroup v2 has no separate TCP buffer limit \
                             (socket memory counts toward memory.max)"
                        .to_owned(),
                });
            }
            if swap(memory).is_some_and(|s| s > 0) && limit.is_none() {
                return Err(CgroupError::Invalid {
                    setting: SWAP,
                    reason: "cgroup v2 needs a memory limit to derive the swap limit from"
                        .to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// A swap limit the kernel has no `file` for in `dir`: an error if the limit
/// restricts swap on a kernel that has swap, otherwise nothing to do.
fn unaccounted_swap(dir: &Path, file: &str, restricts: bool, kernel_has_swap: bool) -> Result<()> {
    if restricts && kernel_has_swap {
        require(dir, file, SWAP)?;
    }
    tracing::debug!("{SWAP}: this kernel has no {file}, and nothing to limit");
    Ok(())
}

/// Apply to the v1 memory cgroup directory `dir`.
pub(super) fn apply_v1(dir: &Path, memory: &LinuxMemory, kernel_has_swap: bool) -> Result<()> {
    limits_v1(dir, memory, kernel_has_swap)?;
    if let Some(reservation) = memory.reservation() {
        write_file(
            &dir.join("memory.soft_limit_in_bytes"),
            &reservation.to_string(),
        )?;
    }
    if let Some(swappiness) = memory.swappiness() {
        let file = require(dir, "memory.swappiness", SWAPPINESS)?;
        write_file(&file, &swappiness.to_string())?;
    }
    if let Some(limit) = kernel_tcp(memory) {
        let file = require(dir, "memory.kmem.tcp.limit_in_bytes", KERNEL_TCP)?;
        write_file(&file, &limit.to_string())?;
    }
    if memory.disable_oom_killer() == Some(true) {
        let file = require(dir, "memory.oom_control", DISABLE_OOM_KILLER)?;
        write_file(&file, "1")?;
    }
    if memory.kernel().is_some() {
        tracing::debug!("linux.resources.memory.kernel is deprecated and ignored");
    }
    Ok(())
}

/// The memory and memory+swap limits. The kernel keeps the first no larger than
/// the second at every step, so the order of the two writes depends on the
/// current limit (raising both writes memory+swap first).
fn limits_v1(dir: &Path, memory: &LinuxMemory, kernel_has_swap: bool) -> Result<()> {
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join(MEMSW);
    let memsw = match (swap(memory), memory.limit()) {
        (Some(total), _) if memsw_file.exists() => Some(total),
        (Some(total), _) => {
            unaccounted_swap(dir, MEMSW, total > 0, kernel_has_swap)?;
            None
        }
        // Without it the container could swap past its limit.
        (None, Some(limit)) if memsw_file.exists() => Some(limit),
        (None, _) => None,
    };
    match (memory.limit(), memsw) {
        (Some(limit), Some(memsw)) => {
            let current = read_file(&limit_file)?;
            let current: u64 = current.trim().parse().map_err(|_| CgroupError::Parse {
                path: limit_file.clone(),
                content: current.clone(),
            })?;
            if memsw_first(current, memsw) {
                write_file(&memsw_file, &memsw.to_string())?;
                write_file(&limit_file, &limit.to_string())?;
            } else {
                write_file(&limit_file, &limit.to_string())?;
                write_file(&memsw_file, &memsw.to_string())?;
            }
        }
        (Some(limit), None) => write_file(&limit_file, &limit.to_string())?,
        (None, Some(memsw)) => write_file(&memsw_file, &memsw.to_string())?,
        (None, None) => {}
    }
    Ok(())
}

/// Whether the memory+swap limit must be written before the memory limit: when
/// it is above the current memory limit (or unlimited). Otherwise the new memory
/// limit is no larger than the current one, so no larger than the current
/// memory+swap, and goes first.
pub(super) fn memsw_first(current_limit: u64, memsw: i64) -> bool {
    memsw < 0 || i128::from(current_limit) < i128::from(memsw)
}

/// Apply to the v2 cgroup directory `dir` (after [`validate`]).
pub(super) fn apply_v2(dir: &Path, memory: &LinuxMemory, kernel_has_swap: bool) -> Result<()> {
    let limit = memory.limit();
    if let Some(limit) = limit {
        write_file(&dir.join("memory.max"), &max_or(limit))?;
    }
    // v2 limits swap alone: memory+swap minus memory.
    let swap_max = match (swap(memory), limit) {
        (Some(total), _) if total < 0 => Some("max".to_owned()),
        (Some(total), Some(limit)) => Some((total - limit).max(0).to_string()),
        // Unlimited memory and unset swap: both unlimited, as runc does.
        (None, Some(limit)) if limit < 0 => Some("max".to_owned()),
        (None, Some(_)) => Some("0".to_owned()),
        (_, None) => None,
    };
    if let Some(swap_max) = swap_max {
        let file = dir.join("memory.swap.max");
        if file.exists() {
            write_file(&file, &swap_max)?;
        } else if swap(memory).is_some() {
            unaccounted_swap(dir, "memory.swap.max", swap_max != "max", kernel_has_swap)?;
        }
    }
    if let Some(reservation) = memory.reservation() {
        write_file(&dir.join("memory.low"), &max_or(reservation))?;
    }
    if memory.disable_oom_killer() == Some(true) {
        tracing::debug!("cgroup v2 has no switch for the OOM killer: {DISABLE_OOM_KILLER} ignored");
    }
    if memory.kernel().is_some() {
        tracing::debug!("linux.resources.memory.kernel is deprecated and ignored");
    }
    Ok(())
}
