//! Building the container's filesystem: root mount, spec mounts, /dev, pivot_root,
//! masked and read-only paths.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::{Mount, Spec};

use crate::create::Rootfs;
use crate::devices;
use crate::mountopts;
use crate::syscall::{join_under, FileKind, Syscall, SyscallError};

pub mod no_mount_namespace;
mod nopivot;
pub use nopivot::move_root;

/// A failure while building the container's filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call made for one step failed.
    #[error("failed to {step}")]
    Step {
        /// The step, e.g. `mount proc on /proc`.
        step: String,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
    /// A bind mount whose source is absent.
    #[error("bind mount source {0} does not exist")]
    MissingSource(PathBuf),
    /// Overlay layer paths that cannot be put in mount options.
    #[error("overlay option string is invalid: {0}")]
    Overlay(String),
    /// An unknown `rootfsPropagation` value.
    #[error("unknown rootfs propagation {0:?}")]
    Propagation(String),
}

type Result<T> = std::result::Result<T, RootfsError>;

/// How the filesystem is built beyond what the spec says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootfsOptions {
    /// The container has a user namespace: device nodes are bind-mounted from
    /// the host (mknod is not permitted there).
    pub user_namespace: bool,
    /// sysfs may not be mounted (a user namespace without a network namespace
    /// of its own): sysfs entries become a read-only rbind of the host's /sys.
    pub bind_sysfs: bool,
    /// Enter the root with MS_MOVE onto / and chroot instead of pivot_root.
    pub no_pivot: bool,
}

pub(crate) fn step<T>(
    what: impl FnOnce() -> String,
    result: std::result::Result<T, SyscallError>,
) -> Result<T> {
    result.map_err(|source| RootfsError::Step {
        step: what(),
        source,
    })
}

/// Build the whole filesystem for `spec` and pivot into it. Runs in the
/// container's fresh mount namespace.
pub fn setup(
    sys: &dyn Syscall,
    spec: &Spec,
    rootfs: &Rootfs,
    options: &RootfsOptions,
) -> Result<()> {
    let root = prepare(sys, spec, rootfs, options)?;
    finish(sys, spec, &root, options)
}

/// The first half of [`setup`]: the root, the spec's mounts and /dev, before
/// pivot_root. Returns the new root.
pub(crate) fn prepare(
    sys: &dyn Syscall,
    spec: &Spec,
    rootfs: &Rootfs,
    options: &RootfsOptions,
) -> Result<PathBuf> {
    let linux = spec.linux().as_ref();
    // Refuse a bad name before touching anything.
    root_propagation(spec)?;
    make_private(sys)?;
    let root = mount_root(sys, rootfs)?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for mount in mounts {
        if options.bind_sysfs && mount.typ().as_deref() == Some("sysfs") {
            mount_entry(sys, &root, &host_sysfs(mount))?;
        } else {
            mount_entry(sys, &root, mount)?;
        }
    }
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        let devices = linux
            .and_then(|l| l.devices().as_deref())
            .unwrap_or_default();
        let how = if options.user_namespace {
            devices::Nodes::Bind
        } else {
            devices::Nodes::Mknod
        };
        devices::create(sys, &root, devices, how)?;
    }
    Ok(root)
}

/// A sysfs entry as a read-only recursive bind of the host's /sys, for a user
/// namespace that may not mount sysfs; the entry's other flags are kept.
fn host_sysfs(mount: &Mount) -> Mount {
    let mut options: Vec<String> = mount
        .options()
        .iter()
        .flatten()
        .filter(|o| !matches!(o.as_str(), "rw" | "ro" | "bind" | "rbind"))
        .cloned()
        .collect();
    options.extend(["rbind".to_owned(), "ro".to_owned()]);
    let mut bind = mount.clone();
    bind.set_typ(Some("bind".to_owned()));
    bind.set_source(Some(PathBuf::from("/sys")));
    bind.set_options(Some(options));
    bind
}

