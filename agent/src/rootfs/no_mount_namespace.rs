//! A container whose spec lists no mount namespace inherits the runtime's (an
//! unlisted namespace type is inherited, says the runtime spec), so it shares the
//! runtime's mount table: anything mounted for it would be the host's mount, left
//! behind. Nothing is mounted then. The process is chrooted into the root
//! filesystem, as runc does without a mount namespace; the spec's mounts are not
//! made (runc makes them on the host's mount table and leaves them there), and
//! what only a mount could give is refused before anything is created.

use std::path::Path;

use oci_spec::runtime::Spec;

use super::{set_sysctls, step, Result, RootfsError};
use crate::create::Rootfs;
use crate::syscall::Syscall;

/// Refuse, before anything is created, what cannot be done without mounting: an
/// overlay root, `--no-pivot` (which moves the root onto the host's /), and the
/// restrictions masked and read-only paths and a read-only root would give (the
/// container would silently get less protection than asked; runc refuses masked
/// and read-only paths too). The answer names what was asked.
pub fn check(
    spec: &Spec,
    rootfs: &Rootfs,
    no_pivot: bool,
) -> std::result::Result<(), &'static str> {
    if let Rootfs::Overlay { .. } = rootfs {
        return Err("an overlay root filesystem needs a mount namespace");
    }
    if no_pivot {
        return Err("--no-pivot needs a mount namespace");
    }
    let linux = spec.linux().as_ref();
    let listed = |paths: Option<&Vec<String>>| paths.is_some_and(|p| !p.is_empty());
    if listed(linux.and_then(|l| l.masked_paths().as_ref())) {
        return Err("linux.maskedPaths needs a mount namespace");
    }
    if listed(linux.and_then(|l| l.readonly_paths().as_ref())) {
        return Err("linux.readonlyPaths needs a mount namespace");
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        return Err("root.readonly needs a mount namespace");
    }
    Ok(())
}

/// The directory the process is chrooted into.
pub fn root_dir(rootfs: &Rootfs) -> Result<&Path> {
    match rootfs {
        Rootfs::Path(path) => Ok(path),
        Rootfs::Overlay { .. } => Err(RootfsError::NeedsMountNamespace(
            "an overlay root filesystem",
        )),
    }
}

/// Apply `linux.sysctl` (through the runtime's /proc, which the chroot has not)
/// and chroot into `root`. Nothing is mounted.
pub fn enter(sys: &dyn Syscall, spec: &Spec, root: &Path) -> Result<()> {
    if let Some(linux) = spec.linux() {
        set_sysctls(sys, linux.sysctl().as_ref())?;
    }
    step(|| format!("chdir to {}", root.display()), sys.chdir(root))?;
    step(
        || format!("chroot into {}", root.display()),
        sys.chroot(Path::new(".")),
    )?;
    step(|| "chdir to /".into(), sys.chdir(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use crate::spec;
    use crate::syscall::test::{Call, RecordingSyscall};

    /// Docker's defaults without the mount namespace and what needs it.
    fn spec_without_mount_namespace() -> Spec {
        let mut spec = spec::default_spec();
        if let Some(linux) = spec.linux_mut() {
            let namespaces = linux.namespaces().clone().unwrap_or_default();
            linux.set_namespaces(Some(
                namespaces
                    .into_iter()
                    .filter(|ns| ns.typ() != oci_spec::runtime::LinuxNamespaceType::Mount)
                    .collect(),
            ));
            linux.set_masked_paths(None);
            linux.set_readonly_paths(Some(Vec::new()));
        }
        spec
    }

    #[test]
    fn the_process_is_chrooted_and_nothing_is_mounted() {
        let sys = RecordingSyscall::default();
        let mut spec = spec_without_mount_namespace();
        if let Some(linux) = spec.linux_mut() {
            linux.set_sysctl(Some(HashMap::from([(
                "net.ipv4.ip_forward".to_owned(),
                "1".to_owned(),
            )])));
        }
        // The spec's mounts (Docker's /proc, /dev, /sys...) are not made.
        assert!(!spec.mounts().as_deref().unwrap_or_default().is_empty());
        let rootfs = Rootfs::Path(PathBuf::from("/bundle/rootfs"));
        check(&spec, &rootfs, false).expect("nothing that needs mounting");
        enter(&sys, &spec, root_dir(&rootfs).expect("a directory")).expect("enter");
        assert_eq!(
            sys.calls(),
            [
                Call::WriteFile(
                    PathBuf::from("/proc/sys/net/ipv4/ip_forward"),
                    "1".to_owned()
                ),
                Call::Chdir(PathBuf::from("/bundle/rootfs")),
                Call::Chroot(PathBuf::from(".")),
                Call::Chdir(PathBuf::from("/")),
            ]
        );
    }

    #[test]
    fn what_only_a_mount_can_give_is_refused() {
        let path = Rootfs::Path(PathBuf::from("/r"));
        let base = spec_without_mount_namespace();
        let overlay = Rootfs::Overlay {
            lower: vec![PathBuf::from("/l")],
            upper: PathBuf::from("/u"),
            work: PathBuf::from("/w"),
            target: PathBuf::from("/t"),
        };
        assert_eq!(
            check(&base, &overlay, false),
            Err("an overlay root filesystem needs a mount namespace")
        );
        assert_eq!(
            root_dir(&overlay).map_err(|e| e.to_string()),
            Err("an overlay root filesystem needs a mount namespace".to_owned())
        );
        assert_eq!(
            check(&base, &path, true),
            Err("--no-pivot needs a mount namespace")
        );
        let mut masked = base.clone();
        if let Some(linux) = masked.linux_mut() {
            linux.set_masked_paths(Some(vec!["/proc/kcore".into()]));
        }
        assert_eq!(
            check(&masked, &path, false),
            Err("linux.maskedPaths needs a mount namespace")
        );
        let mut readonly = base.clone();
        if let Some(linux) = readonly.linux_mut() {
            linux.set_readonly_paths(Some(vec!["/proc/sys".into()]));
        }
        assert_eq!(
            check(&readonly, &path, false),
            Err("linux.readonlyPaths needs a mount namespace")
        );
        let mut readonly_root = base;
        if let Some(root) = readonly_root.root_mut() {
            root.set_readonly(Some(true));
        }
        assert_eq!(
            check(&readonly_root, &path, false),
            Err("root.readonly needs a mount namespace")
        );
    }
}
