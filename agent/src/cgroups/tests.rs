use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimitBuilder,
    LinuxInterfacePriority, LinuxMemory, LinuxNetwork, LinuxPids, LinuxResources,
    LinuxThrottleDevice, LinuxThrottleDeviceBuilder, LinuxWeightDevice, LinuxWeightDeviceBuilder,
};

use super::*;

/// Pre-create what the kernel would: controller dirs and control files.
fn touch(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).expect("mkdir");
    for file in files {
        fs::write(dir.join(file), "").expect("touch");
    }
}

/// Write `content` into `dir/file`, making `dir` first.
fn seed(dir: &Path, file: &str, content: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(file), content).expect("write");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

/// What a fresh v1 memory cgroup's limit reads.
const UNLIMITED: &str = "9223372036854771712\n";

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
    seed(
        &r.join("memory/berth/c1"),
        "memory.limit_in_bytes",
        UNLIMITED,
    );
    touch(&r.join("freezer"), &[]);
    // Not a container controller: ignored.
    touch(&r.join("perf_event"), &[]);

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
    seed(&r.join("memory/c"), "memory.limit_in_bytes", UNLIMITED);
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
        "+cpu +cpuset +io +memory +pids"
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

fn with_cpu(edit: impl FnOnce(&mut LinuxCpu)) -> LinuxResources {
    let mut cpu = LinuxCpu::default();
    edit(&mut cpu);
    let mut resources = LinuxResources::default();
    resources.set_cpu(Some(cpu));
    resources
}

fn cpuset(cpus: &str, mems: &str) -> LinuxResources {
    with_cpu(|cpu| {
        cpu.set_cpus(Some(cpus.to_owned()));
        cpu.set_mems(Some(mems.to_owned()));
    })
}

/// A v1 cpuset hierarchy whose root has CPUs 0-3 and nodes 0-1, and whose
/// `levels` exist with the empty files a new cpuset cgroup has.
fn v1_cpuset_root(levels: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let hierarchy = root.path().join("cpuset");
    seed(&hierarchy, "cpuset.cpus", "0-3\n");
    seed(&hierarchy, "cpuset.mems", "0-1\n");
    for level in levels {
        touch(
            &hierarchy.join(level),
            &["cpuset.cpus", "cpuset.mems", "cgroup.procs"],
        );
    }
    root
}

#[test]
fn v1_cpuset_levels_take_their_parents_values_then_the_spec() {
    let root = v1_cpuset_root(&["berth", "berth/c1"]);
    let r = root.path();
    let cg = Cgroup::at(r, CgroupVersion::V1, "/berth/c1");
    assert_eq!(cg.dirs(), vec![r.join("cpuset/berth/c1")]);
    cg.create(Some(&cpuset("0", "0"))).expect("create");
    assert_eq!(read(&r.join("cpuset/berth/cpuset.cpus")), "0-3");
    assert_eq!(read(&r.join("cpuset/berth/cpuset.mems")), "0-1");
    assert_eq!(read(&r.join("cpuset/berth/c1/cpuset.cpus")), "0");
    assert_eq!(read(&r.join("cpuset/berth/c1/cpuset.mems")), "0");

    // An update without cpus keeps what the container has.
    cg.create(Some(&LinuxResources::default())).expect("update");
    assert_eq!(read(&r.join("cpuset/berth/c1/cpuset.cpus")), "0");

    // Without cpus or mems in the spec, the container still gets its parent's,
    // so that a task can join; a level that already has values keeps them.
    fs::write(r.join("cpuset/berth/cpuset.cpus"), "1").expect("w");
    touch(&r.join("cpuset/berth/c2"), &["cpuset.cpus", "cpuset.mems"]);
    Cgroup::at(r, CgroupVersion::V1, "berth/c2")
        .create(None)
        .expect("create c2");
    assert_eq!(read(&r.join("cpuset/berth/c2/cpuset.cpus")), "1");
    assert_eq!(read(&r.join("cpuset/berth/c2/cpuset.mems")), "0-1");
    assert_eq!(read(&r.join("cpuset/berth/cpuset.cpus")), "1");

    // An empty cpus string asks for nothing.
    Cgroup::at(r, CgroupVersion::V1, "berth/c2")
        .create(Some(&cpuset("", " ")))
        .expect("empty");
    assert_eq!(read(&r.join("cpuset/berth/c2/cpuset.cpus")), "1");
}

