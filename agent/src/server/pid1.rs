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
    /// Moving from the initramfs to a tmpfs root failed.
    #[error("failed to leave the initramfs: {step}")]
    SwitchRoot {
        /// What was being done.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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

/// The argument the agent re-executes itself with once it runs from a tmpfs root.
pub const SWITCHED_ROOT_ARG: &str = "--switched-root";

/// Where the tmpfs that becomes the new root is prepared.
const NEW_ROOT: &str = "/newroot";

/// Linux refuses pivot_root(2) while the root is the initramfs (rootfs), and every
/// container start pivots. So, like switch_root(8): copy this binary into a fresh tmpfs,
/// move that tmpfs onto `/`, chroot into it and execute the copy with
/// [`SWITCHED_ROOT_ARG`]. Returns only on failure.
pub fn leave_initramfs() -> Pid1Error {
    let fail =
        |step: &'static str| move |source: std::io::Error| Pid1Error::SwitchRoot { step, source };
    let errno = |step: &'static str| {
        move |e: nix::errno::Errno| Pid1Error::SwitchRoot {
            step,
            source: e.into(),
        }
    };
    let result = (|| {
        std::fs::create_dir_all(NEW_ROOT).map_err(fail("create /newroot"))?;
        mount(
            Some("tmpfs"),
            NEW_ROOT,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .map_err(errno("mount a tmpfs on /newroot"))?;
        // The kernel starts the initramfs's /init; /proc (for /proc/self/exe) is not mounted yet.
        let me = Path::new("/init");
        std::fs::copy(me, Path::new(NEW_ROOT).join("init")).map_err(fail("copy the agent"))?;
        // The initramfs copy only takes memory from here on.
        let _ = std::fs::remove_file(me);
        for dir in ["dev", "proc", "sys", "run", "tmp"] {
            std::fs::create_dir_all(Path::new(NEW_ROOT).join(dir))
                .map_err(fail("create a directory"))?;
        }
        nix::unistd::chdir(NEW_ROOT).map_err(errno("enter /newroot"))?;
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(errno("move /newroot onto /"))?;
        nix::unistd::chroot(".").map_err(errno("chroot into the new root"))?;
        nix::unistd::chdir("/").map_err(errno("enter the new root"))?;
        let init = c"/init";
        let arg =
            std::ffi::CString::new(SWITCHED_ROOT_ARG).map_err(|e| fail("build argv")(e.into()))?;
        nix::unistd::execv(init, &[init, arg.as_c_str()]).map_err(errno("execute the copy"))?;
        Ok::<(), Pid1Error>(())
    })();
    match result {
        Err(e) => e,
        Ok(()) => Pid1Error::SwitchRoot {
            step: "execute the copy",
            source: std::io::Error::other("execv returned"),
        },
    }
}

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
    if !Path::new("/proc/cmdline").exists() {
        // Failing before the early mounts: /proc is needed to read how to end the VM.
        let _ = std::fs::create_dir_all("/proc");
        let _ = mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
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
