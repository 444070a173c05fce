//! Unpacking one layer tar into a directory, in the form overlayfs stacks.
//!
//! Entries are checked before anything is written: `..` components, absolute paths,
//! parents that are symlinks and hard links that leave the layer are rejected with an
//! error naming the entry. AUFS-style whiteouts (`.wh.NAME`, `.wh..wh..opq`) become
//! overlayfs whiteouts (a 0:0 character device, `trusted.overlay.opaque=y`).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry \"{entry}\" is rejected: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error("cannot unpack layer entry \"{entry}\"")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the layer tar stream")]
    Read(#[source] io::Error),
}

/// Writes overlayfs whiteouts; a trait so that tests can run without `CAP_MKNOD`.
pub trait WhiteoutWriter {
    /// Marks `path` as deleted (overlayfs: a 0:0 character device).
    fn whiteout(&self, path: &Path) -> io::Result<()>;
    /// Marks directory `dir` as opaque (overlayfs: `trusted.overlay.opaque=y`).
    fn opaque(&self, dir: &Path) -> io::Result<()>;
}

/// The real overlayfs whiteout writer (needs root).
pub struct OverlayWhiteouts;

impl WhiteoutWriter for OverlayWhiteouts {
    fn whiteout(&self, path: &Path) -> io::Result<()> {
        mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))?;
        Ok(())
    }

    fn opaque(&self, dir: &Path) -> io::Result<()> {
        set_xattr(dir, "trusted.overlay.opaque", b"y")
    }
}

/// Sets extended attribute `name` on `path` without following a symlink.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cname = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are valid NUL-terminated C strings that outlive the call, and
    // `value` is a valid buffer of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns a tar path into a safe relative path (`None` for the layer root itself).
pub fn safe_relative(entry: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("its path contains a '..' component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute".into()),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Makes sure every parent of `rel` inside `dest` is a real directory (creating missing
/// ones), refusing to go through a symlink.
fn prepare_parents(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    let parent = match rel.parent() {
        Some(p) => p,
        None => return Ok(()),
    };
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "it would be written through the symlink \"{}\"",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "its parent \"{}\" is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("cannot create parent directory: {e}"))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot set parent directory mode: {e}"))?;
            }
            Err(e) => return Err(format!("cannot inspect parent directory: {e}")),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (unless `keep_dir` and it is a directory).
