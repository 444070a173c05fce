//! What the store hands out: images, their layers, and the metadata helpers.

use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};

use crate::reference::Reference;

use super::StoreError;

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
        short_digest(&self.id)
    }
}

/// What `untag_or_remove` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    Untagged(String),
    Deleted(String),
}

/// The first 12 hex digits of a `sha256:` digest (or of any string), as Docker shows them.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
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

/// A descriptor for a blob.
pub fn descriptor(
    media_type: MediaType,
    size: u64,
    digest: &str,
) -> Result<Descriptor, StoreError> {
    let d = Digest::from_str(digest).map_err(|_| StoreError::InvalidDigest(digest.to_string()))?;
    Ok(Descriptor::new(media_type, size, d))
}
