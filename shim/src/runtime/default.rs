//! Which runtime a container gets when neither `--runtime` nor `BERTH_RUNTIME` names one:
//! `"default-runtime"` in berth's config file (as in Docker's daemon.json), else `vm` where
//! the built-in VMM can boot a guest, else `ns` — said once, so nobody is misled.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The config file read unless `BERTH_CONFIG` names another.
pub const CONFIG_FILE: &str = "/etc/berth/config.json";

/// Marker (in the berth root) that the fallback to `ns` was already explained.
const NOTICE_MARKER: &str = "default-runtime-notice";

/// berth's config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read berth's config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth's config file {path} is not valid: expected JSON like {{\"default-runtime\": \"ns\"}}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct ConfigFile {
    default_runtime: Option<String>,
}

/// The runtime to use, and a notice to print when berth fell back to `ns` for the first time.
#[derive(Debug, PartialEq)]
pub struct Choice {
    pub runtime: String,
    pub notice: Option<String>,
}

/// Decides the default runtime. `builtin_unavailable` says why the built-in VMM cannot boot
/// a guest here (None: it can).
pub fn choose(
    root: &Path,
    config: &Path,
    builtin_unavailable: impl FnOnce() -> Option<String>,
) -> Result<Choice, ConfigError> {
    if let Some(runtime) = read_config(config)?.default_runtime {
        return Ok(Choice {
            runtime,
            notice: None,
        });
    }
    let Some(why) = builtin_unavailable() else {
        return Ok(Choice {
            runtime: "vm".into(),
            notice: None,
        });
    };
    let marker = root.join(NOTICE_MARKER);
    let notice = (!marker.exists()).then(|| {
        let _ = std::fs::write(&marker, &why);
        format!(
            "berth: containers use --runtime=ns by default on this host because the built-in \
             VMM cannot boot a guest here ({why}); choose --runtime=vm for QEMU, or set \
             BERTH_RUNTIME or \"default-runtime\" in {}",
            config.display()
        )
    });
    Ok(Choice {
        runtime: "ns".into(),
        notice,
    })
}

/// The config file named by `BERTH_CONFIG`, else [`CONFIG_FILE`].
pub fn config_path() -> PathBuf {
    std::env::var_os("BERTH_CONFIG").map_or_else(|| PathBuf::from(CONFIG_FILE), PathBuf::from)
}

fn read_config(path: &Path) -> Result<ConfigFile, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"default-runtime": "vm"}"#).unwrap();
        let choice = choose(dir.path(), &config, || Some("no kvm".into())).unwrap();
        assert_eq!(choice.runtime, "vm");
        assert_eq!(choice.notice, None);
    }

    #[test]
    fn vm_where_the_builtin_vmm_can_boot() {
        let dir = tempfile::tempdir().unwrap();
        let choice = choose(dir.path(), &dir.path().join("none.json"), || None).unwrap();
        assert_eq!(choice.runtime, "vm");
    }

    #[test]
    fn ns_elsewhere_with_a_notice_only_the_first_time() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("none.json");
        let first = choose(dir.path(), &config, || Some("no vmx/svm".into())).unwrap();
        assert_eq!(first.runtime, "ns");
        assert!(first.notice.unwrap().contains("no vmx/svm"));
        let second = choose(dir.path(), &config, || Some("no vmx/svm".into())).unwrap();
        assert_eq!(second.runtime, "ns");
        assert_eq!(second.notice, None);
    }

    #[test]
    fn a_broken_config_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, "{not json").unwrap();
        let err = choose(dir.path(), &config, || None).unwrap_err();
        assert!(err.to_string().contains("config.json"));
    }
}
