//! `delete`: remove a stopped container (its cgroup and state), then run poststop hooks.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::cli::{DeleteArgs, Global};
use super::container::{self, Record, Status};
use super::hooks::{self, Point};

/// `berth-runtime delete`.
pub fn delete(global: &Global, args: &DeleteArgs) -> Result<()> {
    let record = match Record::load(global, &args.id) {
        Ok(record) => record,
        Err(e) => {
            let dir = container::dir(global, &args.id);
            if args.force {
                container::validate_id(&args.id)?;
                let _ = std::fs::remove_dir_all(dir);
                return Ok(());
            }
            return Err(e);
        }
    };
    let status = record.status(global);
    if status != Status::Stopped {
        if !args.force && status != Status::Created {
            bail!(
                "cannot delete container {:?} that is not stopped: {}",
                args.id,
                status.as_str()
            );
        }
        if record.vm.is_none() {
            kill_all(&record);
        }
    }
    let spec = record.spec(global).ok();
    if record.vm.is_some() {
        super::vm::delete(global, &record);
        std::fs::remove_dir_all(container::dir(global, &args.id))?;
        if let Some(spec) = spec {
            if let Err(e) = hooks::run(&spec, Point::Poststop, &record.state_json(Status::Stopped))
            {
                eprintln!("berth-runtime: warning: {e:#}");
            }
        }
        return Ok(());
    }
    if let Ok(cgroup) = record.cgroup() {
        // Anything left behind (exec'd processes) goes too.
        if let Ok(pids) = cgroup.pids() {
            for pid in pids {
                let _ = container::signal(pid, Signal::SIGKILL);
            }
        }
        wait_empty(&cgroup);
        if let Err(e) = cgroup.destroy() {
            eprintln!("berth-runtime: warning: cannot remove the cgroup: {e}");
        }
    }
    std::fs::remove_dir_all(container::dir(global, &args.id))?;
    if let Some(spec) = spec {
        if let Err(e) = hooks::run(&spec, Point::Poststop, &record.state_json(Status::Stopped)) {
            eprintln!("berth-runtime: warning: {e:#}");
        }
    }
    Ok(())
}

/// SIGKILL the process (thawing it first) and wait for it to go.
fn kill_all(record: &Record) {
    if let Ok(cgroup) = record.cgroup() {
        if let Some(file) = container::freezer_file(&cgroup) {
            let thawed = if file.ends_with("cgroup.freeze") {
                "0"
            } else {
                "THAWED"
            };
            let _ = std::fs::write(file, thawed);
        }
    }
    let _ = container::signal(Pid::from_raw(record.pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while container::alive(record.pid, record.start_time) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_empty(cgroup: &berth_agent::cgroups::Cgroup) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.pids().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