#[test]
fn v1_cpuset_level_without_cpuset_files_fails_naming_the_file() {
    // A kernel always has the files; a directory that lacks them is no cpuset.
    let root = v1_cpuset_root(&[]);
    let r = root.path();
    let err = Cgroup::at(r, CgroupVersion::V1, "c")
        .create(None)
        .expect_err("no files");
    assert!(
        matches!(&err, CgroupError::Io { path, .. } if *path == r.join("cpuset/c/cpuset.cpus")),
        "{err:?}"
    );
}

#[test]
fn v1_cpus_without_a_cpuset_hierarchy_are_refused_before_anything_is_made() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory"), &[]);
    touch(&r.join("pids"), &[]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "berth/c");
    for (resources, setting) in [
        (cpuset("0", ""), "linux.resources.cpu.cpus"),
        (cpuset("", "0"), "linux.resources.cpu.mems"),
    ] {
        let err = cg.create(Some(&resources)).expect_err("no cpuset");
        let message = err.to_string();
        assert!(message.starts_with(setting), "{message}");
        assert!(
            message.contains("no cpuset controller is mounted"),
            "{message}"
        );
        assert!(!r.join("memory/berth").exists(), "made before refusing");
    }
    // Unset cpus need no cpuset controller.
    cg.create(Some(&cpuset("", ""))).expect("nothing asked for");
    assert!(r.join("memory/berth/c").is_dir());
}

#[test]
fn v2_cpuset_writes_the_files_or_names_the_missing_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    seed(r, "cgroup.controllers", "cpuset cpu memory\n");
    touch(r, &["cgroup.subtree_control"]);
    touch(&r.join("c"), &["cpuset.cpus", "cpuset.mems"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "c");
    cg.create(Some(&cpuset("0-1", "0"))).expect("create");
    assert_eq!(
        read(&r.join("cgroup.subtree_control")),
        "+cpu +cpuset +memory"
    );
    assert_eq!(read(&r.join("c/cpuset.cpus")), "0-1");
    assert_eq!(read(&r.join("c/cpuset.mems")), "0");

    // A kernel without cpusets (like berth's guest kernel).
    touch(&r.join("d"), &["cgroup.procs"]);
    let err = Cgroup::at(r, CgroupVersion::V2, "d")
        .create(Some(&cpuset("0", "")))
        .expect_err("no cpuset");
    let message = err.to_string();
    assert!(
        message.starts_with("linux.resources.cpu.cpus is not supported here"),
        "{message}"
    );
    assert!(message.contains("no cpuset.cpus in"), "{message}");
    Cgroup::at(r, CgroupVersion::V2, "d")
        .create(Some(&cpuset("", "")))
        .expect("nothing asked for");
}

fn realtime(runtime: i64, period: u64) -> LinuxResources {
    with_cpu(|cpu| {
        cpu.set_realtime_runtime(Some(runtime));
        cpu.set_realtime_period(Some(period));
    })
}

#[test]
fn v1_realtime_runtime_and_period() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("cpu/c");
    touch(&dir, &["cpu.rt_period_us", "cpu.rt_runtime_us"]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    cg.create(Some(&realtime(50_000, 500_000))).expect("create");
    assert_eq!(read(&dir.join("cpu.rt_period_us")), "500000");
    assert_eq!(read(&dir.join("cpu.rt_runtime_us")), "50000");

    // Without CONFIG_RT_GROUP_SCHED the files are missing.
    fs::remove_file(dir.join("cpu.rt_runtime_us")).expect("rm");
    fs::remove_file(dir.join("cpu.rt_period_us")).expect("rm");
    let err = cg
        .create(Some(&with_cpu(|c| {
            c.set_realtime_runtime(Some(1000));
        })))
        .expect_err("no rt files");
    let message = err.to_string();
    assert!(
        message.starts_with("linux.resources.cpu.realtimeRuntime"),
        "{message}"
    );
    assert!(message.contains("cpu.rt_runtime_us"), "{message}");
    // Zeroes ask for nothing.
    cg.create(Some(&realtime(0, 0))).expect("unset");
}

