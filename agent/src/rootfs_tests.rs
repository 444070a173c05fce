use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};

use super::*;
use crate::spec;
use crate::syscall::test::{mount_call, Call, RecordingSyscall};

fn bind() -> MsFlags {
    MsFlags::MS_BIND
}

#[test]
fn default_spec_mount_sequence() {
    let mut sys = RecordingSyscall::default();
    sys.files.insert(PathBuf::from("/proc/kcore"));
    sys.files.insert(PathBuf::from("/proc/sysrq-trigger"));
    sys.missing.insert(PathBuf::from("/proc/timer_stats"));
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(vec![
        spec::default_mounts()[0].clone(),
        spec::default_mounts()[1].clone(),
        spec::default_mounts()[2].clone(),
    ]));
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(Some(vec![
            "/proc/kcore".into(),
            "/proc/acpi".into(),
            "/proc/timer_stats".into(),
        ]));
        linux.set_readonly_paths(Some(vec!["/proc/sysrq-trigger".into()]));
    }
    let rootfs = Rootfs::Path(PathBuf::from("/r"));
    setup(&sys, &spec, &rootfs, &RootfsOptions::default()).expect("setup");

    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mut expected = vec![
        mount_call(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
        mount_call(Some("/r"), "/r", None, bind() | MsFlags::MS_REC, None),
        mount_call(
            Some("proc"),
            "/r/proc",
            Some("proc"),
            nosuid_noexec_nodev,
            None,
        ),
        mount_call(
            Some("tmpfs"),
            "/r/dev",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
        mount_call(
            Some("devpts"),
            "/r/dev/pts",
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
    ];
    for dev in crate::devices::DEFAULT_DEVICES {
        expected.push(mount_call(
            Some(dev),
            &format!("/r{dev}"),
            None,
            bind(),
            None,
        ));
    }
    expected.extend([
        // Masked: a file gets /dev/null, a directory a read-only tmpfs, a missing path nothing.
        mount_call(Some("/dev/null"), "/proc/kcore", None, bind(), None),
        mount_call(
            Some("tmpfs"),
            "/proc/acpi",
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        ),
        // Read-only: bind, then remount read-only.
        mount_call(
            Some("/proc/sysrq-trigger"),
            "/proc/sysrq-trigger",
            None,
            bind() | MsFlags::MS_REC,
            None,
        ),
        mount_call(
            None,
            "/proc/sysrq-trigger",
            None,
            bind() | MsFlags::MS_REC | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ),
    ]);
    assert_eq!(sys.mounts(), expected);

    let calls = sys.calls();
    let pivot = calls
        .iter()
        .position(|c| matches!(c, Call::PivotRoot(..)))
        .expect("pivot_root");
    assert_eq!(calls[pivot - 1], Call::Chdir(PathBuf::from("/r")));
    assert_eq!(
        calls[pivot],
        Call::PivotRoot(PathBuf::from("."), PathBuf::from("."))
    );
    assert_eq!(
        calls[pivot + 1],
        Call::Umount2(PathBuf::from("."), MntFlags::MNT_DETACH)
    );
    assert_eq!(calls[pivot + 2], Call::Chdir(PathBuf::from("/")));
    assert!(calls.contains(&Call::Symlink(
        PathBuf::from("pts/ptmx"),
        PathBuf::from("/r/dev/ptmx")
    )));
    assert!(calls.contains(&Call::Symlink(
        PathBuf::from("/proc/self/fd"),
        PathBuf::from("/r/dev/fd")
    )));
    assert!(calls.contains(&Call::CreateFile(PathBuf::from("/r/dev/null"))));
    assert!(calls.contains(&Call::CreateDirAll(PathBuf::from("/r/dev/pts"))));
}

#[test]
fn readonly_bind_is_bind_then_remount_and_file_sources_get_file_mount_points() {
    let mut sys = RecordingSyscall::default();
    sys.files.insert(PathBuf::from("/host/resolv.conf"));
    let entries = [
        spec::bind_mount("/host/data", "/data", true),
        spec::bind_mount("/host/resolv.conf", "/etc/resolv.conf", false),
    ];
    for entry in &entries {
        mount_entry(&sys, Path::new("/r"), entry).expect("mount");
    }
    assert_eq!(
        sys.calls(),
        vec![
            Call::CreateDirAll(PathBuf::from("/r/data")),
            mount_call(
                Some("/host/data"),
                "/r/data",
                None,
                bind() | MsFlags::MS_REC,
                None
            ),
            mount_call(
                None,
                "/r/data",
                None,
                bind() | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None
            ),
            Call::CreateFile(PathBuf::from("/r/etc/resolv.conf")),
            mount_call(
                Some("/host/resolv.conf"),
                "/r/etc/resolv.conf",
                None,
                bind() | MsFlags::MS_REC,
                None
            ),
        ]
    );
}

#[test]
fn missing_bind_source_is_an_error() {
    let mut sys = RecordingSyscall::default();
    sys.missing.insert(PathBuf::from("/nope"));
    let err = mount_entry(
        &sys,
        Path::new("/r"),
        &spec::bind_mount("/nope", "/x", false),
    )
    .expect_err("missing source");
    assert!(matches!(err, RootfsError::MissingSource(p) if p == Path::new("/nope")));
}

#[test]
fn overlay_root_and_readonly_root() {
    let sys = RecordingSyscall::default();
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(Vec::new()));
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }
    let rootfs = Rootfs::Overlay {
        lower: vec![PathBuf::from("/l/top"), PathBuf::from("/l/base")],
        upper: PathBuf::from("/c/upper"),
        work: PathBuf::from("/c/work"),
        target: PathBuf::from("/c/merged"),
    };
    setup(&sys, &spec, &rootfs, &RootfsOptions::default()).expect("setup");
    assert_eq!(
        sys.mounts(),
        vec![
            mount_call(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
            mount_call(
                Some("overlay"),
                "/c/merged",
                Some("overlay"),
                MsFlags::empty(),
                Some("lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"),
            ),
            mount_call(
                None,
                "/",
                None,
                bind() | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None
            ),
        ]
    );
    // No /dev mount: no device nodes or symlinks.
    assert!(!sys
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Symlink(..) | Call::CreateFile(..))));
}

