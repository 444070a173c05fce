//! Docker-equivalent defaults for building an OCI runtime [`Spec`].

use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Mount,
    Process, Root, Spec,
};

/// The default search path, as Docker sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The namespaces a Docker container gets by default.
pub const NAMESPACES: &[LinuxNamespaceType] = &[
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Mount,
];

/// Docker's default capability set as an OCI set.
pub fn default_capabilities() -> Capabilities {
    DEFAULT_CAPABILITIES.iter().copied().collect()
}

/// A mount entry from its parts.
pub fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(destination));
    mount.set_typ(Some(typ.to_owned()));
    mount.set_source(Some(PathBuf::from(source)));
    mount.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    mount
}

/// A read-only or read-write bind mount of a host path.
pub fn bind_mount(source: &str, destination: &str, readonly: bool) -> Mount {
    let mode = if readonly { "ro" } else { "rw" };
    mount(destination, "bind", source, &["rbind", mode])
}

/// Docker's default mounts (without the optional cgroup mount).
pub fn default_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ]
}

/// A spec with Docker's defaults; the caller fills in args, env, hostname,
/// cgroups path and resources.
pub fn default_spec() -> Spec {
    let caps = default_capabilities();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);

    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_args(None);
    process.set_env(Some(vec![format!("PATH={DEFAULT_PATH}")]));
    process.set_cwd(PathBuf::from("/"));
    process.set_capabilities(Some(capabilities));
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(false));

    let namespaces = NAMESPACES
        .iter()
        .map(|typ| {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(*typ);
            ns
        })
        .collect();
    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(None);
    linux.set_devices(None);
    linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
    linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));

    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(false));

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_owned());
    spec.set_hostname(None);
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    spec.set_mounts(Some(default_mounts()));
    spec.set_annotations(None);
    spec.set_linux(Some(linux));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_matches_docker() {
        let spec = default_spec();
        let process = spec.process().as_ref().expect("process");
        let caps = process.capabilities().as_ref().expect("caps");
        assert_eq!(caps.bounding().as_ref().map(|c| c.len()), Some(14));
        assert_eq!(caps.effective(), caps.bounding());
        assert_eq!(caps.permitted(), caps.bounding());
        assert!(caps
            .bounding()
            .as_ref()
            .expect("b")
            .contains(&Capability::AuditWrite));
        assert!(!caps
            .bounding()
            .as_ref()
            .expect("b")
            .contains(&Capability::SysAdmin));
        assert!(caps.inheritable().is_none() && caps.ambient().is_none());
        assert_eq!(process.no_new_privileges(), Some(false));

        let linux = spec.linux().as_ref().expect("linux");
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .expect("ns")
            .iter()
            .map(|n| (n.typ(), n.path().is_none()))
            .collect();
        assert_eq!(ns.len(), 5);
        assert!(ns.iter().all(|(_, no_path)| *no_path));
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(11));
        assert_eq!(
            linux.readonly_paths().as_ref().expect("ro")[3],
            "/proc/sys".to_owned()
        );
        assert!(linux.resources().is_none() && linux.cgroups_path().is_none());

        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(false));
    }
}