#[test]
fn v2_refuses_realtime_scheduling() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let cg = Cgroup::at(r, CgroupVersion::V2, "c");
    for (resources, setting) in [
        (
            with_cpu(|c| {
                c.set_realtime_runtime(Some(1000));
            }),
            "linux.resources.cpu.realtimeRuntime",
        ),
        (
            with_cpu(|c| {
                c.set_realtime_period(Some(1000));
            }),
            "linux.resources.cpu.realtimePeriod",
        ),
    ] {
        let err = cg.create(Some(&resources)).expect_err("rt on v2");
        assert_eq!(
            err.to_string(),
            format!("{setting} is not supported here: cgroup v2 has no real-time group scheduling")
        );
        assert!(!r.join("c").exists(), "made before refusing");
    }
    cg.create(Some(&realtime(0, 0))).expect("unset");
}

fn with_memory(edit: impl FnOnce(&mut LinuxMemory)) -> LinuxResources {
    let mut memory = LinuxMemory::default();
    edit(&mut memory);
    let mut resources = LinuxResources::default();
    resources.set_memory(Some(memory));
    resources
}

/// A fake `/proc/swaps` under `root`: present when the kernel has swap.
fn kernel_swaps(root: &Path, has_swap: bool) -> std::path::PathBuf {
    let path = root.join("proc-swaps");
    if has_swap {
        fs::write(&path, "Filename\tType\tSize\tUsed\tPriority\n").expect("w");
    } else if path.exists() {
        fs::remove_file(&path).expect("rm");
    }
    path
}

/// A v1 memory cgroup directory `memory/c` with every file the spec can fill.
fn v1_memory_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("memory/c");
    touch(
        &dir,
        &[
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.swappiness",
            "memory.kmem.tcp.limit_in_bytes",
            "memory.oom_control",
        ],
    );
    seed(&dir, "memory.limit_in_bytes", UNLIMITED);
    root
}

#[test]
fn v1_memory_swappiness_tcp_oom_and_reservation() {
    let root = v1_memory_root();
    let r = root.path();
    let dir = r.join("memory/c");
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    cg.create(Some(&with_memory(|m| {
        m.set_reservation(Some(32 << 20));
        m.set_swappiness(Some(0));
        m.set_kernel_tcp(Some(16 << 20));
        m.set_disable_oom_killer(Some(true));
        // Deprecated, ignored as runc does.
        m.set_kernel(Some(8 << 20));
    })))
    .expect("create");
    assert_eq!(read(&dir.join("memory.soft_limit_in_bytes")), "33554432");
    assert_eq!(read(&dir.join("memory.swappiness")), "0");
    assert_eq!(
        read(&dir.join("memory.kmem.tcp.limit_in_bytes")),
        "16777216"
    );
    assert_eq!(read(&dir.join("memory.oom_control")), "1");
    assert!(!dir.join("memory.kmem.limit_in_bytes").exists());
    // No limit asked for: the limits are left alone.
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), UNLIMITED);
    assert_eq!(read(&dir.join("memory.memsw.limit_in_bytes")), "");

    // An OOM killer left on and unset fields write nothing.
    fs::write(dir.join("memory.oom_control"), "").expect("reset");
    cg.create(Some(&with_memory(|m| {
        m.set_disable_oom_killer(Some(false));
        m.set_kernel_tcp(Some(0));
    })))
    .expect("create");
    assert_eq!(read(&dir.join("memory.oom_control")), "");
    assert_eq!(read(&dir.join("memory.swappiness")), "0");
}

