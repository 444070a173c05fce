//! `berth-runtime` with user namespaces (uid/gid mappings, joined by path),
//! `--preserve-fds` and `--no-pivot`, and podman's `--uidmap` on top of it.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::oci::{cgroup_dirs, process_alive, unique, Env, Podman};
use serde_json::{json, Value};

/// The first host id the tests map container root to, and how many ids.
const HOST_ID: u32 = 100_000;
const IDS: u32 = 65_536;

/// A user namespace mapping container ids 0.. to `HOST_ID`..
fn add_user_namespace(config: &mut Value) {
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let map = json!([{"containerID": 0, "hostID": HOST_ID, "size": IDS}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
}

/// Drop a namespace type from the spec.
fn without_namespace(config: &mut Value, typ: &str) {
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != typ);
}

/// Add a read-write bind mount of host `dir` at `/data`.
fn bind_data(config: &mut Value, dir: &Path) {
    config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/data",
        "type": "bind",
        "source": dir.to_str().unwrap(),
        "options": ["rbind", "rw"],
    }));
}

/// Give `path` (recursively, links themselves) to the container's root, as the
/// caller of a runtime must: runc does not chown the rootfs.
fn chown_to_container_root(path: &Path) {
    let owner = format!("{HOST_ID}:{HOST_ID}");
    let status = Command::new("chown")
        .args(["-R", "-h", &owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {}", path.display());
}

/// A test environment whose directories the mapped root can walk through (a
/// temporary directory is 0700, and the set-up runs as the mapped root).
fn userns_env() -> Option<Env> {
    let env = Env::new()?;
    if !Path::new("/proc/self/uid_map").exists() {
        println!("skipped: the kernel has no user namespaces");
        return None;
    }
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(env)
}

/// A bundle with a user namespace, its rootfs owned by the mapped root, and a
/// `/data` directory (returned) shared with the host.
fn userns_bundle(
    env: &Env,
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut Value),
) -> (PathBuf, PathBuf) {
    let data = env.dir.path().join(format!("{name}-data"));
    std::fs::create_dir(&data).unwrap();
    let bundle = env.bundle(name, &["sh", "-c", script], |c| {
        add_user_namespace(c);
        bind_data(c, &data);
        edit(c);
    });
    std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_container_root(&bundle.join("rootfs"));
    chown_to_container_root(&data);
    (bundle, data)
}

/// Wait until the container wrote `data/done`.
fn wait_done(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("done").exists() {
        assert!(Instant::now() < deadline, "the container never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The Uid: or Gid: line of /proc/PID/status, as its four numbers.
fn status_ids(pid: i64, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

fn stop_and_delete(env: &Env, id: &str) {
    env.ok(&["kill", id, "KILL"]);
    env.wait_status(id, "stopped");
    env.ok(&["delete", id]);
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let Some(env) = userns_env() else { return };
    let id = unique("userns");
    let script = "id -u > /data/uid; id -g > /data/gid; cat /proc/self/uid_map > /data/uid_map; \
                  cat /proc/self/gid_map > /data/gid_map; \
                  echo x > /dev/null && echo ok > /data/null; \
                  touch /data/made-inside; ls /sys/class/net > /data/net; \
                  touch /data/done; exec sleep 60";
    let (bundle, data) = userns_bundle(&env, "userns", script, |_| {});
    env.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(!cgroup_dirs(&id).is_empty(), "no cgroup for {id}");
    env.ok(&["start", &id]);
    wait_done(&data);
    let pid = env.state(&id)["pid"].as_i64().unwrap();

    // Root inside...
    assert_eq!(read(&data.join("uid")), "0");
    assert_eq!(read(&data.join("gid")), "0");
    for map in ["uid_map", "gid_map"] {
        let fields: Vec<String> = read(&data.join(map))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(fields, ["0", "100000", "65536"], "{map}");
    }
    // ...an unprivileged uid outside.
    let host = HOST_ID.to_string();
    assert_eq!(status_ids(pid, "Uid:"), [host.as_str(); 4]);
    assert_eq!(status_ids(pid, "Gid:"), [host.as_str(); 4]);
    let made = std::fs::metadata(data.join("made-inside")).unwrap();
    assert_eq!((made.uid(), made.gid()), (HOST_ID, HOST_ID));
    // /dev/null is the host's node, bound in (mknod is not allowed here).
    assert_eq!(read(&data.join("null")), "ok");
    // The container's own network namespace belongs to the user namespace, so
    // sysfs is its own: only its loopback shows.
    assert_eq!(read(&data.join("net")), "lo");

    // An exec'd process joins the user namespace too: root inside, 100000 outside.
    let exec = env.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; grep Uid: /proc/self/status; touch /data/made-by-exec",
    ]);
    let lines: Vec<&str> = exec.lines().collect();
    assert_eq!(lines.first().copied(), Some("0"), "exec output: {exec}");
    assert!(exec.contains("100000"), "exec output: {exec}");
    let by_exec = std::fs::metadata(data.join("made-by-exec")).unwrap();
    assert_eq!((by_exec.uid(), by_exec.gid()), (HOST_ID, HOST_ID));

    stop_and_delete(&env, &id);
    assert!(env.root_is_empty());
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn without_a_network_namespace_sysfs_is_the_hosts_read_only() {
    let Some(env) = userns_env() else { return };
    let id = unique("usersys");
    let script = "ls /sys/class/net > /data/net; \
                  (touch /sys/kernel/x 2>/dev/null && echo rw || echo ro) > /data/sys; \
                  touch /data/done";
    let (bundle, data) = userns_bundle(&env, "usersys", script, |c| {
        without_namespace(c, "network");
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
    let mut host_net: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host_net.sort();
    let seen: Vec<String> = read(&data.join("net")).lines().map(str::to_owned).collect();
    assert_eq!(seen, host_net);
    assert_eq!(read(&data.join("sys")), "ro");
    assert!(env.root_is_empty());
}

#[test]
fn bad_mappings_fail_clearly_and_leave_nothing() {
    let Some(env) = userns_env() else { return };
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "size0",
            |c| c["linux"]["uidMappings"][0]["size"] = json!(0),
            "linux.uidMappings[0] has size 0",
        ),
        (
            "overlap",
            |c| {
                c["linux"]["gidMappings"] = json!([
                    {"containerID": 0, "hostID": HOST_ID, "size": 10},
                    {"containerID": 5, "hostID": 300000, "size": 10},
                ])
            },
            "linux.gidMappings[0] and linux.gidMappings[1] overlap in container ids",
        ),
        (
            "nouserns",
            |c| without_namespace(c, "user"),
            "linux.uidMappings is set but linux.namespaces has no user namespace",
        ),
        (
            "nomaps",
            |c| c["linux"]["gidMappings"] = json!([]),
            "a new user namespace needs linux.gidMappings",
        ),
    ];
    for (name, edit, message) in cases {
        let id = unique(name);
        let (bundle, _) = userns_bundle(&env, name, "exit 0", edit);
        let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(code, 0, "{name}: {text}");
        assert!(text.contains(message), "{name}: {text}");
        assert!(env.root_is_empty(), "{name}: state left behind");
        assert!(cgroup_dirs(&id).is_empty(), "{name}: cgroup left behind");
    }
}

#[test]
fn a_user_namespace_joined_by_path_keeps_its_mappings() {
    let Some(env) = userns_env() else { return };
    let first = unique("userns-a");
    let (bundle, _) = userns_bundle(&env, "userns-a", "exec sleep 60", |_| {});
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &first]);
    let first_pid = env.state(&first)["pid"].as_i64().unwrap();

    let second = unique("userns-b");
    let user_ns = format!("/proc/{first_pid}/ns/user");
    let script = "id -u > /data/uid; cat /proc/self/uid_map > /data/uid_map; \
                  readlink /proc/self/ns/user > /data/ns; touch /data/done";
    let (bundle, data) = userns_bundle(&env, "userns-b", script, |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "user" {
                ns["path"] = json!(user_ns);
            }
        }
        c["linux"]["uidMappings"] = json!([]);
        c["linux"]["gidMappings"] = json!([]);
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &second]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(read(&data.join("uid")), "0");
    let fields: Vec<String> = read(&data.join("uid_map"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(fields, ["0", "100000", "65536"]);
    let joined = std::fs::read_link(&user_ns).unwrap();
    assert_eq!(read(&data.join("ns")), joined.to_str().unwrap());

    env.ok(&["delete", "--force", &first]);
    assert!(env.root_is_empty());
}

#[test]
fn a_new_user_namespace_can_join_a_hosts_network_namespace() {
    let Some(env) = userns_env() else { return };
    // A plain container (no user namespace) owns a network namespace with only lo.
    let plain = unique("netowner");
    let bundle = env.bundle("netowner", &["sleep", "60"], |_| {});
    env.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &plain]);
    let plain_pid = env.state(&plain)["pid"].as_i64().unwrap();
    let net_ns = format!("/proc/{plain_pid}/ns/net");

    let id = unique("joinnet");
    let script = "id -u > /data/uid; readlink /proc/self/ns/net > /data/net; \
                  cat /proc/self/uid_map > /data/uid_map; touch /data/done";
    let (bundle, data) = userns_bundle(&env, "joinnet", script, |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(net_ns);
            }
        }
    });
    let (code, text) = env.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(read(&data.join("uid")), "0");
    let joined = std::fs::read_link(&net_ns).unwrap();
    assert_eq!(read(&data.join("net")), joined.to_str().unwrap());
    let fields: Vec<String> = read(&data.join("uid_map"))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(fields, ["0", "100000", "65536"]);

    env.ok(&["delete", "--force", &plain]);
    assert!(env.root_is_empty());
}

