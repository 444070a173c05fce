//! The container's root filesystem: containerd's mounts on `BUNDLE/rootfs`.

use std::path::Path;

use anyhow::{anyhow, Result};
use containerd_shim::protos::types::mount::Mount;

/// Mount containerd's rootfs mounts on `bundle/rootfs`; false when there were none.
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<bool> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target)?;
    for m in mounts {
        containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()),
            Some(m.source.as_str()),
            &m.options,
            &target,
        )
        .map_err(|e| anyhow!("cannot mount the rootfs ({}): {e}", m.type_))?;
    }
    Ok(true)
}

/// Unmount everything on `bundle/rootfs`.
pub fn unmount(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..16 {
        if nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}
