//! Containers spawned for real. They need root; without it they print why and pass.
//! Everything runs in one test function: `spawn` wants a single-threaded caller,
//! so no other test may run beside it.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use berth_agent::cgroups::Cgroup;
use berth_agent::{spawn, spawn_exec, ContainerSetup, ExecSetup, Rootfs, SpawnError, Stdio};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxMemory, LinuxNamespaceType, LinuxResources, Spec};

fn busybox_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).expect("mkdir bin");
    fs::create_dir_all(dir.join("data")).expect("mkdir data");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "hostname", "sleep", "ls", "id", "kill"] {
        symlink("busybox", dir.join("bin").join(applet)).expect("symlink");
    }
}

fn spec(args: &[&str], cgroups_path: Option<&str>) -> Spec {
    let mut spec = berth_agent::spec::default_spec();
    spec.set_hostname(Some("box".into()));
    if let Some(process) = spec.process_mut() {
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(cgroups_path.map(PathBuf::from));
    }
    spec
}

struct Output {
    stdin: OwnedFd,
    stdout: OwnedFd,
}

fn pipes() -> (Stdio, Output) {
    let (in_r, in_w) = nix::unistd::pipe().expect("pipe");
    let (out_r, out_w) = nix::unistd::pipe().expect("pipe");
    let err_w = out_w.try_clone().expect("dup");
    let stdio = Stdio::Fds {
        stdin: in_r,
        stdout: out_w,
        stderr: err_w,
    };
    (
        stdio,
        Output {
            stdin: in_w,
            stdout: out_r,
        },
    )
}

fn finish(pid: Pid, out: Output) -> (String, i32) {
    drop(out.stdin);
    let mut text = String::new();
    fs::File::from(out.stdout)
        .read_to_string(&mut text)
        .expect("read output");
    let code = match waitpid(pid, None).expect("waitpid") {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        other => panic!("unexpected wait status {other:?}"),
    };
    (text, code)
}

fn run(rootfs: Rootfs, spec: Spec, init: bool) -> Result<(String, i32), SpawnError> {
    let (stdio, out) = pipes();
    let spawned = spawn(ContainerSetup {
        id: "t".into(),
        spec,
        rootfs,
        stdio,
        init,
        no_pivot: false,
    })?;
    Ok(finish(spawned.pid, out))
}

/// `spec` with its `typ` namespace joined at `path`, or left out (`None`).
fn with_namespace(mut spec: Spec, typ: LinuxNamespaceType, path: Option<String>) -> Spec {
    if let Some(linux) = spec.linux_mut() {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|ns| ns.typ() != typ);
        if let Some(path) = path {
            let mut ns = oci_spec::runtime::LinuxNamespace::default();
            ns.set_typ(typ);
            ns.set_path(Some(PathBuf::from(path)));
            namespaces.push(ns);
        }
        linux.set_namespaces(Some(namespaces));
    }
    spec
}

fn ns_link(pid: Pid, name: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{name}")).expect("namespace link")
}

/// Field 4 of /proc/PID/stat.
fn parent_of(pid: Pid) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ')
        .nth(1)
        .expect("ppid")
        .parse()
        .expect("number")
}

/// The mountinfo line of / (its propagation fields included).
fn root_mount() -> String {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a mount on /")
        .to_owned()
}

fn mounted_under(dir: &Path) -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy();
    mountinfo.lines().any(|l| l.contains(dir.as_ref()))
}

