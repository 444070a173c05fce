//! `exec`: run another process in a running container.

use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use berth_agent::{spawn_exec, ExecSetup, Stdio};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::cli::{ExecArgs, Global};
use super::container::{Record, Status};
use super::create::write_pid_file;
use super::run::wait_code;

/// The process to run: process.json, or the container's process with the command
/// line's command, environment, directory, user and terminal.
pub fn build_process(record: &Record, global: &Global, args: &ExecArgs) -> Result<Process> {
    if let Some(path) = &args.process {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()));
    }
    if args.command.is_empty() {
        bail!("exec needs a command or --process");
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
        u.set_uid(
            uid.parse()
                .with_context(|| format!("invalid uid in {user:?}"))?,
        );
        u.set_gid(
            gid.parse()
                .with_context(|| format!("invalid gid in {user:?}"))?,
        );
        u.set_additional_gids(None);
        process.set_user(u);
    }
    Ok(process)
}

/// `berth-runtime exec`; returns the exit code.
pub fn exec(global: &Global, args: &ExecArgs) -> Result<i32> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) != Status::Running {
        bail!("cannot exec in a container that is not running");
    }
    let process = build_process(&record, global, args)?;
    if record.vm.is_some() {
        if args.detach || args.pid_file.is_some() {
            bail!("exec --detach/--pid-file in a vm-mode container is not supported yet");
        }
        return super::vm::exec(global, &record, process);
    }
    let terminal = process.terminal().unwrap_or(false);
    let stdio = match (terminal, &args.console_socket) {
        (true, Some(path)) => Stdio::ConsoleSocket {
            socket: UnixStream::connect(path)
                .with_context(|| format!("cannot connect to console socket {}", path.display()))?
                .into(),
        },
        (true, None) => bail!("a terminal requires --console-socket"),
        (false, _) => Stdio::Inherit,
    };
    let spawned = spawn_exec(ExecSetup {
        container_pid: Pid::from_raw(record.pid),
        process,
        cgroups_path: Some(record.cgroups_path.clone()),
        stdio,
    })
    .map_err(|e| anyhow::anyhow!(crate::error_chain(&e)))
    .context("cannot exec in the container")?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, spawned.pid.as_raw())?;
    }
    if args.detach {
        return Ok(0);
    }
    Ok(wait_code(spawned.pid))
}