/// The second half of [`setup`]: pivot_root into `root` (or move it onto /
/// and chroot), then sysctls, masked and read-only paths.
pub(crate) fn finish(
    sys: &dyn Syscall,
    spec: &Spec,
    root: &Path,
    options: &RootfsOptions,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    if options.no_pivot {
        move_root(sys, root)?;
    } else {
        pivot(sys, root)?;
    }
    if let Some(flags) = root_propagation(spec)? {
        step(
            || "set the propagation of /".into(),
            sys.mount(None, Path::new("/"), None, flags, None),
        )?;
    }
    if let Some(linux) = linux {
        set_sysctls(sys, linux.sysctl().as_ref())?;
        mask_paths(sys, linux.masked_paths().as_deref().unwrap_or_default())?;
        readonly_paths(sys, linux.readonly_paths().as_deref().unwrap_or_default())?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        step(
            || "remount / read-only".into(),
            remount(sys, Path::new("/"), flags),
        )?;
    }
    Ok(())
}

/// A bind remount of `target` with `flags`. When the kernel refuses it (EPERM:
/// the mount came from a more privileged namespace, so its nosuid, nodev, noexec,
/// read-only and atime flags are locked), retry keeping the flags it has, as runc does.
fn remount(
    sys: &dyn Syscall,
    target: &Path,
    flags: MsFlags,
) -> std::result::Result<(), SyscallError> {
    let first = sys.mount(None, target, None, flags, None);
    match first {
        Err(e) if e.errno() == Some(nix::errno::Errno::EPERM) => {
            let Ok(current) = sys.mount_flags(target) else {
                return Err(e);
            };
            let atime = MsFlags::MS_NOATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME
                | MsFlags::MS_NODIRATIME;
            let mut kept = flags | (current & !atime);
            if current.intersects(atime) {
                kept = kept.difference(atime) | (current & atime);
            }
            if kept == flags {
                return Err(e);
            }
            sys.mount(None, target, None, kept, None)
        }
        other => other,
    }
}

/// Stop mount events from propagating back to the host: `/` becomes rprivate
/// in the new mount namespace, whatever `rootfsPropagation` asks for the
/// container's root (applied after pivot_root by [`finish`]).
pub fn make_private(sys: &dyn Syscall) -> Result<()> {
    step(
        || "make / private".into(),
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
    )
}

/// The propagation flags `linux.rootfsPropagation` asks for, if any.
fn root_propagation(spec: &Spec) -> Result<Option<MsFlags>> {
    let name = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref());
    match name {
        None | Some("") => Ok(None),
        Some(name) => mountopts::propagation(name)
            .map(Some)
            .ok_or_else(|| RootfsError::Propagation(name.to_owned())),
    }
}

/// Mount the root filesystem and return where it is.
pub fn mount_root(sys: &dyn Syscall, rootfs: &Rootfs) -> Result<PathBuf> {
    match rootfs {
        Rootfs::Path(path) => {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            step(
                || format!("bind {} onto itself", path.display()),
                sys.mount(Some(path), path, None, flags, None),
            )?;
            Ok(path.clone())
        }
        Rootfs::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            let data = overlay_options(lower, upper, work)?;
            step(
                || format!("mount overlay on {}", target.display()),
                sys.mount(
                    Some(Path::new("overlay")),
                    target,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(&data),
                ),
            )?;
            Ok(target.clone())
        }
    }
}