#[test]
fn containers_as_root() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: spawning containers needs root");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        println!("skipped: /bin/busybox (busybox-static) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let path = || Rootfs::Path(root.clone());
    let script = "echo $$; hostname; (echo box > /proc/sys/kernel/hostname) 2>/dev/null && echo rw || echo ro; exit 3";

    // PID 1 is the user process; hostname, read-only /proc/sys, exit status.
    let (out, code) = run(path(), spec(&["sh", "-c", script], None), false).expect("spawn");
    assert_eq!((out.as_str(), code), ("1\nbox\nro\n", 3));

    // With the mini init the user process is PID 2 and its status is passed on.
    let (out, code) = run(path(), spec(&["sh", "-c", script], None), true).expect("spawn init");
    assert_eq!((out.as_str(), code), ("2\nbox\nro\n", 3));

    // A signal-killed user process under init gives 128+signal.
    let (_, code) = run(path(), spec(&["sh", "-c", "kill -9 $$"], None), true).expect("spawn");
    assert_eq!(code, 137);

    // A terminal becomes the controlling tty of the user process (init keeps none).
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let tty_script =
        "[ -t 0 ] && [ -t 1 ] && echo tty; read -r a b c d e f g rest < /proc/$$/stat; echo $$ $g";
    let spawned = spawn(ContainerSetup {
        id: "tty".into(),
        spec: spec(&["sh", "-c", tty_script], None),
        rootfs: path(),
        stdio: Stdio::Terminal { slave: pty.slave },
        init: true,
        no_pivot: false,
    })
    .expect("spawn with a terminal");
    let mut text = Vec::new();
    let mut master = fs::File::from(pty.master);
    let mut buf = [0u8; 256];
    // The master reads EIO once every slave descriptor is closed.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("tty"), "{text}");
    let fields: Vec<&str> = lines.next().expect("pid line").split(' ').collect();
    assert_eq!(fields[0], "2");
    assert_ne!(fields[1], "0", "no controlling tty: {text}");
    assert!(matches!(
        waitpid(spawned.pid, None),
        Ok(WaitStatus::Exited(_, 0))
    ));

    // Command not found and not executable.
    let err = run(path(), spec(&["nosuchcmd"], None), false).expect_err("not found");
    assert_eq!(err.exit_code(), 127, "{err}");
    assert_eq!(
        err.to_string(),
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    let err = run(path(), spec(&["/data"], None), true).expect_err("not executable");
    assert_eq!(err.exit_code(), 126, "{err}");

    // A cgroup with a memory limit, seen from the host while the container waits.
    let id = format!("berth-agent-test-{}", std::process::id());
    let cgroups_path = format!("/{id}/c1");
    let mut spec_cg = spec(&["sh", "-c", "read x; echo done"], Some(&cgroups_path));
    let mut memory = LinuxMemory::default();
    memory.set_limit(Some(64 << 20));
    let mut resources = LinuxResources::default();
    resources.set_memory(Some(memory));
    if let Some(linux) = spec_cg.linux_mut() {
        linux.set_resources(Some(resources));
    }
    let (stdio, out) = pipes();
    let container = spawn(ContainerSetup {
        id: "c1".into(),
        spec: spec_cg,
        rootfs: path(),
        stdio,
        init: true,
        no_pivot: false,
    })
    .expect("spawn with cgroup");
    let cgroup = Cgroup::open(&cgroups_path).expect("open cgroup");
    let limit_file = match cgroup.version() {
        berth_agent::cgroups::CgroupVersion::V1 => "memory.limit_in_bytes",
        berth_agent::cgroups::CgroupVersion::V2 => "memory.max",
    };
    let dir = cgroup
        .dirs()
        .into_iter()
        .find(|d| {
            d.to_string_lossy().contains("memory")
                || cgroup.version() == berth_agent::cgroups::CgroupVersion::V2
        })
        .expect("memory dir");
    assert_eq!(
        fs::read_to_string(dir.join(limit_file))
            .expect("limit")
            .trim(),
        "67108864"
    );
    assert!(cgroup.pids().expect("pids").contains(&container.pid));
    assert_eq!(cgroup.oom_kill_count().expect("oom"), 0);

    // exec joins the running container: its pid namespace, hostname and cgroup.
    let mut process = berth_agent::spec::default_spec()
        .process()
        .clone()
        .expect("process");
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo $$; hostname; exit 5".into(),
    ]));
    let (exec_stdio, exec_out) = pipes();
    let exec = spawn_exec(ExecSetup {
        container_pid: container.pid,
        process: process.clone(),
        cgroups_path: Some(cgroups_path.clone()),
        stdio: exec_stdio,
        seccomp: None,
    })
    .expect("exec");
    let (text, code) = finish(exec.pid, exec_out);
    let mut lines = text.lines();
    let pid_in_container: i32 = lines.next().expect("pid").parse().expect("number");
    assert!(pid_in_container > 2 && pid_in_container < 100, "{text}");
    assert_eq!((lines.next(), code), (Some("box"), 5));
    process.set_args(Some(vec!["nosuchcmd".into()]));
    let err = spawn_exec(ExecSetup {
        container_pid: container.pid,
        process,
        cgroups_path: None,
        stdio: Stdio::Inherit,
        seccomp: None,
    })
    .expect_err("exec of a missing command");
    assert_eq!(err.exit_code(), 127);

    nix::unistd::write(&out.stdin, b"go\n").expect("release");
    let (text, code) = finish(container.pid, out);
    assert_eq!((text.as_str(), code), ("done\n", 0));
    cgroup.destroy().expect("destroy");
    assert!(cgroup.dirs().iter().all(|d| !d.exists()));
    let _ = Cgroup::open(&format!("/{id}")).and_then(|c| c.destroy());

    // Overlay rootfs: writes land in upper, nothing stays mounted on the host.
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    let target = tmp.path().join("merged");
    for d in [&upper, &work, &target] {
        fs::create_dir(d).expect("mkdir");
    }
    let overlay = Rootfs::Overlay {
        lower: vec![root.clone()],
        upper: upper.clone(),
        work,
        target: target.clone(),
    };
    let (out, code) = run(
        overlay,
        spec(&["sh", "-c", "echo hi > /f; cat /f"], None),
        false,
    )
    .expect("overlay");
    assert_eq!((out.as_str(), code), ("hi\n", 0));
    assert_eq!(fs::read_to_string(upper.join("f")).expect("upper"), "hi\n");
    assert!(!root.join("f").exists());
    assert!(fs::read_dir(&target).expect("target").next().is_none());
    assert!(!mounted_under(tmp.path()), "mounts left behind");

    joined_pid_namespace(&path);
    no_mount_namespace(&root, tmp.path());
}

