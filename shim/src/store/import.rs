//! `docker import`: a one-layer image from a rootfs tar.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use oci_spec::image::{
    Arch, Config, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::reference::Reference;

use super::blob::{self, HashingReader};
use super::error::io_err;
use super::{changes, descriptor, host_arch, Compression, Image, ImageStore, StoreError};

impl ImageStore {
    /// `docker import FILE REF --change ..`: a one-layer image from a rootfs tar (plain,
    /// gzip or zstd).
    pub fn import_rootfs(
        &self,
        tar: &Path,
        reference: &Reference,
        changes: &[String],
    ) -> Result<Image, StoreError> {
        let mut cfg = Config::default();
        changes::apply_changes(&mut cfg, changes)?;
        if cfg.env().is_none() {
            cfg.set_env(Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ]));
        }
        let mut file = File::open(tar).map_err(io_err(tar))?;
        let (layer_digest, layer_size) = self.put_blob_from(&mut file, None)?;
        let mut written = vec![layer_digest.clone()];
        let result = (|| {
            let blob_path = self.blob_path(&layer_digest)?;
            let mut reader = BufReader::new(File::open(&blob_path).map_err(io_err(&blob_path))?);
            let compression = Compression::from_magic(
                io::BufRead::fill_buf(&mut reader).map_err(io_err(&blob_path))?,
            );
            let media_type = compression.oci_media_type();
            let dec = blob::decompress(reader, media_type.as_ref()).map_err(io_err(&blob_path))?;
            let (diff_id, _) = HashingReader::new(dec)
                .finish()
                .map_err(io_err(&blob_path))?;
            let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let config = ImageConfigurationBuilder::default()
                .created(created)
                .architecture(Arch::from(host_arch()))
                .os(Os::Linux)
                .config(cfg)
                .rootfs(
                    RootFsBuilder::default()
                        .typ("layers")
                        .diff_ids(vec![diff_id])
                        .build()
                        .map_err(StoreError::Spec)?,
                )
                .build()
                .map_err(StoreError::Spec)?;
            let config_bytes = to_json(&config, tar)?;
            let config_digest = self.put_blob(&config_bytes, None)?;
            written.push(config_digest.clone());
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(descriptor(
                    MediaType::ImageConfig,
                    config_bytes.len() as u64,
                    &config_digest,
                )?)
                .layers(vec![descriptor(media_type, layer_size, &layer_digest)?])
                .build()
                .map_err(StoreError::Spec)?;
            let manifest_bytes = to_json(&manifest, tar)?;
            let manifest_digest = self.put_blob(&manifest_bytes, None)?;
            written.push(manifest_digest.clone());
            self.commit_image(&manifest_digest, std::slice::from_ref(reference), &[])
        })();
        if result.is_err() {
            let _ = self.discard_unreferenced(&written, &[]);
        }
        result
    }
}

/// `value` as JSON; an error names the tar being imported.
fn to_json(value: &impl serde::Serialize, tar: &Path) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Database {
        path: tar.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use super::super::tests::tmp_is_empty;
    use super::super::unpack::tests::TarBuilder;
    use super::*;

    #[test]
    fn bad_layer_import_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("evil.tar");
        fs::write(&p, TarBuilder::new().file("../evil", b"x").finish()).unwrap();
        let e = store
            .import_rootfs(&p, &Reference::parse("evil").unwrap(), &[])
            .unwrap_err();
        assert!(matches!(e, StoreError::Unpack { .. }), "{e}");
        assert_eq!(fs::read_dir(&store.blobs).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&store.layers).unwrap().count(), 0);
        assert!(tmp_is_empty(&store));
        assert!(store.list().unwrap().is_empty());
    }
}
