//! Recording an image whose blobs are all in the store.

use crate::reference::Reference;

use super::db::ImageRecord;
use super::{Image, ImageStore, Layer, StoreError};

impl ImageStore {
    /// Records an image whose manifest, config and layer blobs are all in the store:
    /// unpacks its layers, then (under the lock) adds it and points `references` at it.
    pub fn commit_image(
        &self,
        manifest_digest: &str,
        references: &[Reference],
        repo_digests: &[String],
    ) -> Result<Image, StoreError> {
        let manifest = self.read_manifest(manifest_digest)?;
        let id = manifest.config().digest().to_string();
        let config = self.read_config(&id)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::LayerCount {
                manifest: manifest_digest.to_string(),
                layers: manifest.layers().len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layers: Vec<Layer> = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| Layer {
                digest: d.digest().to_string(),
                diff_id: diff_id.clone(),
                media_type: d.media_type().to_string(),
                size: d.size(),
            })
            .collect();
        for l in &layers {
            self.ensure_layer(l)?;
        }
        let mut record = ImageRecord {
            id: id.clone(),
            manifest_digest: manifest_digest.to_string(),
            repo_digests: repo_digests.to_vec(),
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            created: config.created().clone(),
        };
        self.update(|db| {
            // A concurrent rmi may have collected blobs we rely on.
            for d in [&record.id, &record.manifest_digest]
                .into_iter()
                .chain(record.layers.iter().map(|l| &l.digest))
            {
                if !self.has_blob(d) {
                    return Err(StoreError::BlobMissing(d.clone()));
                }
            }
            if let Some(old) = db.images.get(&id) {
                for d in &old.repo_digests {
                    if !record.repo_digests.contains(d) {
                        record.repo_digests.push(d.clone());
                    }
                }
            }
            db.images.insert(id.clone(), record);
            for r in references {
                db.references.insert(r.to_string(), id.clone());
            }
            Ok(())
        })?;
        self.resolve(&id)
    }
}
