//! `berth load`: staging an archive's blobs into the store, all or nothing.

use std::fs::{self, File};
use std::path::Path;

use serde::Deserialize;

use crate::reference::Reference;
use crate::store::unpack::safe_relative;
use crate::store::ImageStore;

use super::docker_archive::load_docker;
use super::extract::extract;
use super::oci_layout::load_oci;
use super::{ArchiveError, Loaded};

/// Stages blobs into the store and remembers them for cleanup on failure.
pub(super) struct Staging<'a> {
    pub(super) store: &'a ImageStore,
    pub(super) dir: &'a Path,
    pub(super) written: Vec<String>,
    pub(super) diff_ids: Vec<String>,
}

impl Staging<'_> {
    /// Copies the file at `rel` into the store, verifying `expected` if given.
    pub(super) fn put(
        &mut self,
        rel: &str,
        expected: Option<&str>,
    ) -> Result<(String, u64), ArchiveError> {
        let rel_path = safe_relative(Path::new(rel))
            .ok()
            .flatten()
            .ok_or_else(|| ArchiveError::Missing(rel.to_string()))?;
        let path = self.dir.join(rel_path);
        let mut f = File::open(&path).map_err(|_| ArchiveError::Missing(rel.to_string()))?;
        let out = self
            .store
            .put_blob_from(&mut f, expected)
            .map_err(ArchiveError::Store)?;
        self.written.push(out.0.clone());
        Ok(out)
    }

    pub(super) fn put_digest(&mut self, digest: &str) -> Result<(String, u64), ArchiveError> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| ArchiveError::Missing(digest.to_string()))?;
        self.put(&format!("blobs/sha256/{hex}"), Some(digest))
    }

    pub(super) fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        rel: &str,
    ) -> Result<T, ArchiveError> {
        let data =
            fs::read(self.dir.join(rel)).map_err(|_| ArchiveError::Missing(rel.to_string()))?;
        serde_json::from_slice(&data).map_err(|source| ArchiveError::Json {
            name: rel.to_string(),
            source,
        })
    }

    pub(super) fn commit(
        &mut self,
        manifest_digest: &str,
        refs: &[Reference],
    ) -> Result<Loaded, ArchiveError> {
        // Remember the diff ids so that a failed unpack is cleaned up too.
        let manifest = self
            .store
            .read_manifest(manifest_digest)
            .map_err(ArchiveError::Store)?;
        if let Ok(config) = self.store.read_config(manifest.config().digest().as_ref()) {
            self.diff_ids
                .extend(config.rootfs().diff_ids().iter().cloned());
        }
        let image = self
            .store
            .commit_image(manifest_digest, refs, &[])
            .map_err(ArchiveError::Store)?;
        Ok(Loaded {
            image,
            references: refs.to_vec(),
        })
    }
}

/// Loads every image of an OCI layout or `docker save` archive (tar, tar.gz, tar.zst).
/// On any error, nothing it added stays in the store.
pub fn load(store: &ImageStore, input: &Path) -> Result<Vec<Loaded>, ArchiveError> {
    let tmp = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(store.tmp_dir())
        .map_err(|source| ArchiveError::Write {
            path: store.tmp_dir().to_path_buf(),
            source,
        })?;
    extract(input, tmp.path())?;
    let mut staging = Staging {
        store,
        dir: tmp.path(),
        written: Vec::new(),
        diff_ids: Vec::new(),
    };
    let result = if tmp.path().join("index.json").is_file() {
        load_oci(&mut staging)
    } else if tmp.path().join("manifest.json").is_file() {
        load_docker(&mut staging)
    } else {
        Err(ArchiveError::UnknownFormat(input.to_path_buf()))
    };
    let result = result.and_then(|loaded| {
        if loaded.is_empty() {
            Err(ArchiveError::Empty)
        } else {
            Ok(loaded)
        }
    });
    if result.is_err() {
        // Images committed before the failure are rolled back too.
        if let Err(e) = store.discard_unreferenced(&staging.written, &staging.diff_ids) {
            tracing::warn!("cannot clean up after a failed load: {e}");
        }
    }
    result
}

/// What `load` prints for each image, like Docker.
pub fn loaded_lines(loaded: &[Loaded]) -> Vec<String> {
    let mut out = Vec::new();
    for l in loaded {
        if l.references.is_empty() {
            out.push(format!("Loaded image ID: {}", l.image.id));
        }
        for r in &l.references {
            out.push(format!("Loaded image: {}", r.short()));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{assert_store_empty, load_bytes, new_store, oci_archive};
    use super::*;
    use crate::store::tests::simple_tar;

    #[test]
    fn rejects_garbage_and_digest_mismatch() {
        let (_r, store) = new_store();
        let e = load_bytes(&store, &b"not a tar archive at all\n".repeat(100)).unwrap_err();
        assert!(
            matches!(e, ArchiveError::Tar { .. } | ArchiveError::UnknownFormat(_)),
            "{e}"
        );
        // Corrupt a blob: its name no longer matches its content.
        let mut data = oci_archive(&simple_tar(b"ok"));
        let needle = b"\"Cmd\":[\"sh\"]";
        let at = data
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        data[at + 8] = b'x';
        let e = load_bytes(&store, &data).unwrap_err();
        assert!(format!("{e:?}").contains("DigestMismatch"), "{e:?}");
        assert_store_empty(&store);
    }
}
