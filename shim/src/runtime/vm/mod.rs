//! `--runtime=vm`: each container runs in its own microVM. The image layers go in as read-only
//! ext4 disks, the guest agent (in the initramfs) stacks them with overlayfs under a tmpfs and
//! runs the container with the same agent library the ns runtime uses on the host, and berth
//! talks to it over vsock (`berth_agent::protocol`).
//!
//! Per-run files in the container folder: `vm.json` (the VM's host processes), `vsock.sock`
//! (the hybrid vsock socket), `vmm.log` (what the hypervisor printed), `serial.log` (the guest
//! console, kept after the VM is gone), `vm-exit.json` (how the container's process ended).

mod builtin;

pub use builtin::unavailable as builtin_unavailable;
pub mod client;
pub(crate) mod disks;
pub mod hypervisor;
pub(crate) mod qemu;
pub mod sizing;
pub(crate) mod stdio;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, UserBuilder};
use serde::{Deserialize, Serialize};

use berth_agent::protocol::{GuestRootfs, RequestBody, ResponseBody, Upper};

use crate::container::{process_start_time, ContainerRecord, ContainerStore};

use super::user::{resolve_in_layers, stack_top_first};
use super::{spec, ContainerProcess, ExecLaunch, Launch, Runtime, RuntimeError};
use client::{Agent, ClientError};
pub use hypervisor::{Accel, SERIAL_LOG, VSOCK_SOCKET};

/// The guest kernel's command line (QEMU's microvm adds the virtio-mmio devices itself).
pub(crate) const CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 berth.exit=reboot quiet";
/// Guest memory without `--memory`.
pub(crate) const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory on top of `--memory`, for the guest kernel and agent, so that the container's
/// cgroup limit (not the VM's size) is what a hungry container hits, as with `--runtime=ns`.
const MEMORY_OVERHEAD_MIB: u64 = 64;
/// How long the guest may take to boot, unless `BERTH_VM_BOOT_TIMEOUT` (seconds) says otherwise.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// A VM could not be prepared, started or reached.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Disk(String),
    #[error("could not start the VM: {0}")]
    Launch(String),
    #[error("the VM's guest agent failed")]
    Agent(#[from] ClientError),
    #[error("could not wire up the VM's stdio")]
    Io(#[from] std::io::Error),
}

impl VmError {
    /// Docker's exit status for a start that failed in the guest (127/126 for a bad command).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmError::Agent(ClientError::Agent {
                exit_code: Some(code),
                ..
            }) => *code,
            _ => 125,
        }
    }
}

/// The cache folder where the guest kernel and initramfs are built.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"))
        .join("berth")
}

/// The guest kernel: `$BERTH_VM_KERNEL` or `${XDG_CACHE_HOME:-$HOME/.cache}/berth/vmlinux`.
pub fn kernel_path() -> PathBuf {
    std::env::var_os("BERTH_VM_KERNEL")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("vmlinux"))
}

/// The initramfs holding the agent: `$BERTH_VM_INITRAMFS` or `.../berth/initramfs.cpio.gz`.
pub fn initramfs_path() -> PathBuf {
    std::env::var_os("BERTH_VM_INITRAMFS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("initramfs.cpio.gz"))
}

/// The kernel and initramfs, or why the vm runtime cannot run without them.
pub fn guest_images() -> Result<(PathBuf, PathBuf), VmError> {
    let kernel = kernel_path();
    if !kernel.is_file() {
        return Err(VmError::Config(format!(
            "the vm runtime needs a guest kernel at {} (build it with scripts/build-guest-kernel.sh, \
             or set BERTH_VM_KERNEL)",
            kernel.display()
        )));
    }
    let initramfs = initramfs_path();
    if !initramfs.is_file() {
        return Err(VmError::Config(format!(
            "the vm runtime needs the agent's initramfs at {} (build it with \
             scripts/build-initramfs.sh, or set BERTH_VM_INITRAMFS)",
            initramfs.display()
        )));
    }
    Ok((kernel, initramfs))
}

/// At create: the hypervisor and accelerator a new vm container will use.
pub fn choose(
    root: &Path,
    hypervisor: Option<&str>,
    accel: Option<&str>,
) -> Result<(String, String), VmError> {
    let (kernel, initramfs) = guest_images()?;
    let (name, accel) = hypervisor::select(root, hypervisor, accel, &kernel, &initramfs)?;
    Ok((name, accel.as_str().to_string()))
}

/// The VM's host processes, recorded so that any berth command can signal or stop them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmInfo {
    pub hypervisor: String,
    pub accel: String,
    pub vmm_pid: i32,
    pub vmm_start_time: Option<u64>,
    /// Helper daemons (the vsock backend), with their start times.
    pub helpers: Vec<(i32, Option<u64>)>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub disks: Vec<PathBuf>,
}

