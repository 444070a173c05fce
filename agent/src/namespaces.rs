//! Turning `linux.namespaces` into clone flags and namespaces to join.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

/// A namespace problem.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace type this runtime does not handle.
    #[error("{0} namespaces are not supported")]
    Unsupported(&'static str),
    /// Opening a namespace file failed.
    #[error("failed to open namespace {path}")]
    Open {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// setns(2) failed.
    #[error("failed to join namespace {path}")]
    Join {
        /// The namespace file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// unshare(2) failed.
    #[error("failed to unshare the cgroup namespace")]
    Unshare(#[source] nix::errno::Errno),
}

/// How the container gets its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// New namespaces created by clone(2).
    pub clone_flags: CloneFlags,
    /// Existing namespaces joined with setns(2), pid excluded.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// An existing pid namespace (needs an extra fork to take effect).
    pub join_pid: Option<PathBuf>,
    /// A new cgroup namespace, unshared once the process is in its cgroup.
    pub new_cgroup: bool,
    /// The container has a UTS namespace of its own (so may set its hostname).
    pub own_uts: bool,
    /// The container has a mount namespace of its own or joined.
    pub has_mount: bool,
    /// The container has a new network namespace (whose loopback starts down).
    pub own_net: bool,
}

fn flag(typ: LinuxNamespaceType) -> Result<CloneFlags, NamespaceError> {
    Ok(match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::User => return Err(NamespaceError::Unsupported("user")),
        LinuxNamespaceType::Time => return Err(NamespaceError::Unsupported("time")),
    })
}

pub(crate) fn plan(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
    let mut plan = Plan {
        clone_flags: CloneFlags::empty(),
        join: Vec::new(),
        join_pid: None,
        new_cgroup: false,
        own_uts: false,
        has_mount: false,
        own_net: false,
    };
    for ns in namespaces {
        let flag = flag(ns.typ())?;
        match (ns.path(), flag) {
            (Some(path), CloneFlags::CLONE_NEWPID) => plan.join_pid = Some(path.clone()),
            (Some(path), _) => plan.join.push((flag, path.clone())),
            (None, CloneFlags::CLONE_NEWCGROUP) => plan.new_cgroup = true,
            (None, _) => plan.clone_flags |= flag,
        }
        if flag == CloneFlags::CLONE_NEWUTS && ns.path().is_none() {
            plan.own_uts = true;
        }
        if flag == CloneFlags::CLONE_NEWNS {
            plan.has_mount = true;
        }
        if flag == CloneFlags::CLONE_NEWNET && ns.path().is_none() {
            plan.own_net = true;
        }
    }
    // Join the mount namespace last: paths after it would resolve inside it.
    plan.join
        .sort_by_key(|(flag, _)| *flag == CloneFlags::CLONE_NEWNS);
    Ok(plan)
}

/// Open every namespace file first, then setns(2) into each, in order.
pub(crate) fn join(entries: &[(CloneFlags, PathBuf)]) -> Result<(), NamespaceError> {
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
        nix::sched::setns(&fd, flag).map_err(|source| NamespaceError::Join {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// A new cgroup namespace rooted at the current cgroup.
pub(crate) fn unshare_cgroup() -> Result<(), NamespaceError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(NamespaceError::Unshare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(path.map(PathBuf::from));
        ns
    }

    #[test]
    fn new_and_joined_namespaces() {
        let plan = plan(&[
            ns(LinuxNamespaceType::Mount, Some("/proc/9/ns/mnt")),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/proc/9/ns/net")),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .expect("plan");
        assert_eq!(
            plan.clone_flags,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS
        );
        assert_eq!(
            plan.join,
            vec![
                (CloneFlags::CLONE_NEWNET, PathBuf::from("/proc/9/ns/net")),
                (CloneFlags::CLONE_NEWNS, PathBuf::from("/proc/9/ns/mnt")),
            ]
        );
        assert!(plan.new_cgroup && plan.own_uts && plan.has_mount);
        assert!(
            !plan.own_net,
            "a joined network namespace is not ours to configure"
        );
        assert_eq!(plan.join_pid, None);
    }

    #[test]
    fn a_new_network_namespace_is_ours() {
        let plan = plan(&[ns(LinuxNamespaceType::Network, None)]).expect("plan");
        assert!(plan.own_net);
        assert_eq!(plan.clone_flags, CloneFlags::CLONE_NEWNET);
    }

    #[test]
    fn user_namespaces_are_refused() {
        assert!(matches!(
            plan(&[ns(LinuxNamespaceType::User, None)]),
            Err(NamespaceError::Unsupported("user"))
        ));
    }
}
