//! Verified, atomic blob writes and layer compression detection.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::StoreError;

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