impl VmInfo {
    pub fn load(dir: &Path) -> Option<VmInfo> {
        serde_json::from_slice(&std::fs::read(dir.join("vm.json")).ok()?).ok()
    }

    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("vm.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join("vm.json"))
    }

    /// Whether the recorded VMM still runs (same pid, same start time).
    pub fn vmm_alive(&self) -> bool {
        alive(self.vmm_pid, self.vmm_start_time)
    }
}

pub(crate) fn alive(pid: i32, start: Option<u64>) -> bool {
    let now = process_start_time(pid);
    now.is_some() && now == start
}

/// How the container's main process ended, for `oom_killed` after the fact.
#[derive(Debug, Serialize, Deserialize)]
struct ExitRecord {
    exit_code: i32,
    oom_killed: bool,
}

pub(crate) fn boot_timeout() -> Duration {
    std::env::var("BERTH_VM_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(BOOT_TIMEOUT, Duration::from_secs)
}

/// The berth root a container folder (`<root>/containers/<id>`) belongs to.
fn berth_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Kills a recorded process (when it is still the same process) and waits until it is gone,
/// reaping it when it is our child.
pub(crate) fn kill_and_reap(pid: i32, start: Option<u64>, grace: Duration) {
    let pid_t = Pid::from_raw(pid);
    let gone = |_: ()| -> bool {
        match waitpid(pid_t, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            // Not our child: watch /proc.
            Err(_) => !alive(pid, start),
        }
    };
    if !alive(pid, start) {
        let _ = waitpid(pid_t, Some(WaitPidFlag::WNOHANG));
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone(()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid, start) {
        let _ = nix::sys::signal::kill(pid_t, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !gone(()) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a VM for good: Shutdown through the agent when it answers, then makes sure the VMM and
/// its helpers are gone. Leaves serial.log and vmm.log.
pub(crate) fn shut_down(dir: &Path, info: &VmInfo) {
    let started = Instant::now();
    if info.vmm_alive() {
        let asked = Agent::connect(dir, Duration::from_millis(500)).and_then(|mut agent| {
            let _ = agent.set_timeout(Some(Duration::from_secs(2)));
            agent.call_ok(RequestBody::Shutdown)
        });
        let grace = if asked.is_ok() {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        };
        kill_and_reap(info.vmm_pid, info.vmm_start_time, grace);
    }
    for (pid, start) in &info.helpers {
        if alive(*pid, *start) {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        kill_and_reap(*pid, *start, Duration::from_millis(500));
    }
    for file in [VSOCK_SOCKET, qemu::VHOST_SOCKET, "vm.json"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "vm runtime: the VM is gone");
}

/// The monitor records the exit after `release`, and the recorded pid is the VMM's, which
/// `release` stops: a berth command looking in between would take the container for lost
/// (exit 255, "monitor gone"). So while the VM is torn down, the recorded process becomes the
/// monitor itself (alive until it records the exit), and the agent's exit code is noted already.
fn hand_over_to_monitor(dir: &Path, record: &ContainerRecord) {
    let Some(exit) = std::fs::read(dir.join("vm-exit.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
    else {
        return;
    };
    let Ok(store) = ContainerStore::open(&berth_root(dir)) else {
        return;
    };
    let Ok(_lock) = store.lock(&record.id) else {
        return;
    };
    let me = std::process::id() as i32;
    if let Ok(mut state) = store.load_state(&record.id) {
        if state.status == crate::container::Status::Running && state.monitor_pid == Some(me) {
            state.pid = Some(me);
            state.pid_start_time = process_start_time(me);
            state.exit_code = Some(exit.exit_code);
            state.oom_killed = exit.oom_killed;
            let _ = store.save_state(&record.id, &state);
        }
    }
}

/// Kills a VM that is being started and failed on the way.
struct LaunchGuard<'a> {
    dir: &'a Path,
    info: Option<VmInfo>,
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        if let Some(info) = self.info.take() {
            for (pid, start) in std::iter::once((info.vmm_pid, info.vmm_start_time))
                .chain(info.helpers.iter().copied())
            {
                kill_and_reap(pid, start, Duration::ZERO);
            }
            for file in [VSOCK_SOCKET, qemu::VHOST_SOCKET, "vm.json"] {
                let _ = std::fs::remove_file(self.dir.join(file));
            }
        }
    }
}

/// A microVM per container.
pub struct VmRuntime;

impl VmRuntime {
    fn start_vm(&self, launch: Launch<'_>) -> Result<Box<dyn ContainerProcess>, VmError> {
        let record = launch.record;
        let dir = launch.dir.as_path();
        let started = Instant::now();
        let (kernel, initramfs) = guest_images()?;
        let stack = stack_top_first(&dir.join("upper"), &launch.layers);
        let user = resolve_in_layers(&record.process.user, &stack)
            .map_err(|e| VmError::Config(e.to_string()))?;
        let spec =
            spec::build(record, &user).map_err(|e| VmError::Config(crate::error_chain(&e)))?;

        remember_dir(&record.id, dir);
        let root = berth_root(dir);
        let disks = disks::layer_images(&root, &launch.layers)?;
        let scratch = match record.host.storage_size {
            size if size > 0 => Some(disks::scratch_disk(dir, size as u64)?),
            _ => None,
        };
        let name = if record.host.hypervisor.is_empty() {
            "qemu"
        } else {
            record.host.hypervisor.as_str()
        };
        let accel = if record.host.accel.is_empty() {
            Accel::Tcg
        } else {
            Accel::parse(&record.host.accel)?
        };
        let hv = hypervisor::by_name(name)?;
        if let Some(why) = hv.unavailable(accel) {
            return Err(VmError::Config(format!(
                "hypervisor {name} with {} cannot be used: {why}",
                accel.as_str()
            )));
        }
        let memory_mib = if record.host.memory > 0 {
            (record.host.memory as u64).div_ceil(1 << 20) + MEMORY_OVERHEAD_MIB
        } else {
            DEFAULT_MEMORY_MIB
        };
        let vcpus = if record.host.nano_cpus > 0 {
            (record.host.nano_cpus as u64).div_ceil(1_000_000_000) as u32
        } else {
            1
        };
        let _ = std::fs::remove_file(dir.join("vm-exit.json"));
        let _ = std::fs::remove_file(dir.join(hypervisor::VMM_LOG));
        tracing::debug!(
            hypervisor = name,
            accel = accel.as_str(),
            memory_mib,
            vcpus,
            disks = ?disks,
            "vm runtime: booting the container's VM"
        );
        let launched = hv.launch(&hypervisor::VmConfig {
            dir,
            kernel: &kernel,
            initramfs: &initramfs,
            cmdline: CMDLINE.to_string(),
            memory_mib,
            vcpus,
            disks: &disks,
            scratch: scratch.as_deref(),
            accel,
        })?;
        let mut vmm = launched.vmm;
        let vmm_pid = vmm.id() as i32;
        let info = VmInfo {
            hypervisor: name.to_string(),
            accel: accel.as_str().to_string(),
            vmm_pid,
            vmm_start_time: process_start_time(vmm_pid),
            helpers: launched
                .helpers
                .iter()
                .map(|c| (c.id() as i32, process_start_time(c.id() as i32)))
                .collect(),
            memory_mib,
            vcpus,
            disks: disks.clone(),
        };
        let mut guard = LaunchGuard {
            dir,
            info: Some(info.clone()),
        };
        info.save(dir)?;
        // The helpers are reaped by `release` (by pid); the std handles are not needed.
        drop(launched.helpers);

        let mut control = Agent::wait_ready(dir, boot_timeout(), || {
            let status = vmm.try_wait().ok().flatten()?;
            Some(match last_line(&dir.join(hypervisor::VMM_LOG)) {
                Some(line) => format!("{status}: {line}"),
                None => status.to_string(),
            })
        })?;
        tracing::debug!(elapsed = ?started.elapsed(), "vm runtime: the guest agent answered");
        let attached = stdio::attach(dir, &record.id, launch.stdio, record.process.interactive)?;
        control.set_timeout(Some(Duration::from_secs(60)))?;
        let rootfs = GuestRootfs {
            // Disks appear in the guest in the order they were given: /dev/vda is the bottom.
            layers: (0..disks.len()).map(guest_disk).collect(),
            upper: match scratch {
                // The scratch disk comes right after the layers.
                Some(_) => Upper::Device {
                    path: guest_disk(disks.len()),
                },
                None => Upper::Tmpfs { size_bytes: None },
            },
        };
        expect(
            control.call(RequestBody::CreateContainer {
                id: record.id.clone(),
                spec,
                rootfs,
                terminal: record.process.tty,
                interactive: record.process.interactive,
                hook_state: None,
            })?,
            "Created",
            |b| matches!(b, ResponseBody::Created),
        )?;
        expect(
            control.call(RequestBody::StartContainer {
                id: record.id.clone(),
            })?,
            "Started",
            |b| matches!(b, ResponseBody::Started { .. }),
        )?;
        attached.started.store(true, Ordering::Release);
        let exit = spawn_waiter(dir, &record.id)?;
        tracing::debug!(elapsed = ?started.elapsed(), "vm runtime: the container runs");
        guard.info = None;
        Ok(Box::new(VmProcess {
            dir: dir.to_path_buf(),
            id: record.id.clone(),
            name: record.name.clone(),
            vmm: Some(vmm),
            vmm_pid,
            vmm_start_time: info.vmm_start_time,
            exit,
            control: Some(control),
            main: true,
        }))
    }

    fn exec_vm(&self, launch: ExecLaunch<'_>) -> Result<Box<dyn ContainerProcess>, VmError> {
        let dir = launch.dir.as_path();
        let info = VmInfo::load(dir).ok_or_else(|| {
            VmError::Config(format!(
                "container {} has no running VM",
                launch.record.name
            ))
        })?;
        let stack = stack_top_first(&dir.join("upper"), &launch.layers);
        let user =
            resolve_in_layers(&launch.user, &stack).map_err(|e| VmError::Config(e.to_string()))?;
        let mut env = launch.env;
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.home));
        }
        let spec_err = |e| VmError::Config(crate::error_chain(&spec::SpecError(e)));
        let oci_user = UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids)
            .build()
            .map_err(spec_err)?;
        let mut process = ProcessBuilder::default()
            .terminal(launch.tty)
            .user(oci_user)
            .args(launch.args)
            .env(env)
            .cwd(launch.cwd);
        let base = berth_agent::spec::default_spec();
        if let Some(caps) = base
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
        {
            process = process.capabilities(caps);
        }
        let process = process.build().map_err(spec_err)?;
        // `exec` without -i gets /dev/null as stdin from the session.
        let interactive = match &launch.stdio {
            berth_agent::Stdio::Fds { stdin, .. } => !is_dev_null(stdin),
            _ => true,
        };
        let exec_id = format!("exec-{}", random_hex());
        let mut control = Agent::connect(dir, Duration::from_secs(5))?;
        control.set_timeout(Some(Duration::from_secs(60)))?;
        let attached = stdio::attach(dir, &exec_id, launch.stdio, interactive)?;
        expect(
            control.call(RequestBody::Exec {
                container_id: launch.record.id.clone(),
                exec_id: exec_id.clone(),
                process,
                terminal: launch.tty,
                interactive,
            })?,
            "Started",
            |b| matches!(b, ResponseBody::Started { .. }),
        )?;
        attached.started.store(true, Ordering::Release);
        let exit = spawn_waiter(dir, &exec_id)?;
        Ok(Box::new(VmProcess {
            dir: dir.to_path_buf(),
            id: exec_id,
            name: launch.record.name.clone(),
            vmm: None,
            vmm_pid: info.vmm_pid,
            vmm_start_time: info.vmm_start_time,
            exit,
            control: Some(control),
            main: false,
        }))
    }
}

/// The last non-empty line of a log file.
pub(crate) fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

fn is_dev_null(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(file) = fd.try_clone().map(std::fs::File::from) else {
        return false;
    };
    file.metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == nix::sys::stat::makedev(1, 3))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// The guest device of the `index`th disk: /dev/vda, /dev/vdb, ...
pub(crate) fn guest_disk(index: usize) -> String {
    let mut name = String::new();
    let mut n = index;
    loop {
        name.insert(0, (b'a' + (n % 26) as u8) as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("/dev/vd{name}")
}

pub(crate) fn expect(
    body: ResponseBody,
    what: &str,
    ok: impl Fn(&ResponseBody) -> bool,
) -> Result<(), VmError> {
    if ok(&body) {
        Ok(())
    } else {
        Err(ClientError::Unexpected(format!("{body:?} instead of {what}")).into())
    }
}

/// What the background `Wait` learned.
enum WaitOutcome {
    Exited { exit_code: i32, oom_killed: bool },
    Lost(String),
}

/// Starts a thread that waits (on its own connection) for process `id` to exit.
fn spawn_waiter(dir: &Path, id: &str) -> Result<Arc<Mutex<Option<WaitOutcome>>>, VmError> {
    let slot = Arc::new(Mutex::new(None));
    let mut agent = Agent::connect(dir, Duration::from_secs(5))?;
    let result = Arc::clone(&slot);
    let id = id.to_string();
    stdio::spawn_quiet(move || {
        let outcome = match agent.call(RequestBody::Wait { id }) {
            Ok(ResponseBody::Exited {
                exit_code,
                oom_killed,
            }) => WaitOutcome::Exited {
                exit_code,
                oom_killed,
            },
            Ok(other) => WaitOutcome::Lost(format!("the guest agent answered {other:?} to Wait")),
            Err(e) => WaitOutcome::Lost(crate::error_chain(&e)),
        };
        if let Ok(mut slot) = result.lock() {
            *slot = Some(outcome);
        }
        stdio::nudge();
    })?;
    Ok(slot)
}

/// A process in a VM, as the berth process that started it sees it.
struct VmProcess {
    dir: PathBuf,
    /// The container id (main process) or exec id.
    id: String,
    name: String,
    /// The VMM, when this berth process started it.
    vmm: Option<Child>,
    vmm_pid: i32,
    vmm_start_time: Option<u64>,
    exit: Arc<Mutex<Option<WaitOutcome>>>,
    /// For signals.
    control: Option<Agent>,
    /// The container's main process (not an exec).
    main: bool,
}

impl VmProcess {
    fn vm_gone(&mut self) -> Option<String> {
        match self.vmm.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            None => (!alive(self.vmm_pid, self.vmm_start_time)).then(|| "gone".to_string()),
        }
    }

    /// The VM died (or its agent vanished) before the process's exit was known: exit 255, and
    /// say where the serial console log is.
    fn lost(&self, why: &str) -> i32 {
        let serial = self.dir.join(SERIAL_LOG);
        let message = format!(
            "the VM of container {} stopped before its process exited ({why}); its serial \
             console log is {}",
            self.name,
            serial.display()
        );
        eprintln!("berth: {message}");
        if self.main {
            let dir = &self.dir;
            if let (Some(id), Ok(store)) = (
                dir.file_name().map(|n| n.to_string_lossy().into_owned()),
                ContainerStore::open(&berth_root(dir)),
            ) {
                if let Ok(_lock) = store.lock(&id) {
                    if let Ok(mut state) = store.load_state(&id) {
                        state.error = Some(message);
                        let _ = store.save_state(&id, &state);
                    }
                }
            }
        }
        255
    }
}

impl ContainerProcess for VmProcess {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.vmm_pid)
    }

    fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        let outcome = self.exit.lock().ok().and_then(|mut slot| slot.take());
        match outcome {
            Some(WaitOutcome::Exited {
                exit_code,
                oom_killed,
            }) => {
                if self.main {
                    let record = ExitRecord {
                        exit_code,
                        oom_killed,
                    };
                    if let Ok(bytes) = serde_json::to_vec(&record) {
                        let _ = std::fs::write(self.dir.join("vm-exit.json"), bytes);
                    }
                }
                self.control = None;
                Ok(Some(exit_code))
            }
            Some(WaitOutcome::Lost(why)) => {
                // The VM may still be dying: give it a moment, so the message is accurate.
                let deadline = Instant::now() + Duration::from_secs(2);
                while self.vm_gone().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let why = match self.vm_gone() {
                    Some(status) => format!("VMM exited: {status}"),
                    None => why,
                };
                self.control = None;
                Ok(Some(self.lost(&why)))
            }
            None => match self.vm_gone() {
                Some(status) => {
                    self.control = None;
                    Ok(Some(self.lost(&format!("VMM exited: {status}"))))
                }
                None => Ok(None),
            },
        }
    }

    fn signal(&mut self, signal: Signal) -> std::io::Result<()> {
        if self.control.is_none() {
            self.control = Some(
                Agent::connect(&self.dir, Duration::from_secs(2)).map_err(std::io::Error::other)?,
            );
        }
        let Some(agent) = self.control.as_mut() else {
            return Ok(());
        };
        let _ = agent.set_timeout(Some(Duration::from_secs(5)));
        let sent = agent.call_ok(RequestBody::Signal {
            id: self.id.clone(),
            signal: signal as i32,
        });
        if sent.is_err() {
            self.control = None;
        }
        sent.map_err(std::io::Error::other)
    }
}

