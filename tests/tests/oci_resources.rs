//! berth-runtime and what a container's spec imposes beyond memory, cpu and
//! pids: block I/O weights and throttles (read back from the container's cgroup
//! and felt by a process in it), and the seccomp filter exec'd processes get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::oci::{cgroup_dirs, unique, vm_bundle, vm_env, Env};
use serde_json::json;

/// The whole disk holding `path` as (major, minor), if it is on a block device:
/// throttles apply to disks, not partitions.
fn disk_of(path: &Path) -> Option<(u64, u64)> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let sys = sys.canonicalize().ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let text = std::fs::read_to_string(disk.join("dev")).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The v1 blkio cgroup directory of container `id`.
fn blkio_dir(id: &str) -> PathBuf {
    cgroup_dirs(id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/blkio"))
        .unwrap_or_else(|| panic!("no blkio cgroup for {id}: {:?}", cgroup_dirs(id)))
}

/// A v1 host with a blkio hierarchy and the bundle directory on a disk, or why not.
fn blkio_env() -> Option<(Env, (u64, u64))> {
    let env = Env::new()?;
    if !Path::new("/sys/fs/cgroup/blkio").is_dir() {
        println!("skipped: no cgroup v1 blkio hierarchy");
        return None;
    }
    let Some(disk) = disk_of(env.dir.path()) else {
        println!(
            "skipped: {} is not on a block device",
            env.dir.path().display()
        );
        return None;
    };
    Some((env, disk))
}

#[test]
fn block_io_throttles_reach_the_blkio_cgroup() {
    let Some((env, (major, minor))) = blkio_env() else {
        return;
    };
    let id = unique("blkio-throttle");
    let device = |rate: u64| json!([{"major": major, "minor": minor, "rate": rate}]);
    let bundle = env.bundle("blkio-throttle", &["sleep", "60"], |c| {
        c["linux"]["resources"]["blockIO"] = json!({
            "throttleReadBpsDevice": device(1 << 20),
            "throttleWriteBpsDevice": device(2 << 20),
            "throttleReadIOPSDevice": device(300),
            "throttleWriteIOPSDevice": device(200),
        });
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let dir = blkio_dir(&id);
    for (file, rate) in [
        ("read_bps_device", 1 << 20),
        ("write_bps_device", 2 << 20),
        ("read_iops_device", 300),
        ("write_iops_device", 200),
    ] {
        let text = std::fs::read_to_string(dir.join(format!("blkio.throttle.{file}"))).unwrap();
        assert_eq!(text.trim(), format!("{major}:{minor} {rate}"), "{file}");
    }
    env.ok(&["delete", "--force", &id]);
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn a_write_throttle_slows_the_container_down() {
    let Some((env, (major, minor))) = blkio_env() else {
        return;
    };
    // 2 MiB written and synced at 1 MiB/s: about two seconds (unthrottled, a
    // fraction of one). The syncing process submits the writes, so they count
    // against its cgroup.
    let script = "dd if=/dev/zero of=/written bs=64k count=32 conv=fsync 2>&1";
    let run = |name: &str, throttle: bool| {
        let id = unique(name);
        let bundle = env.bundle(name, &["sh", "-c", script], |c| {
            c["root"]["readonly"] = serde_json::Value::Bool(false);
            if throttle {
                c["linux"]["resources"]["blockIO"] = json!({
                    "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
                });
            }
        });
        let started = Instant::now();
        let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("32+0 records out"), "{text}");
        started.elapsed()
    };
    let free = run("blkio-free", false);
    let throttled = run("blkio-slow", true);
    assert!(
        throttled >= Duration::from_millis(1500) && throttled > free,
        "throttled {throttled:?}, unthrottled {free:?}"
    );
}

#[test]
fn block_io_weights_go_to_the_scheduler_the_kernel_has() {
    let Some((env, _)) = blkio_env() else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup/blkio");
    // CFQ's files live in every cgroup; BFQ's only below the root.
    let file = if root.join("blkio.weight").exists() {
        "blkio.weight"
    } else if root.join("blkio.bfq.io_service_bytes").exists() {
        "blkio.bfq.weight"
    } else {
        return println!("skipped: the kernel has no proportional block I/O scheduler");
    };
    let id = unique("blkio-weight");
    let bundle = env.bundle("blkio-weight", &["sleep", "60"], |c| {
        c["linux"]["resources"]["blockIO"] = json!({"weight": 345});
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let text = std::fs::read_to_string(blkio_dir(&id).join(file)).unwrap();
    // BFQ shows "default N" or just N depending on the kernel.
    assert_eq!(
        text.split_whitespace().last(),
        Some("345"),
        "{file}: {text}"
    );
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn block_io_the_kernel_lacks_is_refused_and_leaves_nothing() {
    let Some((env, (major, minor))) = blkio_env() else {
        return;
    };
    if Path::new("/sys/fs/cgroup/blkio/blkio.leaf_weight").exists() {
        return println!("skipped: this kernel has CFQ leaf weights");
    }
    let id = unique("blkio-leaf");
    let bundle = env.bundle("blkio-leaf", &["true"], |c| {
        c["linux"]["resources"]["blockIO"] = json!({
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
            "leafWeight": 300,
        });
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("linux.resources.blockIO.leafWeight"),
        "{text}"
    );
    assert!(text.contains("blkio.leaf_weight"), "{text}");
    assert!(env.root_is_empty(), "{text}");
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left behind");
    // Asking for nothing the kernel lacks works with the same hierarchy.
    let bundle = env.bundle("blkio-none", &["true"], |c| {
        c["linux"]["resources"]["blockIO"] = json!({"weight": 0, "throttleReadBpsDevice": []});
    });
    let id = unique("blkio-none");
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
}

/// A seccomp filter denying mkdir/mkdirat with EPERM, everything else allowed.
fn deny_mkdir(no_new_privileges: bool) -> impl Fn(&mut serde_json::Value) {
    move |config| {
        config["root"]["readonly"] = serde_json::Value::Bool(false);
        config["process"]["noNewPrivileges"] = serde_json::Value::Bool(no_new_privileges);
        config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    }
}

const MKDIR: &[&str] = &["sh", "-c", "mkdir /made; echo mkdir=$?"];

#[test]
fn exec_gets_the_container_seccomp_filter() {
    if !cfg!(target_arch = "x86_64") {
        return println!("skipped: seccomp filters are x86_64 only");
    }
    let Some(env) = Env::new() else { return };
    for nnp in [true, false] {
        let name = format!("exec-seccomp-{nnp}");
        let id = unique(&name);
        let bundle = env.bundle(&name, &["sleep", "60"], deny_mkdir(nnp));
        env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
        let mut args = vec!["exec", id.as_str()];
        args.extend_from_slice(MKDIR);
        let text = env.ok(&args);
        assert!(text.contains("mkdir=1"), "noNewPrivileges={nnp}: {text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        env.ok(&["delete", "--force", &id]);
    }
    // Without a filter in the spec the same exec may mkdir.
    let id = unique("exec-no-seccomp");
    let bundle = env.bundle("exec-no-seccomp", &["sleep", "60"], |c| {
        c["root"]["readonly"] = serde_json::Value::Bool(false);
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let mut args = vec!["exec", id.as_str()];
    args.extend_from_slice(MKDIR);
    assert_eq!(env.ok(&args).trim(), "mkdir=0");
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn vm_exec_gets_the_container_seccomp_filter() {
    if !cfg!(target_arch = "x86_64") {
        return println!("skipped: seccomp filters are x86_64 only");
    }
    let Some(env) = vm_env() else { return };
    let id = unique("vm-exec-seccomp");
    let bundle = vm_bundle(&env, "vm-exec-seccomp", &["sleep", "600"]);
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    deny_mkdir(false)(&mut config);
    // Device rules are not this test's subject: allowing everything needs no
    // device program, which the guest kernel may lack.
    config["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let mut args = vec!["exec", id.as_str()];
    args.extend_from_slice(MKDIR);
    let (code, text) = env.rt(&args);
    env.ok(&["delete", "--force", &id]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("mkdir=1"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
}

#[test]
fn vm_device_rules_are_enforced_or_refused_clearly() {
    let Some(env) = vm_env() else { return };
    let id = unique("vm-devices");
    let bundle = vm_bundle(&env, "vm-devices", &["sh", "-c", "exec 3</dev/xkmem"]);
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // /dev/kmem (1:2) is gone from modern kernels: opening the node fails with
    // ENXIO when the rules allow it, EPERM when they do not.
    config["linux"]["devices"] =
        json!([{"path": "/dev/xkmem", "type": "c", "major": 1, "minor": 2, "fileMode": 438}]);
    config["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    if text.contains("CONFIG_CGROUP_BPF") {
        // A guest kernel without device programs refuses rules that deny something.
        assert!(text.contains("CONFIG_BPF_SYSCALL"), "{text}");
        // vm-probe.json caches what the host can run, for every container.
        let left: Vec<_> = berth_e2e::oci::walkdir(&env.root())
            .into_iter()
            .filter(|p| !p.ends_with("vm-probe.json"))
            .collect();
        assert!(left.is_empty(), "{text}\nleft: {left:?}");
    } else {
        assert!(text.contains("Operation not permitted"), "{text}");
    }
}
