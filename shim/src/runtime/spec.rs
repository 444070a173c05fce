//! Translating a container record into the OCI runtime spec that the agent library executes.
//! Both runtimes hand the same spec to the same container code (on the host, or in the guest).

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
    Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::container::ContainerRecord;

use super::user::ResolvedUser;

/// CFS period used for `--cpus`, as Docker does.
const CPU_PERIOD_US: u64 = 100_000;

/// A spec could not be assembled (a builder refused a value).
#[derive(Debug, thiserror::Error)]
#[error("could not build the container's runtime spec")]
pub struct SpecError(#[source] pub oci_spec::OciSpecError);

/// The full runtime spec for one container start.
pub fn build(record: &ContainerRecord, user: &ResolvedUser) -> Result<Spec, SpecError> {
    let mut spec = berth_agent::spec::default_spec();

    let mut env = record.process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let oci_user = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(user.additional_gids.clone())
        .build()
        .map_err(SpecError)?;
    let mut process = ProcessBuilder::default()
        .terminal(record.process.tty)
        .user(oci_user)
        .args(record.process.args.clone())
        .env(env)
        .cwd(record.process.cwd.clone())
        .no_new_privileges(false);
    if let Some(caps) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
    {
        process = process.capabilities(caps);
    }
    if let Some(rlimits) = spec.process().as_ref().and_then(|p| p.rlimits().clone()) {
        process = process.rlimits(rlimits);
    }
    spec.set_process(Some(process.build().map_err(SpecError)?));

    spec.set_hostname(Some(record.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(record.host.read_only)
            .build()
            .map_err(SpecError)?,
    ));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for bind in &record.host.binds {
        mounts.push(bind_mount(bind)?);
    }
    spec.set_mounts(Some(mounts));

    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(record.cgroups_path().into()));
        linux.set_resources(Some(resources(record)?));
    }
    Ok(spec)
}

fn bind_mount(bind: &crate::container::BindMount) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if bind.read_only {
        options.push("ro".to_string());
    }
    MountBuilder::default()
        .destination(bind.destination.clone())
        .typ("bind")
        .source(bind.source.clone())
        .options(options)
        .build()
        .map_err(SpecError)
}

/// Memory, CPU and pids limits; absent ones stay unset.
fn resources(record: &ContainerRecord) -> Result<LinuxResources, SpecError> {
    let host = &record.host;
    let mut resources = LinuxResourcesBuilder::default();
    if host.memory > 0 {
        // No swap on top of the limit, so the limit really holds (Docker's default is 2x).
        let memory = LinuxMemoryBuilder::default()
            .limit(host.memory)
            .swap(host.memory)
            .build()
            .map_err(SpecError)?;
        resources = resources.memory(memory);
    }
    if host.nano_cpus > 0 {
        let quota = host.nano_cpus * CPU_PERIOD_US as i64 / 1_000_000_000;
        let cpu = LinuxCpuBuilder::default()
            .quota(quota)
            .period(CPU_PERIOD_US)
            .build()
            .map_err(SpecError)?;
        resources = resources.cpu(cpu);
    }
    if let Some(limit) = host.pids_limit.filter(|l| *l > 0) {
        let pids = LinuxPidsBuilder::default()
            .limit(limit)
            .build()
            .map_err(SpecError)?;
        resources = resources.pids(pids);
    }
    resources.build().map_err(SpecError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{BindMount, HostConfig, ProcessConfig};

    fn record() -> ContainerRecord {
        ContainerRecord {
            id: "a".repeat(64),
            name: "t".into(),
            created: chrono::Utc::now(),
            image_id: "sha256:x".into(),
            image_name: "busybox".into(),
            hostname: "box".into(),
            process: ProcessConfig {
                args: vec!["sh".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/work".into(),
                user: "user".into(),
                tty: true,
                interactive: true,
            },
            host: HostConfig {
                runtime: "ns".into(),
                memory: 64 << 20,
                nano_cpus: 500_000_000,
                pids_limit: Some(20),
                read_only: true,
                binds: vec![BindMount {
                    source: "/srv".into(),
                    destination: "/data".into(),
                    read_only: true,
                }],
                auto_remove: false,
                ..HostConfig::default()
            },
        }
    }

    #[test]
    fn record_becomes_spec() {
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            home: "/home/user".into(),
        };
        let spec = build(&record(), &user).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_deref(), Some(&["sh".to_string()][..]));
        assert!(process
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOME=/home/user".to_string()));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.cwd().to_str(), Some("/work"));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));

        let bind = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().to_str() == Some("/data"))
            .unwrap();
        assert!(bind.options().as_ref().unwrap().contains(&"ro".to_string()));

        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str().unwrap(),
            format!("/berth/{}", "a".repeat(64))
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 20);
    }
}