#[test]
fn v1_memory_the_kernel_lacks_fails_only_when_asked_for() {
    let root = v1_memory_root();
    let r = root.path();
    let dir = r.join("memory/c");
    // Kernels from 6.1 on may have no TCP buffer limit in v1.
    fs::remove_file(dir.join("memory.kmem.tcp.limit_in_bytes")).expect("rm");
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    let err = cg
        .create(Some(&with_memory(|m| {
            m.set_kernel_tcp(Some(1 << 20));
        })))
        .expect_err("no kmem.tcp");
    let message = err.to_string();
    assert!(
        message.starts_with("linux.resources.memory.kernelTCP is not supported here"),
        "{message}"
    );
    assert!(
        message.contains("memory.kmem.tcp.limit_in_bytes"),
        "{message}"
    );
    cg.create(Some(&with_memory(|m| {
        m.set_swappiness(Some(10));
    })))
    .expect("kernelTCP unset");

    // Without swap accounting an explicit swap limit fails; an implicit or
    // unlimited one is skipped.
    fs::remove_file(dir.join("memory.memsw.limit_in_bytes")).expect("rm");
    let mut cg = cg;
    cg.swaps = kernel_swaps(r, true);
    let swap_limit = |swap| {
        with_memory(|m| {
            m.set_limit(Some(64 << 20));
            m.set_swap(Some(swap));
        })
    };
    let err = cg
        .create(Some(&swap_limit(128 << 20)))
        .expect_err("no memsw");
    assert!(
        err.to_string()
            .contains("memory.swap is not supported here: this kernel provides no memory.memsw"),
        "{err}"
    );
    cg.create(Some(&swap_limit(-1))).expect("unlimited swap");
    cg.create(Some(&with_memory(|m| {
        m.set_limit(Some(32 << 20));
    })))
    .expect("no swap asked for");
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), "33554432");
    // A kernel without swap cannot swap past any limit.
    cg.swaps = kernel_swaps(r, false);
    cg.create(Some(&swap_limit(128 << 20)))
        .expect("no swap at all");
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), "67108864");
    assert!(!dir.join("memory.memsw.limit_in_bytes").exists());

    fs::remove_file(dir.join("memory.swappiness")).expect("rm");
    let err = cg
        .create(Some(&with_memory(|m| {
            m.set_swappiness(Some(10));
        })))
        .expect_err("no swappiness");
    assert!(err.to_string().contains("memory.swappiness in"), "{err}");
}

#[test]
fn memory_values_out_of_range_are_refused_before_anything_is_made() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory"), &[]);
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        let cg = Cgroup::at(r, version, "c");
        let err = cg
            .create(Some(&with_memory(|m| {
                m.set_limit(Some(64 << 20));
                m.set_swap(Some(32 << 20));
            })))
            .expect_err("swap below limit");
        assert_eq!(
            err.to_string(),
            "invalid linux.resources.memory.swap: memory+swap 33554432 is below the memory limit 67108864"
        );
        assert!(!r.join("memory/c").exists() && !r.join("c").exists());
    }
    let err = Cgroup::at(r, CgroupVersion::V1, "c")
        .create(Some(&with_memory(|m| {
            m.set_swappiness(Some(101));
        })))
        .expect_err("swappiness 101");
    assert_eq!(
        err.to_string(),
        "invalid linux.resources.memory.swappiness: 101 is not between 0 and 100"
    );
    assert!(!r.join("memory/c").exists());
}

#[test]
fn v1_memory_and_swap_are_written_in_an_order_the_kernel_accepts() {
    use super::memory::memsw_first;
    // Raising both: memory+swap first, or the new limit would exceed it.
    assert!(memsw_first(64 << 20, 256 << 20));
    assert!(memsw_first(64 << 20, -1));
    // Lowering both: the limit first, or memory+swap would fall below it.
    assert!(!memsw_first(256 << 20, 64 << 20));
    assert!(!memsw_first(64 << 20, 64 << 20));
    // A fresh cgroup is unlimited: the limit goes first.
    assert!(!memsw_first(9_223_372_036_854_771_712, 64 << 20));

    let root = v1_memory_root();
    let r = root.path();
    let dir = r.join("memory/c");
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    // A swap limit alone goes to memsw.
    cg.create(Some(&with_memory(|m| {
        m.set_swap(Some(96 << 20));
    })))
    .expect("swap only");
    assert_eq!(read(&dir.join("memory.memsw.limit_in_bytes")), "100663296");
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), UNLIMITED);
    // The current limit must be a number.
    fs::write(dir.join("memory.limit_in_bytes"), "lots").expect("w");
    let err = cg
        .create(Some(&with_memory(|m| {
            m.set_limit(Some(1 << 20));
        })))
        .expect_err("unparsable");
    assert!(matches!(err, CgroupError::Parse { .. }), "{err:?}");
}

