//! `kill`: signal the container's process (or, with --all, every process in its cgroup).

use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::cli::{Global, KillArgs};
use super::container::{self, Record, RecordError, Status};
use super::vm::VmModeError;

/// A container could not be signalled.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("invalid signal {text:?}")]
    InvalidSignal {
        text: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("container not running")]
    NotRunning,
    #[error(transparent)]
    Vm(#[from] VmModeError),
}

/// A signal from a name (`TERM`, `SIGTERM`, `term`) or a number.
pub fn parse_signal(text: &str) -> Result<Signal, KillError> {
    let invalid = |source| KillError::InvalidSignal {
        text: text.to_owned(),
        source,
    };
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(invalid);
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(invalid)
}

/// `berth-runtime kill`.
pub fn kill(global: &Global, args: &KillArgs) -> Result<(), KillError> {
    let record = Record::load(global, &args.id)?;
    let signal = parse_signal(&args.signal)?;
    let status = record.status(global);
    if record.vm.is_some() {
        return match (status, args.all) {
            // As in ns mode: nothing left to signal is not an error with --all.
            (Status::Stopped, true) => Ok(()),
            (Status::Stopped, false) => Err(KillError::NotRunning),
            (_, true) => Ok(super::vm::kill_all(global, &record, signal)?),
            (_, false) => Ok(super::vm::kill(global, &record, signal)?),
        };
    }
    if args.all {
        if let Some(pids) = record.cgroup().ok().and_then(|c| c.pids().ok()) {
            for pid in pids {
                container::signal(pid, signal)?;
            }
        }
        if status != Status::Stopped {
            container::signal(Pid::from_raw(record.pid), signal)?;
        }
        return Ok(());
    }
    if status == Status::Stopped {
        return Err(KillError::NotRunning);
    }
    Ok(container::signal(Pid::from_raw(record.pid), signal)?)
}
