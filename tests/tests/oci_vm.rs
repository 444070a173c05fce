//! `berth-runtime` in vm mode beyond create/start/kill/delete: detached and
//! terminal exec proxied by a host relay, pause/resume, ps, events, update, the
//! VM sized from the spec's resources, and the set-up hooks that run in the
//! guest. Each test boots one or two VMs (about 2 s each under TCG).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::oci::{processes_mentioning, receive_fd, unique, vm_bundle, vm_env, Env, Podman};
use serde_json::Value;

/// A vm-mode bundle running `args`, edited by `edit`.
fn vm_bundle_with(env: &Env, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    env.bundle(name, args, |c| {
        c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
        edit(c);
    })
}

/// Orphaned relays become our children, so their exit status can be read as
/// containerd's shim and conmon (both subreapers) read it.
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Run berth-runtime with stdout and stderr appended to `out` (which detached
/// processes keep writing to); its exit code and how long it took.
fn rt_to(env: &Env, args: &[&str], out: &Path) -> (i32, Duration) {
    let file = File::options().create(true).append(true).open(out).unwrap();
    let started = Instant::now();
    let mut child = Command::new(&env.bin)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), started.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "berth-runtime {args:?} timed out"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `exec --detach --pid-file DIR/NAME.pid` of `command` in container `id`, its
/// output going to DIR/NAME.out; asserts it succeeded. The relay's pid (from the
/// pid file), the output file and how long exec took to return.
fn exec_detached(env: &Env, id: &str, name: &str, command: &[&str]) -> (i32, PathBuf, Duration) {
    let pid_file = env.dir.path().join(format!("{name}.pid"));
    let out = env.dir.path().join(format!("{name}.out"));
    let args = [
        &[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ][..],
        command,
    ]
    .concat();
    let (code, took) = rt_to(env, &args, &out);
    assert_eq!(code, 0, "{}", read(&out));
    (pid_from(&pid_file), out, took)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until `path` holds `needle`; its content.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read(path);
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reap `pid` (a child of ours, being a subreaper); its exit code, 128 + signal
/// when killed.
fn reap(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(
            rc >= 0,
            "waitpid {pid}: {}",
            std::io::Error::last_os_error()
        );
        if rc == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
        assert!(Instant::now() < deadline, "{pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid_from(path: &Path) -> i32 {
    read(path).trim().parse().unwrap()
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Accept one connection on the console socket and read the pty master it
/// carries until the other side is gone.
fn read_console(listener: &UnixListener) -> String {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nothing connected to the console socket"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    let mut master = File::from(receive_fd(&conn));
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll reads and writes the one pollfd in the local array.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        assert!(
            Instant::now() < deadline,
            "the console stayed open: {output:?}"
        );
        if ready <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            // EIO: every slave descriptor is closed.
            Ok(0) | Err(_) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&output).into_owned()
}

/// Create and start a vm container from `bundle`, its output going to `out`.
fn create_and_start(env: &Env, bundle: &Path, id: &str, out: &Path) {
    let (code, _) = rt_to(
        env,
        &["create", "--bundle", bundle.to_str().unwrap(), id],
        out,
    );
    assert_eq!(code, 0, "create: {}", read(out));
    env.ok(&["start", id]);
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn vm_exec_detached_and_with_a_terminal_is_proxied_by_a_relay() {
    let Some(env) = vm_env() else { return };
    become_subreaper();
    let id = unique("vmexec");
    let bundle = vm_bundle(&env, "vmexec", &["sleep", "600"]);
    let out = env.dir.path().join("vmexec.out");
    create_and_start(&env, &bundle, &id, &out);

    // Foreground exec latency (the VM is up: one Exec and one Wait round trip).
    let mut foreground = Vec::new();
    for _ in 0..5 {
        let (code, took) = rt_to(&env, &["exec", &id, "true"], &out);
        assert_eq!(code, 0, "{}", read(&out));
        foreground.push(took);
    }
    println!(
        "vm exec (foreground, true): median {:?}",
        median(foreground)
    );

    // Detached: the pid file names the relay, whose exit mirrors the process's
    // and which keeps relaying output after berth-runtime returned.
    let script = "echo out-$((6*7)); sleep 1; echo err >&2; exit 5";
    let (relay, exec_out, took) = exec_detached(&env, &id, "exec1", &["sh", "-c", script]);
    println!("vm exec --detach: returned after {took:?}");
    let cmdline = std::fs::read(format!("/proc/{relay}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("vm-relay"),
        "{cmdline:?}"
    );
    assert_eq!(reap(relay), 5);
    let text = read(&exec_out);
    assert!(text.contains("out-42") && text.contains("err"), "{text}");

    // A signal to the relay reaches the guest process.
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done";
    let (relay, exec_out, _) = exec_detached(&env, &id, "exec2", &["sh", "-c", script]);
    wait_for_text(&exec_out, "ready");
    kill(relay, libc::SIGTERM);
    assert_eq!(reap(relay), 42);
    assert!(read(&exec_out).contains("got-term"));

    // SIGKILL cannot be forwarded: the relay's guard kills the guest process.
    let (relay, _, _) = exec_detached(&env, &id, "exec3", &["sleep", "333"]);
    assert!(env.ok(&["ps", &id]).contains("sleep 333"));
    kill(relay, libc::SIGKILL);
    assert_eq!(reap(relay), 128 + libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.ok(&["ps", &id]).contains("sleep 333") {
        assert!(
            Instant::now() < deadline,
            "the guest process outlived its relay"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Detached with a terminal: the relay sends a pty to the console socket.
    let sock = env.dir.path().join("exec4.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let pid_file = env.dir.path().join("exec4.pid");
    let (code, _) = rt_to(
        &env,
        &[
            "exec",
            "-d",
            "-t",
            "--console-socket",
            sock.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
            "sh",
            "-c",
            "tty; [ -t 0 ] && [ -t 1 ] && echo on-a-tty; exit 3",
        ],
        &out,
    );
    assert_eq!(code, 0, "{}", read(&out));
    let console = read_console(&listener);
    assert!(console.contains("/dev/pts/"), "{console:?}");
    assert!(console.contains("on-a-tty"), "{console:?}");
    assert_eq!(reap(pid_from(&pid_file)), 3);

    // In the foreground with a terminal: berth-runtime relays and exits with the code.
    let sock = env.dir.path().join("exec5.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let console = std::thread::scope(|scope| {
        let runtime = scope.spawn(|| {
            env.rt(&[
                "exec",
                "--tty",
                "--console-socket",
                sock.to_str().unwrap(),
                &id,
                "sh",
                "-c",
                "[ -t 1 ] && echo foreground-tty; exit 4",
            ])
        });
        let console = read_console(&listener);
        let (code, text) = runtime.join().unwrap();
        assert_eq!(code, 4, "{text}");
        console
    });
    assert!(console.contains("foreground-tty"), "{console:?}");

    // A command that does not exist: a clear error, and no relay left behind.
    let (code, text) = env.rt(&["exec", "-d", &id, "no-such-command"]);
    assert_ne!(code, 0);
    assert!(text.contains("no-such-command"), "{text}");

    env.ok(&["delete", "--force", &id]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            processes_mentioning(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `MemTotal` in kB and the CPU count, as the container sees them.
fn guest_size(env: &Env, id: &str) -> (u64, u64) {
    let text = env.ok(&["exec", id, "sh", "-c", "grep MemTotal /proc/meminfo; nproc"]);
    let mut lines = text.lines();
    let mem = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let cpus = lines
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    println!("guest of {id}: MemTotal {mem} kB, {cpus} CPUs");
    (mem, cpus)
}

fn stats(env: &Env, id: &str) -> Value {
    let event: Value = serde_json::from_str(env.ok(&["events", "--stats", id]).trim()).unwrap();
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], id, "{event}");
    event["data"].clone()
}

#[test]
fn vm_pause_resume_ps_events_update_and_size_from_the_spec() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmres");
    let script = "trap '' USR1; while true; do echo tick; sleep 0.1; done";
    let bundle = vm_bundle_with(&env, "vmres", &["sh", "-c", script], |c| {
        c["linux"]["resources"]["memory"] = serde_json::json!({"limit": 256 << 20});
        c["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 150_000, "period": 100_000});
    });
    let out = env.dir.path().join("vmres.out");
    create_and_start(&env, &bundle, &id, &out);
    wait_for_text(&out, "tick");

    // 256 MiB + the overhead for the guest kernel and agent; 1.5 CPUs round up to 2.
    let (mem_kb, cpus) = guest_size(&env, &id);
    assert_eq!(cpus, 2);
    assert!(
        mem_kb > 256 * 1024 && mem_kb <= (256 + 64) * 1024,
        "MemTotal {mem_kb} kB"
    );

    // ps: guest pids, runc's two formats.
    let pids: Vec<i64> =
        serde_json::from_str(env.ok(&["ps", "--format", "json", &id]).trim()).unwrap();
    assert!(!pids.is_empty() && pids.iter().all(|p| *p > 0), "{pids:?}");
    let table = env.ok(&["ps", &id]);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let row = table
        .lines()
        .find(|l| l.contains(script))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.starts_with("root "), "{row}");
    let (code, text) = env.rt(&["ps", "--format", "yaml", &id]);
    assert_ne!(code, 0);
    assert!(text.contains("yaml"), "{text}");

    // events --stats: usage and the spec's limits, from the guest's cgroup.
    let data = stats(&env, &id);
    assert_eq!(data["memory"]["usage"]["limit"], 256u64 << 20, "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{data}"
    );
    assert!(data["pids"]["current"].as_u64().unwrap() >= 1, "{data}");
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap() > 0,
        "{data}"
    );

    // update: the new limits are what the guest's cgroup reports.
    env.ok(&["update", "--memory", "209715200", "--pids-limit", "20", &id]);
    let data = stats(&env, &id);
    assert_eq!(data["memory"]["usage"]["limit"], 209_715_200u64, "{data}");
    assert_eq!(data["pids"]["limit"], 20, "{data}");

    // pause: the container stops printing until resume.
    env.ok(&["pause", &id]);
    assert_eq!(env.state(&id)["status"], "paused");
    std::thread::sleep(Duration::from_millis(300));
    let frozen_at = read(&out).len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read(&out).len(), frozen_at, "output while paused");
    let (code, text) = env.rt(&["pause", &id]);
    assert_ne!(code, 0, "{text}");
    assert!(env.ok(&["ps", &id]).contains(script), "ps while paused");
    env.ok(&["resume", &id]);
    assert_eq!(env.state(&id)["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&out).len() == frozen_at {
        assert!(Instant::now() < deadline, "no output after resume");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = env.rt(&["resume", &id]);
    assert_ne!(code, 0, "{text}");

    // kill --all reaches every process in the guest cgroup: an exec'd sleep dies of
    // SIGUSR1, which the container's process ignores.
    env.ok(&["exec", "--detach", &id, "sleep", "444"]);
    assert!(env.ok(&["ps", &id]).contains("sleep 444"));
    env.ok(&["kill", "--all", &id, "USR1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.ok(&["ps", &id]).contains("sleep 444") {
        assert!(
            Instant::now() < deadline,
            "kill --all missed the exec'd process"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.state(&id)["status"], "running");

    // Paused, then killed: kill and delete still work.
    env.ok(&["pause", &id]);
    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    env.ok(&["kill", "--all", &id, "KILL"]);
    env.ok(&["delete", &id]);
    assert!(!env.root().join(&id).exists());
}

#[test]
fn vm_default_size_without_limits() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmsize");
    let bundle = vm_bundle(&env, "vmsize", &["sleep", "600"]);
    let out = env.dir.path().join("vmsize.out");
    create_and_start(&env, &bundle, &id, &out);
    let (mem_kb, cpus) = guest_size(&env, &id);
    assert_eq!(cpus, 1);
    assert!(mem_kb <= 256 * 1024, "MemTotal {mem_kb} kB");
    let data = stats(&env, &id);
    assert_eq!(data["memory"]["usage"]["limit"], u64::MAX, "{data}");
    env.ok(&["delete", "--force", &id]);
}

/// A hook running busybox's sh with `script`; `bin` is where busybox is.
fn sh_hook(bin: &str, script: &str) -> Value {
    serde_json::json!({
        "path": format!("{bin}/sh"),
        "args": ["sh", "-c", script],
        "env": [format!("PATH={bin}")],
    })
}

#[test]
fn vm_create_and_start_container_hooks_run_in_the_guest() {
    let Some(env) = vm_env() else { return };
    let id = unique("vmhooks");
    // Before pivot_root the container's root filesystem is mounted at
    // /run/berth/ID/rootfs in the guest; after it, at /.
    let guest_root = format!("/run/berth/{id}/rootfs");
    let marker = env.dir.path().join("host-poststart");
    let bundle = vm_bundle_with(&env, "vmhooks", &["sleep", "600"], |c| {
        c["root"]["readonly"] = Value::Bool(false);
        c["hooks"] = serde_json::json!({
            "createContainer": [sh_hook(
                &format!("{guest_root}/bin"),
                &format!(
                    "cat > {guest_root}/created-state; readlink /proc/self/ns/mnt > {guest_root}/created-mnt"
                ),
            )],
            "startContainer": [sh_hook(
                "/bin",
                "cat > /started-state; readlink /proc/self/ns/mnt > /started-mnt",
            )],
            "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", marker.display())]}],
        });
    });
    let out = env.dir.path().join("vmhooks.out");
    let (code, _) = rt_to(
        &env,
        &["create", "--bundle", bundle.to_str().unwrap(), &id],
        &out,
    );
    assert_eq!(code, 0, "create: {}", read(&out));
    // As with runc, the container's process exists once created.
    let pids: Vec<i64> =
        serde_json::from_str(env.ok(&["ps", "--format", "json", &id]).trim()).unwrap();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(env.state(&id)["status"], "created");
    env.ok(&["start", &id]);
    let text = env.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /created-state; echo; cat /started-state; echo; readlink /proc/1/ns/mnt; cat /created-mnt /started-mnt",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for state in &lines[..2] {
        let state: Value = serde_json::from_str(state).unwrap();
        assert_eq!(state["id"], id.as_str(), "{state}");
        assert_eq!(state["status"], "created", "{state}");
        // The guest pid of the container's process.
        assert!(state["pid"].as_i64().unwrap() > 1, "{state}");
        assert_eq!(
            PathBuf::from(state["bundle"].as_str().unwrap()),
            bundle.canonicalize().unwrap(),
            "{state}"
        );
    }
    // Both hooks ran in the container's mount namespace, in the guest.
    assert_eq!(lines[2], lines[3], "{text}");
    assert_eq!(lines[2], lines[4], "{text}");
    // poststart ran on the host.
    let state: Value = serde_json::from_str(&wait_for_text(&marker, "running")).unwrap();
    assert_eq!(state["id"], id.as_str());
    env.ok(&["delete", "--force", &id]);

    // A failing createContainer hook fails create (it runs then, as runc runs it)
    // and leaves nothing behind.
    let id = unique("vmhookfail");
    let bundle = vm_bundle_with(&env, "vmhookfail", &["sleep", "600"], |c| {
        c["hooks"] = serde_json::json!({"createContainer": [{"path": "/init", "args": ["init", "--no-such-option"]}]});
    });
    let (code, text) = env.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("CreateContainer hook /init"), "{text}");
    assert!(!env.root().join(&id).exists(), "state left behind");
    assert!(
        processes_mentioning(&id).is_empty(),
        "{:?}",
        processes_mentioning(&id)
    );
}

#[test]
fn vm_podman_exec_pause_and_unpause() {
    let Some(env) = vm_env() else { return };
    let Some(podman) = Podman::new(&env) else {
        return;
    };
    let podman = |args: &[&str]| podman.run(args);
    let name = unique("podvm");
    let (code, text) = podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--annotation",
        "io.berth.runtime=vm",
        Podman::IMAGE,
        "sleep",
        "600",
    ]);
    assert_eq!(code, 0, "{text}");
    // conmon runs `exec --detach --pid-file` and reads the exit code from the pid
    // it names: the relay's.
    let (code, text) = podman(&["exec", &name, "sh", "-c", "echo in-the-vm; exit 3"]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("in-the-vm"), "{text}");
    let (code, text) = podman(&["exec", "-t", &name, "sh", "-c", "tty"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(podman(&["pause", &name]).0, 0);
    let (_, text) = podman(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(text.trim(), "paused");
    assert_eq!(podman(&["unpause", &name]).0, 0);
    let (_, text) = podman(&["inspect", "--format", "{{.State.Status}}", &name]);
    assert_eq!(text.trim(), "running");
    let (code, text) = podman(&["rm", "--force", "--time", "0", &name]);
    assert_eq!(code, 0, "{text}");
}
