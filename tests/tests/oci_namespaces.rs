//! `berth-runtime` and the namespaces a spec lists: a namespace type left out is
//! inherited from the runtime (the mount namespace included), a pid namespace
//! joined by path (or unshared after other joins) is where `state.pid` lives, and
//! mappings given with a user namespace path must be that namespace's own.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_e2e::oci::{cgroup_dirs, process_alive, unique, Env};
use serde_json::{json, Value};

/// The first host id container root is mapped to, and how many ids.
const HOST_ID: u32 = 100_000;
const IDS: u32 = 65_536;

/// Drop a namespace type from the spec.
fn without_namespace(config: &mut Value, typ: &str) {
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != typ);
}

/// Join `typ` at `path` (replacing the entry that creates one).
fn join_namespace(config: &mut Value, typ: &str, path: &str) {
    without_namespace(config, typ);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": typ, "path": path}));
}

/// A user namespace mapping container ids 0.. to `host`.. (`path`: joined).
fn user_namespace(config: &mut Value, path: Option<&str>, uid_host: u32, gid_host: u32) {
    match path {
        Some(path) => join_namespace(config, "user", path),
        None => config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"})),
    }
    config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid_host, "size": IDS}]);
    config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": gid_host, "size": IDS}]);
}

/// The namespace a process is in, e.g. `pid:[4026531836]`.
fn ns_of(pid: impl std::fmt::Display, name: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}")).unwrap()
}

/// The NSpid line of /proc/PID/status: the pid in each pid namespace, outermost first.
fn ns_pids(pid: i64) -> Vec<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The mountinfo lines that mention `dir`, and the line of the mount on /
/// (whose propagation a leaking runtime would change).
fn mounts_touching(dir: &Path) -> (Vec<String>, String) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy();
    let under: Vec<String> = mountinfo
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(str::to_owned)
        .collect();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap()
        .to_owned();
    (under, root)
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_a_mount_namespace_the_process_shares_the_hosts_mount_table_and_nothing_is_mounted() {
    let Some(env) = Env::new() else { return };
    let before = mounts_touching(env.dir.path());
    let id = unique("nomntns");
    let bundle = env.bundle(
        "nomntns",
        &["sh", "-c", "ls / > /seen; touch /done; exec sleep 60"],
        |c| {
            without_namespace(c, "mount");
            // What only a mount can give (the defaults of `spec`) is refused without one.
            c["linux"]["maskedPaths"] = json!([]);
            c["linux"]["readonlyPaths"] = json!([]);
            c["root"]["readonly"] = json!(false);
        },
    );
    let rootfs = bundle.join("rootfs");
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    // Our mount namespace; its root is the bundle's rootfs (a chroot, as runc does).
    assert_eq!(ns_of(pid, "mnt"), ns_of("self", "mnt"));
    assert_ne!(ns_of(pid, "uts"), ns_of("self", "uts"));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        rootfs
    );
    // The spec's /proc, /dev, /sys... were not mounted on our table.
    assert_eq!(mounts_touching(env.dir.path()), before);

    env.ok(&["start", &id]);
    wait_for(&rootfs.join("done"));
    let mut names: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "done")
        .collect();
    names.sort();
    let seen = std::fs::read_to_string(rootfs.join("seen")).unwrap();
    assert_eq!(seen.lines().collect::<Vec<_>>(), names);
    // An exec'd process joins it in its root, not ours.
    let listed = env.ok(&["exec", &id, "ls", "/"]);
    names.push("done".to_owned());
    names.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), names);

    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert!(env.root_is_empty());
    assert!(cgroup_dirs(&id).is_empty());
    assert_eq!(
        mounts_touching(env.dir.path()),
        before,
        "a mount left behind"
    );
}

#[test]
fn what_needs_a_mount_is_refused_without_a_mount_namespace() {
    let Some(env) = Env::new() else { return };
    let before = mounts_touching(env.dir.path());
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 3] = [
        (
            "masked",
            |c| c["linux"]["readonlyPaths"] = json!([]),
            "linux.maskedPaths needs a mount namespace",
        ),
        (
            "readonly",
            |c| c["linux"]["maskedPaths"] = json!([]),
            "linux.readonlyPaths needs a mount namespace",
        ),
        (
            "roroot",
            |c| {
                c["linux"]["maskedPaths"] = json!([]);
                c["linux"]["readonlyPaths"] = json!([]);
            },
            "root.readonly needs a mount namespace",
        ),
    ];
    for (name, edit, message) in cases {
        let id = unique(name);
        let bundle = env.bundle(name, &["true"], |c| {
            without_namespace(c, "mount");
            edit(c);
        });
        let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "{name}: {text}");
        assert!(text.contains(message), "{name}: {text}");
        assert!(env.root_is_empty(), "{name}: state left behind");
        assert!(cgroup_dirs(&id).is_empty(), "{name}: cgroup left behind");
    }
    assert_eq!(mounts_touching(env.dir.path()), before);
}

