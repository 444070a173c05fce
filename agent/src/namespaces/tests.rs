use std::os::fd::AsFd;

use oci_spec::runtime::LinuxIdMapping;

use super::*;
use crate::syscall::test::{Call, RecordingSyscall};

fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(PathBuf::from));
    ns
}

fn linux(namespaces: Vec<LinuxNamespace>) -> Linux {
    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux
}

fn map(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(container)
        .host_id(host)
        .size(size)
        .build()
        .expect("a complete mapping")
}

/// `namespaces` with a user namespace mapping 0 to 100000 (65536 ids).
fn with_maps(namespaces: Vec<LinuxNamespace>) -> Linux {
    let mut linux = linux(namespaces);
    linux.set_uid_mappings(Some(vec![map(0, 100000, 65536)]));
    linux.set_gid_mappings(Some(vec![map(0, 100000, 65536)]));
    linux
}

fn plan_of(linux: &Linux) -> Result<Plan, NamespaceError> {
    plan(Some(linux))
}

#[test]
fn new_and_joined_namespaces() {
    let plan = plan_of(&linux(vec![
        ns(LinuxNamespaceType::Mount, Some("/proc/9/ns/mnt")),
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Network, Some("/proc/9/ns/net")),
        ns(LinuxNamespaceType::Uts, None),
        ns(LinuxNamespaceType::Cgroup, None),
    ]))
    .expect("plan");
    assert_eq!(
        plan.clone_flags,
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS
    );
    assert_eq!(plan.unshare_flags, CloneFlags::empty());
    assert_eq!(
        plan.join,
        vec![
            (CloneFlags::CLONE_NEWNET, PathBuf::from("/proc/9/ns/net")),
            (CloneFlags::CLONE_NEWNS, PathBuf::from("/proc/9/ns/mnt")),
        ]
    );
    assert!(plan.new_cgroup && plan.own_uts && plan.has_mount);
    assert!(
        !plan.own_net,
        "a joined network namespace is not ours to configure"
    );
    assert_eq!(plan.join_pid, None);
    assert_eq!(plan.user, None);
    assert!(plan.may_mount_sysfs());
}

#[test]
fn a_new_network_namespace_is_ours() {
    let plan = plan_of(&linux(vec![ns(LinuxNamespaceType::Network, None)])).expect("plan");
    assert!(plan.own_net);
    assert_eq!(plan.clone_flags, CloneFlags::CLONE_NEWNET);
}

#[test]
fn a_new_user_namespace_is_cloned_with_the_others() {
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::User, None),
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Network, None),
    ]))
    .expect("plan");
    assert_eq!(
        plan.clone_flags,
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
    );
    assert!(matches!(plan.user, Some(UserNamespace::Cloned(_))));
    assert!(!plan.forks_into_pid_namespace());
    assert!(
        plan.may_mount_sysfs(),
        "its network namespace belongs to it"
    );
}

#[test]
fn a_user_namespace_without_its_own_network_namespace_may_not_mount_sysfs() {
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::User, None),
    ]))
    .expect("plan");
    assert!(!plan.may_mount_sysfs());
}

#[test]
fn joins_with_a_new_user_namespace_come_before_it() {
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::User, None),
        ns(LinuxNamespaceType::Network, Some("/run/netns/a")),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Pid, None),
    ]))
    .expect("plan");
    assert!(matches!(plan.user, Some(UserNamespace::Ahead(_))));
    assert_eq!(plan.clone_flags, CloneFlags::empty());
    assert_eq!(
        plan.unshare_flags,
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID
    );
    assert!(plan.forks_into_pid_namespace());
    assert!(!plan.may_mount_sysfs());
}

#[test]
fn a_joined_user_namespace_is_joined_first_and_needs_no_maps() {
    let plan = plan_of(&linux(vec![
        ns(LinuxNamespaceType::Mount, Some("/proc/9/ns/mnt")),
        ns(LinuxNamespaceType::Network, Some("/proc/9/ns/net")),
        ns(LinuxNamespaceType::User, Some("/proc/9/ns/user")),
        ns(LinuxNamespaceType::Uts, None),
    ]))
    .expect("plan");
    assert_eq!(
        plan.user,
        Some(UserNamespace::Joined(ExpectedMaps::default()))
    );
    let order: Vec<_> = plan.join.iter().map(|(flag, _)| *flag).collect();
    assert_eq!(
        order,
        [
            CloneFlags::CLONE_NEWUSER,
            CloneFlags::CLONE_NEWNET,
            CloneFlags::CLONE_NEWNS
        ]
    );
    assert_eq!(plan.clone_flags, CloneFlags::empty());
    assert_eq!(plan.unshare_flags, CloneFlags::CLONE_NEWUTS);
}

#[test]
fn mappings_given_with_a_user_namespace_path_are_kept_to_be_checked() {
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::User, Some("/proc/9/ns/user")),
        ns(LinuxNamespaceType::Mount, None),
    ]))
    .expect("plan");
    let expected = ExpectedMaps::new(&[map(0, 100000, 65536)], &[map(0, 100000, 65536)]);
    assert_eq!(plan.user, Some(UserNamespace::Joined(expected)));
    // Nothing to check without one: no helper, no file opened.
    let plain = plan_of(&linux(vec![ns(LinuxNamespaceType::Mount, None)])).expect("plan");
    check_joined_user_namespace(&RecordingSyscall::default(), &plain).expect("no user namespace");
}

