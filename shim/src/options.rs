//! Turning Docker-style option strings into values: sizes, CPUs, volumes, environments, commands.

use std::path::{Path, PathBuf};

use crate::container::BindMount;

/// A malformed option value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionError {
    #[error("invalid size \"{0}\": use a number with an optional unit b, k, m or g (like 64m)")]
    Size(String),
    #[error("--memory {0} is too small: the minimum is 6m")]
    MemoryTooSmall(String),
    #[error("invalid --cpus {given}: the range is 0.01 to {max}")]
    Cpus { given: f64, max: usize },
    #[error("invalid volume \"{0}\": expected /host/path:/container/path[:ro|rw]")]
    VolumeSyntax(String),
    #[error(
        "invalid volume \"{0}\": named volumes are not supported, the host path must be absolute"
    )]
    NamedVolume(String),
    #[error("invalid volume \"{0}\": the container path must be absolute")]
    VolumeDestination(String),
    #[error("invalid volume mode \"{mode}\" in \"{spec}\": use ro or rw")]
    VolumeMode { spec: String, mode: String },
    #[error("invalid environment variable \"{0}\": the name must not be empty")]
    EnvName(String),
    #[error("the working directory \"{0}\" is invalid: it needs to be an absolute path")]
    Workdir(String),
    #[error(
        "no command specified: the image has no Cmd or Entrypoint, give one after the image name"
    )]
    NoCommand,
    #[error("invalid --storage-opt \"{0}\": berth knows size=<size> (like size=10G)")]
    StorageOpt(String),
}

/// `64m` → 67108864. Units are powers of 1024, as in Docker.
pub fn parse_size(text: &str) -> Result<i64, OptionError> {
    let bad = || OptionError::Size(text.to_string());
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|s| !s.is_empty())
        .unwrap_or(&lower);
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = value * (1u64 << shift) as f64;
    if bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// `--memory`: at least 6 MiB, like Docker.
pub fn parse_memory(text: &str) -> Result<i64, OptionError> {
    let bytes = parse_size(text)?;
    if bytes < 6 << 20 {
        return Err(OptionError::MemoryTooSmall(text.to_string()));
    }
    Ok(bytes)
}

/// `--cpus 0.5` → billionths of a CPU.
pub fn parse_cpus(cpus: f64, host_cpus: usize) -> Result<i64, OptionError> {
    if !(0.01..=host_cpus as f64).contains(&cpus) {
        return Err(OptionError::Cpus {
            given: cpus,
            max: host_cpus,
        });
    }
    Ok((cpus * 1e9).round() as i64)
}

/// `-v /host:/ctr[:ro]`.
pub fn parse_volume(spec: &str) -> Result<BindMount, OptionError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(OptionError::VolumeSyntax(spec.to_string())),
    };
    if source.is_empty() || destination.is_empty() {
        return Err(OptionError::VolumeSyntax(spec.to_string()));
    }
    if !source.starts_with('/') {
        return Err(OptionError::NamedVolume(spec.to_string()));
    }
    if !destination.starts_with('/') {
        return Err(OptionError::VolumeDestination(spec.to_string()));
    }
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => {
            return Err(OptionError::VolumeMode {
                spec: spec.to_string(),
                mode: other.to_string(),
            })
        }
    };
    Ok(BindMount {
        source: PathBuf::from(source),
        destination: destination.to_string(),
        read_only,
    })
}

/// Lines of an `--env-file`: `KEY=VALUE`, or `KEY` alone to copy it from berth's environment.
pub fn parse_env_file(contents: &str) -> Vec<String> {
    contents
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(expand_env_entry)
        .collect()
}

/// `KEY=VALUE` stays; `KEY` becomes `KEY=<host value>`, or nothing when the host has none.
pub fn expand_env_entry(entry: &str) -> Option<String> {
    if entry.contains('=') {
        Some(entry.to_string())
    } else {
        std::env::var(entry).ok().map(|v| format!("{entry}={v}"))
    }
}

/// Later entries replace earlier ones with the same name; order of first appearance is kept.
pub fn merge_env(layers: &[Vec<String>]) -> Result<Vec<String>, OptionError> {
    let mut merged: Vec<String> = Vec::new();
    for entry in layers.iter().flatten() {
        let name = entry.split('=').next().unwrap_or_default();
        if name.is_empty() {
            return Err(OptionError::EnvName(entry.clone()));
        }
        match merged
            .iter_mut()
            .find(|e| e.split('=').next() == Some(name))
        {
            Some(slot) => *slot = entry.clone(),
            None => merged.push(entry.clone()),
        }
    }
    Ok(merged)
}

