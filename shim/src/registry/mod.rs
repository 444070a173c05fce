//! `berth pull` and `berth push`: talking to OCI / Docker registries with oci-client.
//!
//! Every blob is verified while it is written into the store (see
//! [`crate::store::BlobWriter`]); layers are unpacked once all blobs are in, and the
//! image is recorded under the store lock at the very end.

use std::io::{self, IsTerminal, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use indicatif::{ProgressBar, ProgressStyle};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};

use crate::reference::Reference;
use crate::store::blob::sha256_digest;
use crate::store::{host_arch, BlobWriter, Image, ImageStore, StoreError};

/// Manifest media types we accept from registries.
const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Environment variable with `user:password` credentials for every registry.
pub const AUTH_ENV: &str = "BERTH_REGISTRY_AUTH";

/// Errors from pulling or pushing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot {op} {reference}: registry {registry} is unreachable")]
    Unreachable {
        op: &'static str,
        reference: String,
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("cannot {op} {reference}: not found (the repository or tag does not exist)")]
    NotFound {
        op: &'static str,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("cannot {op} {reference}: unauthorized (the repository may not exist or may need credentials in {AUTH_ENV}=user:password)")]
    Unauthorized {
        op: &'static str,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("cannot {op} {reference}: a blob's digest does not match what was expected")]
    DigestMismatch {
        op: &'static str,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("cannot {op} {reference}: the registry answered with an error")]
    Registry {
        op: &'static str,
        reference: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("cannot pull {reference}: manifest {digest} has digest {actual}")]
    ManifestDigest {
        reference: String,
        digest: String,
        actual: String,
    },
    #[error("cannot pull {reference}: no image for platform {platform} (available: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("cannot pull {reference}: its manifest is not a valid image manifest or index")]
    BadManifest {
        reference: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("invalid platform \"{0}\" (expected os/arch[/variant], e.g. linux/amd64)")]
    Platform(String),
    #[error("cannot {op} {reference}: image store error")]
    Store {
        op: &'static str,
        reference: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot {op} {reference}: invalid manifest media type")]
    MediaType {
        op: &'static str,
        reference: String,
        #[source]
        source: http::header::InvalidHeaderValue,
    },
    #[error("cannot start the network runtime")]
    Runtime(#[source] io::Error),
}

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

/// Options for [`push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub insecure: bool,
    pub quiet: bool,
}

fn classify(
    op: &'static str,
    reference: &Reference,
    source: OciDistributionError,
) -> RegistryError {
    let reference_s = reference.to_string();
    let not_found = |codes: &[&OciErrorCode]| {
        codes.iter().any(|c| {
            matches!(
                c,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        })
    };
    let unauthorized = |codes: &[&OciErrorCode]| {
        codes
            .iter()
            .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
    };
    match &source {
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            RegistryError::Unreachable {
                op,
                reference: reference_s,
                registry: reference.api_host().to_string(),
                source,
            }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
            op,
            reference: reference_s,
            source,
        },
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
            op,
            reference: reference_s,
            source,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => RegistryError::Unauthorized {
            op,
            reference: reference_s,
            source,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if not_found(&codes) {
                RegistryError::NotFound {
                    op,
                    reference: reference_s,
                    source,
                }
            } else if unauthorized(&codes) {
                RegistryError::Unauthorized {
                    op,
                    reference: reference_s,
                    source,
                }
            } else {
                RegistryError::Registry {
                    op,
                    reference: reference_s,
                    source,
                }
            }
        }
        OciDistributionError::DigestError(_) => RegistryError::DigestMismatch {
            op,
            reference: reference_s,
            source,
        },
        _ => RegistryError::Registry {
            op,
            reference: reference_s,
            source,
        },
    }
}

/// The oci-client view of a reference (Docker Hub's API host, digest preferred).
fn oci_reference(reference: &Reference) -> oci_client::Reference {
    let registry = reference.api_host().to_string();
    let repository = reference.repository().to_string();
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
        (None, Some(t)) => oci_client::Reference::with_tag(registry, repository, t.to_string()),
        (None, None) => oci_client::Reference::with_tag(
            registry,
            repository,
            crate::reference::DEFAULT_TAG.to_string(),
        ),
    }
}

fn client_for(reference: &Reference, insecure: bool) -> Client {
    let plain_http = insecure || reference.is_local_registry();
    let protocol = if plain_http {
        ClientProtocol::HttpsExcept(vec![reference.api_host().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: insecure,
        user_agent: "berth",
        ..Default::default()
    })
}

/// Credentials from `BERTH_REGISTRY_AUTH=user:password`, else anonymous.
fn auth_for() -> RegistryAuth {
    match std::env::var(AUTH_ENV) {
        Ok(v) => match v.split_once(':') {
            Some((user, password)) => RegistryAuth::Basic(user.to_string(), password.to_string()),
            None => RegistryAuth::Anonymous,
        },
        Err(_) => RegistryAuth::Anonymous,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
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

/// Progress reporting: bars on a terminal, plain lines otherwise, nothing when quiet.
struct Progress {
    quiet: bool,
    bars: bool,
    on_stderr: bool,
}

impl Progress {
    fn new(quiet: bool, on_stderr: bool) -> Progress {
        Progress {
            quiet,
            bars: !quiet && io::stderr().is_terminal(),
            on_stderr,
        }
    }

    fn line(&self, msg: &str) {
        match (self.quiet, self.on_stderr) {
            (true, _) => {}
            (false, true) => eprintln!("{msg}"),
            (false, false) => println!("{msg}"),
        }
    }

    fn bar(&self, prefix: &str, total: u64, msg: &'static str) -> Option<ProgressBar> {
        if !self.bars {
            return None;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix}: {msg:12} [{bar:40}] {bytes}/{total_bytes}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_string());
        bar.set_message(msg);
        Some(bar)
    }

    fn done(&self, bar: Option<ProgressBar>, prefix: &str, msg: &str) {
        match bar {
            Some(bar) => bar.finish_with_message(msg.to_string()),
            None => self.line(&format!("{prefix}: {msg}")),
        }
    }
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Splits `os/arch[/variant]`.
fn parse_platform(
    platform: Option<&str>,
) -> Result<(String, String, Option<String>), RegistryError> {
    match platform {
        None => Ok(("linux".into(), host_arch().into(), None)),
        Some(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [os, arch] if !os.is_empty() && !arch.is_empty() => {
                    Ok((os.to_string(), arch.to_string(), None))
                }
                [os, arch, variant] if !os.is_empty() && !arch.is_empty() => {
                    Ok((os.to_string(), arch.to_string(), Some(variant.to_string())))
                }
                _ => Err(RegistryError::Platform(p.to_string())),
            }
        }
    }
}

/// Picks the manifest for a platform out of an index.
fn pick_platform(
    index: &ImageIndex,
    reference: &Reference,
    platform: Option<&str>,
) -> Result<(String, MediaType), RegistryError> {
    let (os, arch, variant) = parse_platform(platform)?;
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (pos, parch) = (p.os().to_string(), p.architecture().to_string());
        available.push(match p.variant() {
            Some(v) => format!("{pos}/{parch}/{v}"),
            None => format!("{pos}/{parch}"),
        });
        let variant_ok = match (&variant, p.variant()) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        };
        if pos == os && parch == arch && variant_ok {
            return Ok((m.digest().to_string(), m.media_type().clone()));
        }
    }
    Err(RegistryError::NoPlatform {
        reference: reference.to_string(),
        platform: match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        },
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

fn is_index(raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(raw) {
        Ok(p) => {
            p.manifests.is_some()
                || p.media_type
                    .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
        }
        Err(_) => false,
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
            let mut w = store.blob_writer(Some(&config_digest)).map_err(store_err)?;
            client
                .pull_blob(
                    &oci_ref,
                    config_digest.as_str(),
                    BlobSink {
                        writer: &mut w,
                        bar: None,
                    },
                )
                .await
                .map_err(fail)?;
            written.push(w.commit().map_err(store_err)?.0);
        }
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            let short = short_digest(&digest).to_string();
            if store.has_blob(&digest) {
                progress.line(&format!("{short}: Already exists"));
                continue;
            }
            let bar = progress.bar(&short, layer.size(), "Downloading");
            let mut w = store.blob_writer(Some(&digest)).map_err(store_err)?;
            client
                .pull_blob(
                    &oci_ref,
                    digest.as_str(),
                    BlobSink {
                        writer: &mut w,
                        bar: bar.as_ref(),
                    },
                )
                .await
                .map_err(fail)?;
            written.push(w.commit().map_err(store_err)?.0);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(
            parse_platform(Some("linux/arm64/v8")).unwrap(),
            ("linux".into(), "arm64".into(), Some("v8".into()))
        );
        assert_eq!(parse_platform(None).unwrap().0, "linux");
        assert!(parse_platform(Some("linux")).is_err());
        assert!(parse_platform(Some("/amd64")).is_err());
    }

    #[test]
    fn picks_platform_from_index() {
        let index: ImageIndex = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        ))
        .unwrap();
        let r = Reference::parse("busybox").unwrap();
        let (d, _) = pick_platform(&index, &r, Some("linux/amd64")).unwrap();
        assert_eq!(d, format!("sha256:{}", "b".repeat(64)));
        let (d, _) = pick_platform(&index, &r, Some("linux/arm64/v8")).unwrap();
        assert_eq!(d, format!("sha256:{}", "a".repeat(64)));
        let e = pick_platform(&index, &r, Some("linux/s390x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/amd64"),
            "{e}"
        );
        assert!(is_index(serde_json::to_string(&index).unwrap().as_bytes()));
    }

    #[test]
    fn docker_hub_uses_api_host() {
        let r = oci_reference(&Reference::parse("busybox:1.36").unwrap());
        assert_eq!(r.resolve_registry(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("1.36"));
    }

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
