//! `create`: set the container up and leave its process blocked on `exec.fifo`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use berth_agent::hooks::SpawnHooks;
use berth_agent::{spawn_with, ContainerSetup, Rootfs, SpawnError, SpawnOptions, Stdio};
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;

use super::cli::{CreateArgs, Global};
use super::container::{self, Record, RecordError, Status, EXEC_FIFO};
use super::hooks::{self, HookError, Point};
use super::vm::VmModeError;

/// A bundle directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {} does not exist", path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {}: config.json not found", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {}", path.display())]
    InvalidConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {}: root is missing", path.display())]
    NoRoot { path: PathBuf },
    #[error("invalid {}: ociVersion \"{version}\" is not a 1.x SemVer version", path.display())]
    OciVersion { path: PathBuf, version: String },
    #[error("rootfs {} does not exist or is not a directory", path.display())]
    NoRootfs { path: PathBuf },
}

/// A pid file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write pid file {}", path.display())]
pub struct PidFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A container could not be created (whatever was set up is undone).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("--preserve-fds {count}: descriptor {fd} is not open")]
    PreservedFdClosed { count: u32, fd: u32 },
    #[error("--preserve-fds is not supported in vm mode")]
    PreserveFdsVm,
    #[error("process.terminal requires --console-socket")]
    NoConsoleSocket,
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container with id {0:?} already exists")]
    Exists(String),
    #[error("cannot encode the spec")]
    EncodeSpec(#[source] serde_json::Error),
    #[error("cannot save the spec")]
    SaveSpec(#[source] std::io::Error),
    #[error(transparent)]
    Vm(#[from] VmModeError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    #[error("cannot create the exec FIFO")]
    MakeFifo(#[source] nix::errno::Errno),
    #[error("cannot make the exec FIFO writable")]
    FifoMode(#[source] std::io::Error),
    #[error("cannot open the exec FIFO")]
    OpenFifo(#[source] nix::errno::Errno),
    #[error("cannot connect to console socket {}", path.display())]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the container")]
    Spawn(#[source] SpawnError),
    #[error("the container process exited during create")]
    ExitedEarly,
}

/// The annotation that asks for a microVM.
pub const RUNTIME_ANNOTATION: &str = "io.berth.runtime";

/// A bundle read and checked: its absolute path, spec and root filesystem.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// config.json.
    pub spec: Spec,
    /// The root filesystem directory.
    pub rootfs: PathBuf,
}

/// Read and validate `dir/config.json`.
pub fn load_bundle(dir: &Path) -> Result<Bundle, BundleError> {
    let dir = dir.canonicalize().map_err(|source| BundleError::Missing {
        path: dir.to_path_buf(),
        source,
    })?;
    let config = dir.join("config.json");
    let text = match std::fs::read_to_string(&config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::NoConfig { dir });
        }
        Err(source) => {
            return Err(BundleError::ReadConfig {
                path: config,
                source,
            })
        }
    };
    let spec: Spec = match serde_json::from_str(&text) {
        Ok(spec) => spec,
        Err(source) => {
            return Err(BundleError::InvalidConfig {
                path: config,
                source,
            })
        }
    };
    // runtime-spec: ociVersion MUST be SemVer; this runtime implements 1.x.
    let version = spec.version();
    if !semver::Version::parse(version).is_ok_and(|v| v.major == 1) {
        return Err(BundleError::OciVersion {
            path: config,
            version: version.clone(),
        });
    }
    let Some(root) = spec.root() else {
        return Err(BundleError::NoRoot { path: config });
    };
    let rootfs = dir.join(root.path());
    if !rootfs.is_dir() {
        return Err(BundleError::NoRootfs { path: rootfs });
    }
    Ok(Bundle { dir, spec, rootfs })
}

/// The cgroupfs path for the spec's cgroupsPath; systemd's `slice:prefix:name`
/// becomes `/slice/prefix-name.scope`; none gives `/berth-runtime/ID`.
pub fn cgroups_path(spec: &Spec, id: &str) -> String {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    match given {
        None => format!("/berth-runtime/{id}"),
        Some(p) if p.starts_with('/') => p,
        Some(p) => match p.split(':').collect::<Vec<_>>()[..] {
            [slice, prefix, name] => {
                let slice = if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                };
                format!("/{slice}/{prefix}-{name}.scope")
            }
            _ => format!("/{p}"),
        },
    }
}

/// `berth-runtime create`.
pub fn create(global: &Global, args: &CreateArgs) -> Result<(), CreateError> {
    create_container(global, args).map(|_| ())
}

/// Create the container and return its record (used by `run` too).
pub fn create_container(global: &Global, args: &CreateArgs) -> Result<Record, CreateError> {
    container::validate_id(&args.id)?;
    let bundle = load_bundle(&args.bundle)?;
    check_preserved_fds(args.preserve_fds)?;
    // What a VM cannot run is refused before anything is made.
    if super::vm::wanted(global, &bundle.spec) {
        super::vm::check_spec(global, &bundle.spec, &bundle.dir).map_err(VmModeError::from)?;
    }
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        return Err(CreateError::NoConsoleSocket);
    }
    std::fs::create_dir_all(&global.root).map_err(|source| CreateError::CreateDir {
        path: global.root.clone(),
        source,
    })?;
    let dir = container::dir(global, &args.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CreateError::Exists(args.id.clone()))
        }
        Err(source) => return Err(CreateError::CreateDir { path: dir, source }),
    }
    let mut cleanup = Cleanup {
        dir: Some(dir.clone()),
        pid: None,
        cgroup: None,
    };
    let record = create_in(global, args, bundle, terminal, &dir, &mut cleanup)?;
    cleanup.disarm();
    Ok(record)
}

