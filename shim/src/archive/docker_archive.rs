//! Loading a `docker save` archive (`manifest.json`, a tar per layer).

use std::fs::File;
use std::io::Read;

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::reference::Reference;
use crate::store::{descriptor, Compression};

use super::load::Staging;
use super::{ArchiveError, Loaded};

/// `manifest.json` of `docker save`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub(super) layers: Vec<String>,
}

pub(super) fn load_docker(st: &mut Staging<'_>) -> Result<Vec<Loaded>, ArchiveError> {
    let entries: Vec<DockerManifestEntry> = st.read_json("manifest.json")?;
    let mut loaded = Vec::new();
    for e in entries {
        let (config_digest, config_size) = st.put(&e.config, None)?;
        let mut layers: Vec<Descriptor> = Vec::new();
        for l in &e.layers {
            let (digest, size) = st.put(l, None)?;
            let path = st.store.blob_path(&digest).map_err(ArchiveError::Store)?;
            let mut head = [0u8; 4];
            let n = File::open(&path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(|source| ArchiveError::Read { path, source })?;
            let media = Compression::from_magic(&head[..n]).oci_media_type();
            layers.push(descriptor(media, size, &digest).map_err(ArchiveError::Store)?);
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(
                descriptor(MediaType::ImageConfig, config_size, &config_digest)
                    .map_err(ArchiveError::Store)?,
            )
            .layers(layers)
            .build()
            .map_err(|source| ArchiveError::Spec {
                name: "manifest.json".into(),
                source,
            })?;
        let bytes = serde_json::to_vec(&manifest).map_err(|source| ArchiveError::Json {
            name: "manifest.json".into(),
            source,
        })?;
        let manifest_digest = st
            .store
            .put_blob(&bytes, None)
            .map_err(ArchiveError::Store)?;
        st.written.push(manifest_digest.clone());
        let refs = e
            .repo_tags
            .iter()
            .flatten()
            .map(|t| Reference::parse(t).map_err(ArchiveError::Reference))
            .collect::<Result<Vec<_>, _>>()?;
        loaded.push(st.commit(&manifest_digest, &refs)?);
    }
    Ok(loaded)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::loaded_lines;
    use super::super::tests::{config_for, load_bytes, new_store};
    use crate::store::blob::sha256_digest;
    use crate::store::tests::simple_tar;

    #[test]
    fn loads_docker_save_archive() {
        let (_r, store) = new_store();
        let layer = simple_tar(b"docker");
        let config = config_for(&[&layer]);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "abc.json", "RepoTags": ["busybox:latest", "other/x:2"],
            "Layers": ["l1/layer.tar", "l2/layer.tar"],
        }]))
        .unwrap();
        // l2/layer.tar is a symlink to ../l1/layer.tar like old docker save output; a
        // two-layer config is needed then.
        let config2 = config_for(&[&layer, &layer]);
        let _ = config;
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("manifest.json", &manifest[..]),
            ("abc.json", &config2[..]),
            ("l1/layer.tar", &layer[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "l2/layer.tar", "../l1/layer.tar")
            .unwrap();
        let data = b.into_inner().unwrap();
        let loaded = load_bytes(&store, &data).unwrap();
        assert_eq!(
            loaded_lines(&loaded),
            vec!["Loaded image: busybox:latest", "Loaded image: other/x:2"]
        );
        let img = store.resolve("busybox").unwrap();
        assert_eq!(img.id, sha256_digest(&config2));
        assert_eq!(img.layers.len(), 2);
        assert_eq!(store.resolve("other/x:2").unwrap().id, img.id);
    }
}
