//! `spawn_exec`: run another process inside a running container.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, ForkResult, Pid};
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::cgroups::Cgroup;
use crate::channel;
use crate::child::{self, ChildError};
use crate::create::{SpawnError, Spawned};
use crate::namespaces;
use crate::seccomp::Program;
use crate::stdio::Stdio;
use crate::syscall::LinuxSyscall;

/// Everything needed to run a process in a running container.
#[derive(Debug)]
pub struct ExecSetup {
    /// Host pid of the container's PID 1, whose namespaces are joined.
    pub container_pid: Pid,
    /// The process to run.
    pub process: Process,
    /// The container's cgroup, joined when given.
    pub cgroups_path: Option<String>,
    /// The process's standard streams.
    pub stdio: Stdio,
    /// The container's `linux.seccomp`, applied to this process too (as runc does):
    /// before capabilities are dropped, or just before execve with noNewPrivileges.
    pub seccomp: Option<LinuxSeccomp>,
}

/// Namespaces joined, in order. The files are all opened before the first
/// setns(2). The user namespace comes last: until then the caller is root of
/// the initial user namespace and may join every other namespace, including
/// one the container joined by path that its user namespace does not own.
/// After joining it the process is unmapped until it sets its uid and gid,
/// which `run_process` does from `process.user`.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// The container's namespaces that differ from ours.
fn namespaces_of(pid: Pid) -> Vec<(CloneFlags, PathBuf)> {
    let inode = |path: &PathBuf| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    NAMESPACES
        .iter()
        .filter_map(|(name, flag)| {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let id = inode(&theirs)?;
            (Some(id) != inode(&ours)).then_some((*flag, theirs))
        })
        .collect()
}

/// Start `setup.process` in the container. The returned pid is an intermediate
/// host process that forwards signals to the command and exits with its status.
/// The caller must be single-threaded.
pub fn spawn_exec(setup: ExecSetup) -> Result<Spawned, SpawnError> {
    if setup.process.args().as_ref().is_none_or(Vec::is_empty) {
        return Err(SpawnError::InvalidSpec("process.args is empty"));
    }
    let cgroup = match &setup.cgroups_path {
        Some(path) => Some(Cgroup::open(path).map_err(|source| SpawnError::Cgroup {
            path: path.clone(),
            source: Box::new(source),
        })?),
        None => None,
    };
    let seccomp = setup
        .seccomp
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(SpawnError::Seccomp)?;
    let namespaces = namespaces_of(setup.container_pid);
    let (report_r, report_w) = channel::pipe().map_err(SpawnError::Pipe)?;
    // SAFETY: the caller is single-threaded, so the child's copy of memory is
    // consistent; the child leaves through execve or _exit.
    match unsafe { fork() }.map_err(SpawnError::Clone)? {
        ForkResult::Child => {
            let joined = Joined {
                cgroup: cgroup.as_ref(),
                namespaces: &namespaces,
                seccomp: seccomp.as_ref(),
            };
            let result = intermediate(&setup, joined, &report_w);
            let Err(e) = result;
            child::fail(report_w.as_fd(), &e)
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(setup);
            match channel::read_report(report_r) {
                Ok(None) => Ok(Spawned { pid: child }),
                Ok(Some(report)) => {
                    let _ = waitpid(child, None);
                    Err(report.into())
                }
                Err(e) => {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(SpawnError::Channel(e))
                }
            }
        }
    }
}

/// What the exec'd process takes from its container, prepared before forking.
#[derive(Debug, Clone, Copy)]
struct Joined<'a> {
    cgroup: Option<&'a Cgroup>,
    namespaces: &'a [(CloneFlags, PathBuf)],
    seccomp: Option<&'a Program>,
}

/// Join the cgroup and namespaces, fork the command and supervise it.
fn intermediate(
    setup: &ExecSetup,
    joined: Joined<'_>,
    report: &OwnedFd,
) -> Result<std::convert::Infallible, ChildError> {
    if let Some(cgroup) = joined.cgroup {
        cgroup.add_process(getpid()).map_err(ChildError::Cgroup)?;
    }
    namespaces::join(joined.namespaces)?;
    if !joined
        .namespaces
        .iter()
        .any(|(flag, _)| *flag == CloneFlags::CLONE_NEWNS)
    {
        // The container shares our mount namespace (it has none of its own) and
        // lives chrooted in its root: so does the exec'd process.
        child::enter_root_of(setup.container_pid)?;
    }
    let mut fds = setup.stdio.raw_fds();
    fds.push(report.as_raw_fd());
    // The joined pid namespace applies to children: fork the command.
    child::fork_supervised(&fds)?;
    let target = child::Target {
        process: &setup.process,
        stdio: &setup.stdio,
        seccomp: joined.seccomp,
    };
    child::run_process(&LinuxSyscall, target, None)
}
