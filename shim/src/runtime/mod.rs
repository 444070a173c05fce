//! The runtimes that isolate a container, behind one trait: `ns` (Linux namespaces on the host)
//! and `vm` (a microVM per container, running the same container code in the guest).

pub mod default;
mod ns;
pub mod spec;
pub mod user;
pub mod vm;

use std::path::PathBuf;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::container::ContainerRecord;

pub use ns::{ChildProcess, NamespaceRuntime};
pub use vm::VmRuntime;

/// A container runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown runtime \"{0}\": berth has \"ns\" (namespaces) and \"vm\" (microVM)")]
    Unknown(String),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Spawn(#[from] berth_agent::SpawnError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("could not release the container's cgroup")]
    Cgroup(#[source] berth_agent::cgroups::CgroupError),
    #[error("could not send {signal} to the container")]
    Signal {
        signal: Signal,
        #[source]
        source: nix::Error,
    },
}

impl RuntimeError {
    /// The exit status `run` gives for this error, as Docker does (127 not found, 126 not executable).
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Spawn(e) => e.exit_code(),
            RuntimeError::Vm(e) => e.exit_code(),
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

/// A process started in a container, as the berth process that started it sees it.
pub trait ContainerProcess {
    /// The host pid berth records and watches: the container's PID 1 (ns) or its VMM (vm).
    fn pid(&self) -> Pid;
    /// The exit code once the process has exited (128+N for signal N); never blocks.
    fn try_wait(&mut self) -> std::io::Result<Option<i32>>;
    /// Delivers a signal to the process (in a VM: through the guest agent).
    fn signal(&mut self, signal: Signal) -> std::io::Result<()>;
}

/// One way of isolating containers.
pub trait Runtime {
    /// Starts the main process.
    fn start(&self, launch: Launch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError>;
    /// Starts another process inside the running container.
    fn exec(&self, launch: ExecLaunch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError>;
    /// Sends a signal to a running container's main process from any berth command
    /// (`kill`, `stop`); `pid` is the one recorded at start.
    fn kill(&self, record: &ContainerRecord, pid: Pid, signal: Signal) -> Result<(), RuntimeError>;
    /// After the main process is gone: whether the kernel's OOM killer struck the container.
    fn oom_killed(&self, record: &ContainerRecord) -> bool;
    /// After the main process is gone: releases what the container held on the host.
    fn release(&self, record: &ContainerRecord) -> Result<(), RuntimeError>;
}

/// The runtime a container was created with.
pub fn for_name(name: &str) -> Result<Box<dyn Runtime>, RuntimeError> {
    match name {
        "ns" => Ok(Box::new(NamespaceRuntime)),
        "vm" => Ok(Box::new(VmRuntime)),
        other => Err(RuntimeError::Unknown(other.to_string())),
    }
}
