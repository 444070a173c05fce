//! `kill`: signal the container's process (or, with --all, every process in its cgroup).

use std::str::FromStr;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::cli::{Global, KillArgs};
use super::container::{self, Record, Status};

/// A signal from a name (`TERM`, `SIGTERM`, `term`) or a number.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("invalid signal {text:?}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).with_context(|| format!("invalid signal {text:?}"))
}

/// `berth-runtime kill`.
pub fn kill(global: &Global, args: &KillArgs) -> Result<()> {
    let record = Record::load(global, &args.id)?;
    let signal = parse_signal(&args.signal)?;
    let status = record.status(global);
    if record.vm.is_some() {
        if status == Status::Stopped {
            bail!("container not running");
        }
        return super::vm::kill(global, &record, signal);
    }
    if args.all {
        if let Ok(pids) = record.cgroup().and_then(|c| Ok(c.pids()?)) {
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
        bail!("container not running");
    }
    container::signal(Pid::from_raw(record.pid), signal)
}
