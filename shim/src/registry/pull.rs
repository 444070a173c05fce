//! `berth pull`: the manifest (through an index to one platform), then the config and
//! layer blobs, verified as they are written, then the image recorded in the store.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use indicatif::ProgressBar;
use oci_client::Client;
use oci_spec::image::{ImageIndex, ImageManifest};

use crate::reference::Reference;
use crate::store::blob::sha256_digest;
use crate::store::{short_digest, BlobWriter, Image, ImageStore};

use super::client::{auth_for, client_for, oci_reference, runtime};
use super::error::classify;
use super::platform::{is_index, pick_platform};
use super::progress::Progress;
use super::RegistryError;

/// Manifest media types we accept from registries.
const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Options for [`pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Plain HTTP and any certificate (always the case for loopback registries).
    pub insecure: bool,
    /// `os/arch[/variant]`; the host's `linux/<arch>` when absent.
    pub platform: Option<String>,
    /// Print nothing while pulling.
    pub quiet: bool,
    /// Report progress on stderr (as `run` does, keeping stdout for the container).
    pub progress_on_stderr: bool,
}

/// Adapts a synchronous [`BlobWriter`] to tokio's `AsyncWrite` for `pull_blob`.
struct BlobSink<'a> {
    writer: &'a mut BlobWriter,
    bar: Option<&'a ProgressBar>,
}

impl tokio::io::AsyncWrite for BlobSink<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.writer.write(buf);
        if let (Ok(n), Some(bar)) = (&r, this.bar) {
            bar.inc(*n as u64);
        }
        Poll::Ready(r)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().writer.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Pulls `reference` into `store` and returns the stored image.
pub fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Image, RegistryError> {
    runtime()?.block_on(pull_async(store, reference, opts))
}

async fn pull_async(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Image, RegistryError> {
    let client = client_for(reference, opts.insecure);
    let auth = auth_for();
    let oci_ref = oci_reference(reference);
    let progress = Progress::new(opts.quiet, opts.progress_on_stderr);
    let store_err = |source| RegistryError::Store {
        op: "pull",
        reference: reference.to_string(),
        source,
    };
    let fail = |e| classify("pull", reference, e);

    progress.line(&format!(
        "{}: Pulling from {}",
        reference.tag().or(reference.digest()).unwrap_or("latest"),
        reference.familiar_name()
    ));
    let (raw, _) = client
        .pull_manifest_raw(&oci_ref, &auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(fail)?;
    let top_digest = sha256_digest(&raw);
    if let Some(d) = reference.digest() {
        if d != top_digest {
            return Err(RegistryError::ManifestDigest {
                reference: reference.to_string(),
                digest: d.to_string(),
                actual: top_digest,
            });
        }
    }
    let (manifest_raw, manifest_digest) = if is_index(&raw) {
        let index =
            ImageIndex::from_reader(&raw[..]).map_err(|source| RegistryError::BadManifest {
                reference: reference.to_string(),
                source,
            })?;
        let (digest, _) = pick_platform(&index, reference, opts.platform.as_deref())?;
        let (raw, _) = client
            .pull_manifest_raw(
                &oci_ref.clone_with_digest(digest.clone()),
                &auth,
                ACCEPTED_MANIFESTS,
            )
            .await
            .map_err(fail)?;
        let actual = sha256_digest(&raw);
        if actual != digest {
            return Err(RegistryError::ManifestDigest {
                reference: reference.to_string(),
                digest,
                actual,
            });
        }
        (raw, actual)
    } else {
        (raw, top_digest.clone())
    };
    let manifest = ImageManifest::from_reader(&manifest_raw[..]).map_err(|source| {
        RegistryError::BadManifest {
            reference: reference.to_string(),
            source,
        }
    })?;

    let mut written: Vec<String> = Vec::new();
    let result = async {
        let config_digest = manifest.config().digest().to_string();
        let had_everything = store.has_blob(&manifest_digest)
            && store.has_blob(&config_digest)
            && manifest
                .layers()
                .iter()
                .all(|l| store.has_blob(l.digest().as_ref()));
        if !store.has_blob(&config_digest) {
            written
                .push(fetch_blob(&client, &oci_ref, store, reference, &config_digest, None).await?);
        }
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            let short = short_digest(&digest).to_string();
            if store.has_blob(&digest) {
                progress.line(&format!("{short}: Already exists"));
                continue;
            }
            let bar = progress.bar(&short, layer.size(), "Downloading");
            written.push(
                fetch_blob(&client, &oci_ref, store, reference, &digest, bar.as_ref()).await?,
            );
            progress.done(bar, &short, "Pull complete");
        }
        let manifest_digest = store
            .put_blob(&manifest_raw, Some(&manifest_digest))
            .map_err(store_err)?;
        written.push(manifest_digest.clone());
        let tags: Vec<Reference> = reference
            .tag()
            .map(|t| reference.with_tag(t))
            .into_iter()
            .collect();
        let repo_digest = reference.with_digest(&top_digest).to_string();
        let image = store
            .commit_image(&manifest_digest, &tags, &[repo_digest])
            .map_err(store_err)?;
        Ok::<_, RegistryError>((image, had_everything))
    }
    .await;
    match result {
        Ok((image, had_everything)) => {
            progress.line(&format!("Digest: {top_digest}"));
            let shown = reference.short();
            if had_everything {
                progress.line(&format!("Status: Image is up to date for {shown}"));
            } else {
                progress.line(&format!("Status: Downloaded newer image for {shown}"));
            }
            Ok(image)
        }
        Err(e) => {
            let diff_ids: Vec<String> = Vec::new();
            if let Err(cleanup) = store.discard_unreferenced(&written, &diff_ids) {
                tracing::warn!("cannot clean up after a failed pull: {cleanup}");
            }
            Err(e)
        }
    }
}

/// Downloads the blob `digest` into `store`, verified as it is written; returns its digest.
async fn fetch_blob(
    client: &Client,
    oci_ref: &oci_client::Reference,
    store: &ImageStore,
    reference: &Reference,
    digest: &str,
    bar: Option<&ProgressBar>,
) -> Result<String, RegistryError> {
    let store_err = |source| RegistryError::Store {
        op: "pull",
        reference: reference.to_string(),
        source,
    };
    let mut w = store.blob_writer(Some(digest)).map_err(store_err)?;
    client
        .pull_blob(
            oci_ref,
            digest,
            BlobSink {
                writer: &mut w,
                bar,
            },
        )
        .await
        .map_err(|e| classify("pull", reference, e))?;
    Ok(w.commit().map_err(store_err)?.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_registry_is_named() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        // Nothing listens on port 1.
        let r = Reference::parse("127.0.0.1:1/nothing:latest").unwrap();
        let e = pull(
            &store,
            &r,
            &PullOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RegistryError::Unreachable { .. }), "{msg}");
        assert!(msg.contains("127.0.0.1:1/nothing:latest"), "{msg}");
    }
}
