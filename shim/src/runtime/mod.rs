//! The runtimes that isolate a container, behind one trait: `ns` (Linux namespaces on the host)
//! now, `vm` (a microVM running the same container code in the guest) later.

mod ns;
pub mod spec;
pub mod user;

use std::path::PathBuf;

use nix::unistd::Pid;

use crate::container::ContainerRecord;

pub use ns::NamespaceRuntime;

/// A container runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown runtime \"{0}\": berth has \"ns\" (namespaces) and \"vm\" (microVM)")]
    Unknown(String),
    #[error("the vm runtime is not available yet in this build of berth: use --runtime=ns")]
    VmUnavailable,
    #[error(transparent)]
    Spawn(#[from] berth_agent::SpawnError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("could not release the container's cgroup")]
    Cgroup(#[source] berth_agent::cgroups::CgroupError),
}

impl RuntimeError {
    /// The exit status `run` gives for this error, as Docker does (127 not found, 126 not executable).
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Spawn(e) => e.exit_code(),
            _ => 125,
        }
    }
}

/// What a runtime needs to start a container's main process.
pub struct Launch<'a> {
    pub record: &'a ContainerRecord,
    /// The container's folder (upper, work and rootfs live there).
    pub dir: PathBuf,
    /// Unpacked image layers, bottom first.
    pub layers: Vec<PathBuf>,
    pub stdio: berth_agent::Stdio,
}

/// A further process in a running container.
pub struct ExecLaunch<'a> {
    pub record: &'a ContainerRecord,
    pub dir: PathBuf,
    pub layers: Vec<PathBuf>,
    /// Host pid of the container's PID 1.
    pub container_pid: Pid,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub stdio: berth_agent::Stdio,
}

/// One way of isolating containers.
pub trait Runtime {
    /// Starts the main process; returns a child of this process to wait for.
    fn start(&self, launch: Launch<'_>) -> Result<Pid, RuntimeError>;
    /// Starts another process inside the running container; returns a child to wait for.
    fn exec(&self, launch: ExecLaunch<'_>) -> Result<Pid, RuntimeError>;
    /// After the main process is gone: whether the kernel's OOM killer struck the container.
    fn oom_killed(&self, record: &ContainerRecord) -> bool;
    /// After the main process is gone: releases what the container held on the host.
    fn release(&self, record: &ContainerRecord) -> Result<(), RuntimeError>;
}

/// The runtime a container was created with.
pub fn for_name(name: &str) -> Result<Box<dyn Runtime>, RuntimeError> {
    match name {
        "ns" => Ok(Box::new(NamespaceRuntime)),
        "vm" => Err(RuntimeError::VmUnavailable),
        other => Err(RuntimeError::Unknown(other.to_string())),
    }
}
