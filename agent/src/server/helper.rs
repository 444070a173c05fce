//! Runs the library's `spawn`/`spawn_exec` (which want a single-threaded
//! caller) in a freshly forked, single-threaded helper process.
//!
//! The helper reports the started pid (or the failure) over a pipe, then waits
//! for the agent to register that pid with the [`Reaper`] before it exits; only
//! then is the started process re-parented to the agent (PID 1 or a child
//! subreaper), so its exit status can never be reaped unobserved.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::reaper::{Once, Reaper};
use crate::create::{SpawnError, Spawned};
use crate::protocol::{read_frame, write_frame};

/// What the helper reports.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    Started { pid: i32 },
    Failed { message: String, exit_code: i32 },
}

/// Why a process could not be started through the helper.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The library refused or failed; `message` holds its error chain.
    #[error("{message}")]
    Spawn {
        /// The error chain.
        message: String,
        /// Docker's exit code (127 not found, 126 not executable, 125 otherwise).
        exit_code: i32,
    },
    /// The helper process could not be created.
    #[error("failed to fork the spawn helper")]
    Fork(#[source] nix::errno::Errno),
    /// The helper's report pipe could not be created.
    #[error("failed to create the spawn helper's pipe")]
    Pipe(#[source] nix::errno::Errno),
    /// The helper died without a report.
    #[error("the spawn helper exited without a report")]
    NoReport(#[source] Option<crate::protocol::ProtocolError>),
}

/// `error: source: source…` in one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}

/// Run `start` in a forked helper; on success the started pid is watched by
/// `reaper` and returned with its exit cell.
pub(crate) fn spawn_in_helper<F>(
    reaper: &Reaper,
    start: F,
) -> Result<(Pid, Arc<Once<i32>>), HelperError>
where
    F: FnOnce() -> Result<Spawned, SpawnError>,
{
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(HelperError::Pipe)?;
    let (ack_r, ack_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(HelperError::Pipe)?;
    // SAFETY: glibc's fork re-initialises the malloc locks in the child, and the
    // helper takes no other lock another thread may hold (no stdio, no
    // environment, no logging): it runs the library's set-up, writes to a pipe
    // and leaves through _exit.
    match unsafe { fork() }.map_err(HelperError::Fork)? {
        ForkResult::Child => {
            drop(report_r);
            drop(ack_w);
            helper_main(start, report_w, ack_r)
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(ack_r);
            // The helper holds the child ends of the stdio descriptors now.
            drop(start);
            reaper.forked();
            let report = read_frame::<_, Report>(&mut File::from(report_r));
            let result = match report {
                Ok(Some(Report::Started { pid })) => {
                    let pid = Pid::from_raw(pid);
                    Ok((pid, reaper.watch(pid)))
                }
                Ok(Some(Report::Failed { message, exit_code })) => {
                    Err(HelperError::Spawn { message, exit_code })
                }
                Ok(None) => Err(HelperError::NoReport(None)),
                Err(e) => Err(HelperError::NoReport(Some(e))),
            };
            // Let the helper exit; the reaper collects it.
            drop(ack_w);
            let _ = child;
            result
        }
    }
}

fn helper_main<F>(start: F, report: OwnedFd, ack: OwnedFd) -> !
where
    F: FnOnce() -> Result<Spawned, SpawnError>,
{
    // Processes started from here get default signal dispositions (Rust
    // ignores SIGPIPE in its own processes).
    // SAFETY: restoring the default disposition installs no handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let report_value = match start() {
        Ok(spawned) => Report::Started {
            pid: spawned.pid.as_raw(),
        },
        Err(e) => Report::Failed {
            exit_code: e.exit_code(),
            message: chain(&e),
        },
    };
    let mut report = File::from(report);
    let _ = write_frame(&mut report, &report_value);
    drop(report);
    // Wait until the agent has registered the pid (it closes the ack pipe).
    let mut byte = [0u8; 1];
    let _ = File::from(ack).read(&mut byte);
    // SAFETY: _exit ends the helper without running the parent's atexit
    // handlers or destructors of state copied from the multi-threaded parent.
    unsafe { libc::_exit(0) }
}
