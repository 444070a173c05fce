//! `--hypervisor=builtin`: berth's own VMM (`berth-vmm`, KVM only), which serves the hybrid
//! vsock socket itself.

use std::path::PathBuf;
use std::process::Command;

use super::hypervisor::{
    self, find_program, Accel, Hypervisor, Launched, VmConfig, GUEST_CID, SERIAL_LOG, VSOCK_SOCKET,
};
use super::VmError;

pub struct Builtin;

/// `berth-vmm`: `$BERTH_VMM`, next to the running berth binary, or on PATH.
pub fn vmm_binary() -> Option<PathBuf> {
    let beside: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.to_path_buf()))
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("BERTH_VMM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    beside
        .iter()
        .map(|d| d.join("berth-vmm"))
        .find(|p| p.is_file())
        .or_else(|| find_program("berth-vmm", "BERTH_VMM", &[]))
}

impl Hypervisor for Builtin {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn unavailable(&self, accel: Accel) -> Option<String> {
        if accel != Accel::Kvm {
            return Some("berth-vmm only runs guests with KVM".into());
        }
        if !hypervisor::cpu_has_virtualization() {
            return Some(
                "the CPU does not advertise VT-x/AMD-V (no vmx/svm in /proc/cpuinfo)".into(),
            );
        }
        if !hypervisor::kvm_usable() {
            return Some("/dev/kvm cannot be opened".into());
        }
        let Some(vmm) = vmm_binary() else {
            return Some("berth-vmm was not found (build it with cargo build -p berth-vmm)".into());
        };
        let help = Command::new(&vmm)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !help.contains("--vsock") {
            return Some(format!("{} has no --vsock device", vmm.display()));
        }
        None
    }

    fn launch(&self, config: &VmConfig<'_>) -> Result<Launched, VmError> {
        let vmm = vmm_binary().ok_or_else(|| VmError::Launch("berth-vmm not found".into()))?;
        let _ = std::fs::remove_file(config.dir.join(VSOCK_SOCKET));
        let mut command = Command::new(&vmm);
        command
            .arg("--kernel")
            .arg(std::path::absolute(config.kernel).unwrap_or_else(|_| config.kernel.into()))
            .arg("--initrd")
            .arg(std::path::absolute(config.initramfs).unwrap_or_else(|_| config.initramfs.into()))
            .arg("--cmdline")
            .arg(&config.cmdline)
            .arg("--vcpus")
            .arg(config.vcpus.to_string())
            .arg("--mem-mib")
            .arg(config.memory_mib.to_string())
            .arg("--serial")
            .arg(format!("file:{SERIAL_LOG}"))
            .arg("--vsock")
            .arg(format!("{GUEST_CID},{VSOCK_SOCKET}"));
        for disk in config.disks {
            let disk = std::path::absolute(disk).unwrap_or_else(|_| disk.clone());
            command.arg("--drive").arg(format!("{},ro", disk.display()));
        }
        if let Some(scratch) = config.scratch {
            let scratch = std::path::absolute(scratch).unwrap_or_else(|_| scratch.to_path_buf());
            command.arg("--drive").arg(scratch);
        }
        let vmm = hypervisor::spawn(&mut command, config.dir)
            .map_err(|e| VmError::Launch(format!("cannot start {}: {e}", vmm.display())))?;
        Ok(Launched {
            vmm,
            helpers: Vec::new(),
        })
    }
}

/// Why the built-in VMM cannot boot a Linux guest on this host (None: it can).
pub fn unavailable() -> Option<String> {
    Builtin.unavailable(Accel::Kvm)
}
