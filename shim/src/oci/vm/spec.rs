//! The spec as a guest gets it, and what a guest cannot be given.
//!
//! A VM sees none of the host's namespaces and none of its files but the rootfs:
//!
//! - a namespace `path` names a host namespace, which a guest cannot join, so
//!   [`check`] refuses the spec at create (Docker, podman and containerd's `ctr`
//!   give no paths for the namespaces they ask berth to make, the network one
//!   included, when their network is `none`/absent);
//! - bind mounts (type `bind`, or options `bind`/`rbind` with any type, as runc
//!   reads them) have host sources; the guest gets none of them. Docker and podman
//!   always pass some (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, podman's
//!   `/dev/shm` and `/run/.containerenv`), so they are left out rather than refused,
//!   with a debug log line each; one whose source does not exist is refused at
//!   create, as ns mode (and runc) would.
//! - `linux.resources.cpu.cpus`/`mems` name host CPUs and memory nodes; they size
//!   the VM (its vCPU count, see `runtime::vm::sizing`) and are left out of the
//!   guest's cgroup, whose CPUs are numbered from 0 (Kata does the same).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, LinuxNamespaceType, Mount, Spec};

use crate::oci::cli::Global;

/// A spec that a VM cannot run as written.
#[derive(Debug, thiserror::Error)]
pub enum GuestSpecError {
    #[error(
        "the {kind} namespace path {} names a host namespace, which a container in a VM cannot join",
        path.display()
    )]
    NamespacePath { kind: &'static str, path: PathBuf },
    #[error(
        "bind mount of {} on {}: the source does not exist",
        source_path.display(),
        destination.display()
    )]
    MissingBindSource {
        source_path: PathBuf,
        destination: PathBuf,
    },
}

/// Whether a mount is a bind mount, as runc decides: type `bind`, or a `bind` or
/// `rbind` option whatever the type.
pub fn is_bind_mount(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn namespace_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

/// Refuse what a guest cannot honour (see the module docs); `bundle` resolves
/// relative bind sources. Dropped bind mounts are logged at debug level.
pub fn check(global: &Global, spec: &Spec, bundle: &Path) -> Result<(), GuestSpecError> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for namespace in namespaces.into_iter().flatten() {
        if let Some(path) = namespace.path() {
            return Err(GuestSpecError::NamespacePath {
                kind: namespace_name(namespace.typ()),
                path: path.clone(),
            });
        }
    }
    for mount in spec.mounts().iter().flatten().filter(|m| is_bind_mount(m)) {
        let source = mount.source().clone().unwrap_or_default();
        if source.as_os_str().is_empty() || !bundle.join(&source).exists() {
            return Err(GuestSpecError::MissingBindSource {
                source_path: source,
                destination: mount.destination().clone(),
            });
        }
        if global.debug || global.log.is_some() {
            let message = format!(
                "vm mode: the guest does not get the host bind mount of {} on {}",
                source.display(),
                mount.destination().display()
            );
            crate::oci::log_line(global, "debug", &message);
        }
    }
    Ok(())
}

/// The spec as the guest agent gets it (after [`check`]): a stand-in process when
/// there is none (see [`crate::oci::create::with_process_to_hold`]), no bind
/// mounts, and of the hooks only createContainer and startContainer, which run in
/// the container's namespaces, so in the guest; the others run on the host.
pub fn guest_spec(spec: &Spec) -> Spec {
    let mut spec = crate::oci::create::with_process_to_hold(spec);
    let guest_hooks = spec.hooks().as_ref().and_then(|hooks| {
        let mut kept = Hooks::default();
        kept.set_create_container(hooks.create_container().clone());
        kept.set_start_container(hooks.start_container().clone());
        let some = |h: &Option<Vec<_>>| h.as_ref().is_some_and(|v| !v.is_empty());
        (some(kept.create_container()) || some(kept.start_container())).then_some(kept)
    });
    spec.set_hooks(guest_hooks);
    if let Some(mounts) = spec.mounts().clone() {
        let kept = mounts.into_iter().filter(|m| !is_bind_mount(m)).collect();
        spec.set_mounts(Some(kept));
    }
    without_host_cpuset(&mut spec);
    spec
}

/// Drop `linux.resources.cpu.cpus`/`mems`: host CPU and node numbers.
fn without_host_cpuset(spec: &mut Spec) {
    let Some(mut linux) = spec.linux().clone() else {
        return;
    };
    let Some(mut resources) = linux.resources().clone() else {
        return;
    };
    let Some(mut cpu) = resources.cpu().clone() else {
        return;
    };
    if cpu.cpus().is_none() && cpu.mems().is_none() {
        return;
    }
    cpu.set_cpus(None);
    cpu.set_mems(None);
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        let mut base: serde_json::Value =
            serde_json::from_str(crate::oci::spec::DEFAULT_CONFIG).unwrap();
        for (key, value) in json.as_object().unwrap() {
            base[key] = value.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn global() -> Global {
        use clap::Parser;
        crate::oci::cli::Cli::parse_from(["berth-runtime", "state", "x"]).global
    }

    fn destinations(spec: &Spec) -> Vec<String> {
        spec.mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    #[test]
    fn bind_mounts_are_dropped_however_they_are_written() {
        let spec = spec(serde_json::json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/a", "type": "bind", "source": "/etc", "options": ["rbind"]},
            {"destination": "/b", "source": "/etc", "options": ["bind", "shared"]},
            {"destination": "/c", "type": "none", "source": "/etc", "options": ["rbind", "ro"]},
            {"destination": "/d", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
        ]}));
        assert!(check(&global(), &spec, Path::new("/")).is_ok());
        assert_eq!(destinations(&guest_spec(&spec)), ["/proc", "/d"]);
    }

    #[test]
    fn a_bind_mount_of_a_missing_source_is_refused() {
        let spec = spec(serde_json::json!({"mounts": [
            {"destination": "/data", "source": "/no/such/dir", "options": ["bind"]},
        ]}));
        let message = check(&global(), &spec, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("/no/such/dir"), "{message}");
        assert!(message.contains("/data"), "{message}");
    }

    #[test]
    fn a_namespace_path_is_refused_and_its_type_named() {
        let spec = spec(serde_json::json!({"linux": {"namespaces": [
            {"type": "mount"},
            {"type": "network", "path": "/proc/1/ns/net"},
        ]}}));
        let message = check(&global(), &spec, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("network namespace path /proc/1/ns/net"),
            "{message}"
        );
    }

    #[test]
    fn host_cpus_and_memory_nodes_stay_on_the_host() {
        let spec = spec(serde_json::json!({"linux": {"resources": {"cpu": {
            "cpus": "0-1", "mems": "0", "shares": 512
        }}}}));
        let guest = guest_spec(&spec);
        let cpu = guest
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap();
        let cpu = cpu.cpu().as_ref().unwrap();
        assert_eq!((cpu.cpus(), cpu.mems()), (&None, &None));
        assert_eq!(cpu.shares(), Some(512));
    }

    #[test]
    fn without_a_process_the_guest_gets_a_stand_in() {
        let mut spec = spec(serde_json::json!({}));
        spec.set_process(None);
        let guest = guest_spec(&spec);
        let args = guest.process().as_ref().unwrap().args().clone().unwrap();
        assert_eq!(args, ["/proc/self/exe"]);
    }
}
