//! berth-runtime plugged into Docker (Debian's docker.io, dockerd 20.10) the way a user
//! would: a daemon.json whose `runtimes` name `berth` (ns mode) and `berth-vm` (the same
//! binary with `runtimeArgs: ["--runtime-mode", "vm"]`), then `docker run --runtime=...`.
//!
//! Each test starts a private dockerd (its own data root, exec root, socket and cgroup
//! parent, no bridge, no iptables); dockerd starts its own containerd, whose runc shim
//! (io.containerd.runc.v2) drives berth-runtime as it would runc. Dropping the daemon
//! stops it and sweeps what a failed test may have left: containers, shims, VMs, mounts
//! under the data root and the cgroups under the parent.
#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::oci::{process_alive, runtime_bin, vm_unavailable};
use berth_e2e::{
    archive, busybox_tarball, drive_pty, find_program, mounts_under, require_root, run_command,
    wait_until, Output, RunOpts,
};
use serde_json::Value;

const IMAGE: &str = "berth-e2e/busybox:latest";

/// A container that exits 0 on SIGTERM (as PID 1 it would otherwise ignore it).
const STOPPABLE: &str = "trap 'exit 0' TERM; while :; do sleep 0.1; done";

/// A private dockerd with berth-runtime registered as `berth` and `berth-vm`.
struct Dockerd {
    child: Child,
    /// The daemon's files (removed on drop unless something stays mounted there).
    dir: PathBuf,
    docker: PathBuf,
    runtime: PathBuf,
    /// Absolute cgroup path every container's cgroup goes under.
    cgroup_parent: String,
}

