//! The container's root filesystem: containerd's mounts on `BUNDLE/rootfs`.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;

/// containerd's rootfs mounts could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the rootfs ({fs_type})")]
    Mount {
        fs_type: String,
        #[source]
        source: containerd_shim::Error,
    },
}

/// Mount containerd's rootfs mounts on `bundle/rootfs`; false when there were none.
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<bool, RootfsError> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let target = bundle.join("rootfs");
    if let Err(source) = std::fs::create_dir_all(&target) {
        return Err(RootfsError::CreateDir {
            path: target,
            source,
        });
    }
    for m in mounts {
        containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()),
            Some(m.source.as_str()),
            &m.options,
            &target,
        )
        .map_err(|source| RootfsError::Mount {
            fs_type: m.type_.clone(),
            source,
        })?;
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
