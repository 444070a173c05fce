//! `--runtime=vm`: containers in microVMs (QEMU microvm with TCG here, which needs no KVM).
//!
//! Needs root, the guest kernel and initramfs (scripts/build-guest-kernel.sh,
//! scripts/build-initramfs.sh, or BERTH_VM_KERNEL / BERTH_VM_INITRAMFS), qemu-system-x86_64
//! and vhost-device-vsock (scripts/install-vm-deps.sh); skips with the reason otherwise.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::archive::{image_archive, tar, Entry};
use berth_e2e::{
    busybox_tarball, find_program, have_program, require_root, wait_until, Berth, RunOpts,
};

/// The runtime and hypervisor flags every test uses: TCG boots a Linux guest on any host.
const VM: [&str; 3] = ["--runtime=vm", "--hypervisor=qemu", "--accel=tcg"];

/// Generous: a TCG boot takes seconds, more when tests run in parallel on few cores.
const SLOW: Duration = Duration::from_secs(180);

fn cache_file(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"))
        .join("berth")
        .join(name)
}

/// Why the vm tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let kernel = cache_file("BERTH_VM_KERNEL", "vmlinux");
    if !kernel.is_file() {
        return Some(format!(
            "no guest kernel at {} (scripts/build-guest-kernel.sh)",
            kernel.display()
        ));
    }
    let initramfs = cache_file("BERTH_VM_INITRAMFS", "initramfs.cpio.gz");
    if !initramfs.is_file() {
        return Some(format!(
            "no agent initramfs at {} (scripts/build-initramfs.sh)",
            initramfs.display()
        ));
    }
    if !have_program("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 is not installed (scripts/install-vm-deps.sh)".into());
    }
    let cargo_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/vhost-device-vsock"))
        .unwrap_or_default();
    if find_program("vhost-device-vsock").is_none()
        && !Path::new("/usr/local/bin/vhost-device-vsock").is_file()
        && !cargo_bin.is_file()
    {
        return Some("vhost-device-vsock is not installed (scripts/install-vm-deps.sh)".into());
    }
    None
}

macro_rules! require_vm {
    () => {
        require_root!();
        if let Some(reason) = missing() {
            println!("skipped: {reason}");
            return;
        }
    };
}

fn slow() -> RunOpts {
    RunOpts {
        timeout: Some(SLOW),
        ..RunOpts::default()
    }
}

/// `berth run --runtime=vm --hypervisor=qemu --accel=tcg ARGS...` (ARGS start with run's options).
fn run_vm(b: &Berth, args: &[&str]) -> berth_e2e::Output {
    let mut full = vec!["run"];
    full.extend_from_slice(&VM);
    full.extend_from_slice(args);
    b.run_with(&full, slow())
}

fn run_vm_detached(b: &Berth, args: &[&str]) -> String {
    let mut full = vec!["run", "-d"];
    full.extend_from_slice(&VM);
    full.extend_from_slice(args);
    let out = b.run_with(&full, slow());
    out.assert_success();
    out.out().trim().to_string()
}

/// Processes whose working directory or command line mentions `root`.
fn processes_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_err() || name == std::process::id().to_string() {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && (cwd.starts_with(&root) || cmdline.contains(&root)) {
            found.push(format!("{name}: {cmdline} (cwd {cwd})"));
        }
    }
    found
}

fn is_alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
}

#[test]
fn vm_run_echo() {
    require_vm!();
    let b = Berth::with_busybox();
    let out = run_vm(&b, &["--rm", "busybox", "echo", "hi"]);
    out.assert_success();
    assert_eq!(out.stdout, "hi\n", "{out}");
}

