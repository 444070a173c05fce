//! `--hypervisor=qemu`: `qemu-system-x86_64 -M microvm` (KVM or TCG), with its vsock device
//! served by the `vhost-device-vsock` daemon over vhost-user, which offers the host side as a
//! hybrid-vsock Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::hypervisor::{
    self, find_program, Accel, Hypervisor, Launched, VmConfig, GUEST_CID, SERIAL_LOG, VSOCK_SOCKET,
};
use super::VmError;

/// The vhost-user socket between QEMU and the vsock daemon, relative to the container folder.
pub const VHOST_SOCKET: &str = "vhost-vsock.sock";

pub struct Qemu;

fn cargo_bin() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/local/bin")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs
}

pub fn qemu_binary() -> Option<PathBuf> {
    find_program("qemu-system-x86_64", "BERTH_QEMU", &[])
}

pub fn vsock_daemon() -> Option<PathBuf> {
    find_program("vhost-device-vsock", "BERTH_VHOST_VSOCK", &cargo_bin())
}

/// A value inside a QEMU option list: commas are doubled.
fn escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// QEMU's arguments for a VM (without the vsock device when `vsock` is false).
fn arguments(config: &VmConfig<'_>, vsock: bool) -> Vec<String> {
    let mem = format!("{}M", config.memory_mib);
    let mut args: Vec<String> = vec![
        "-M".into(),
        "microvm,acpi=off,memory-backend=mem".into(),
        "-accel".into(),
        config.accel.as_str().into(),
        "-cpu".into(),
        match config.accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
        "-m".into(),
        mem.clone(),
        "-smp".into(),
        config.vcpus.to_string(),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        "-kernel".into(),
        absolute(config.kernel).to_string_lossy().into_owned(),
        "-initrd".into(),
        absolute(config.initramfs).to_string_lossy().into_owned(),
        "-append".into(),
        config.cmdline.clone(),
        "-no-reboot".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-serial".into(),
        format!("file:{SERIAL_LOG}"),
    ];
    for (i, disk) in config.disks.iter().enumerate() {
        args.push("-drive".into());
        args.push(format!(
            "id=l{i},file={},format=raw,if=none,readonly=on",
            escape(&absolute(disk))
        ));
        args.push("-device".into());
        args.push(format!("virtio-blk-device,drive=l{i}"));
    }
    if let Some(scratch) = config.scratch {
        args.push("-drive".into());
        args.push(format!(
            "id=scratch,file={},format=raw,if=none",
            escape(&absolute(scratch))
        ));
        args.push("-device".into());
        args.push("virtio-blk-device,drive=scratch".into());
    }
    if vsock {
        args.push("-chardev".into());
        args.push(format!("socket,id=vs,path={VHOST_SOCKET}"));
        args.push("-device".into());
        // The guest's cid is the backend's (vhost-device-vsock --guest-cid).
        args.push("vhost-user-vsock-device,chardev=vs".into());
    }
    args
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn unavailable(&self, accel: Accel) -> Option<String> {
        if qemu_binary().is_none() {
            return Some(
                "qemu-system-x86_64 is not installed (scripts/install-vm-deps.sh installs it)"
                    .into(),
            );
        }
        if vsock_daemon().is_none() {
            return Some(
                "vhost-device-vsock is not installed (scripts/install-vm-deps.sh installs it)"
                    .into(),
            );
        }
        if accel == Accel::Kvm && !hypervisor::kvm_usable() {
            return Some("/dev/kvm cannot be opened".into());
        }
        None
    }

    fn launch(&self, config: &VmConfig<'_>) -> Result<Launched, VmError> {
        let qemu =
            qemu_binary().ok_or_else(|| VmError::Launch("qemu-system-x86_64 not found".into()))?;
        let daemon_bin =
            vsock_daemon().ok_or_else(|| VmError::Launch("vhost-device-vsock not found".into()))?;
        let dir = config.dir;
        for stale in [VHOST_SOCKET, VSOCK_SOCKET] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        // Relative socket paths (the working directory is the container folder): a Unix socket
        // path is limited to 108 bytes, which deep berth roots exceed.
        let mut daemon = hypervisor::spawn(
            Command::new(&daemon_bin)
                .arg("--guest-cid")
                .arg(GUEST_CID.to_string())
                .arg("--socket")
                .arg(VHOST_SOCKET)
                .arg("--uds-path")
                .arg(VSOCK_SOCKET),
            dir,
        )
        .map_err(|e| VmError::Launch(format!("cannot start {}: {e}", daemon_bin.display())))?;
        if let Err(e) = hypervisor::wait_for_socket(
            &dir.join(VHOST_SOCKET),
            &mut daemon,
            "vhost-device-vsock",
            dir,
        ) {
            kill_child(&mut daemon);
            return Err(e);
        }
        match hypervisor::spawn(Command::new(&qemu).args(arguments(config, true)), dir) {
            Ok(vmm) => Ok(Launched {
                vmm,
                helpers: vec![daemon],
            }),
            Err(e) => {
                kill_child(&mut daemon);
                Err(VmError::Launch(format!(
                    "cannot start {}: {e}",
                    qemu.display()
                )))
            }
        }
    }
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots the guest once under QEMU with KVM: Ok when its init starts, Err with why not.
/// (Some hosts have a /dev/kvm on which a Linux guest dies in early boot.)
pub fn probe_boot(root: &Path, kernel: &Path, initramfs: &Path) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix(".vm-probe-")
        .tempdir_in(root)
        .map_err(|e| format!("cannot create a probe folder: {e}"))?;
    let config = VmConfig {
        dir: dir.path(),
        kernel,
        initramfs,
        cmdline: "console=ttyS0 reboot=t panic=-1 berth.exit=reboot".into(),
        memory_mib: 128,
        vcpus: 1,
        disks: &[],
        scratch: None,
        accel: Accel::Kvm,
    };
    let qemu = qemu_binary().ok_or("qemu-system-x86_64 not found")?;
    let mut child = hypervisor::spawn(
        Command::new(qemu).args(arguments(&config, false)),
        dir.path(),
    )
    .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let serial = dir.path().join(SERIAL_LOG);
    let deadline = Instant::now() + Duration::from_secs(20);
    let verdict = loop {
        let text = std::fs::read_to_string(&serial).unwrap_or_default();
        if text.contains("Run /init as init process") || text.contains("berth-agent") {
            break Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let last = |text: &str| {
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            let log = dir.path().join(hypervisor::VMM_LOG);
            let qemu_said = last(&std::fs::read_to_string(log).unwrap_or_default());
            break Err(format!(
                "a probe boot with KVM ended ({status}) before the guest's init ran \
                 (QEMU: {qemu_said:?}; last console line: {:?})",
                last(&text)
            ));
        }
        if Instant::now() >= deadline {
            break Err("a probe boot with KVM did not reach the guest's init within 20s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_child(&mut child);
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_command_line() {
        let disks = vec![PathBuf::from("/r/a,b.ext4"), PathBuf::from("/r/c.ext4")];
        let config = VmConfig {
            dir: Path::new("/c"),
            kernel: Path::new("/k/vmlinux"),
            initramfs: Path::new("/k/initramfs"),
            cmdline: "console=ttyS0".into(),
            memory_mib: 320,
            vcpus: 2,
            disks: &disks,
            scratch: None,
            accel: Accel::Tcg,
        };
        let args = arguments(&config, true).join(" ");
        assert!(args.contains("-accel tcg"), "{args}");
        assert!(args.contains("-m 320M"), "{args}");
        assert!(args.contains("size=320M,share=on"), "{args}");
        assert!(args.contains("-smp 2"), "{args}");
        assert!(
            args.contains("id=l0,file=/r/a,,b.ext4,format=raw,if=none,readonly=on"),
            "{args}"
        );
        assert!(args.contains("virtio-blk-device,drive=l1"), "{args}");
        assert!(
            args.contains("vhost-user-vsock-device,chardev=vs"),
            "{args}"
        );
        assert!(!arguments(&config, false).join(" ").contains("vsock"));
    }
}
