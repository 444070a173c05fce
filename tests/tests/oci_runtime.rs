//! `berth-runtime`, the OCI runtime with runc's command line: the create/start
//! split, state JSON, kill/delete, run, exec, console socket, hooks and bad bundles.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::oci::{
    cgroup_dirs, process_alive, processes_mentioning, receive_fd, unique, vm_bundle, vm_env,
    walkdir, Env, Podman,
};
use serde_json::Value;

#[test]
fn version_names_the_spec() {
    let Some(env) = Env::new() else { return };
    let out = env.ok(&["--version"]);
    assert!(out.starts_with("berth-runtime version "), "{out}");
    assert!(out.contains("\nspec: 1."), "{out}");
}

#[test]
fn create_start_kill_delete_lifecycle() {
    let Some(env) = Env::new() else { return };
    let id = unique("life");
    let bundle = env.bundle("life", &["sh", "-c", "echo started; exec sleep 60"], |_| {});
    let pid_file = env.dir.path().join("pid");
    let bundle_s = bundle.to_str().unwrap();
    env.ok(&[
        "create",
        "--bundle",
        bundle_s,
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let state = env.state(&id);
    let obj = state.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["annotations", "bundle", "id", "ociVersion", "pid", "status"]
    );
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle_s);
    assert!(state["ociVersion"].as_str().unwrap().starts_with("1."));
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert!(env.root().join(&id).join("exec.fifo").exists());
    assert!(!cgroup_dirs(&id).is_empty(), "no cgroup for {id}");
    // Blocked before exec: the process still runs berth-runtime's image, not sleep.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    // Twice is refused.
    let (code, text) = env.rt(&["create", "--bundle", bundle_s, &id]);
    assert_ne!(code, 0);
    assert!(text.contains("already exists"), "{text}");

    env.ok(&["start", &id]);
    let state = env.state(&id);
    assert_eq!(state["status"], "running");
    assert_eq!(state["pid"].as_i64().unwrap(), pid);
    assert!(!env.root().join(&id).join("exec.fifo").exists());
    let list: Value = serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let ps: Value = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps, serde_json::json!([pid]));
    let stats: Value = serde_json::from_str(env.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["data"]["pids"]["current"], 1);
    assert!(stats["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0);

    env.ok(&["pause", &id]);
    assert_eq!(env.state(&id)["status"], "paused");
    env.ok(&["resume", &id]);
    assert_eq!(env.state(&id)["status"], "running");
    env.ok(&["update", "--pids-limit", "50", &id]);

    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    let (code, text) = env.rt(&["state", &id]);
    assert_ne!(code, 0);
    assert!(text.contains("does not exist"), "{text}");
    assert!(env.root_is_empty());
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroup left: {:?}",
        cgroup_dirs(&id)
    );
}

