//! Verified, atomic blob writes, layer compression detection, and the store's blobs
//! under `blobs/sha256/`.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use sha2::{Digest as _, Sha256};

use super::error::{blob_err, io_err};
use super::{ImageStore, StoreError};

/// Formats a finished hasher as `sha256:<hex>`.
pub fn finish(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    finish(Sha256::new_with_prefix(data))
}

/// The hex part of a `sha256:<64 hex>` digest, or an error naming it.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    if crate::reference::is_valid_digest(digest) {
        Ok(&digest["sha256:".len()..])
    } else {
        Err(StoreError::InvalidDigest(digest.to_string()))
    }
}

/// Writes one blob into `<root>/tmp`, hashing as it goes; [`BlobWriter::commit`] checks
/// the digest and renames it into `<root>/blobs/sha256/`. Dropping it uncommitted (or a
/// failed check) deletes the temporary file, so no partial blob ever looks complete.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    expected: Option<String>,
    blobs_dir: PathBuf,
}

impl BlobWriter {
    pub(crate) fn new(
        tmp_dir: &Path,
        blobs_dir: &Path,
        expected: Option<&str>,
    ) -> Result<BlobWriter, StoreError> {
        if let Some(e) = expected {
            digest_hex(e)?;
        }
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(tmp_dir)
            .map_err(|source| StoreError::Io {
                path: tmp_dir.to_path_buf(),
                source,
            })?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            written: 0,
            expected: expected.map(str::to_string),
            blobs_dir: blobs_dir.to_path_buf(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the digest and moves the blob into place; returns (digest, size).
    pub fn commit(mut self) -> Result<(String, u64), StoreError> {
        let io_err = |path: &Path, source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        self.file
            .as_file_mut()
            .sync_all()
            .map_err(|e| io_err(self.file.path(), e))?;
        let actual = finish(self.hasher);
        if let Some(expected) = self.expected {
            if expected != actual {
                return Err(StoreError::DigestMismatch { expected, actual });
            }
        }
        let dest = self.blobs_dir.join(digest_hex(&actual)?);
        self.file
            .persist(&dest)
            .map_err(|e| io_err(&dest, e.error))?;
        Ok((actual, self.written))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Reads the rest of the stream and returns (digest, total bytes).
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((finish(self.hasher), self.read))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the magic bytes at the start of a blob.
    pub fn from_magic(prefix: &[u8]) -> Compression {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// From a layer media type (OCI or Docker).
    pub fn from_media_type(media_type: &str) -> Compression {
        if media_type.ends_with("gzip") {
            Compression::Gzip
        } else if media_type.ends_with("zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> oci_spec::image::MediaType {
        use oci_spec::image::MediaType;
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// Wraps `reader` in the right decompressor. The magic bytes decide; a media type that
/// disagrees is only logged, since some tools label layers loosely.
pub fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
    media_type: &str,
) -> io::Result<Box<dyn Read + 'a>> {
    let magic = Compression::from_magic(reader.fill_buf()?);
    let declared = Compression::from_media_type(media_type);
    if magic != declared {
        tracing::debug!(
            "layer media type {media_type} says {declared:?} but its bytes are {magic:?}"
        );
    }
    Ok(match magic {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    })
}

/// Removes a path if it exists, ignoring "not found".
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl ImageStore {
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
        fs::read(&path).map_err(blob_err(digest, &path))
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::tmp_is_empty;
    use super::*;

    #[test]
    fn digest_mismatch_leaves_no_blob() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let wrong = sha256_digest(b"something else");
        let err = store.put_blob(b"hello", Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&sha256_digest(b"hello")));
        assert!(tmp_is_empty(&store));
        // The right digest works.
        let right = sha256_digest(b"hello");
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
}
