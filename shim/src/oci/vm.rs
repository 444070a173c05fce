//! vm mode: the bundle runs in a microVM (the `--runtime=vm` machinery) instead of
//! namespaces, chosen by the `io.berth.runtime=vm` annotation, `--runtime-mode vm`
//! or `BERTH_RUNTIME_MODE=vm`.
//!
//! `create` turns the rootfs directory into a read-only ext4 disk
//! (`ROOT/ID/layer-images/rootfs.ext4`, with a tmpfs upper in the guest), boots the
//! VM (the VMM and vsock daemon in their own sessions, recorded in `ROOT/ID/vm.json`,
//! the vsock socket in `ROOT/ID`), starts a detached relay (`berth-runtime vm-relay`,
//! its own session) that attaches the caller's fds 0/1/2 (or a pty sent to
//! `--console-socket`) to the guest's stdio connections, then sends CreateContainer:
//! as with runc, the guest sets the container up and holds its process just before
//! it executes the command. Once `ROOT/ID/vm-created` says so, the relay Waits for
//! the container; it writes `ROOT/ID/exit.json` when the container exits and exits
//! with the container's exit code. `start` sends StartContainer and marks
//! `ROOT/ID/vm-started`; `kill` sends Signal; `delete` sends Shutdown and stops the
//! VMM, the daemon and the relay.
//!
//! The VM is sized from `linux.resources` at create (see
//! [`crate::runtime::vm::sizing`]). The spec's createContainer and startContainer
//! hooks run in the guest, in the container's namespaces: createContainer during
//! create, before pivot_root (the container's root filesystem is then at
//! `/run/berth/ID/rootfs` in the guest), startContainer at start; the other hooks
//! run on the host. `exec` is proxied by a host process (see [`exec`](self::exec));
//! `pause`/`resume` freeze the container's cgroup in the guest (`ROOT/ID/vm-paused`
//! marks it for `state`); `ps`, `update` and `events` ask the guest agent.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_agent::protocol::{
    GuestRootfs, ProcessInfo, RequestBody, ResponseBody, StdioStream, Upper,
};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::cli::{CreateArgs, ExecArgs, Global, VmRelayArgs};
use super::container::{self, Record, Status};
use super::create::RUNTIME_ANNOTATION;
use crate::container::process_start_time;
use crate::runtime::vm::client::{self, Agent, ClientError};
use crate::runtime::vm::{self, hypervisor, Accel, VmError, VmInfo};

mod exec;
mod spec;

pub use self::spec::{check as check_spec, guest_spec, GuestSpecError};

