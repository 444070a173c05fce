//! Code shared by the processes `spawn` and `spawn_exec` create.

use std::convert::Infallible;
use std::error::Error;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Process;

use crate::cgroups::CgroupError;
use crate::channel::{self, ChannelError, FailureKind, Report};
use crate::init::{self, InitError};
use crate::namespaces::NamespaceError;
use crate::process::{self, ProcessError};
use crate::rootfs::RootfsError;
use crate::seccomp::Program;
use crate::stdio::{Stdio, StdioError};
use crate::syscall::{Syscall, SyscallError};

/// Anything that stops a child before execve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error("failed to set the hostname")]
    Hostname(#[source] SyscallError),
    #[error("failed to bring up the loopback interface")]
    Loopback(#[source] SyscallError),
    #[error("failed to fork the user process")]
    Fork(#[source] Errno),
    #[error("failed to open the exec FIFO")]
    Fifo(#[source] Errno),
    #[error("failed to open /proc to reopen the exec FIFO from the chroot")]
    ProcDir(#[source] Errno),
    #[error("failed to enter the root of container process {0}")]
    EnterRoot(nix::unistd::Pid, #[source] Errno),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("failed to join the container's cgroup")]
    Cgroup(#[source] CgroupError),
}

impl ChildError {
    fn kind(&self) -> FailureKind {
        match self {
            ChildError::Process(e) if e.exit_code() == 127 => FailureKind::NotFound,
            ChildError::Process(e) if e.exit_code() == 126 => FailureKind::NotExecutable,
            _ => FailureKind::Setup,
        }
    }
}

/// The error and its sources as one line: "a: b: c".
pub(crate) fn chain(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Report `err` to the parent and exit.
pub(crate) fn fail(report_fd: BorrowedFd<'_>, err: &ChildError) -> ! {
    let kind = err.kind();
    // Not-found and not-executable messages are Docker's, verbatim.
    let message = match err {
        ChildError::Process(e) if kind != FailureKind::Setup => e.to_string(),
        _ => chain(err),
    };
    channel::send_report(report_fd, &Report { kind, message });
    init::exit(match kind {
        FailureKind::NotFound => 127,
        FailureKind::NotExecutable => 126,
        FailureKind::Setup => 125,
    })
}

/// Fork; the parent becomes a supervisor (forwards signals, reaps, exits with the
/// child's status) and never returns, the child returns `Ok`. The supervisor
/// closes `close_in_supervisor` (the report pipe and stdio) first; it never returns,
/// so their owners are never dropped twice.
pub(crate) fn fork_supervised(close_in_supervisor: &[RawFd]) -> Result<(), ChildError> {
    let old_mask = init::block_forwarded()?;
    // SAFETY: the process is single-threaded (a child of a single-threaded
    // caller), so the forked child's copy of memory is consistent.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            init::restore_mask(&old_mask);
            Ok(())
        }
        Ok(ForkResult::Parent { child }) => {
            for fd in close_in_supervisor {
                // SAFETY: closing a descriptor this process will never use again;
                // its owner is never dropped because `supervise` does not return.
                unsafe { libc::close(*fd) };
            }
            // The supervisor never execs, so close-on-exec does not protect the caller's
            // descriptors (a pty master, the other ends of stdio pipes): holding them would
            // keep the container's streams from ever seeing EOF or hang-up.
            // SAFETY: the supervisor only waits and forwards signals from here on and
            // uses no descriptor; `supervise` never returns, so no owner is dropped.
            unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
            // Nor may it hold the caller's standard streams: a caller reading our
            // stdout to its end (containerd's shim reading `berth-runtime exec -t`)
            // would wait for the supervisor instead of the command.
            stdio_to_dev_null();
            init::rename();
            init::supervise(child, &old_mask)
        }
        Err(e) => {
            init::restore_mask(&old_mask);
            Err(ChildError::Fork(e))
        }
    }
}

/// Point fds 0, 1 and 2 at /dev/null (left as they are if it cannot be opened).
fn stdio_to_dev_null() {
    let Ok(null) = nix::fcntl::open("/dev/null", OFlag::O_RDWR, Mode::empty()) else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto a standard descriptor of this process, which owns no
        // Rust object for it (the supervisor never touches stdio).
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    if null.as_raw_fd() < 3 {
        // It landed on a standard descriptor (one was closed): keep it open there.
        let _ = null.into_raw_fd();
    }
}

/// The process to become: its spec, streams and seccomp filter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub process: &'a Process,
    pub stdio: &'a Stdio,
    pub seccomp: Option<&'a Program>,
}

/// Install stdio, become the configured user, and execve.
pub(crate) fn run_process(
    sys: &dyn Syscall,
    target: Target<'_>,
    start_hooks: Option<StartHooks<'_>>,
) -> Result<Infallible, ChildError> {
    run_process_keeping(sys, target, start_hooks, 0)
}

/// [`run_process`], keeping descriptors 3 to 3+`preserve_fds`-1 open across execve.
pub(crate) fn run_process_keeping(
    sys: &dyn Syscall,
    target: Target<'_>,
    start_hooks: Option<StartHooks<'_>>,
    preserve_fds: u32,
) -> Result<Infallible, ChildError> {
    let Target {
        process,
        stdio,
        seccomp,
    } = target;
    stdio.install()?;
    process::prepare(sys, process, seccomp)?;
    if let Some(hooks) = start_hooks {
        hooks.run()?;
    }
    Ok(process::exec(process, seccomp, preserve_fds)?)
}

/// Fork so that set-up goes on in the pid namespace just joined or unshared
/// (setns(2) and unshare(2) of a pid namespace apply to children only), as runc's
/// nsexec does. The parent reports the child's pid (in its own pid namespace, the
/// runtime's) on `report` and exits, never returning; the child returns and must
/// wait to be released again before using `report`, so the messages stay in order.
/// The child is re-parented to the runtime, which made itself a child subreaper.
pub(crate) fn fork_into_pid_namespace(report: BorrowedFd<'_>) -> Result<(), ChildError> {
    // SAFETY: the process is single-threaded (a child of a single-threaded
    // caller), so the forked child's copy of memory is consistent.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => Ok(()),
        Ok(ForkResult::Parent { child }) => {
            if channel::send_pid(report, child.as_raw()).is_err() {
                // The runtime is gone or cannot know the process: end it.
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                init::exit(125);
            }
            init::exit(0)
        }
        Err(e) => Err(ChildError::Fork(e)),
    }
}

/// chroot into the root directory of process `pid` (/proc/PID/root), for a
/// process joining a container that has no mount namespace of its own.
pub(crate) fn enter_root_of(pid: nix::unistd::Pid) -> Result<(), ChildError> {
    let failed = |errno| ChildError::EnterRoot(pid, errno);
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed)?;
    nix::unistd::fchdir(&root).map_err(failed)?;
    nix::unistd::chroot(".").map_err(failed)?;
    nix::unistd::chdir("/").map_err(failed)
}

/// The report pipe and the exec FIFO of [`run_process_after_fifo`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fifo<'a> {
    pub report: BorrowedFd<'a>,
    pub fifo: BorrowedFd<'a>,
    /// The runtime's /proc, opened before a chroot that has none (no mount
    /// namespace); `None` reopens the FIFO through the container's /proc.
    pub proc: Option<BorrowedFd<'a>>,
}

/// The runtime's /proc as a directory to reopen the exec FIFO through
/// ([`Fifo::proc`]): open it before the chroot; it closes on execve.
pub(crate) fn open_proc() -> Result<std::os::fd::OwnedFd, ChildError> {
    nix::fcntl::open(
        "/proc",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ChildError::ProcDir)
}

/// Open the exec FIFO for writing through `/proc/self/fd` (blocks until the
/// runtime's `start` opens it for reading).
fn reopen_fifo(
    fifo: BorrowedFd<'_>,
    proc: Option<BorrowedFd<'_>>,
) -> nix::Result<std::os::fd::OwnedFd> {
    let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let path = format!("self/fd/{}", fifo.as_raw_fd());
    match proc {
        // "self" is looked up at each open, so it is this process, not the
        // one that opened /proc (which may be a supervisor now).
        Some(dir) => nix::fcntl::openat(dir, path.as_str(), flags, Mode::empty()),
        None => nix::fcntl::open(format!("/proc/{path}").as_str(), flags, Mode::empty()),
    }
}

/// startContainer hooks and the state they read, run just before execve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartHooks<'a> {
    pub hooks: &'a [oci_spec::runtime::Hook],
    pub state: &'a [u8],
}

