//! What can go wrong talking to a registry, and how oci-client's errors map onto it.

use std::io;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::reference::Reference;
use crate::store::StoreError;

use super::AUTH_ENV;

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

pub(super) fn classify(
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
