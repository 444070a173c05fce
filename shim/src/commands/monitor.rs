//! `berth __monitor ID`: the detached supervisor of one container (started by `run -d`/`start`).

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::cli::container::MonitorArgs;
use crate::container::ContainerStore;
use crate::context::Context;
use crate::monitor::{self, Wiring};

use super::start::StartReport;
use super::CommandError;

pub fn monitor(ctx: &Context, args: &MonitorArgs) -> Result<i32, CommandError> {
    let report = args.report_fd.map(|fd| {
        // SAFETY: the starting berth put the report pipe's write end at this fd for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        std::fs::File::from(fd)
    });
    let record = ContainerStore::open(&ctx.root)?.find(&args.id)?;
    let wiring = Wiring {
        tty: record.process.tty,
        interactive: record.process.interactive,
        attached: false,
    };
    let code = monitor::run_container(ctx, &record.id, wiring, move |result| {
        let Some(mut file) = report else { return };
        let report = match result {
            Ok(()) => StartReport {
                error: None,
                exit_code: 0,
            },
            Err(e) => StartReport {
                error: Some(crate::error_chain(e)),
                exit_code: e.exit_code(),
            },
        };
        if let Ok(text) = serde_json::to_string(&report) {
            let _ = file.write_all(text.as_bytes());
        }
    })?;
    Ok(code)
}