/// Run berth-runtime with `file` as its descriptor 3; returns the exit code and
/// output (written to a file: a created container keeps its copy of stdout open).
fn rt_with_fd3(env: &Env, args: &[&str], file: &File) -> (i32, String) {
    let fd = file.as_raw_fd();
    let out_path = env.dir.path().join(format!("{}.out", args[args.len() - 1]));
    let out = File::create(&out_path).unwrap();
    let mut cmd = Command::new(&env.bin);
    cmd.arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which
    // are async-signal-safe. dup2 clears close-on-exec on the new descriptor; when
    // the file already is descriptor 3, fcntl clears it.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth-runtime {args:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status.code().unwrap_or(-1), read(&out_path))
}

#[test]
fn preserve_fds_passes_descriptors_through_create_and_start() {
    let Some(env) = Env::new() else { return };
    let script = "echo through-fd-3 >&3 2>/dev/null; echo done";
    for (preserve, expected) in [("1", "through-fd-3\n"), ("0", "")] {
        let id = unique(&format!("fds{preserve}"));
        let bundle = env.bundle(&format!("fds{preserve}"), &["sh", "-c", script], |_| {});
        let target = env.dir.path().join(format!("fd3-{preserve}.txt"));
        let file = File::create(&target).unwrap();
        let args = [
            "create",
            "--preserve-fds",
            preserve,
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ];
        let (code, text) = rt_with_fd3(&env, &args, &file);
        assert_eq!(code, 0, "{text}");
        drop(file);
        // create has exited; the process waiting on exec.fifo still holds the descriptor.
        env.ok(&["start", &id]);
        env.wait_status(&id, "stopped");
        env.ok(&["delete", &id]);
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            expected,
            "--preserve-fds {preserve}"
        );
    }
    // A descriptor that is not open cannot be passed on.
    let id = unique("fdsmissing");
    let bundle = env.bundle("fdsmissing", &["true"], |_| {});
    let file = File::open("/dev/null").unwrap();
    let args = [
        "create",
        "--preserve-fds",
        "5",
        "--bundle",
        bundle.to_str().unwrap(),
        &id,
    ];
    let (code, text) = rt_with_fd3(&env, &args, &file);
    assert_ne!(code, 0);
    assert!(
        text.contains("--preserve-fds 5: descriptor 4 is not open"),
        "{text}"
    );
    assert!(env.root_is_empty());
}