#[test]
fn kill_defaults_to_term_and_delete_refuses_running() {
    let Some(env) = Env::new() else { return };
    let id = unique("term");
    let bundle = env.bundle(
        "term",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ],
        |_| {},
    );
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(env.state(&id)["status"], "running");
    let (code, text) = env.rt(&["delete", &id]);
    assert_ne!(code, 0);
    assert!(text.contains("not stopped"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    env.ok(&["kill", &id]);
    env.wait_status(&id, "stopped");
    let (code, text) = env.rt(&["kill", &id, "TERM"]);
    assert_ne!(code, 0);
    assert!(text.contains("not running"), "{text}");
    env.ok(&["delete", &id]);
    assert!(env.root_is_empty());
}

#[test]
fn run_passes_the_exit_code_through() {
    let Some(env) = Env::new() else { return };
    let id = unique("run");
    let bundle = env.bundle("run", &["sh", "-c", "echo out-$((40+2)); exit 7"], |_| {});
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 7, "{text}");
    assert!(text.contains("out-42"), "{text}");
    // Foreground run deletes the container afterwards, as runc does.
    assert!(env.root_is_empty());
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn delete_force_removes_a_created_container() {
    let Some(env) = Env::new() else { return };
    let id = unique("force");
    let bundle = env.bundle("force", &["sleep", "60"], |_| {});
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    env.ok(&["delete", "--force", &id]);
    assert!(env.root_is_empty());
    assert!(cgroup_dirs(&id).is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        if stat.is_empty() || state.starts_with('Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} survived delete --force"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_runs_in_the_container() {
    let Some(env) = Env::new() else { return };
    let id = unique("exec");
    let bundle = env.bundle("exec", &["sleep", "60"], |c| {
        c["hostname"] = Value::from("ocibox");
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
    let (code, text) = env.rt(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $FOO $(pwd) $(hostname) $((6*7)); exit 5",
    ]);
    assert_eq!(code, 5, "{text}");
    assert_eq!(text.trim(), "bar /tmp ocibox 42");
    // The exec'd process sees the container's pid namespace: sleep is PID 1.
    let out = env.ok(&[
        "exec",
        "--user",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "cat /proc/1/comm; id -u",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["sleep", "1000"]
    );
    env.ok(&["delete", "--force", &id]);
    assert!(env.root_is_empty());
}

#[test]
fn console_socket_receives_the_pty_master() {
    let Some(env) = Env::new() else { return };
    let id = unique("tty");
    let bundle = env.bundle(
        "tty",
        &["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-tty $(tty)"],
        |c| c["process"]["terminal"] = Value::Bool(true),
    );
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let bundle_s = bundle.to_str().unwrap();
    // Without a console socket a terminal is refused, leaving nothing behind.
    let (code, text) = env.rt(&["create", "--bundle", bundle_s, &id]);
    assert_ne!(code, 0);
    assert!(text.contains("console-socket"), "{text}");
    assert!(env.root_is_empty());

    env.ok(&[
        "create",
        "--bundle",
        bundle_s,
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (conn, _) = listener.accept().unwrap();
    let master = File::from(receive_fd(&conn));
    env.ok(&["start", &id]);
    let mut output = Vec::new();
    let mut master = master;
    let mut buf = [0u8; 1024];
    loop {
        use std::io::Read;
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the slave side is gone
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
    }
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("on-a-tty /dev/pts/0"), "{output:?}");
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let Some(env) = Env::new() else { return };
    let id = unique("hooks");
    let logs = env.dir.path().join("hooklogs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("hooks.log");
    let log_s = log.to_str().unwrap().to_owned();
    let hook = |name: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {name} $(cat) >> {log_s}")],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        })
    };
    let bundle = env.bundle("hooks", &["sleep", "60"], |c| {
        c["hooks"] = serde_json::json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [hook("startContainer")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
        // startContainer runs inside the container: the log is there at the same path.
        bind_at_same_path(c, &logs);
    });
    let bundle_s = bundle.to_str().unwrap();
    env.ok(&["create", "--bundle", bundle_s, &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        names(&text),
        ["prestart", "createRuntime", "createContainer"]
    );
    env.ok(&["start", &id]);
    env.ok(&["kill", &id, "9"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        names(&text),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    for line in text.lines() {
        let (name, json) = line.split_once(' ').unwrap();
        let state: Value = serde_json::from_str(json).unwrap();
        assert_eq!(state["id"], id.as_str(), "{name}");
        assert_eq!(state["bundle"], bundle_s, "{name}");
        let expected = match name {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "created",
        };
        assert_eq!(state["status"], expected, "{name}");
        if name != "poststop" {
            assert_eq!(state["pid"].as_i64().unwrap(), pid, "{name}");
        }
    }
}

/// Add a read-write bind mount of host `dir` at the same path in the container.
fn bind_at_same_path(config: &mut Value, dir: &Path) {
    let dir = dir.to_str().unwrap();
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": dir,
            "type": "bind",
            "source": dir,
            "options": ["rbind", "rw"],
        }));
}

#[test]
fn hooks_run_in_the_namespaces_and_moments_the_spec_names() {
    let Some(env) = Env::new() else { return };
    let id = unique("hookns");
    let logs = env.dir.path().join("nslogs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("hooks.log");
    let log_s = log.to_str().unwrap().to_owned();
    // A host file outside the rootfs: visible before pivot_root, not after.
    let marker = env.dir.path().join("host-only-marker");
    std::fs::write(&marker, "x").unwrap();
    let marker_s = marker.to_str().unwrap().to_owned();
    let hook = |name: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!(
                "echo {name} $(readlink /proc/self/ns/mnt) $(test -e {marker_s} && echo host-tree || echo container-tree) >> {log_s}"
            )],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        })
    };
    let bundle = env.bundle("hookns", &["sleep", "60"], |c| {
        c["hooks"] = serde_json::json!({
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [hook("startContainer")],
            "poststart": [hook("poststart")],
        });
        bind_at_same_path(c, &logs);
    });
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let host_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let container_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(host_ns, container_ns);
    env.ok(&["start", &id]);
    let text = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect();
    let host = host_ns.to_str().unwrap();
    let container = container_ns.to_str().unwrap();
    let expected = [
        ["prestart", host, "host-tree"],
        ["createRuntime", host, "host-tree"],
        // In the container's mount namespace, before pivot_root.
        ["createContainer", container, "host-tree"],
        // In the container, after pivot_root.
        ["startContainer", container, "container-tree"],
        ["poststart", host, "host-tree"],
    ];
    assert_eq!(rows, expected, "{text}");
    env.ok(&["kill", &id, "9"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
}

#[test]
fn failing_create_hook_leaves_nothing_behind() {
    let Some(env) = Env::new() else { return };
    let id = unique("badhook");
    let bundle = env.bundle("badhook", &["sleep", "60"], |c| {
        c["hooks"] = serde_json::json!({
            "createRuntime": [{"path": "/bin/false"}],
        });
    });
    let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0);
    assert!(text.contains("CreateRuntime hook /bin/false"), "{text}");
    assert!(env.root_is_empty());
    assert!(cgroup_dirs(&id).is_empty());
}

/// Breaks a bundle in one way.
type Breaker<'a> = Box<dyn Fn(&Path) + 'a>;

#[test]
fn bad_bundles_fail_clearly_and_leave_nothing() {
    let Some(env) = Env::new() else { return };
    let good = env.bundle("bad", &["true"], |_| {});
    let config = std::fs::read_to_string(good.join("config.json")).unwrap();
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing",
            Box::new(|b: &Path| std::fs::remove_file(b.join("config.json")).unwrap()),
            "config.json not found",
        ),
        (
            "invalid",
            Box::new(|b: &Path| std::fs::write(b.join("config.json"), "{not json").unwrap()),
            "invalid",
        ),
        (
            "namespace",
            Box::new(|b: &Path| {
                let mut c: Value = serde_json::from_str(&config).unwrap();
                c["linux"]["namespaces"][0]["type"] = Value::from("bogus");
                std::fs::write(b.join("config.json"), c.to_string()).unwrap();
            }),
            "bogus",
        ),
        (
            "rootfs",
            Box::new(|b: &Path| {
                std::fs::write(b.join("config.json"), &config).unwrap();
                std::fs::remove_dir_all(b.join("rootfs")).unwrap();
            }),
            "rootfs",
        ),
    ];
    for (name, break_it, expected) in cases {
        // Every case starts from a good bundle.
        if !good.join("rootfs").exists() {
            let _ = std::fs::remove_file(good.join("config.json"));
            let again = env.bundle("bad", &["true"], |_| {});
            assert_eq!(again, good);
        }
        std::fs::write(good.join("config.json"), &config).unwrap();
        break_it(&good);
        let id = unique(name);
        let (code, text) = env.rt(&["create", "--bundle", good.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "{name}: {text}");
        assert!(text.contains(expected), "{name}: {text}");
        assert!(text.starts_with("berth-runtime: "), "{name}: {text}");
        assert!(env.root_is_empty(), "{name}: state left behind");
        assert!(cgroup_dirs(&id).is_empty(), "{name}: cgroup left behind");
    }
}

#[test]
fn podman_runs_with_berth_runtime() {
    let Some(env) = Env::new() else { return };
    let Some(podman) = Podman::new(&env) else {
        return;
    };
    let args = [
        &["run", "--rm", "--network", "none"][..],
        &Podman::ULIMITS,
        &[Podman::IMAGE, "echo", "hi"],
    ]
    .concat();
    let out = podman.output(&args);
    assert!(
        out.status.success(),
        "podman run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
}

#[test]
fn vm_run_passes_output_and_exit_code() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmrun");
    let bundle = vm_bundle(
        &env,
        "vmrun",
        &["sh", "-c", "echo hello from the vm; uname -r >&2; exit 7"],
    );
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 7, "{text}");
    assert!(text.contains("hello from the vm"), "{text}");
    // Only the runtime-wide hypervisor probe cache stays.
    let left: Vec<_> = walkdir(&env.root())
        .into_iter()
        .filter(|p| !p.ends_with("vm-probe.json"))
        .collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
    assert!(processes_mentioning(&id).is_empty());
}

#[test]
fn vm_create_start_kill_delete_lifecycle() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmlife");
    let bundle = vm_bundle(&env, "vmlife", &["sleep", "600"]);
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let dir = env.root().join(&id);
    let state = env.state(&id);
    assert_eq!(state["status"], "created", "{state}");
    let vmm = state["pid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{vmm}")).exists());
    assert!(dir.join("vsock.sock").exists());
    env.ok(&["start", &id]);
    assert_eq!(env.state(&id)["status"], "running");
    let (code, text) = env.rt(&["exec", &id, "sh", "-c", "echo in the guest; exit 3"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("in the guest"), "{text}");
    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    // The VMM and the vsock daemon, as recorded at create.
    let vm: Value = serde_json::from_slice(&std::fs::read(dir.join("vm.json")).unwrap()).unwrap();
    let mut pids = vec![vmm];
    for helper in vm["helpers"].as_array().unwrap() {
        pids.push(helper[0].as_i64().unwrap());
    }
    assert!(pids.len() >= 2, "{vm}");
    env.ok(&["delete", &id]);
    assert!(!dir.exists(), "state dir left behind");
    for pid in pids {
        assert!(!process_alive(pid), "{pid} survived");
    }
    // Gone, or a zombie waiting for whoever reaps orphans here.
    assert!(!process_alive(vmm), "the VMM survived");
    let left: Vec<_> = processes_mentioning(dir.to_str().unwrap());
    assert!(left.is_empty(), "left running: {left:?}");
    let left: Vec<_> = walkdir(&env.root())
        .into_iter()
        .filter(|p| !p.ends_with("vm-probe.json"))
        .collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

#[test]
fn vm_console_socket_relays_the_guest_tty() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmtty");
    let bundle = env.bundle(
        "vmtty",
        &["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-guest-tty"],
        |c| {
            c["process"]["terminal"] = Value::Bool(true);
            c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        },
    );
    let sock = env.dir.path().join("vmconsole.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    env.ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (conn, _) = listener.accept().unwrap();
    let mut master = File::from(receive_fd(&conn));
    env.ok(&["start", &id]);
    let mut output = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        use std::io::Read;
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
    }
    let output = String::from_utf8_lossy(&output);
    assert!(output.contains("on-a-guest-tty"), "{output:?}");
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert!(!env.root().join(&id).exists());
}

/// A seccomp filter denying mkdir/mkdirat with EPERM, everything else allowed.
fn deny_mkdir(config: &mut Value, no_new_privileges: bool) {
    config["process"]["noNewPrivileges"] = Value::Bool(no_new_privileges);
    config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    });
}

