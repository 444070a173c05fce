//! Turning `linux.namespaces` (and a user namespace's id mappings) into a plan:
//! which namespaces clone(2) creates, which are joined with setns(2), and which
//! are unshared after the joins; and carrying it out in the container process.

mod idmap;
mod joined;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Linux, LinuxNamespace, LinuxNamespaceType};

pub use idmap::IdMapError;
pub(crate) use idmap::IdMaps;
pub(crate) use joined::{check_mappings, ExpectedMaps};

use crate::syscall::{LinuxSyscall, Syscall, SyscallError};

/// A namespace problem.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace type this runtime does not handle.
    #[error("{0} namespaces are not supported")]
    Unsupported(&'static str),
    /// The same type listed twice.
    #[error("linux.namespaces lists the {0} namespace more than once")]
    Duplicate(&'static str),
    /// Unusable uid or gid mappings.
    #[error(transparent)]
    IdMap(#[from] IdMapError),
    /// Opening a namespace file failed.
    #[error("failed to open namespace {path}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// setns(2) failed.
    #[error("failed to join namespace {path}")]
    Join {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// unshare(2) failed.
    #[error("failed to create the {0} namespaces")]
    Unshare(String, #[source] Errno),
    /// The helper that holds a new user namespace could not be created.
    #[error("failed to create the user namespace")]
    UserNamespace(#[source] Errno),
    /// setresuid/setresgid to 0 in the user namespace failed.
    #[error("failed to become root in the user namespace")]
    BecomeRoot(#[source] Errno),
    /// The process that reads a joined user namespace's maps could not be started.
    #[error("failed to start a helper in user namespace {path}")]
    Helper {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: Errno,
    },
    /// A joined user namespace's uid_map or gid_map could not be read.
    #[error("failed to read the {file} of user namespace {path}")]
    ReadMap {
        /// `uid_map` or `gid_map`.
        file: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The failed read.
        #[source]
        source: SyscallError,
    },
    /// Mappings given with a user namespace path that are not the namespace's own.
    #[error("linux.{list} ({given}) do not match user namespace {path}, whose {file} is {actual}")]
    MappingMismatch {
        /// `uidMappings` or `gidMappings`.
        list: &'static str,
        /// The spec's entries.
        given: String,
        /// The namespace file.
        path: PathBuf,
        /// `uid_map` or `gid_map`.
        file: &'static str,
        /// The map file's numbers.
        actual: String,
    },
}

/// Where the container's user namespace comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserNamespace {
    /// Created by clone(2) together with the others; the parent writes its
    /// maps before releasing the process.
    Cloned(IdMaps),
    /// Made ahead by a short-lived helper ([`create_user_namespace`]) and
    /// entered after the other namespaces were joined with the caller's privileges.
    Ahead(IdMaps),
    /// An existing one, joined before anything else (the first entry of `join`);
    /// the mappings the spec gives with it must be its own.
    Joined(ExpectedMaps),
}

/// How the container gets its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// New namespaces created by clone(2).
    pub clone_flags: CloneFlags,
    /// New namespaces created by unshare(2) once the joins are done (only with a
    /// user namespace and something to join: they must belong to the user namespace).
    pub unshare_flags: CloneFlags,
    /// Existing namespaces joined with setns(2), pid excluded: a joined user
    /// namespace first, mount last.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// An existing pid namespace (needs an extra fork to take effect).
    pub join_pid: Option<PathBuf>,
    /// The user namespace, if the container has one.
    pub user: Option<UserNamespace>,
    /// A new cgroup namespace, unshared once the process is in its cgroup.
    pub new_cgroup: bool,
    /// The container has a UTS namespace of its own (so may set its hostname).
    pub own_uts: bool,
    /// The container has a mount namespace of its own or joined.
    pub has_mount: bool,
    /// The container has a new network namespace (whose loopback starts down).
    pub own_net: bool,
}

impl Plan {
    /// The process must fork to be in its pid namespace (a joined one, or one
    /// unshared rather than cloned); the first process reports its child's pid
    /// and exits, and the child is the container's process.
    pub fn forks_into_pid_namespace(&self) -> bool {
        self.join_pid.is_some() || self.unshare_flags.contains(CloneFlags::CLONE_NEWPID)
    }

    /// sysfs may be mounted: always without a user namespace, and with one only
    /// in a new network namespace (which then belongs to the user namespace).
    pub fn may_mount_sysfs(&self) -> bool {
        self.user.is_none() || self.own_net
    }
}

fn flag(typ: LinuxNamespaceType) -> Result<CloneFlags, NamespaceError> {
    Ok(match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Time => return Err(NamespaceError::Unsupported("time")),
    })
}

fn name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Time => "time",
    }
}

/// Check `linux.namespaces` and the id mappings, and decide how each namespace
/// is made. Nothing is created here.
pub(crate) fn plan(linux: Option<&Linux>) -> Result<Plan, NamespaceError> {
    let namespaces: &[LinuxNamespace] = linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    let mut plan = Plan {
        clone_flags: CloneFlags::empty(),
        unshare_flags: CloneFlags::empty(),
        join: Vec::new(),
        join_pid: None,
        user: None,
        new_cgroup: false,
        own_uts: false,
        has_mount: false,
        own_net: false,
    };
    let mut seen = CloneFlags::empty();
    let mut user_path = None;
    let mut new = CloneFlags::empty();
    for ns in namespaces {
        let flag = flag(ns.typ())?;
        if seen.contains(flag) {
            return Err(NamespaceError::Duplicate(name(ns.typ())));
        }
        seen |= flag;
        match (ns.path(), flag) {
            (path, CloneFlags::CLONE_NEWUSER) => user_path = Some(path.clone()),
            (Some(path), CloneFlags::CLONE_NEWPID) => plan.join_pid = Some(path.clone()),
            (Some(path), _) => plan.join.push((flag, path.clone())),
            (None, CloneFlags::CLONE_NEWCGROUP) => plan.new_cgroup = true,
            (None, _) => new |= flag,
        }
    }
    plan.own_uts = new.contains(CloneFlags::CLONE_NEWUTS);
    plan.own_net = new.contains(CloneFlags::CLONE_NEWNET);
    plan.has_mount = seen.contains(CloneFlags::CLONE_NEWNS);
    // Join the mount namespace last: paths after it would resolve inside it.
    plan.join
        .sort_by_key(|(flag, _)| *flag == CloneFlags::CLONE_NEWNS);

    let uid = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();
    plan.user = match user_path {
        None => {
            for (list, maps) in [("uidMappings", uid), ("gidMappings", gid)] {
                if !maps.is_empty() {
                    return Err(IdMapError::WithoutUserNamespace(list).into());
                }
            }
            None
        }
        Some(Some(path)) => {
            // The namespace already has its maps; any in the spec must describe them
            // ([`check_joined_user_namespace`]).
            plan.join.insert(0, (CloneFlags::CLONE_NEWUSER, path));
            Some(UserNamespace::Joined(ExpectedMaps::new(uid, gid)))
        }
        Some(None) => {
            let maps = IdMaps::new(uid, gid)?;
            if plan.join.is_empty() && plan.join_pid.is_none() {
                Some(UserNamespace::Cloned(maps))
            } else {
                Some(UserNamespace::Ahead(maps))
            }
        }
    };
    match plan.user {
        None => plan.clone_flags = new,
        Some(UserNamespace::Cloned(_)) => plan.clone_flags = new | CloneFlags::CLONE_NEWUSER,
        // The new namespaces must belong to the user namespace, entered after the joins.
        Some(_) => plan.unshare_flags = new,
    }
    Ok(plan)
}

/// In the container process, once released: join and create the namespaces
/// clone(2) did not, in the order that gives each the right owner, and become
/// root in the user namespace. `ahead` is the namespace of [`UserNamespace::Ahead`].
/// A pid namespace still needs a fork afterwards ([`Plan::forks_into_pid_namespace`]).
pub(crate) fn enter(
    sys: &dyn Syscall,
    plan: &Plan,
    ahead: Option<BorrowedFd<'_>>,
) -> Result<(), NamespaceError> {
    if let Some(UserNamespace::Cloned(_)) = plan.user {
        become_root(sys)?;
    }
    // A joined user namespace comes first in `join`: the others are then
    // joined (and later created) with its privileges.
    join_with(sys, &plan.join)?;
    if let Some(UserNamespace::Joined(_)) = plan.user {
        become_root(sys)?;
    }
    if let Some(path) = &plan.join_pid {
        join_with(sys, &[(CloneFlags::CLONE_NEWPID, path.clone())])?;
    }
    if let Some(fd) = ahead {
        let what = Path::new("the new user namespace");
        sys.setns(fd, CloneFlags::CLONE_NEWUSER, what)
            .map_err(|e| NamespaceError::Join {
                path: what.to_path_buf(),
                source: errno(&e),
            })?;
        become_root(sys)?;
    }
    if !plan.unshare_flags.is_empty() {
        sys.unshare(plan.unshare_flags)
            .map_err(|e| NamespaceError::Unshare(names(plan.unshare_flags), errno(&e)))?;
    }
    Ok(())
}

/// Before anything is created: the mappings a spec gives with a user namespace
/// path must be that namespace's (see [`check_mappings`]). The caller must be
/// single-threaded.
pub(crate) fn check_joined_user_namespace(
    sys: &dyn Syscall,
    plan: &Plan,
) -> Result<(), NamespaceError> {
    let Some(UserNamespace::Joined(expected)) = &plan.user else {
        return Ok(());
    };
    match plan.join.first() {
        Some((CloneFlags::CLONE_NEWUSER, path)) => check_mappings(sys, path, expected),
        _ => Ok(()),
    }
}

/// `mount, pid, ...` for an error message.
fn names(flags: CloneFlags) -> String {
    let all = [
        (CloneFlags::CLONE_NEWNS, "mount"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWPID, "pid"),
        (CloneFlags::CLONE_NEWNET, "network"),
        (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    ];
    let listed: Vec<&str> = all
        .iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, name)| *name)
        .collect();
    listed.join(", ")
}