/// A container joining another's pid namespace by path: the pid returned is the
/// process inside it (not one left outside by setns), and it is our child.
fn joined_pid_namespace(path: &dyn Fn() -> Rootfs) {
    let (stdio, first_out) = pipes();
    let first = spawn(ContainerSetup {
        id: "pid-owner".into(),
        spec: spec(&["sh", "-c", "read x"], None),
        rootfs: path(),
        stdio,
        init: false,
        no_pivot: false,
    })
    .expect("spawn the pid namespace's owner");
    let joining = with_namespace(
        spec(&["sh", "-c", "echo $$; read x; exit 7"], None),
        LinuxNamespaceType::Pid,
        Some(format!("/proc/{}/ns/pid", first.pid)),
    );
    let (stdio, out) = pipes();
    let second = spawn(ContainerSetup {
        id: "pid-joiner".into(),
        spec: joining,
        rootfs: path(),
        stdio,
        init: false,
        no_pivot: false,
    })
    .expect("spawn into a joined pid namespace");
    assert_eq!(ns_link(second.pid, "pid"), ns_link(first.pid, "pid"));
    assert_ne!(
        ns_link(second.pid, "pid"),
        ns_link(nix::unistd::getpid(), "pid")
    );
    assert_eq!(parent_of(second.pid), nix::unistd::getpid().as_raw());
    assert!(
        !nix::sys::prctl::get_child_subreaper().expect("prctl"),
        "the caller is a subreaper again only if it was one"
    );
    nix::unistd::write(&out.stdin, b"go\n").expect("release");
    let (text, code) = finish(second.pid, out);
    let inside: i32 = text.trim().parse().expect("a pid");
    assert!(inside > 1, "{text}");
    assert_eq!(code, 7);
    nix::unistd::write(&first_out.stdin, b"go\n").expect("release");
    assert_eq!(finish(first.pid, first_out).1, 0);
}

