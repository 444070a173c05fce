//! Image layers as read-only ext4 disk images, built once per layer (keyed by its diff id) in
//! `<berth root>/layer-images/<diff id hex>.ext4` and shared by every VM that uses the layer.
//! The layer folders are in overlayfs form (whiteouts are 0:0 character devices, opaque folders
//! carry `trusted.overlay.opaque`); `mkfs.ext4 -d` copies device nodes and xattrs as they are,
//! so the guest's overlayfs reads them the same way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::VmError;

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Bytes and entries a folder tree takes, counted the way ext4 will store it (4 KiB blocks).
fn measure(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut bytes = 0;
    let mut entries = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            entries += 1;
            bytes += meta.size().div_ceil(BLOCK) * BLOCK;
            if meta.is_dir() {
                bytes += BLOCK;
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// A filesystem size with room for ext4's own metadata: 25% more, 256 bytes of inode table per
/// entry, and 4 MiB, in whole MiB.
fn image_size(bytes: u64, entries: u64) -> u64 {
    let raw = bytes + bytes / 4 + entries * 256 + 4 * MIB;
    raw.div_ceil(MIB) * MIB
}

/// The disk image of each layer folder (bottom first), building those that are missing.
pub fn layer_images(root: &Path, layers: &[PathBuf]) -> Result<Vec<PathBuf>, VmError> {
    let folder = root.join("layer-images");
    std::fs::create_dir_all(&folder)
        .map_err(|e| VmError::Disk(format!("cannot create {}: {e}", folder.display())))?;
    layers
        .iter()
        .map(|layer| {
            let name = layer
                .file_name()
                .ok_or_else(|| VmError::Disk(format!("bad layer folder {}", layer.display())))?;
            let image = folder.join(format!("{}.ext4", name.to_string_lossy()));
            if !image.is_file() {
                build(layer, &image)?;
            }
            Ok(image)
        })
        .collect()
}

/// Builds `image` from `layer` under a temporary name, then renames it into place, so a build
/// that is killed leaves nothing behind under the final name (and racing builds both succeed).
fn build(layer: &Path, image: &Path) -> Result<(), VmError> {
    let (bytes, entries) = measure(layer)
        .map_err(|e| VmError::Disk(format!("cannot measure layer {}: {e}", layer.display())))?;
    let inodes = entries + entries / 4 + 64;
    let mut size = image_size(bytes, entries);
    let parent = image.parent().unwrap_or(Path::new("."));
    let started = std::time::Instant::now();
    // A tree with many tiny files may need more than the estimate: grow and retry.
    for attempt in 0..3 {
        let tmp = tempfile::Builder::new()
            .prefix(".building-")
            .suffix(".ext4")
            .tempfile_in(parent)
            .map_err(|e| {
                VmError::Disk(format!("cannot create a file in {}: {e}", parent.display()))
            })?;
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-N"])
            .arg(inodes.to_string())
            .arg("-d")
            .arg(layer)
            .args(["-E", "root_owner=0:0", "-L", "berth-layer"])
            .arg(tmp.path())
            .arg(format!("{}k", size / 1024))
            .output()
            .map_err(|e| VmError::Disk(format!("cannot run mkfs.ext4 (install e2fsprogs): {e}")))?;
        if out.status.success() {
            tmp.persist(image).map_err(|e| {
                VmError::Disk(format!("cannot rename into {}: {e}", image.display()))
            })?;
            tracing::debug!(
                layer = %layer.display(),
                image = %image.display(),
                size,
                elapsed = ?started.elapsed(),
                "built a layer disk image"
            );
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if attempt == 2 {
            return Err(VmError::Disk(format!(
                "mkfs.ext4 could not build a disk image of layer {}: {stderr}",
                layer.display()
            )));
        }
        tracing::debug!(%stderr, size, "mkfs.ext4 failed; retrying with a larger image");
        size *= 2;
    }
    Ok(())
}

/// The container's own writable disk (`--storage-opt size=`): a sparse ext4 image in its
/// folder, made once and kept across restarts, so the writable layer survives `stop`/`start`
/// like a Docker container's; it goes when the container's folder goes.
pub fn scratch_disk(container_dir: &Path, size: u64) -> Result<PathBuf, VmError> {
    let image = container_dir.join("scratch.ext4");
    if image.exists() {
        return Ok(image);
    }
    let tmp = container_dir.join(".scratch.ext4.building");
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "root_owner=0:0",
            "-L",
            "berth-scratch",
        ])
        .arg(&tmp)
        .arg(format!("{}k", size.div_ceil(1024)))
        .output()
        .map_err(|e| VmError::Disk(format!("cannot run mkfs.ext4 (install e2fsprogs): {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(VmError::Disk(format!(
            "mkfs.ext4 could not make a {size}-byte scratch disk: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, &image)
        .map_err(|e| VmError::Disk(format!("cannot rename into {}: {e}", image.display())))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_leave_room() {
        assert_eq!(image_size(0, 0), 4 * MIB);
        let size = image_size(10 * MIB, 1000);
        assert!(
            size >= 12 * MIB + 256_000 && size.is_multiple_of(MIB),
            "{size}"
        );
    }

    #[test]
    fn measures_blocks_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"x").unwrap();
        std::fs::write(dir.path().join("g"), vec![0u8; 5000]).unwrap();
        let (bytes, entries) = measure(dir.path()).unwrap();
        assert_eq!(entries, 3);
        assert!(bytes >= 4 * BLOCK, "{bytes}");
    }
}