#[test]
fn a_pid_namespace_joined_by_path_holds_state_pid_and_kill_reaches_it() {
    let Some(env) = Env::new() else { return };
    let owner = unique("pidowner");
    let bundle = env.bundle("pidowner", &["sleep", "60"], |_| {});
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &owner]);
    let owner_pid = env.state(&owner)["pid"].as_i64().unwrap();

    let id = unique("pidjoin");
    let pid_ns = format!("/proc/{owner_pid}/ns/pid");
    let bundle = env.bundle("pidjoin", &["sleep", "60"], |c| {
        join_namespace(c, "pid", &pid_ns);
    });
    let pid_file = env.dir.path().join("pidjoin.pid");
    env.ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert_eq!(ns_of(pid, "pid"), ns_of(owner_pid, "pid"));
    assert_ne!(ns_of(pid, "pid"), ns_of("self", "pid"));
    let inside = ns_pids(pid);
    assert_eq!(inside.len(), 2, "{inside:?}");
    assert!(inside[1] > 1, "the owner's process is 1 there: {inside:?}");

    env.ok(&["start", &id]);
    env.wait_status(&id, "running");
    env.ok(&["kill", &id, "KILL"]);
    wait_gone(pid);
    env.wait_status(&id, "stopped");
    assert_eq!(env.state(&owner)["status"], "running");
    env.ok(&["delete", &id]);
    env.ok(&["delete", "--force", &owner]);
    assert!(env.root_is_empty());
}

/// A test environment whose directories the mapped root can walk through.
fn userns_env() -> Option<Env> {
    let env = Env::new()?;
    if !Path::new("/proc/self/uid_map").exists() {
        println!("skipped: the kernel has no user namespaces");
        return None;
    }
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(env)
}

/// A bundle whose rootfs belongs to container root (host `HOST_ID`).
fn userns_bundle(env: &Env, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    let bundle = env.bundle(name, args, edit);
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = format!("{HOST_ID}:{HOST_ID}");
    let status = Command::new("chown")
        .args(["-R", "-h", &owner])
        .arg(bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(status.success(), "chown {name}");
    bundle
}

#[test]
fn a_pid_namespace_unshared_after_joins_holds_state_pid() {
    let Some(env) = userns_env() else { return };
    // A new user namespace joining a network namespace is entered after the join,
    // and the pid namespace is unshared then: the process forks into it.
    let net_owner = unique("netowner2");
    let bundle = env.bundle("netowner2", &["sleep", "60"], |_| {});
    env.ok(&[
        "run",
        "-d",
        "--bundle",
        bundle.to_str().unwrap(),
        &net_owner,
    ]);
    let net_pid = env.state(&net_owner)["pid"].as_i64().unwrap();

    let id = unique("unsharepid");
    let net_ns = format!("/proc/{net_pid}/ns/net");
    let bundle = userns_bundle(&env, "unsharepid", &["sleep", "60"], |c| {
        user_namespace(c, None, HOST_ID, HOST_ID);
        join_namespace(c, "network", &net_ns);
    });
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    assert_eq!(ns_of(pid, "net"), ns_of(net_pid, "net"));
    assert_ne!(ns_of(pid, "pid"), ns_of("self", "pid"));
    assert_eq!(ns_pids(pid)[1..], [1], "PID 1 of its own pid namespace");
    env.ok(&["start", &id]);
    env.ok(&["kill", &id, "KILL"]);
    wait_gone(pid);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    env.ok(&["delete", "--force", &net_owner]);
    assert!(env.root_is_empty());
}

#[test]
fn mappings_given_with_a_user_namespace_path_must_be_its_own() {
    let Some(env) = userns_env() else { return };
    let owner = unique("userowner");
    let bundle = userns_bundle(&env, "userowner", &["sleep", "60"], |c| {
        user_namespace(c, None, HOST_ID, HOST_ID);
    });
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &owner]);
    let owner_pid = env.state(&owner)["pid"].as_i64().unwrap();
    let user_ns = format!("/proc/{owner_pid}/ns/user");

    // Other host uids than the namespace maps: refused before anything is made.
    let id = unique("usermismatch");
    let bundle = userns_bundle(&env, "usermismatch", &["true"], |c| {
        user_namespace(c, Some(&user_ns), 200_000, HOST_ID);
    });
    let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    let message = format!(
        "linux.uidMappings (0 200000 65536) do not match user namespace {user_ns}, \
         whose uid_map is 0 100000 65536"
    );
    assert!(text.contains(&message), "{text}");
    let left: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [owner.as_str()], "state left behind");
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left behind");

    // The namespace's own mappings (as containerd sends them) are fine.
    let id = unique("usermatch");
    let bundle = userns_bundle(&env, "usermatch", &["sh", "-c", "exit 3"], |c| {
        user_namespace(c, Some(&user_ns), HOST_ID, HOST_ID);
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 3, "{text}");

    env.ok(&["delete", "--force", &owner]);
    assert!(env.root_is_empty());
}
