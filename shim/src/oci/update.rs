//! `update`: change memory, cpu quota and pids limits of a container's cgroup (in
//! vm mode, the container's cgroup in the guest).

use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources};

use super::cli::{Global, UpdateArgs};
use super::container::{Record, Status};
use super::CommandError;

/// `berth-runtime update`.
pub fn update(global: &Global, args: &UpdateArgs) -> Result<(), CommandError> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) == Status::Stopped {
        return Err(CommandError::NotRunning(args.id.clone()));
    }
    let mut resources = LinuxResources::default();
    if let Some(limit) = args.memory {
        let memory = LinuxMemoryBuilder::default().limit(limit).build();
        resources.set_memory(Some(memory.map_err(CommandError::Limits)?));
    }
    if args.cpu_quota.is_some() || args.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(quota) = args.cpu_quota {
            cpu = cpu.quota(quota);
        }
        cpu = cpu.period(args.cpu_period.unwrap_or(100_000));
        resources.set_cpu(Some(cpu.build().map_err(CommandError::Limits)?));
    }
    if let Some(limit) = args.pids_limit {
        let pids = LinuxPidsBuilder::default().limit(limit).build();
        resources.set_pids(Some(pids.map_err(CommandError::Limits)?));
    }
    if record.vm.is_some() {
        return Ok(super::vm::update(global, &record, resources)?);
    }
    record
        .cgroup()?
        .create(Some(&resources))
        .map_err(CommandError::Apply)?;
    Ok(())
}