#[test]
fn mappings_given_with_a_user_namespace_path_must_be_its_own() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: creating a user namespace with these maps needs root");
        return;
    }
    let maps = IdMaps::new(&[map(0, 100000, 65536)], &[map(0, 200000, 1000)]).expect("maps");
    let held = create_user_namespace(&LinuxSyscall, &maps).expect("a user namespace");
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
    let mut spec = with_maps(vec![
        ns(LinuxNamespaceType::User, Some(&path)),
        ns(LinuxNamespaceType::Mount, None),
    ]);
    spec.set_gid_mappings(Some(vec![map(0, 200000, 1000)]));
    let plan = plan_of(&spec).expect("plan");
    check_joined_user_namespace(&LinuxSyscall, &plan).expect("its own mappings");

    spec.set_gid_mappings(Some(vec![map(0, 100000, 65536)]));
    let plan = plan_of(&spec).expect("plan");
    let err = check_joined_user_namespace(&LinuxSyscall, &plan).expect_err("other gids");
    assert_eq!(
        err.to_string(),
        format!(
            "linux.gidMappings (0 100000 65536) do not match user namespace {path}, \
             whose gid_map is 0 200000 1000"
        )
    );
}

#[test]
fn mappings_need_a_user_namespace_and_a_new_one_needs_mappings() {
    let err = plan_of(&with_maps(vec![ns(LinuxNamespaceType::Mount, None)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "linux.uidMappings is set but linux.namespaces has no user namespace"
    );
    let err = plan_of(&linux(vec![ns(LinuxNamespaceType::User, None)])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a new user namespace needs linux.uidMappings"
    );
    let mut only_uid = with_maps(vec![ns(LinuxNamespaceType::User, None)]);
    only_uid.set_gid_mappings(Some(Vec::new()));
    let err = plan_of(&only_uid).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a new user namespace needs linux.gidMappings"
    );
    let mut bad = with_maps(vec![ns(LinuxNamespaceType::User, None)]);
    bad.set_uid_mappings(Some(vec![map(0, 100000, 0)]));
    let err = plan_of(&bad).unwrap_err();
    assert_eq!(err.to_string(), "linux.uidMappings[0] has size 0");
}

#[test]
fn duplicate_and_time_namespaces_are_refused() {
    let err = plan_of(&linux(vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid")),
    ]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "linux.namespaces lists the pid namespace more than once"
    );
    assert!(matches!(
        plan_of(&linux(vec![ns(LinuxNamespaceType::Time, None)])),
        Err(NamespaceError::Unsupported("time"))
    ));
}

#[test]
fn entering_a_cloned_user_namespace_becomes_root_first() {
    let sys = RecordingSyscall::default();
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::User, None),
        ns(LinuxNamespaceType::Mount, None),
    ]))
    .expect("plan");
    enter(&sys, &plan, None).expect("enter");
    assert_eq!(sys.calls(), [Call::SetId(0, 0)]);
}

#[test]
fn entering_a_joined_user_namespace_joins_it_before_the_others() {
    let sys = RecordingSyscall::default();
    let plan = plan_of(&linux(vec![
        ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
        ns(LinuxNamespaceType::Pid, None),
    ]))
    .expect("plan");
    enter(&sys, &plan, None).expect("enter");
    assert_eq!(
        sys.calls(),
        [
            Call::Setns(CloneFlags::CLONE_NEWUSER, "/proc/self/ns/user".into()),
            Call::Setns(CloneFlags::CLONE_NEWNET, "/proc/self/ns/net".into()),
            Call::SetId(0, 0),
            Call::Unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID),
        ]
    );
}

#[test]
fn a_user_namespace_made_ahead_is_entered_after_the_joins() {
    let sys = RecordingSyscall::default();
    let plan = plan_of(&with_maps(vec![
        ns(LinuxNamespaceType::User, None),
        ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Uts, None),
    ]))
    .expect("plan");
    let held = std::fs::File::open("/proc/self/ns/user").expect("open a user namespace");
    enter(&sys, &plan, Some(held.as_fd())).expect("enter");
    assert_eq!(
        sys.calls(),
        [
            Call::Setns(CloneFlags::CLONE_NEWNET, "/proc/self/ns/net".into()),
            Call::Setns(CloneFlags::CLONE_NEWUSER, "the new user namespace".into()),
            Call::SetId(0, 0),
            Call::Unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS),
        ]
    );
}

#[test]
fn a_missing_namespace_file_is_named() {
    let sys = RecordingSyscall::default();
    let plan = plan_of(&linux(vec![
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Network, Some("/nonexistent/net")),
    ]))
    .expect("plan");
    let err = enter(&sys, &plan, None).unwrap_err();
    assert_eq!(err.to_string(), "failed to open namespace /nonexistent/net");
    assert!(sys.calls().is_empty());
}
