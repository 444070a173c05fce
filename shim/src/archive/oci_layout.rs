//! Loading an OCI image layout (`index.json`, `blobs/sha256/`).

use std::fs;
use std::path::PathBuf;

use oci_spec::image::{ImageIndex, MediaType};

use crate::reference::Reference;
use crate::store::host_arch;

use super::docker_archive::DockerManifestEntry;
use super::load::Staging;
use super::{ArchiveError, Loaded, CONTAINERD_NAME, REF_NAME};

fn is_index_type(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex)
        || m.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

pub(super) fn load_oci(st: &mut Staging<'_>) -> Result<Vec<Loaded>, ArchiveError> {
    let index_data = fs::read(st.dir.join("index.json")).map_err(|source| ArchiveError::Read {
        path: PathBuf::from("index.json"),
        source,
    })?;
    let index = ImageIndex::from_reader(&index_data[..]).map_err(|source| ArchiveError::Spec {
        name: "index.json".into(),
        source,
    })?;
    // RepoTags of a docker-compatible manifest.json, by config path, as a fallback.
    let docker: Vec<DockerManifestEntry> = if st.dir.join("manifest.json").is_file() {
        st.read_json("manifest.json").unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut loaded = Vec::new();
    for desc in index.manifests() {
        let mut desc = desc.clone();
        let annotations = desc.annotations().clone().unwrap_or_default();
        if is_index_type(desc.media_type()) {
            let (digest, _) = st.put_digest(desc.digest().as_ref())?;
            let nested = ImageIndex::from_reader(
                &st.store.read_blob(&digest).map_err(ArchiveError::Store)?[..],
            )
            .map_err(|source| ArchiveError::Spec {
                name: digest.clone(),
                source,
            })?;
            desc = nested
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_none_or(|p| {
                        p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
                    })
                })
                .cloned()
                .ok_or_else(|| ArchiveError::NoPlatform(host_arch().to_string()))?;
        }
        let (manifest_digest, _) = st.put_digest(desc.digest().as_ref())?;
        let manifest = st
            .store
            .read_manifest(&manifest_digest)
            .map_err(ArchiveError::Store)?;
        let config_digest = manifest.config().digest().to_string();
        st.put_digest(&config_digest)?;
        for l in manifest.layers() {
            st.put_digest(l.digest().as_ref())?;
        }
        let mut refs = Vec::new();
        let ref_name = annotations.get(REF_NAME);
        if let Some(full) = annotations.get(CONTAINERD_NAME) {
            refs.push(Reference::parse(full).map_err(ArchiveError::Reference)?);
        } else if let Some(name) = ref_name.filter(|n| n.contains('/') || n.contains(':')) {
            refs.push(Reference::parse(name).map_err(ArchiveError::Reference)?);
        } else {
            let hex = config_digest.trim_start_matches("sha256:");
            for e in &docker {
                if e.config.ends_with(hex) || e.config.starts_with(hex) {
                    for t in e.repo_tags.iter().flatten() {
                        refs.push(Reference::parse(t).map_err(ArchiveError::Reference)?);
                    }
                }
            }
        }
        loaded.push(st.commit(&manifest_digest, &refs)?);
    }
    Ok(loaded)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use super::super::loaded_lines;
    use super::super::tests::{load_bytes, new_store, oci_archive};
    use crate::store::tests::{gzip, simple_tar};

    #[test]
    fn loads_handmade_oci_layout() {
        let (_r, store) = new_store();
        let loaded = load_bytes(&store, &oci_archive(&simple_tar(b"oci"))).unwrap();
        assert_eq!(
            loaded_lines(&loaded),
            vec!["Loaded image: localhost:5000/hand/made:v1"]
        );
        let img = store.resolve("localhost:5000/hand/made:v1").unwrap();
        let dirs = store.layer_dirs(&img).unwrap();
        assert_eq!(fs::read(dirs[0].join("bin/hello")).unwrap(), b"oci");
        // gzip'd archive input works too.
        let (_r2, store2) = new_store();
        load_bytes(&store2, &gzip(&oci_archive(&simple_tar(b"oci")))).unwrap();
        assert_eq!(
            store2.resolve("localhost:5000/hand/made:v1").unwrap().id,
            img.id
        );
    }
}
