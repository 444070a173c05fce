//! Reaching a registry: the oci-client reference and client, credentials, and the
//! runtime the async client runs on.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::reference::Reference;

use super::RegistryError;

/// Environment variable with `user:password` credentials for every registry.
pub const AUTH_ENV: &str = "BERTH_REGISTRY_AUTH";

/// The oci-client view of a reference (Docker Hub's API host, digest preferred).
pub(super) fn oci_reference(reference: &Reference) -> oci_client::Reference {
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

pub(super) fn client_for(reference: &Reference, insecure: bool) -> Client {
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
pub(super) fn auth_for() -> RegistryAuth {
    match std::env::var(AUTH_ENV) {
        Ok(v) => match v.split_once(':') {
            Some((user, password)) => RegistryAuth::Basic(user.to_string(), password.to_string()),
            None => RegistryAuth::Anonymous,
        },
        Err(_) => RegistryAuth::Anonymous,
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_uses_api_host() {
        let r = oci_reference(&Reference::parse("busybox:1.36").unwrap());
        assert_eq!(r.resolve_registry(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("1.36"));
    }
}
