//! `delete`: remove a stopped container (its cgroup and state), then run poststop hooks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::cli::{DeleteArgs, Global};
use super::container::{self, Record, RecordError, Status};
use super::hooks::{self, Point};

/// A container could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot delete container {id:?} that is not stopped: {}", status.as_str())]
    NotStopped { id: String, status: Status },
    #[error("cannot remove {}", path.display())]
    RemoveState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn remove_state(global: &Global, id: &str) -> Result<(), DeleteError> {
    let path = container::dir(global, id);
    std::fs::remove_dir_all(&path).map_err(|source| DeleteError::RemoveState { path, source })
}

/// `berth-runtime delete`.
pub fn delete(global: &Global, args: &DeleteArgs) -> Result<(), DeleteError> {
    let record = match Record::load(global, &args.id) {
        Ok(record) => record,
        Err(e) => {
            let dir = container::dir(global, &args.id);
            if args.force {
                container::validate_id(&args.id)?;
                let _ = std::fs::remove_dir_all(dir);
                return Ok(());
            }
            return Err(e.into());
        }
    };
    let status = record.status(global);
    if status != Status::Stopped {
        if !args.force && status != Status::Created {
            return Err(DeleteError::NotStopped {
                id: args.id.clone(),
                status,
            });
        }
        if record.vm.is_none() {
            kill_all(&record);
        }
    }
    let spec = record.spec(global).ok();
    if record.vm.is_some() {
        super::vm::delete(global, &record);
        remove_state(global, &args.id)?;
        run_poststop(global, spec.as_ref(), &record);
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
    remove_state(global, &args.id)?;
    run_poststop(global, spec.as_ref(), &record);
    Ok(())
}

/// The container is gone: a failing poststop hook is only a warning.
fn run_poststop(global: &Global, spec: Option<&oci_spec::runtime::Spec>, record: &Record) {
    if let Some(spec) = spec {
        let state = record.state_json(Status::Stopped);
        hooks::run_warning_on_failure(global, spec, Point::Poststop, &state);
    }
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
