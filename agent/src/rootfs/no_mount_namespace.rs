//! A container whose spec lists no mount namespace inherits the runtime's (an
//! unlisted namespace type is inherited, says the runtime spec), so it shares the
//! runtime's mount table: anything mounted for it would be the host's mount, left
//! behind. Nothing stays mounted then. The process is chrooted into the root
//! filesystem, as runc does without a mount namespace; the spec's mounts are not
//! made (runc makes them on the host's mount table and leaves them there), and
//! what only a mount could give is refused before anything is created. An
//! overlay root (the guest agent's) is mounted and detached from the table at
//! once, living on only as the process's root.

use std::path::Path;

use nix::mount::MntFlags;
use oci_spec::runtime::Spec;

use super::{mount_root, set_sysctls, step, Result};
use crate::create::Rootfs;
use crate::syscall::Syscall;

/// Refuse, before anything is created, what cannot be done without mounting:
/// `--no-pivot` (which moves the root onto the host's /), and the restrictions
/// masked and read-only paths and a read-only root would give (the container
/// would silently get less protection than asked; runc refuses masked and
/// read-only paths too). The answer names what was asked.
pub fn check(spec: &Spec, no_pivot: bool) -> std::result::Result<(), &'static str> {
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

/// Apply `linux.sysctl` (through the runtime's /proc, which the chroot has not)
/// and chroot into the root. A directory is used as it is; an overlay is mounted,
/// entered, and detached from the shared mount table (a lazy unmount) before the
/// chroot, so it is gone from the table whatever happens next.
pub fn enter(sys: &dyn Syscall, spec: &Spec, rootfs: &Rootfs) -> Result<()> {
    if let Some(linux) = spec.linux() {
        set_sysctls(sys, linux.sysctl().as_ref())?;
    }
    match rootfs {
        Rootfs::Path(root) => {
            step(|| format!("chdir to {}", root.display()), sys.chdir(root))?;
        }
        Rootfs::Overlay { .. } => {
            let root = mount_root(sys, rootfs)?;
            let entered = step(|| format!("chdir to {}", root.display()), sys.chdir(&root));
            step(
                || format!("detach {} from the mount table", root.display()),
                sys.umount2(&root, MntFlags::MNT_DETACH),
            )?;
            entered?;
        }
    }
    step(
        || "chroot into the root filesystem".into(),
        sys.chroot(Path::new(".")),
    )?;
    step(|| "chdir to /".into(), sys.chdir(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use nix::mount::MsFlags;

    use super::*;
    use crate::spec;
    use crate::syscall::test::{mount_call, Call, RecordingSyscall};

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
        check(&spec, false).expect("nothing that needs mounting");
        let rootfs = Rootfs::Path(PathBuf::from("/bundle/rootfs"));
        enter(&sys, &spec, &rootfs).expect("enter");
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
    fn an_overlay_root_is_detached_from_the_mount_table_before_the_chroot() {
        let overlay = Rootfs::Overlay {
            lower: vec![PathBuf::from("/l")],
            upper: PathBuf::from("/u"),
            work: PathBuf::from("/w"),
            target: PathBuf::from("/t"),
        };
        let expected = [
            mount_call(
                Some("overlay"),
                "/t",
                Some("overlay"),
                MsFlags::empty(),
                Some("lowerdir=/l,upperdir=/u,workdir=/w"),
            ),
            Call::Chdir(PathBuf::from("/t")),
            Call::Umount2(PathBuf::from("/t"), MntFlags::MNT_DETACH),
            Call::Chroot(PathBuf::from(".")),
            Call::Chdir(PathBuf::from("/")),
        ];
        let sys = RecordingSyscall::default();
        enter(&sys, &spec_without_mount_namespace(), &overlay).expect("enter");
        assert_eq!(sys.calls(), expected);
        // A detach that fails is an error, and nothing is entered.
        let mut sys = RecordingSyscall::default();
        sys.busy.insert(PathBuf::from("/t"));
        let err = enter(&sys, &spec_without_mount_namespace(), &overlay).expect_err("busy");
        assert_eq!(err.to_string(), "failed to detach /t from the mount table");
        assert_eq!(sys.calls(), expected[..3]);
    }

    #[test]
    fn what_only_a_mount_can_give_is_refused() {
        let base = spec_without_mount_namespace();
        assert_eq!(
            check(&base, true),
            Err("--no-pivot needs a mount namespace")
        );
        let mut masked = base.clone();
        if let Some(linux) = masked.linux_mut() {
            linux.set_masked_paths(Some(vec!["/proc/kcore".into()]));
        }
        assert_eq!(
            check(&masked, false),
            Err("linux.maskedPaths needs a mount namespace")
        );
        let mut readonly = base.clone();
        if let Some(linux) = readonly.linux_mut() {
            linux.set_readonly_paths(Some(vec!["/proc/sys".into()]));
        }
        assert_eq!(
            check(&readonly, false),
            Err("linux.readonlyPaths needs a mount namespace")
        );
        let mut readonly_root = base;
        if let Some(root) = readonly_root.root_mut() {
            root.set_readonly(Some(true));
        }
        assert_eq!(
            check(&readonly_root, false),
            Err("root.readonly needs a mount namespace")
        );
    }
}