/// Docker's rule for what runs: entrypoint + command, where `--entrypoint` also drops the
/// image's Cmd, and a command given on the line replaces the image's Cmd.
pub fn resolve_args(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint_flag: Option<&str>,
    command: &[String],
) -> Result<Vec<String>, OptionError> {
    let entrypoint: Vec<String> = match entrypoint_flag {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => image_entrypoint.to_vec(),
    };
    let cmd: Vec<String> = if !command.is_empty() {
        command.to_vec()
    } else if entrypoint_flag.is_some() {
        Vec::new()
    } else {
        image_cmd.to_vec()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(OptionError::NoCommand);
    }
    Ok(args)
}

/// `--storage-opt size=10G` → bytes; the last `size` wins; 0 when none is given.
pub fn parse_storage_opts(opts: &[String]) -> Result<i64, OptionError> {
    let mut size = 0;
    for opt in opts {
        match opt.split_once('=') {
            Some(("size", value)) => size = parse_size(value)?,
            _ => return Err(OptionError::StorageOpt(opt.clone())),
        }
    }
    Ok(size)
}

/// `-w` must be absolute.
pub fn check_workdir(dir: &str) -> Result<(), OptionError> {
    if Path::new(dir).is_absolute() {
        Ok(())
    } else {
        Err(OptionError::Workdir(dir.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10mb"), Ok(10 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1m").is_err());
        assert!(parse_size("5x").is_err());
        assert_eq!(
            parse_memory("1m"),
            Err(OptionError::MemoryTooSmall("1m".into()))
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus(0.5, 2), Ok(500_000_000));
        assert!(parse_cpus(0.0, 2).is_err());
        assert!(parse_cpus(3.0, 2).is_err());
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/data:/mnt:ro").unwrap();
        assert_eq!(v.source, PathBuf::from("/data"));
        assert_eq!(v.destination, "/mnt");
        assert!(v.read_only);
        assert!(!parse_volume("/data:/mnt").unwrap().read_only);
        assert!(matches!(
            parse_volume("data:/mnt"),
            Err(OptionError::NamedVolume(_))
        ));
        assert!(matches!(
            parse_volume("/data:mnt"),
            Err(OptionError::VolumeDestination(_))
        ));
        assert!(matches!(
            parse_volume("/data:/mnt:rx"),
            Err(OptionError::VolumeMode { .. })
        ));
        assert!(matches!(
            parse_volume("/data"),
            Err(OptionError::VolumeSyntax(_))
        ));
    }

    #[test]
    fn env_files_and_merging() {
        std::env::set_var("BERTH_TEST_FROM_HOST", "yes");
        let parsed =
            parse_env_file("# c\nA=1\n\n  B=two words\nBERTH_TEST_FROM_HOST\nUNSET_XYZ_123\n");
        assert_eq!(
            parsed,
            strings(&["A=1", "B=two words", "BERTH_TEST_FROM_HOST=yes"])
        );
        let merged =
            merge_env(&[strings(&["PATH=/bin", "A=1"]), strings(&["A=2", "C=3"])]).unwrap();
        assert_eq!(merged, strings(&["PATH=/bin", "A=2", "C=3"]));
        assert!(merge_env(&[strings(&["=x"])]).is_err());
    }

    #[test]
    fn entrypoint_and_command() {
        let ep = strings(&["/entry"]);
        let cmd = strings(&["sh"]);
        assert_eq!(
            resolve_args(&ep, &cmd, None, &[]).unwrap(),
            strings(&["/entry", "sh"])
        );
        assert_eq!(
            resolve_args(&ep, &cmd, None, &strings(&["ls", "-l"])).unwrap(),
            strings(&["/entry", "ls", "-l"])
        );
        assert_eq!(
            resolve_args(&ep, &cmd, Some("/bin/echo"), &[]).unwrap(),
            strings(&["/bin/echo"])
        );
        assert_eq!(
            resolve_args(&ep, &cmd, Some(""), &strings(&["id"])).unwrap(),
            strings(&["id"])
        );
        assert_eq!(
            resolve_args(&[], &[], None, &[]),
            Err(OptionError::NoCommand)
        );
    }

    #[test]
    fn storage_opts() {
        assert_eq!(parse_storage_opts(&[]), Ok(0));
        assert_eq!(parse_storage_opts(&["size=1G".into()]), Ok(1 << 30));
        assert!(matches!(
            parse_storage_opts(&["quota=1G".into()]),
            Err(OptionError::StorageOpt(_))
        ));
        assert!(parse_storage_opts(&["size=lots".into()]).is_err());
    }

    #[test]
    fn workdir_must_be_absolute() {
        assert!(check_workdir("/app").is_ok());
        assert!(check_workdir("app").is_err());
    }
}
