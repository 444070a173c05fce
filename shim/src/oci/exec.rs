//! `exec`: run another process in a running container.

use std::num::ParseIntError;
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
    let spawned = spawn_exec(ExecSetup {
        container_pid: Pid::from_raw(record.pid),
        process,
        cgroups_path: Some(record.cgroups_path.clone()),
        stdio,
        seccomp,
    });
    let spawned = spawned.map_err(ExecError::Spawn)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, spawned.pid.as_raw())?;
    }
    if args.detach {
        return Ok(0);
    }
    Ok(wait_code(spawned.pid))
}
