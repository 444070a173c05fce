//! `berth start`: start stopped containers under a detached monitor, or attached with `-a`.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cli::container::StartArgs;
use crate::container::ContainerStore;
use crate::context::Context;
use crate::monitor::{self, Wiring};

use super::CommandError;

/// The detached monitor's word on whether the container started.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StartReport {
    pub error: Option<String>,
    pub exit_code: i32,
}

/// The fd number the report pipe has in the monitor process.
pub(super) const REPORT_FD: i32 = 3;

pub fn start(ctx: &Context, args: &StartArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    if args.attach {
        let [name] = args.containers.as_slice() else {
            return Err(CommandError::Refused(
                "start --attach takes exactly one container".into(),
            ));
        };
        let record = store.find(name)?;
        let wiring = Wiring {
            tty: record.process.tty,
            interactive: record.process.interactive,
            attached: true,
        };
        return Ok(monitor::run_container(ctx, &record.id, wiring, |_| {})?);
    }
    let mut failed = 0;
    for name in &args.containers {
        match store.find(name).map_err(CommandError::from).and_then(|r| {
            start_detached(ctx, &r.id)?;
            Ok(())
        }) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {}", crate::error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Starts `berth __monitor ID` in its own session and waits for its start-up report.
pub(super) fn start_detached(ctx: &Context, id: &str) -> Result<(), CommandError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let write_raw = write_end.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    command
        .arg("--root")
        .arg(&ctx.root)
        .args(ctx.debug.then_some("--debug"))
        .arg("__monitor")
        .arg(id)
        .arg("--report-fd")
        .arg(REPORT_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls (setsid, dup2)
    // on fds this process owns, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::dup2(write_raw, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(CommandError::SpawnMonitor)?;
    drop(write_end);
    let report = read_report(read_end)?;
    match report.error {
        None => Ok(()),
        Some(message) => Err(CommandError::StartFailed {
            message,
            exit_code: report.exit_code,
        }),
    }
}

fn read_report(read_end: OwnedFd) -> Result<StartReport, CommandError> {
    let mut text = String::new();
    std::fs::File::from(read_end).read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|_| {
        CommandError::Refused(
            "berth's container monitor exited before reporting whether the container started"
                .into(),
        )
    })
}