#[test]
fn v2_memory_swap_reservation_and_what_v2_lacks() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("c");
    touch(&dir, &["memory.max", "memory.swap.max", "memory.low"]);
    let cg = Cgroup::at(r, CgroupVersion::V2, "c");
    cg.create(Some(&with_memory(|m| {
        m.set_limit(Some(64 << 20));
        m.set_swap(Some(96 << 20));
        m.set_reservation(Some(16 << 20));
        // Ignored: v2 has no switch for it; kernel is deprecated.
        m.set_disable_oom_killer(Some(true));
        m.set_kernel(Some(1 << 20));
        // -1 asks for no limit, which v2 has anyway.
        m.set_kernel_tcp(Some(-1));
    })))
    .expect("create");
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("memory.swap.max")), "33554432");
    assert_eq!(read(&dir.join("memory.low")), "16777216");

    for (swap, expected) in [(Some(-1), "max"), (None, "max")] {
        cg.create(Some(&with_memory(|m| {
            m.set_limit(Some(-1));
            m.set_swap(swap);
        })))
        .expect("unlimited");
        assert_eq!(read(&dir.join("memory.max")), "max");
        assert_eq!(read(&dir.join("memory.swap.max")), expected);
    }

    for (memory, setting) in [
        (
            with_memory(|m| {
                m.set_swappiness(Some(60));
            }),
            "linux.resources.memory.swappiness",
        ),
        (
            with_memory(|m| {
                m.set_kernel_tcp(Some(1 << 20));
            }),
            "linux.resources.memory.kernelTCP",
        ),
    ] {
        let err = cg.create(Some(&memory)).expect_err("not on v2");
        assert!(
            err.to_string().starts_with(&format!(
                "{setting} is not supported here: cgroup v2 has no"
            )),
            "{err}"
        );
    }
    let err = cg
        .create(Some(&with_memory(|m| {
            m.set_swap(Some(1 << 30));
        })))
        .expect_err("swap without limit");
    assert!(err.to_string().contains("needs a memory limit"), "{err}");

    // Without swap accounting: an explicit swap limit fails, an implicit or
    // unlimited one is skipped.
    fs::remove_file(dir.join("memory.swap.max")).expect("rm");
    let mut cg = cg;
    cg.swaps = kernel_swaps(r, true);
    let swap_limit = |swap| {
        with_memory(|m| {
            m.set_limit(Some(64 << 20));
            m.set_swap(Some(swap));
        })
    };
    let err = cg
        .create(Some(&swap_limit(96 << 20)))
        .expect_err("no swap.max");
    assert!(err.to_string().contains("no memory.swap.max in"), "{err}");
    cg.create(Some(&swap_limit(-1))).expect("unlimited swap");
    cg.create(Some(&with_memory(|m| {
        m.set_limit(Some(64 << 20));
    })))
    .expect("no swap asked for");
    // A kernel without swap (berth's guest kernel) cannot swap past any limit.
    cg.swaps = kernel_swaps(r, false);
    cg.create(Some(&swap_limit(96 << 20)))
        .expect("no swap at all");
    assert!(!dir.join("memory.swap.max").exists());
}

fn hugepages(limits: &[(&str, i64)]) -> LinuxResources {
    let limits = limits
        .iter()
        .map(|(size, limit)| {
            LinuxHugepageLimitBuilder::default()
                .page_size(*size)
                .limit(*limit)
                .build()
                .expect("limit")
        })
        .collect();
    let mut resources = LinuxResources::default();
    resources.set_hugepage_limits(Some(limits));
    resources
}

/// A fake `/sys/kernel/mm/hugepages` with 2 MiB and 1 GiB pages.
fn hugepage_sizes(root: &Path) -> std::path::PathBuf {
    let dir = root.join("mm/hugepages");
    for size in ["hugepages-2048kB", "hugepages-1048576kB"] {
        fs::create_dir_all(dir.join(size)).expect("mkdir");
    }
    dir
}