#[test]
fn seccomp_denies_listed_syscalls() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let Some(env) = Env::new() else { return };
    for nnp in [true, false] {
        let name = format!("seccomp-{nnp}");
        let id = unique(&name);
        let script = "mkdir /tmp/x; echo mkdir=$?; echo allowed-$((6*7))";
        let bundle = env.bundle(&name, &["sh", "-c", script], |c| deny_mkdir(c, nnp));
        let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(code, 0, "noNewPrivileges={nnp}: {text}");
        assert!(text.contains("Operation not permitted"), "{text}");
        assert!(text.contains("mkdir=1"), "{text}");
        assert!(text.contains("allowed-42"), "{text}");
    }
}

#[test]
fn seccomp_for_another_architecture_is_refused() {
    let Some(env) = Env::new() else { return };
    let id = unique("seccomp-arch");
    let bundle = env.bundle("seccomp-arch", &["true"], |c| {
        c["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_AARCH64"],
        });
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("x86_64"), "{text}");
    assert!(env.root_is_empty(), "{text}");
}

#[test]
fn oom_score_adj_is_applied() {
    let Some(env) = Env::new() else { return };
    let id = unique("oom");
    let bundle = env.bundle("oom", &["cat", "/proc/self/oom_score_adj"], |c| {
        c["process"]["oomScoreAdj"] = Value::from(123);
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.trim(), "123", "{text}");
}

#[test]
fn rootfs_propagation_applies_to_the_container_root() {
    let Some(env) = Env::new() else { return };
    for (propagation, expect_shared) in [("rshared", true), ("rprivate", false)] {
        let name = format!("propagation-{propagation}");
        let id = unique(&name);
        let script = "awk '$5 == \"/\"' /proc/self/mountinfo";
        let bundle = env.bundle(&name, &["sh", "-c", script], |c| {
            c["linux"]["rootfsPropagation"] = Value::from(propagation);
        });
        let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            text.contains("shared:"),
            expect_shared,
            "{propagation}: {text}"
        );
    }
}