fn overlay_options(lower: &[PathBuf], upper: &Path, work: &Path) -> Result<String> {
    let mut lowers = Vec::with_capacity(lower.len());
    for path in lower.iter().map(|p| p.to_string_lossy()) {
        if path.contains([',', ':']) {
            return Err(RootfsError::Overlay(format!(
                "layer path {path} has ',' or ':'"
            )));
        }
        lowers.push(path);
    }
    if lowers.is_empty() {
        return Err(RootfsError::Overlay("no lower layers".into()));
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    // The kernel copies at most one page of mount options.
    if data.len() >= 4096 {
        return Err(RootfsError::Overlay(format!(
            "{} bytes for {} layers exceeds a page",
            data.len(),
            lowers.len()
        )));
    }
    Ok(data)
}

/// Mount one spec entry below `root`, creating its mount point.
pub fn mount_entry(sys: &dyn Syscall, root: &Path, mount: &Mount) -> Result<()> {
    let dest = join_under(root, mount.destination());
    let opts = mountopts::parse(mount.options().as_deref().unwrap_or_default());
    let typ = mount.typ().as_deref();
    let what = |verb: &str| format!("{verb} {}", dest.display());
    if opts.bind || typ == Some("bind") || typ == Some("cgroup") {
        // v1 `cgroup` entries become a bind of the host hierarchy.
        let source = match (typ, mount.source()) {
            (Some("cgroup"), _) => PathBuf::from("/sys/fs/cgroup"),
            (_, Some(source)) => source.clone(),
            (_, None) => return Err(RootfsError::MissingSource(mount.destination().clone())),
        };
        match sys.file_kind(&source) {
            Some(FileKind::Dir) => step(|| what("create"), sys.create_dir_all(&dest, dir_mode()))?,
            Some(FileKind::File) => step(|| what("create"), sys.create_file(&dest))?,
            None => return Err(RootfsError::MissingSource(source)),
        }
        let mut flags = MsFlags::MS_BIND;
        if opts.recursive || typ == Some("cgroup") {
            flags |= MsFlags::MS_REC;
        }
        step(
            || format!("bind {} on {}", source.display(), dest.display()),
            sys.mount(Some(&source), &dest, None, flags, None),
        )?;
        let again = opts.flags.difference(MsFlags::MS_REMOUNT);
        if !again.is_empty() {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | again;
            step(|| what("remount"), remount(sys, &dest, flags))?;
        }
    } else {
        step(|| what("create"), sys.create_dir_all(&dest, dir_mode()))?;
        let source = mount.source().clone().or_else(|| typ.map(PathBuf::from));
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        step(
            || format!("mount {} on {}", typ.unwrap_or("none"), dest.display()),
            sys.mount(source.as_deref(), &dest, typ, opts.flags, data),
        )?;
    }
    if !opts.propagation.is_empty() {
        step(
            || what("set propagation of"),
            sys.mount(None, &dest, None, opts.propagation, None),
        )?;
    }
    Ok(())
}

fn dir_mode() -> Mode {
    Mode::from_bits_truncate(0o755)
}

/// pivot_root into `root` and detach the old root.
pub fn pivot(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let dot = Path::new(".");
    step(|| format!("chdir to {}", root.display()), sys.chdir(root))?;
    step(|| "pivot_root".into(), sys.pivot_root(dot, dot))?;
    step(
        || "detach the old root".into(),
        sys.umount2(dot, MntFlags::MNT_DETACH),
    )?;
    step(|| "chdir to /".into(), sys.chdir(Path::new("/")))
}

/// Apply `linux.sysctl` through /proc/sys (before /proc/sys turns read-only),
/// in key order so the result does not depend on map order.
pub fn set_sysctls(
    sys: &dyn Syscall,
    sysctl: Option<&std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut entries: Vec<_> = sysctl.into_iter().flatten().collect();
    entries.sort();
    for (key, value) in entries {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        step(|| format!("set sysctl {key}"), sys.write_file(&path, value))?;
    }
    Ok(())
}

/// Hide paths: /dev/null over files, a read-only tmpfs over directories.
pub fn mask_paths(sys: &dyn Syscall, paths: &[String]) -> Result<()> {
    for path in paths.iter().map(Path::new) {
        let what = || format!("mask {}", path.display());
        match sys.file_kind(path) {
            None => {}
            Some(FileKind::Dir) => step(
                what,
                sys.mount(
                    Some(Path::new("tmpfs")),
                    path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                ),
            )?,
            Some(FileKind::File) => step(
                what,
                sys.mount(
                    Some(Path::new("/dev/null")),
                    path,
                    None,
                    MsFlags::MS_BIND,
                    None,
                ),
            )?,
        }
    }
    Ok(())
}

/// Make paths read-only: bind each onto itself, then remount it read-only.
pub fn readonly_paths(sys: &dyn Syscall, paths: &[String]) -> Result<()> {
    for path in paths.iter().map(Path::new) {
        if sys.file_kind(path).is_none() {
            continue;
        }
        let what = || format!("make {} read-only", path.display());
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        step(what, sys.mount(Some(path), path, None, bind, None))?;
        let flags = bind | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        step(what, remount(sys, path, flags))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "rootfs_tests.rs"]
mod tests;
