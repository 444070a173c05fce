//! `update`: change memory, cpu quota and pids limits of a container's cgroup.

use anyhow::{bail, Result};
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources};

use super::cli::{Global, UpdateArgs};
use super::container::{Record, Status};

/// `berth-runtime update`.
pub fn update(global: &Global, args: &UpdateArgs) -> Result<()> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) == Status::Stopped {
        bail!("container {:?} is not running", args.id);
    }
    let mut resources = LinuxResources::default();
    if let Some(limit) = args.memory {
        resources.set_memory(Some(LinuxMemoryBuilder::default().limit(limit).build()?));
    }
    if args.cpu_quota.is_some() || args.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(quota) = args.cpu_quota {
            cpu = cpu.quota(quota);
        }
        cpu = cpu.period(args.cpu_period.unwrap_or(100_000));
        resources.set_cpu(Some(cpu.build()?));
    }
    if let Some(limit) = args.pids_limit {
        resources.set_pids(Some(LinuxPidsBuilder::default().limit(limit).build()?));
    }
    record.cgroup()?.create(Some(&resources))?;
    Ok(())
}
