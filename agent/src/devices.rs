//! The standard nodes and symlinks of a container's /dev.

use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::rootfs::{step, RootfsError};
use crate::syscall::{join_under, Syscall};

/// Nodes bind-mounted from the host unless the spec lists them itself.
pub(crate) const DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

const SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

/// How the spec's device nodes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nodes {
    /// mknod(2) with the spec's type, numbers, mode and owner.
    Mknod,
    /// Bind-mount the host's node at the same path onto an empty file: inside
    /// a user namespace mknod is not permitted (runc does the same).
    Bind,
}

/// Populate `root`/dev: spec devices as `nodes` says, the defaults by bind
/// mount, then symlinks.
pub(crate) fn create(
    sys: &dyn Syscall,
    root: &Path,
    devices: &[LinuxDevice],
    nodes: Nodes,
) -> Result<(), RootfsError> {
    for device in devices {
        match nodes {
            Nodes::Mknod => make_node(sys, root, device)?,
            Nodes::Bind => bind_node(sys, root, device.path())?,
        }
    }
    for host in DEFAULT_DEVICES.iter().map(Path::new) {
        if devices.iter().any(|d| d.path() == host) {
            continue;
        }
        bind_node(sys, root, host)?;
    }
    for (target, link) in SYMLINKS {
        let link = join_under(root, Path::new(link));
        match sys.symlink(Path::new(target), &link) {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {}
            other => step(|| format!("create symlink {}", link.display()), other)?,
        }
    }
    Ok(())
}

/// Bind the host's node `host` onto the same path below `root`.
fn bind_node(sys: &dyn Syscall, root: &Path, host: &Path) -> Result<(), RootfsError> {
    let dest = join_under(root, host);
    let what = || format!("bind {} into the container", host.display());
    step(what, sys.create_file(&dest))?;
    let flags = nix::mount::MsFlags::MS_BIND;
    step(what, sys.mount(Some(host), &dest, None, flags, None))
}

fn make_node(sys: &dyn Syscall, root: &Path, device: &LinuxDevice) -> Result<(), RootfsError> {
    let path: PathBuf = join_under(root, device.path());
    let kind = match device.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let mode = Mode::from_bits_truncate(device.file_mode().unwrap_or(0o666));
    // Majors and minors are never negative in a valid spec; treat nonsense as 0.
    let major = u64::try_from(device.major()).unwrap_or(0);
    let minor = u64::try_from(device.minor()).unwrap_or(0);
    let what = || format!("create device {}", path.display());
    if let Some(parent) = path.parent() {
        step(
            what,
            sys.create_dir_all(parent, Mode::from_bits_truncate(0o755)),
        )?;
    }
    step(what, sys.mknod(&path, kind, mode, makedev(major, minor)))?;
    if device.uid().is_some() || device.gid().is_some() {
        let uid = device.uid().map(Uid::from_raw);
        let gid = device.gid().map(Gid::from_raw);
        step(what, sys.chown(&path, uid, gid))?;
    }
    Ok(())
}