#[test]
fn vm_exit_code_and_stderr_pass_through() {
    require_vm!();
    let b = Berth::with_busybox();
    let out = run_vm(
        &b,
        &[
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    out.assert_code(7);
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err"), "{out}");
    // A command that does not exist: Docker's 127.
    let out = run_vm(&b, &["--rm", "busybox", "/no/such/program"]);
    out.assert_code(127);
}

#[test]
fn vm_env_workdir_user_and_stdin() {
    require_vm!();
    let b = Berth::with_busybox();
    let out = run_vm(
        &b,
        &[
            "--rm",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "busybox",
            "sh",
            "-c",
            "echo $FOO; pwd; id -u; echo $HOME",
        ],
    );
    out.assert_success();
    assert_eq!(out.stdout, "bar\n/tmp\n65534\n/home\n", "{out}");

    let mut full = vec!["run", "-i", "--rm"];
    full.extend_from_slice(&VM);
    full.extend_from_slice(&["busybox", "sh", "-c", "tr a-z A-Z; echo done"]);
    let out = b.run_with(
        &full,
        RunOpts {
            stdin: Some(b"hello vm\n".to_vec()),
            ..slow()
        },
    );
    out.assert_success();
    assert_eq!(out.stdout, "HELLO VM\ndone\n", "{out}");
}

#[test]
fn vm_layers_whiteouts_and_opaque_dirs() {
    require_vm!();
    let b = Berth::new();
    let rootfs = std::fs::read(busybox_tarball()).unwrap();
    let middle = tar(&[
        Entry::Dir("data/"),
        Entry::File("data/keep", b"kept\n"),
        Entry::File("data/gone", b"should be hidden\n"),
        Entry::Dir("opq/"),
        Entry::File("opq/old", b"old\n"),
    ]);
    let top = tar(&[
        Entry::Dir("data/"),
        Entry::File("data/.wh.gone", b""),
        Entry::Dir("opq/"),
        Entry::File("opq/.wh..wh..opq", b""),
        Entry::File("opq/new", b"new\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layered.tar");
    std::fs::write(
        &file,
        image_archive(
            "layered:v1",
            &[rootfs, middle, top],
            &["sh", "-c", "ls /data /opq; cat /data/keep"],
        ),
    )
    .unwrap();
    b.ok(&["load", "-i", file.to_str().unwrap()]);
    let out = run_vm(&b, &["--rm", "layered:v1"]);
    out.assert_success();
    assert_eq!(out.stdout, "/data:\nkeep\n\n/opq:\nnew\nkept\n", "{out}");

    // One read-only disk image per layer, built once and shared by the next VM.
    let images = b.root().join("layer-images");
    let list = || {
        let mut v: Vec<_> = std::fs::read_dir(&images)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let first = list();
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|n| n.ends_with(".ext4")), "{first:?}");
    let mtime = |n: &str| {
        std::fs::metadata(images.join(n))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = first.iter().map(|n| mtime(n)).collect();
    run_vm(&b, &["--rm", "layered:v1"]).assert_success();
    assert_eq!(list(), first);
    let after: Vec<_> = first.iter().map(|n| mtime(n)).collect();
    assert_eq!(before, after, "layer images are not rebuilt");
}

fn drive(b: &Berth, args: &[&str], typed: &str) -> berth_e2e::Output {
    b.drive_pty(
        args,
        typed,
        Duration::from_secs(60),
        Duration::from_secs(150),
    )
}

#[test]
fn vm_run_it_gets_a_terminal() {
    require_vm!();
    if !have_program("python3") {
        println!("skipped: python3 is needed to drive a pseudo-terminal");
        return;
    }
    let b = Berth::with_busybox();
    let mut args = vec!["run", "-it", "--rm"];
    args.extend_from_slice(&VM);
    args.extend_from_slice(&["busybox", "sh"]);
    let out = drive(&b, &args, "tty; stty size; exit 3\n");
    out.assert_code(3);
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    assert!(!out.stdout.contains("not a tty"), "{out}");
    assert!(
        out.stdout.contains("24 80"),
        "the window size reaches the guest: {out}"
    );
}

#[test]
fn vm_exec() {
    require_vm!();
    let b = Berth::with_busybox();
    run_vm_detached(&b, &["--name", "v", "busybox", "sleep", "1000"]);
    assert!(wait_until(SLOW, || b.status("v") == "running"));
    let out = b.run_with(
        &["exec", "-e", "X=1", "v", "sh", "-c", "echo x=$X; exit 5"],
        slow(),
    );
    out.assert_code(5);
    assert_eq!(out.stdout, "x=1\n", "{out}");
    // The exec runs beside the main process, in the same VM.
    let out = b.run_with(&["exec", "v", "ps"], slow());
    out.assert_success();
    assert!(out.stdout.contains("sleep 1000"), "{out}");
    let out = b.run_with(
        &[
            "exec",
            "-u",
            "user",
            "-w",
            "/home",
            "v",
            "sh",
            "-c",
            "id -u; pwd",
        ],
        slow(),
    );
    assert_eq!(out.stdout, "1000\n/home\n", "{out}");
    if have_program("python3") {
        let out = drive(&b, &["exec", "-it", "v", "sh"], "tty; exit 4\n");
        out.assert_code(4);
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
    }
    b.ok(&["rm", "-f", "v"]);
}

#[test]
fn vm_logs_follow() {
    require_vm!();
    let b = Berth::with_busybox();
    let id = run_vm_detached(
        &b,
        &[
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 1; done",
        ],
    );
    let out = b.run_with(&["logs", "-f", &id], slow());
    out.assert_success();
    assert_eq!(out.stdout, "line1\nline2\nline3\n", "{out}");
    assert_eq!(b.status(&id), "exited");
    assert_eq!(b.inspect(&id)["State"]["ExitCode"], 0);
}

#[test]
fn vm_kill_and_stop() {
    require_vm!();
    let b = Berth::with_busybox();
    run_vm_detached(&b, &["--name", "k", "busybox", "sleep", "1000"]);
    assert!(wait_until(SLOW, || b.status("k") == "running"));
    let vmm = b.inspect("k")["VM"]["Pid"].as_i64().unwrap();
    assert!(vmm > 0 && is_alive(vmm));
    b.ok(&["kill", "k"]);
    b.wait_for_status("k", "exited", SLOW);
    assert_eq!(b.inspect("k")["State"]["ExitCode"], 137);
    assert!(
        wait_until(Duration::from_secs(20), || !is_alive(vmm)),
        "the VM is gone"
    );

    // stop: SIGTERM reaches a process that handles it.
    run_vm_detached(
        &b,
        &[
            "--name",
            "s",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do sleep 0.2; done",
        ],
    );
    assert!(wait_until(SLOW, || b.status("s") == "running"));
    std::thread::sleep(Duration::from_secs(1));
    b.run_with(&["stop", "-t", "30", "s"], slow())
        .assert_success();
    assert_eq!(b.inspect("s")["State"]["ExitCode"], 42);
    b.ok(&["rm", "k", "s"]);
    assert!(wait_until(Duration::from_secs(20), || processes_under(
        b.root()
    )
    .is_empty()));
}

#[test]
fn vm_rm_leaves_nothing_behind() {
    require_vm!();
    let b = Berth::with_busybox();
    run_vm(&b, &["--rm", "busybox", "true"]).assert_success();
    let procs = processes_under(b.root());
    assert!(
        procs.is_empty(),
        "no VMM or vsock daemon is left: {procs:?}"
    );
    let containers: Vec<_> = std::fs::read_dir(b.root().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        containers.is_empty(),
        "no state folder is left: {containers:?}"
    );
    // Only the shared layer images stay: nothing per container.
    let images: Vec<_> = std::fs::read_dir(b.root().join("layer-images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(b.all_ids().is_empty());
}

#[test]
fn vm_refuses_volumes() {
    require_vm!();
    let b = Berth::with_busybox();
    let out = run_vm(&b, &["--rm", "-v", "/tmp:/data", "busybox", "true"]);
    out.assert_code(125);
    assert!(
        out.stderr.contains("--volume") && out.stderr.contains("--runtime=vm"),
        "{out}"
    );
    assert!(b.all_ids().is_empty(), "nothing was created: {out}");
}

#[test]
fn vm_inspect_and_a_vm_that_dies() {
    require_vm!();
    let b = Berth::with_busybox();
    run_vm_detached(&b, &["--name", "i", "busybox", "sleep", "1000"]);
    assert!(wait_until(SLOW, || b.status("i") == "running"));
    let info = b.inspect("i");
    assert_eq!(info["HostConfig"]["Runtime"], "vm");
    assert_eq!(info["HostConfig"]["Hypervisor"], "qemu");
    assert_eq!(info["HostConfig"]["Accel"], "tcg");
    assert_eq!(info["VM"]["Hypervisor"], "qemu");
    assert_eq!(info["VM"]["Accel"], "tcg");
    let vmm = info["VM"]["Pid"].as_i64().unwrap();
    assert_eq!(info["State"]["Pid"].as_i64().unwrap(), vmm);
    let cmdline = std::fs::read(format!("/proc/{vmm}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("qemu-system-x86_64"));
    let socket = PathBuf::from(info["VM"]["VsockSocket"].as_str().unwrap());
    assert!(socket.exists(), "{socket:?}");
    let serial = PathBuf::from(info["VM"]["SerialLog"].as_str().unwrap());
    assert!(serial.is_file(), "{serial:?}");

    // The VM dies under the container: it is reported as exited 255, the serial log kept.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(vmm as i32, libc::SIGKILL) };
    b.wait_for_status("i", "exited", SLOW);
    let info = b.inspect("i");
    assert_eq!(info["State"]["ExitCode"], 255);
    assert!(
        info["State"]["Error"]
            .as_str()
            .unwrap()
            .contains("serial.log"),
        "{info}"
    );
    assert!(serial.is_file(), "the serial log is kept");
    assert!(!socket.exists());
    assert!(wait_until(Duration::from_secs(20), || processes_under(
        b.root()
    )
    .is_empty()));
}

#[test]
fn vm_default_hypervisor_is_probed_once() {
    require_vm!();
    let b = Berth::with_busybox();
    let started = Instant::now();
    let out = b.run_with(
        &["create", "--runtime=vm", "--name", "d", "busybox", "true"],
        slow(),
    );
    out.assert_success();
    let probe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.root().join("vm-probe.json")).unwrap()).unwrap();
    let info = b.inspect("d");
    let (hv, accel) = (
        info["HostConfig"]["Hypervisor"]
            .as_str()
            .unwrap()
            .to_string(),
        info["HostConfig"]["Accel"].as_str().unwrap().to_string(),
    );
    // The choice is the fastest that the probe found working.
    let expected = if probe["builtin"].is_null() {
        ("builtin", "kvm")
    } else if probe["qemu_kvm"].is_null() {
        ("qemu", "kvm")
    } else {
        ("qemu", "tcg")
    };
    assert_eq!((hv.as_str(), accel.as_str()), expected, "{probe}");
    println!("probe took {:?}: {probe}", started.elapsed());
    // The verdict is cached.
    let again = Instant::now();
    b.run_with(&["create", "--runtime=vm", "busybox", "true"], slow())
        .assert_success();
    assert!(
        again.elapsed() < Duration::from_secs(5),
        "{:?}",
        again.elapsed()
    );
    let out = b.run_with(&["start", "-a", "d"], slow());
    out.assert_success();
}

/// The guest is a cgroup v2 system (this host is v1): the limits must hold there too.
#[test]
fn vm_cgroup_v2_limits_hold_in_the_guest() {
    require_vm!();
    let b = Berth::with_busybox();
    // ~100 MB in the shell's memory against a 32 MiB limit: the guest's OOM killer ends it.
    let hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo done ${#x}";
    let out = run_vm(
        &b,
        &[
            "--name", "hog", "--memory", "32m", "busybox", "sh", "-c", hog,
        ],
    );
    out.assert_code(137);
    assert!(!out.stdout.contains("done"), "{out}");
    assert_eq!(b.inspect("hog")["State"]["OOMKilled"], true);

    // 20 background sleeps against a limit of 10 processes: fork fails in the guest.
    let forks = "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done; echo started $i; wait";
    let out = run_vm(
        &b,
        &["--rm", "--pids-limit", "10", "busybox", "sh", "-c", forks],
    );
    assert!(
        out.stderr.contains("fork") || out.stderr.contains("Resource temporarily unavailable"),
        "fork must fail under the pids limit: {out}"
    );
    let unlimited = run_vm(&b, &["--rm", "busybox", "sh", "-c", forks]);
    assert!(
        unlimited.stdout.contains("started 20"),
        "without the limit all 20 start: {unlimited}"
    );
}

/// `--storage-opt size=` gives the writable layer its own disk, which outlives the VM.
#[test]
fn vm_storage_opt_gives_a_scratch_disk_that_survives_a_restart() {
    require_vm!();
    let b = Berth::with_busybox();
    // Each run reports what the previous run left, then leaves its own mark.
    let script = "cat /mark 2>/dev/null || echo none; echo kept > /mark";
    let out = run_vm(
        &b,
        &[
            "--name",
            "disk",
            "--storage-opt",
            "size=64m",
            "busybox",
            "sh",
            "-c",
            script,
        ],
    );
    out.assert_success();
    assert_eq!(out.stdout, "none\n", "{out}");
    let id = b.inspect("disk")["Id"].as_str().unwrap().to_string();
    let scratch = b.root().join("containers").join(&id).join("scratch.ext4");
    assert_eq!(std::fs::metadata(&scratch).unwrap().len(), 64 << 20);

    // Started again in a new VM, the container finds its own write (a tmpfs would not).
    b.ok(&["start", "disk"]);
    assert!(wait_until(Duration::from_secs(120), || b.status("disk") == "exited"));
    assert_eq!(b.ok(&["logs", "disk"]).stdout, "none\nkept\n");

    b.ok(&["rm", "disk"]);
    assert!(!scratch.exists(), "rm removes the scratch disk");

    // Not in ns mode: there the writable layer is a host folder with no size.
    let out = b.run(&[
        "run",
        "--rm",
        "--runtime=ns",
        "--storage-opt",
        "size=1g",
        "busybox",
        "true",
    ]);
    out.assert_code(125);
    assert!(out.stderr.contains("--storage-opt"), "{out}");
    let out = b.run(&[
        "run",
        "--rm",
        "--runtime=ns",
        "--storage-opt",
        "quota=1g",
        "busybox",
        "true",
    ]);
    out.assert_code(125);
}
