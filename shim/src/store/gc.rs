//! Removing images, and collecting the blobs and layers no image uses any more.

use std::fs;

use crate::reference::Reference;

use super::blob::{self, digest_hex};
use super::db::ImageRecord;
use super::{ImageStore, RemoveEvent, StoreError};

impl ImageStore {
    /// `rmi`: removes the reference `name_or_id`; deletes the image when its last
    /// reference goes, or when given its id (several references need `force`). Blobs and
    /// layers no other image uses are removed with it.
    pub fn untag_or_remove(
        &self,
        name_or_id: &str,
        force: bool,
    ) -> Result<Vec<RemoveEvent>, StoreError> {
        let mut events = Vec::new();
        let mut garbage: Option<ImageRecord> = None;
        let kept = self.update(|db| {
            let tag = Reference::parse(name_or_id)
                .ok()
                .filter(|r| r.digest().is_none() && db.references.contains_key(&r.to_string()));
            let (id, untag) = match tag {
                Some(r) => {
                    let id = db
                        .references
                        .get(&r.to_string())
                        .cloned()
                        .unwrap_or_default();
                    let others = db.refs_of(&id).len() > 1;
                    let untag = vec![r.to_string()];
                    if others {
                        db.references.remove(&r.to_string());
                        events.push(RemoveEvent::Untagged(r.short()));
                        return Ok(db.in_use());
                    }
                    (id, untag)
                }
                None => {
                    let id = db.find_id(name_or_id)?;
                    let refs = db.refs_of(&id);
                    if refs.len() > 1 && !force {
                        return Err(StoreError::MultipleReferences {
                            id: name_or_id.to_string(),
                        });
                    }
                    (id, refs)
                }
            };
            for r in untag {
                db.references.remove(&r);
                let shown = Reference::parse(&r).map(|r| r.short()).unwrap_or(r);
                events.push(RemoveEvent::Untagged(shown));
            }
            if let Some(rec) = db.images.remove(&id) {
                for d in &rec.repo_digests {
                    let shown = Reference::parse(d).map(|r| r.short()).unwrap_or(d.clone());
                    events.push(RemoveEvent::Untagged(shown));
                }
                events.push(RemoveEvent::Deleted(id.clone()));
                garbage = Some(rec);
            }
            Ok(db.in_use())
        });
        let (blobs_kept, layers_kept) = kept?;
        if let Some(rec) = garbage {
            let blobs: Vec<String> = [rec.id.clone(), rec.manifest_digest.clone()]
                .into_iter()
                .chain(rec.layers.iter().map(|l| l.digest.clone()))
                .collect();
            let diff_ids: Vec<String> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
            let _lock = self.lock(true)?;
            // Re-read: another process may have added an image sharing these blobs.
            let (blobs_kept2, layers_kept2) = self.read_db()?.in_use();
            let blobs: Vec<String> = blobs
                .into_iter()
                .filter(|b| !blobs_kept.contains(b) && !blobs_kept2.contains(b))
                .collect();
            let diff_ids: Vec<String> = diff_ids
                .into_iter()
                .filter(|d| !layers_kept.contains(d) && !layers_kept2.contains(d))
                .collect();
            self.remove_content(&blobs, &diff_ids);
        }
        Ok(events)
    }

    fn remove_content(&self, blobs: &[String], diff_ids: &[String]) {
        for b in blobs {
            if let Ok(p) = self.blob_path(b) {
                if let Err(e) = blob::remove_if_exists(&p) {
                    tracing::warn!("cannot remove blob {}: {e}", p.display());
                }
            }
        }
        for d in diff_ids {
            let Ok(hex) = digest_hex(d) else { continue };
            let dir = self.layers.join(hex);
            if !dir.exists() {
                continue;
            }
            // Rename first so that a half-deleted layer never looks complete.
            let doomed = self.tmp.join(format!("gc-{hex}-{}", std::process::id()));
            let target = match fs::rename(&dir, &doomed) {
                Ok(()) => doomed,
                Err(_) => dir,
            };
            if let Err(e) = blob::remove_if_exists(&target) {
                tracing::warn!("cannot remove layer {}: {e}", target.display());
            }
        }
    }

    /// Removes the given blobs and unpacked layers unless an image uses them (cleanup
    /// after a failed pull, load or import).
    pub fn discard_unreferenced(
        &self,
        blobs: &[String],
        diff_ids: &[String],
    ) -> Result<(), StoreError> {
        let _lock = self.lock(true)?;
        let (blobs_kept, layers_kept) = self.read_db()?.in_use();
        let blobs: Vec<String> = blobs
            .iter()
            .filter(|b| !blobs_kept.contains(*b))
            .cloned()
            .collect();
        let diff_ids: Vec<String> = diff_ids
            .iter()
            .filter(|d| !layers_kept.contains(*d))
            .cloned()
            .collect();
        self.remove_content(&blobs, &diff_ids);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{make_image, simple_tar};
    use super::*;

    #[test]
    fn gc_keeps_shared_content() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let tar = simple_tar(b"shared");
        let a = make_image(&store, "a", &tar);
        let b = make_image(&store, "b", &tar);
        assert_ne!(a.id, b.id); // different creation times
        assert_eq!(a.layers[0].digest, b.layers[0].digest);
        store.untag_or_remove("a", false).unwrap();
        let dirs = store.layer_dirs(&store.resolve("b").unwrap()).unwrap();
        assert!(dirs[0].join("bin/hello").exists());
        assert!(store.has_blob(&b.layers[0].digest));
    }
}
