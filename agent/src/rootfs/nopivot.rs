//! `--no-pivot`: enter the root by moving it onto / and chrooting, for roots
//! where pivot_root fails (a ramdisk).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{step, Result};
use crate::syscall::Syscall;

/// Instead of pivot_root (which fails when the current root is a ramdisk): hide
/// the host's proc and sysfs mounts, move `root` onto / and chroot into it. The
/// old root stays mounted below, out of reach.
pub fn move_root(sys: &dyn Syscall, root: &Path) -> Result<()> {
    hide_host_kernel_filesystems(sys, root)?;
    step(|| format!("chdir to {}", root.display()), sys.chdir(root))?;
    step(
        || format!("move {} onto /", root.display()),
        sys.mount(Some(root), Path::new("/"), None, MsFlags::MS_MOVE, None),
    )?;
    step(
        || "chroot into the new root".into(),
        sys.chroot(Path::new(".")),
    )?;
    step(|| "chdir to /".into(), sys.chdir(Path::new("/")))
}

/// The host's proc and sysfs mounts outside `root`, which stay in the mount
/// namespace under a chroot: detach them, or where that is refused (mounts
/// locked into a user namespace) cover them with an empty read-only tmpfs, so
/// the container's own proc and sysfs mounts are not counted as revealing more
/// than the kernel allows.
fn hide_host_kernel_filesystems(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let mountinfo = step(
        || "read /proc/self/mountinfo".into(),
        sys.read_file(Path::new("/proc/self/mountinfo")),
    )?;
    let mut hidden: Vec<PathBuf> = Vec::new();
    // Innermost first: mountinfo lists a mount after the one it sits on.
    for (point, fstype) in mountinfo.lines().rev().filter_map(mount_point_and_type) {
        if !matches!(fstype.as_str(), "proc" | "sysfs")
            || point.starts_with(root)
            || hidden.iter().any(|h| point.starts_with(h))
        {
            continue;
        }
        let detached = sys.umount2(&point, MntFlags::MNT_DETACH);
        if detached.is_err() {
            step(
                || format!("hide {}", point.display()),
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &point,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None,
                ),
            )?;
        }
        hidden.push(point);
    }
    Ok(())
}

/// Field 5 (the mount point, with `\040`-style escapes) and the type after
/// the ` - ` separator of a /proc/self/mountinfo line.
fn mount_point_and_type(line: &str) -> Option<(PathBuf, String)> {
    let (before, after) = line.split_once(" - ")?;
    let point = before.split(' ').nth(4)?;
    let fstype = after.split(' ').next()?;
    Some((PathBuf::from(unescape(point)), fstype.to_owned()))
}

/// Undo mountinfo's octal escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