/// A vm-mode container could not be created, reached or relayed.
#[derive(Debug, thiserror::Error)]
pub enum VmModeError {
    #[error(transparent)]
    Spec(#[from] GuestSpecError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error("cannot build the rootfs disk")]
    RootfsDisk(#[source] VmError),
    #[error("cannot boot the VM")]
    Boot(#[source] VmError),
    #[error("the VM did not come up")]
    NotUp(#[source] ClientError),
    #[error("cannot reach the guest agent")]
    Unreachable(#[source] ClientError),
    #[error("cannot set a timeout on the guest agent connection")]
    Timeout(#[source] std::io::Error),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the exit status")]
    EncodeExit(#[source] serde_json::Error),
    #[error("cannot start the stdio relay")]
    SpawnRelay(#[source] std::io::Error),
    #[error("cannot check on the stdio relay")]
    WatchRelay(#[source] std::io::Error),
    #[error("the stdio relay exited: {0}")]
    RelayExited(std::process::ExitStatus),
    #[error("the stdio relay did not attach")]
    RelayNotAttached,
    #[error("cannot connect to console socket {}", path.display())]
    ConsoleSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] exec::VmExecError),
    #[error("cannot duplicate fd {fd}")]
    Dup {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
}

fn write(path: PathBuf, contents: &[u8]) -> Result<(), VmModeError> {
    std::fs::write(&path, contents).map_err(|source| VmModeError::Write { path, source })
}

/// Written by `start` once StartContainer succeeded.
pub const STARTED: &str = "vm-started";
/// Written by the relay when the container exited.
pub const EXIT: &str = "exit.json";
/// Written by the relay once its stdio connections are open.
const READY: &str = "relay.ready";
/// Written by `create` once the guest created the container: the relay waits for
/// it before it Waits for the container.
const CREATED: &str = "vm-created";
/// Present while the container is paused (the guest's freezer is the truth;
/// this spares `state` a round trip to the agent).
pub const PAUSED: &str = "vm-paused";

/// The relay process, recorded in the container's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    /// The relay's pid.
    pub relay_pid: i32,
    /// Its start time.
    pub relay_start: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Exit {
    exit_code: i32,
}

/// Whether this bundle runs in a VM.
pub fn wanted(global: &Global, spec: &Spec) -> bool {
    let annotated = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(RUNTIME_ANNOTATION))
        .is_some_and(|v| v == "vm");
    annotated || global.runtime_mode.as_deref() == Some("vm")
}

fn is_dev_null(fd: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (
        std::fs::metadata(format!("/proc/self/fd/{fd}")),
        std::fs::metadata("/dev/null"),
    ) else {
        return true;
    };
    a.rdev() == b.rdev() && a.ino() == b.ino()
}

/// Boot the VM and create the container in it; fills `record.pid` (the VMM) and `record.vm`.
pub fn create(
    global: &Global,
    args: &CreateArgs,
    rootfs: &Path,
    spec: &Spec,
    terminal: bool,
    dir: &Path,
    record: &mut Record,
) -> Result<(), VmModeError> {
    let mut guard = Teardown {
        dir: Some(dir),
        relay: None,
    };
    let (kernel, initramfs) = vm::guest_images()?;
    let disks =
        vm::disks::layer_images(dir, &[rootfs.to_path_buf()]).map_err(VmModeError::RootfsDisk)?;
    std::fs::create_dir_all(&global.root).map_err(|source| VmModeError::Write {
        path: global.root.clone(),
        source,
    })?;
    let (name, accel) = vm::choose(&global.root, None, None)?;
    let accel = Accel::parse(&accel)?;
    let hv = hypervisor::by_name(&name)?;
    let size = vm::sizing::for_resources(
        spec.linux().as_ref().and_then(|l| l.resources().as_ref()),
        vm::sizing::HostLimits::of_this_machine(),
    );
    let launched = hv
        .launch(&hypervisor::VmConfig {
            dir,
            kernel: &kernel,
            initramfs: &initramfs,
            cmdline: vm::CMDLINE.to_string(),
            memory_mib: size.memory_mib,
            vcpus: size.vcpus,
            disks: &disks,
            scratch: None,
            accel,
        })
        .map_err(VmModeError::Boot)?;
    let mut vmm = launched.vmm;
    let vmm_pid = vmm.id() as i32;
    let info = VmInfo {
        hypervisor: name,
        accel: accel.as_str().to_string(),
        vmm_pid,
        vmm_start_time: process_start_time(vmm_pid),
        helpers: launched
            .helpers
            .iter()
            .map(|c| (c.id() as i32, process_start_time(c.id() as i32)))
            .collect(),
        memory_mib: size.memory_mib,
        vcpus: size.vcpus,
        disks: disks.clone(),
    };
    info.save(dir).map_err(|source| VmModeError::Write {
        path: dir.join("vm.json"),
        source,
    })?;
    // The VMM and the daemon outlive this process; delete stops them by pid.
    drop(launched.helpers);
    let mut control = Agent::wait_ready(dir, vm::boot_timeout(), || {
        let status = vmm.try_wait().ok().flatten()?;
        Some(match vm::last_line(&dir.join(hypervisor::VMM_LOG)) {
            Some(line) => format!("{status}: {line}"),
            None => status.to_string(),
        })
    })
    .map_err(VmModeError::NotUp)?;
    control
        .set_timeout(Some(Duration::from_secs(60)))
        .map_err(VmModeError::Timeout)?;
    let interactive = !terminal && !is_dev_null(0);
    // The guest sets the process up at CreateContainer: its stdio is attached first.
    let relay = spawn_relay(global, args, terminal, interactive, dir)?;
    guard.relay = Some(relay.clone());
    let body = control.call(RequestBody::CreateContainer {
        id: args.id.clone(),
        spec: guest_spec(spec),
        rootfs: GuestRootfs {
            layers: vec![vm::guest_disk(0)],
            upper: Upper::Tmpfs { size_bytes: None },
        },
        terminal,
        // With a terminal the pty is the process's stdin too (as with runc): the guest
        // pumps what the relay writes to it (as exec does).
        interactive: interactive || terminal,
        hook_state: Some(record.state_json(Status::Created)),
    })?;
    vm::expect(body, "Created", |b| matches!(b, ResponseBody::Created))?;
    write(dir.join(CREATED), b"")?;
    record.pid = vmm_pid;
    record.start_time = info.vmm_start_time.unwrap_or_default();
    record.vm = Some(relay);
    guard.dir = None;
    Ok(())
}

fn spawn_relay(
    global: &Global,
    args: &CreateArgs,
    terminal: bool,
    interactive: bool,
    dir: &Path,
) -> Result<VmRecord, VmModeError> {
    // /proc/self/exe, not current_exe(): the running binary even when the file was
    // replaced meanwhile (a package upgrade), whose old path then no longer exists.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("berth-runtime");
    cmd.arg("--root").arg(&global.root).arg("vm-relay");
    if let (true, Some(path)) = (terminal, &args.console_socket) {
        // The pty carries everything; the caller's fds are not held (a caller that
        // reads create's output to EOF, like containerd's runc shim, would wait forever).
        cmd.arg("--console-socket").arg(path);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }
    if interactive {
        cmd.arg("--interactive");
    }
    cmd.arg(&args.id);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(VmModeError::SpawnRelay)?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join(READY).exists() {
        if let Some(status) = child.try_wait().map_err(VmModeError::WatchRelay)? {
            return Err(VmModeError::RelayExited(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VmModeError::RelayNotAttached);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(VmRecord {
        relay_pid: pid,
        relay_start: container::proc_stat(pid).map(|(_, s)| s).unwrap_or(0),
    })
}

/// Undoes a failed vm create (the state directory itself is the caller's).
struct Teardown<'a> {
    dir: Option<&'a Path>,
    relay: Option<VmRecord>,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir {
            stop_vm(dir, self.relay.as_ref());
        }
    }
}

fn stop_vm(dir: &Path, relay: Option<&VmRecord>) {
    if let Some(info) = VmInfo::load(dir) {
        vm::shut_down(dir, &info);
    }
    if let Some(relay) = relay {
        if container::alive(relay.relay_pid, relay.relay_start) {
            let _ = container::signal(Pid::from_raw(relay.relay_pid), Signal::SIGKILL);
        }
        vm::kill_and_reap(
            relay.relay_pid,
            Some(relay.relay_start),
            Duration::from_millis(500),
        );
    }
}

/// The status of a vm container.
pub fn status(global: &Global, record: &Record) -> Status {
    let dir = container::dir(global, &record.id);
    if !container::alive(record.pid, record.start_time) || dir.join(EXIT).exists() {
        return Status::Stopped;
    }
    if !dir.join(STARTED).exists() {
        return Status::Created;
    }
    if dir.join(PAUSED).exists() {
        return Status::Paused;
    }
    Status::Running
}

/// The exit code the relay recorded.
pub fn exit_code(global: &Global, record: &Record) -> Option<i32> {
    let bytes = std::fs::read(container::dir(global, &record.id).join(EXIT)).ok()?;
    serde_json::from_slice::<Exit>(&bytes)
        .ok()
        .map(|e| e.exit_code)
}

fn agent(global: &Global, record: &Record) -> Result<Agent, VmModeError> {
    let agent = Agent::connect(&container::dir(global, &record.id), Duration::from_secs(5))
        .map_err(VmModeError::Unreachable)?;
    agent
        .set_timeout(Some(Duration::from_secs(60)))
        .map_err(VmModeError::Timeout)?;
    Ok(agent)
}

/// `start` for a vm container.
pub fn start(global: &Global, record: &Record) -> Result<(), VmModeError> {
    let body = agent(global, record)?.call(RequestBody::StartContainer {
        id: record.id.clone(),
    })?;
    vm::expect(body, "Started", |b| {
        matches!(b, ResponseBody::Started { .. })
    })?;
    write(container::dir(global, &record.id).join(STARTED), b"")
}

/// `kill` for a vm container.
pub fn kill(global: &Global, record: &Record, signal: Signal) -> Result<(), VmModeError> {
    let body = agent(global, record)?.call(RequestBody::Signal {
        id: record.id.clone(),
        signal: signal as i32,
    })?;
    Ok(vm::expect(body, "Ok", |b| matches!(b, ResponseBody::Ok))?)
}

/// `pause` (`frozen`) or `resume` for a vm container: the guest freezes or thaws
/// the container's cgroup.
pub fn set_frozen(global: &Global, record: &Record, frozen: bool) -> Result<(), VmModeError> {
    let body = if frozen {
        RequestBody::Pause {
            id: record.id.clone(),
        }
    } else {
        RequestBody::Resume {
            id: record.id.clone(),
        }
    };
    agent(global, record)?.call_ok(body)?;
    let marker = container::dir(global, &record.id).join(PAUSED);
    if frozen {
        write(marker, b"")
    } else {
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(VmModeError::Write {
                path: marker,
                source,
            }),
        }
    }
}

/// The container's processes, as the guest sees them.
pub fn processes(global: &Global, record: &Record) -> Result<Vec<ProcessInfo>, VmModeError> {
    let body = agent(global, record)?.call(RequestBody::ListProcesses {
        id: record.id.clone(),
    })?;
    match body {
        ResponseBody::Processes { processes } => Ok(processes),
        other => Err(ClientError::Unexpected(format!("{other:?}")).into()),
    }
}

/// `update` for a vm container: the guest applies the limits to the container's cgroup.
pub fn update(
    global: &Global,
    record: &Record,
    resources: oci_spec::runtime::LinuxResources,
) -> Result<(), VmModeError> {
    Ok(
        agent(global, record)?.call_ok(RequestBody::UpdateResources {
            id: record.id.clone(),
            resources,
        })?,
    )
}

/// Resource usage of a vm container, from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// The memory limit; `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
    /// Processes.
    pub pids: u64,
    /// The process limit; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
}

/// `events --stats` for a vm container.
pub fn usage(global: &Global, record: &Record) -> Result<Usage, VmModeError> {
    let body = agent(global, record)?.call(RequestBody::Stats {
        id: record.id.clone(),
    })?;
    match body {
        ResponseBody::Stats {
            memory_bytes,
            pids,
            cpu_usage_ns,
            memory_limit_bytes,
            pids_limit,
        } => Ok(Usage {
            memory_bytes,
            memory_limit_bytes,
            pids,
            pids_limit,
            cpu_usage_ns,
        }),
        other => Err(ClientError::Unexpected(format!("{other:?}")).into()),
    }
}

/// `kill --all` for a vm container: every process in its cgroup in the guest.
pub fn kill_all(global: &Global, record: &Record, signal: Signal) -> Result<(), VmModeError> {
    Ok(agent(global, record)?.call_ok(RequestBody::SignalAll {
        id: record.id.clone(),
        signal: signal as i32,
    })?)
}

/// `delete` for a vm container: Shutdown, then the VMM, the daemon and the relay go.
pub fn delete(global: &Global, record: &Record) {
    stop_vm(&container::dir(global, &record.id), record.vm.as_ref());
}

/// Wait (polling) until the container stopped; its exit code.
pub fn wait(global: &Global, record: &Record) -> i32 {
    while status(global, record) != Status::Stopped {
        std::thread::sleep(Duration::from_millis(20));
    }
    exit_code(global, record).unwrap_or(255)
}

/// `berth-runtime vm-relay`: the detached process that pumps stdio for the
/// container's lifetime (or an exec process's, with `--exec`) and records its
/// exit; it exits with the process's exit code.
pub fn relay(global: &Global, args: VmRelayArgs) -> Result<i32, VmModeError> {
    if let Some(exec_id) = &args.exec {
        return Ok(exec::relay(global, &args, exec_id)?);
    }
    let VmRelayArgs {
        id,
        console_socket: console,
        interactive,
        ..
    } = args;
    let id = id.as_str();
    let dir = container::dir(global, id);
    let mut outputs = Vec::new();
    match console {
        Some(path) => {
            let socket = match UnixStream::connect(&path) {
                Ok(socket) => socket,
                Err(source) => return Err(VmModeError::ConsoleSocket { path, source }),
            };
            let attached = vm::stdio::attach(
                &dir,
                id,
                berth_agent::Stdio::ConsoleSocket {
                    socket: socket.into(),
                },
                true,
            )?;
            attached
                .started
                .store(true, std::sync::atomic::Ordering::Release);
        }
        None => outputs = pump_fds(&dir, id, interactive)?,
    }
    let mut waiter = Agent::connect(&dir, Duration::from_secs(5))?;
    waiter.set_timeout(None).map_err(VmModeError::Timeout)?;
    write(dir.join(READY), b"")?;
    // Until the guest created the container there is nothing to wait for; a
    // failed create kills this relay.
    while !dir.join(CREATED).exists() {
        if !dir.exists() {
            return Ok(255);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let exit_code = match waiter.call(RequestBody::Wait { id: id.to_string() }) {
        Ok(ResponseBody::Exited { exit_code, .. }) => exit_code,
        _ => 255,
    };
    for thread in outputs {
        let _ = thread.join();
    }
    let tmp = dir.join("exit.json.tmp");
    let json = serde_json::to_vec(&Exit { exit_code }).map_err(VmModeError::EncodeExit)?;
    write(tmp.clone(), &json)?;
    let path = dir.join(EXIT);
    std::fs::rename(tmp, &path).map_err(|source| VmModeError::Write { path, source })?;
    Ok(exit_code)
}

/// Connect process `id`'s stdio streams to fds 0/1/2; the output threads end when
/// the guest closes the streams.
fn pump_fds(
    dir: &Path,
    id: &str,
    interactive: bool,
) -> Result<Vec<std::thread::JoinHandle<()>>, VmModeError> {
    let mut outputs = Vec::new();
    for (stream, fd) in [(StdioStream::Stdout, 1), (StdioStream::Stderr, 2)] {
        let mut conn = client::attach(dir, id, stream)?;
        let mut out = File::from(dup(fd)?);
        outputs.push(std::thread::spawn(move || {
            let _ = std::io::copy(&mut conn, &mut out);
        }));
    }
    if interactive {
        let mut conn = client::attach(dir, id, StdioStream::Stdin)?;
        let mut input = File::from(dup(0)?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut input, &mut conn);
            let _ = conn.shutdown(std::net::Shutdown::Write);
        });
    }
    Ok(outputs)
}

/// `exec` in a vm container (see [`exec`](self::exec) for the design); the exit code.
pub fn exec(
    global: &Global,
    record: &Record,
    process: oci_spec::runtime::Process,
    args: &ExecArgs,
) -> Result<i32, VmModeError> {
    Ok(exec::exec(global, record, process, args)?)
}

fn dup(fd: i32) -> Result<OwnedFd, VmModeError> {
    // SAFETY: fds 0/1/2 are open for the process's lifetime.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map_err(|source| VmModeError::Dup {
            fd: borrowed.as_raw_fd(),
            source,
        })
}
