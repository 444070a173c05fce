//! Unpacking an archive into a scratch directory, refusing anything that would leave it.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::store::blob;
use crate::store::unpack::safe_relative;

use super::ArchiveError;

/// Extracts the archive's regular files into `dir` (symlinks become copies of their
/// in-archive targets; nothing outside `dir` is ever touched).
pub(super) fn extract(input: &Path, dir: &Path) -> Result<(), ArchiveError> {
    let file = File::open(input).map_err(|source| ArchiveError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    let tar_err = |source| ArchiveError::Tar {
        path: input.to_path_buf(),
        source,
    };
    let reader = blob::decompress(BufReader::new(file), "").map_err(tar_err)?;
    let mut archive = tar::Archive::new(reader);
    let mut links: Vec<(PathBuf, PathBuf, String)> = Vec::new();
    let mut files = 0usize;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let name = raw.display().to_string();
        let unsafe_entry = |reason: String| ArchiveError::UnsafeEntry {
            entry: name.clone(),
            reason,
        };
        let Some(rel) = safe_relative(&raw).map_err(unsafe_entry)? else {
            continue;
        };
        let dest = dir.join(&rel);
        let write_err = |source| ArchiveError::Write {
            path: dest.clone(),
            source,
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest).map_err(write_err)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(write_err)?;
                }
                let mut out = File::create(&dest).map_err(write_err)?;
                io::copy(&mut entry, &mut out).map_err(tar_err)?;
                files += 1;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(tar_err)?
                    .ok_or_else(|| unsafe_entry("it is a link without a target".into()))?
                    .into_owned();
                // Old docker save archives link duplicate layers: "../<id>/layer.tar".
                let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.clone()
                };
                let resolved = normalize(&joined).ok_or_else(|| {
                    unsafe_entry(format!(
                        "its link target \"{}\" leaves the archive",
                        target.display()
                    ))
                })?;
                links.push((rel, resolved, name));
            }
            _ => {}
        }
    }
    for (rel, target, name) in links {
        let dest = dir.join(&rel);
        let source = dir.join(&target);
        if !source.is_file() {
            return Err(ArchiveError::UnsafeEntry {
                entry: name,
                reason: format!(
                    "its link target \"{}\" is not a file in the archive",
                    target.display()
                ),
            });
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|source| ArchiveError::Write {
                path: p.to_path_buf(),
                source,
            })?;
        }
        fs::copy(&source, &dest).map_err(|source| ArchiveError::Write {
            path: dest.clone(),
            source,
        })?;
        files += 1;
    }
    if files == 0 {
        return Err(ArchiveError::UnknownFormat(input.to_path_buf()));
    }
    Ok(())
}

/// Lexically resolves `..` inside the archive; `None` if it would leave it.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{assert_store_empty, load_bytes, new_store, oci_archive};
    use crate::store::unpack::tests::TarBuilder;

    #[test]
    fn rejects_traversal_in_archive_and_layer() {
        let (_r, store) = new_store();
        let data = TarBuilder::new().file("../../evil", b"x").finish();
        let e = load_bytes(&store, &data).unwrap_err();
        assert!(e.to_string().contains("../../evil"), "{e}");
        assert_store_empty(&store);
        // A layer escaping with "..": rejected at load, nothing left behind.
        let evil = TarBuilder::new().file("../evil", b"x").finish();
        let e = load_bytes(&store, &oci_archive(&evil)).unwrap_err();
        let chain = format!("{:?}", e);
        assert!(chain.contains("../evil"), "{chain}");
        assert_store_empty(&store);
    }
}
