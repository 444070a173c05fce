//! Layers unpacked into place: `layers/sha256/<diff id>/`, each unpacked once.

use std::fs::{self, File};
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::blob::{self, digest_hex, HashingReader};
use super::error::{blob_err, io_err};
use super::unpack::{self, OverlayWhiteouts, UnpackError};
use super::{Image, ImageStore, Layer, StoreError};

impl ImageStore {
    /// Unpacked layer directories, bottom layer first; unpacks missing ones.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>, StoreError> {
        image.layers.iter().map(|l| self.ensure_layer(l)).collect()
    }

    /// Unpacks a layer blob into `layers/sha256/<diff id>` unless already there.
    pub fn ensure_layer(&self, layer: &Layer) -> Result<PathBuf, StoreError> {
        let dir = self.layers.join(digest_hex(&layer.diff_id)?);
        if dir.is_dir() {
            return Ok(dir);
        }
        let blob_path = self.blob_path(&layer.digest)?;
        let file = File::open(&blob_path).map_err(blob_err(&layer.digest, &blob_path))?;
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&self.tmp)
            .map_err(io_err(&self.tmp))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err(tmp.path()))?;
        let reader = blob::decompress(BufReader::new(file), &layer.media_type)
            .map_err(io_err(&blob_path))?;
        let mut hashing = HashingReader::new(reader);
        unpack::unpack_layer(&mut hashing, tmp.path(), &OverlayWhiteouts).map_err(|source| {
            StoreError::Unpack {
                digest: layer.digest.clone(),
                source,
            }
        })?;
        let (actual, _) = hashing.finish().map_err(|e| StoreError::Unpack {
            digest: layer.digest.clone(),
            source: UnpackError::Read(e),
        })?;
        if actual != layer.diff_id {
            return Err(StoreError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        let unpacked = tmp.keep();
        if let Err(e) = fs::rename(&unpacked, &dir) {
            let _ = blob::remove_if_exists(&unpacked);
            // Another berth process may have unpacked the same layer meanwhile.
            if !dir.is_dir() {
                return Err(io_err(&dir)(e));
            }
        }
        Ok(dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use oci_spec::image::MediaType;

    use super::super::tests::{simple_tar, tmp_is_empty};
    use super::*;

    #[test]
    fn diff_id_mismatch_is_rejected() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let tar = simple_tar(b"x");
        let digest = store.put_blob(&tar, None).unwrap();
        let layer = Layer {
            digest,
            diff_id: blob::sha256_digest(b"not it"),
            media_type: MediaType::ImageLayer.to_string(),
            size: tar.len() as u64,
        };
        let e = store.ensure_layer(&layer).unwrap_err();
        assert!(matches!(e, StoreError::DiffIdMismatch { .. }), "{e}");
        assert_eq!(fs::read_dir(&store.layers).unwrap().count(), 0);
        assert!(tmp_is_empty(&store));
    }
}
