//! `run`: create and start; in the foreground, wait and exit with the container's
//! status, then delete it (as runc does).

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::cli::{DeleteArgs, Global, RunArgs};
use super::create::{create_container, CreateError};
use super::delete::delete;
use super::start::{start_record, StartError};

/// A container could not be created or started (a created one is deleted again).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// `berth-runtime run`; returns the exit code.
pub fn run(global: &Global, args: &RunArgs) -> Result<i32, RunError> {
    let record = create_container(global, &args.create)?;
    let remove = |global: &Global| {
        let _ = delete(
            global,
            &DeleteArgs {
                force: true,
                id: record.id.clone(),
            },
        );
    };
    if let Err(e) = start_record(global, &record) {
        remove(global);
        return Err(e.into());
    }
    if args.detach {
        return Ok(0);
    }
    let code = if record.vm.is_some() {
        super::vm::wait(global, &record)
    } else {
        wait_code(Pid::from_raw(record.pid))
    };
    remove(global);
    Ok(code)
}

/// Wait for a child and turn its status into a shell-style exit code.
pub fn wait_code(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}