impl StartHooks<'_> {
    fn run(self) -> Result<(), ChildError> {
        Ok(crate::hooks::run_all(
            "StartContainer",
            self.hooks,
            self.state,
        )?)
    }
}

/// Like [`run_process`], but once everything up to execve succeeded (the command
/// exists), tells the parent so (by replacing `report` with /dev/null, which the
/// parent reads as EOF), then blocks opening `fifo` for writing until the runtime's
/// `start` opens it for reading, writes `0`, and execs.
pub(crate) fn run_process_after_fifo(
    sys: &dyn Syscall,
    target: Target<'_>,
    Fifo { report, fifo, proc }: Fifo<'_>,
    start_hooks: Option<StartHooks<'_>>,
    preserve_fds: u32,
) -> Result<Infallible, ChildError> {
    let Target {
        process,
        stdio,
        seccomp,
    } = target;
    stdio.install()?;
    process::prepare(sys, process, seccomp)?;
    let args = process.args().as_deref().unwrap_or_default();
    let cmd = args.first().ok_or(ProcessError::NoArgs)?;
    let env = process.env().as_deref().unwrap_or_default();
    process::find_executable(cmd, process::path_var(env))?;
    // Release the parent: the report pipe's only write end becomes /dev/null (or closes).
    match nix::fcntl::open(
        "/dev/null",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        // SAFETY: dup3 atomically replaces the report descriptor, which stays open
        // (now on /dev/null) for its owner to close later.
        Ok(null) => unsafe {
            libc::dup3(null.as_raw_fd(), report.as_raw_fd(), libc::O_CLOEXEC);
        },
        // SAFETY: the report descriptor is never written again once the parent is released
        // except by `fail`, which tolerates a closed descriptor.
        Err(_) => unsafe {
            libc::close(report.as_raw_fd());
        },
    }
    let fd = loop {
        match reopen_fifo(fifo, proc) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(ChildError::Fifo)?,
        }
    };
    // startContainer hooks run before `start` is told the process was released, so
    // they finish before its poststart hooks; a failing one leaves the FIFO empty.
    if let Some(hooks) = start_hooks {
        hooks.run()?;
    }
    let _ = nix::unistd::write(&fd, b"0");
    drop(fd);
    Ok(process::exec(process, seccomp, preserve_fds)?)
}