/// Without a mount namespace the process shares our mount table, chrooted into
/// its root; nothing is mounted for it, and what needs mounting is refused.
fn no_mount_namespace(root: &Path, tmp: &Path) {
    let plain = |args: &[&str]| {
        let mut spec = with_namespace(spec(args, None), LinuxNamespaceType::Mount, None);
        if let Some(linux) = spec.linux_mut() {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
        spec
    };
    let root_before = root_mount();
    let (stdio, out) = pipes();
    let spawned = spawn(ContainerSetup {
        id: "no-mount-ns".into(),
        spec: plain(&["sh", "-c", "read x; ls /; hostname"]),
        rootfs: Rootfs::Path(root.to_path_buf()),
        stdio,
        init: false,
        no_pivot: false,
    })
    .expect("spawn without a mount namespace");
    assert_eq!(
        ns_link(spawned.pid, "mnt"),
        ns_link(nix::unistd::getpid(), "mnt")
    );
    assert_ne!(
        ns_link(spawned.pid, "uts"),
        ns_link(nix::unistd::getpid(), "uts")
    );
    assert_eq!(
        fs::read_link(format!("/proc/{}/root", spawned.pid)).expect("root"),
        root
    );
    assert!(!mounted_under(root), "a mount on the host's table");
    nix::unistd::write(&out.stdin, b"go\n").expect("release");
    let (text, code) = finish(spawned.pid, out);
    // `ls /` lists the root directory (earlier containers left mount points there).
    let mut names: Vec<String> = fs::read_dir(root)
        .expect("rootfs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!((text, code), (format!("{}\nbox\n", names.join("\n")), 0));
    assert!(!mounted_under(root), "a mount left behind");
    assert_eq!(root_mount(), root_before, "the propagation of / changed");

    // An overlay root (the guest agent's) is mounted, entered and detached from
    // our table at once: it lives on as the process's root only.
    let dirs: Vec<PathBuf> = ["nomnt-upper", "nomnt-work", "nomnt-merged"]
        .iter()
        .map(|d| tmp.join(d))
        .collect();
    for d in &dirs {
        fs::create_dir(d).expect("mkdir");
    }
    let overlay = Rootfs::Overlay {
        lower: vec![root.to_path_buf()],
        upper: dirs[0].clone(),
        work: dirs[1].clone(),
        target: dirs[2].clone(),
    };
    let (stdio, out) = pipes();
    let spawned = spawn(ContainerSetup {
        id: "no-mount-ns-overlay".into(),
        spec: plain(&["sh", "-c", "read x; echo hi > /f; cat /f; ls /bin/busybox"]),
        rootfs: overlay,
        stdio,
        init: false,
        no_pivot: false,
    })
    .expect("spawn an overlay root without a mount namespace");
    assert!(!mounted_under(tmp), "the overlay stayed on our mount table");
    nix::unistd::write(&out.stdin, b"go\n").expect("release");
    let (text, code) = finish(spawned.pid, out);
    assert_eq!((text.as_str(), code), ("hi\n/bin/busybox\n", 0));
    assert_eq!(
        fs::read_to_string(dirs[0].join("f")).expect("upper"),
        "hi\n"
    );
    assert!(fs::read_dir(&dirs[2]).expect("target").next().is_none());
    assert_eq!(root_mount(), root_before, "the propagation of / changed");

    let mut masked = plain(&["true"]);
    if let Some(linux) = masked.linux_mut() {
        linux.set_masked_paths(Some(vec!["/proc/kcore".into()]));
    }
    let err = run(Rootfs::Path(root.to_path_buf()), masked, false).expect_err("masked paths");
    assert_eq!(
        err.to_string(),
        "invalid container spec: linux.maskedPaths needs a mount namespace"
    );
}
