//! `containerd-shim-berth-v2` under a private containerd 1.6, driven with `ctr`:
//! run with output, exit code passthrough, exec/kill/delete of a detached task,
//! a tty run, and a task annotated to run in a microVM.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::{
    busybox_tarball, drive_pty, find_program, require_root, run_command, wait_until, workspace_dir,
    RunOpts, IMAGE_PATH,
};
use sha2::{Digest, Sha256};

const RUNTIME: &str = "io.containerd.berth.v2";
const IMAGE: &str = "berth.test/busybox:latest";

/// The directory holding the shim and berth-runtime binaries under test.
fn bin_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(profile) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
    {
        candidates.push(profile);
    }
    candidates.push(workspace_dir().join("target/debug"));
    candidates
        .into_iter()
        .find(|d| d.join("containerd-shim-berth-v2").is_file() && d.join("berth-runtime").is_file())
}

/// A private containerd, killed when dropped.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    ctr: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep ' {}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An OCI image archive of the busybox rootfs tarball, tagged `latest`.
fn oci_archive(path: &Path) {
    let layer = std::fs::read(busybox_tarball()).unwrap();
    let layer_digest = format!("sha256:{}", sha256(&layer));
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Env": [format!("PATH={IMAGE_PATH}")], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", sha256(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    })
    .to_string()
    .into_bytes();
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: String, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&layer, &config, &manifest] {
        add(format!("blobs/sha256/{}", sha256(blob)), blob);
    }
    builder.finish().unwrap();
}