/// setresgid/setresuid 0: ids the user namespace maps, so files the set-up
/// creates are owned by the container's root.
fn become_root(sys: &dyn Syscall) -> Result<(), NamespaceError> {
    sys.set_id(Uid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| NamespaceError::BecomeRoot(errno(&e)))
}

/// The errno of a failed namespace call (errors stay small: they travel in
/// every spawn error).
fn errno(err: &SyscallError) -> Errno {
    err.errno().unwrap_or(Errno::EIO)
}

/// Open every namespace file first, then setns(2) into each, in order.
pub(crate) fn join(entries: &[(CloneFlags, PathBuf)]) -> Result<(), NamespaceError> {
    join_with(&LinuxSyscall, entries)
}

fn join_with(sys: &dyn Syscall, entries: &[(CloneFlags, PathBuf)]) -> Result<(), NamespaceError> {
    let mut fds: Vec<(OwnedFd, CloneFlags, &Path)> = Vec::with_capacity(entries.len());
    for (flag, path) in entries {
        let fd = open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| NamespaceError::Open {
            path: path.clone(),
            source,
        })?;
        fds.push((fd, *flag, path));
    }
    for (fd, flag, path) in fds {
        sys.setns(fd.as_fd(), flag, path)
            .map_err(|e| NamespaceError::Join {
                path: path.to_path_buf(),
                source: errno(&e),
            })?;
    }
    Ok(())
}

