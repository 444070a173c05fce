//! Choosing one image out of a multi-platform index.

use oci_spec::image::{ImageIndex, MediaType};

use crate::reference::Reference;
use crate::store::host_arch;

use super::RegistryError;

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
pub(super) fn pick_platform(
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

pub(super) fn is_index(raw: &[u8]) -> bool {
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
}
