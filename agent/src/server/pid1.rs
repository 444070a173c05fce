//! What the agent does as the guest's PID 1: the early mounts, loopback, the
//! console line, and powering the VM off.

use std::io::Write;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::syscall::{LinuxSyscall, Syscall};

/// A failure bringing the guest up.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    /// A mount failed.
    #[error("failed to mount {fstype} on {target}")]
    Mount {
        /// The filesystem type.
        fstype: &'static str,
        /// The mount point.
        target: &'static str,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// A mount point could not be created.
    #[error("failed to create {target}")]
    Mkdir {
        /// The directory.
        target: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// (source, target, fstype, flags, data); failures are fatal.
const MOUNTS: &[(&str, &str, &str, MsFlags, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        "mode=0755",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
];

/// Mount /proc, /sys, /dev, /dev/pts, /dev/shm, the cgroup2 hierarchy, /run and
/// /tmp; enable the cgroup controllers for children; bring up `lo`.
pub fn early_setup() -> Result<(), Pid1Error> {
    for &(source, target, fstype, flags, data) in MOUNTS {
        std::fs::create_dir_all(target).map_err(|source| Pid1Error::Mkdir { target, source })?;
        let data = (!data.is_empty()).then_some(data);
        match mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => {}
            // Already there (a kernel with CONFIG_DEVTMPFS_MOUNT mounts /dev).
            Err(nix::errno::Errno::EBUSY) => {}
            Err(source) => {
                return Err(Pid1Error::Mount {
                    fstype,
                    target,
                    source,
                })
            }
        }
    }
    // /dev/ptmx must use this devpts instance.
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    // Let container cgroups use every controller the kernel has.
    if let Ok(controllers) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: Vec<String> = controllers
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.join(" "));
    }
    if let Err(e) = LinuxSyscall.loopback_up() {
        console(&format!("berth-agent: warning: failed to bring up lo: {e}"));
    }
    Ok(())
}

/// Write one line to the serial console (falling back to stderr).
pub fn console(line: &str) {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .and_then(|mut c| writeln!(c, "{line}"));
    if written.is_err() {
        eprintln!("{line}");
    }
}

/// Whether the kernel command line asks for a reboot (`berth.exit=reboot`)
/// instead of a power-off to end the VM.
pub fn exit_by_reboot(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|arg| arg == "berth.exit=reboot")
}

/// Sync and end the VM: reboot(RB_AUTOBOOT) when the kernel command line has
/// `berth.exit=reboot` (QEMU with -no-reboot then exits), else RB_POWER_OFF.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let how = if exit_by_reboot(&cmdline) {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot(2) takes a plain integer command; on success it does not return.
    unsafe { libc::reboot(how) };
    console(&format!(
        "berth-agent: reboot failed: {}",
        std::io::Error::last_os_error()
    ));
    // PID 1 must not exit (the kernel would panic); wait forever.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_only_when_asked() {
        assert!(exit_by_reboot("console=ttyS0 berth.exit=reboot quiet"));
        assert!(!exit_by_reboot("console=ttyS0 quiet"));
        assert!(!exit_by_reboot("berth.exit=rebooting"));
        assert!(!exit_by_reboot(""));
    }
}