/// A new cgroup namespace rooted at the current cgroup.
pub(crate) fn unshare_cgroup() -> Result<(), NamespaceError> {
    LinuxSyscall
        .unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| NamespaceError::Unshare("cgroup".into(), errno(&e)))
}

/// A new user namespace with `maps`, for [`UserNamespace::Ahead`]: a helper
/// process is cloned into it, its maps are written, and the namespace is kept
/// by an open descriptor once the helper is gone. The caller must be single-threaded.
pub(crate) fn create_user_namespace(
    sys: &dyn Syscall,
    maps: &IdMaps,
) -> Result<OwnedFd, NamespaceError> {
    let mut stack = vec![0u8; 64 * 1024];
    let hold = Box::new(|| {
        // Gone with the caller if it dies before killing us.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        loop {
            nix::unistd::pause();
        }
    });
    // SAFETY: the caller is single-threaded, so the child's copy of memory is
    // consistent; the child only calls prctl and pause on `stack` (64 KiB is
    // ample) until it is killed, never returning into the parent's frames.
    let pid = unsafe {
        nix::sched::clone(
            hold,
            &mut stack,
            CloneFlags::CLONE_NEWUSER,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(NamespaceError::UserNamespace)?;
    let held = maps
        .write(sys, pid)
        .map_err(NamespaceError::from)
        .and_then(|()| {
            let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|source| NamespaceError::Open { path, source })
        });
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    held
}

#[cfg(test)]
mod tests;
