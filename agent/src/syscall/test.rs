//! A [`Syscall`] that records calls instead of making them.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};

use super::{FileKind, Result, Syscall, SyscallError};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// mount(2).
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data.
        data: Option<String>,
    },
    /// umount2(2).
    Umount2(PathBuf, MntFlags),
    /// pivot_root(2).
    PivotRoot(PathBuf, PathBuf),
    /// chdir(2).
    Chdir(PathBuf),
    /// chroot(2).
    Chroot(PathBuf),
    /// setns(2): the namespace type and the path it was opened from.
    Setns(CloneFlags, PathBuf),
    /// unshare(2).
    Unshare(CloneFlags),
    /// mkdir -p.
    CreateDirAll(PathBuf),
    /// Empty file.
    CreateFile(PathBuf),
    /// symlink(2): target, link.
    Symlink(PathBuf, PathBuf),
    /// mknod(2).
    Mknod(PathBuf, SFlag, u32, u64),
    /// chown(2).
    Chown(PathBuf, Option<u32>, Option<u32>),
    /// A file write: path, data.
    WriteFile(PathBuf, String),
    /// A whole-file read.
    ReadFile(PathBuf),
    /// sethostname(2).
    Sethostname(String),
    LoopbackUp,
    /// setrlimit(2).
    SetRlimit(Resource, u64, u64),
    /// prlimit(2) on another process: pid, resource, soft, hard.
    SetRlimitOf(i32, Resource, u64, u64),
    /// setgroups(2).
    SetGroups(Vec<u32>),
    /// setresgid + setresuid.
    SetId(u32, u32),
    /// PR_SET_KEEPCAPS.
    SetKeepcaps(bool),
    /// Bounding-set drop.
    DropBounding(Capability),
    /// Capability set replacement; the capabilities sorted by name.
    SetCapability(String, Vec<String>),
    /// PR_SET_NO_NEW_PRIVS.
    SetNoNewPrivs,
}

/// Records every call; `file_kind` answers from `files`/`missing` (anything else is a directory).
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
    /// Paths that are regular files.
    pub files: HashSet<PathBuf>,
    /// Paths that do not exist.
    pub missing: HashSet<PathBuf>,
    /// What `read_file` returns for a path (others fail with ENOENT).
    pub contents: HashMap<PathBuf, String>,
    /// Mounts whose flags are locked (as mounts inherited into a user namespace
    /// are): `mount_flags` reports them, and a bind remount of that target that
    /// leaves any of them out fails with EPERM (it is still recorded).
    pub locked: HashMap<PathBuf, MsFlags>,
    /// Mount points umount2 refuses with EINVAL (it is still recorded).
    pub busy: HashSet<PathBuf>,
}

impl RecordingSyscall {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Only the mount calls, in order.
    pub fn mounts(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Mount { .. }))
            .collect()
    }

    fn push(&self, call: Call) -> Result<()> {
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

/// Shorthand for building an expected [`Call::Mount`].
pub fn mount_call(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Call {
    Call::Mount {
        source: source.map(PathBuf::from),
        target: PathBuf::from(target),
        fstype: fstype.map(str::to_owned),
        flags,
        data: data.map(str::to_owned),
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        self.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        })?;
        match self.locked.get(target) {
            Some(locked) if flags.contains(MsFlags::MS_REMOUNT) && !flags.contains(*locked) => {
                Err(SyscallError::Errno {
                    op: "mount",
                    target: target.display().to_string(),
                    source: Errno::EPERM,
                })
            }
            _ => Ok(()),
        }
    }
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        self.push(Call::Umount2(target.to_path_buf(), flags))?;
        if self.busy.contains(target) {
            return Err(SyscallError::Errno {
                op: "umount2",
                target: target.display().to_string(),
                source: Errno::EINVAL,
            });
        }
        Ok(())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        self.push(Call::PivotRoot(
            new_root.to_path_buf(),
            put_old.to_path_buf(),
        ))
    }
    fn chdir(&self, path: &Path) -> Result<()> {
        self.push(Call::Chdir(path.to_path_buf()))
    }
    fn chroot(&self, path: &Path) -> Result<()> {
        self.push(Call::Chroot(path.to_path_buf()))
    }
    fn setns(&self, _fd: BorrowedFd<'_>, flag: CloneFlags, what: &Path) -> Result<()> {
        self.push(Call::Setns(flag, what.to_path_buf()))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        self.push(Call::Unshare(flags))
    }
    fn create_dir_all(&self, path: &Path, _mode: Mode) -> Result<()> {
        self.push(Call::CreateDirAll(path.to_path_buf()))
    }
    fn create_file(&self, path: &Path) -> Result<()> {
        self.push(Call::CreateFile(path.to_path_buf()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.push(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
    }
    fn mknod(&self, path: &Path, kind: SFlag, mode: Mode, dev: u64) -> Result<()> {
        self.push(Call::Mknod(path.to_path_buf(), kind, mode.bits(), dev))
    }
    fn chown(&self, path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> Result<()> {
        self.push(Call::Chown(
            path.to_path_buf(),
            uid.map(Uid::as_raw),
            gid.map(Gid::as_raw),
        ))
    }
    fn file_kind(&self, path: &Path) -> Option<FileKind> {
        if self.missing.contains(path) {
            None
        } else if self.files.contains(path) {
            Some(FileKind::File)
        } else {
            Some(FileKind::Dir)
        }
    }
    fn write_file(&self, path: &Path, data: &str) -> Result<()> {
        self.push(Call::WriteFile(path.to_path_buf(), data.to_owned()))
    }
    fn read_file(&self, path: &Path) -> Result<String> {
        self.push(Call::ReadFile(path.to_path_buf()))?;
        self.contents
            .get(path)
            .cloned()
            .ok_or_else(|| SyscallError::Errno {
                op: "read",
                target: path.display().to_string(),
                source: Errno::ENOENT,
            })
    }
    fn mount_flags(&self, path: &Path) -> Result<MsFlags> {
        Ok(self.locked.get(path).copied().unwrap_or(MsFlags::empty()))
    }
    fn sethostname(&self, name: &str) -> Result<()> {
        self.push(Call::Sethostname(name.to_owned()))
    }
    fn loopback_up(&self) -> Result<()> {
        self.push(Call::LoopbackUp)
    }
    fn set_rlimit(&self, resource: Resource, soft: u64, hard: u64) -> Result<()> {
        self.push(Call::SetRlimit(resource, soft, hard))
    }
    fn set_rlimit_of(&self, pid: Pid, resource: Resource, soft: u64, hard: u64) -> Result<()> {
        self.push(Call::SetRlimitOf(pid.as_raw(), resource, soft, hard))
    }
    fn set_groups(&self, gids: &[Gid]) -> Result<()> {
        self.push(Call::SetGroups(gids.iter().map(|g| g.as_raw()).collect()))
    }
    fn set_id(&self, uid: Uid, gid: Gid) -> Result<()> {
        self.push(Call::SetId(uid.as_raw(), gid.as_raw()))
    }
    fn set_keepcaps(&self, keep: bool) -> Result<()> {
        self.push(Call::SetKeepcaps(keep))
    }
    fn drop_bounding(&self, cap: Capability) -> Result<()> {
        self.push(Call::DropBounding(cap))
    }
    fn set_capability(&self, set: CapSet, caps: &CapsHashSet) -> Result<()> {
        let mut names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        names.sort();
        self.push(Call::SetCapability(format!("{set:?}"), names))
    }
    fn set_no_new_privs(&self) -> Result<()> {
        self.push(Call::SetNoNewPrivs)
    }
}
