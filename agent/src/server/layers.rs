//! The guest side of a container's root filesystem: read-only layer disks,
//! the writable scratch space, and the overlay arguments for the library.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::create::Rootfs;
use crate::protocol::{GuestRootfs, Upper};

/// A failure preparing a container's filesystems.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// No layer was given.
    #[error("the root filesystem has no layers")]
    NoLayers,
    /// A directory could not be created.
    #[error("failed to create {path}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer or scratch path is neither a directory nor a block device.
    #[error("{path} is neither a block device nor a directory")]
    BadSource {
        /// The path given by the host.
        path: String,
        /// Why stat failed, if it did.
        #[source]
        source: Option<std::io::Error>,
    },
    /// mount(2) failed.
    #[error("failed to mount {source_path} on {target}")]
    Mount {
        /// What was mounted.
        source_path: String,
        /// Where.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
}

/// What was set up for one container, to hand to the library and to undo.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The overlay arguments.
    pub(crate) rootfs: Rootfs,
    /// Mount points made here, innermost last.
    mounts: Vec<PathBuf>,
    /// Directories made here, to remove (when empty) afterwards, parents first.
    dirs: Vec<PathBuf>,
}

fn mkdir(path: &Path, dirs: &mut Vec<PathBuf>) -> Result<(), LayerError> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| LayerError::Mkdir {
        path: path.to_path_buf(),
        source,
    })?;
    dirs.push(path.to_path_buf());
    Ok(())
}

enum Source {
    Dir(PathBuf),
    Device,
}

fn classify(path: &str) -> Result<Source, LayerError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| LayerError::BadSource {
        path: path.to_owned(),
        source: Some(e),
    })?;
    if meta.is_dir() {
        Ok(Source::Dir(PathBuf::from(path)))
    } else if meta.file_type().is_block_device() {
        Ok(Source::Device)
    } else {
        Err(LayerError::BadSource {
            path: path.to_owned(),
            source: None,
        })
    }
}

fn mount_ext4(
    device: &str,
    target: &Path,
    flags: MsFlags,
    mounts: &mut Vec<PathBuf>,
) -> Result<(), LayerError> {
    mount(Some(device), target, Some("ext4"), flags, None::<&str>).map_err(|source| {
        LayerError::Mount {
            source_path: device.to_owned(),
            target: target.to_path_buf(),
            source,
        }
    })?;
    mounts.push(target.to_path_buf());
    Ok(())
}

/// Mount the layers read-only under `dir/layers/<n>` (directories are used in
/// place), make the scratch space (`dir/scratch`, tmpfs or a disk) with
/// `upper` and `work` in it, and the mount point `dir/rootfs`.
pub(crate) fn prepare(dir: &Path, spec: &GuestRootfs) -> Result<Prepared, LayerError> {
    let mut prepared = Prepared {
        rootfs: Rootfs::Path(PathBuf::new()),
        mounts: Vec::new(),
        dirs: Vec::new(),
    };
    match prepare_into(dir, spec, &mut prepared) {
        Ok(rootfs) => {
            prepared.rootfs = rootfs;
            Ok(prepared)
        }
        Err(e) => {
            prepared.undo();
            Err(e)
        }
    }
}

fn prepare_into(dir: &Path, spec: &GuestRootfs, p: &mut Prepared) -> Result<Rootfs, LayerError> {
    if spec.layers.is_empty() {
        return Err(LayerError::NoLayers);
    }
    mkdir(dir, &mut p.dirs)?;
    let mut lower = Vec::new();
    for (n, layer) in spec.layers.iter().enumerate() {
        match classify(layer)? {
            Source::Dir(path) => lower.push(path),
            Source::Device => {
                let target = dir.join("layers").join(n.to_string());
                mkdir(&target, &mut p.dirs)?;
                mount_ext4(layer, &target, MsFlags::MS_RDONLY, &mut p.mounts)?;
                lower.push(target);
            }
        }
    }
    // overlayfs wants the top-most layer first.
    lower.reverse();
    let scratch = match &spec.upper {
        Upper::Tmpfs { size_bytes } => {
            let target = dir.join("scratch");
            mkdir(&target, &mut p.dirs)?;
            let data = match size_bytes {
                Some(size) => format!("mode=0755,size={size}"),
                None => "mode=0755".to_owned(),
            };
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(data.as_str()),
            )
            .map_err(|source| LayerError::Mount {
                source_path: "tmpfs".into(),
                target: target.clone(),
                source,
            })?;
            p.mounts.push(target.clone());
            target
        }
        Upper::Device { path } => match classify(path)? {
            Source::Dir(dir) => dir,
            Source::Device => {
                let target = dir.join("scratch");
                mkdir(&target, &mut p.dirs)?;
                mount_ext4(path, &target, MsFlags::empty(), &mut p.mounts)?;
                target
            }
        },
    };
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    let target = dir.join("rootfs");
    for d in [&upper, &work, &target] {
        mkdir(d, &mut p.dirs)?;
    }
    Ok(Rootfs::Overlay {
        lower,
        upper,
        work,
        target,
    })
}

impl Prepared {
    /// Unmount what was mounted and remove the (then empty) directories made;
    /// best effort. Contents of a scratch directory given by the host stay.
    pub(crate) fn undo(&mut self) {
        for target in self.mounts.drain(..).rev() {
            if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
                tracing::warn!("failed to unmount {}: {e}", target.display());
            }
        }
        for dir in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}