#[test]
fn overlay_paths_with_separators_are_refused() {
    let err = overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w"))
        .expect_err("colon");
    assert!(matches!(err, RootfsError::Overlay(_)));
}

#[test]
fn propagation_option_gets_its_own_call() {
    let sys = RecordingSyscall::default();
    let mut entry = spec::bind_mount("/src", "/dst", false);
    entry.set_options(Some(vec!["rbind".into(), "rslave".into()]));
    mount_entry(&sys, Path::new("/r"), &entry).expect("mount");
    assert_eq!(
        sys.mounts().last(),
        Some(&mount_call(
            None,
            "/r/dst",
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None
        ))
    );
}

#[test]
fn spec_devices_are_created_with_mknod() {
    use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
    let sys = RecordingSyscall::default();
    let mut fuse = LinuxDevice::default();
    fuse.set_path(PathBuf::from("/dev/fuse"));
    fuse.set_typ(LinuxDeviceType::C);
    fuse.set_major(10);
    fuse.set_minor(229);
    fuse.set_file_mode(Some(0o666));
    let mut null = fuse.clone();
    null.set_path(PathBuf::from("/dev/null"));
    null.set_major(1);
    null.set_minor(3);
    crate::devices::create(
        &sys,
        Path::new("/r"),
        &[fuse, null],
        crate::devices::Nodes::Mknod,
    )
    .expect("devices");
    let calls = sys.calls();
    assert!(calls.contains(&Call::Mknod(
        PathBuf::from("/r/dev/fuse"),
        nix::sys::stat::SFlag::S_IFCHR,
        0o666,
        nix::sys::stat::makedev(10, 229)
    )));
    // /dev/null came from the spec, so it is not bind-mounted from the host.
    assert!(!sys
        .mounts()
        .iter()
        .any(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/r/dev/null"))));
}

#[test]
fn sysctls_are_written_after_pivot_and_before_readonly_paths() {
    let sys = RecordingSyscall::default();
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(Vec::new()));
    if let Some(linux) = spec.linux_mut() {
        linux.set_sysctl(Some(
            [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into(),
        ));
        linux.set_masked_paths(None);
        linux.set_readonly_paths(Some(vec!["/proc/sys".into()]));
    }
    setup(
        &sys,
        &spec,
        &Rootfs::Path(PathBuf::from("/r")),
        &RootfsOptions::default(),
    )
    .expect("setup");
    let calls = sys.calls();
    let write = calls
        .iter()
        .position(|c| {
            *c == Call::WriteFile(
                PathBuf::from("/proc/sys/net/ipv4/ip_forward"),
                "1".to_owned(),
            )
        })
        .expect("sysctl written");
    let pivot = calls
        .iter()
        .position(|c| matches!(c, Call::PivotRoot(..)))
        .expect("pivot");
    let readonly = calls
        .iter()
        .position(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/proc/sys")))
        .expect("readonly");
    assert!(pivot < write && write < readonly);
}

#[test]
fn rootfs_propagation_is_applied_to_the_new_root_after_pivot() {
    let cases = [
        ("shared", MsFlags::MS_SHARED),
        ("rshared", MsFlags::MS_SHARED | MsFlags::MS_REC),
        ("slave", MsFlags::MS_SLAVE),
        ("rslave", MsFlags::MS_SLAVE | MsFlags::MS_REC),
        ("private", MsFlags::MS_PRIVATE),
        ("rprivate", MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        ("unbindable", MsFlags::MS_UNBINDABLE),
        ("runbindable", MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
    ];
    for (name, flags) in cases {
        let sys = RecordingSyscall::default();
        let mut spec = spec::default_spec();
        spec.set_mounts(Some(Vec::new()));
        if let Some(linux) = spec.linux_mut() {
            linux.set_rootfs_propagation(Some(name.to_owned()));
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
        setup(
            &sys,
            &spec,
            &Rootfs::Path(PathBuf::from("/r")),
            &RootfsOptions::default(),
        )
        .expect("setup");
        let calls = sys.calls();
        // The host side is always made rprivate first.
        assert_eq!(
            calls[0],
            mount_call(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None),
            "{name}"
        );
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .expect("pivot");
        let set = calls
            .iter()
            .rposition(|c| *c == mount_call(None, "/", None, flags, None))
            .expect("propagation set");
        assert!(set > pivot, "{name}: {calls:?}");
    }
}

#[test]
fn no_rootfs_propagation_leaves_the_new_root_alone() {
    let sys = RecordingSyscall::default();
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(Vec::new()));
    if let Some(linux) = spec.linux_mut() {
        linux.set_rootfs_propagation(None);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    setup(
        &sys,
        &spec,
        &Rootfs::Path(PathBuf::from("/r")),
        &RootfsOptions::default(),
    )
    .expect("setup");
    let to_root = sys
        .mounts()
        .into_iter()
        .filter(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/")))
        .count();
    assert_eq!(to_root, 1);
}

#[test]
fn unknown_rootfs_propagation_fails_before_any_mount() {
    let sys = RecordingSyscall::default();
    let mut spec = spec::default_spec();
    if let Some(linux) = spec.linux_mut() {
        linux.set_rootfs_propagation(Some("sideways".to_owned()));
    }
    let err = setup(
        &sys,
        &spec,
        &Rootfs::Path(PathBuf::from("/r")),
        &RootfsOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RootfsError::Propagation(_)), "{err}");
    assert!(sys.calls().is_empty());
}

fn userns_options() -> RootfsOptions {
    RootfsOptions {
        user_namespace: true,
        bind_sysfs: true,
        no_pivot: false,
    }
}

#[test]
fn in_a_user_namespace_devices_are_bound_from_the_host_and_sysfs_is_the_hosts() {
    use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
    let sys = RecordingSyscall::default();
    let mut fuse = LinuxDevice::default();
    fuse.set_path(PathBuf::from("/dev/fuse"));
    fuse.set_typ(LinuxDeviceType::C);
    fuse.set_major(10);
    fuse.set_minor(229);
    fuse.set_uid(Some(0));
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(vec![
        spec::default_mounts()[1].clone(), // /dev
        spec::default_mounts()[5].clone(), // /sys, sysfs nosuid,noexec,nodev,ro
    ]));
    if let Some(linux) = spec.linux_mut() {
        linux.set_devices(Some(vec![fuse]));
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    let root = prepare(
        &sys,
        &spec,
        &Rootfs::Path(PathBuf::from("/r")),
        &userns_options(),
    )
    .expect("prepare");
    assert_eq!(root, PathBuf::from("/r"));
    let calls = sys.calls();
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c, Call::Mknod(..) | Call::Chown(..))),
        "{calls:?}"
    );
    assert!(calls.contains(&Call::CreateFile(PathBuf::from("/r/dev/fuse"))));
    let mounts = sys.mounts();
    assert!(mounts.contains(&mount_call(
        Some("/dev/fuse"),
        "/r/dev/fuse",
        None,
        bind(),
        None
    )));
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY;
    let sys_mounts: Vec<_> = mounts
        .iter()
        .filter(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/r/sys")))
        .cloned()
        .collect();
    assert_eq!(
        sys_mounts,
        [
            mount_call(Some("/sys"), "/r/sys", None, bind() | MsFlags::MS_REC, None),
            mount_call(
                None,
                "/r/sys",
                None,
                bind() | MsFlags::MS_REMOUNT | ro,
                None
            ),
        ]
    );
}

#[test]
fn sysfs_is_mounted_when_the_user_namespace_owns_a_network_namespace() {
    let sys = RecordingSyscall::default();
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(vec![spec::default_mounts()[5].clone()]));
    let options = RootfsOptions {
        bind_sysfs: false,
        ..userns_options()
    };
    prepare(&sys, &spec, &Rootfs::Path(PathBuf::from("/r")), &options).expect("prepare");
    assert!(sys.mounts().contains(&mount_call(
        Some("sysfs"),
        "/r/sys",
        Some("sysfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        None
    )));
}

#[test]
fn a_refused_remount_is_retried_keeping_the_locked_flags() {
    let mut sys = RecordingSyscall::default();
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME;
    sys.locked.insert(PathBuf::from("/r/data"), locked);
    let entry = spec::bind_mount("/host/data", "/data", true);
    mount_entry(&sys, Path::new("/r"), &entry).expect("mount");
    let remount = bind() | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    assert_eq!(
        sys.mounts()[1..],
        [
            mount_call(None, "/r/data", None, remount, None),
            mount_call(None, "/r/data", None, remount | locked, None),
        ]
    );

    // A mount locked read-only stays read-only when asked for rw.
    let mut sys = RecordingSyscall::default();
    sys.locked
        .insert(PathBuf::from("/r/data"), MsFlags::MS_RDONLY);
    let mut rw = spec::bind_mount("/host/data", "/data", false);
    rw.set_options(Some(vec!["rbind".into(), "nosuid".into()]));
    mount_entry(&sys, Path::new("/r"), &rw).expect("mount");
    let remount = bind() | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
    assert_eq!(
        sys.mounts()[1..],
        [
            mount_call(None, "/r/data", None, remount, None),
            mount_call(None, "/r/data", None, remount | MsFlags::MS_RDONLY, None),
        ]
    );
}

const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 23 0:40 / /proc/sys/fs/binfmt_misc rw,relatime shared:3 - binfmt_misc binfmt_misc rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:4 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:5 - tmpfs tmpfs ro,mode=755
27 22 0:24 / /mnt/with\\040space rw,relatime shared:6 - proc proc rw
40 22 254:0 /tmp/b/rootfs /r rw,relatime - ext4 /dev/vda rw
41 40 0:50 / /r/proc rw,nosuid,nodev,noexec,relatime - proc proc rw
42 40 0:51 / /r/sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
";

#[test]
fn no_pivot_moves_the_root_onto_slash_and_chroots() {
    let mut sys = RecordingSyscall::default();
    sys.contents
        .insert(PathBuf::from("/proc/self/mountinfo"), MOUNTINFO.to_owned());
    let mut spec = spec::default_spec();
    spec.set_mounts(Some(Vec::new()));
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    let options = RootfsOptions {
        no_pivot: true,
        ..RootfsOptions::default()
    };
    finish(&sys, &spec, Path::new("/r"), &options).expect("finish");
    let detach = MntFlags::MNT_DETACH;
    assert_eq!(
        sys.calls(),
        [
            Call::ReadFile(PathBuf::from("/proc/self/mountinfo")),
            // The host's proc and sysfs, innermost first; the container's own stay.
            Call::Umount2(PathBuf::from("/mnt/with space"), detach),
            Call::Umount2(PathBuf::from("/sys"), detach),
            Call::Umount2(PathBuf::from("/proc"), detach),
            Call::Chdir(PathBuf::from("/r")),
            mount_call(Some("/r"), "/", None, MsFlags::MS_MOVE, None),
            Call::Chroot(PathBuf::from(".")),
            Call::Chdir(PathBuf::from("/")),
        ]
    );
}

#[test]
fn no_pivot_covers_host_mounts_it_may_not_detach() {
    let mut sys = RecordingSyscall::default();
    sys.contents
        .insert(PathBuf::from("/proc/self/mountinfo"), MOUNTINFO.to_owned());
    sys.busy.insert(PathBuf::from("/proc"));
    move_root(&sys, Path::new("/r")).expect("move");
    assert!(sys.mounts().contains(&mount_call(
        Some("tmpfs"),
        "/proc",
        Some("tmpfs"),
        MsFlags::MS_RDONLY,
        None
    )));
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(..))));
}