fn clear(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let t = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Unpacks the (already decompressed) layer tar `reader` into `dest`, which must exist.
pub fn unpack_layer<R: Read>(
    reader: R,
    dest: &Path,
    whiteouts: &dyn WhiteoutWriter,
) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();

    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let name = raw.display().to_string();
        let unsafe_err = |reason: String| UnpackError::Unsafe {
            entry: name.clone(),
            reason,
        };
        let io_err = |source: io::Error| UnpackError::Entry {
            entry: name.clone(),
            source,
        };
        let kind = entry.header().entry_type();
        let rel = match safe_relative(&raw).map_err(unsafe_err)? {
            Some(rel) => rel,
            None => {
                // The layer root itself: only its metadata matters.
                if kind.is_dir() {
                    apply_metadata(&entry, dest, false).map_err(io_err)?;
                    if let Ok(m) = entry.header().mtime() {
                        dir_times.push((dest.to_path_buf(), m));
                    }
                }
                continue;
            }
        };
        prepare_parents(dest, &rel).map_err(unsafe_err)?;
        let target = dest.join(&rel);
        let file_name = rel
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();

        // Whiteouts.
        if file_name == OPAQUE_MARKER {
            let dir = target.parent().unwrap_or(dest);
            whiteouts.opaque(dir).map_err(io_err)?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other AUFS metadata (.wh..wh.plnk and friends): not content.
                continue;
            }
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(unsafe_err("it is a whiteout of nothing".into()));
            }
            let deleted = target.with_file_name(hidden);
            clear(&deleted, false).map_err(io_err)?;
            whiteouts.whiteout(&deleted).map_err(io_err)?;
            continue;
        }

        let xattrs = pax_xattrs(&mut entry);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                clear(&target, true).map_err(io_err)?;
                entry.unpack(&target).map_err(io_err)?;
                if let Ok(m) = entry.header().mtime() {
                    dir_times.push((target.clone(), m));
                }
            }
            T::Regular | T::Continuous | T::GNUSparse | T::Symlink => {
                clear(&target, false).map_err(io_err)?;
                entry.unpack(&target).map_err(io_err)?;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| unsafe_err("it is a hard link without a target".into()))?
                    .into_owned();
                let link_rel = safe_relative(&link)
                    .map_err(|r| {
                        unsafe_err(format!(
                            "its hard link target \"{}\" is outside the layer: {r}",
                            link.display()
                        ))
                    })?
                    .ok_or_else(|| unsafe_err("it is a hard link to the layer root".into()))?;
                prepare_parents(dest, &link_rel).map_err(|r| {
                    unsafe_err(format!(
                        "its hard link target \"{}\" is outside the layer: {r}",
                        link.display()
                    ))
                })?;
                let source = dest.join(&link_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(unsafe_err(format!(
                            "its hard link target \"{}\" is not a file earlier in the layer",
                            link.display()
                        )))
                    }
                }
                clear(&target, false).map_err(io_err)?;
                fs::hard_link(&source, &target).map_err(io_err)?;
            }
            T::Char | T::Block | T::Fifo => {
                clear(&target, false).map_err(io_err)?;
                let header = entry.header();
                let (major, minor) = if kind == T::Fifo {
                    (0, 0)
                } else {
                    (
                        header.device_major().map_err(io_err)?.unwrap_or(0),
                        header.device_minor().map_err(io_err)?.unwrap_or(0),
                    )
                };
                let flag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                mknod(
                    &target,
                    flag,
                    Mode::empty(),
                    makedev(u64::from(major), u64::from(minor)),
                )
                .map_err(|e| io_err(e.into()))?;
                apply_metadata(&entry, &target, true).map_err(io_err)?;
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            other => {
                return Err(unsafe_err(format!(
                    "its tar entry type {:?} is not supported",
                    other.as_byte() as char
                )))
            }
        }
        for (key, value) in xattrs {
            if let Err(e) = set_xattr(&target, &key, &value) {
                tracing::debug!("cannot set xattr {key} on {}: {e}", target.display());
            }
        }
    }
    // Directory mtimes last: writing their children changed them.
    for (dir, mtime) in dir_times.iter().rev() {
        if let Err(e) = set_mtime(dir, *mtime) {
            tracing::debug!("cannot set mtime on {}: {e}", dir.display());
        }
    }
    Ok(())
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// Applies owner, mode and mtime from the header (for entries tar's unpack doesn't cover).
fn apply_metadata<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
    with_mtime: bool,
) -> io::Result<()> {
    let h = entry.header();
    let uid = u32::try_from(h.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(h.gid()?).map_err(io::Error::other)?;
    lchown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(h.mode()? & 0o7777))?;
    if with_mtime {
        set_mtime(path, h.mtime()?)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Records whiteouts instead of writing them (works without root).
    #[derive(Default)]
    pub struct Recorder {
        pub whiteouts: RefCell<Vec<PathBuf>>,
        pub opaque: RefCell<Vec<PathBuf>>,
    }

    impl WhiteoutWriter for Recorder {
        fn whiteout(&self, path: &Path) -> io::Result<()> {
            self.whiteouts.borrow_mut().push(path.to_path_buf());
            Ok(())
        }
        fn opaque(&self, dir: &Path) -> io::Result<()> {
            self.opaque.borrow_mut().push(dir.to_path_buf());
            Ok(())
        }
    }

    /// A tar builder that writes raw names (so tests can build malicious archives).
    pub struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        pub fn new() -> Self {
            TarBuilder(tar::Builder::new(Vec::new()))
        }

        fn header(kind: tar::EntryType, name: &str, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            // Bypass tar's own path checks: write the name bytes directly.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            h
        }

        pub fn dir(mut self, name: &str) -> Self {
            let h = Self::header(tar::EntryType::Directory, name, 0, 0o755);
            self.0.append(&h, io::empty()).unwrap();
            self
        }

        pub fn file(mut self, name: &str, data: &[u8]) -> Self {
            let h = Self::header(tar::EntryType::Regular, name, data.len() as u64, 0o644);
            self.0.append(&h, data).unwrap();
            self
        }

        pub fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(kind, name, 0, 0o777);
            h.set_link_name(target).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }

        pub fn fifo(mut self, name: &str) -> Self {
            let h = Self::header(tar::EntryType::Fifo, name, 0, 0o600);
            self.0.append(&h, io::empty()).unwrap();
            self
        }

        pub fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn unpack(data: &[u8]) -> (tempfile::TempDir, Result<(), UnpackError>, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::default();
        let r = unpack_layer(data, dir.path(), &rec);
        (dir, r, rec)
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn regular_content_and_links() {
        let tar = TarBuilder::new()
            .dir("./etc/")
            .file("./etc/hosts", b"127.0.0.1 localhost\n")
            .link(tar::EntryType::Symlink, "./etc/abs", "/etc/hosts")
            .link(tar::EntryType::Link, "./etc/hard", "etc/hosts")
            .fifo("./run.fifo")
            .file("bin/deep/file", b"x")
            .finish();
        let (dir, r, _) = unpack(&tar);
        r.unwrap();
        let d = dir.path();
        assert_eq!(
            fs::read(d.join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        assert_eq!(
            fs::read_link(d.join("etc/abs")).unwrap(),
            Path::new("/etc/hosts")
        );
        assert_eq!(
            fs::metadata(d.join("etc/hard")).unwrap().ino(),
            fs::metadata(d.join("etc/hosts")).unwrap().ino()
        );
        assert!(fs::symlink_metadata(d.join("run.fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(fs::read(d.join("bin/deep/file")).unwrap(), b"x");
        assert_eq!(fs::metadata(d.join("etc")).unwrap().mtime(), 1_600_000_000);
        assert_eq!(
            fs::metadata(d.join("etc/hosts")).unwrap().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn whiteouts_recorded() {
        let tar = TarBuilder::new()
            .dir("a/")
            .file("a/.wh..wh..opq", b"")
            .file("a/.wh.gone", b"")
            .file("a/.wh..wh.plnk", b"")
            .finish();
        let (dir, r, rec) = unpack(&tar);
        r.unwrap();
        assert_eq!(*rec.opaque.borrow(), vec![dir.path().join("a")]);
        assert_eq!(*rec.whiteouts.borrow(), vec![dir.path().join("a/gone")]);
        assert!(!dir.path().join("a/.wh.gone").exists());
        assert!(!dir.path().join("a/.wh..wh..opq").exists());
    }

    #[test]
    fn whiteouts_overlay_form() {
        if !is_root() {
            eprintln!("skipping whiteouts_overlay_form: mknod 0:0 and trusted.* xattrs need root");
            return;
        }
        let tar = TarBuilder::new()
            .dir("a/")
            .file("a/.wh..wh..opq", b"")
            .file("a/.wh.gone", b"")
            .finish();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer(&tar[..], dir.path(), &OverlayWhiteouts).unwrap();
        let m = fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        let mut buf = [0u8; 8];
        let p = CString::new(dir.path().join("a").as_os_str().as_bytes()).unwrap();
        let n = CString::new("trusted.overlay.opaque").unwrap();
        // SAFETY: valid C strings and a buffer of the given length.
        let len =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            // Some filesystems (e.g. overlay-on-overlay in CI) refuse trusted.* xattrs.
            eprintln!(
                "trusted.* xattrs unsupported here: {}",
                io::Error::last_os_error()
            );
        } else {
            assert_eq!(&buf[..len as usize], b"y");
        }
    }

    fn assert_rejected(tar: &[u8], entry: &str, why: &str) {
        let (_dir, r, _) = unpack(tar);
        let e = r.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, UnpackError::Unsafe { .. }), "{msg}");
        assert!(msg.contains(entry) && msg.contains(why), "{msg}");
    }

    #[test]
    fn rejects_parent_dir() {
        let tar = TarBuilder::new().file("../evil", b"x").finish();
        assert_rejected(&tar, "../evil", "'..'");
        let tar = TarBuilder::new().file("a/../../evil", b"x").finish();
        assert_rejected(&tar, "a/../../evil", "'..'");
    }

    #[test]
    fn rejects_absolute() {
        let tar = TarBuilder::new().file("/etc/evil", b"x").finish();
        assert_rejected(&tar, "/etc/evil", "absolute");
    }

    #[test]
    fn rejects_write_through_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let tar = TarBuilder::new()
            .link(
                tar::EntryType::Symlink,
                "escape",
                outside.path().to_str().unwrap(),
            )
            .file("escape/evil", b"x")
            .finish();
        assert_rejected(&tar, "escape/evil", "symlink");
        assert!(!outside.path().join("evil").exists());
        // Relative symlink too.
        let tar = TarBuilder::new()
            .link(tar::EntryType::Symlink, "up", "..")
            .file("up/evil", b"x")
            .finish();
        assert_rejected(&tar, "up/evil", "symlink");
    }

    #[test]
    fn rejects_hardlink_outside() {
        let tar = TarBuilder::new()
            .link(tar::EntryType::Link, "passwd", "../../etc/passwd")
            .finish();
        assert_rejected(&tar, "passwd", "outside the layer");
        let tar = TarBuilder::new()
            .link(tar::EntryType::Link, "passwd", "/etc/passwd")
            .finish();
        assert_rejected(&tar, "passwd", "outside the layer");
        let tar = TarBuilder::new()
            .link(tar::EntryType::Symlink, "etc", "/etc")
            .link(tar::EntryType::Link, "passwd", "etc/passwd")
            .finish();
        assert_rejected(&tar, "passwd", "symlink");
    }
}
