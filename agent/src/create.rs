//! `spawn`: create and start a container from an OCI spec.

use std::convert::Infallible;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{PosixRlimit, Spec};

use crate::cgroups::{Cgroup, CgroupError};
use crate::channel::{self, ChannelError, Event, FailureKind, Report};
use crate::child::{self, ChildError, StartHooks};
use crate::hooks::{self, HookError, SpawnHooks};
use crate::namespaces::{self, NamespaceError, Plan, UserNamespace};
use crate::rootfs::{self, no_mount_namespace, RootfsOptions};
use crate::stdio::Stdio;
use crate::syscall::{LinuxSyscall, Syscall};

/// The container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// An already prepared directory (spec.root.path is ignored in favour of this).
    Path(PathBuf),
    /// overlayfs mounted inside the container's own mount namespace (so nothing
    /// is left on the host). `lower` is top-most layer first (overlay lowerdir
    /// order); `upper`/`work` are per-container directories; `target` is an
    /// existing empty directory used as the mount point.
    Overlay {
        /// Read-only layers, top-most first.
        lower: Vec<PathBuf>,
        /// The writable layer.
        upper: PathBuf,
        /// overlayfs's work directory (same filesystem as `upper`).
        work: PathBuf,
        /// The mount point.
        target: PathBuf,
    },
}

/// Everything needed to start a container.
#[derive(Debug)]
pub struct ContainerSetup {
    /// The container id.
    pub id: String,
    /// The OCI runtime spec.
    pub spec: Spec,
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// The process's standard streams.
    pub stdio: Stdio,
    /// Run a mini init as PID 1 that forks the user process, forwards signals,
    /// reaps orphans and exits with the user process's status.
    pub init: bool,
    /// Enter the root with MS_MOVE onto / and chroot instead of pivot_root (runc's
    /// `--no-pivot`, for a root on a ramdisk, where pivot_root fails).
    pub no_pivot: bool,
}

/// A started process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// Host pid of the container's process, which is in the container's pid
    /// namespace (or of the exec process); a child of the caller, which waits for it.
    pub pid: Pid,
}

