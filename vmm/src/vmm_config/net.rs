use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One virtio-net interface backed by a host tap device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Unique id.
    pub iface_id: String,
    /// The tap's name on the host (created when missing), 1 to 15 bytes.
    pub host_dev_name: String,
    /// The guest's MAC, `aa:bb:cc:dd:ee:ff`; without one the guest picks its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl NetConfig {
    /// The MAC as bytes (validated by [`NetConfig::validate`]).
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.guest_mac.as_deref().and_then(parse_mac)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.host_dev_name.is_empty() || self.host_dev_name.len() >= libc::IFNAMSIZ {
            return Err(ConfigError::TapName(self.host_dev_name.clone()));
        }
        if let Some(mac) = &self.guest_mac {
            if parse_mac(mac).is_none() {
                return Err(ConfigError::Mac(mac.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:Ff:00:01"),
            Some([2, 0, 0xa, 0xff, 0, 1])
        );
        for bad in [
            "",
            "02:00:0a:ff:00",
            "02:00:0a:ff:00:01:02",
            "2:00:0a:ff:00:01",
            "zz:00:0a:ff:00:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
