//! `--runtime=ns`: the container runs on the host kernel in its own namespaces and cgroup,
//! set up by the agent library, with the image layers stacked by overlayfs.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, UserBuilder};

use berth_agent::cgroups::Cgroup;
use berth_agent::{ContainerSetup, ExecSetup, Rootfs};

use crate::container::ContainerRecord;

use super::user::{resolve_in_layers, stack_top_first};
use super::{spec, ContainerProcess, ExecLaunch, Launch, Runtime, RuntimeError};

/// Linux namespaces, like runc.
pub struct NamespaceRuntime;

impl Runtime for NamespaceRuntime {
    fn start(&self, launch: Launch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError> {
        let upper = launch.dir.join("upper");
        let stack = stack_top_first(&upper, &launch.layers);
        let user = resolve_in_layers(&launch.record.process.user, &stack)?;
        let spec = spec::build(launch.record, &user)?;
        let setup = ContainerSetup {
            id: launch.record.id.clone(),
            spec,
            rootfs: Rootfs::Overlay {
                lower: launch.layers.iter().rev().cloned().collect(),
                upper,
                work: launch.dir.join("work"),
                target: launch.dir.join("rootfs"),
            },
            stdio: launch.stdio,
            init: true,
            no_pivot: false,
        };
        Ok(Box::new(ChildProcess(berth_agent::spawn(setup)?.pid)))
    }

    fn exec(&self, launch: ExecLaunch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError> {
        let stack = stack_top_first(&launch.dir.join("upper"), &launch.layers);
        let user = resolve_in_layers(&launch.user, &stack)?;
        // The container's seccomp filter applies to exec'd processes too, as in runc.
        let seccomp = spec::build(launch.record, &user)?
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().clone());
        let mut env = launch.env;
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let base = berth_agent::spec::default_spec();
        let oci_user = UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids)
            .build()
            .map_err(spec::SpecError)?;
        let mut process = ProcessBuilder::default()
            .terminal(launch.tty)
            .user(oci_user)
            .args(launch.args)
            .env(env)
            .cwd(launch.cwd);
        if let Some(caps) = base
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
        {
            process = process.capabilities(caps);
        }
        let setup = ExecSetup {
            container_pid: launch.container_pid,
            process: process.build().map_err(spec::SpecError)?,
            cgroups_path: Some(launch.record.cgroups_path()),
            stdio: launch.stdio,
            seccomp,
        };
        Ok(Box::new(ChildProcess(berth_agent::spawn_exec(setup)?.pid)))
    }

    fn kill(
        &self,
        _record: &ContainerRecord,
        pid: Pid,
        signal: Signal,
    ) -> Result<(), RuntimeError> {
        // The container's init forwards what it gets to the user process.
        nix::sys::signal::kill(pid, signal)
            .map_err(|source| RuntimeError::Signal { signal, source })
    }

    fn oom_killed(&self, record: &ContainerRecord) -> bool {
        Cgroup::open(&record.cgroups_path())
            .and_then(|c| c.oom_kill_count())
            .map(|n| n > 0)
            .unwrap_or(false)
    }

    fn release(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let cgroup = Cgroup::open(&record.cgroups_path()).map_err(RuntimeError::Cgroup)?;
        // Orphans of a PID 1 that died are killed by the kernel; wait for them to leave.
        for _ in 0..50 {
            match cgroup.pids() {
                Ok(pids) if !pids.is_empty() => {
                    for pid in pids {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => break,
            }
        }
        cgroup.destroy().map_err(RuntimeError::Cgroup)
    }
}

/// A child process of this berth process: the container's init, or an exec's relay.
pub struct ChildProcess(pub Pid);

impl ContainerProcess for ChildProcess {
    fn pid(&self) -> Pid {
        self.0
    }

    fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        match waitpid(self.0, Some(WaitPidFlag::WNOHANG)) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                Ok(Some(crate::monitor::session::exit_code(status)))
            }
            Ok(_) => Ok(None),
            // Reaped elsewhere: its status is lost.
            Err(Errno::ECHILD) => Ok(Some(255)),
            Err(e) => Err(e.into()),
        }
    }

    fn signal(&mut self, signal: Signal) -> std::io::Result<()> {
        nix::sys::signal::kill(self.0, signal).map_err(std::io::Error::from)
    }
}