impl Runtime for VmRuntime {
    fn start(&self, launch: Launch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError> {
        Ok(self.start_vm(launch)?)
    }

    fn exec(&self, launch: ExecLaunch<'_>) -> Result<Box<dyn ContainerProcess>, RuntimeError> {
        Ok(self.exec_vm(launch)?)
    }

    fn kill(&self, record: &ContainerRecord, pid: Pid, signal: Signal) -> Result<(), RuntimeError> {
        let dir = container_dir(record, pid);
        let sent = Agent::connect(&dir, Duration::from_secs(2)).and_then(|mut agent| {
            let _ = agent.set_timeout(Some(Duration::from_secs(5)));
            agent.call_ok(RequestBody::Signal {
                id: record.id.clone(),
                signal: signal as i32,
            })
        });
        match sent {
            Ok(()) => Ok(()),
            // The agent is unreachable: SIGKILL takes the whole VM down instead.
            Err(e) if signal == Signal::SIGKILL => {
                tracing::debug!(error = %e, "agent unreachable; killing the VMM");
                nix::sys::signal::kill(pid, Signal::SIGKILL)
                    .map_err(|source| RuntimeError::Signal { signal, source })
            }
            Err(e) => Err(VmError::Agent(e).into()),
        }
    }

    fn oom_killed(&self, record: &ContainerRecord) -> bool {
        let Some(dir) = find_container_dir(record) else {
            return false;
        };
        std::fs::read(dir.join("vm-exit.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
            .is_some_and(|r| r.oom_killed)
    }

    fn release(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let Some(dir) = find_container_dir(record) else {
            return Ok(());
        };
        if let Some(info) = VmInfo::load(&dir) {
            hand_over_to_monitor(&dir, record);
            shut_down(&dir, &info);
        }
        Ok(())
    }
}

/// Container folders of the VMs this berth process started or reached, by container id.
static KNOWN_DIRS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

fn remember_dir(id: &str, dir: &Path) {
    if let Ok(mut known) = KNOWN_DIRS.lock() {
        known.retain(|(k, _)| k != id);
        known.push((id.to_string(), dir.to_path_buf()));
    }
}

/// The container folder of `record`: the VMM's working directory (`pid`), else as found by
/// [`find_container_dir`].
fn container_dir(record: &ContainerRecord, pid: Pid) -> PathBuf {
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        if cwd
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == record.id)
        {
            return cwd;
        }
    }
    find_container_dir(record).unwrap_or_default()
}

/// The container folder of `record` (runtime methods only get the record): remembered when
/// this process started the VM, else the working directory of a process still running in it
/// (the VMM and its helpers run in `<root>/containers/<id>`).
fn find_container_dir(record: &ContainerRecord) -> Option<PathBuf> {
    if let Some(dir) = KNOWN_DIRS.lock().ok().and_then(|known| {
        known
            .iter()
            .find(|(k, _)| *k == record.id)
            .map(|(_, d)| d.clone())
    }) {
        return Some(dir);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name();
            name.to_str()?.parse::<u32>().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            let is_ours = cwd.file_name()?.to_str()? == record.id
                && cwd.parent()?.file_name()?.to_str()? == "containers";
            is_ours.then_some(cwd)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_disk_names() {
        assert_eq!(guest_disk(0), "/dev/vda");
        assert_eq!(guest_disk(1), "/dev/vdb");
        assert_eq!(guest_disk(25), "/dev/vdz");
        assert_eq!(guest_disk(26), "/dev/vdaa");
    }

    #[test]
    fn root_of_a_container_folder() {
        assert_eq!(
            berth_root(Path::new("/var/lib/berth/containers/abc")),
            PathBuf::from("/var/lib/berth")
        );
    }

    #[test]
    fn agent_exit_codes_pass_through() {
        let e = VmError::Agent(ClientError::Agent {
            message: "not found".into(),
            exit_code: Some(127),
        });
        assert_eq!(e.exit_code(), 127);
        assert_eq!(VmError::Disk("x".into()).exit_code(), 125);
    }
}
