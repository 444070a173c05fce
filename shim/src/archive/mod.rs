//! `berth load` and `berth save`: OCI image layout archives (with a docker-compatible
//! `manifest.json`), and `docker save` archives on input.

mod docker_archive;
mod extract;
mod load;
mod oci_layout;
mod save;

use std::io;
use std::path::PathBuf;

use crate::reference::{Reference, ReferenceError};
use crate::store::{Image, StoreError};

pub use load::{load, loaded_lines};
pub use save::save;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Errors from loading or saving image archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid (optionally compressed) tar archive")]
    Tar {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive entry \"{entry}\" is rejected: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("{0} is neither an OCI image layout nor a docker save archive (it has no index.json or manifest.json)")]
    UnknownFormat(PathBuf),
    #[error("the archive's {name} is malformed")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the archive's {name} is malformed")]
    Spec {
        name: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("the archive refers to {0}, which it does not contain")]
    Missing(String),
    #[error("the archive's index has no image for linux/{0}")]
    NoPlatform(String),
    #[error("the archive names an invalid image reference")]
    Reference(#[source] ReferenceError),
    #[error("the archive contains no image")]
    Empty,
    #[error("cannot load the archive into the image store")]
    Store(#[source] StoreError),
    #[error("cannot save image {name}")]
    Resolve {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One image that `load` brought in.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub image: Image,
    /// The names it was loaded under (may be empty).
    pub references: Vec<Reference>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::fs;

    use super::*;
    use crate::store::blob::sha256_digest;
    use crate::store::tests::gzip;
    use crate::store::ImageStore;

    pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    pub fn hex(d: &str) -> &str {
        d.trim_start_matches("sha256:")
    }

    /// A hand-built OCI layout with one gzip layer.
    pub fn oci_archive(layer: &[u8]) -> Vec<u8> {
        let gz = gzip(layer);
        let config = config_for(&[layer]);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256_digest(&gz), "size": gz.len()}],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": sha256_digest(&manifest), "size": manifest.len(),
                           "annotations": {REF_NAME: "localhost:5000/hand/made:v1"}}],
        }))
        .unwrap();
        let gz_name = format!("blobs/sha256/{}", hex(&sha256_digest(&gz)));
        let cfg_name = format!("blobs/sha256/{}", hex(&sha256_digest(&config)));
        let man_name = format!("blobs/sha256/{}", hex(&sha256_digest(&manifest)));
        tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", &index),
            (&gz_name, &gz),
            (&cfg_name, &config),
            (&man_name, &manifest),
        ])
    }

    pub fn load_bytes(store: &ImageStore, data: &[u8]) -> Result<Vec<Loaded>, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.tar");
        fs::write(&p, data).unwrap();
        load(store, &p)
    }

    pub fn new_store() -> (tempfile::TempDir, ImageStore) {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        (root, store)
    }

    pub fn assert_store_empty(store: &ImageStore) {
        assert!(store.list().unwrap().is_empty());
        for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
            let n = fs::read_dir(store.root().join(sub)).unwrap().count();
            assert_eq!(n, 0, "{sub} is not empty");
        }
    }
}
