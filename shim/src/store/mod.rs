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
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Arch, Config, Descriptor, Digest, ImageConfiguration, ImageConfigurationBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde::{Deserialize, Serialize};

use crate::reference::{Reference, ReferenceError};
use blob::{digest_hex, HashingReader};
pub use blob::{BlobWriter, Compression};
pub use changes::ChangeError;
use unpack::{OverlayWhiteouts, UnpackError};

/// Errors from the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock the image store at {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the image database {path} is corrupt")]
    Database {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("image id prefix \"{0}\" is ambiguous: it matches several images")]
    Ambiguous(String),
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    MultipleReferences { id: String },
    #[error("refusing to create tag {0}: a tag cannot contain a digest")]
    TagWithDigest(String),
    #[error("invalid digest \"{0}\" (expected sha256:<64 lowercase hex>)")]
    InvalidDigest(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} is missing from the image store")]
    BlobMissing(String),
    #[error("cannot parse the {what} {digest}")]
    Parse {
        what: &'static str,
        digest: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("cannot build the image metadata")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error(
        "the manifest {manifest} lists {layers} layers but its config lists {diff_ids} diff ids"
    )]
    LayerCount {
        manifest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("cannot unpack layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: UnpackError,
    },
    #[error("layer {digest} does not match its diff id: expected {expected}, got {actual}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("invalid image reference")]
    Reference(#[from] ReferenceError),
    #[error("invalid --change instruction")]
    Change(#[from] ChangeError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as stored and distributed (maybe compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<config hex>`, like Docker's image id.
    pub id: String,
    pub manifest_digest: String,
    /// Tags pointing at this image.
    pub references: Vec<Reference>,
    /// `name@sha256:..` digests this image was pulled or pushed as.
    pub repo_digests: Vec<String>,
    pub config: ImageConfiguration,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    pub created: Option<String>,
}

impl Image {
    /// The first 12 hex digits of the id, as `docker images` shows it.
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

/// What `untag_or_remove` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    Untagged(String),
    Deleted(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    id: String,
    manifest_digest: String,
    #[serde(default)]
    repo_digests: Vec<String>,
    layers: Vec<Layer>,
    size: u64,
    created: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Db {
    #[serde(default)]
    images: BTreeMap<String, ImageRecord>,
    /// Full reference (`docker.io/library/busybox:latest`) → image id.
    #[serde(default)]
    references: BTreeMap<String, String>,
}

impl Db {
    fn refs_of(&self, id: &str) -> Vec<String> {
        self.references
            .iter()
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Finds the image id `s` names (see [`ImageStore::resolve`]).
    fn find_id(&self, s: &str) -> Result<String, StoreError> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            return self.find_id_prefix(s, hex);
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = r.digest() {
                let repo_digest = r.with_digest(d).to_string();
                let found = self.images.values().find(|rec| {
                    rec.repo_digests.contains(&repo_digest) || rec.manifest_digest == d
                });
                if let Some(rec) = found {
                    return Ok(rec.id.clone());
                }
            } else if let Some(id) = self.references.get(&r.to_string()) {
                return Ok(id.clone());
            }
        }
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.find_id_prefix(s, s);
        }
        Err(StoreError::ImageNotFound(s.to_string()))
    }

    fn find_id_prefix(&self, asked: &str, hex: &str) -> Result<String, StoreError> {
        let matches: Vec<&String> = self
            .images
            .keys()
            .filter(|id| {
                !hex.is_empty()
                    && id
                        .strip_prefix("sha256:")
                        .is_some_and(|h| h.starts_with(hex))
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::ImageNotFound(asked.to_string())),
            _ => Err(StoreError::Ambiguous(asked.to_string())),
        }
    }

    /// Every blob digest and diff id that some image still uses.
    fn in_use(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for rec in self.images.values() {
            blobs.insert(rec.id.clone());
            blobs.insert(rec.manifest_digest.clone());
            for l in &rec.layers {
                blobs.insert(l.digest.clone());
                layers.insert(l.diff_id.clone());
            }
        }
        (blobs, layers)
    }
}

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

/// The host architecture in Go's spelling (what image configs use).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
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

    fn lock(&self, exclusive: bool) -> Result<Flock<File>, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_err(&self.lock_path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg).map_err(|(_, source)| StoreError::Lock {
            path: self.lock_path.clone(),
            source,
        })
    }

    fn read_db(&self) -> Result<Db, StoreError> {
        match fs::read(&self.db_path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Database {
                path: self.db_path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(io_err(&self.db_path)(e)),
        }
    }

    fn write_db(&self, db: &Db) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(db).map_err(|source| StoreError::Database {
            path: self.db_path.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".images.json.")
            .tempfile_in(&self.root)
            .map_err(io_err(&self.root))?;
        tmp.write_all(&data).map_err(io_err(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err(&self.db_path))?;
        tmp.persist(&self.db_path)
            .map_err(|e| io_err(&self.db_path)(e.error))?;
        Ok(())
    }

    /// A consistent read of the database.
    fn snapshot(&self) -> Result<Db, StoreError> {
        let _lock = self.lock(false)?;
        self.read_db()
    }

    /// Read-modify-write of the database under the exclusive lock.
    fn update<T>(&self, f: impl FnOnce(&mut Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _lock = self.lock(true)?;
        let mut db = self.read_db()?;
        let out = f(&mut db)?;
        self.write_db(&db)?;
        Ok(out)
    }

    fn to_image(&self, db: &Db, id: &str) -> Result<Image, StoreError> {
        let rec = db
            .images
            .get(id)
            .ok_or_else(|| StoreError::ImageNotFound(id.to_string()))?;
        let config = self.read_config(&rec.id)?;
        let references = db
            .refs_of(id)
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .collect();
        Ok(Image {
            id: rec.id.clone(),
            manifest_digest: rec.manifest_digest.clone(),
            references,
            repo_digests: rec.repo_digests.clone(),
            config,
            layers: rec.layers.clone(),
            size: rec.size,
            created: rec.created.clone(),
        })
    }

    /// Finds an image by reference (`busybox`, `busybox:1.36`, `name@sha256:..`) or by
    /// id or unique id prefix (with or without `sha256:`).
    pub fn resolve(&self, name_or_id: &str) -> Result<Image, StoreError> {
        let db = self.snapshot()?;
        let id = db.find_id(name_or_id)?;
        self.to_image(&db, &id)
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let db = self.snapshot()?;
        let mut images = db
            .images
            .keys()
            .map(|id| self.to_image(&db, id))
            .collect::<Result<Vec<_>, _>>()?;
        images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.blobs.join(digest_hex(digest)?))
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Starts writing a blob; `expected` is checked on commit.
    pub fn blob_writer(&self, expected: Option<&str>) -> Result<BlobWriter, StoreError> {
        BlobWriter::new(&self.tmp, &self.blobs, expected)
    }

    /// Stores `data` as a blob (checking `expected` if given) and returns its digest.
    pub fn put_blob(&self, data: &[u8], expected: Option<&str>) -> Result<String, StoreError> {
        let mut w = self.blob_writer(expected)?;
        w.write_all(data).map_err(io_err(&self.tmp))?;
        Ok(w.commit()?.0)
    }

    /// Copies `reader` into the store as a blob (checking `expected` if given).
    pub fn put_blob_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError> {
        let mut w = self.blob_writer(expected)?;
        io::copy(reader, &mut w).map_err(io_err(&self.tmp))?;
        w.commit()
    }

    /// A blob's bytes.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(digest.to_string())
            } else {
                io_err(&path)(e)
            }
        })
    }

    /// Parses a stored image manifest.
    pub fn read_manifest(&self, digest: &str) -> Result<ImageManifest, StoreError> {
        let data = self.read_blob(digest)?;
        ImageManifest::from_reader(&data[..]).map_err(|source| StoreError::Parse {
            what: "image manifest",
            digest: digest.to_string(),
            source,
        })
    }

    /// Parses a stored image config.
    pub fn read_config(&self, digest: &str) -> Result<ImageConfiguration, StoreError> {
        let data = self.read_blob(digest)?;
        ImageConfiguration::from_reader(&data[..]).map_err(|source| StoreError::Parse {
            what: "image config",
            digest: digest.to_string(),
            source,
        })
    }

    /// Unpacked layer directories, bottom layer first; unpacks missing ones.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>, StoreError> {
        image.layers.iter().map(|l| self.ensure_layer(l)).collect()
    }

    /// Unpacks a layer blob into `layers/sha256/<diff id>` unless already there.
    pub fn ensure_layer(&self, layer: &Layer) -> Result<PathBuf, StoreError> {
        let dir = self.layers.join(digest_hex(&layer.diff_id)?);
        if dir.is_dir() {
            return Ok(dir);
        }
        let blob_path = self.blob_path(&layer.digest)?;
        let file = File::open(&blob_path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(layer.digest.clone())
            } else {
                io_err(&blob_path)(e)
            }
        })?;
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&self.tmp)
            .map_err(io_err(&self.tmp))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err(tmp.path()))?;
        let reader = blob::decompress(BufReader::new(file), &layer.media_type)
            .map_err(io_err(&blob_path))?;
        let mut hashing = HashingReader::new(reader);
        unpack::unpack_layer(&mut hashing, tmp.path(), &OverlayWhiteouts).map_err(|source| {
            StoreError::Unpack {
                digest: layer.digest.clone(),
                source,
            }
        })?;
        let (actual, _) = hashing.finish().map_err(|e| StoreError::Unpack {
            digest: layer.digest.clone(),
            source: UnpackError::Read(e),
        })?;
        if actual != layer.diff_id {
            return Err(StoreError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        let unpacked = tmp.keep();
        if let Err(e) = fs::rename(&unpacked, &dir) {
            let _ = blob::remove_if_exists(&unpacked);
            // Another berth process may have unpacked the same layer meanwhile.
            if !dir.is_dir() {
                return Err(io_err(&dir)(e));
            }
        }
        Ok(dir)
    }

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

    /// Points `target` at the image `source` names.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), StoreError> {
        if target.digest().is_some() {
            return Err(StoreError::TagWithDigest(target.to_string()));
        }
        self.update(|db| {
            let id = db.find_id(source)?;
            db.references.insert(target.to_string(), id);
            Ok(())
        })
    }

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
            let config_bytes =
                serde_json::to_vec(&config).map_err(|source| StoreError::Database {
                    path: tar.to_path_buf(),
                    source,
                })?;
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
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|source| StoreError::Database {
                    path: tar.to_path_buf(),
                    source,
                })?;
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

