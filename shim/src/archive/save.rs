//! `berth save`: an OCI image layout tar, with a `manifest.json` for `docker load`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageIndexBuilder, ImageManifest, MediaType};

use crate::reference::Reference;
use crate::store::{Image, ImageStore, StoreError};

use super::docker_archive::DockerManifestEntry;
use super::{ArchiveError, CONTAINERD_NAME, REF_NAME};

/// Writes the named images as an OCI image layout tar at `output` (plus a
/// `manifest.json` that `docker load` understands). The file appears atomically.
pub fn save(store: &ImageStore, names: &[String], output: &Path) -> Result<(), ArchiveError> {
    let write_err = |source| ArchiveError::Write {
        path: output.to_path_buf(),
        source,
    };
    // (image, references to name it by), in the order asked, one entry per image.
    let mut chosen: Vec<(Image, Vec<Reference>)> = Vec::new();
    for name in names {
        let image = store
            .resolve(name)
            .map_err(|source| ArchiveError::Resolve {
                name: name.clone(),
                source,
            })?;
        let by_ref = Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none() && image.references.contains(r));
        let refs = match by_ref {
            Some(r) => vec![r],
            None => image.references.clone(),
        };
        match chosen.iter_mut().find(|(i, _)| i.id == image.id) {
            Some((_, existing)) => {
                for r in refs {
                    if !existing.contains(&r) {
                        existing.push(r);
                    }
                }
            }
            None => chosen.push((image, refs)),
        }
    }

    let mut index_entries = Vec::new();
    let mut docker = Vec::new();
    let mut blobs: BTreeSet<String> = BTreeSet::new();
    for (image, refs) in &chosen {
        let manifest: ImageManifest =
            store
                .read_manifest(&image.manifest_digest)
                .map_err(|source| ArchiveError::Resolve {
                    name: image.id.clone(),
                    source,
                })?;
        let manifest_size = store
            .read_blob(&image.manifest_digest)
            .map_err(ArchiveError::Store)?
            .len() as u64;
        let media = manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        blobs.insert(image.manifest_digest.clone());
        blobs.insert(image.id.clone());
        blobs.extend(image.layers.iter().map(|l| l.digest.clone()));
        let digest = Digest::from_str(&image.manifest_digest).map_err(|_| {
            ArchiveError::Store(StoreError::InvalidDigest(image.manifest_digest.clone()))
        })?;
        if refs.is_empty() {
            index_entries.push(Descriptor::new(
                media.clone(),
                manifest_size,
                digest.clone(),
            ));
        }
        for r in refs {
            let mut d = Descriptor::new(media.clone(), manifest_size, digest.clone());
            let mut ann = std::collections::HashMap::new();
            ann.insert(CONTAINERD_NAME.to_string(), r.to_string());
            ann.insert(
                REF_NAME.to_string(),
                r.tag().unwrap_or("latest").to_string(),
            );
            d.set_annotations(Some(ann));
            index_entries.push(d);
        }
        docker.push(DockerManifestEntry {
            config: format!("blobs/sha256/{}", image.id.trim_start_matches("sha256:")),
            repo_tags: Some(refs.iter().map(|r| r.short()).collect()),
            layers: image
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.trim_start_matches("sha256:")))
                .collect(),
        });
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .build()
        .map_err(|source| ArchiveError::Spec {
            name: "index.json".into(),
            source,
        })?;
    let json = |name: &str, v: &dyn erased::Json| -> Result<Vec<u8>, ArchiveError> {
        v.to_json().map_err(|source| ArchiveError::Json {
            name: name.to_string(),
            source,
        })
    };
    let index_json = json("index.json", &index)?;
    let docker_json = json("manifest.json", &docker)?;
    let layout_json = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();

    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".berth-save-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let mut builder = tar::Builder::new(io::BufWriter::new(tmp));
    let mut add = |name: &str, data: &mut dyn Read, size: u64| -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, name, data)
    };
    add(
        "oci-layout",
        &mut &layout_json[..],
        layout_json.len() as u64,
    )
    .map_err(write_err)?;
    for d in &blobs {
        let path = store.blob_path(d).map_err(ArchiveError::Store)?;
        let mut f = File::open(&path).map_err(|source| ArchiveError::Read {
            path: path.clone(),
            source,
        })?;
        let size = f
            .metadata()
            .map_err(|source| ArchiveError::Read { path, source })?
            .len();
        add(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            &mut f,
            size,
        )
        .map_err(write_err)?;
    }
    add("index.json", &mut &index_json[..], index_json.len() as u64).map_err(write_err)?;
    add(
        "manifest.json",
        &mut &docker_json[..],
        docker_json.len() as u64,
    )
    .map_err(write_err)?;
    let tmp = builder
        .into_inner()
        .map_err(write_err)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(output).map_err(|e| write_err(e.error))?;
    Ok(())
}

mod erased {
    /// Object-safe JSON serialisation, so one closure serves several types.
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::{self, File};

    use super::super::tests::{hex, new_store};
    use super::super::{load, loaded_lines, save};
    use crate::reference::Reference;
    use crate::store::tests::{make_image, simple_tar};

    #[test]
    fn save_load_round_trip() {
        let (_r, a) = new_store();
        let img = make_image(&a, "busybox", &simple_tar(b"round"));
        a.tag("busybox", &Reference::parse("localhost:5000/x:1").unwrap())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.tar");
        save(&a, &["busybox".to_string()], &out).unwrap();
        // The layout is there.
        let mut ar = tar::Archive::new(File::open(&out).unwrap());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"oci-layout".to_string()));
        assert!(names.contains(&"index.json".to_string()));
        assert!(names.contains(&"manifest.json".to_string()));
        assert!(names.contains(&format!("blobs/sha256/{}", hex(&img.id))));

        let (_r, b) = new_store();
        let loaded = load(&b, &out).unwrap();
        assert_eq!(loaded_lines(&loaded), vec!["Loaded image: busybox:latest"]);
        let back = b.resolve("busybox").unwrap();
        assert_eq!(back.id, img.id);
        assert_eq!(back.manifest_digest, img.manifest_digest);
        assert!(
            b.resolve("localhost:5000/x:1").is_err(),
            "only the named ref is saved"
        );
        let dirs = b.layer_dirs(&back).unwrap();
        assert_eq!(fs::read(dirs[0].join("bin/hello")).unwrap(), b"round");
    }
}