#[test]
fn device_rules_are_enforced_on_cgroup_v1() {
    let Some(env) = Env::new() else { return };
    if !Path::new("/sys/fs/cgroup/devices").is_dir() {
        println!("skipped: no cgroup v1 devices controller");
        return;
    }
    // /dev/kmem (1:2) is gone from modern kernels: opening the node fails with
    // ENXIO when the cgroup allows it, EPERM when it does not.
    for (allow, expected) in [(false, "Operation not permitted"), (true, "No such device")] {
        let name = format!("devices-{allow}");
        let id = unique(&name);
        let bundle = env.bundle(&name, &["sh", "-c", "exec 3</dev/xkmem"], |c| {
            c["linux"]["devices"] = serde_json::json!([
                {"path": "/dev/xkmem", "type": "c", "major": 1, "minor": 2, "fileMode": 438}
            ]);
            let mut rules = vec![serde_json::json!({"allow": false, "access": "rwm"})];
            if allow {
                rules.push(serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 2, "access": "r"}));
            }
            c["linux"]["resources"]["devices"] = Value::Array(rules);
        });
        let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "{text}");
        assert!(text.contains(expected), "allow={allow}: {text}");
        // The default nodes stay usable.
        let ok_name = format!("devices-null-{allow}");
        let ok_id = unique(&ok_name);
        let bundle = env.bundle(
            &ok_name,
            &[
                "sh",
                "-c",
                "echo x > /dev/null && head -c 1 /dev/zero | wc -c",
            ],
            |c| {
                c["linux"]["resources"]["devices"] =
                    serde_json::json!([{"allow": false, "access": "rwm"}]);
            },
        );
        let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &ok_id]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(text.trim(), "1", "{text}");
    }
}
