//! Image references with Docker's normalisation rules.
//!
//! `busybox` means `docker.io/library/busybox:latest`; the first path component is a
//! registry host only when it contains a `.` or a `:` or is `localhost`. The grammar is
//! the distribution project's (`reference/regexp.go`); this module gives clear errors and
//! Docker's "familiar" short form used for display.
//!
//! The grammar is checked here by hand rather than through
//! `oci_spec::distribution::Reference`: that type compiles a large regular expression on
//! first use, which costs about 85 ms in every `berth` process — more than a whole
//! `berth run` should take.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// Why a string is not a valid image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: \"{0}\" is empty")]
    Empty(String),
    #[error("invalid reference format: repository name in \"{0}\" must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: \"{0}\" has an invalid tag (up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-')")]
    InvalidTag(String),
    #[error("invalid reference format: \"{0}\" has an invalid digest (expected sha256:<64 lowercase hex>)")]
    InvalidDigest(String),
    #[error("invalid reference format: \"{0}\" is not [registry/]name[:tag][@digest] with lowercase name components")]
    Invalid(String),
    #[error(
        "invalid reference format: the repository name in \"{0}\" is longer than 255 characters"
    )]
    TooLong(String),
}

/// A fully normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses `s` with Docker's rules (see the module documentation).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.trim().is_empty() {
            return Err(ReferenceError::Empty(s.to_string()));
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            if !is_valid_digest(d) {
                return Err(ReferenceError::InvalidDigest(s.to_string()));
            }
        }
        // The tag is what follows the last ':' unless that ':' belongs to a registry port
        // (then a '/' follows it).
        let (name, tag) = match name_and_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name_and_tag, None),
        };
        if let Some(t) = tag {
            if !is_valid_tag(t) {
                return Err(ReferenceError::InvalidTag(s.to_string()));
            }
        }
        // Only the path may not contain uppercase letters; a registry host may.
        let path = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                rest
            }
            _ => name,
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        let (registry, repository) = split_domain(name);
        let valid_domain = registry
            .split_once(':')
            .map_or(registry.as_str(), |(host, port)| {
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                    ""
                } else {
                    host
                }
            });
        if !valid_domain.split('.').all(is_domain_component)
            || !repository.split('/').all(is_path_component)
        {
            return Err(ReferenceError::Invalid(s.to_string()));
        }
        if repository.len() > MAX_NAME_LENGTH {
            return Err(ReferenceError::TooLong(s.to_string()));
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// Builds a reference from parts that are already valid.
    pub fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        }
    }

    /// The registry host, e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any, e.g. `sha256:...`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as Docker shows it: without `docker.io/` and `library/`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix(OFFICIAL_PREFIX)
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// The familiar form with tag and digest, e.g. `busybox:latest`.
    pub fn short(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// This reference with `tag` instead of any tag or digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// This reference with `digest` instead of any tag or digest (a "repo digest").
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The host serving the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on the loopback interface, where plain HTTP is used.
    pub fn is_local_registry(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether `d` is `sha256:` followed by 64 lowercase hex digits.
pub fn is_valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Docker's limit on a repository name.
const MAX_NAME_LENGTH: usize = 255;

/// Splits `name` into registry and repository like Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("{OFFICIAL_PREFIX}{repository}")
    } else {
        repository
    };
    (registry, repository)
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

/// `[a-z0-9]+` runs joined by one of `.`, `_`, `__` or any number of `-`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut runs = 0;
    let mut rest = c.as_bytes();
    loop {
        let run = rest.iter().take_while(|b| alnum(**b)).count();
        if run == 0 {
            return false;
        }
        runs += 1;
        rest = &rest[run..];
        if rest.is_empty() {
            return runs > 0;
        }
        let separator = match rest {
            [b'_', b'_', ..] => 2,
            [b'.' | b'_', ..] => 1,
            _ => rest.iter().take_while(|b| **b == b'-').count(),
        };
        if separator == 0 {
            return false;
        }
        rest = &rest[separator..];
    }
}

fn is_valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn official_image_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.short(), "busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn user_repos_and_tags() {
        let r = p("user/repo:1.0");
        assert_eq!(r.to_string(), "docker.io/user/repo:1.0");
        assert_eq!(r.short(), "user/repo:1.0");
        assert_eq!(p("busybox:1.36").tag(), Some("1.36"));
        assert_eq!(p("docker.io/library/busybox:latest"), p("busybox"));
        assert_eq!(p("index.docker.io/library/busybox"), p("busybox"));
    }

    #[test]
    fn registries() {
        let r = p("localhost:5000/x/y:tag");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.short(), "localhost:5000/x/y:tag");
        assert!(r.is_local_registry());
        let r = p("127.0.0.1:5000/x");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.tag(), Some("latest"));
        assert!(r.is_local_registry());
        let r = p("localhost/x");
        assert_eq!(r.registry(), "localhost");
        let r = p("quay.io/coreos/etcd");
        assert_eq!(r.registry(), "quay.io");
        assert!(!r.is_local_registry());
        // No '.', ':' or localhost: a Docker Hub user.
        let r = p("myhost/x");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "myhost/x");
    }

    #[test]
    fn digests() {
        let r = p(&format!("busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = p(&format!("localhost:5000/busybox:1.0@{D}"));
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.short(), format!("localhost:5000/busybox:1.0@{D}"));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Reference::parse(""),
            Err(ReferenceError::Empty(_))
        ));
        assert!(matches!(
            Reference::parse("BusyBox"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(matches!(
            Reference::parse("busybox:-bad"),
            Err(ReferenceError::InvalidTag(_))
        ));
        assert!(matches!(
            Reference::parse("busybox:a b"),
            Err(ReferenceError::InvalidTag(_))
        ));
        assert!(matches!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::InvalidDigest(_))
        ));
        assert!(matches!(
            Reference::parse("busybox@md5:abc"),
            Err(ReferenceError::InvalidDigest(_))
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::Invalid { .. })
        ));
        let e = Reference::parse("BusyBox").unwrap_err().to_string();
        assert!(e.contains("BusyBox") && e.contains("lowercase"), "{e}");
        // Uppercase registry hosts are fine; uppercase tags are fine.
        assert!(Reference::parse("Example.com/x:Tag").is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let r = p("localhost:5000/x:1");
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, "\"localhost:5000/x:1\"");
        let back: Reference = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }
}