impl Dockerd {
    /// None (after printing why) when not root or something is missing.
    fn start() -> Option<Dockerd> {
        if !require_root() {
            return None;
        }
        let Some(dockerd) = find_program("dockerd") else {
            println!("skipped: dockerd is not installed (apt-get install -y docker.io)");
            return None;
        };
        let Some(docker) = docker_client(&dockerd) else {
            println!("skipped: the docker client is not installed (apt-get install -y docker.io)");
            return None;
        };
        let Some(runtime) = runtime_bin() else {
            println!("skipped: target/debug/berth-runtime is not built (cargo build --workspace)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-docker-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let name = dir.file_name().unwrap().to_string_lossy();
        let cgroup_parent = format!("/berth-e2e-{name}");
        let config = serde_json::json!({
            "runtimes": {
                "berth": {"path": runtime},
                "berth-vm": {"path": runtime, "runtimeArgs": ["--runtime-mode", "vm"]},
            },
            "cgroup-parent": cgroup_parent,
            // Its identity key, which would otherwise go to /etc/docker/key.json.
            "deprecated-key-path": dir.join("key.json"),
        });
        let config_path = dir.join("daemon.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let storage = if filesystems.contains("\toverlay\n") {
            "overlay2"
        } else {
            "vfs"
        };
        let log = File::create(dir.join("dockerd.log")).unwrap();
        let d = &dir;
        let child = Command::new(&dockerd)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--config-file")
            .arg(&config_path)
            .args(["--storage-driver", storage])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-masq=false", "--userland-proxy=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Dockerd {
            child,
            dir,
            docker,
            runtime,
            cgroup_parent,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !daemon.docker(&["version"]).success() {
            let exited = daemon.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "dockerd did not come up ({exited:?}):\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon.load_busybox();
        Some(daemon)
    }

    fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker -H <our socket> args...`.
    fn docker_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(&self.docker);
        cmd.arg("-H").arg(self.socket()).args(args);
        run_command(
            cmd,
            RunOpts {
                stdin: stdin.map(<[u8]>::to_vec),
                timeout: Some(Duration::from_secs(120)),
                ..RunOpts::default()
            },
        )
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.docker_with(args, None)
    }

    /// `docker args...`, which must succeed; its trimmed stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.success(),
            "{out}\n--- dockerd log (tail) ---\n{}",
            tail(&self.log(), 30)
        );
        out.out().to_string()
    }

    /// `docker load` of the busybox rootfs as a one-layer image.
    fn load_busybox(&self) {
        let layer = std::fs::read(busybox_tarball()).unwrap();
        let archive_path = self.dir.join("busybox-image.tar");
        std::fs::write(
            &archive_path,
            archive::image_archive(IMAGE, &[layer], &["sh"]),
        )
        .unwrap();
        let out = self.ok(&["load", "-i", archive_path.to_str().unwrap()]);
        assert!(out.contains(&format!("Loaded image: {IMAGE}")), "{out}");
    }

    /// The berth-runtime root dockerd's containerd passes (`--root`) for container `id`,
    /// once berth-runtime keeps state for it there.
    fn runtime_root_of(&self, id: &str) -> Option<PathBuf> {
        runtime_roots(&self.dir.join("exec"))
            .into_iter()
            .find(|root| root.join(id).is_dir())
    }

    /// `berth-runtime state` for container `id`, as dockerd's runtime root holds it.
    #[track_caller]
    fn runtime_state(&self, id: &str) -> Value {
        let root = self
            .runtime_root_of(id)
            .unwrap_or_else(|| panic!("berth-runtime keeps no state for {id}"));
        let out = Command::new(&self.runtime)
            .arg("--root")
            .arg(&root)
            .args(["state", id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth-runtime state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Container `id`'s cgroup directories (one per v1 hierarchy).
    fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(self.cgroup_parent.trim_start_matches('/')).join(id))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// `docker run -d` of [`STOPPABLE`] with `runtime` and `options`; its full id once
    /// running.
    fn run_detached(&self, runtime: &str, options: &[&str]) -> String {
        let runtime = format!("--runtime={runtime}");
        let mut args = vec!["run", "-d", &runtime, "--network", "none"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, "sh", "-c", STOPPABLE]);
        let id = self.ok(&args);
        assert_eq!(id.len(), 64, "docker run -d prints the id: {id}");
        self.wait_running(&id);
        id
    }

    #[track_caller]
    fn wait_running(&self, id: &str) {
        let running = wait_until(Duration::from_secs(30), || {
            self.docker(&["inspect", "-f", "{{.State.Running}}", id])
                .out()
                .eq("true")
        });
        assert!(running, "{id} never ran:\n{}", tail(&self.log(), 30));
    }

    /// `docker run --rm -it IMAGE sh` on a 24x80 pseudo-terminal, typing `typed` at the
    /// prompt.
    fn drive_it(&self, runtime: &str, typed: &str) -> Output {
        let runtime = format!("--runtime={runtime}");
        self.drive(
            &[
                "run",
                "--rm",
                "-it",
                &runtime,
                "--network",
                "none",
                IMAGE,
                "sh",
            ],
            typed,
        )
    }

    /// `docker args...` on a 24x80 pseudo-terminal, typing `typed` at the prompt.
    fn drive(&self, args: &[&str], typed: &str) -> Output {
        let socket = self.socket();
        let args = [&["-H", socket.as_str()][..], args].concat();
        drive_pty(
            &self.docker,
            &args,
            typed,
            Duration::from_secs(20),
            Duration::from_secs(60),
        )
    }

    /// `docker pause` and `unpause`, checked against berth-runtime's state.
    fn pause_and_resume(&self, id: &str) {
        self.ok(&["pause", id]);
        assert_eq!(self.runtime_state(id)["status"], "paused");
        assert_eq!(self.ok(&["inspect", "-f", "{{.State.Paused}}", id]), "true");
        self.ok(&["unpause", id]);
        assert_eq!(self.runtime_state(id)["status"], "running");
    }

    /// `docker stop` (SIGTERM, which STOPPABLE turns into exit 0) then `docker rm`; checks
    /// the exit code came back and that berth-runtime let go of the container.
    fn stop_and_remove(&self, id: &str) {
        let started = Instant::now();
        self.ok(&["stop", "-t", "30", id]);
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "stop needed dockerd's SIGKILL: SIGTERM never reached the container"
        );
        assert_eq!(
            self.ok(&["inspect", "-f", "{{.State.ExitCode}}", id]),
            "0",
            "the trap's exit code comes back through the runtime"
        );
        self.ok(&["rm", id]);
        assert!(
            self.runtime_root_of(id).is_none(),
            "berth-runtime's state for {id} outlives docker rm"
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let dir = self.dir.clone();
        // Containers first, while the daemon can still take them down properly.
        let ids = quiet(
            Command::new(&self.docker)
                .arg("-H")
                .arg(self.socket())
                .args(["ps", "-aq"]),
            Duration::from_secs(30),
        );
        if !ids.trim().is_empty() {
            quiet(
                Command::new(&self.docker)
                    .arg("-H")
                    .arg(self.socket())
                    .args(["rm", "-f"])
                    .args(ids.split_whitespace()),
                Duration::from_secs(60),
            );
        }
        // SIGTERM: dockerd stops its containerd and unmounts its data root.
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever survived: containers berth-runtime still knows, then every process
        // that runs from or names the temporary directory (containerd, shims, relays,
        // VMMs), then mounts and cgroups.
        for root in runtime_roots(&dir.join("exec")) {
            for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                if entry.path().join("state.json").is_file() {
                    quiet(
                        Command::new(&self.runtime)
                            .arg("--root")
                            .arg(&root)
                            .args(["delete", "--force"])
                            .arg(entry.file_name()),
                        Duration::from_secs(30),
                    );
                }
            }
        }
        remove_shim_sockets(&dir.join("exec"));
        kill_processes_under(&dir);
        for mount in mounts_under(&dir).iter().rev() {
            if let Ok(c) = CString::new(mount.as_os_str().as_encoded_bytes()) {
                // SAFETY: c is a NUL-terminated path that outlives the call.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        for hierarchy in cgroup_hierarchies() {
            remove_cgroup_tree(&hierarchy.join(self.cgroup_parent.trim_start_matches('/')));
        }
        // Never delete through a mount that could not be detached.
        if mounts_under(&dir).is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The docker client from dockerd's own release (several may be installed: prefer the
/// one whose version is dockerd's).
fn docker_client(dockerd: &Path) -> Option<PathBuf> {
    let version = |bin: &Path| {
        let out = Command::new(bin).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "Docker version 20.10.24+dfsg1, build 5d6db84"
        text.split_whitespace()
            .nth(2)
            .map(|v| v.trim_end_matches(',').to_string())
    };
    let wanted = version(dockerd);
    let path = std::env::var("PATH").unwrap_or_default();
    let candidates: Vec<PathBuf> = path
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("docker"))
        .filter(|p| p.is_file())
        .collect();
    candidates
        .iter()
        .find(|c| wanted.is_some() && version(c) == wanted)
        .or(candidates.first())
        .cloned()
}

/// The runtime roots (`--root`) containerd's runc shim passes: `EXEC_ROOT/runtime-*/moby`.
fn runtime_roots(exec_root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(exec_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("runtime-"))
        .map(|e| e.path().join("moby"))
        .filter(|p| p.is_dir())
        .collect()
}

/// containerd 1.6 puts shim sockets in /run/containerd/s whatever its state directory;
/// a shim killed rather than shut down leaves its socket there. Each bundle names its
/// shim's socket in `address`.
fn remove_shim_sockets(exec_root: &Path) {
    let bundles = exec_root.join("containerd/daemon/io.containerd.runtime.v2.task/moby");
    for entry in std::fs::read_dir(bundles).into_iter().flatten().flatten() {
        if let Ok(address) = std::fs::read_to_string(entry.path().join("address")) {
            if let Some(path) = address.trim().strip_prefix("unix://") {
                if path.starts_with("/run/containerd/s/") {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// SIGKILL every process whose command line names `dir` or whose working directory is
/// under it.
fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    for _ in 0..3 {
        let mut killed = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(pid) = name.parse::<libc::pid_t>() else {
                continue;
            };
            if name == me || !process_alive(i64::from(pid)) {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let names_dir = String::from_utf8_lossy(&cmdline).contains(&needle);
            let runs_there =
                std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
            if names_dir || runs_there {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed = true;
            }
        }
        if !killed {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup (v1 controllers and, where
/// mounted, the unified one), or /sys/fs/cgroup itself on a pure v2 host.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// rmdir a cgroup and its children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Run a clean-up command, never for longer than `limit` and never panicking; its stdout.
fn quiet(cmd: &mut Command, limit: Duration) -> String {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    let deadline = Instant::now() + limit;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn docker_run_with_berth_runtime() {
    let Some(d) = Dockerd::start() else { return };
    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime=berth",
        "--network",
        "none",
        IMAGE,
        "echo",
        "hi",
    ]);
    out.assert_success();
    assert_eq!(out.out(), "hi", "{out}");

    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime=berth",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo to-stderr >&2; exit 7",
    ]);
    out.assert_code(7);
    assert!(out.stderr.contains("to-stderr"), "{out}");

    let out = d.docker_with(
        &[
            "run",
            "--rm",
            "-i",
            "--runtime=berth",
            "--network",
            "none",
            IMAGE,
            "cat",
        ],
        Some(b"piped through docker\n"),
    );
    out.assert_success();
    assert_eq!(out.out(), "piped through docker", "{out}");
}

#[test]
fn docker_detached_exec_stop_rm_with_berth_runtime() {
    let Some(d) = Dockerd::start() else { return };
    let id = d.run_detached("berth", &["--memory", "64m"]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.HostConfig.Runtime}}", &id]),
        "berth"
    );
    // berth-runtime, not runc, holds the container: its state names docker's pid.
    let pid: i64 = d
        .ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .parse()
        .unwrap();
    let state = d.runtime_state(&id);
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"].as_i64(), Some(pid), "{state}");
    // The cgroup is where dockerd asked for it (cgroup parent / container id).
    let cgroups = d.cgroup_dirs(&id);
    assert!(!cgroups.is_empty(), "no cgroup {}/{id}", d.cgroup_parent);
    if let Some(memory) = cgroups
        .iter()
        .find(|c| c.join("memory.limit_in_bytes").exists())
    {
        let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (64 << 20).to_string(), "docker run --memory");
        // docker update: containerd's runc shim runs `berth-runtime update --resources -`.
        d.ok(&["update", "--memory", "96m", "--memory-swap", "192m", &id]);
        let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(
            limit.trim(),
            (96 << 20).to_string(),
            "docker update --memory"
        );
        if let Ok(memsw) = std::fs::read_to_string(memory.join("memory.memsw.limit_in_bytes")) {
            assert_eq!(
                memsw.trim(),
                (192 << 20).to_string(),
                "docker update --memory-swap"
            );
        }
    }
    let self_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        self_cgroup.contains(&format!("{}/{id}", d.cgroup_parent)),
        "{self_cgroup}"
    );

    let out = d.docker(&["exec", &id, "sh", "-c", "echo from exec; exit 3"]);
    out.assert_code(3);
    assert_eq!(out.out(), "from exec", "{out}");
    let ps = d.ok(&["exec", &id, "ps", "-o", "pid,args"]);
    assert!(
        ps.contains(STOPPABLE),
        "exec runs beside the container: {ps}"
    );
    if find_program("python3").is_some() {
        let out = d.drive(&["exec", "-it", &id, "sh"], "tty; exit 6\n");
        out.assert_code(6);
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
    }
    let top = d.ok(&["top", &id]);
    assert!(
        top.contains(&pid.to_string()),
        "docker top lists the host pid: {top}"
    );

    d.pause_and_resume(&id);
    d.ok(&["restart", "-t", "30", &id]);
    d.wait_running(&id);
    let pid: i64 = d
        .ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .parse()
        .unwrap();
    assert_eq!(d.runtime_state(&id)["pid"].as_i64(), Some(pid));

    d.stop_and_remove(&id);
    assert!(!process_alive(pid), "the container's process outlives rm");
    assert_eq!(
        d.cgroup_dirs(&id),
        Vec::<PathBuf>::new(),
        "cgroups outlive rm"
    );
}

#[test]
fn docker_run_it_with_berth_runtime() {
    let Some(d) = Dockerd::start() else { return };
    if find_program("python3").is_none() {
        println!("skipped: python3 is needed to drive a pseudo-terminal");
        return;
    }
    let out = d.drive_it("berth", "tty; stty size; exit 5\n");
    out.assert_code(5);
    assert!(out.stdout.contains("/dev/pts/0"), "{out}");
    // The harness's terminal is 24x80; docker resizes the container's to match.
    assert!(out.stdout.contains("24 80"), "{out}");
}

#[test]
fn docker_run_with_berth_runtime_vm_mode() {
    require_root!();
    if let Some(why) = vm_unavailable() {
        println!("skipped: {why}");
        return;
    }
    let Some(d) = Dockerd::start() else { return };
    let host = std::fs::read_to_string("/proc/version").unwrap();
    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime=berth-vm",
        "--network",
        "none",
        IMAGE,
        "cat",
        "/proc/version",
    ]);
    out.assert_success();
    let guest = out.out();
    assert!(guest.starts_with("Linux version "), "{out}");
    assert_ne!(
        guest,
        host.trim_end(),
        "the container saw the host's kernel"
    );

    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime=berth-vm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo to-stderr >&2; exit 7",
    ]);
    out.assert_code(7);
    assert!(out.stderr.contains("to-stderr"), "{out}");

    if find_program("python3").is_some() {
        let out = d.drive_it("berth-vm", "tty; stty size; exit 5\n");
        out.assert_code(5);
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        assert!(out.stdout.contains("24 80"), "{out}");
    }

    let id = d.run_detached("berth-vm", &[]);
    let out = d.docker(&["exec", &id, "sh", "-c", "cat /proc/version; exit 3"]);
    out.assert_code(3);
    assert_eq!(out.out(), guest, "exec runs in the same VM");
    let root = d.runtime_root_of(&id).unwrap();
    let vmms = processes_running_in(&root.join(&id));
    assert!(!vmms.is_empty(), "no VMM runs from the container's state");
    d.pause_and_resume(&id);
    if find_program("python3").is_some() {
        let out = d.drive(&["exec", "-it", &id, "sh"], "tty; uname -r; exit 6\n");
        out.assert_code(6);
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        let release = guest.split_whitespace().nth(2).unwrap();
        assert!(
            out.stdout.contains(release),
            "exec -it runs in the VM: {out}"
        );
    }
    d.stop_and_remove(&id);
    let gone = wait_until(Duration::from_secs(10), || {
        vmms.iter().all(|pid| !process_alive(*pid))
    });
    assert!(gone, "the VM outlives docker rm: {vmms:?}");
}

/// Pids of the processes whose working directory is `dir` (the VMM and its helpers run
/// from the container's state directory).
fn processes_running_in(dir: &Path) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i64 = e.file_name().to_string_lossy().parse().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            (cwd == dir).then_some(pid)
        })
        .collect()
}