/// Why a container or exec process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command does not exist (Docker exits 127).
    #[error("{message}")]
    NotFound {
        /// Docker's wording, e.g. `exec: "x": executable file not found in $PATH`.
        message: String,
    },
    /// The command cannot be executed (Docker exits 126).
    #[error("{message}")]
    NotExecutable {
        /// Docker's wording, e.g. `exec: "/etc": permission denied`.
        message: String,
    },
    /// The child failed while setting up (Docker exits 125).
    #[error("container set-up failed: {message}")]
    Setup {
        /// The child's error chain.
        message: String,
    },
    /// The spec cannot be run.
    #[error("invalid container spec: {0}")]
    InvalidSpec(&'static str),
    /// `linux.seccomp` cannot be turned into a filter.
    #[error("invalid seccomp configuration")]
    Seccomp(#[source] crate::seccomp::SeccompError),
    /// The namespace list or id mappings cannot be run, or a user namespace
    /// could not be set up.
    #[error("invalid namespace configuration")]
    Namespaces(#[source] NamespaceError),
    /// process.rlimits could not be applied from outside a user namespace.
    #[error("failed to set the container's rlimits")]
    Rlimit(#[source] crate::syscall::SyscallError),
    /// A set-up pipe could not be created.
    #[error("failed to create a set-up pipe")]
    Pipe(#[source] Errno),
    /// clone(2) or fork(2) failed.
    #[error("failed to create the container process")]
    Clone(#[source] Errno),
    /// The caller could not become a child subreaper, which it must be while the
    /// container process forks into a pid namespace it joins or unshares.
    #[error("failed to become a child subreaper")]
    Subreaper(#[source] Errno),
    /// The cgroup could not be created or joined.
    #[error("failed to set up cgroup {path}")]
    Cgroup {
        /// The cgroups path.
        path: String,
        /// What went wrong (boxed: it is the largest cause and would make every
        /// spawn result that size).
        #[source]
        source: Box<CgroupError>,
    },
    /// A prestart or createRuntime hook failed (the container was removed).
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Talking to the child failed.
    #[error("failed to communicate with the container process")]
    Channel(#[source] ChannelError),
}

impl SpawnError {
    /// Docker's exit code: 127 command not found, 126 not executable, 125 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::NotFound { .. } => 127,
            SpawnError::NotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

impl From<Report> for SpawnError {
    fn from(report: Report) -> SpawnError {
        let message = report.message;
        match report.kind {
            FailureKind::NotFound => SpawnError::NotFound { message },
            FailureKind::NotExecutable => SpawnError::NotExecutable { message },
            FailureKind::Setup => SpawnError::Setup { message },
        }
    }
}

const STACK_SIZE: usize = 8 << 20;

/// Extra behaviour for OCI runtimes (see [`spawn_with`]).
#[derive(Debug, Default)]
pub struct SpawnOptions {
    /// runc's create/start split: a FIFO (typically opened `O_PATH`, close-on-exec)
    /// that the process, once fully set up and just before execve, reopens for
    /// writing through `/proc/self/fd` (which blocks until someone opens it for
    /// reading), writes `0` to, and closes. `spawn_with` then returns as soon as the
    /// process is blocked there, instead of after execve. The FIFO must be
    /// writable by the process's user (e.g. mode 0622), and the spec must mount /proc.
    pub exec_fifo: Option<OwnedFd>,
    /// Run the spec's set-up hooks at the runtime spec's moments: prestart and
    /// createRuntime here (in the caller's namespaces) once the container's
    /// namespaces and mounts exist, createContainer in the container's namespaces
    /// after its mounts and before pivot_root, startContainer in the container
    /// just before execve (with `exec_fifo`: once released, before `start` is told).
    pub hooks: Option<SpawnHooks>,
    /// runc's `--preserve-fds`: the caller's descriptors 3 to 3+N-1 stay open in the
    /// process across execve, at the same numbers (every other one above 2 is closed).
    pub preserve_fds: u32,
}

/// Create the container's namespaces, cgroup, filesystem and process, and start
/// it. Returns once the user command was exec'd (or reports why it was not).
/// The caller must be single-threaded.
pub fn spawn(setup: ContainerSetup) -> Result<Spawned, SpawnError> {
    spawn_with(setup, SpawnOptions::default())
}

/// [`spawn`] with [`SpawnOptions`]. With `exec_fifo`, returns once the process is
/// set up and blocked on the FIFO (set-up failures and a missing command are still
/// reported); failures after the FIFO opened are only seen in the exit status.
/// The caller must be single-threaded.
pub fn spawn_with(setup: ContainerSetup, mut options: SpawnOptions) -> Result<Spawned, SpawnError> {
    let hooks = options.hooks.take().filter(SpawnHooks::any);
    let process = setup.spec.process().as_ref();
    if process
        .and_then(|p| p.args().as_ref())
        .is_none_or(Vec::is_empty)
    {
        return Err(SpawnError::InvalidSpec("process.args is empty"));
    }
    let linux = setup.spec.linux().as_ref();
    let plan = namespaces::plan(linux).map_err(SpawnError::Namespaces)?;
    if !plan.has_mount {
        // The runtime's mount table is shared: nothing may be mounted in it.
        no_mount_namespace::check(&setup.spec, setup.no_pivot).map_err(SpawnError::InvalidSpec)?;
        let mounts = setup.spec.mounts().as_ref().map_or(0, Vec::len);
        if mounts > 0 {
            tracing::warn!(
                "container {} has no mount namespace: its {mounts} mounts are not made",
                setup.id
            );
        }
    }
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let resources = linux.and_then(|l| l.resources().clone());
    let seccomp = linux
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(SpawnError::Seccomp)?;

    let rlimits = process
        .and_then(|p| p.rlimits().clone())
        .unwrap_or_default();
    let sys = LinuxSyscall;
    namespaces::check_joined_user_namespace(&sys, &plan).map_err(SpawnError::Namespaces)?;
    let user_ns_ahead = match &plan.user {
        Some(UserNamespace::Ahead(maps)) => {
            Some(namespaces::create_user_namespace(&sys, maps).map_err(SpawnError::Namespaces)?)
        }
        _ => None,
    };

    // A process forked into the container's pid namespace outlives its parent,
    // the cloned one: it must be re-parented to us, to be our child as in the
    // simple case. Set before clone(2), which passes on that a subreaper is above.
    let _subreaper = if plan.forks_into_pid_namespace() {
        Some(Subreaper::become_one()?)
    } else {
        None
    };
    let (sync_r, sync_w) = channel::pipe().map_err(SpawnError::Pipe)?;
    let (report_r, report_w) = channel::pipe().map_err(SpawnError::Pipe)?;
    let mut stack = vec![0u8; STACK_SIZE];
    let mut setup = Some(setup);
    let callback = Box::new(|| {
        let Some(setup) = setup.take() else {
            return 125;
        };
        let fifo = options.exec_fifo.as_ref().map(AsFd::as_fd);
        let channels = Channels {
            sync: sync_r.as_fd(),
            report: report_w.as_fd(),
            exec_fifo: fifo,
            user_ns_ahead: user_ns_ahead.as_ref().map(AsFd::as_fd),
        };
        let extras = Extras {
            hooks: hooks.as_ref(),
            seccomp: seccomp.as_ref(),
            preserve_fds: options.preserve_fds,
        };
        match container_main(setup, &plan, channels, extras) {
            Ok(never) => match never {},
            Err(e) => child::fail(report_w.as_fd(), &e),
        }
    });
    // SAFETY: the caller is single-threaded, so the child's copy of memory is
    // consistent; the child runs on `stack` (8 MiB, ample for set-up) and leaves
    // through execve or _exit, never returning into the parent's frames.
    let pid =
        unsafe { nix::sched::clone(callback, &mut stack, plan.clone_flags, Some(libc::SIGCHLD)) }
            .map_err(SpawnError::Clone)?;
    let mut started = Started {
        cloned: pid,
        container: None,
    };
    // The callback (with the parent's copies of the stdio fds and of the user
    // namespace made ahead) was dropped by clone.
    drop(report_w);
    drop(sync_r);

    let cgroup = match cgroups_path {
        Some(path) => match join_cgroup(&path, resources.as_ref(), pid) {
            Ok(cgroup) => Some(cgroup),
            Err(source) => {
                started.abort();
                return Err(SpawnError::Cgroup {
                    path,
                    source: Box::new(source),
                });
            }
        },
        None => None,
    };
    let released = prepare_user_namespace(&sys, &plan, pid, &rlimits)
        .and_then(|()| follow_child(&mut started, sync_w, report_r, hooks.as_ref()));
    let failure = match released {
        Ok(()) => return Ok(Spawned { pid: started.pid() }),
        Err(e) => e,
    };
    started.abort();
    if let Some(cgroup) = cgroup {
        if let Err(e) = cgroup.destroy() {
            tracing::warn!("failed to remove the cgroup of a failed container: {e}");
        }
    }
    Err(failure)
}

/// What the parent does for a container with a user namespace while the child
/// waits to be released (in its cgroup already): write the maps of a namespace
/// clone(2) made, and apply process.rlimits from outside, since inside the
/// namespace no limit can be raised (as runc does).
fn prepare_user_namespace(
    sys: &dyn Syscall,
    plan: &Plan,
    pid: Pid,
    rlimits: &[PosixRlimit],
) -> Result<(), SpawnError> {
    if plan.user.is_none() {
        return Ok(());
    }
    if let Some(UserNamespace::Cloned(maps)) = &plan.user {
        maps.write(sys, pid)
            .map_err(|e| SpawnError::Namespaces(NamespaceError::from(e)))?;
    }
    for rlimit in rlimits {
        let resource = crate::process::rlimit_resource(rlimit.typ());
        sys.set_rlimit_of(pid, resource, rlimit.soft(), rlimit.hard())
            .map_err(SpawnError::Rlimit)?;
    }
    Ok(())
}

/// The processes of one spawn: the one clone(2) made, and the container's
/// process when the first forked into the container's pid namespace and exited.
#[derive(Debug, Clone, Copy)]
struct Started {
    cloned: Pid,
    /// Set once `cloned` reported it and was reaped; then our child (we are a
    /// subreaper meanwhile).
    container: Option<Pid>,
}

impl Started {
    /// The container's process.
    fn pid(&self) -> Pid {
        self.container.unwrap_or(self.cloned)
    }

    /// Kill (if still there) and reap whichever process is left.
    fn abort(&self) {
        abort_child(self.pid());
    }

    /// The cloned process forked `container` into the pid namespace: it exits
    /// now; once it is reaped, `container` is our child.
    fn handed_over(&mut self, container: Pid) -> Result<(), SpawnError> {
        if self.container.is_some() {
            return Err(SpawnError::Setup {
                message: "the container process reported its pid twice".into(),
            });
        }
        while let Err(Errno::EINTR) = waitpid(self.cloned, None) {}
        self.container = Some(container);
        Ok(())
    }
}

/// The caller as a child subreaper, as it was put back on drop.
struct Subreaper {
    was: bool,
}

impl Subreaper {
    fn become_one() -> Result<Subreaper, SpawnError> {
        let was = nix::sys::prctl::get_child_subreaper().map_err(SpawnError::Subreaper)?;
        if !was {
            nix::sys::prctl::set_child_subreaper(true).map_err(SpawnError::Subreaper)?;
        }
        Ok(Subreaper { was })
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        // Processes already re-parented to us stay our children.
        if !self.was {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
    }
}

/// Release the child and follow its set-up to the end (exec, the FIFO, or a
/// failure), taking over the process it forks into the container's pid
/// namespace, and running the prestart and createRuntime hooks when it asks.
fn follow_child(
    started: &mut Started,
    sync_w: OwnedFd,
    report_r: OwnedFd,
    hooks: Option<&SpawnHooks>,
) -> Result<(), SpawnError> {
    let mut report = std::fs::File::from(report_r);
    channel::send_go_kept(sync_w.as_fd()).map_err(SpawnError::Channel)?;
    loop {
        match channel::read_event(&mut report).map_err(SpawnError::Channel)? {
            Event::Done(None) => return Ok(()),
            Event::Done(Some(report)) => return Err(SpawnError::from(report)),
            Event::Pid(pid) => {
                started.handed_over(Pid::from_raw(pid))?;
                channel::send_go_kept(sync_w.as_fd()).map_err(SpawnError::Channel)?;
            }
            Event::Hooks => {
                let Some(hooks) = hooks else {
                    return Err(SpawnError::Setup {
                        message: "unexpected hook request".into(),
                    });
                };
                let mut state = hooks.state.clone();
                state["pid"] = started.pid().as_raw().into();
                let state = serde_json::to_vec(&state).unwrap_or_default();
                hooks::run_all("Prestart", hooks::list(hooks.hooks.prestart()), &state)?;
                hooks::run_all(
                    "CreateRuntime",
                    hooks::list(hooks.hooks.create_runtime()),
                    &state,
                )?;
                channel::send_continue(sync_w.as_fd(), &state).map_err(SpawnError::Channel)?;
            }
        }
    }
}

/// The child's ends of the set-up pipes, and descriptors it inherits for set-up.
struct Channels<'a> {
    sync: BorrowedFd<'a>,
    report: BorrowedFd<'a>,
    exec_fifo: Option<BorrowedFd<'a>>,
    /// The user namespace of [`UserNamespace::Ahead`].
    user_ns_ahead: Option<BorrowedFd<'a>>,
}

/// What the child does besides the spec: hooks, the compiled seccomp filter,
/// descriptors kept across execve.
#[derive(Clone, Copy)]
struct Extras<'a> {
    hooks: Option<&'a SpawnHooks>,
    seccomp: Option<&'a crate::seccomp::Program>,
    preserve_fds: u32,
}

fn join_cgroup(
    path: &str,
    resources: Option<&oci_spec::runtime::LinuxResources>,
    pid: Pid,
) -> Result<Cgroup, CgroupError> {
    let cgroup = Cgroup::open(path)?;
    let joined = cgroup
        .create(resources)
        .and_then(|()| cgroup.add_process(pid));
    if let Err(e) = joined {
        let _ = cgroup.destroy();
        return Err(e);
    }
    Ok(cgroup)
}

/// Kill (if still there) and reap a child that failed to start.
fn abort_child(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// The container's process: wait for the parent, enter the namespaces (forking
/// into a joined or unshared pid namespace), then build the container and exec.
fn container_main(
    setup: ContainerSetup,
    plan: &Plan,
    channels: Channels<'_>,
    extras: Extras<'_>,
) -> Result<Infallible, ChildError> {
    let Channels {
        sync,
        report,
        exec_fifo,
        user_ns_ahead,
    } = channels;
    let Extras {
        hooks,
        seccomp,
        preserve_fds,
    } = extras;
    let sys = LinuxSyscall;
    channel::wait_go(sync)?;
    namespaces::enter(&sys, plan, user_ns_ahead)?;
    if plan.forks_into_pid_namespace() {
        child::fork_into_pid_namespace(report)?;
        // The runtime knows this process now, and says when to go on.
        channel::wait_go(sync)?;
    }
    if plan.new_cgroup {
        namespaces::unshare_cgroup()?;
    }
    // Device nodes and mount points get exactly the modes asked for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let options = RootfsOptions {
        user_namespace: plan.user.is_some(),
        bind_sysfs: !plan.may_mount_sysfs(),
        no_pivot: setup.no_pivot,
    };
    let mut proc_dir = None;
    let state = if plan.has_mount {
        let root = rootfs::prepare(&sys, &setup.spec, &setup.rootfs, &options)?;
        let state = run_create_hooks(hooks, report, sync)?;
        rootfs::finish(&sys, &setup.spec, &root, &options)?;
        state
    } else {
        if exec_fifo.is_some() {
            // No /proc will be mounted in the chroot to reopen the FIFO through.
            proc_dir = Some(child::open_proc()?);
        }
        let state = run_create_hooks(hooks, report, sync)?;
        no_mount_namespace::enter(&sys, &setup.spec, &setup.rootfs)?;
        state
    };
    let start_hooks = match (hooks, &state) {
        (Some(hooks), Some(state)) => Some(StartHooks {
            hooks: hooks::list(hooks.hooks.start_container()),
            state,
        }),
        _ => None,
    };
    if let (true, Some(hostname)) = (plan.own_uts, setup.spec.hostname()) {
        sys.sethostname(hostname).map_err(ChildError::Hostname)?;
    }
    if plan.own_net {
        sys.loopback_up().map_err(ChildError::Loopback)?;
    }
    if setup.init {
        let mut fds = setup.stdio.raw_fds();
        fds.push(report.as_raw_fd());
        child::fork_supervised(&fds)?;
    }
    let Some(process) = setup.spec.process() else {
        // Checked by `spawn` before the clone.
        return Err(ChildError::Process(crate::process::ProcessError::NoArgs));
    };
    let target = child::Target {
        process,
        stdio: &setup.stdio,
        seccomp,
    };
    match exec_fifo {
        None => child::run_process_keeping(&sys, target, start_hooks, preserve_fds),
        Some(fifo) => child::run_process_after_fifo(
            &sys,
            target,
            child::Fifo {
                report,
                fifo,
                proc: proc_dir.as_ref().map(AsFd::as_fd),
            },
            start_hooks,
            preserve_fds,
        ),
    }
}

/// Namespaces and mounts exist, the root is not entered yet: the parent runs
/// prestart/createRuntime, then createContainer runs here (host paths resolve).
/// Returns the state JSON the hooks read.
fn run_create_hooks(
    hooks: Option<&SpawnHooks>,
    report: BorrowedFd<'_>,
    sync: BorrowedFd<'_>,
) -> Result<Option<Vec<u8>>, ChildError> {
    let Some(hooks) = hooks else {
        return Ok(None);
    };
    let state = channel::request_hooks(report, sync)?;
    hooks::run_all(
        "CreateContainer",
        hooks::list(hooks.hooks.create_container()),
        &state,
    )?;
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
        PosixRlimitBuilder, PosixRlimitType,
    };

    use super::*;
    use crate::syscall::test::{Call, RecordingSyscall};

    fn plan_with_user(path: Option<&str>) -> Plan {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100000u32)
            .size(65536u32)
            .build()
            .expect("mapping");
        let mut user = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
        if let Some(path) = path {
            user = user.path(path);
        }
        let mount = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()
            .expect("mount");
        let mut linux =
            LinuxBuilder::default().namespaces(vec![user.build().expect("user"), mount]);
        if path.is_none() {
            linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
        }
        namespaces::plan(Some(&linux.build().expect("linux"))).expect("plan")
    }

    fn nofile() -> PosixRlimit {
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(1024u64)
            .hard(4096u64)
            .build()
            .expect("rlimit")
    }

    #[test]
    fn the_parent_writes_the_maps_then_the_rlimits() {
        let sys = RecordingSyscall::default();
        let pid = Pid::from_raw(42);
        prepare_user_namespace(&sys, &plan_with_user(None), pid, &[nofile()]).expect("prepare");
        assert_eq!(
            sys.calls(),
            [
                Call::WriteFile("/proc/42/uid_map".into(), "0 100000 65536\n".into()),
                Call::WriteFile("/proc/42/gid_map".into(), "0 100000 65536\n".into()),
                Call::SetRlimitOf(42, nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 4096),
            ]
        );
    }

    #[test]
    fn a_joined_user_namespace_gets_only_the_rlimits_and_none_gets_nothing() {
        let sys = RecordingSyscall::default();
        let pid = Pid::from_raw(42);
        let joined = plan_with_user(Some("/proc/7/ns/user"));
        prepare_user_namespace(&sys, &joined, pid, &[nofile()]).expect("prepare");
        assert_eq!(
            sys.calls(),
            [Call::SetRlimitOf(
                42,
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                1024,
                4096
            )]
        );
        let sys = RecordingSyscall::default();
        let plain = namespaces::plan(None).expect("plan");
        prepare_user_namespace(&sys, &plain, pid, &[nofile()]).expect("prepare");
        assert!(
            sys.calls().is_empty(),
            "rlimits are set by the process itself"
        );
    }
}
