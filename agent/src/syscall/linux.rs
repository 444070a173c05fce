//! [`Syscall`] on the running kernel.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};

use super::{display, FileKind, Result, Syscall, SyscallError};

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn errno(op: &'static str, target: impl Into<String>) -> impl FnOnce(Errno) -> SyscallError {
    let target = target.into();
    move |source| SyscallError::Errno { op, target, source }
}

fn io_errno(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

fn caps_err(
    op: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(caps::errors::CapsError) -> SyscallError {
    let target = target.into();
    move |source| SyscallError::Caps { op, target, source }
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
            .map_err(errno("mount", display(target)))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(errno("umount2", display(target)))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(errno("pivot_root", display(new_root)))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(errno("chdir", display(path)))
    }

    fn chroot(&self, path: &Path) -> Result<()> {
        nix::unistd::chroot(path).map_err(errno("chroot", display(path)))
    }

    fn setns(&self, fd: BorrowedFd<'_>, flag: CloneFlags, what: &Path) -> Result<()> {
        nix::sched::setns(fd, flag).map_err(errno("setns", display(what)))
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        nix::sched::unshare(flags).map_err(errno("unshare", format!("{flags:?}")))
    }

    fn create_dir_all(&self, path: &Path, mode: Mode) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode.bits())
            .create(path)
            .map_err(|e| errno("mkdir", display(path))(io_errno(&e)))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent, Mode::from_bits_truncate(0o755))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(|e| errno("create", display(path))(io_errno(&e)))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| errno("symlink", display(link))(io_errno(&e)))
    }

    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, mode, dev).map_err(errno("mknod", display(path)))
    }

    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()> {
        nix::unistd::chown(path, uid, gid).map_err(errno("chown", display(path)))
    }

    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::metadata(path).ok()?;
        Some(if meta.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        })
    }

    fn write_file(&self, path: &Path, data: &str) -> Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map_err(|e| errno("write", display(path))(io_errno(&e)))
    }

    fn read_file(&self, path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| errno("read", display(path))(io_errno(&e)))
    }

    fn mount_flags(&self, path: &Path) -> Result<MsFlags> {
        let stat = nix::sys::statvfs::statvfs(path).map_err(errno("statvfs", display(path)))?;
        Ok(remount_flags(stat.flags().bits()))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(errno("sethostname", name))
    }

    fn loopback_up(&self) -> Result<()> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        use std::os::fd::AsRawFd;

        let sock = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(errno("socket", "lo"))?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `request`,
        // which is a valid ifreq for the whole call; `sock` is an open socket.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
            return Err(errno("SIOCGIFFLAGS", "lo")(Errno::last()));
        }
        // SAFETY: after SIOCGIFFLAGS the flags member of the union is the initialised one.
        unsafe {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: SIOCSIFFLAGS only reads `request`, valid for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
            return Err(errno("SIOCSIFFLAGS", "lo")(Errno::last()));
        }
        Ok(())
    }

    fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> Result<()> {
        nix::sys::resource::setrlimit(resource, soft, hard)
            .map_err(errno("setrlimit", format!("{resource:?}")))
    }

    fn set_rlimit_of(&self, pid: Pid, resource: Resource, soft: u64, hard: u64) -> Result<()> {
        let limit = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: prlimit64(2) reads `limit`, valid for the call, and writes nothing
        // (the old-limit pointer is null); the other arguments are plain integers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                pid.as_raw(),
                resource as libc::c_int,
                &limit as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if rc < 0 {
            return Err(errno("prlimit", format!("{resource:?} of {pid}"))(
                Errno::last(),
            ));
        }
        Ok(())
    }

    fn set_groups(&self, gids: &[Gid]) -> Result<()> {
        nix::unistd::setgroups(gids).map_err(errno("setgroups", format!("{gids:?}")))
    }

    fn set_id(&self, uid: Uid, gid: Gid) -> Result<()> {
        nix::unistd::setresgid(gid, gid, gid).map_err(errno("setresgid", gid.to_string()))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(errno("setresuid", uid.to_string()))
    }

    fn set_keepcaps(&self, keep: bool) -> Result<()> {
        nix::sys::prctl::set_keepcaps(keep)
            .map_err(errno("prctl(PR_SET_KEEPCAPS)", keep.to_string()))
    }

    fn drop_bounding(&self, cap: Capability) -> Result<()> {
        // Capabilities this kernel does not know are not in the set to begin with.
        if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            return Ok(());
        }
        caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop bounding", cap.to_string()))
    }

    fn set_capability(&self, set: CapSet, caps: &CapsHashSet) -> Result<()> {
        caps::set(None, set, caps).map_err(caps_err("capset", format!("{set:?}")))
    }

    fn set_no_new_privs(&self) -> Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(errno("prctl(PR_SET_NO_NEW_PRIVS)", "self"))
    }
}

/// The statvfs(3) flags a bind remount must repeat, as mount(2) flags. The values
/// are the kernel's `ST_*` constants (libc lacks some of them on some targets).
fn remount_flags(st_flags: libc::c_ulong) -> MsFlags {
    const TABLE: &[(libc::c_ulong, MsFlags)] = &[
        (1, MsFlags::MS_RDONLY),
        (2, MsFlags::MS_NOSUID),
        (4, MsFlags::MS_NODEV),
        (8, MsFlags::MS_NOEXEC),
        (1024, MsFlags::MS_NOATIME),
        (2048, MsFlags::MS_NODIRATIME),
        (4096, MsFlags::MS_RELATIME),
    ];
    TABLE
        .iter()
        .filter(|(bit, _)| st_flags & bit != 0)
        .fold(MsFlags::empty(), |acc, (_, flag)| acc | *flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_flags_become_mount_flags() {
        assert_eq!(
            remount_flags(1 | 2 | 4 | 8 | 4096 | 32),
            MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        assert_eq!(
            remount_flags(1024 | 2048),
            MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME
        );
        // The running system agrees with its own mount table for /proc.
        let flags = LinuxSyscall
            .mount_flags(Path::new("/proc"))
            .expect("statvfs /proc");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let options = mountinfo
            .lines()
            .rev()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.get(4) == Some(&"/proc"))
            .and_then(|f| f.get(5).map(|o| o.to_string()))
            .expect("/proc in mountinfo");
        for (name, flag) in [
            ("ro", MsFlags::MS_RDONLY),
            ("nosuid", MsFlags::MS_NOSUID),
            ("nodev", MsFlags::MS_NODEV),
            ("noexec", MsFlags::MS_NOEXEC),
            ("relatime", MsFlags::MS_RELATIME),
            ("noatime", MsFlags::MS_NOATIME),
        ] {
            let listed = options.split(',').any(|o| o == name);
            assert_eq!(flags.contains(flag), listed, "{name} in {options}");
        }
    }
}
