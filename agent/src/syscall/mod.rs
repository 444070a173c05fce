//! The system calls container set-up needs, behind a trait.
//!
//! [`LinuxSyscall`] performs them for real; [`test::RecordingSyscall`] records
//! them so that mount, rootfs and process logic can be unit-tested without root.

mod linux;
pub mod test;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};

pub use linux::LinuxSyscall;

/// A failed system call.
#[derive(Debug, thiserror::Error)]
pub enum SyscallError {
    /// A call that failed with an errno.
    #[error("{op} {target} failed")]
    Errno {
        /// The operation, e.g. `mount`.
        op: &'static str,
        /// What it was applied to.
        target: String,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A capability operation that failed.
    #[error("{op} {target} failed")]
    Caps {
        /// The operation, e.g. `capset`.
        op: &'static str,
        /// What it was applied to.
        target: String,
        /// The `caps` crate's error.
        #[source]
        source: caps::errors::CapsError,
    },
}

impl SyscallError {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SyscallError::Errno { source, .. } => Some(*source),
            SyscallError::Caps { .. } => None,
        }
    }
}

/// The result of a [`Syscall`] method.
pub type Result<T> = std::result::Result<T, SyscallError>;

/// What a path names, as far as set-up cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// Anything else (regular file, device node, socket...).
    File,
}

/// The system calls used while setting up a container.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> Result<()>;
    /// chroot(2).
    fn chroot(&self, path: &Path) -> Result<()>;
    /// setns(2) into the namespace `fd` refers to; `what` names it for errors.
    fn setns(&self, fd: BorrowedFd<'_>, flag: CloneFlags, what: &Path) -> Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> Result<()>;
    /// `mkdir -p` with the given mode for new directories.
    fn create_dir_all(&self, path: &Path, mode: Mode) -> Result<()>;
    /// Create an empty file (a bind-mount point) if nothing exists at `path`.
    fn create_file(&self, path: &Path) -> Result<()>;
    /// symlink(2): `link` pointing at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// mknod(2).
    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> Result<()>;
    /// chown(2).
    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()>;
    /// What `path` is, following symlinks; `None` if it does not exist.
    fn file_kind(&self, path: &Path) -> Option<FileKind>;
    /// Write `data` to an existing file (a /proc/sys knob) in one write(2).
    fn write_file(&self, path: &Path, data: &str) -> Result<()>;
    /// The whole text of a file (a /proc table).
    fn read_file(&self, path: &Path) -> Result<String>;
    /// The flags a later bind remount of the mount holding `path` must keep
    /// (nosuid, nodev, noexec, read-only, atime), from statvfs(3).
    fn mount_flags(&self, path: &Path) -> Result<MsFlags>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> Result<()>;
    /// Bring the loopback interface of this network namespace up.
    fn loopback_up(&self) -> Result<()>;
    /// setrlimit(2).
    fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> Result<()>;
    /// prlimit(2) on another process.
    fn set_rlimit_of(&self, pid: Pid, resource: Resource, soft: u64, hard: u64) -> Result<()>;
    /// setgroups(2).
    fn set_groups(&self, gids: &[Gid]) -> Result<()>;
    /// setresgid(2) then setresuid(2).
    fn set_id(&self, uid: Uid, gid: Gid) -> Result<()>;
    /// prctl(PR_SET_KEEPCAPS).
    fn set_keepcaps(&self, keep: bool) -> Result<()>;
    /// Drop one capability from the bounding set.
    fn drop_bounding(&self, cap: Capability) -> Result<()>;
    /// Replace a capability set (effective, permitted, inheritable or ambient).
    fn set_capability(&self, set: CapSet, caps: &CapsHashSet) -> Result<()>;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn set_no_new_privs(&self) -> Result<()>;
}

pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A path joined below `root`, treating `path` as if `root` were `/`.
pub fn join_under(root: &Path, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    root.join(relative)
}