impl Containerd {
    /// None (after printing why) when not root or something is missing.
    fn start() -> Option<Containerd> {
        if !require_root() {
            return None;
        }
        let (Some(containerd), Some(ctr)) = (find_program("containerd"), find_program("ctr"))
        else {
            println!("skipped: containerd and ctr are needed (apt-get install containerd)");
            return None;
        };
        let Some(bins) = bin_dir() else {
            println!("skipped: containerd-shim-berth-v2 is not built (cargo build --workspace)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new(containerd)
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { child, dir, ctr };
        assert!(
            wait_until(Duration::from_secs(30), || c.ctr(&["version"]).0 == 0),
            "containerd did not come up: {}",
            c.log()
        );
        let archive = c.dir.path().join("busybox.tar");
        oci_archive(&archive);
        let (code, out) = c.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            "--base-name",
            "berth.test/busybox",
            archive.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "import: {out}");
        Some(c)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn socket(&self) -> String {
        format!("{}/containerd.sock", self.dir.path().display())
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("-a").arg(self.socket()).args(args);
        cmd
    }

    /// Run ctr; returns its exit code and stdout+stderr.
    fn ctr(&self, args: &[&str]) -> (i32, String) {
        let out = run_command(
            self.ctr_command(args),
            RunOpts {
                timeout: Some(Duration::from_secs(60)),
                ..RunOpts::default()
            },
        );
        (out.code, format!("{}{}", out.stdout, out.stderr))
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (code, out) = self.ctr(args);
        assert_eq!(
            code,
            0,
            "ctr {args:?}: {out}\ncontainerd log:\n{}",
            self.log()
        );
        out
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

const RUN: &[&str] = &["run", "--snapshotter", "native", "--runtime", RUNTIME];

#[test]
fn ctr_run_prints_output() {
    let Some(c) = Containerd::start() else { return };
    let id = unique("t1");
    let args = [RUN, &["--rm", IMAGE, &id, "echo", "hi"]].concat();
    let out = c.ok(&args);
    assert_eq!(out.trim(), "hi", "{out}");
}

#[test]
fn ctr_run_passes_the_exit_code() {
    let Some(c) = Containerd::start() else { return };
    let id = unique("t3");
    let args = [
        RUN,
        &["--rm", IMAGE, &id, "sh", "-c", "echo err >&2; exit 3"],
    ]
    .concat();
    let (code, out) = c.ctr(&args);
    assert_eq!(code, 3, "{out}\n{}", c.log());
    assert!(out.contains("err"), "stderr comes through: {out}");
}

#[test]
fn ctr_detached_exec_kill_delete() {
    let Some(c) = Containerd::start() else { return };
    let id = unique("t2");
    let args = [RUN, &["-d", IMAGE, &id, "sleep", "1000"]].concat();
    c.ok(&args);
    let out = c.ok(&["task", "ls"]);
    assert!(out.contains(&id) && out.contains("RUNNING"), "{out}");
    let out = c.ok(&["task", "exec", "--exec-id", "e1", &id, "echo", "in"]);
    assert_eq!(out.trim(), "in", "{out}");
    // An exec's exit code comes back through the shim.
    let (code, out) = c.ctr(&["task", "exec", "--exec-id", "e2", &id, "sh", "-c", "exit 5"]);
    assert_eq!(code, 5, "ctr task exec exit code: {out}\n{}", c.log());
    let out = c.ok(&["task", "ps", &id]);
    assert!(out.lines().count() >= 2, "ps lists the sleep: {out}");
    let out = c.ok(&["task", "metrics", &id]);
    assert!(
        out.to_lowercase().contains("memory") || out.contains("pids"),
        "{out}"
    );
    c.ok(&["task", "pause", &id]);
    assert!(c.ok(&["task", "ls"]).contains("PAUSED"));
    c.ok(&["task", "resume", &id]);
    c.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    assert!(
        wait_until(Duration::from_secs(20), || c
            .ok(&["task", "ls"])
            .contains("STOPPED")),
        "{}",
        c.ok(&["task", "ls"])
    );
    c.ok(&["task", "delete", &id]);
    c.ok(&["container", "delete", &id]);
    assert!(!c.ok(&["container", "ls"]).contains(&id));
}

#[test]
fn ctr_run_with_a_tty() {
    let Some(c) = Containerd::start() else { return };
    if find_program("python3").is_none() {
        println!("skipped: python3 is needed to drive a pseudo-terminal");
        return;
    }
    let id = unique("t4");
    let socket = c.socket();
    let mut args: Vec<&str> = vec!["-a", &socket];
    args.extend_from_slice(RUN);
    args.extend_from_slice(&["--rm", "-t", IMAGE, &id, "sh"]);
    let out = drive_pty(
        &c.ctr,
        &args,
        "tty; exit 4\n",
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 4, "{out}\n{}", c.log());
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
}

/// A task annotated `io.berth.runtime=vm` runs in a microVM: its kernel is the
/// guest's, and exec, exit codes and delete go through the guest agent.
#[test]
fn ctr_run_in_a_vm_by_annotation() {
    let Some(c) = Containerd::start() else { return };
    if let Some(why) = berth_e2e::oci::vm_unavailable() {
        println!("skipped: {why}");
        return;
    }
    let host_kernel = std::fs::read_to_string("/proc/version").unwrap();
    let id = unique("vm1");
    let annotation = ["--annotation", "io.berth.runtime=vm"];
    let args = [RUN, &annotation, &["-d", IMAGE, &id, "sleep", "1000"]].concat();
    c.ok(&args);
    let guest_kernel = c.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "cat",
        "/proc/version",
    ]);
    assert!(guest_kernel.starts_with("Linux version"), "{guest_kernel}");
    assert_ne!(
        guest_kernel.trim(),
        host_kernel.trim(),
        "the task runs on the host's kernel"
    );
    let (code, out) = c.ctr(&["task", "exec", "--exec-id", "e2", &id, "sh", "-c", "exit 6"]);
    assert_eq!(code, 6, "ctr task exec exit code: {out}\n{}", c.log());
    let vm_running = || {
        berth_e2e::oci::processes_mentioning(&id)
            .iter()
            .any(|p| p.contains("qemu"))
    };
    assert!(vm_running(), "no VM runs for {id}");
    c.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    assert!(
        wait_until(Duration::from_secs(20), || c
            .ok(&["task", "ls"])
            .contains("STOPPED")),
        "{}",
        c.ok(&["task", "ls"])
    );
    c.ok(&["task", "delete", &id]);
    c.ok(&["container", "delete", &id]);
    // No VM is left running for it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            berth_e2e::oci::processes_mentioning(&id)
                .iter()
                .all(|p| !p.contains("qemu"))
        }),
        "{:?}",
        berth_e2e::oci::processes_mentioning(&id)
    );
}
