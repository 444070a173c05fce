//! berth-runtime and the cgroup v1 settings beyond memory limits, cpu quotas and
//! pids: the cpuset (`linux.resources.cpu.cpus` / `mems`), memory swappiness,
//! the TCP buffer limit and the OOM-killer switch, read back from this host's
//! real hierarchy; `update` raising a memory limit; and settings the hierarchy
//! or kernel lacks (huge page limits, network classes), refused without leaving
//! a container or cgroup behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use berth_e2e::oci::{cgroup_dirs, unique, vm_bundle, vm_env, walkdir, Env};
use serde_json::{json, Value};

const V1: &str = "/sys/fs/cgroup";

/// An Env on a host whose `controller` is a v1 hierarchy, or why not.
fn v1_env(controller: &str) -> Option<Env> {
    let env = Env::new()?;
    if !Path::new(V1).join(controller).is_dir() {
        println!("skipped: no cgroup v1 {controller} hierarchy");
        return None;
    }
    Some(env)
}

/// Container `id`'s cgroup directory in the v1 `controller` hierarchy.
fn cgroup_dir(id: &str, controller: &str) -> PathBuf {
    let hierarchy = Path::new(V1).join(controller);
    cgroup_dirs(id)
        .into_iter()
        .find(|d| d.starts_with(&hierarchy))
        .unwrap_or_else(|| panic!("no {controller} cgroup for {id}: {:?}", cgroup_dirs(id)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The value of `field` in /proc/`pid`/status.
fn status_field(pid: i64, field: &str) -> String {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_owned()
}

#[test]
fn cpus_and_mems_land_in_the_cpuset_cgroup_and_bind_the_container() {
    let Some(env) = v1_env("cpuset") else { return };
    let id = unique("cpuset");
    let bundle = env.bundle("cpuset", &["sleep", "60"], |c| {
        c["linux"]["resources"]["cpu"] = json!({"cpus": "0", "mems": "0"});
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let dir = cgroup_dir(&id, "cpuset");
    assert_eq!(read(&dir.join("cpuset.cpus")), "0");
    assert_eq!(read(&dir.join("cpuset.mems")), "0");
    // The level above was made with its parent's CPUs, or no task could join.
    assert!(!read(&dir.parent().unwrap().join("cpuset.cpus")).is_empty());
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(status_field(pid, "Cpus_allowed_list"), "0");
    assert_eq!(status_field(pid, "Mems_allowed_list"), "0");
    // A process exec'd into the container joins the same cpuset.
    let text = env.ok(&[
        "exec",
        &id,
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    assert_eq!(text.trim(), "Cpus_allowed_list:\t0");
    // An update that leaves cpus out keeps them.
    env.ok(&["update", "--pids-limit", "30", &id]);
    assert_eq!(read(&dir.join("cpuset.cpus")), "0");
    env.ok(&["delete", "--force", &id]);
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));

    // Without cpus the container gets its parent's CPUs and still starts.
    let id = unique("cpuset-default");
    let bundle = env.bundle("cpuset-default", &["sleep", "60"], |_| {});
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let dir = cgroup_dir(&id, "cpuset");
    assert_eq!(
        read(&dir.join("cpuset.cpus")),
        read(&dir.parent().unwrap().join("cpuset.cpus"))
    );
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn swappiness_tcp_limit_and_oom_killer_read_back() {
    let Some(env) = v1_env("memory") else { return };
    let memory = Path::new(V1).join("memory");
    let has_tcp = memory.join("memory.kmem.tcp.limit_in_bytes").exists();
    let id = unique("memory-v1");
    let bundle = env.bundle("memory-v1", &["sleep", "60"], |c| {
        let mut settings = json!({
            "limit": 64 << 20,
            "reservation": 32 << 20,
            "swappiness": 17,
            "disableOOMKiller": true,
            "kernel": 64 << 20,
        });
        if has_tcp {
            settings["kernelTCP"] = json!(16 << 20);
        }
        c["linux"]["resources"]["memory"] = settings;
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let dir = cgroup_dir(&id, "memory");
    assert_eq!(read(&dir.join("memory.swappiness")), "17");
    assert!(
        read(&dir.join("memory.oom_control")).contains("oom_kill_disable 1"),
        "{}",
        read(&dir.join("memory.oom_control"))
    );
    assert_eq!(read(&dir.join("memory.soft_limit_in_bytes")), "33554432");
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), "67108864");
    if has_tcp {
        assert_eq!(
            read(&dir.join("memory.kmem.tcp.limit_in_bytes")),
            "16777216"
        );
    } else {
        println!("skipped: the kernel has no memory.kmem.tcp.limit_in_bytes");
    }

    // Raising the limit past the current memory+swap limit writes memory+swap
    // first (the kernel refuses a limit above it).
    env.ok(&["update", "--memory", "268435456", &id]);
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), "268435456");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(read(&memsw), "268435456");
    }
    // And lowering it again writes the limit first.
    env.ok(&["update", "--memory", "100663296", &id]);
    assert_eq!(read(&dir.join("memory.limit_in_bytes")), "100663296");
    if memsw.exists() {
        assert_eq!(read(&memsw), "100663296");
    }
    env.ok(&["delete", "--force", &id]);
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
}

/// Run a container with `resources` added to the spec's; it must fail, naming
/// each of `needles`, and leave no state directory and no cgroup.
fn refused(env: &Env, name: &str, resources: Value, needles: &[&str]) {
    let id = unique(name);
    let bundle = env.bundle(name, &["true"], |c| {
        for (key, value) in resources.as_object().unwrap() {
            c["linux"]["resources"][key] = value.clone();
        }
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{name}: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{name}: no {needle:?} in {text}");
    }
    assert!(env.root_is_empty(), "{name}: state left behind: {text}");
    assert!(
        cgroup_dirs(&id).is_empty(),
        "{name}: cgroup left behind: {:?}",
        cgroup_dirs(&id)
    );
}

#[test]
fn what_the_hierarchy_lacks_is_refused_and_leaves_nothing() {
    let Some(env) = v1_env("memory") else { return };
    let mut checked = 0;

    // A page size no kernel has, whatever is mounted.
    refused(
        &env,
        "hugetlb-3mb",
        json!({"hugepageLimits": [{"pageSize": "3MB", "limit": 1 << 30}]}),
        &[
            "linux.resources.hugepageLimits[].pageSize",
            "\"3MB\" is not a huge page size",
        ],
    );
    checked += 1;

    let sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !Path::new(V1).join("hugetlb").exists() && sizes.iter().any(|s| s == "hugepages-2048kB") {
        refused(
            &env,
            "hugetlb-unmounted",
            json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 30}]}),
            &[
                "linux.resources.hugepageLimits is not supported here",
                "no hugetlb controller is mounted",
            ],
        );
        checked += 1;
    }
    if !Path::new(V1).join("net_cls").exists() {
        refused(
            &env,
            "net-cls-unmounted",
            json!({"network": {"classID": 1048577}}),
            &[
                "linux.resources.network.classID is not supported here",
                "no net_cls controller is mounted",
            ],
        );
        checked += 1;
    }
    if !Path::new(V1).join("net_prio").exists() {
        refused(
            &env,
            "net-prio-unmounted",
            json!({"network": {"priorities": [{"name": "lo", "priority": 1}]}}),
            &[
                "linux.resources.network.priorities",
                "no net_prio controller",
            ],
        );
        checked += 1;
    }
    if !Path::new(V1)
        .join("memory/memory.kmem.tcp.limit_in_bytes")
        .exists()
    {
        // Found missing only once the cgroup exists: it is removed again.
        refused(
            &env,
            "kmem-tcp-missing",
            json!({"memory": {"kernelTCP": 1 << 20}}),
            &[
                "linux.resources.memory.kernelTCP",
                "memory.kmem.tcp.limit_in_bytes",
            ],
        );
        checked += 1;
    }
    refused(
        &env,
        "swappiness-101",
        json!({"memory": {"swappiness": 101}}),
        &["invalid linux.resources.memory.swappiness: 101 is not between 0 and 100"],
    );
    checked += 1;
    if Path::new(V1).join("cpu/cpu.rt_runtime_us").exists() {
        // The kernel refuses a real-time runtime the parent has no budget for
        // (berth-runtime's parent cgroup has none), once the cgroup exists.
        let parent = Path::new(V1).join("cpu/berth-runtime/cpu.rt_runtime_us");
        if !parent.exists() || read(&parent) == "0" {
            refused(
                &env,
                "rt-runtime",
                json!({"cpu": {"realtimeRuntime": 10000, "realtimePeriod": 1000000}}),
                &["cpu.rt_runtime_us"],
            );
            checked += 1;
        }
    }
    println!("{checked} refusals checked");
}

