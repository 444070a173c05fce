//! `images.json`: the index of images and references, its flock on `store.lock`, and
//! lookups by name, digest or id prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::reference::Reference;

use super::error::io_err;
use super::{Image, ImageStore, Layer, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ImageRecord {
    pub(super) id: String,
    pub(super) manifest_digest: String,
    #[serde(default)]
    pub(super) repo_digests: Vec<String>,
    pub(super) layers: Vec<Layer>,
    pub(super) size: u64,
    pub(super) created: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Db {
    #[serde(default)]
    pub(super) images: BTreeMap<String, ImageRecord>,
    /// Full reference (`docker.io/library/busybox:latest`) → image id.
    #[serde(default)]
    pub(super) references: BTreeMap<String, String>,
}

impl Db {
    pub(super) fn refs_of(&self, id: &str) -> Vec<String> {
        self.references
            .iter()
            .filter(|(_, v)| v.as_str() == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Finds the image id `s` names (see [`ImageStore::resolve`]).
    pub(super) fn find_id(&self, s: &str) -> Result<String, StoreError> {
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
    pub(super) fn in_use(&self) -> (BTreeSet<String>, BTreeSet<String>) {
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

impl ImageStore {
    pub(super) fn lock(&self, exclusive: bool) -> Result<Flock<File>, StoreError> {
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

    pub(super) fn read_db(&self) -> Result<Db, StoreError> {
        match fs::read(&self.db_path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::Database {
                path: self.db_path.clone(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(io_err(&self.db_path)(e)),
        }
    }

    pub(super) fn write_db(&self, db: &Db) -> Result<(), StoreError> {
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
    pub(super) fn snapshot(&self) -> Result<Db, StoreError> {
        let _lock = self.lock(false)?;
        self.read_db()
    }

    /// Read-modify-write of the database under the exclusive lock.
    pub(super) fn update<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock(true)?;
        let mut db = self.read_db()?;
        let out = f(&mut db)?;
        self.write_db(&db)?;
        Ok(out)
    }

    pub(super) fn to_image(&self, db: &Db, id: &str) -> Result<Image, StoreError> {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::make_image;
    use super::super::tests::simple_tar;
    use super::*;

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
}
