//! The programs that run a container's microVM, behind one trait, and the choice between them.
//!
//! * `qemu`: `qemu-system-x86_64 -M microvm` with KVM or TCG (software emulation), its vsock
//!   backed by the `vhost-device-vsock` daemon.
//! * `builtin`: berth's own KVM-only VMM, `berth-vmm`.
//!
//! Both take the same kernel, initramfs and read-only layer disks, write the guest's serial
//! console to `<container dir>/serial.log`, and offer the agent's vsock ports as a Firecracker
//! "hybrid vsock" Unix socket at `<container dir>/vsock.sock`.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{builtin::Builtin, qemu::Qemu, VmError};

/// The hybrid-vsock socket, relative to the container folder.
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The guest's serial console, relative to the container folder (kept after the VM is gone).
pub const SERIAL_LOG: &str = "serial.log";
/// What the hypervisor processes print themselves, relative to the container folder.
pub const VMM_LOG: &str = "vmm.log";
/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;

/// How the hypervisor runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation (slow, works everywhere).
    Tcg,
}

impl Accel {
    pub fn parse(text: &str) -> Result<Accel, VmError> {
        match text {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(VmError::Config(format!(
                "unknown accelerator \"{other}\": berth has \"kvm\" and \"tcg\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything a hypervisor needs to boot one container's VM.
pub struct VmConfig<'a> {
    /// The container folder: the hypervisor's working directory, where sockets and logs go.
    pub dir: &'a Path,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Read-only raw disk images, in guest order (/dev/vda, /dev/vdb, ...).
    pub disks: &'a [PathBuf],
    /// A writable raw disk given after the read-only ones (the container's scratch disk).
    pub scratch: Option<&'a Path>,
    pub accel: Accel,
}

/// The host processes of a running VM.
pub struct Launched {
    /// The VMM itself (its pid is the container's recorded pid).
    pub vmm: Child,
    /// Helper daemons that must go when the VM goes (the vsock backend).
    pub helpers: Vec<Child>,
}

/// One way of running a VM.
pub trait Hypervisor {
    fn name(&self) -> &'static str;
    /// Why this hypervisor cannot run VMs with `accel` here, if it cannot.
    fn unavailable(&self, accel: Accel) -> Option<String>;
    /// Starts the VM; returns once its processes run (the guest still boots).
    fn launch(&self, config: &VmConfig<'_>) -> Result<Launched, VmError>;
}

/// The hypervisor called `name` (`builtin` or `qemu`).
pub fn by_name(name: &str) -> Result<Box<dyn Hypervisor>, VmError> {
    match name {
        "qemu" => Ok(Box::new(Qemu)),
        "builtin" => Ok(Box::new(Builtin)),
        other => Err(VmError::Config(format!(
            "unknown hypervisor \"{other}\": berth has \"builtin\" (berth-vmm) and \"qemu\""
        ))),
    }
}

/// A program given by an environment variable, or found on PATH (then in `extra` folders).
pub fn find_program(name: &str, env: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the CPU advertises hardware virtualization (Intel VT-x or AMD-V).
pub fn cpu_has_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// Whether /dev/kvm can be opened.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A `Command` for a VM process: its own session (so a terminal's ^C reaches berth, not the VMM),
/// no inherited descriptors beyond 0/1/2 (a leaked pipe end would keep berth's readers waiting),
/// no blocked signals, output appended to `<dir>/vmm.log`, working directory `dir`.
pub fn spawn(command: &mut Command, dir: &Path) -> io::Result<Child> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join(VMM_LOG))?;
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (setsid, sigprocmask, close_range) and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Close-on-exec rather than closed: std's exec-error pipe must keep working.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            Ok(())
        });
    }
    tracing::debug!(?command, "starting a VM process");
    command.spawn()
}

/// Waits until `path` exists, or fails when `child` exits or `limit` passes.
pub fn wait_for_socket(
    path: &Path,
    child: &mut Child,
    what: &str,
    dir: &Path,
) -> Result<(), VmError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(VmError::Launch(format!(
                "{what} exited ({status}) before creating {}; see {}",
                path.display(),
                dir.join(VMM_LOG).display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(VmError::Launch(format!(
                "{what} did not create {} within 10s; see {}",
                path.display(),
                dir.join(VMM_LOG).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The verdict of the probe: which hypervisor and accelerator can boot a Linux guest here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeVerdict {
    /// Why the builtin VMM cannot be used (None: it can).
    pub builtin: Option<String>,
    /// Why QEMU with KVM cannot be used (None: it can).
    pub qemu_kvm: Option<String>,
    /// Why QEMU with TCG cannot be used (None: it can).
    pub qemu_tcg: Option<String>,
    /// The kernel the probe booted, and its modification time (a new kernel is probed again).
    pub kernel: PathBuf,
    pub kernel_mtime: u64,
}

impl ProbeVerdict {
    /// The fastest choice that works.
    pub fn best(&self) -> Option<(&'static str, Accel)> {
        if self.builtin.is_none() {
            Some(("builtin", Accel::Kvm))
        } else if self.qemu_kvm.is_none() {
            Some(("qemu", Accel::Kvm))
        } else if self.qemu_tcg.is_none() {
            Some(("qemu", Accel::Tcg))
        } else {
            None
        }
    }

    fn reasons(&self) -> String {
        [
            ("builtin", &self.builtin),
            ("qemu+kvm", &self.qemu_kvm),
            ("qemu+tcg", &self.qemu_tcg),
        ]
        .iter()
        .filter_map(|(name, why)| why.as_ref().map(|w| format!("{name}: {w}")))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

fn mtime(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// The probe's verdict, from `<root>/vm-probe.json` or (once) by probing.
pub fn probe(root: &Path, kernel: &Path, initramfs: &Path) -> ProbeVerdict {
    let cache = root.join("vm-probe.json");
    // The kernel is often a symlink into a build cache: key on what it points to.
    let kernel = std::fs::canonicalize(kernel).unwrap_or_else(|_| kernel.to_path_buf());
    let kernel = kernel.as_path();
    let kernel_mtime = mtime(kernel);
    if let Some(verdict) = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<ProbeVerdict>(&b).ok())
        .filter(|v| v.kernel == kernel && v.kernel_mtime == kernel_mtime)
    {
        return verdict;
    }
    let verdict = ProbeVerdict {
        builtin: Builtin.unavailable(Accel::Kvm),
        qemu_kvm: Qemu
            .unavailable(Accel::Kvm)
            .or_else(|| super::qemu::probe_boot(root, kernel, initramfs).err()),
        qemu_tcg: Qemu.unavailable(Accel::Tcg),
        kernel: kernel.to_path_buf(),
        kernel_mtime,
    };
    tracing::debug!(?verdict, "probed the hypervisors");
    if let Ok(bytes) = serde_json::to_vec_pretty(&verdict) {
        let tmp = root.join(format!(".vm-probe.{}.json", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &cache);
        }
    }
    verdict
}

/// Resolves `--hypervisor` and `--accel` (either may be left out) into a choice that can work.
pub fn select(
    root: &Path,
    hypervisor: Option<&str>,
    accel: Option<&str>,
    kernel: &Path,
    initramfs: &Path,
) -> Result<(String, Accel), VmError> {
    let accel = accel.map(Accel::parse).transpose()?;
    let chosen = match (hypervisor, accel) {
        (Some(name), Some(accel)) => {
            let hv = by_name(name)?;
            if let Some(why) = hv.unavailable(accel) {
                return Err(VmError::Config(format!(
                    "--hypervisor={name} --accel={} cannot be used here: {why}",
                    accel.as_str()
                )));
            }
            (name.to_string(), accel)
        }
        (Some("builtin"), None) => {
            if let Some(why) = Builtin.unavailable(Accel::Kvm) {
                return Err(VmError::Config(format!(
                    "--hypervisor=builtin cannot be used here: {why}"
                )));
            }
            ("builtin".to_string(), Accel::Kvm)
        }
        (Some(name), None) => {
            by_name(name)?;
            let verdict = probe(root, kernel, initramfs);
            let accel = if verdict.qemu_kvm.is_none() {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
            if let Some(why) = Qemu.unavailable(accel) {
                return Err(VmError::Config(format!(
                    "--hypervisor={name} cannot be used here: {why}"
                )));
            }
            (name.to_string(), accel)
        }
        (None, requested) => {
            let verdict = probe(root, kernel, initramfs);
            let pick = match requested {
                None => verdict.best(),
                Some(Accel::Kvm) if verdict.builtin.is_none() => Some(("builtin", Accel::Kvm)),
                Some(Accel::Kvm) => verdict.qemu_kvm.is_none().then_some(("qemu", Accel::Kvm)),
                Some(Accel::Tcg) => verdict.qemu_tcg.is_none().then_some(("qemu", Accel::Tcg)),
            };
            let Some((name, accel)) = pick else {
                return Err(VmError::Config(format!(
                    "no hypervisor can boot the guest here ({})",
                    verdict.reasons()
                )));
            };
            (name.to_string(), accel)
        }
    };
    tracing::debug!(
        hypervisor = %chosen.0,
        accel = chosen.1.as_str(),
        "vm runtime: chose the hypervisor"
    );
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(builtin: bool, kvm: bool, tcg: bool) -> ProbeVerdict {
        let why = |ok: bool| (!ok).then(|| "no".to_string());
        ProbeVerdict {
            builtin: why(builtin),
            qemu_kvm: why(kvm),
            qemu_tcg: why(tcg),
            kernel: PathBuf::from("/k"),
            kernel_mtime: 1,
        }
    }

    #[test]
    fn fastest_working_choice_wins() {
        assert_eq!(
            verdict(true, true, true).best(),
            Some(("builtin", Accel::Kvm))
        );
        assert_eq!(
            verdict(false, true, true).best(),
            Some(("qemu", Accel::Kvm))
        );
        assert_eq!(
            verdict(false, false, true).best(),
            Some(("qemu", Accel::Tcg))
        );
        assert_eq!(verdict(false, false, false).best(), None);
        assert!(verdict(false, false, false)
            .reasons()
            .contains("qemu+tcg: no"));
    }

    #[test]
    fn accel_names() {
        assert_eq!(Accel::parse("kvm").unwrap(), Accel::Kvm);
        assert_eq!(Accel::parse("tcg").unwrap().as_str(), "tcg");
        assert!(Accel::parse("hvf").is_err());
        assert!(by_name("firecracker").is_err());
    }
}
