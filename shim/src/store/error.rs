//! The image store's errors.

use std::io;
use std::path::{Path, PathBuf};

use crate::reference::ReferenceError;

use super::changes::ChangeError;
use super::unpack::UnpackError;

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

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// For reading the blob `digest` at `path`: a missing file is [`StoreError::BlobMissing`].
pub(super) fn blob_err<'a>(
    digest: &'a str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |e| {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::BlobMissing(digest.to_string())
        } else {
            io_err(path)(e)
        }
    }
}
