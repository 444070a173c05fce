//! Resolving `-u name[:group]` against the container's own /etc/passwd and /etc/group,
//! read through the layer stack (the container's upper layer first, then image layers top-down).

use std::path::{Path, PathBuf};

/// The numeric identity a container process runs as, and its home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// A user or group that the container does not know.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in the container's /etc/passwd")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in the container's /etc/group")]
    NoSuchGroup(String),
}

/// Finds `relative` (like `etc/passwd`) in the first layer that has it, top-most first, and reads it.
/// A whiteout (a 0:0 character device) hides the file in the layers below.
pub fn read_layered_file(layers_top_first: &[PathBuf], relative: &str) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    for layer in layers_top_first {
        let path = layer.join(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_char_device() => return None,
            Ok(meta) if meta.is_file() => return std::fs::read_to_string(&path).ok(),
            _ => continue,
        }
    }
    None
}

/// Resolves a user spec given the contents of /etc/passwd and /etc/group (either may be missing).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    let passwd = passwd.unwrap_or_default();
    let group = group.unwrap_or_default();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let entry =
        passwd_entries(passwd).find(|e| e.name == user_part || e.uid.to_string() == user_part);
    let (uid, mut gid, name, home) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name.to_string()), e.home.to_string()),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => return Err(UserError::NoSuchUser(user_part.to_string())),
    };
    if let Some(g) = group_part {
        gid = match group_entries(group).find(|e| e.name == g) {
            Some(e) => e.gid,
            None => g
                .parse()
                .map_err(|_| UserError::NoSuchGroup(g.to_string()))?,
        };
    }
    let mut additional_gids: Vec<u32> = match (&name, group_part) {
        // Supplementary groups come from membership lists, unless a group was forced.
        (Some(n), None) => group_entries(group)
            .filter(|e| e.members.split(',').any(|m| m == n) && e.gid != gid)
            .map(|e| e.gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Reads passwd and group through the layers, then resolves.
pub fn resolve_in_layers(
    spec: &str,
    layers_top_first: &[PathBuf],
) -> Result<ResolvedUser, UserError> {
    let passwd = read_layered_file(layers_top_first, "etc/passwd");
    let group = read_layered_file(layers_top_first, "etc/group");
    resolve(spec, passwd.as_deref(), group.as_deref())
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().filter(|h| !h.is_empty()).unwrap_or("/"),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f.get(3).copied().unwrap_or_default(),
        })
    })
}

/// The image layers as stacked for overlay, top-most first, with the container's upper on top.
pub fn stack_top_first(upper: &Path, layers_bottom_first: &[PathBuf]) -> Vec<PathBuf> {
    std::iter::once(upper.to_path_buf())
        .chain(layers_bottom_first.iter().rev().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:user\nuser:x:1000:\naudio:x:29:user,other\n";

    #[test]
    fn names_and_numbers() {
        let u = resolve("user", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.additional_gids, vec![10, 29]);
        let n = resolve("1000", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(n.uid, 1000);
        let unknown = resolve("4242", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        let root = resolve("", None, None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }

    #[test]
    fn explicit_groups() {
        let u = resolve("user:wheel", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        assert!(u.additional_gids.is_empty());
        let v = resolve("1:2", None, None).unwrap();
        assert_eq!((v.uid, v.gid), (1, 2));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("ghost", Some(PASSWD), None),
            Err(UserError::NoSuchUser("ghost".into()))
        );
        assert_eq!(
            resolve("user:ghosts", Some(PASSWD), Some(GROUP)),
            Err(UserError::NoSuchGroup("ghosts".into()))
        );
    }

    #[test]
    fn layered_lookup_honours_order() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bottom.path().join("etc")).unwrap();
        std::fs::write(bottom.path().join("etc/passwd"), "old").unwrap();
        let layers = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];
        assert_eq!(
            read_layered_file(&layers, "etc/passwd").as_deref(),
            Some("old")
        );
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::write(top.path().join("etc/passwd"), "new").unwrap();
        assert_eq!(
            read_layered_file(&layers, "etc/passwd").as_deref(),
            Some("new")
        );
    }
}
