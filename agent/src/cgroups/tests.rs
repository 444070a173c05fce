use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids, LinuxResources,
};

use super::*;

/// Pre-create what the kernel would: controller dirs and control files.
fn touch(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).expect("mkdir");
    for file in files {
        fs::write(dir.join(file), "").expect("touch");
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

fn resources(swap: Option<i64>) -> LinuxResources {
    let mut memory = LinuxMemory::default();
    memory.set_limit(Some(64 << 20));
    memory.set_swap(swap);
    let mut cpu = LinuxCpu::default();
    cpu.set_quota(Some(50_000));
    cpu.set_period(Some(100_000));
    let mut pids = LinuxPids::default();
    pids.set_limit(100);
    let mut resources = LinuxResources::default();
    resources.set_memory(Some(memory));
    resources.set_cpu(Some(cpu));
    resources.set_pids(Some(pids));
    resources
}

#[test]
fn v1_writes_each_controller() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(
        &r.join("memory/berth/c1"),
        &[
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "cgroup.procs",
        ],
    );
    touch(
        &r.join("cpu/berth/c1"),
        &["cpu.cfs_quota_us", "cpu.cfs_period_us", "cgroup.procs"],
    );
    touch(&r.join("pids/berth/c1"), &["pids.max", "cgroup.procs"]);
    touch(&r.join("freezer"), &[]);
    // Not a container controller: ignored.
    touch(&r.join("blkio"), &[]);

    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c1");
    assert_eq!(
        cg.dirs(),
        ["memory", "cpu", "pids", "freezer"].map(|c| r.join(c).join("berth/c1"))
    );
    cg.create(Some(&resources(None))).expect("create");
    let mem = r.join("memory/berth/c1");
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "67108864");
    assert_eq!(read(&r.join("cpu/berth/c1/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&r.join("cpu/berth/c1/cpu.cfs_period_us")), "100000");
    assert_eq!(read(&r.join("pids/berth/c1/pids.max")), "100");
    assert!(r.join("freezer/berth/c1").is_dir());

    touch(&r.join("freezer/berth/c1"), &["cgroup.procs"]);
    cg.add_process(Pid::from_raw(42)).expect("add");
    for dir in cg.dirs() {
        assert_eq!(read(&dir.join("cgroup.procs")), "42");
    }
    assert_eq!(cg.pids().expect("pids"), vec![Pid::from_raw(42)]);
}

#[test]
fn v1_without_memsw_and_with_explicit_swap() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory/c"), &["memory.limit_in_bytes"]);
    let mut res = resources(None);
    res.set_cpu(None);
    res.set_pids(None);
    Cgroup::at(r, CgroupVersion::V1, "c")
        .create(Some(&res))
        .expect("create without memsw");
    assert!(!r.join("memory/c/memory.memsw.limit_in_bytes").exists());

    touch(&r.join("memory/c"), &["memory.memsw.limit_in_bytes"]);
    let mut res = resources(Some(128 << 20));
    res.set_cpu(None);
    res.set_pids(None);
    Cgroup::at(r, CgroupVersion::V1, "c")
        .create(Some(&res))
        .expect("create");
    assert_eq!(
        read(&r.join("memory/c/memory.memsw.limit_in_bytes")),
        "134217728"
    );
}

#[test]
fn v2_writes_unified_files_and_enables_controllers() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(r, &["cgroup.subtree_control"]);
    fs::write(r.join("cgroup.controllers"), "cpuset cpu io memory pids\n").expect("w");
    touch(
        &r.join("berth"),
        &["cgroup.subtree_control", "cgroup.controllers"],
    );
    fs::write(r.join("berth/cgroup.controllers"), "cpu memory pids\n").expect("w");
    touch(
        &r.join("berth/c2"),
        &[
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "pids.max",
            "cgroup.procs",
        ],
    );
    let cg = Cgroup::at(r, CgroupVersion::V2, "/berth/c2");
    cg.create(Some(&resources(None))).expect("create");
    let dir = r.join("berth/c2");
    assert_eq!(
        read(&r.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&r.join("berth/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("pids.max")), "100");
    cg.add_process(Pid::from_raw(7)).expect("add");
    assert_eq!(read(&dir.join("cgroup.procs")), "7");
}

#[test]
fn oom_kill_counts() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory/c"), &[]);
    fs::write(
        r.join("memory/c/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    .expect("w");
    assert_eq!(
        Cgroup::at(r, CgroupVersion::V1, "c")
            .oom_kill_count()
            .expect("v1"),
        3
    );
    fs::write(
        r.join("memory/c/memory.events"),
        "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n",
    )
    .expect("w");
    assert_eq!(
        Cgroup::at(r.join("memory"), CgroupVersion::V2, "c")
            .oom_kill_count()
            .expect("v2"),
        1
    );
}

#[test]
fn destroy_removes_dirs_and_tolerates_missing_ones() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    fs::create_dir_all(r.join("memory/berth/c")).expect("mkdir");
    fs::create_dir_all(r.join("pids")).expect("mkdir");
    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c");
    cg.destroy().expect("destroy");
    assert!(!r.join("memory/berth/c").exists());
    assert!(r.join("memory/berth").exists());
    cg.destroy().expect("destroy again");
}

fn device(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: Option<&str>,
) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(allow);
    rule.set_typ(typ);
    rule.set_major(major);
    rule.set_minor(minor);
    rule.set_access(access.map(str::to_owned));
    rule
}

#[test]
fn v1_device_rules_deny_all_then_apply_in_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("devices/berth/c1");
    touch(&dir, &["devices.allow", "devices.deny", "cgroup.procs"]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c1");
    assert_eq!(cg.dirs(), vec![dir.clone()]);
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![
        device(false, None, None, None, Some("rwm")),
        device(
            true,
            Some(LinuxDeviceType::C),
            Some(1),
            Some(3),
            Some("rwm"),
        ),
        device(true, Some(LinuxDeviceType::C), Some(136), None, None),
        device(true, Some(LinuxDeviceType::B), Some(8), Some(0), Some("r")),
        device(true, Some(LinuxDeviceType::P), None, None, Some("rwm")),
        device(false, Some(LinuxDeviceType::U), Some(5), Some(1), Some("w")),
    ]));
    cg.create(Some(&resources)).expect("create");
    assert_eq!(read(&dir.join("devices.deny")), "a\na *:* rwm\nc 5:1 w\n");
    let allowed = read(&dir.join("devices.allow"));
    let (spec_rules, defaults) = allowed.split_at("c 1:3 rwm\nc 136:* rwm\nb 8:0 r\n".len());
    assert_eq!(spec_rules, "c 1:3 rwm\nc 136:* rwm\nb 8:0 r\n");
    assert!(
        defaults.starts_with("c *:* m\nb *:* m\nc 1:3 rwm\n"),
        "{defaults}"
    );
}

#[test]
fn v1_without_device_rules_leaves_the_devices_cgroup_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("devices/berth/c1");
    touch(&dir, &["devices.allow", "devices.deny"]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c1");
    cg.create(Some(&LinuxResources::default())).expect("create");
    assert_eq!(read(&dir.join("devices.deny")), "");
}

#[test]
fn v2_device_rules_are_skipped() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("berth/c1"), &["cgroup.procs"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "/berth/c1");
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![device(false, None, None, None, Some("rwm"))]));
    cg.create(Some(&resources)).expect("create");
    assert!(!r.join("berth/c1/devices.deny").exists());
}