#[test]
fn huge_page_sizes_are_named_as_cgroup_files_name_them() {
    use super::hugetlb::{page_sizes, size_name};
    assert_eq!(
        [64, 2048, 32768, 1_048_576, 16_777_216, 100].map(size_name),
        ["64KB", "2MB", "32MB", "1GB", "16GB", "100KB"]
    );
    let root = tempfile::tempdir().expect("tempdir");
    let dir = hugepage_sizes(root.path());
    fs::create_dir_all(dir.join("not-a-size")).expect("mkdir");
    assert_eq!(page_sizes(&dir), ["2MB", "1GB"]);
    assert!(page_sizes(&root.path().join("missing")).is_empty());
}

#[test]
fn v1_hugepage_limits_are_checked_then_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let dir = r.join("hugetlb/c");
    touch(
        &dir,
        &[
            "hugetlb.2MB.limit_in_bytes",
            "hugetlb.2MB.rsvd.limit_in_bytes",
            "hugetlb.1GB.limit_in_bytes",
        ],
    );
    let mut cg = Cgroup::at(r, CgroupVersion::V1, "c");
    cg.hugepages = hugepage_sizes(r);
    assert_eq!(cg.dirs(), vec![dir.clone()]);
    cg.create(Some(&hugepages(&[("2MB", 4 << 20), ("1GB", 0)])))
        .expect("create");
    assert_eq!(read(&dir.join("hugetlb.2MB.limit_in_bytes")), "4194304");
    assert_eq!(
        read(&dir.join("hugetlb.2MB.rsvd.limit_in_bytes")),
        "4194304"
    );
    assert_eq!(read(&dir.join("hugetlb.1GB.limit_in_bytes")), "0");

    for size in ["3MB", "2mb", "2048kB", "2 MB", ""] {
        let err = cg
            .create(Some(&hugepages(&[("2MB", 1), (size, 1)])))
            .expect_err("bad size");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid linux.resources.hugepageLimits[].pageSize: {size:?} is not a huge page size of this kernel: it has 2MB, 1GB"
            )
        );
    }
    assert_eq!(read(&dir.join("hugetlb.2MB.limit_in_bytes")), "4194304");

    // A size the kernel lists but the controller has no file for.
    fs::create_dir_all(cg.hugepages.join("hugepages-64kB")).expect("mkdir");
    let err = cg
        .create(Some(&hugepages(&[("64KB", 1)])))
        .expect_err("no file");
    assert!(
        err.to_string()
            .contains("this kernel provides no hugetlb.64KB.limit_in_bytes"),
        "{err}"
    );
}

#[test]
fn hugepage_limits_without_hugetlb_or_huge_pages_are_refused_before_anything_is_made() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory"), &[]);
    let mut cg = Cgroup::at(r, CgroupVersion::V1, "berth/c");
    cg.hugepages = hugepage_sizes(r);
    let err = cg
        .create(Some(&hugepages(&[("2MB", 1 << 21)])))
        .expect_err("no hugetlb");
    assert_eq!(
        err.to_string(),
        format!(
            "linux.resources.hugepageLimits is not supported here: no hugetlb controller is mounted ({} is missing)",
            r.join("hugetlb").display()
        )
    );
    assert!(!r.join("memory/berth").exists(), "made before refusing");

    cg.hugepages = r.join("no-hugepages");
    let err = cg
        .create(Some(&hugepages(&[("2MB", 1 << 21)])))
        .expect_err("no huge pages");
    assert!(err.to_string().contains("it has none"), "{err}");
    // An empty list asks for nothing.
    cg.create(Some(&hugepages(&[]))).expect("no limits");
}