/// Run a vm-mode container with `resources` added to the spec's and `args`;
/// returns the exit code and output.
fn vm_run(env: &Env, name: &str, args: &[&str], resources: Value) -> (i32, String) {
    let id = unique(name);
    let bundle = vm_bundle(env, name, args);
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in resources.as_object().unwrap() {
        config["linux"]["resources"][key] = value.clone();
    }
    // Device rules are not this test's subject: allowing everything needs no
    // device program, which the guest kernel may lack.
    config["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id])
}

#[test]
fn vm_cgroup_v2_applies_memory_settings_and_refuses_what_it_lacks() {
    let Some(env) = vm_env() else { return };
    // The container's cgroup in the guest, seen through the spec's cgroup mount
    // (a bind of the guest's whole hierarchy).
    let script = format!(
        "cd /sys/fs/cgroup/berth-runtime/{} && cat memory.max memory.low && \
         {{ cat memory.swap.max 2>/dev/null || echo no-swap; }}",
        unique("vm-memory")
    );
    let (code, text) = vm_run(
        &env,
        "vm-memory",
        &["sh", "-c", &script],
        json!({"memory": {
            "limit": 64 << 20,
            "swap": 96 << 20,
            "reservation": 16 << 20,
            "disableOOMKiller": true,
            "kernel": 1 << 20,
        }}),
    );
    assert_eq!(code, 0, "{text}");
    let values: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(values[..2], ["67108864", "16777216"], "{text}");
    // A guest kernel without swap has no swap.max, and the memory+swap limit
    // is accepted (nothing can swap); with swap, v2 limits swap alone.
    assert!(matches!(values[2], "no-swap" | "33554432"), "{text}");

    for (name, resources, needle) in [
        (
            "vm-swappiness",
            json!({"memory": {"swappiness": 10}}),
            "linux.resources.memory.swappiness is not supported here: cgroup v2 has no per-cgroup swappiness",
        ),
        (
            "vm-kernel-tcp",
            json!({"memory": {"kernelTCP": 1 << 20}}),
            "linux.resources.memory.kernelTCP is not supported here: cgroup v2 has no separate TCP buffer limit",
        ),
        (
            "vm-classid",
            json!({"network": {"classID": 1048577}}),
            "linux.resources.network.classID is not supported here: cgroup v2 has no net_cls or net_prio controller",
        ),
        (
            "vm-realtime",
            json!({"cpu": {"realtimeRuntime": 1000}}),
            "linux.resources.cpu.realtimeRuntime is not supported here: cgroup v2 has no real-time",
        ),
    ] {
        let (code, text) = vm_run(&env, name, &["true"], resources);
        assert_ne!(code, 0, "{name}: {text}");
        assert!(text.contains(needle), "{name}: {text}");
        // vm-probe.json caches what the host can run, for every container.
        let left: Vec<_> = walkdir(&env.root())
            .into_iter()
            .filter(|p| !p.ends_with("vm-probe.json"))
            .collect();
        assert!(left.is_empty(), "{name}: {text}\nleft: {left:?}");
    }
}
