//! `exec`: run another process in a running container.

use std::num::ParseIntError;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use berth_agent::{spawn_exec, ExecSetup, SpawnError, Stdio};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::cli::{ExecArgs, Global};
use super::container::{Record, RecordError, Status};
use super::create::{write_pid_file, PidFileError};
use super::run::wait_code;
use super::vm::VmModeError;

/// A process could not be run in a container.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot read {}", path.display())]
    ReadProcess {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {}", path.display())]
    InvalidProcess {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("exec needs a command or --process")]
    NoCommand,
    #[error("invalid uid in {user:?}")]
    InvalidUid {
        user: String,
        #[source]
        source: ParseIntError,
    },
    #[error("invalid gid in {user:?}")]
    InvalidGid {
        user: String,
        #[source]
        source: ParseIntError,
    },
    #[error("cannot exec in a container that is not running")]
    NotRunning,
    #[error(transparent)]
    Vm(#[from] VmModeError),
    #[error("cannot connect to console socket {}", path.display())]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a terminal requires --console-socket")]
    NoConsoleSocket,
    #[error("cannot exec in the container")]
    Spawn(#[source] SpawnError),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
}

/// The process to run: process.json, or the container's process with the command
/// line's command, environment, directory, user and terminal.
pub fn build_process(
    record: &Record,
    global: &Global,
    args: &ExecArgs,
) -> Result<Process, ExecError> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path).map_err(|source| ExecError::ReadProcess {
            path: path.clone(),
            source,
        })?;
        return serde_json::from_str(&text).map_err(|source| ExecError::InvalidProcess {
            path: path.clone(),
            source,
        });
    }
    if args.command.is_empty() {
        return Err(ExecError::NoCommand);
    }
    let spec = record.spec(global)?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(args.env.iter().cloned());
    process.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.into());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let mut u = process.user().clone();
        u.set_uid(uid.parse().map_err(|source| ExecError::InvalidUid {
            user: user.clone(),
            source,
        })?);
        u.set_gid(gid.parse().map_err(|source| ExecError::InvalidGid {
            user: user.clone(),
            source,
        })?);
        u.set_additional_gids(None);
        process.set_user(u);
    }
    Ok(process)
}

/// `berth-runtime exec`; returns the exit code.
pub fn exec(global: &Global, args: &ExecArgs) -> Result<i32, ExecError> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) != Status::Running {
        return Err(ExecError::NotRunning);
    }
    let process = build_process(&record, global, args)?;
    if record.vm.is_some() {
        return Ok(super::vm::exec(global, &record, process, args)?);
    }
    let terminal = process.terminal().unwrap_or(false);
    let stdio = match (terminal, &args.console_socket) {
        (true, Some(path)) => Stdio::ConsoleSocket {
            socket: UnixStream::connect(path)
                .map_err(|source| ExecError::ConsoleSocket {
                    path: path.clone(),
                    source,
                })?
                .into(),
        },
        (true, None) => return Err(ExecError::NoConsoleSocket),
        (false, _) => Stdio::Inherit,
    };
    // runc gives exec'd processes the container's seccomp filter too.
    let seccomp = record
        .spec(global)?
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone());
    // With a terminal the process's streams are the pty, and the supervisor spawn_exec
    // leaves on the host must not hold the caller's stdio either: a caller reading
    // exec's output to EOF (containerd's runc shim does for --detach --tty) would wait
    // for the process's lifetime. runc leaves nothing holding them.
    let null_stdio = terminal.then(NullStdio::swap_in).flatten();
    let spawned = spawn_exec(ExecSetup {
        container_pid: Pid::from_raw(record.pid),
        process,
        cgroups_path: Some(record.cgroups_path.clone()),
        stdio,
        seccomp,
    });
    drop(null_stdio);
    let spawned = spawned.map_err(ExecError::Spawn)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, spawned.pid.as_raw())?;
    }
    if args.detach {
        return Ok(0);
    }
    Ok(wait_code(spawned.pid))
}

/// This process's fds 0/1/2 pointed at /dev/null until dropped, which puts the
/// originals back; processes forked meanwhile keep /dev/null.
struct NullStdio {
    saved: Vec<(RawFd, OwnedFd)>,
}

impl NullStdio {
    /// None (nothing changed) when /dev/null cannot be opened.
    fn swap_in() -> Option<NullStdio> {
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ok()?;
        let mut saved = Vec::new();
        for fd in 0..3 {
            // SAFETY: only duplicated (F_DUPFD_CLOEXEC) while it is open; a closed
            // descriptor makes the duplication fail and is left alone.
            let original = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(copy) = original.try_clone_to_owned() else {
                continue;
            };
            // SAFETY: dup2 onto a standard descriptor; its previous file stays open
            // through `copy`.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } == fd {
                saved.push((fd, copy));
            }
        }
        Some(NullStdio { saved })
    }
}

impl Drop for NullStdio {
    fn drop(&mut self) {
        for (fd, copy) in &self.saved {
            // SAFETY: dup2 back onto the standard descriptor it was saved from.
            unsafe { libc::dup2(copy.as_raw_fd(), *fd) };
        }
    }
}