#[test]
fn v2_hugepage_limits_write_max_or_name_the_missing_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    seed(r, "cgroup.controllers", "hugetlb memory\n");
    touch(r, &["cgroup.subtree_control"]);
    let dir = r.join("c");
    touch(
        &dir,
        &["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "hugetlb.1GB.max"],
    );
    let mut cg = Cgroup::at(r, CgroupVersion::V2, "c");
    cg.hugepages = hugepage_sizes(r);
    cg.create(Some(&hugepages(&[("2MB", 8 << 20), ("1GB", -1)])))
        .expect("create");
    assert_eq!(read(&r.join("cgroup.subtree_control")), "+hugetlb +memory");
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), "8388608");
    assert_eq!(read(&dir.join("hugetlb.2MB.rsvd.max")), "8388608");
    assert_eq!(read(&dir.join("hugetlb.1GB.max")), "max");

    let err = cg
        .create(Some(&hugepages(&[("4MB", 1)])))
        .expect_err("bad size");
    assert!(
        err.to_string().contains("\"4MB\" is not a huge page size"),
        "{err}"
    );
    fs::remove_file(dir.join("hugetlb.1GB.max")).expect("rm");
    let err = cg
        .create(Some(&hugepages(&[("1GB", 1 << 30)])))
        .expect_err("no hugetlb files");
    assert!(
        err.to_string().starts_with(
            "linux.resources.hugepageLimits is not supported here: this kernel provides no hugetlb.1GB.max"
        ),
        "{err}"
    );
}

fn network(class_id: Option<u32>, priorities: &[(&str, u32)]) -> LinuxResources {
    let priorities = priorities
        .iter()
        .map(|(name, priority)| {
            let mut p = LinuxInterfacePriority::default();
            p.set_name((*name).to_owned());
            p.set_priority(*priority);
            p
        })
        .collect();
    let mut network = LinuxNetwork::default();
    network.set_class_id(class_id);
    network.set_priorities(Some(priorities));
    let mut resources = LinuxResources::default();
    resources.set_network(Some(network));
    resources
}

#[test]
fn v1_network_class_and_priorities() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("net_cls/c"), &["net_cls.classid"]);
    touch(&r.join("net_prio/c"), &["net_prio.ifpriomap"]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "c");
    assert_eq!(cg.dirs(), vec![r.join("net_cls/c"), r.join("net_prio/c")]);
    cg.create(Some(&network(Some(0x10_0001), &[("lo", 5), ("eth0", 10)])))
        .expect("create");
    assert_eq!(read(&r.join("net_cls/c/net_cls.classid")), "1048577");
    assert_eq!(
        read(&r.join("net_prio/c/net_prio.ifpriomap")),
        "lo 5\neth0 10\n"
    );
    let err = cg
        .create(Some(&network(None, &[("eth0 1\nlo", 1)])))
        .expect_err("bad name");
    assert!(
        err.to_string()
            .starts_with("invalid linux.resources.network.priorities: \"eth0 1\\nlo\""),
        "{err}"
    );
    assert_eq!(
        read(&r.join("net_prio/c/net_prio.ifpriomap")),
        "lo 5\neth0 10\n"
    );

    fs::remove_file(r.join("net_cls/c/net_cls.classid")).expect("rm");
    let err = cg
        .create(Some(&network(Some(1), &[])))
        .expect_err("no classid file");
    assert!(err.to_string().contains("no net_cls.classid in"), "{err}");
}

#[test]
fn network_without_its_controllers_is_refused_before_anything_is_made() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    touch(&r.join("memory"), &[]);
    touch(&r.join("net_cls"), &[]);
    let cg = Cgroup::at(r, CgroupVersion::V1, "berth/c");
    let err = cg
        .create(Some(&network(Some(1), &[("lo", 1)])))
        .expect_err("no net_prio");
    assert_eq!(
        err.to_string(),
        format!(
            "linux.resources.network.priorities is not supported here: no net_prio controller is mounted ({} is missing)",
            r.join("net_prio").display()
        )
    );
    assert!(!r.join("memory/berth").exists(), "made before refusing");

    // v2 has neither controller.
    let v2 = Cgroup::at(r, CgroupVersion::V2, "v2/c");
    for (resources, setting) in [
        (network(Some(7), &[]), "classID"),
        (network(None, &[("lo", 1)]), "priorities"),
    ] {
        let err = v2.create(Some(&resources)).expect_err("v2");
        assert_eq!(
            err.to_string(),
            format!("linux.resources.network.{setting} is not supported here: cgroup v2 has no net_cls or net_prio controller")
        );
        assert!(!r.join("v2").exists(), "made before refusing");
    }
    // A zero class and no priorities ask for nothing.
    v2.create(Some(&network(Some(0), &[])))
        .expect("nothing asked for");
    cg.create(Some(&network(Some(0), &[])))
        .expect("nothing asked for");
}