fn create_in(
    global: &Global,
    args: &CreateArgs,
    bundle: Bundle,
    terminal: bool,
    dir: &Path,
    cleanup: &mut Cleanup,
) -> Result<Record, CreateError> {
    let mut spec = bundle.spec;
    let cgroups_path = cgroups_path(&spec, &args.id);
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(&cgroups_path)));
    }
    let json = serde_json::to_vec(&spec).map_err(CreateError::EncodeSpec)?;
    std::fs::write(dir.join("config.json"), json).map_err(CreateError::SaveSpec)?;

    let mut record = Record {
        oci_version: spec.version().clone(),
        id: args.id.clone(),
        pid: 0,
        start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroups_path: cgroups_path.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        vm: None,
    };
    if super::vm::wanted(global, &spec) {
        if args.preserve_fds > 0 {
            return Err(CreateError::PreserveFdsVm);
        }
        super::vm::create(
            global,
            args,
            &bundle.rootfs,
            &spec,
            terminal,
            dir,
            &mut record,
        )?;
        record.save(global)?;
        // The pid file names the relay, not the VMM: it exits with the container's
        // exit code when the container's process ends, which is what a subreaper
        // waiting on the pid (containerd's runc shim, conmon) needs to see.
        if let Some(pid_file) = &args.pid_file {
            let pid = record.vm.as_ref().map_or(record.pid, |vm| vm.relay_pid);
            write_pid_file(pid_file, pid)?;
        }
        // In vm mode prestart and createRuntime run on the host once the container
        // was created; createContainer and startContainer run in the guest at start.
        let state = record.state_json(Status::Created);
        for point in [Point::Prestart, Point::CreateRuntime] {
            if let Err(e) = hooks::run(&spec, point, &state) {
                super::vm::delete(global, &record);
                return Err(e.into());
            }
        }
        return Ok(record);
    }

    let fifo_path = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(CreateError::MakeFifo)?;
    // Writable by the container's user whatever the umask.
    std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))
        .map_err(CreateError::FifoMode)?;
    let fifo: OwnedFd = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(CreateError::OpenFifo)?;

    let stdio = match (&args.console_socket, terminal) {
        (Some(path), true) => {
            let socket =
                UnixStream::connect(path).map_err(|source| CreateError::ConsoleSocket {
                    path: path.clone(),
                    source,
                })?;
            Stdio::ConsoleSocket {
                socket: socket.into(),
            }
        }
        _ => Stdio::Inherit,
    };
    // prestart, createRuntime, createContainer and startContainer run inside
    // spawn_with, at their moments; the agent fills in the pid.
    let hooks = spec.hooks().clone().map(|hooks| SpawnHooks {
        hooks,
        state: record.state_json(Status::Created),
    });
    let setup = ContainerSetup {
        id: args.id.clone(),
        spec: with_process_to_hold(&spec),
        rootfs: Rootfs::Path(bundle.rootfs.clone()),
        stdio,
        init: false,
        no_pivot: args.no_pivot,
    };
    cleanup.cgroup = Some(cgroups_path.clone());
    let spawned = spawn_with(
        setup,
        SpawnOptions {
            exec_fifo: Some(fifo),
            hooks,
            preserve_fds: args.preserve_fds,
        },
    )
    .map_err(CreateError::Spawn)?;
    let pid = spawned.pid.as_raw();
    cleanup.pid = Some(pid);
    let start_time = container::proc_stat(pid)
        .map(|(_, start)| start)
        .ok_or(CreateError::ExitedEarly)?;
    record.pid = pid;
    record.start_time = start_time;
    record.save(global)?;
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file, pid)?;
    }
    Ok(record)
}

/// The spec to set the container up with. The runtime spec makes `process`
/// optional until `start` (which then refuses); without one, the container is
/// still set up and its init held before execve, as with any other, but with a
/// stand-in process: root in `/`, running the init's own image, which exists
/// wherever /proc is mounted (holding at the exec FIFO needs /proc anyway). The
/// stand-in is never executed: `start` refuses a spec without a process.
pub fn with_process_to_hold(spec: &Spec) -> Spec {
    let mut spec = spec.clone();
    if spec.process().is_none() {
        let mut process = oci_spec::runtime::Process::default();
        process.set_args(Some(vec!["/proc/self/exe".to_owned()]));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
    }
    spec
}

/// Every descriptor `--preserve-fds` passes on (3 to 3+count-1) must be open.
fn check_preserved_fds(count: u32) -> Result<(), CreateError> {
    for fd in (3..).take(count as usize) {
        let raw = std::os::fd::RawFd::try_from(fd).unwrap_or(std::os::fd::RawFd::MAX);
        // SAFETY: F_GETFD only reads the flags of a descriptor number (EBADF if none).
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(CreateError::PreservedFdClosed { count, fd });
        }
    }
    Ok(())
}

/// Write a pid file atomically, as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), PidFileError> {
    let tmp = path.with_extension("berth-tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| PidFileError {
            path: path.to_path_buf(),
            source,
        })
}

/// Undoes a failed create: the process, the cgroup and the state directory.
struct Cleanup {
    dir: Option<PathBuf>,
    pid: Option<i32>,
    cgroup: Option<String>,
}

impl Cleanup {
    fn disarm(&mut self) {
        self.dir = None;
        self.pid = None;
        self.cgroup = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = container::signal(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(path) = &self.cgroup {
            if let Ok(cgroup) = berth_agent::cgroups::Cgroup::open(path) {
                let _ = cgroup.destroy();
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