/// The `root` field (field 4) of the mountinfo line for `/`.
fn root_mount_source(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(3).map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn no_pivot_moves_the_root_into_place() {
    let Some(env) = Env::new() else { return };
    let id = unique("nopivot");
    let bundle = env.bundle(
        "nopivot",
        &[
            "sh",
            "-c",
            "cat /marker; cat /proc/self/mountinfo; test -e /proc/1/comm && echo proc-ok; \
             ls / | grep -c . ; exit 4",
        ],
        |_| {},
    );
    std::fs::write(bundle.join("rootfs/marker"), "container-root\n").unwrap();
    let (code, text) = env.rt(&[
        "run",
        "--no-pivot",
        "--bundle",
        bundle.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(code, 4, "{text}");
    assert!(text.starts_with("container-root\n"), "{text}");
    assert!(text.contains("proc-ok"), "{text}");
    // / is the bundle's rootfs directory (as the host filesystem names it).
    let source = root_mount_source(&text);
    assert!(
        source.ends_with("/nopivot/rootfs"),
        "/ is {source:?}: {text}"
    );
    let entries: usize = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let expected = std::fs::read_dir(bundle.join("rootfs")).unwrap().count();
    assert_eq!(entries, expected, "{text}");
    assert!(env.root_is_empty());
}

#[test]
fn podman_runs_a_user_namespace_with_berth_runtime() {
    let Some(env) = userns_env() else { return };
    let Some(podman) = Podman::new(&env) else {
        return;
    };
    let args = [
        &["run", "--rm", "--network", "none"][..],
        &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"],
        &Podman::ULIMITS,
        &[Podman::IMAGE, "sh", "-c", "id -u; cat /proc/self/uid_map"],
    ]
    .concat();
    let out = podman.output(&args);
    assert!(
        out.status.success(),
        "podman run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields, ["0", "0", "100000", "65536"], "{stdout}");
}

/// Processes left by a test must be gone once their container is deleted.
#[allow(dead_code)]
fn assert_gone(pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}
