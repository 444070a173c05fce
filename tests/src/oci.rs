//! Harness for `berth-runtime` (the runc-compatible OCI runtime) tests: a
//! temporary `--root`, bundles unpacked from the busybox rootfs, and helpers
//! to run the runtime and read its state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{busybox_tarball, require_root, workspace_dir};

/// The berth-runtime binary next to the berth binary under test.
pub fn runtime_bin() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(bin) = std::env::var_os("BERTH_RUNTIME_BIN") {
        candidates.push(PathBuf::from(bin));
    }
    if let Some(profile) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
    {
        candidates.push(profile.join("berth-runtime"));
    }
    candidates.push(workspace_dir().join("target/debug/berth-runtime"));
    candidates.into_iter().find(|c| c.is_file())
}

/// A temporary runtime root and bundle built from the busybox rootfs tarball.
pub struct Env {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// None (after printing why) when not root or the binary is missing.
    pub fn new() -> Option<Env> {
        if !require_root() {
            return None;
        }
        let Some(bin) = runtime_bin() else {
            println!("skipped: target/debug/berth-runtime is not built (cargo build --workspace)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Some(Env { bin, dir })
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A bundle from `berth-runtime spec` with `args`, no terminal, edited by `edit`.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let bundle = self.dir.path().join(name);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(busybox_tarball())
            .arg("-C")
            .arg(bundle.join("rootfs"))
            .status()
            .unwrap();
        assert!(status.success(), "tar failed");
        let out = Command::new(&self.bin)
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "spec: {out:?}");
        let path = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        edit(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        bundle
    }

    /// Run berth-runtime with stdout and stderr (the container's too, for
    /// create/run) going to a file; returns the exit code and what was written.
    pub fn rt(&self, args: &[&str]) -> (i32, String) {
        let out_path = self.dir.path().join(format!(
            "out-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let out = File::create(&out_path).unwrap();
        let mut child = Command::new(&self.bin)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
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
        let text = std::fs::read_to_string(&out_path).unwrap();
        (status.code().unwrap_or(-1), text)
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, text) = self.rt(args);
        assert_eq!(code, 0, "berth-runtime {args:?} failed: {text}");
        text
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state(id)["status"] != status {
            assert!(Instant::now() < deadline, "{id} never became {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn root_is_empty(&self) -> bool {
        std::fs::read_dir(self.root()).unwrap().next().is_none()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave nothing running when a test fails halfway.
        if let Ok(entries) = std::fs::read_dir(self.root()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let _ = self.rt(&["delete", "--force", &id]);
            }
        }
    }
}

pub fn unique(name: &str) -> String {
    format!("oci-{name}-{}", std::process::id())
}

/// cgroup directories named `id` under berth-runtime's default parent.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut candidates = vec![PathBuf::from("/sys/fs/cgroup/berth-runtime").join(id)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("berth-runtime").join(id));
        }
    }
    for c in candidates {
        if c.exists() {
            found.push(c);
        }
    }
    found
}

/// Receive one descriptor sent with SCM_RIGHTS on `socket`.
pub fn receive_fd(socket: &std::os::unix::net::UnixStream) -> OwnedFd {
    use std::os::fd::AsRawFd;
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u8; 64];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: recvmsg writes only into the buffers `msg` points to.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled `control` with a valid cmsg chain described by `msg`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no control message");
        assert_eq!((*cmsg).cmsg_level, libc::SOL_SOCKET);
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        OwnedFd::from_raw_fd(fd)
    }
}

/// Why vm mode cannot be tested here, if it cannot.
pub fn vm_unavailable() -> Option<String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default()
        .join("berth");
    for file in ["vmlinux", "initramfs.cpio.gz"] {
        if !cache.join(file).is_file() {
            return Some(format!("{} is missing", cache.join(file).display()));
        }
    }
    for program in ["qemu-system-x86_64", "vhost-device-vsock"] {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        });
        if !found {
            return Some(format!("{program} is not on PATH"));
        }
    }
    None
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(text);
            }
        }
    }
    found
}

pub fn vm_env() -> Option<Env> {
    let env = Env::new()?;
    if let Some(why) = vm_unavailable() {
        println!("skipped: {why}");
        return None;
    }
    Some(env)
}

pub fn vm_bundle(env: &Env, name: &str, args: &[&str]) -> PathBuf {
    env.bundle(name, args, |c| {
        c["annotations"] = serde_json::json!({"io.berth.runtime": "vm"});
    })
}

/// Every path under `dir`.
pub fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        found.push(entry.path());
        if entry.path().is_dir() {
            found.extend(walkdir(&entry.path()));
        }
    }
    found
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
pub fn process_alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            !matches!(rest.split_whitespace().next(), Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// podman with its own storage under the test's directory and berth-runtime as
/// its runtime, with the busybox rootfs imported as [`Podman::IMAGE`].
pub struct Podman {
    bin: PathBuf,
    storage: PathBuf,
    runtime: PathBuf,
}

impl Podman {
    /// The image every podman test runs.
    pub const IMAGE: &'static str = "localhost/ocibusybox:latest";
    /// Fixed nofile/nproc limits for `run`: podman's defaults (1048576, 4194304)
    /// need CAP_SYS_RESOURCE, which sandboxed hosts may lack.
    pub const ULIMITS: [&'static str; 4] = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];

    /// None (after printing why) when podman is missing or cannot import here.
    pub fn new(env: &Env) -> Option<Podman> {
        let Some(bin) = crate::find_program("podman") else {
            println!("skipped: podman is not installed (apt-get install -y podman)");
            return None;
        };
        let podman = Podman {
            bin,
            storage: env.dir.path().join("podman"),
            runtime: env.bin.clone(),
        };
        let tarball = busybox_tarball();
        let out = podman.output(&["import", tarball.to_str().unwrap(), Self::IMAGE]);
        if !out.status.success() {
            println!(
                "skipped: podman cannot import an image here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(podman)
    }

    /// Run `podman ARGS` with stdin from /dev/null.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--root")
            .arg(self.storage.join("root"))
            .arg("--runroot")
            .arg(self.storage.join("run"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run `podman ARGS`: its exit code and stdout followed by stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.output(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }
}
