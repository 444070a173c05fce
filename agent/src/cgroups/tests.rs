use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids,
    LinuxResources, LinuxThrottleDevice, LinuxThrottleDeviceBuilder, LinuxWeightDevice,
    LinuxWeightDeviceBuilder,
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
    touch(&r.join("hugetlb"), &[]);

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
        "+cpu +io +memory +pids"
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
fn v2_device_rules_need_a_real_cgroup() {
    // A plain directory is no cgroup: attaching the device program fails (and an
    // unprivileged run already fails to load it), naming the directory.
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("berth/c1"), &["cgroup.procs"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "/berth/c1");
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![device(false, None, None, None, Some("rwm"))]));
    let err = cg.create(Some(&resources)).expect_err("not a cgroup");
    assert!(
        matches!(&err, CgroupError::DeviceProgram { path, .. } if *path == r.join("berth/c1")),
        "{err:?}"
    );
    // Without device rules there is no program to attach.
    cg.create(Some(&LinuxResources::default()))
        .expect("no device rules");
}

#[test]
fn device_rules_with_bad_access_or_numbers_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("devices/c"), &["devices.allow", "devices.deny"]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    for (rule, needle) in [
        (
            device(true, Some(LinuxDeviceType::C), Some(1), Some(3), Some("rx")),
            "unknown access 'x'",
        ),
        (
            device(true, Some(LinuxDeviceType::C), Some(1 << 40), None, None),
            "out of range",
        ),
    ] {
        let mut resources = LinuxResources::default();
        resources.set_devices(Some(vec![rule]));
        let err = cg.create(Some(&resources)).expect_err("bad rule");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(
            read(&r.join("devices/c/devices.deny")),
            "",
            "written before checking"
        );
    }
}

#[test]
fn denies_anything_finds_a_denied_device() {
    use device_rules::{denies_anything, effective_rules};
    let all = |allow| device(allow, None, None, None, Some("rwm"));
    let rules = |spec: &[LinuxDeviceCgroup]| effective_rules(spec).expect("rules");
    assert!(denies_anything(&rules(&[])));
    assert!(denies_anything(&rules(&[all(false)])));
    assert!(!denies_anything(&rules(&[all(true)])));
    assert!(!denies_anything(&rules(&[all(false), all(true)])));
    // An allow-all followed by one denied access to one node.
    let kmem_write = device(false, Some(LinuxDeviceType::C), Some(1), Some(2), Some("w"));
    assert!(denies_anything(&rules(&[all(true), kmem_write.clone()])));
    // Allowing every kind and every access separately covers everything too.
    let split = [
        device(true, Some(LinuxDeviceType::C), None, None, Some("rw")),
        device(true, Some(LinuxDeviceType::B), None, None, Some("r")),
        device(true, Some(LinuxDeviceType::B), None, None, Some("w")),
    ];
    assert!(!denies_anything(&rules(&split)));
    assert!(denies_anything(&rules(&split[..2])));
    // A later allow of that node's write makes it whole again.
    let kmem_allow = device(true, Some(LinuxDeviceType::C), Some(1), Some(2), Some("w"));
    assert!(!denies_anything(&rules(&[
        all(true),
        kmem_write,
        kmem_allow
    ])));
}

fn throttle(major: i64, minor: i64, rate: u64) -> LinuxThrottleDevice {
    LinuxThrottleDeviceBuilder::default()
        .major(major)
        .minor(minor)
        .rate(rate)
        .build()
        .expect("throttle")
}

fn weight_device(
    major: i64,
    minor: i64,
    weight: Option<u16>,
    leaf: Option<u16>,
) -> LinuxWeightDevice {
    let mut device = LinuxWeightDeviceBuilder::default()
        .major(major)
        .minor(minor);
    if let Some(weight) = weight {
        device = device.weight(weight);
    }
    if let Some(leaf) = leaf {
        device = device.leaf_weight(leaf);
    }
    device.build().expect("weight device")
}

/// Weight 500, 8:0 weighted 300, and one throttle of each kind.
fn block_io() -> LinuxBlockIo {
    let mut io = LinuxBlockIo::default();
    io.set_weight(Some(500));
    io.set_weight_device(Some(vec![weight_device(8, 0, Some(300), None)]));
    io.set_throttle_read_bps_device(Some(vec![throttle(8, 0, 1 << 20), throttle(8, 16, 4096)]));
    io.set_throttle_write_bps_device(Some(vec![throttle(8, 0, 2 << 20)]));
    io.set_throttle_read_iops_device(Some(vec![throttle(8, 0, 100)]));
    io.set_throttle_write_iops_device(Some(vec![throttle(8, 0, 50)]));
    io
}

fn with_block_io(io: LinuxBlockIo) -> LinuxResources {
    let mut resources = LinuxResources::default();
    resources.set_block_io(Some(io));
    resources
}

