//! The content-addressed image store.
//!
//! Layout under the root (default `/var/lib/berth`):
//! - `blobs/sha256/<hex>`: manifests, configs and layer blobs, verified while written
//!   into `tmp/` and renamed into place;
//! - `layers/sha256/<diff-id hex>/`: each layer unpacked once, in overlayfs form;
//! - `images.json`: references and image records, rewritten atomically under a flock
//!   on `store.lock`.

pub mod blob;
pub mod changes;
mod commit;
mod db;
mod error;
mod gc;
mod image;
mod import;
mod layers;
pub mod unpack;

use std::fs;
use std::path::{Path, PathBuf};

pub use blob::{BlobWriter, Compression};
pub use changes::ChangeError;
use error::io_err;
pub use error::StoreError;
pub use image::{descriptor, host_arch, short_digest, Image, Layer, RemoveEvent};

/// The content-addressed image store (see the module documentation).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    tmp: PathBuf,
    db_path: PathBuf,
    lock_path: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers").join("sha256"),
            tmp: root.join("tmp"),
            db_path: root.join("images.json"),
            lock_path: root.join("store.lock"),
        };
        for dir in [&store.blobs, &store.layers, &store.tmp] {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scratch space on the same filesystem as the store.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::io::Write;

    use super::unpack::tests::TarBuilder;
    use super::*;
    use crate::reference::Reference;

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Builds a one-layer image from `layer_tar` into `store` (via import).
    pub fn make_image(store: &ImageStore, name: &str, layer_tar: &[u8]) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rootfs.tar.gz");
        fs::write(&p, gzip(layer_tar)).unwrap();
        store
            .import_rootfs(
                &p,
                &Reference::parse(name).unwrap(),
                &["CMD [\"sh\"]".to_string()],
            )
            .unwrap()
    }

    pub fn simple_tar(content: &[u8]) -> Vec<u8> {
        TarBuilder::new()
            .dir("bin/")
            .file("bin/hello", content)
            .finish()
    }

    pub fn tmp_is_empty(store: &ImageStore) -> bool {
        fs::read_dir(store.tmp_dir()).unwrap().next().is_none()
    }

    #[test]
    fn import_resolve_tag_list_remove() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let img = make_image(&store, "busybox", &simple_tar(b"hi"));
        assert!(img.id.starts_with("sha256:"));
        assert_eq!(
            img.config.config().as_ref().unwrap().cmd().as_deref(),
            Some(&["sh".to_string()][..])
        );
        for name in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            &img.id,
            &img.id[7..19],
            &format!("sha256:{}", &img.id[7..12]),
            &format!("busybox@{}", img.manifest_digest),
        ] {
            assert_eq!(store.resolve(name).unwrap().id, img.id, "{name}");
        }
        let e = store.resolve("nothere:1").unwrap_err();
        assert!(
            matches!(e, StoreError::ImageNotFound(ref s) if s == "nothere:1"),
            "{e}"
        );

        let dirs = store.layer_dirs(&img).unwrap();
        assert_eq!(dirs.len(), 1);
        assert_eq!(fs::read(dirs[0].join("bin/hello")).unwrap(), b"hi");

        store
            .tag("busybox", &Reference::parse("localhost:5000/bb:1").unwrap())
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].references.len(), 2);

        // By id with two refs: refused unless forced.
        assert!(matches!(
            store.untag_or_remove(&img.id, false),
            Err(StoreError::MultipleReferences { .. })
        ));
        // Untag one: image stays.
        let ev = store.untag_or_remove("localhost:5000/bb:1", false).unwrap();
        assert_eq!(
            ev,
            vec![RemoveEvent::Untagged("localhost:5000/bb:1".into())]
        );
        assert!(store.resolve("busybox").is_ok());
        // Last ref: image, blobs and layers go.
        let ev = store.untag_or_remove("busybox", false).unwrap();
        assert_eq!(
            ev,
            vec![
                RemoveEvent::Untagged("busybox:latest".into()),
                RemoveEvent::Deleted(img.id.clone())
            ]
        );
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(&store.blobs).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&store.layers).unwrap().count(), 0);
    }
}