/// A descriptor for a blob.
pub fn descriptor(
    media_type: MediaType,
    size: u64,
    digest: &str,
) -> Result<Descriptor, StoreError> {
    let d = Digest::from_str(digest).map_err(|_| StoreError::InvalidDigest(digest.to_string()))?;
    Ok(Descriptor::new(media_type, size, d))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::unpack::tests::TarBuilder;
    use super::*;

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

    fn tmp_is_empty(store: &ImageStore) -> bool {
        fs::read_dir(store.tmp_dir()).unwrap().next().is_none()
    }

    #[test]
    fn digest_mismatch_leaves_no_blob() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let wrong = blob::sha256_digest(b"something else");
        let err = store.put_blob(b"hello", Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&blob::sha256_digest(b"hello")));
        assert!(tmp_is_empty(&store));
        // The right digest works.
        let right = blob::sha256_digest(b"hello");
        assert_eq!(store.put_blob(b"hello", Some(&right)).unwrap(), right);
        assert_eq!(store.read_blob(&right).unwrap(), b"hello");
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let mut w = store.blob_writer(None).unwrap();
        w.write_all(b"partial").unwrap();
        assert!(!tmp_is_empty(&store));
        drop(w); // like a killed pull
        assert!(tmp_is_empty(&store));
        assert_eq!(fs::read_dir(&store.blobs).unwrap().count(), 0);
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

    #[test]
    fn concurrent_writers_do_not_corrupt() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let img = make_image(&store, "base", &simple_tar(b"x"));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = ImageStore::open(root.path()).unwrap();
                let id = img.id.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        let r = Reference::parse(&format!("t{i}:{j}")).unwrap();
                        store.tag(&id, &r).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let img = store.resolve("base").unwrap();
        assert_eq!(img.references.len(), 81);
    }

    #[test]
    fn diff_id_mismatch_is_rejected() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let tar = simple_tar(b"x");
        let digest = store.put_blob(&tar, None).unwrap();
        let layer = Layer {
            digest,
            diff_id: blob::sha256_digest(b"not it"),
            media_type: MediaType::ImageLayer.to_string(),
            size: tar.len() as u64,
        };
        let e = store.ensure_layer(&layer).unwrap_err();
        assert!(matches!(e, StoreError::DiffIdMismatch { .. }), "{e}");
        assert_eq!(fs::read_dir(&store.layers).unwrap().count(), 0);
        assert!(tmp_is_empty(&store));
    }
}