const V1_THROTTLES: &[&str] = &[
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

#[test]
fn v1_block_io_weights_and_throttles() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("blkio/berth/c1");
    // BFQ's files only, as on this kernel without CFQ.
    touch(&dir, V1_THROTTLES);
    touch(
        &dir,
        &[
            "blkio.bfq.weight",
            "blkio.bfq.weight_device",
            "cgroup.procs",
        ],
    );
    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c1");
    assert_eq!(cg.dirs(), vec![dir.clone()]);
    cg.create(Some(&with_block_io(block_io()))).expect("create");
    assert_eq!(read(&dir.join("blkio.bfq.weight")), "500");
    assert_eq!(read(&dir.join("blkio.bfq.weight_device")), "8:0 300\n");
    assert_eq!(
        read(&dir.join("blkio.throttle.read_bps_device")),
        "8:0 1048576\n8:16 4096\n"
    );
    assert_eq!(
        read(&dir.join("blkio.throttle.write_bps_device")),
        "8:0 2097152\n"
    );
    assert_eq!(
        read(&dir.join("blkio.throttle.read_iops_device")),
        "8:0 100\n"
    );
    assert_eq!(
        read(&dir.join("blkio.throttle.write_iops_device")),
        "8:0 50\n"
    );

    // CFQ's files win when present; leaf weights need them.
    touch(
        &dir,
        &["blkio.weight", "blkio.weight_device", "blkio.leaf_weight"],
    );
    let mut io = LinuxBlockIo::default();
    io.set_weight(Some(700));
    io.set_leaf_weight(Some(200));
    io.set_weight_device(Some(vec![weight_device(8, 0, Some(100), None)]));
    cg.create(Some(&with_block_io(io)))
        .expect("create with CFQ");
    assert_eq!(read(&dir.join("blkio.weight")), "700");
    assert_eq!(read(&dir.join("blkio.leaf_weight")), "200");
    assert_eq!(read(&dir.join("blkio.weight_device")), "8:0 100\n");
    assert_eq!(read(&dir.join("blkio.bfq.weight")), "500");
}

#[test]
fn v1_block_io_the_kernel_lacks_fails_only_when_asked_for() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("blkio/c");
    touch(&dir, V1_THROTTLES);
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    // No weight files at all (no CFQ, no BFQ).
    let err = cg
        .create(Some(&with_block_io(block_io())))
        .expect_err("no weights");
    let message = err.to_string();
    assert!(
        message.contains("linux.resources.blockIO.weight "),
        "{message}"
    );
    assert!(
        message.contains("blkio.weight or blkio.bfq.weight"),
        "{message}"
    );
    // Leaf weights only exist with CFQ.
    touch(&dir, &["blkio.bfq.weight"]);
    let mut io = LinuxBlockIo::default();
    io.set_weight_device(Some(vec![weight_device(8, 0, None, Some(100))]));
    let err = cg
        .create(Some(&with_block_io(io)))
        .expect_err("no leaf weights");
    assert!(
        err.to_string().contains("blkio.leaf_weight_device"),
        "{err}"
    );
    // Throttles alone work; zero weights and empty lists ask for nothing.
    let mut io = LinuxBlockIo::default();
    io.set_weight(Some(0));
    io.set_weight_device(Some(vec![weight_device(8, 0, Some(0), Some(0))]));
    io.set_throttle_write_iops_device(Some(vec![throttle(254, 0, 10)]));
    cg.create(Some(&with_block_io(io))).expect("throttle only");
    assert_eq!(
        read(&dir.join("blkio.throttle.write_iops_device")),
        "254:0 10\n"
    );
    assert_eq!(read(&dir.join("blkio.bfq.weight")), "");

    // Without a blkio hierarchy, only a spec that sets something fails.
    let bare = tempfile::tempdir().expect("tempdir");
    touch(&bare.path().join("memory"), &[]);
    let cg = Cgroup::at(bare.path(), CgroupVersion::V1, "c");
    let mut io = LinuxBlockIo::default();
    io.set_throttle_read_bps_device(Some(vec![]));
    cg.create(Some(&with_block_io(io)))
        .expect("nothing asked for");
    let err = cg
        .create(Some(&with_block_io(block_io())))
        .expect_err("no blkio");
    assert!(err.to_string().contains("no blkio controller"), "{err}");
}

#[test]
fn v2_block_io_uses_bfq_weights_or_converts_to_io_weight() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("c");
    touch(&dir, &["io.max", "io.bfq.weight", "io.weight"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "c");
    cg.create(Some(&with_block_io(block_io()))).expect("create");
    assert_eq!(read(&dir.join("io.bfq.weight")), "500\n8:0 300\n");
    assert_eq!(read(&dir.join("io.weight")), "");
    assert_eq!(
        read(&dir.join("io.max")),
        "8:0 rbps=1048576\n8:16 rbps=4096\n8:0 wbps=2097152\n8:0 riops=100\n8:0 wiops=50\n"
    );

    fs::remove_file(dir.join("io.bfq.weight")).expect("rm");
    cg.create(Some(&with_block_io(block_io()))).expect("create");
    // 1 + (w - 10) * 9999 / 990: 500 -> 4950, 300 -> 2930.
    assert_eq!(read(&dir.join("io.weight")), "4950\n8:0 2930\n");
    assert_eq!(
        [10, 500, 1000, 5, 2000].map(block_io::io_weight),
        [1, 4950, 10000, 1, 10000]
    );
    let mut io = LinuxBlockIo::default();
    io.set_weight(Some(1000));
    fs::write(dir.join("io.weight"), "").expect("reset");
    cg.create(Some(&with_block_io(io))).expect("weight only");
    assert_eq!(read(&dir.join("io.weight")), "10000\n");
}

#[test]
fn v2_block_io_the_kernel_lacks_fails_only_when_asked_for() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("c");
    touch(&dir, &["cgroup.procs"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "c");
    let mut io = LinuxBlockIo::default();
    io.set_throttle_read_iops_device(Some(vec![throttle(8, 0, 10)]));
    let err = cg.create(Some(&with_block_io(io))).expect_err("no io.max");
    let message = err.to_string();
    assert!(message.contains("throttleReadIOPSDevice"), "{message}");
    assert!(message.contains("io.max"), "{message}");
    let mut io = LinuxBlockIo::default();
    io.set_leaf_weight(Some(100));
    let err = cg
        .create(Some(&with_block_io(io)))
        .expect_err("leaf weight");
    assert!(err.to_string().contains("no leaf weights"), "{err}");
    cg.create(Some(&with_block_io(LinuxBlockIo::default())))
        .expect("nothing asked for");
}
