//! `berth push`: the blobs the registry lacks, then the manifest.

use oci_client::RegistryOperation;
use oci_spec::image::MediaType;

use crate::reference::Reference;
use crate::store::{short_digest, ImageStore};

use super::client::{auth_for, client_for, oci_reference, runtime};
use super::error::classify;
use super::progress::Progress;
use super::RegistryError;

/// Options for [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub insecure: bool,
    pub quiet: bool,
}

/// Pushes the image named `reference` from `store` to its registry; returns the manifest
/// digest.
pub fn push(
    store: &ImageStore,
    reference: &Reference,
    opts: &PushOptions,
) -> Result<String, RegistryError> {
    runtime()?.block_on(push_async(store, reference, opts))
}

async fn push_async(
    store: &ImageStore,
    reference: &Reference,
    opts: &PushOptions,
) -> Result<String, RegistryError> {
    let store_err = |source| RegistryError::Store {
        op: "push",
        reference: reference.to_string(),
        source,
    };
    let fail = |e| classify("push", reference, e);
    let image = store.resolve(&reference.to_string()).map_err(store_err)?;
    let client = client_for(reference, opts.insecure);
    let auth = auth_for();
    let oci_ref = oci_reference(reference);
    let progress = Progress::new(opts.quiet, false);
    progress.line(&format!(
        "The push refers to repository [{}]",
        reference.name()
    ));
    client
        .auth(&oci_ref, &auth, RegistryOperation::Push)
        .await
        .map_err(fail)?;

    let manifest_raw = store.read_blob(&image.manifest_digest).map_err(store_err)?;
    let manifest = store
        .read_manifest(&image.manifest_digest)
        .map_err(store_err)?;
    let mut blobs: Vec<String> = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    blobs.push(manifest.config().digest().to_string());
    for digest in &blobs {
        let short = short_digest(digest).to_string();
        if client.blob_exists(&oci_ref, digest).await.map_err(fail)? {
            progress.line(&format!("{short}: Layer already exists"));
            continue;
        }
        let data = store.read_blob(digest).map_err(store_err)?;
        let bar = progress.bar(&short, data.len() as u64, "Pushing");
        client
            .push_blob(&oci_ref, data, digest)
            .await
            .map_err(fail)?;
        if let Some(b) = &bar {
            b.set_position(b.length().unwrap_or(0));
        }
        progress.done(bar, &short, "Pushed");
    }
    let media_type = manifest
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest)
        .to_string();
    let content_type =
        http::HeaderValue::from_str(&media_type).map_err(|source| RegistryError::MediaType {
            op: "push",
            reference: reference.to_string(),
            source,
        })?;
    let size = manifest_raw.len();
    client
        .push_manifest_raw(&oci_ref, manifest_raw, content_type)
        .await
        .map_err(fail)?;
    let digest = image.manifest_digest.clone();
    store
        .commit_image(&digest, &[], &[reference.with_digest(&digest).to_string()])
        .map_err(store_err)?;
    progress.line(&format!(
        "{}: digest: {digest} size: {size}",
        reference.tag().unwrap_or("latest")
    ));
    Ok(digest)
}
