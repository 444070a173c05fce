//! `berth load` and `berth save`: OCI image layout archives (with a docker-compatible
//! `manifest.json`), and `docker save` archives on input.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, Digest, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType,
};
use serde::{Deserialize, Serialize};

use crate::reference::{Reference, ReferenceError};
use crate::store::blob::{self, Compression};
use crate::store::unpack::safe_relative;
use crate::store::{descriptor, host_arch, Image, ImageStore, StoreError};

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

/// `manifest.json` of `docker save`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Extracts the archive's regular files into `dir` (symlinks become copies of their
/// in-archive targets; nothing outside `dir` is ever touched).
fn extract(input: &Path, dir: &Path) -> Result<(), ArchiveError> {
    let file = File::open(input).map_err(|source| ArchiveError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    let tar_err = |source| ArchiveError::Tar {
        path: input.to_path_buf(),
        source,
    };
    let reader = blob::decompress(BufReader::new(file), "").map_err(tar_err)?;
    let mut archive = tar::Archive::new(reader);
    let mut links: Vec<(PathBuf, PathBuf, String)> = Vec::new();
    let mut files = 0usize;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let name = raw.display().to_string();
        let unsafe_entry = |reason: String| ArchiveError::UnsafeEntry {
            entry: name.clone(),
            reason,
        };
        let Some(rel) = safe_relative(&raw).map_err(unsafe_entry)? else {
            continue;
        };
        let dest = dir.join(&rel);
        let write_err = |source| ArchiveError::Write {
            path: dest.clone(),
            source,
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest).map_err(write_err)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(write_err)?;
                }
                let mut out = File::create(&dest).map_err(write_err)?;
                io::copy(&mut entry, &mut out).map_err(tar_err)?;
                files += 1;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(tar_err)?
                    .ok_or_else(|| unsafe_entry("it is a link without a target".into()))?
                    .into_owned();
                // Old docker save archives link duplicate layers: "../<id>/layer.tar".
                let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.clone()
                };
                let resolved = normalize(&joined).ok_or_else(|| {
                    unsafe_entry(format!(
                        "its link target \"{}\" leaves the archive",
                        target.display()
                    ))
                })?;
                links.push((rel, resolved, name));
            }
            _ => {}
        }
    }
    for (rel, target, name) in links {
        let dest = dir.join(&rel);
        let source = dir.join(&target);
        if !source.is_file() {
            return Err(ArchiveError::UnsafeEntry {
                entry: name,
                reason: format!(
                    "its link target \"{}\" is not a file in the archive",
                    target.display()
                ),
            });
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|source| ArchiveError::Write {
                path: p.to_path_buf(),
                source,
            })?;
        }
        fs::copy(&source, &dest).map_err(|source| ArchiveError::Write {
            path: dest.clone(),
            source,
        })?;
        files += 1;
    }
    if files == 0 {
        return Err(ArchiveError::UnknownFormat(input.to_path_buf()));
    }
    Ok(())
}

/// Lexically resolves `..` inside the archive; `None` if it would leave it.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Stages blobs into the store and remembers them for cleanup on failure.
struct Staging<'a> {
    store: &'a ImageStore,
    dir: &'a Path,
    written: Vec<String>,
    diff_ids: Vec<String>,
}

impl Staging<'_> {
    /// Copies the file at `rel` into the store, verifying `expected` if given.
    fn put(&mut self, rel: &str, expected: Option<&str>) -> Result<(String, u64), ArchiveError> {
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

    fn put_digest(&mut self, digest: &str) -> Result<(String, u64), ArchiveError> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| ArchiveError::Missing(digest.to_string()))?;
        self.put(&format!("blobs/sha256/{hex}"), Some(digest))
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, rel: &str) -> Result<T, ArchiveError> {
        let data =
            fs::read(self.dir.join(rel)).map_err(|_| ArchiveError::Missing(rel.to_string()))?;
        serde_json::from_slice(&data).map_err(|source| ArchiveError::Json {
            name: rel.to_string(),
            source,
        })
    }

    fn commit(
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

fn is_index_type(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex)
        || m.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn load_oci(st: &mut Staging<'_>) -> Result<Vec<Loaded>, ArchiveError> {
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

fn load_docker(st: &mut Staging<'_>) -> Result<Vec<Loaded>, ArchiveError> {
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
    use super::*;
    use crate::store::blob::sha256_digest;
    use crate::store::tests::{gzip, make_image, simple_tar};
    use crate::store::unpack::tests::TarBuilder;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
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

    fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    fn hex(d: &str) -> &str {
        d.trim_start_matches("sha256:")
    }

    /// A hand-built OCI layout with one gzip layer.
    fn oci_archive(layer: &[u8]) -> Vec<u8> {
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

    fn load_bytes(store: &ImageStore, data: &[u8]) -> Result<Vec<Loaded>, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.tar");
        fs::write(&p, data).unwrap();
        load(store, &p)
    }

    fn new_store() -> (tempfile::TempDir, ImageStore) {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        (root, store)
    }

    fn assert_store_empty(store: &ImageStore) {
        assert!(store.list().unwrap().is_empty());
        for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
            let n = fs::read_dir(store.root().join(sub)).unwrap().count();
            assert_eq!(n, 0, "{sub} is not empty");
        }
    }

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

    #[test]
    fn rejects_traversal_in_archive_and_layer() {
        let (_r, store) = new_store();
        let data = TarBuilder::new().file("../../evil", b"x").finish();
        let e = load_bytes(&store, &data).unwrap_err();
        assert!(e.to_string().contains("../../evil"), "{e}");
        assert_store_empty(&store);
        // A layer escaping with "..": rejected at load, nothing left behind.
        let evil = TarBuilder::new().file("../evil", b"x").finish();
        let e = load_bytes(&store, &oci_archive(&evil)).unwrap_err();
        let chain = format!("{:?}", e);
        assert!(chain.contains("../evil"), "{chain}");
        assert_store_empty(&store);
    }

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
